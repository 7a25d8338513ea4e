"""The (q, phi) map from dxtbx models: every sample lands where dxtbx says."""

import numpy as np
import pytest
from dxtbx.model import Beam, DetectorFactory
from scitbx import matrix

from dials_diffuse import geometry
from dials_diffuse.algorithms.xfel.polar import (
    phi_samples,
    q_at_radius,
    q_phi_coordinates,
    q_polar_map,
)
from dials_diffuse.util.errors import DataError

WAVELENGTH = 1.2  # Å


def _panel_detector(tilt_degrees=0.0, panels=1):
    """Panels of 200 x 100 px (0.1 mm) stacked in y, 80 mm away, tilted about x."""
    rotation = matrix.col((1, 0, 0)).axis_and_angle_as_r3_rotation_matrix(
        tilt_degrees, deg=True
    )
    detector = None
    for k in range(panels):
        fast = rotation * matrix.col((1, 0, 0))
        slow = rotation * matrix.col((0, -1, 0))
        centre = matrix.col((0.0, -10.0 * k, -80.0))
        origin = centre - 10.0 * fast - 5.0 * slow
        single = DetectorFactory.make_detector(
            "PAD", fast, slow, origin, (0.1, 0.1), (200, 100), (-1, 1e6)
        )
        if detector is None:
            detector = single
        else:
            detector.add_panel(single[0])
    return detector


@pytest.mark.parametrize("tilt,panels", [(0.0, 1), (12.0, 1), (0.0, 2)])
def test_samples_have_the_q_and_phi_asked_for(tilt, panels):
    detector = _panel_detector(tilt, panels)
    beam = Beam((0.0, 0.0, 1.0), WAVELENGTH)
    q = np.linspace(0.1, 1.2, 12)
    nphi = 72
    fast, slow, panel = q_phi_coordinates(detector, beam, q, nphi)
    on = np.isfinite(fast)
    assert on.mean() > 0.15
    phi = phi_samples(nphi)
    for row, col in zip(*np.nonzero(on)):
        p = detector[int(panel[row, col])]
        xy = (fast[row, col], slow[row, col])
        two_theta = p.get_two_theta_at_pixel(beam.get_s0(), xy)
        assert 4 * np.pi * np.sin(two_theta / 2) / WAVELENGTH == pytest.approx(
            q[row], rel=1e-9
        )
        lab = np.array(p.get_pixel_lab_coord(xy))
        azimuth = geometry.azimuth(p, beam, lab=lab)
        difference = np.angle(np.exp(1j * (azimuth - phi[col])))
        assert difference == pytest.approx(0, abs=1e-9)
    if panels == 2:
        assert set(np.unique(panel[on])) == {0, 1}


def test_phi_runs_from_lab_x_towards_lab_y():
    detector = _panel_detector()
    beam = Beam((0.0, 0.0, 1.0), WAVELENGTH)
    centre = detector[0].get_beam_centre_px(beam.get_s0())
    q = [q_at_radius(detector, beam, 30.0)]
    fast, slow, _ = q_phi_coordinates(detector, beam, q, 4)
    # fast = +x, slow = -y: phi = 0 is +fast, 90 degrees -slow, 180 -fast.
    np.testing.assert_allclose(fast[0] - centre[0], [30, 0, -30, 0], atol=1e-9)
    np.testing.assert_allclose(slow[0] - centre[1], [0, -30, 0, 30], atol=1e-9)


def test_q_out_of_range_is_a_user_error():
    detector = _panel_detector()
    beam = Beam((0.0, 0.0, 1.0), WAVELENGTH)
    with pytest.raises(DataError, match="q must lie"):
        q_polar_map(detector, beam, [20.0], 36)


def test_masked_pixels_carry_to_the_polar_mask():
    detector = _panel_detector()
    beam = Beam((0.0, 0.0, 1.0), WAVELENGTH)
    q = np.linspace(0.2, 0.6, 5)
    polar_map = q_polar_map(detector, beam, q, 90, "nearest")
    fast, slow, _ = q_phi_coordinates(detector, beam, q, 90)
    valid = np.ones((100, 200), dtype=bool)
    valid[:, 120:125] = False  # a dead stripe
    _, polar_valid = polar_map.apply(np.ones((1, 100, 200)), valid[None])
    on = np.isfinite(fast)
    in_stripe = on & (np.floor(np.nan_to_num(fast)) >= 120)
    in_stripe &= np.floor(np.nan_to_num(fast)) < 125
    np.testing.assert_array_equal(polar_valid[0], on & ~in_stripe)
    assert in_stripe.any()


def test_oversampling_averages_the_cell():
    """Each oversampled polar value is the mean of bilinear values at its
    sub-sample points (checked with scipy), and averages away pixel noise."""
    from scipy import ndimage

    from dials_diffuse.algorithms.xfel.polar import pixel_coordinates_at

    detector = _panel_detector()
    beam = Beam((0.0, 0.0, 1.0), WAVELENGTH)
    q = np.linspace(0.3, 0.5, 5)
    nphi, s = 24, 3
    noise = np.random.default_rng(1).normal(100.0, 10.0, (100, 200))
    fine = q_polar_map(detector, beam, q, nphi, "bilinear", oversample=s)
    plain = q_polar_map(detector, beam, q, nphi, "bilinear")
    out_fine, ok_fine = fine.apply(noise[None])
    out_plain, ok_plain = plain.apply(noise[None])
    offsets = (np.arange(s) + 0.5) / s - 0.5
    dq, dphi = q[1] - q[0], 2 * np.pi / nphi
    sub_q = q[:, None, None, None] + dq * offsets[None, None, :, None]
    sub_phi = (
        phi_samples(nphi)[None, :, None, None] + dphi * offsets[None, None, None, :]
    )
    fast, slow, _ = pixel_coordinates_at(detector, beam, sub_q, sub_phi)
    inside = np.isfinite(fast).all(axis=(2, 3))
    values = ndimage.map_coordinates(
        noise, [np.nan_to_num(slow) - 0.5, np.nan_to_num(fast) - 0.5], order=1
    )
    np.testing.assert_array_equal(ok_fine[0], inside)
    np.testing.assert_allclose(
        out_fine[0][inside], values.mean(axis=(2, 3))[inside], rtol=1e-5
    )
    both = ok_fine[0] & ok_plain[0]
    assert out_fine[0][both].std() < 0.6 * out_plain[0][both].std()
