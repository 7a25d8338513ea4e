"""Write intensity-linearity results: pair files, tables and plots."""

from pathlib import Path

import numpy as np

from dials_diffuse.io.plots import new_figure, save_png


def pair_file_path(prefix, number):
    """`pair` and 3 -> `pair3.dat`, as the commissioning scripts named them."""
    prefix = Path(prefix)
    return prefix.with_name(f"{prefix.name}{number}.dat")


def write_pair_file(pairs, path):
    """`reference_intensity intensity` per line, as the commissioning scripts' pair{j}.dat."""
    with open(path, "w") as handle:
        for reference, intensity in zip(
            pairs["reference_intensity"], pairs["intensity"]
        ):
            handle.write(f"{reference!r} {intensity!r}\n")


def plot_scatter(result, path):
    """Log-log scatter of each experiment's intensities against the reference's.

    Dashed lines: perfect linearity, I = (T / T_reference) I_reference.
    """
    figure, axes = new_figure(7.0, 6.0)
    table = result.experiments.set_index("experiment")
    limits = []
    for number, pairs in result.pairs.items():
        if number == result.reference or len(pairs) == 0:
            continue
        keep = (pairs["reference_intensity"] > 0) & (pairs["intensity"] > 0)
        x, y = pairs["reference_intensity"][keep], pairs["intensity"][keep]
        label = f"experiment {number}"
        transmission = table.loc[number, "transmission"]
        if np.isfinite(transmission):
            label += f" (T = {transmission:g})"
        points = axes.scatter(x, y, s=3, alpha=0.5, label=label, linewidths=0)
        relative = table.loc[number, "relative_transmission"]
        if np.isfinite(relative) and len(x):
            line = np.geomspace(x.min(), x.max(), 2)
            axes.plot(
                line, relative * line, "--", color=points.get_facecolor()[0], lw=1
            )
        limits.extend([x.min(), x.max()] if len(x) else [])
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(f"Intensity in the reference, experiment {result.reference}")
    axes.set_ylabel("Intensity")
    axes.set_title("Matched reflections (dashed: linear response)")
    if limits:
        axes.legend(fontsize="small", markerscale=4)
    save_png(figure, path)


def plot_ratio(result, path):
    """Mean ratio to the reference against relative transmission, with the fit."""
    figure, axes = new_figure(7.0, 5.0)
    table = result.experiments
    x = table["relative_transmission"]
    xlabel = f"Transmission relative to experiment {result.reference}"
    if x.isna().all():  # transmissions unknown: ratio per experiment
        x = table["experiment"]
        xlabel = "Experiment"
    axes.errorbar(
        x,
        table["mean_ratio"],
        yerr=table["mean_ratio_error"],
        fmt="o",
        label="mean ratio",
    )
    axes.plot(x, table["median_ratio"], "s", mfc="none", label="median ratio")
    line = np.linspace(0, max(1.0, float(np.nanmax(x))), 2)
    if result.fit:
        axes.plot(line, line, ":", color="grey", label="ideal: ratio = T / T_ref")
        fit = result.fit
        axes.plot(
            line,
            fit["slope"] * line + fit["intercept"],
            "-",
            lw=1,
            label=(
                f"fit: {fit['slope']:.4f} x {fit['intercept']:+.4f}, "
                f"R² = {fit['r_squared']:.5f}"
            ),
        )
    axes.set_xlabel(xlabel)
    axes.set_ylabel("Intensity ratio to the reference")
    axes.legend(fontsize="small")
    save_png(figure, path)


def plot_deviation(result, path):
    """Deviation from linearity against reference intensity, one line per experiment.

    Zero everywhere for a linear detector; a detector that saturates shows
    the ratio rising with intensity (the reference loses most).
    """
    figure, axes = new_figure(7.0, 5.0)
    bins = result.bins
    for number, rows in bins.groupby("experiment"):
        rows = rows[rows["pairs"] > 0]
        centres = np.sqrt(rows["bin_low"] * rows["bin_high"])
        axes.plot(
            centres, 100.0 * rows["deviation"], "o-", label=f"experiment {number}"
        )
    axes.axhline(0.0, color="grey", lw=1, ls=":")
    axes.set_xscale("log")
    axes.set_xlabel(f"Intensity in the reference, experiment {result.reference}")
    axes.set_ylabel("Median ratio / expected ratio - 1 (%)")
    axes.set_title("Deviation from linearity by intensity")
    if len(bins):
        axes.legend(fontsize="small")
    save_png(figure, path)
