"""The 3D-DeltaPDF against maps whose transform is known."""

import numpy as np
import pytest

from dials_diffuse.algorithms.maps import delta_pdf
from dials_diffuse.algorithms.maps.grid import ReciprocalMap
from dials_diffuse.io.map_files import read_real_space_ccp4, write_real_space_ccp4

# A monoclinic cell: the Angstrom axes run along a, b, c (not Cartesian).
CELL = (12.0, 15.0, 10.0, 90.0, 104.0, 90.0)


def _grid_map(function, subdivide=(3, 3, 3), half=(18, 20, 16), cell=CELL, group="P 1"):
    axes = [np.arange(-n, n + 1) / s for n, s in zip(half, subdivide)]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return ReciprocalMap(axes, {"intensity": function(hkl)}, subdivide, cell, group)


def _params(**changes):
    params = delta_pdf.phil_scope.extract()
    for path, value in changes.items():
        scope, _, name = path.rpartition(".")
        setattr(
            getattr(params, scope) if scope else params,
            name,
            value,
        )
    return params


@pytest.mark.parametrize("vector", [(2, -1, 3), (5, 4, -2)])
def test_displacement_pair_peaks_at_its_interatomic_vector(vector):
    # Two atoms u apart: I(h) = |1 + exp(2 pi i h.u)|^2 = 2 + 2 cos(2 pi h.u);
    # u on the real-space grid (steps of subdivide / n cells).
    recmap = _grid_map(lambda hkl: np.zeros(hkl.shape[:3]))
    steps = np.array(recmap.subdivide) / np.array(recmap.shape)
    u = np.array(vector) * steps
    h, k, l = np.meshgrid(*recmap.axes, indexing="ij")  # noqa: E741
    recmap.layers["intensity"] = 2 + 2 * np.cos(
        2 * np.pi * (h * u[0] + k * u[1] + l * u[2])
    )
    pdf = delta_pdf.do_delta_pdf(recmap, _params())
    # The largest peak away from the origin: at +u or -u, within one grid step.
    found = pdf.peak(exclude_origin=3.0)
    error = np.minimum(np.abs(found - u), np.abs(found + u)) / steps
    assert np.all(error <= 1.0), (found, u)
    # In Angstrom along a, b, c: fraction times the cell length.
    angstrom = [
        axis[np.argmin(np.abs(frac - f))]
        for axis, frac, f in zip(pdf.axes_angstrom, pdf.fractional_axes, found)
    ]
    assert np.allclose(angstrom, found * np.array(CELL[:3]))
    assert pdf.supercell == pytest.approx((36.0, 45.0, 30.0, 90.0, 104.0, 90.0))


def test_a_constant_map_transforms_to_a_delta_at_the_origin():
    recmap = _grid_map(lambda hkl: np.full(hkl.shape[:3], 2.5))
    pdf = delta_pdf.do_delta_pdf(
        recmap,
        _params(
            **{"punch.shape": "none", "apodise.window": "none", "apodise.s_max": 100.0}
        ),
    )
    origin = tuple(-np.asarray(pdf.origin_index))
    assert pdf.values[origin] == pytest.approx(2.5)
    others = np.delete(
        pdf.values.ravel(), np.ravel_multi_index(origin, pdf.values.shape)
    )
    assert np.abs(others).max() < 1e-12
    assert pdf.fractional_axes[0][origin[0]] == 0


