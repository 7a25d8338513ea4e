"""Notch and pile-up detection on histograms with known, planted features."""

import numpy as np
import pytest

from dials_diffuse.algorithms.pixels.anomalies import (
    expected_from_neighbours,
    find_anomalies,
    find_histogram_anomalies,
)
from dials_diffuse.algorithms.pixels.shoeboxes import histogram_shoeboxes
from tests.shoebox_tables import shoebox_table


def pixel_values(rng, background=2_000_000, signal=200_000, mean=3.0, tail=300.0):
    """Background Poisson counts plus an exponential tail of spot pixels."""
    return np.concatenate(
        [rng.poisson(mean, background), rng.exponential(tail, signal).astype(int)]
    )


def bincount(values, bins=8000):
    return np.bincount(values, minlength=bins)[:bins], np.arange(bins + 1.0)


def test_prediction_is_exact_for_a_smooth_log_quadratic():
    x = np.arange(200.0)
    counts = np.round(1e6 * np.exp(-0.5 * ((x - 80) / 30) ** 2))
    expected, variance = expected_from_neighbours(counts)
    inside = (counts > 1000) & (x > 2) & (x < 197)
    np.testing.assert_allclose(expected[inside], counts[inside], rtol=1e-3)
    assert np.all(variance >= 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smooth_distributions_have_no_anomalies(seed):
    rng = np.random.default_rng(seed)
    counts, edges = bincount(pixel_values(rng, mean=1.0 + 3 * seed))
    assert find_anomalies(counts, edges) == []


@pytest.mark.parametrize("value", [9, 37, 120])
def test_notch_found_at_the_planted_value(value):
    rng = np.random.default_rng(value)
    values = pixel_values(rng)
    # A mis-calibrated level: 80% of the pixels at `value` read one higher.
    moved = (values == value) & (rng.random(values.size) < 0.8)
    values[moved] += 1
    counts, edges = bincount(values)
    found = find_anomalies(counts, edges, group="e0")
    notches = [a for a in found if a.kind == "notch"]
    assert len(notches) == 1
    notch = notches[0]
    assert (notch.low, notch.high) == (value, value + 1)
    assert notch.observed == counts[value]
    assert notch.ratio == pytest.approx(0.2, abs=0.08)
    assert notch.significance < -5
    assert "notch at pixel values" in notch.describe()


@pytest.mark.parametrize("low, high", [(200, 212), (60, 64), (150, 182)])
def test_wide_notch_found_where_it_was_planted(low, high):
    """As a gain switch does: true values in [low, high) recorded as `high`."""
    rng = np.random.default_rng(low)
    values = pixel_values(rng, signal=400_000)
    values[(values >= low) & (values < high)] = high
    counts, edges = bincount(values)
    notches = [a for a in find_anomalies(counts, edges) if a.kind == "notch"]
    assert [(a.low, a.high, a.observed) for a in notches] == [(low, high, 0)]
    assert notches[0].significance < -5


def test_pile_ups_at_the_top_end():
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [
            pixel_values(rng),
            np.full(300, 5000),  # stuck at a full-bucket value
            rng.normal(4000, 40, 3000).astype(int),  # a broad bump
        ]
    )
    counts, edges = bincount(values)
    found = find_anomalies(counts, edges)
    assert all(a.kind == "pile-up" for a in found)
    spike = [a for a in found if a.low <= 5000 < a.high]
    bump = [a for a in found if a.low < 4000 + 40 and a.high > 4000 - 40]
    assert len(spike) == 1 and spike[0].high - spike[0].low == 1
    assert spike[0].observed == 300
    assert len(bump) == 1 and bump[0].observed > 2 * bump[0].expected
    assert len(found) == 2


def test_notch_reported_for_its_experiment_only():
    rng = np.random.default_rng(8)
    n, notch_value = 900, 23
    ids = [i % 3 for i in range(n)]
    foreground = []
    for i in range(n):
        values = rng.poisson(25, 27)
        if ids[i] == 1:
            values[values == notch_value] += 1  # a full notch in experiment 1
        foreground.append(values)
    background = [rng.poisson(3, 218) for _ in range(n)]
    table, _ = shoebox_table(foreground, background, ids)
    histogram = histogram_shoeboxes(table)
    found = find_histogram_anomalies(histogram)
    # Found in experiment 1, and in the sum over experiments.
    assert [(a.group, a.kind, a.low, a.high) for a in found] == [
        ("experiment_1", "notch", notch_value, notch_value + 1),
        ("all", "notch", notch_value, notch_value + 1),
    ]
    assert found[0].observed == 0
