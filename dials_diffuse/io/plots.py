"""Matplotlib (Agg) figures written as PNG, without a display."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


def new_figure(width=8.0, height=5.0, columns=1):
    """A figure and its axes for a report plot (size in inches).

    `columns` > 1 gives a row of that many axes (an array).
    """
    return plt.subplots(1, columns, figsize=(width, height), constrained_layout=True)


def save_png(figure, path, dpi=120):
    """Write `figure` as PNG to `path` and release it."""
    figure.savefig(path, dpi=dpi, format="png")
    plt.close(figure)
