"""Isotropic/anisotropic split, symmetry average and shell statistics against truth."""

import numpy as np
import pytest

from dials_diffuse.algorithms.maps import analyse
from dials_diffuse.algorithms.maps.grid import Shells
from dials_diffuse.algorithms.maps.symmetry import symmetry_average
from tests.maps.conftest import KnownMap


def _params(**changes):
    params = analyse.phil_scope.extract()
    params.symmetry.average = changes.get("average", False)
    params.shells.width = changes.get("width", 0.01)
    return params


def _shell_means(values, s, width):
    """Reference: the mean of the finite values per shell of |s| (numpy bincount)."""
    number = np.floor(s / width).astype(int).ravel()
    finite = np.isfinite(values).ravel()
    sums = np.bincount(number[finite], weights=values.ravel()[finite])
    counts = np.bincount(number[finite])
    return sums / np.maximum(counts, 1), counts


def test_isotropic_part_recovers_the_ring_profile(known_map):
    result = analyse.do_analyse_map(known_map.map, _params())
    profile = result.profile
    # The isotropic part of the truth: the ring, plus the background and the
    # shell mean of the halos (a smooth fall-off with |s|).
    rest, counts = _shell_means(known_map.halos, known_map.s, 0.01)
    usable = profile["voxels"].to_numpy() >= 50
    ring = profile["mean"].to_numpy() - BACKGROUND - rest[: len(profile)]
    model = known_map.model
    expected = _shell_means(known_map.ring, known_map.s, 0.01)[0][: len(profile)]
    noise = np.sqrt(
        _shell_means(known_map.sigma**2, known_map.s, 0.01)[0][: len(profile)]
        / np.maximum(counts[: len(profile)], 1)
    )
    assert np.all(np.abs(ring - expected)[usable] < 5 * noise[usable])
    # The ring's peak at its known |s| (within one shell of 0.01 1/Angstrom).
    peak = profile["s_mean"].to_numpy()[np.argmax(np.where(usable, ring, -np.inf))]
    assert peak == pytest.approx(model.ring_s, abs=0.01)
    # Counts are those of the measured voxels per shell.
    assert profile["voxels"].sum() == np.isfinite(known_map.map.values).sum()


BACKGROUND = 10.0


def test_anisotropic_part_recovers_the_halos_at_the_noise_limit(known_map):
    result = analyse.do_analyse_map(known_map.map, _params())
    anisotropic = result.map.layers["anisotropic"]
    # The truth: the halos minus their own shell means.
    halo_means, _ = _shell_means(known_map.halos, known_map.s, 0.01)
    number = np.floor(known_map.s / 0.01).astype(int)
    truth = known_map.halos - halo_means[np.minimum(number, len(halo_means) - 1)]
    measured = np.isfinite(anisotropic)
    signal = np.var(truth[measured])
    noise = np.mean(known_map.sigma[measured] ** 2)
    limit = np.sqrt(signal / (signal + noise))
    r = np.corrcoef(anisotropic[measured], truth[measured])[0, 1]
    assert 0.97 * limit < r <= limit + 0.01
    # Without noise, the split is exact up to the interpolation of the shells.
    exact = known_map.map.with_layers({"intensity": known_map.total})
    clean = analyse.do_analyse_map(exact, _params()).map.layers["anisotropic"]
    assert np.corrcoef(clean[measured], truth[measured])[0, 1] > 0.995


def test_symmetry_average_reduces_the_noise_and_its_spread_estimates_it():
    known = KnownMap(seed=3)
    mean, spread, mates = symmetry_average(known.map)["intensity"]
    hkl = np.meshgrid(*known.map.axes, indexing="ij")
    general = np.all([np.abs(index) > 0 for index in hkl], axis=0)
    measured = np.isfinite(known.total) & general & (mates == 8)
    assert measured.sum() > 50000
    error = (mean - known.total)[measured]
    predicted = np.sqrt(np.mean(known.sigma[measured] ** 2) / 8)
    assert np.sqrt(np.mean(error**2)) == pytest.approx(predicted, rel=0.05)
    # The spread of the mates is the noise of one voxel (sigma varies slowly).
    ratio = np.sqrt(
        np.mean(spread[measured] ** 2) / np.mean(known.sigma[measured] ** 2)
    )
    assert ratio == pytest.approx(1.0, abs=0.05)
    # Distinct mates are counted: 1 at the origin, 2 on the axes, 4 in the
    # planes (h = 0 etc.), 8 elsewhere.
    on_axes = sum(np.abs(index) > 0 for index in hkl)
    inside = np.isfinite(known.total)
    for nonzero, expected in ((0, 1), (1, 2), (2, 4), (3, 8)):
        assert np.all(mates[inside & (on_axes == nonzero)] == expected)
    # A map already symmetric is unchanged.
    symmetric = known.map.with_layers({"intensity": mean})
    again, spread_again, _ = symmetry_average(symmetric)["intensity"]
    assert np.allclose(again[measured], mean[measured])
    assert np.nanmax(spread_again) < 1e-9


def test_cc_half_of_the_halves_matches_the_signal_to_noise():
    known = KnownMap(seed=5)
    rng = np.random.default_rng(11)
    layers = dict(known.map.layers)
    for half in ("intensity_1", "intensity_2"):
        layers[half] = known.total + rng.normal(size=known.total.shape) * known.sigma
    layers["intensity_error"] = known.sigma
    result = analyse.do_analyse_map(
        known.map.with_layers(layers, "intensity"), _params(width=0.05)
    )
    statistics = result.statistics
    measured = np.isfinite(known.total)
    shells = Shells.of_width(0.05, 0.3)
    number = shells.index(known.s)
    for row, shell in zip(statistics.itertuples(), range(shells.count)):
        inside = measured & (number == shell)
        if inside.sum() < 1000:
            continue
        signal = np.var(known.total[inside])
        noise = np.mean(known.sigma[inside] ** 2)
        assert row.cc_half == pytest.approx(signal / (signal + noise), abs=0.03)
        assert row.completeness == pytest.approx(inside.sum() / (number == shell).sum())
        assert row.i_over_sigma == pytest.approx(
            known.map.values[inside].mean() / np.sqrt(noise), rel=0.01
        )
    assert 0 < result.summary["cc_half_anisotropic"] < result.summary["cc_half"] < 1


def test_map_without_measured_voxels_is_an_error(known_map):
    from dials_diffuse.util.errors import DataError

    empty = known_map.map.with_layers(
        {"intensity": np.full(known_map.map.shape, np.nan)}
    )
    with pytest.raises(DataError, match="no measured voxel"):
        analyse.do_analyse_map(empty, _params())


def test_symmetry_average_in_chunks_equals_one_pass(known_map, monkeypatch):
    from dials_diffuse.algorithms.maps import symmetry

    whole = symmetry_average(known_map.map)["intensity"]
    monkeypatch.setattr(symmetry, "CHUNK_POINTS", 1000)
    chunked = symmetry_average(known_map.map)["intensity"]
    for a, b in zip(whole, chunked):
        assert np.array_equal(a, b, equal_nan=True)
