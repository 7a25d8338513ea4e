"""Shoebox histograms against direct per-shoebox computations (the truth)."""

import numpy as np
import pytest

from dials_diffuse.algorithms.pixels.shoeboxes import (
    histogram_shoeboxes,
    select_reflections,
)
from dials_diffuse.util.errors import DataError
from tests.shoebox_tables import shoebox_table


@pytest.fixture(scope="module")
def indexed(dials_centroid):
    from dials.array_family import flex

    path = dials_centroid / "indexed.refl"
    return flex.reflection_table.from_file(str(path))


def flex_histogram_loop(table, low, high, bins):
    """The commissioning script: one flex.histogram per shoebox, accumulated."""
    from dials.array_family import flex

    total = flex.histogram(flex.double(), data_min=low, data_max=high, n_slots=bins)
    for shoebox in table["shoebox"]:
        total.update(
            flex.histogram(
                shoebox.data.as_double().as_1d(),
                data_min=low,
                data_max=high,
                n_slots=bins,
            )
        )
    return np.array(total.slots(), dtype=np.int64)


def test_real_shoeboxes_equal_flex_histogram_loop(indexed):
    table = select_reflections(indexed, "indexed")
    assert table.size() == 569
    expected = flex_histogram_loop(table, 0, 12000, 12000)
    histogram = histogram_shoeboxes(table, pixels="all", low=0, high=12000, bins=12000)
    assert histogram.labels == ["experiment_0"]
    np.testing.assert_array_equal(histogram.counts[0], expected)
    assert expected.sum() == 27385
    assert histogram.overflow.sum() == histogram.underflow.sum() == 0


def test_real_foreground_equals_per_shoebox_numpy(indexed):
    table = select_reflections(indexed, "indexed")
    values = []
    for shoebox in table["shoebox"]:
        mask = shoebox.mask.as_numpy_array().ravel()
        data = shoebox.data.as_numpy_array().ravel()
        values.append(data[(mask & 5) == 5])
    values = np.concatenate(values)
    histogram = histogram_shoeboxes(table)  # defaults: foreground, exact unit bins
    assert histogram.low == 0 and histogram.high == values.max() + 1
    assert histogram.bins == values.max() + 1
    expected = np.bincount(values.astype(np.int64), minlength=histogram.bins)
    np.testing.assert_array_equal(histogram.counts[0], expected)
    assert histogram.masked[0] == 27385 - values.size


@pytest.fixture(scope="module")
def three_experiments():
    rng = np.random.default_rng(11)
    n = 60
    ids = [i % 3 for i in range(n)]
    foreground = [rng.poisson(20 + 10 * (i % 3), 27) for i in range(n)]
    background = [rng.poisson(2, 218) for i in range(n)]
    return shoebox_table(foreground, background, ids, invalid_fraction=0.1)


@pytest.mark.parametrize("pixels", ["foreground", "valid", "all"])
def test_synthetic_experiments_per_experiment_truth(three_experiments, pixels):
    table, truth = three_experiments
    parts = {
        "foreground": ["foreground"],
        "valid": ["foreground", "background"],
        "all": ["foreground", "background", "invalid"],
    }[pixels]
    histogram = histogram_shoeboxes(
        table, pixels=pixels, low=0, high=80, bins=80, chunk_size=7, nproc=2
    )
    assert histogram.labels == ["experiment_0", "experiment_1", "experiment_2"]
    ids = np.array(list(table["id"]))
    for e in range(3):
        values = np.concatenate(
            [truth[part][row] for part in parts for row in np.flatnonzero(ids == e)]
        )
        expected = np.histogram(values, bins=80, range=(0, 80))[0]
        np.testing.assert_array_equal(histogram.counts[e], expected)
        assert histogram.masked[e] + values.size == 245 * (ids == e).sum()


def test_several_tables_number_experiments_in_turn(three_experiments):
    table, _ = three_experiments
    one = histogram_shoeboxes(table, low=0, high=80, bins=80)
    two = histogram_shoeboxes([table, table], low=0, high=80, bins=80)
    assert two.labels == [f"experiment_{i}" for i in range(6)]
    np.testing.assert_array_equal(two.counts[:3], one.counts)
    np.testing.assert_array_equal(two.counts[3:], one.counts)


def test_unassigned_rows_form_their_own_group(three_experiments):
    from dials.array_family import flex

    table, truth = three_experiments
    table = table.copy()
    ids = table["id"]
    ids[0] = -1
    table["id"] = ids
    histogram = histogram_shoeboxes(table, low=0, high=80, bins=80)
    assert histogram.labels[-1] == "unassigned"
    expected = np.histogram(truth["foreground"][0], bins=80, range=(0, 80))[0]
    np.testing.assert_array_equal(histogram.counts[-1], expected)
    assert isinstance(table, flex.reflection_table)


def test_selection_errors(three_experiments):
    from dials.array_family import flex

    table, _ = three_experiments
    with pytest.raises(DataError, match="flagged integrated"):
        select_reflections(table, "integrated")
    without = flex.reflection_table()
    without["id"] = flex.int(3, 0)
    with pytest.raises(DataError, match="no shoebox column"):
        select_reflections(without, "indexed")
    assert select_reflections(table, "all").size() == table.size()


def test_same_counts_when_only_some_chunks_are_kept(three_experiments, monkeypatch):
    import dials_diffuse.algorithms.pixels.shoeboxes as shoeboxes

    table, _ = three_experiments
    everything = histogram_shoeboxes(table, chunk_size=7)
    monkeypatch.setattr(shoeboxes, "CACHE_BYTES", 45000)  # two chunks of 20783 bytes
    calls = []
    serialise = shoeboxes.shoebox_chunk
    monkeypatch.setattr(
        shoeboxes, "shoebox_chunk", lambda *a: calls.append(1) or serialise(*a)
    )
    some = histogram_shoeboxes(table, chunk_size=7)
    assert len(calls) == 9 + 7  # 9 chunks scanned, 7 of them serialised again
    np.testing.assert_array_equal(some.counts, everything.counts)
    np.testing.assert_array_equal(some.masked, everything.masked)
    assert (some.low, some.high, some.bins) == (
        everything.low,
        everything.high,
        everything.bins,
    )
