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
from dials_diffuse.simulate.tiled import tiled_detector
from dials_diffuse.util.errors import DataError

WAVELENGTH = 1.2  # Å


def reference_coordinates(detector, beam, q, phi):
    """Pixel coordinates where |q| (Å⁻¹) at azimuth phi (rad) lands: every
    sample tested against every panel, in numpy, with dxtbx's own
    millimeter_to_pixel (the reference for `grid_coordinates`)."""
    from scitbx.array_family import flex

    from dials_diffuse.algorithms.xfel.polar import azimuth_basis

    wavelength = beam.get_wavelength()
    q, phi = np.broadcast_arrays(np.asarray(q, float), np.asarray(phi, float))
    two_theta = 2.0 * np.arcsin(q * wavelength / (4.0 * np.pi))
    b = np.array(beam.get_unit_s0())
    e1, e2 = azimuth_basis(beam)
    direction = (
        np.cos(two_theta)[..., None] * b
        + (np.sin(two_theta) * np.cos(phi))[..., None] * e1
        + (np.sin(two_theta) * np.sin(phi))[..., None] * e2
    ).reshape(-1, 3)
    fast = np.full(direction.shape[0], np.nan)
    slow = np.full(direction.shape[0], np.nan)
    panel_of = np.full(direction.shape[0], -1)
    for panel_id, panel in enumerate(detector):
        D = np.array(panel.get_D_matrix()).reshape(3, 3)
        v = direction @ D.T
        todo = np.isnan(fast) & (v[:, 2] > 0)
        if not np.any(todo):
            continue
        mm = flex.vec2_double(
            flex.double(v[todo, 0] / v[todo, 2]), flex.double(v[todo, 1] / v[todo, 2])
        )
        px = np.stack(
            [part.as_numpy_array() for part in panel.millimeter_to_pixel(mm).parts()],
            axis=1,
        )
        n_fast, n_slow = panel.get_image_size()
        on = (px[:, 0] >= 0) & (px[:, 0] < n_fast) & (px[:, 1] >= 0)
        on &= px[:, 1] < n_slow
        where = np.flatnonzero(todo)[on]
        fast[where], slow[where] = px[on, 0], px[on, 1]
        panel_of[where] = panel_id
    shape = q.shape
    return fast.reshape(shape), slow.reshape(shape), panel_of.reshape(shape)


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
    fast, slow, _ = reference_coordinates(detector, beam, sub_q, sub_phi)
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


def _parallax_detector():
    """A PILATUS-like panel whose mm-to-px mapping corrects for parallax."""
    from dxtbx.model import ParallaxCorrectedPxMmStrategy

    detector = _panel_detector(tilt_degrees=8.0)
    detector[0].set_px_mm_strategy(ParallaxCorrectedPxMmStrategy(3.96, 0.45))
    detector[0].set_mu(3.96)
    detector[0].set_thickness(0.45)
    return detector


@pytest.mark.parametrize(
    "make",
    [
        lambda: tiled_detector(4, (24, 32), 0.2, gap_px=3, hole_px=6, distance_mm=60),
        lambda: tiled_detector(
            4, (24, 32), 0.2, gap_px=3, hole_px=6, distance_mm=60, tilt_deg=15
        ),
        lambda: _panel_detector(12.0, 2),
        _parallax_detector,
    ],
    ids=["tiled", "tiled-tilted", "two-panels-tilted", "parallax"],
)
def test_grid_coordinates_match_every_panel_tested(make):
    """The bounded per-panel C++ projection finds exactly the samples (and
    coordinates) that testing every sample on every panel with dxtbx finds."""
    detector = make()
    beam = Beam((0.0, 0.0, 1.0), WAVELENGTH)
    q = np.linspace(0.05, 1.4, 60)
    nphi = 180
    fast, slow, panel = q_phi_coordinates(detector, beam, q, nphi)
    ref_fast, ref_slow, ref_panel = reference_coordinates(
        detector, beam, q[:, None], phi_samples(nphi)[None, :]
    )
    np.testing.assert_array_equal(panel, ref_panel)
    on = ref_panel >= 0
    assert 0.1 < on.mean() < 0.95
    np.testing.assert_allclose(fast[on], ref_fast[on], atol=1e-9)
    np.testing.assert_allclose(slow[on], ref_slow[on], atol=1e-9)
    assert np.all(np.isnan(fast[~on]))
    if len(detector) > 2:
        assert len(np.unique(panel[on])) == len(detector)


