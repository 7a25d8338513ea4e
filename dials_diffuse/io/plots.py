"""Matplotlib (Agg) figures written as PNG, without a display.

matplotlib is imported when the first figure is made, not with this module:
a program pays for it only when it really plots (``output.plot=None`` costs
nothing). Figures are plain `matplotlib.figure.Figure` objects on an Agg
canvas, without pyplot's global figure manager (no GUI backend is looked
for, nothing to close).

A program that plots after long chunked work calls `prefetch_matplotlib`
first: matplotlib's import (about 0.3 s of Python) then runs in a
background thread while the C++ kernels, which release the GIL, do the
work, instead of adding to the run time.
"""

import threading

import numpy as np

_prefetch = None


def prefetch_matplotlib():
    """Start importing matplotlib (Figure, Agg) in a background thread; return at once.

    `new_figure` works whether or not that import has finished: Python's
    import lock makes it wait for the module. An import error is left to
    `new_figure` to raise, in the program's own thread.
    """
    global _prefetch
    if _prefetch is not None:
        return

    def load():
        try:
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401
        except Exception:  # new_figure imports again and reports it
            pass

    _prefetch = threading.Thread(target=load, name="prefetch-matplotlib")
    _prefetch.start()


def new_figure(width=8.0, height=5.0, columns=1, rows=1, **subplots):
    """A figure and its axes for a report plot (size in inches).

    `columns` or `rows` > 1 gives that grid of axes (an array, as
    ``pyplot.subplots``); other keywords (``sharex=True``, ...) go to
    `Figure.subplots`. The layout is constrained (labels never overlap).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, **subplots)


#: One figure drawn at a time: matplotlib is not thread-safe, and process
#: runs several sweeps' steps (each plotting) in threads at once.
_drawing = threading.Lock()


def save_png(figure, path, dpi=120):
    """Write `figure` as PNG to `path` (drawing one figure at a time)."""
    with _drawing:
        figure.savefig(path, dpi=dpi, format="png")


def histogram(axes, values, bins=10, range=None, **style):
    """Draw a histogram of `values` on `axes` as one filled step outline.

    Looks like ``axes.hist`` (filled bars without edges, the next colour of
    the cycle) but is one artist instead of one rectangle per bin, which
    makes drawing several times faster. `bins` and `range` as
    `numpy.histogram`; `style` goes to ``axes.stairs`` (label, alpha, colour).

    Returns
    -------
    counts, edges : ndarray
        As `numpy.histogram`.
    """
    counts, edges = np.histogram(values, bins=bins, range=range)
    axes.stairs(counts, edges, fill=True, **style)
    return counts, edges


def log_y(axes):
    """Put the y axis of `axes` on a log scale, cheaply drawn; call after plotting.

    Labels read 1, 10, 100, 1000, 10000, 1e+05 instead of matplotlib's
    10ⁿ, whose mathtext parser costs about 0.1 s the first time a process
    draws one; over more than two decades the unlabelled minor ticks are
    left out (each tick is several artists: half the drawing time).
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    low, high = axes.get_ylim()
    if high > 100 * low:
        axes.yaxis.set_minor_locator(NullLocator())
