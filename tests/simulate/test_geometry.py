"""The simulator's own geometry against dxtbx/DIALS and hand-computed values."""

import math

import numpy as np
import pytest

from dials_diffuse.simulate import models
from dials_diffuse.simulate.rotation import build_experiment, rotation_setup
from dials_diffuse.simulate.scattering import (
    Corrections,
    DiffuseModel,
    correction_factors,
)


@pytest.fixture(scope="module")
def experiment():
    return build_experiment(rotation_setup("test", frames=10), seed=3)


def test_pixel_lab_coordinates_match_dxtbx(experiment):
    """Every pixel: dxtbx's parallax-corrected lab coordinate (the NXmx's sensor)."""
    panel = experiment.detector[0]
    strategy = panel.get_px_mm_strategy()
    assert strategy.name() == "ParallaxCorrectedPxMmStrategy"
    assert strategy.t0() == pytest.approx(0.45)
    assert strategy.mu() == pytest.approx(models.silicon_mu_per_mm(1.0))
    lab = models.pixel_lab_mm(panel)
    nx, ny = panel.get_image_size()
    from dials.array_family import flex

    y, x = np.mgrid[0:ny, 0:nx]
    centres = flex.vec2_double(
        flex.double((x.ravel() + 0.5).astype(float)),
        flex.double((y.ravel() + 0.5).astype(float)),
    )
    mm = panel.pixel_to_millimeter(centres)
    expected = np.array(panel.get_lab_coord(mm)).reshape(ny, nx, 3)
    np.testing.assert_allclose(lab, expected, rtol=0, atol=1e-9)
    # Parallax moves the corner pixels inwards by about 60 micrometres (0.4 px
    # of 0.15 mm: ~0.15 mm mean depth in 0.45 mm Si at 1 A, 24 degrees off
    # the normal), the pixels at the beam not at all.
    simple = (
        panel.get_origin()
        + np.einsum("ij,k->ijk", (x + 0.5) * 0.15, panel.get_fast_axis())
        + np.einsum("ij,k->ijk", (y + 0.5) * 0.15, panel.get_slow_axis())
    )
    shift = np.linalg.norm(lab - simple, axis=-1)
    assert 0.03 < shift[0, 0] < 0.1
    assert shift.min() < 1e-3
    # Inwards: a corner pixel sees a point closer to the beam.
    assert np.hypot(*lab[0, 0, :2]) < np.hypot(*simple[0, 0, :2])


def test_simulated_s1_is_what_dials_diffuse_geometry_computes(experiment):
    """The forward model's rays are those of the chain's own geometry (parallax)."""
    from dials_diffuse import geometry

    np.testing.assert_allclose(
        experiment.s1,
        geometry.pixel_s1(experiment.detector[0], experiment.beam),
        rtol=0,
        atol=1e-12,
    )


def test_beam_centre_pixel_has_s1_along_s0(experiment):
    panel = experiment.detector[0]
    s0 = np.array(experiment.beam.get_s0())
    bx, by = panel.get_beam_centre_px(tuple(s0))
    s1 = models.pixel_s1(panel, experiment.beam)
    # The pixel containing the beam centre scatters at the smallest angle.
    y, x = np.unravel_index(np.argmin(np.linalg.norm(s1 - s0, axis=-1)), s1.shape[:2])
    assert (x, y) == (int(bx), int(by))
    assert np.linalg.norm(s1, axis=-1) == pytest.approx(
        1 / experiment.beam.get_wavelength()
    )


