"""The pixel histogram step as a plain function: phil_scope + do_shoebox_histogram."""

import numpy as np
from dxtbx.model.experiment_list import ExperimentList
from libtbx.phil import parse

from dials_diffuse.algorithms.pixels import pixel_histogram
from tests.shoebox_tables import notched_table


def params(text=""):
    return pixel_histogram.phil_scope.fetch(parse(text)).extract()


def test_foreground_histogram_per_experiment_and_its_notch():
    table, truth, ids = notched_table(600, experiments=2, seed=5)
    result = pixel_histogram.do_shoebox_histogram(
        [table], ExperimentList(), params(), nproc=2
    )
    histogram = result.histogram
    for e in range(2):
        values = np.concatenate(
            [truth["foreground"][r] for r in np.flatnonzero(ids == e)]
        ).astype(int)
        expected = np.bincount(values, minlength=histogram.bins)
        first = int(histogram.low)
        np.testing.assert_array_equal(
            histogram.counts[e], expected[first : first + histogram.bins]
        )
    notches = [(a.group, a.low, a.high) for a in result.anomalies if a.kind == "notch"]
    # In experiment 1 (and the sum over experiments), not in experiment 0.
    assert notches == [("experiment_1", 23.0, 24.0), ("all", 23.0, 24.0)]
    summary = result.summary()
    assert summary["reflections"] == 600
    assert summary["pixels_counted"] == 600 * 27
    assert summary["groups"] == {"experiment_0": 300 * 27, "experiment_1": 300 * 27}
    assert not result.empty


def test_a_range_without_pixels_is_an_empty_result():
    table, _, _ = notched_table(20)
    result = pixel_histogram.do_shoebox_histogram(
        [table],
        ExperimentList(),
        params("histogram.low=1000\nhistogram.high=2000"),
        nproc=1,
    )
    assert result.empty and result.anomalies == []
    assert result.summary()["underflow"] == 20 * 27
