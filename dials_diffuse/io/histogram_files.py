"""Write pixel histograms: the seed's two-column text, CSV, and a log-scale PNG."""

import numpy as np

from dials_diffuse.io.plots import new_figure, save_png


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
    histogram, path, zoom=None, title=None, xlabel="Pixel value (counts)"
):
    """Step plot of each group's counts on a log y axis.

    Parameters
    ----------
    zoom : (float, float), optional
        x range to show; default the occupied bins.
    """
    figure, axes = new_figure()
    edges = histogram.edges
    window = histogram.occupied_range()
    for label, counts in zip(histogram.labels, histogram.counts):
        shown = np.where(counts[window] > 0, counts[window], np.nan)
        axes.stairs(shown, edges[window.start : window.stop + 1], label=label)
    axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("Pixels")
    if zoom:
        axes.set_xlim(*zoom)
    if len(histogram.labels) > 1:
        axes.legend(fontsize="small")
    if title:
        axes.set_title(title)
    save_png(figure, path)
