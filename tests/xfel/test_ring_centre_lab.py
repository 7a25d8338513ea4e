"""Beam centre from powder rings in laboratory coordinates: several rings
without a guess, the ring asked for, tilted and multi-panel detectors."""

import copy

import numpy as np
import pytest
from dxtbx.model import Beam, DetectorFactory
from scitbx import matrix

from dials_diffuse.algorithms.xfel.find_ring_center import (
    PanelPlane,
    fit_ring_centre,
    move_beam_centre,
)
from dials_diffuse.simulate.tiled import panel_pixel_lab_mm, tiled_detector
from dials_diffuse.util.errors import DataError

WAVELENGTH = 1.0  # Å
BEAM = Beam((0.0, 0.0, 1.0), WAVELENGTH)


def flat_detector(beam_centre_px=(131.3, 118.6), tilt_deg=0.0, shape=(260, 250)):
    """One 0.1 mm panel 60 mm away, optionally tilted about x through the beam."""
    pixel = 0.1
    fast = matrix.col((1.0, 0.0, 0.0))
    slow = matrix.col((0.0, -1.0, 0.0))
    rotation = matrix.col((1.0, 0.0, 0.0)).axis_and_angle_as_r3_rotation_matrix(
        tilt_deg, deg=True
    )
    fast, slow = rotation * fast, rotation * slow
    foot = matrix.col((0.0, 0.0, -60.0))
    origin = foot - fast * beam_centre_px[0] * pixel - slow * beam_centre_px[1] * pixel
    return DetectorFactory.make_detector(
        "PAD", fast, slow, origin, (pixel, pixel), shape[::-1], (-1, 1e7)
    )


def powder_images(detector, rings, background=20.0, artefact=None, seed=0):
    """Poisson images of Gaussian rings in 2θ: rings = [(d Å, sigma deg,
    counts)]; `artefact`: (radius px, sigma px, counts) around the beam."""
    rng = np.random.default_rng(seed)
    s0 = np.array(BEAM.get_unit_s0())
    images, masks = [], []
    for panel in detector:
        lab = panel_pixel_lab_mm(panel)
        two_theta = np.degrees(np.arccos(lab @ s0 / np.linalg.norm(lab, axis=-1)))
        expected = np.full(two_theta.shape, background)
        for d, sigma, counts in rings:
            centre = np.degrees(2 * np.arcsin(WAVELENGTH / (2 * d)))
            expected += counts * np.exp(-0.5 * ((two_theta - centre) / sigma) ** 2)
        if artefact is not None:
            radius, sigma, counts = artefact
            foot = np.array(panel.get_beam_centre_px(BEAM.get_s0()))
            slow, fast = np.indices(two_theta.shape) + 0.5
            r = np.hypot(fast - foot[0], slow - foot[1])
            expected += counts * np.exp(-0.5 * ((r - radius) / sigma) ** 2)
        images.append(rng.poisson(expected).astype(np.float64))
        masks.append(np.ones(two_theta.shape, dtype=bool))
    return images, masks


def two_theta_deg(d):
    return np.degrees(2 * np.arcsin(WAVELENGTH / (2 * d)))


def radius_px(d, distance=60.0, pixel=0.1):
    return distance * np.tan(np.radians(two_theta_deg(d))) / pixel


# Rings at about 52, 78 and 104 px; the middle one is the strongest.
RINGS = [(11.5, 0.1, 150.0), (7.7, 0.1, 400.0), (5.8, 0.1, 200.0)]


@pytest.fixture(scope="module")
def three_rings():
    detector = flat_detector()
    # A bright, narrow artefact 6 px from the beam (as near a beam stop).
    images, masks = powder_images(detector, RINGS, artefact=(6.0, 0.6, 3000.0))
    return detector, images, masks


