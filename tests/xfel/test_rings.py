"""Ring fit: beam centre and radius within 0.1 px of the truth."""

import numpy as np
import pytest

from dials_diffuse.algorithms.xfel.rings import find_ring_centre, fit_circle
from dials_diffuse.images.sacla import SACLASource
from dials_diffuse.util.errors import DataError

from .conftest import ring_image


def _summed(truth):
    with SACLASource(truth.path) as source:
        total = np.zeros(truth.shape)
        for i in np.flatnonzero(~source.dark):
            total += source.read_shot(i)[0]
    return total


def test_centre_and_radius_from_summed_shots(sacla_file):
    image = _summed(sacla_file)
    fit = find_ring_centre(image, sacla_file.mask)  # start: the image centre
    assert fit.centre == pytest.approx(sacla_file.beam_centre, abs=0.1)
    assert fit.radius == pytest.approx(sacla_file.ring_radius, abs=0.1)
    assert all(0 < s < 0.05 for s in fit.centre_sigma)
    assert 0 < fit.radius_sigma < 0.05
    # The gap holds no ring points.
    gap = sacla_file.gap_columns
    assert not np.any((fit.points[:, 0] >= gap.start) & (fit.points[:, 0] < gap.stop))


def test_single_noisy_shot_far_start_with_radius_guess(sacla_file):
    with SACLASource(sacla_file.path) as source:
        image = source.read_shot(sacla_file.n_dark + 1)[0]
    fit = find_ring_centre(
        image, sacla_file.mask, start=(140.0, 160.0), radius_guess=90, search_px=30
    )
    assert fit.centre == pytest.approx(sacla_file.beam_centre, abs=0.1)
    assert fit.radius == pytest.approx(sacla_file.ring_radius, abs=0.1)
    # The stated uncertainty is consistent with the actual error.
    error = np.hypot(*(np.array(fit.centre) - sacla_file.beam_centre))
    assert error < 5 * np.hypot(*fit.centre_sigma)


def test_two_rings_radius_guess_picks_one():
    shape, centre = (260, 240), (118.6, 131.2)
    image = ring_image(shape, centre, 50.0, 1.2, 1, 0.0, 300.0, 5.0)
    image += ring_image(shape, centre, 95.0, 1.2, 1, 0.0, 500.0, 0.0)
    valid = np.ones(shape, dtype=bool)
    inner = find_ring_centre(image, valid, radius_guess=48)
    outer = find_ring_centre(image, valid)
    assert inner.radius == pytest.approx(50.0, abs=0.1)
    assert outer.radius == pytest.approx(95.0, abs=0.1)
    assert inner.centre == pytest.approx(centre, abs=0.05)


def test_circle_fit_exact_points_and_an_outlier():
    phi = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    points = np.stack([3.0 + 7.0 * np.cos(phi), -2.0 + 7.0 * np.sin(phi)], axis=1)
    points[5] += 3.0  # one wild point
    centre, radius, _, rms, inliers = fit_circle(points)
    assert centre == pytest.approx([3.0, -2.0], abs=1e-6)
    assert radius == pytest.approx(7.0, abs=1e-6)
    assert not inliers[5] and inliers.sum() == 49
    assert rms < 1e-6


def test_all_masked_is_a_user_error():
    image = np.ones((20, 20))
    with pytest.raises(DataError, match="every pixel is masked"):
        find_ring_centre(image, np.zeros((20, 20), dtype=bool))
    with pytest.raises(DataError, match="cannot fit a circle"):
        find_ring_centre(
            np.random.default_rng(0).poisson(5.0, (60, 60)), np.ones((60, 60), bool)
        )
