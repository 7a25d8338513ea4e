"""CC_total, CC_aniso, scale and offset of two maps against hand computations."""

import numpy as np
import pytest

from dials_diffuse.algorithms.maps import compare
from dials_diffuse.algorithms.maps.grid import ReciprocalMap
from dials_diffuse.util.errors import DataError


def _params(width=0.02):
    params = compare.phil_scope.extract()
    params.shells.width = width
    return params


def test_a_map_against_itself_and_against_a_shuffled_copy(known_map):
    same = compare.do_compare_maps(known_map.map, known_map.map, _params())
    assert same.overall["cc_total"] == pytest.approx(1.0, abs=1e-12)
    assert same.overall["cc_anisotropic"] == pytest.approx(1.0, abs=1e-12)
    assert same.overall["scale"] == pytest.approx(1.0)
    assert same.overall["offset"] == pytest.approx(0.0, abs=1e-9)
    correlations = same.shells.dropna(subset=["cc_total"])
    assert np.allclose(correlations["cc_total"], 1.0)
    values = known_map.map.values.copy()
    measured = np.isfinite(values)
    rng = np.random.default_rng(2)
    values[measured] = rng.permutation(values[measured])
    shuffled = compare.do_compare_maps(
        known_map.map, known_map.map.with_layers({"intensity": values}), _params()
    )
    # About 50 000 voxels: a correlation of chance is about 1 / sqrt(n) = 0.005.
    assert abs(shuffled.overall["cc_total"]) < 0.02
    assert abs(shuffled.overall["cc_anisotropic"]) < 0.02


def test_against_a_hand_computation():
    # A 3 x 3 x 3 grid in a cubic cell of 10 Angstrom: |s| is 0 (origin),
    # 0.1 (6 points), 0.1414 (12) and 0.1732 (8); shells of 0.05 hold the
    # origin, the 18 points up to 0.15 and the 8 corners.
    axes = [np.array([-1.0, 0.0, 1.0])] * 3
    cell = (10.0, 10.0, 10.0, 90.0, 90.0, 90.0)
    rng = np.random.default_rng(4)
    first = rng.uniform(1, 2, size=(3, 3, 3))
    second = 3.0 * first + 0.5 + rng.normal(scale=0.1, size=(3, 3, 3))
    second[0, 0, 0] = np.nan  # unmeasured in one map: left out of both
    maps = [
        ReciprocalMap(axes, {"intensity": values}, [1, 1, 1], cell, "P 1")
        for values in (first, second)
    ]
    params = _params(width=0.05)
    params.min_voxels = 3
    result = compare.do_compare_maps(*maps, params)
    h, k, l = np.meshgrid(*axes, indexing="ij")  # noqa: E741
    s = np.sqrt(h * h + k * k + l * l).ravel() / 10.0
    use = np.isfinite(second).ravel()
    a, b, s = first.ravel()[use], second.ravel()[use], s[use]
    assert result.overall["cc_total"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    scale, offset = np.polyfit(b, a, 1)
    assert result.overall["scale"] == pytest.approx(scale)
    assert result.overall["offset"] == pytest.approx(offset)

    def anisotropic(values):
        shell = np.floor(s / 0.05).astype(int)
        centres = [s[shell == n].mean() for n in np.unique(shell)]
        means = [values[shell == n].mean() for n in np.unique(shell)]
        return values - np.interp(s, centres, means)

    expected = np.corrcoef(anisotropic(a), anisotropic(b))[0, 1]
    assert result.overall["cc_anisotropic"] == pytest.approx(expected)
    assert result.overall["voxels"] == 26


def test_maps_of_different_subdivide_meet_on_the_coarser_grid(known_map):
    fine = known_map.map
    coarse_axes = [a[np.isclose(a % 1, 0)] for a in fine.axes]
    picks = [np.flatnonzero(np.isclose(a % 1, 0)) for a in fine.axes]
    coarse = ReciprocalMap(
        coarse_axes,
        {"intensity": fine.values[np.ix_(*picks)]},
        [1, 1, 1],
        fine.unit_cell,
        fine.space_group,
    )
    result = compare.do_compare_maps(fine, coarse, _params())
    assert result.first.shape == coarse.shape
    assert result.overall["cc_total"] == pytest.approx(1.0)


def test_maps_sharing_no_point_are_an_error(known_map):
    far = ReciprocalMap(
        [a + 100 for a in known_map.map.axes],
        dict(known_map.map.layers),
        known_map.map.subdivide,
        known_map.map.unit_cell,
        source="far.nxs",
    )
    with pytest.raises(DataError, match="share no grid point"):
        compare.do_compare_maps(known_map.map, far, _params())