def test_predicted_rays_index_to_integers(experiment):
    """DIALS's own ray predictor gives s1 and phi: our hkl formula must give integers."""
    from dials.algorithms.spot_prediction import ScanStaticRayPredictor
    from dials.array_family import flex

    gonio = experiment.goniometer
    predictor = ScanStaticRayPredictor(
        experiment.beam.get_s0(),
        gonio.get_rotation_axis_datum(),
        gonio.get_fixed_rotation(),
        gonio.get_setting_rotation(),
        (0.0, math.radians(40.0)),
    )
    indices = experiment.miller_indices[
        :: max(1, len(experiment.miller_indices) // 200)
    ]
    rays = predictor(
        flex.miller_index([tuple(int(i) for i in h) for h in indices]),
        experiment.crystal.get_A(),
    )
    assert len(rays) > 20
    s0 = np.array(experiment.beam.get_s0())
    for s1, phi, hkl_dials in zip(rays["s1"], rays["phi"], rays["miller_index"]):
        M = models.reciprocal_to_hkl_matrix(experiment.crystal, gonio, phi)
        assert M @ (np.array(s1) - s0) == pytest.approx(hkl_dials, abs=1e-6)


def test_rotation_matrix_is_right_handed():
    R = models.rotation_matrix((0, 0, 1), math.pi / 2)
    assert R @ np.array([1.0, 0, 0]) == pytest.approx([0, 1, 0])


def test_crystal_has_requested_cell_and_space_group(experiment):
    cell = experiment.crystal.get_unit_cell().parameters()
    assert cell == pytest.approx((34.0, 41.0, 52.0, 90, 90, 90), abs=1e-6)
    assert str(experiment.crystal.get_space_group().info()) == "P 21 21 21"


def test_polarization_hand_computed(experiment):
    """P = f (1 - sin²2θ cos²ψ) + (1 - f)(1 - sin²2θ sin²ψ), ψ the azimuth from +x.

    The beam is polarised in the horizontal (x) plane (normal +y).
    """
    panel = experiment.detector[0]
    corrections = correction_factors(panel, experiment.beam, Corrections())
    lab = models.pixel_lab_mm(panel)
    f = experiment.beam.get_polarization_fraction()
    two_theta = np.arctan2(np.hypot(lab[..., 0], lab[..., 1]), -lab[..., 2])
    psi = np.arctan2(lab[..., 1], lab[..., 0])
    sin2 = np.sin(two_theta) ** 2
    expected = f * (1 - sin2 * np.cos(psi) ** 2) + (1 - f) * (
        1 - sin2 * np.sin(psi) ** 2
    )
    assert corrections["polarization"] == pytest.approx(expected, rel=1e-9)
    # Horizontal plane at 2θ: P = f cos²2θ + (1 - f).
    centre = corrections["polarization"][128, 128]
    assert 0.99 < centre <= 1.0


def test_solid_angle_and_efficiency(experiment):
    panel = experiment.detector[0]
    corrections = correction_factors(panel, experiment.beam, Corrections())
    lab = models.pixel_lab_mm(panel)
    cos_alpha = panel.get_distance() / np.linalg.norm(lab, axis=-1)
    assert corrections["solid_angle"] == pytest.approx(cos_alpha**3)
    mu_t = panel.get_mu() * panel.get_thickness()
    efficiency = (1 - np.exp(-mu_t / cos_alpha)) / (1 - np.exp(-mu_t))
    assert corrections["efficiency"] == pytest.approx(efficiency)
    assert corrections["efficiency"].min() >= 1.0  # oblique paths absorb more
    assert corrections["total"] == pytest.approx(
        corrections["polarization"]
        * corrections["solid_angle"]
        * corrections["efficiency"]
        * corrections["air"]
    )


def test_diffuse_model_is_periodic_with_halos_and_ring():
    model = DiffuseModel()
    hkl = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    s = np.zeros(3)
    values = model(hkl, s)
    assert values[0] == pytest.approx(values[1])
    assert values[2] < 1e-3 * values[0]
    ring = model(
        np.full((3, 3), 0.5),
        np.array([model.ring_s - 0.1, model.ring_s, model.ring_s + 0.1]),
    )
    assert ring[1] == pytest.approx(model.ring_amplitude, rel=1e-3)
    assert ring[0] < 0.01 * ring[1] and ring[2] < 0.01 * ring[1]


def test_wilson_intensities_respect_symmetry(experiment):
    indices = experiment.miller_indices
    intensity = dict(zip(map(tuple, indices), experiment.intensities))
    # Systematic absences of P 21 21 21: h00, 0k0, 00l with odd index.
    for absent in [(1, 0, 0), (0, 3, 0), (0, 0, 5)]:
        assert absent not in intensity
    assert (2, 0, 0) in intensity
    # Symmetry mates (mmm) and Friedel mates have the same intensity.
    for h, k, m in [(1, 2, 3), (4, 1, 7), (3, 5, 2)]:
        mates = [(h, k, m), (-h, k, m), (h, -k, m), (h, k, -m), (-h, -k, -m)]
        assert len({intensity[m] for m in mates}) == 1
    # Wilson fall-off: strong at low resolution, weak at high.
    A = np.array(experiment.crystal.get_A()).reshape(3, 3)
    s = np.linalg.norm(indices @ A.T, axis=1)
    low, high = (
        experiment.intensities[s < 0.15].mean(),
        experiment.intensities[s > 0.35].mean(),
    )
    assert low > 3 * high
