"""PNG plots of map analyses: shell statistics, central sections, 3D-DeltaPDF, comparisons."""

import numpy as np

from dials_diffuse.io.plots import new_figure, save_png


def _shell_centres(table):
    return 0.5 * (table["s_low"] + table["s_high"])


def plot_map_statistics(profile, statistics, path):
    """Isotropic profile, completeness, I/sigma and CC1/2 against |s| (2 x 2 panels)."""
    figure, panels = new_figure(width=11, height=7.5, columns=2, rows=2)
    (profile_panel, completeness_panel), (noise_panel, cc_panel) = panels
    s = _shell_centres(statistics)
    profile_panel.plot(
        profile["s_mean"], profile["mean"], "o-", ms=3, label="isotropic"
    )
    profile_panel.plot(
        s, statistics["anisotropic_rms"], "s-", ms=3, label="anisotropic rms"
    )
    profile_panel.set_ylabel("intensity")
    profile_panel.legend()
    completeness_panel.plot(s, statistics["completeness"], "o-", ms=3)
    completeness_panel.set_ylabel("completeness of the grid")
    completeness_panel.set_ylim(0, 1.05)
    if "i_over_sigma" in statistics:
        noise_panel.plot(
            s, statistics["i_over_sigma"], "o-", ms=3, label="mean I / rms sigma"
        )
        noise_panel.plot(
            s,
            statistics["anisotropic_over_sigma"],
            "s-",
            ms=3,
            label="anisotropic rms / rms sigma",
        )
    if "symmetry_spread" in statistics:
        noise_panel.plot(
            s,
            statistics["anisotropic_rms"] / statistics["symmetry_spread"],
            "^-",
            ms=3,
            label="anisotropic rms / symmetry spread",
        )
    noise_panel.set_ylabel("signal to noise")
    noise_panel.legend()
    if "cc_half" in statistics:
        cc_panel.plot(s, statistics["cc_half"], "o-", ms=3, label="CC1/2 total")
        cc_panel.plot(
            s, statistics["cc_half_anisotropic"], "s-", ms=3, label="CC1/2 anisotropic"
        )
        cc_panel.set_ylim(
            min(0.0, float(np.nanmin(statistics["cc_half_anisotropic"]))), 1.0
        )
        cc_panel.legend()
    else:
        cc_panel.text(
            0.5,
            0.5,
            "no split halves in the input",
            ha="center",
            transform=cc_panel.transAxes,
        )
    cc_panel.set_ylabel("correlation of the halves")
    for panel in panels.ravel():
        panel.set_xlabel("|s| = 1/d (1/Angstrom)")
    save_png(figure, path)


def _limits(values, signed):
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    if signed:
        high = float(np.percentile(np.abs(finite), 99)) or 1.0
        return -high, high
    low, high = np.percentile(finite, [1, 99])
    return float(low), float(high) if high > low else float(low) + 1.0


def plot_central_sections(axes, layers, axis_names, path, units=""):
    """Central sections (through 0 of each axis) of several layers, one row each.

    Parameters
    ----------
    axes : list of three arrays
    layers : list of (title, ndarray, signed)
        Signed layers use a diverging colour map symmetric about 0.
    axis_names : three str
    """
    figure, panels = new_figure(
        width=13, height=3.8 * len(layers), columns=3, rows=len(layers), squeeze=False
    )
    for row, (title, values, signed) in enumerate(layers):
        low, high = _limits(values, signed)
        for axis in range(3):
            panel = panels[row, axis]
            index = int(np.argmin(np.abs(axes[axis])))
            section = np.take(values, index, axis=axis)
            x_axis, y_axis = [a for a in range(3) if a != axis]
            extent = [
                axes[x_axis][0],
                axes[x_axis][-1],
                axes[y_axis][0],
                axes[y_axis][-1],
            ]
            image = panel.imshow(
                section.T,
                origin="lower",
                extent=extent,
                vmin=low,
                vmax=high,
                cmap="RdBu_r" if signed else "viridis",
                aspect="auto",
                interpolation="nearest",
            )
            panel.set_xlabel(f"{axis_names[x_axis]} {units}".strip())
            panel.set_ylabel(f"{axis_names[y_axis]} {units}".strip())
            panel.set_title(f"{title}: {axis_names[axis]} = {axes[axis][index]:g}")
        figure.colorbar(image, ax=panels[row, :].tolist(), shrink=0.9)
    save_png(figure, path)


def plot_comparison(comparison, names, path):
    """CC_total and CC_aniso per shell, and the two maps against each other."""
    figure, (cc_panel, scatter_panel) = new_figure(width=12, height=4.5, columns=2)
    shells = comparison.shells
    if "cc_total" in shells:
        s = _shell_centres(shells)
        cc_panel.plot(s, shells["cc_total"], "o-", ms=3, label="CC total")
        cc_panel.plot(s, shells["cc_anisotropic"], "s-", ms=3, label="CC anisotropic")
        cc_panel.legend()
    cc_panel.set_xlabel("|s| = 1/d (1/Angstrom)")
    cc_panel.set_ylabel("correlation")
    cc_panel.set_ylim(
        min(0.0, float(np.nanmin(shells.get("cc_anisotropic", [0])))), 1.0
    )
    both = np.isfinite(comparison.first) & np.isfinite(comparison.second)
    first, second = comparison.first[both], comparison.second[both]
    scatter_panel.hexbin(second, first, gridsize=80, bins="log", mincnt=1)
    overall = comparison.overall
    line = np.array([np.percentile(second, 0.5), np.percentile(second, 99.5)])
    scatter_panel.plot(
        line,
        overall["scale"] * line + overall["offset"],
        "r-",
        label=f"{overall['scale']:.3g} x + {overall['offset']:.3g}",
    )
    scatter_panel.legend()
    scatter_panel.set_xlabel(names[1])
    scatter_panel.set_ylabel(names[0])
    scatter_panel.set_title(
        f"CC total {overall['cc_total']:.3f}, anisotropic {overall['cc_anisotropic']:.3f}"
    )
    save_png(figure, path)
