"""Plots of a per-frame series: interactive Plotly HTML (offline) and a PNG.

Three panels: the raw and detrended frame sums (with the trend) against image
number, the running coefficient of variation, and the histogram of the sums.
The HTML embeds plotly.js, so it opens without a network connection, and
draws with SVG (not WebGL), so it also shows in browsers without WebGL
(remote desktops, headless browsers).
"""

import numpy as np

from dials_diffuse.io.plots import histogram, new_figure, save_png

TITLES = (
    "Frame sums",
    "Running CV (window {window} frames)",
    "Histogram of frame sums",
)


# One colour per series in every panel (matplotlib's first three).
COLOURS = {"raw": "#1f77b4", "detrended": "#ff7f0e", "trend": "#2ca02c"}


def _bins(n):
    return int(min(100, max(10, np.sqrt(max(n, 1)))))


def write_html(
    path, images, raw, trend, detrended, cv_raw, cv_detrended, window, title
):
    """Write the interactive Plotly page to `path` (plotly.js embedded)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(
        rows=3,
        cols=1,
        subplot_titles=[t.format(window=window) for t in TITLES],
        vertical_spacing=0.1,
    )

    def line(y, name, colour, **style):
        return go.Scatter(
            x=images, y=y, name=name, mode="lines", line={"color": colour, **style}
        )

    figure.add_trace(line(raw, "raw", COLOURS["raw"]), 1, 1)
    figure.add_trace(line(detrended, "detrended", COLOURS["detrended"]), 1, 1)
    figure.add_trace(line(trend, "trend", COLOURS["trend"], dash="dash"), 1, 1)
    figure.add_trace(line(cv_raw, "CV% raw", COLOURS["raw"]), 2, 1)
    figure.add_trace(line(cv_detrended, "CV% detrended", COLOURS["detrended"]), 2, 1)
    nbins = _bins(len(raw))
    for values, name in ((raw, "raw"), (detrended, "detrended")):
        figure.add_trace(
            go.Histogram(
                x=values,
                name=f"{name} sums",
                nbinsx=nbins,
                opacity=0.6,
                marker={"color": COLOURS[name]},
            ),
            3,
            1,
        )
    figure.update_layout(title=title, barmode="overlay", height=1000)
    figure.update_xaxes(title_text="image number", row=1, col=1)
    figure.update_yaxes(title_text="sum (counts)", row=1, col=1)
    figure.update_xaxes(title_text="image number", row=2, col=1)
    figure.update_yaxes(title_text="CV (%)", row=2, col=1)
    figure.update_xaxes(title_text="sum (counts)", row=3, col=1)
    figure.update_yaxes(title_text="frames", row=3, col=1)
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)


def write_png(path, images, raw, trend, detrended, cv_raw, cv_detrended, window, title):
    """Write the same three panels as a PNG (matplotlib, Agg)."""
    figure, axes = new_figure(9.0, 10.0)
    figure.clear()
    top, middle, bottom = figure.subplots(3, 1)
    top.plot(images, raw, lw=0.8, label="raw")
    top.plot(images, detrended, lw=0.8, label="detrended")
    top.plot(images, trend, "--", lw=1.0, label="trend")
    top.set(xlabel="image number", ylabel="sum (counts)", title=f"{title}: {TITLES[0]}")
    top.legend()
    middle.plot(images, cv_raw, lw=0.8, label="raw")
    middle.plot(images, cv_detrended, lw=0.8, label="detrended")
    middle.set(
        xlabel="image number", ylabel="CV (%)", title=TITLES[1].format(window=window)
    )
    middle.legend()
    nbins = _bins(len(raw))
    histogram(bottom, raw, bins=nbins, alpha=0.6, label="raw")
    histogram(bottom, detrended, bins=nbins, alpha=0.6, label="detrended")
    bottom.set(xlabel="sum (counts)", ylabel="frames", title=TITLES[2])
    bottom.legend()
    save_png(figure, path)