@pytest.mark.parametrize("tilt", [0.0, 20.0])
@pytest.mark.parametrize(
    "method,oversample", [("bilinear", 1), ("nearest", 1), ("bilinear", 2)]
)
def test_multi_panel_map_recovers_q_of_every_pixel(tilt, method, oversample):
    """A 16-panel detector (tilted: rings off the beam) whose pixels hold
    their own |q|: every polar sample reads back its row's q (within the q
    change across the pixels it uses), on every panel, gaps masked."""
    from dials_diffuse.simulate.tiled import panel_pixel_lab_mm

    detector = tiled_detector(
        4, (30, 40), 0.3, gap_px=4, hole_px=6, distance_mm=50, tilt_deg=tilt
    )
    beam = Beam((0.0, 0.0, 1.0), WAVELENGTH)
    images = []
    for panel in detector:
        lab = panel_pixel_lab_mm(panel)
        two_theta = np.arccos(-lab[..., 2] / np.linalg.norm(lab, axis=-1))
        images.append(4 * np.pi * np.sin(two_theta / 2) / WAVELENGTH)
    frame = np.concatenate([image.ravel() for image in images])[None]
    q = np.linspace(0.3, 2.0, 40)
    polar_map = q_polar_map(detector, beam, q, 240, method, oversample)
    out, ok = polar_map.apply(frame.astype(np.float32))
    assert 0.3 < ok.mean() < 0.9
    # The q change across one pixel bounds the interpolation error.
    dq = np.max(np.abs(np.diff(images[0], axis=1)))
    error = np.abs(out[0] - q[:, None])[ok[0]]
    assert error.max() < (1.0 if method == "nearest" else 0.2) * dq + 1e-6
    if method == "bilinear" and oversample == 1:
        # Every panel is used (tilted: the far corners lie beyond q = 2).
        fast, slow, panel = q_phi_coordinates(detector, beam, q, 240)
        assert len(np.unique(panel[ok[0]])) >= (16 if tilt == 0 else 12)


def test_default_grid_of_a_multi_panel_detector():
    """Without q_range, a tiled detector's grid spans the q of its pixels
    (the hole's edge to the far corners), about one row per pixel."""
    from dials_diffuse.algorithms.xfel.polar_transform import default_q_grid
    from dials_diffuse.simulate.tiled import panel_pixel_lab_mm

    detector = tiled_detector(4, (30, 40), 0.3, gap_px=4, hole_px=6, distance_mm=50)
    beam = Beam((0.0, 0.0, 1.0), WAVELENGTH)
    q, nphi = default_q_grid(detector, beam)
    pixel_q = []
    for panel in detector:
        lab = panel_pixel_lab_mm(panel)
        two_theta = np.arccos(-lab[..., 2] / np.linalg.norm(lab, axis=-1))
        pixel_q.append(4 * np.pi * np.sin(two_theta / 2) / WAVELENGTH)
    pixel_q = np.concatenate([p.ravel() for p in pixel_q])
    assert q[0] <= pixel_q.min() and q[-1] >= pixel_q.max()
    assert q[0] > 0.9 * pixel_q.min() - 1e-3 and q[-1] < 1.02 * pixel_q.max()
    # About one row per pixel of radius: the radial span in px.
    radial_px = (q[-1] - q[0]) / (q[1] - q[0])
    assert 100 < radial_px < 200 and nphi % 4 == 0 and nphi > 2 * np.pi * 80
    polar_map = q_polar_map(detector, beam, q, nphi)
    assert 0.3 < polar_map.coverage.mean() < 0.95
