"""Write pixel histograms: the two-column text of flex.histogram scripts, CSV, the
anomaly table, and a log-scale PNG."""

from pathlib import Path

import numpy as np

from dials_diffuse.io.plots import new_figure, save_png


def group_table_path(path, label):
    """`pixel_histogram.hist` -> `pixel_histogram_<label>.hist`: one table per group."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{label}{path.suffix}")


def write_two_column(histogram, path, group=None):
    """`bin_centre count` per line, as flex.histogram scripts write (trimmed to occupied bins).

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


ANOMALY_COLUMNS = [
    "group",
    "kind",
    "low",
    "high",
    "observed",
    "expected",
    "ratio",
    "significance",
]


def write_anomaly_table(rows, path):
    """The notches and pile-ups (dicts with ANOMALY_COLUMNS) as CSV, one per row."""
    import pandas as pd

    pd.DataFrame(rows, columns=ANOMALY_COLUMNS).to_csv(path, index=False)


# Most bins a plot draws: wider windows are shown re-binned (a screen has
# fewer pixels than a histogram of 16-bit values has bins).
MAX_PLOTTED_BINS = 1000


def _merged_spans(anomalies):
    """Anomalies of the same kind and range as one (kind, low, high, groups) each."""
    spans = {}
    for anomaly in anomalies:
        key = (anomaly.kind, anomaly.low, anomaly.high)
        spans.setdefault(key, []).append(anomaly.group)
    return [(*key, groups) for key, groups in spans.items()]


#: More groups than this are drawn as a heat map (group x value) above
#: lines for the total and a few groups.
MAX_LINES = 8


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

    With more than MAX_LINES groups (e.g. the 64 panels of a CSPAD), a heat
    map of group against pixel value (log colour) shows them all, and the
    lines below show the total and the groups of lowest, median and
    highest mean value.

    Parameters
    ----------
    zoom : (float, float), optional
        x range to show; default the occupied bins. A window of more than
        MAX_PLOTTED_BINS bins is drawn re-binned (the y label says by how much).
    legend : list of str, optional
        Legend text per group; default the group labels.
    anomalies : list of Anomaly
        Shaded on the plot (notches blue, pile-ups red), one span per range
        with the groups it was found in.
    """
    edges = histogram.edges
    window = histogram.occupied_range()
    if zoom:
        first = max(0, int(np.searchsorted(edges, zoom[0], side="right")) - 1)
        last = min(histogram.bins, int(np.searchsorted(edges, zoom[1], side="left")))
        window = slice(first, max(last, first + 1))
    factor = max(1, -(-(window.stop - window.start) // MAX_PLOTTED_BINS))
    n_shown = (window.stop - window.start) // factor or 1
    stop = window.start + n_shown * factor
    shown_edges = edges[window.start : stop + 1 : factor]
    legend = list(legend or histogram.labels)
    shown_counts = (
        histogram.counts[:, window.start : stop]
        .reshape(len(legend), n_shown, -1)
        .sum(axis=2)
    )
    many = len(legend) > MAX_LINES
    if many:
        figure, (heat, axes) = new_figure(
            8, 9.5, rows=2, sharex=True, gridspec_kw={"height_ratios": [3, 2]}
        )
        _heat_map(figure, heat, shown_counts, shown_edges, legend)
        lines = [("total", shown_counts.sum(axis=0))] + [
            (legend[g], shown_counts[g]) for g in _representative_groups(histogram)
        ]
    else:
        figure, axes = new_figure()
        lines = list(zip(legend, shown_counts))
    highest, lowest = 1.0, np.inf
    for text, part in lines:
        shown = np.where(part > 0, part, np.nan)
        axes.stairs(shown, shown_edges, label=text)
        if np.any(part > 0):
            highest = max(highest, part.max())
            lowest = min(lowest, part[part > 0].min())
    colours = {"notch": "tab:blue", "pile-up": "tab:red"}
    for kind, low, high, groups in _merged_spans(anomalies):
        axes.axvspan(
            low,
            high,
            color=colours.get(kind, "grey"),
            alpha=0.15,
            label=f"{kind} {low:g}-{high:g}: {', '.join(groups)}",
        )
    axes.set_yscale("log")
    axes.set_ylim(0.5 * min(lowest, 1.0), 2.0 * highest)
    axes.set_xlim(shown_edges[0], shown_edges[-1])
    axes.set_xlabel(xlabel)
    axes.set_ylabel("Pixels" if factor == 1 else f"Pixels per {factor} bins")
    if len(lines) > 1 or anomalies:
        axes.legend(fontsize="small")
    if title:
        (heat if many else axes).set_title(title)
    save_png(figure, path)


def _heat_map(figure, axes, counts, edges, labels):
    """Groups (rows) against pixel value, pixels per bin in log colour."""
    from matplotlib.colors import LogNorm

    shown = np.ma.masked_less_equal(counts.astype(np.float64), 0)
    high = float(shown.max()) if shown.count() else 1.0
    image = axes.pcolormesh(
        edges,
        np.arange(len(labels) + 1) - 0.5,
        shown,
        norm=LogNorm(vmin=0.5, vmax=max(high, 1.0)),
        cmap="viridis",
        shading="flat",
    )
    axes.set_ylabel("group (panel)")
    step = max(1, len(labels) // 16)
    axes.set_yticks(np.arange(0, len(labels), step))
    axes.set_yticklabels(labels[::step], fontsize="x-small")
    axes.set_ylim(len(labels) - 0.5, -0.5)
    figure.colorbar(image, ax=axes, label="pixels per bin")


def _representative_groups(histogram):
    """The groups of lowest, median and highest mean value (distinct)."""
    counted = histogram.counts.sum(axis=1)
    use = np.flatnonzero(counted > 0)
    if use.size == 0:
        return []
    means = (histogram.counts[use] * histogram.centres).sum(axis=1) / counted[use]
    order = use[np.argsort(means)]
    picks = [order[0], order[len(order) // 2], order[-1]]
    return list(dict.fromkeys(int(p) for p in picks))