def test_strongest_ring_without_a_guess(three_rings):
    detector, images, masks = three_rings
    shifted = _shifted(detector, (4.0, -3.0))  # the model 5 px off the truth
    result = fit_ring_centre(shifted, BEAM, images, masks)
    truth = PanelPlane(detector).beam_foot(BEAM) / 0.1
    assert result.beam_centre_px == pytest.approx(truth, abs=0.05)
    assert result.two_theta_deg == pytest.approx(two_theta_deg(7.7), abs=2e-3)
    assert result.d == pytest.approx(7.7, rel=2e-4)
    # Every ring is a candidate; the artefact near the beam is not.
    radii = np.array([c.radius for c in result.fit.candidates])
    for d, _, _ in RINGS:
        assert np.min(np.abs(radii - radius_px(d))) < 1.0
    assert radii.min() > 40
    assert result.rms_px < 0.3 and not result.warnings
    assert result.rms_mm == pytest.approx(result.rms_px * 0.1)


@pytest.mark.parametrize(
    "kwargs,d",
    [({"ring": 1}, 11.5), ({"ring": 3}, 5.8), ({"d_spacing": 11.4}, 11.5)],
)
def test_the_ring_asked_for(three_rings, kwargs, d):
    detector, images, masks = three_rings
    result = fit_ring_centre(detector, BEAM, images, masks, **kwargs)
    assert result.d == pytest.approx(d, rel=5e-4)
    truth = PanelPlane(detector).beam_foot(BEAM) / 0.1
    assert result.beam_centre_px == pytest.approx(truth, abs=0.1)


def test_a_guess_never_returns_a_ring_outside_its_window(three_rings):
    detector, images, masks = three_rings
    # 65 px: the window 48.75-81.25 px holds the rings at 52 and 78 px.
    inside = fit_ring_centre(detector, BEAM, images, masks, radius_guess=65)
    assert 48.75 <= inside.radius_px <= 81.25
    # 140 px: no ring within 105-175 px.
    with pytest.raises(DataError, match="25%"):
        fit_ring_centre(detector, BEAM, images, masks, radius_guess=140)
    with pytest.raises(DataError, match="ring=5"):
        fit_ring_centre(detector, BEAM, images, masks, ring=5)


def test_close_rings_are_reported_as_blended():
    detector = flat_detector()
    rings = [(7.7, 0.1, 300.0), (7.4, 0.1, 300.0)]  # 78 and 82 px
    images, masks = powder_images(detector, rings)
    result = fit_ring_centre(detector, BEAM, images, masks, radius_guess=79.5)
    assert result.warnings
    assert any("blend" in w or "may not be one ring" in w for w in result.warnings)


def test_tilted_detector_beam_not_the_ellipse_centre():
    """On a detector tilted by 20 degrees the ring is an ellipse whose centre
    lies px away from the beam; the fit in lab coordinates finds the beam."""
    truth_px = (131.3, 118.6)
    detector = flat_detector(truth_px, tilt_deg=20.0)
    images, masks = powder_images(detector, [(7.7, 0.1, 400.0)])
    start = _shifted(detector, (3.0, 2.0))
    result = fit_ring_centre(start, BEAM, images, masks)
    assert result.beam_centre_px == pytest.approx(truth_px, abs=0.1)
    assert result.two_theta_deg == pytest.approx(two_theta_deg(7.7), abs=2e-3)
    circle_error = np.hypot(*(np.array(result.fit.centre) - truth_px))
    assert circle_error > 1.0  # what a circle fit would have said
    assert result.rms_px < 0.3 and not result.warnings
    # The moved model puts the beam where the fit says.
    from dxtbx.model.experiment_list import Experiment, ExperimentList

    moved = move_beam_centre(
        ExperimentList([Experiment(detector=start, beam=BEAM)]), result.beam_centre_mm
    )
    centre = moved[0].detector[0].get_beam_centre_px(BEAM.get_s0())
    assert centre == pytest.approx(result.beam_centre_px, abs=1e-6)