def test_transform_equals_the_direct_sum_on_a_grid_off_the_origin():
    # Limits not symmetric about 0 (h from -1/2 to 2): the phases still refer
    # to h = 0. Reference: P(x) = (1/N) sum_h I(h) cos(2 pi h.x), summed.
    subdivide = np.array([2, 3, 2])
    axes = [np.arange(-1, 5) / 2, np.arange(-2, 3) / 3, np.arange(0, 4) / 2]
    rng = np.random.default_rng(1)
    values = rng.uniform(0, 1, size=[len(a) for a in axes])
    recmap = ReciprocalMap(axes, {"intensity": values}, subdivide, CELL, "P 1")
    pdf = delta_pdf.do_delta_pdf(
        recmap,
        _params(
            **{"punch.shape": "none", "apodise.window": "none", "apodise.s_max": 100.0}
        ),
    )
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    x = np.stack(np.meshgrid(*pdf.fractional_axes, indexing="ij"), axis=-1).reshape(
        -1, 3
    )
    direct = np.cos(2 * np.pi * x @ hkl.T) @ values.ravel() / values.size
    assert np.allclose(pdf.values.ravel(), direct, atol=1e-12)


def test_punch_removes_allowed_bragg_positions_only():
    recmap = _grid_map(
        lambda hkl: np.ones(hkl.shape[:3]),
        cell=(10, 10, 10, 90, 90, 90),
        group="P 21 21 21",
    )
    punched = delta_pdf.bragg_positions(recmap, _params(**{"punch.radius": 0.4}).punch)
    h, k, l = np.meshgrid(*recmap.axes, indexing="ij")  # noqa: E741
    at = lambda a, b, c: punched[  # noqa: E731
        np.argmin(np.abs(recmap.axes[0] - a)),
        np.argmin(np.abs(recmap.axes[1] - b)),
        np.argmin(np.abs(recmap.axes[2] - c)),
    ]
    assert at(1, 1, 0) and at(2, 0, 0) and at(1 + 1 / 3, 1, 0)
    assert not at(1, 0, 0)  # systematically absent in P212121
    assert not at(1 + 1 / 3, 1 + 1 / 3, 1 / 3)  # 0.58 r.l.u. from (1, 1, 0)
    assert not at(1 + 2 / 3, 1 + 2 / 3, 0)  # 0.47 r.l.u. from (2, 2, 0)


def test_punch_by_the_peak_model_ellipsoid():
    from dials_diffuse.algorithms.diffuse.peaks import PeakModel

    recmap = _grid_map(lambda hkl: np.ones(hkl.shape[:3]))
    # Long along h (sigma 0.2 r.l.u.), short along k and l (0.05).
    model = PeakModel(np.zeros(3), np.diag([0.2, 0.05, 0.05]) ** 2)
    punch = _params(**{"punch.shape": "ellipsoid", "punch.sigma_cutoff": 2.0}).punch
    punched = delta_pdf.bragg_positions(recmap, punch, model)

    def at(point):
        return punched[
            tuple(int(np.argmin(np.abs(a - v))) for a, v in zip(recmap.axes, point))
        ]

    assert at((1, 1, 1)) and at((1 + 1 / 3, 1, 1))  # 1.7 sigma along h
    assert not at((1, 1 + 1 / 3, 1))  # 6.7 sigma along k
    assert punched.mean() == pytest.approx(3 / 27, abs=0.01)  # 3 of 27 per cell


def test_tukey_window():
    params = _params(**{"apodise.s_max": 1.0, "apodise.fraction": 0.5}).apodise
    s = np.array([0.0, 0.5, 0.75, 1.0, 1.2])
    assert np.allclose(delta_pdf.window(s, params), [1, 1, 0.5, 0, 0])


def test_ccp4_map_has_the_supercell_and_origin(tmp_path):
    recmap = _grid_map(lambda hkl: 2 + 2 * np.cos(2 * np.pi * hkl[..., 0] * 0.5))
    pdf = delta_pdf.do_delta_pdf(recmap, _params())
    write_real_space_ccp4(tmp_path / "pdf.ccp4", pdf, "test")
    values, cell, grid, origin = read_real_space_ccp4(tmp_path / "pdf.ccp4")
    assert cell == pytest.approx(pdf.supercell)
    assert grid == pdf.values.shape
    assert origin == tuple(pdf.origin_index)
    assert np.allclose(
        values, pdf.values, rtol=1e-6, atol=1e-6 * np.abs(pdf.values).max()
    )
