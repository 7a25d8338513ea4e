"""The pixel histogram plot: lines for a few groups, a heat map for many."""

import numpy as np

from dials_diffuse.algorithms.pixels.histograms import PixelHistogram
from dials_diffuse.io.histogram_files import (
    MAX_LINES,
    _representative_groups,
    plot_histogram,
)


def _panels(n, seed=0):
    """n panels of Poisson pixels, panel k with mean 20 + k."""
    rng = np.random.default_rng(seed)
    histogram = PixelHistogram.empty(0, 100, 100, [f"panel_{k}" for k in range(n)])
    for k in range(n):
        histogram.add(k, rng.poisson(20 + k, 5000).astype(np.int32))
    return histogram


def test_many_panels_get_a_heat_map(tmp_path):
    histogram = _panels(64)
    # Lowest, median and highest mean: panels 0, 32 and 63.
    assert _representative_groups(histogram) == [0, 32, 63]
    path = tmp_path / "many.png"
    plot_histogram(histogram, path, title="64 panels")
    from matplotlib.image import imread

    image = imread(path)
    assert image.shape[0] > image.shape[1]  # heat map above the lines
    few = tmp_path / "few.png"
    plot_histogram(_panels(MAX_LINES), few)
    assert imread(few).shape[0] < imread(few).shape[1]
