"""Write pixel histograms: the seed's two-column text, CSV, and a log-scale PNG."""

from pathlib import Path

import numpy as np

from dials_diffuse.io.plots import new_figure, save_png


def group_table_path(path, label):
    """`pixel_histogram.hist` -> `pixel_histogram_<label>.hist`: one table per group."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{label}{path.suffix}")


def write_two_column(histogram, path, group=None):
    """`bin_centre count` per line, as the seed's histogram.py wrote (trimmed to occupied bins).

    `group` selects one group's counts; None writes the total.
    """
    window = histogram.occupied_range()
    counts = histogram.total if group is None else histogram.counts[group]
    centres = histogram.centres
    with open(path, "w") as handle:
        for centre, count in zip(centres[window], counts[window]):
            handle.write(f"{centre:.10g} {int(count)}\n")


def write_csv(histogram, path):
    """All groups as columns, with bin edges and centres (trimmed to occupied bins)."""
    histogram.to_frame().to_csv(path, index=False)


def plot_histogram(
    histogram,
    path,
    zoom=None,
    title=None,
    xlabel="Pixel value (counts)",
    legend=None,
    anomalies=(),
):
    """Step plot of each group's counts on a log y axis, one colour per group.

    Parameters
    ----------
    zoom : (float, float), optional
        x range to show; default the occupied bins.
    legend : list of str, optional
        Legend text per group; default the group labels.
    anomalies : list of Anomaly
        Shaded on the plot (notches blue, pile-ups red) and listed in the legend.
    """
    figure, axes = new_figure()
    edges = histogram.edges
    window = histogram.occupied_range()
    legend = legend or histogram.labels
    for text, counts in zip(legend, histogram.counts):
        shown = np.where(counts[window] > 0, counts[window], np.nan)
        axes.stairs(shown, edges[window.start : window.stop + 1], label=text)
    colours = {"notch": "tab:blue", "pile-up": "tab:red"}
    for anomaly in anomalies:
        axes.axvspan(
            anomaly.low,
            anomaly.high,
            color=colours.get(anomaly.kind, "grey"),
            alpha=0.25,
            label=f"{anomaly.kind} {anomaly.low:g}-{anomaly.high:g} ({anomaly.group})",
        )
    axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("Pixels")
    if zoom:
        axes.set_xlim(*zoom)
    if len(legend) > 1 or anomalies:
        axes.legend(fontsize="small")
    if title:
        axes.set_title(title)
    save_png(figure, path)