@pytest.mark.parametrize("tilt", [0.0, 10.0])
def test_multi_panel_detector(tilt):
    """A 16-panel detector (gaps, the beam through a central hole): the ring
    is fitted across panels in lab coordinates."""
    detector = tiled_detector(
        4, (48, 56), 0.2, gap_px=4, hole_px=8, distance_mm=40, tilt_deg=tilt
    )
    images, masks = powder_images(detector, [(4.2, 0.2, 300.0), (3.1, 0.2, 150.0)])
    truth = PanelPlane(detector).beam_foot(BEAM)
    start = _shifted(detector, (2.5, -1.5))
    result = fit_ring_centre(start, BEAM, images, masks)
    assert np.array(result.beam_centre_mm) == pytest.approx(truth, abs=0.02)  # 0.1 px
    assert result.d == pytest.approx(4.2, rel=5e-4)
    assert result.rms_px < 0.3 and not result.warnings
    # Ring points lie on many panels.
    assert result.image.shape[0] > 4 * 48 and (~result.valid).sum() > 0


def _shifted(detector, offset_px):
    """A copy of the detector moved in its plane by offset_px (fast, slow)."""
    moved = copy.deepcopy(detector)
    plane = PanelPlane(moved)
    translation = (offset_px[0] * plane.fast + offset_px[1] * plane.slow) * plane.pixel[
        0
    ]
    for panel in moved:
        panel.set_frame(
            panel.get_fast_axis(),
            panel.get_slow_axis(),
            tuple(np.array(panel.get_origin()) + translation),
        )
    return moved


@pytest.mark.parametrize("tilt", [35.0, 45.0])
def test_strongly_tilted_detector(tilt):
    """At 35-45 degrees the ring is so elliptical that a circle fit lands 15-40 px
    off; the refinement from the ring the model predicts finds the beam."""
    truth_px = (181.3, 168.6)
    detector = flat_detector(truth_px, tilt_deg=tilt, shape=(400, 400))
    images, masks = powder_images(detector, [(7.7, 0.1, 400.0)])
    result = fit_ring_centre(_shifted(detector, (3.0, 2.0)), BEAM, images, masks)
    assert result.beam_centre_px == pytest.approx(truth_px, abs=0.05)
    assert result.rms_px < 0.1 and not result.warnings


@pytest.mark.parametrize("tilt", [35.0, 45.0])
def test_strongly_tilted_detector_started_far_off(tilt):
    """The model's beam centre 19 px off at 35-45 degrees: the circle fit and
    the model's ring both lead to wrong minima; the ring's ridge in a wide
    window leads to the beam."""
    truth_px = (181.3, 168.6)
    detector = flat_detector(truth_px, tilt_deg=tilt, shape=(400, 400))
    images, masks = powder_images(detector, [(7.7, 0.1, 400.0)])
    result = fit_ring_centre(_shifted(detector, (15.0, -12.0)), BEAM, images, masks)
    assert result.beam_centre_px == pytest.approx(truth_px, abs=0.05)
    assert result.rms_px < 0.1 and not result.warnings


def test_ring_coverage_tells_a_wrong_beam_centre():
    """The ring a beam centre 19 px off predicts is found along a third of its
    length; the true beam's ring along all of it."""
    from dials_diffuse.algorithms.xfel.find_ring_center import (
        assemble,
        predicted_ring,
        ring_coverage,
    )
    from dials_diffuse.algorithms.xfel.rings import ring_points

    truth_px = np.array((181.3, 168.6))
    detector = flat_detector(tuple(truth_px), tilt_deg=45.0, shape=(400, 400))
    images, masks = powder_images(detector, [(7.7, 0.1, 400.0)])
    plane = PanelPlane(detector)
    image, valid, origin = assemble(detector, images, masks)
    origin = np.asarray(origin)
    two_theta = np.radians(two_theta_deg(7.7))
    coverages = []
    for offset in ((0.0, 0.0), (15.0, -12.0)):
        beam_mm = (truth_px + offset) * plane.pixel
        centre = beam_mm / plane.pixel - origin
        expected = predicted_ring(plane, BEAM, beam_mm, two_theta, centre, origin, 360)
        found = ring_points(image, valid, centre, expected, 4.0, 360)
        coverages.append(
            ring_coverage(
                valid, plane, BEAM, beam_mm, two_theta, origin, 360, len(found)
            )
        )
    assert coverages[0] > 0.95 and coverages[1] < 0.6
