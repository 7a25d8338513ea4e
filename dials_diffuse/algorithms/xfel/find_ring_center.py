"""The find-ring-centre step: the beam centre of still shots from a powder ring.

`do_find_ring_center(shots, params)` sums the selected shots (streamed, per
panel), puts every panel's pixels onto the plane of panel 0 (a detector of
one panel is its own plane; several coplanar panels, e.g. a CSPAD or a
JUNGFRAU, make one image with their gaps masked), finds the ring (the
strongest of the radial profile, the ring-th from the centre, or the one
near a radius or d-spacing guess) and fits it in laboratory coordinates:
the beam centre b on the plane and the ring's scattering angle 2θ that make
every ring point's 2θ equal. On a detector normal to the beam this is a
circle fit; on a tilted one the ring is an ellipse whose centre is off the
beam, and the fit still returns where the beam hits. The detector model is
then moved in its plane so that the beam hits the fitted point.

Plane coordinates are in mm along panel 0's fast and slow axes from its
origin; pixel coordinates (fast, slow) in panel 0's pixels, pixel centres
at i + 0.5 (the DIALS convention).
"""

import copy
import dataclasses
import logging

import numpy as np
from libtbx.phil import parse
from scipy import optimize

from dials_diffuse.algorithms.xfel.polar import phi_samples
from dials_diffuse.algorithms.xfel.rings import (
    find_ring_centre,
    guess_window,
    ring_points,
    ring_ridge,
    ring_warnings,
)
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.progress import progress

logger = logging.getLogger(__name__)

phil_str = """
shots = None
  .type = ints(value_min=0)
  .help = "Sum only these shots (0-based, in acquisition order). Default: all"
          "shots that are not dark."
tags = None
  .type = ints
  .help = "Sum only the shots with these SACLA tags."
ring = None
  .type = int(value_min=1)
  .help = "Fit the ring-th ring of the radial profile, counting from the"
          "centre (1: the innermost). Default: the strongest ring."
ring_radius_guess = None
  .type = float(value_min=1)
  .help = "Approximate ring radius in pixels; the ring is looked for within"
          "25% of it (never outside). Default: the strongest ring."
d_spacing = None
  .type = float(value_min=0)
  .help = "Fit the ring of this d-spacing (Å): its radius is guessed from the"
          "wavelength and the detector distance, and the ring looked for"
          "within 25% of it."
search_radius = None
  .type = float(value_min=0.5)
  .help = "Half-width in pixels of the coarse centre search around the start"
          "(the beam centre of the detector model, or geometry.beam_centre)."
          "Default: 10% of the image size."
"""

phil_scope = parse(phil_str)


@dataclasses.dataclass
class RingCentre:
    """The fitted beam centre and ring.

    Attributes
    ----------
    beam_centre_mm : (float, float)
        Where the beam hits the plane of panel 0 (fast, slow) mm.
    beam_centre_px, beam_centre_sigma_px : (float, float)
        The same in panel 0's pixels, and its standard uncertainty.
    two_theta_deg, two_theta_sigma_deg : float
        Scattering angle of the ring.
    q, d : float
        |q| (Å⁻¹) and d-spacing (Å) of the ring.
    radius_px, radius_sigma_px : float
        Mean distance of the ring points from the beam centre, px.
    rms_px, rms_mm : float
        RMS distance of the ring points from the fitted ring, radially.
    points_px : ndarray (n, 2)
        Ring points (fast, slow) in the image's pixels.
    fit : RingFit
        The circle fit in the image (start, candidates, width).
    warnings : list of str
    image, valid : ndarray
        The summed image on the plane (for plots) and its valid pixels.
    image_origin_px : (float, float)
        Panel-0 pixel coordinates of the image's corner (0, 0).
    shots : int
        Shots summed.
    experiments : ExperimentList
        A copy of the input with the detector moved to the fitted centre
        (`do_find_ring_center`).
    """

    beam_centre_mm: tuple
    beam_centre_px: tuple
    beam_centre_sigma_px: tuple
    two_theta_deg: float
    two_theta_sigma_deg: float
    q: float
    d: float
    radius_px: float
    radius_sigma_px: float
    rms_px: float
    rms_mm: float
    points_px: np.ndarray
    fit: object
    warnings: list
    image: np.ndarray
    valid: np.ndarray
    image_origin_px: tuple
    shots: int = 0
    experiments: object = None


def sum_shots(shots, indices):
    """Sum of the selected shots per panel (float64, rows x columns) and
    the pixels valid in every one; one block of shots in memory at a time."""
    total = np.zeros(shots.n_pixels)
    valid = np.ones(shots.n_pixels, dtype=bool)
    blocks = shots.blocks(indices, size=4)
    for _, data, block_valid in progress(
        blocks, total=-(-len(indices) // 4), desc="Summing shots", unit="block"
    ):
        total += np.where(block_valid, data, 0).sum(axis=0)
        valid &= block_valid.all(axis=0)
    images, masks, start = [], [], 0
    for rows, columns in shots.panel_shapes:
        stop = start + rows * columns
        images.append(total[start:stop].reshape(rows, columns))
        masks.append(valid[start:stop].reshape(rows, columns))
        start = stop
    return images, masks


class PanelPlane:
    """The plane of panel 0, in mm along its fast and slow axes from its origin."""

    def __init__(self, detector):
        panel = detector[0]
        self.origin = np.array(panel.get_origin())
        self.fast = np.array(panel.get_fast_axis())
        self.slow = np.array(panel.get_slow_axis())
        self.normal = np.cross(self.fast, self.slow)
        self.pixel = np.array(panel.get_pixel_size())

    def lab(self, mm):
        """Lab coordinates (mm) of plane points (n, 2) mm."""
        mm = np.asarray(mm, dtype=np.float64)
        return self.origin + mm[..., :1] * self.fast + mm[..., 1:] * self.slow

    def project(self, lab):
        """Plane coordinates (mm) where the rays from the sample to `lab` meet the plane."""
        lab = np.asarray(lab, dtype=np.float64)
        scale = (self.origin @ self.normal) / (lab @ self.normal)
        on_plane = lab * scale[..., None] - self.origin
        return np.stack([on_plane @ self.fast, on_plane @ self.slow], axis=-1)

    def beam_foot(self, beam):
        """Plane coordinates (mm) where the beam meets the plane."""
        s0 = np.array(beam.get_unit_s0())
        if abs(s0 @ self.normal) < 1e-6:
            raise DataError("the beam runs along the detector plane")
        return self.project(s0[None, :])[0]


def assemble(detector, images, masks):
    """One image of every panel on the plane of panel 0, in its pixels.

    Each pixel centre is projected (along its ray from the sample) onto the
    plane and put in the plane pixel that contains it (for coplanar panels
    with panel 0's pixel size and axes, every pixel lands in a pixel of its
    own); plane pixels no panel pixel lands in (gaps) are invalid.

    Returns (image, valid, origin_px): origin_px is the panel-0 pixel
    coordinate (fast, slow) of the image's corner (0, 0).
    """
    if len(detector) == 1:
        return images[0], masks[0], (0.0, 0.0)
    plane = PanelPlane(detector)
    fast, slow, values, ok = [], [], [], []
    for panel, image, mask in zip(detector, images, masks):
        n_fast, n_slow = panel.get_image_size()
        pixel = np.array(panel.get_pixel_size())
        x = (np.arange(n_fast) + 0.5) * pixel[0]
        y = (np.arange(n_slow) + 0.5) * pixel[1]
        lab = (
            np.array(panel.get_origin())
            + x[None, :, None] * np.array(panel.get_fast_axis())
            + y[:, None, None] * np.array(panel.get_slow_axis())
        )
        px = plane.project(lab) / plane.pixel
        fast.append(px[..., 0].ravel())
        slow.append(px[..., 1].ravel())
        values.append(image.ravel())
        ok.append(mask.ravel())
    fast, slow = np.concatenate(fast), np.concatenate(slow)
    i, j = np.floor(fast).astype(np.int64), np.floor(slow).astype(np.int64)
    i0, j0 = i.min(), j.min()
    shape = (int(j.max() - j0 + 1), int(i.max() - i0 + 1))
    image = np.zeros(shape)
    valid = np.zeros(shape, dtype=bool)
    image[j - j0, i - i0] = np.concatenate(values)
    valid[j - j0, i - i0] = np.concatenate(ok)
    return image, valid, (float(i0), float(j0))


def _two_theta(plane, foot, beam_mm, points_mm, s0):
    """2θ (rad) of plane points when the beam hits the plane at `beam_mm`."""
    lab = plane.lab(foot + (points_mm - beam_mm))
    cos2t = lab @ s0 / np.linalg.norm(lab, axis=-1)
    return np.arccos(np.clip(cos2t, -1.0, 1.0))


def fit_beam_centre(points_mm, plane, beam, start_mm):
    """The beam centre (plane mm) and 2θ that give every ring point one 2θ.

    Robust least squares (soft L1, then without the outliers beyond 5
    MAD). Returns (beam_mm, two_theta, covariance of (x, y, 2θ), residuals
    in mm along the radius, inliers).
    """
    s0 = np.array(beam.get_unit_s0())
    foot = plane.beam_foot(beam)

    def residuals(p):
        return _two_theta(plane, foot, p[:2], points_mm, s0) - p[2]

    start = np.array([*start_mm, 0.0])
    start[2] = np.median(_two_theta(plane, foot, start[:2], points_mm, s0))
    scale = 1e-4 * max(start[2], 1e-6)
    robust = optimize.least_squares(residuals, start, loss="soft_l1", f_scale=scale)
    res = residuals(robust.x)
    mad = 1.4826 * np.median(np.abs(res - np.median(res))) + 1e-15
    inliers = np.abs(res) < 5 * mad
    points_in = points_mm[inliers]

    def residuals_in(p):
        return _two_theta(plane, foot, p[:2], points_in, s0) - p[2]

    final = optimize.least_squares(residuals_in, robust.x)
    res = residuals_in(final.x)
    dof = max(res.size - 3, 1)
    s2 = float(res @ res) / dof
    try:
        covariance = np.linalg.inv(final.jac.T @ final.jac) * s2
    except np.linalg.LinAlgError:
        covariance = np.full((3, 3), np.nan)
    # 2θ residuals as radial distances: d(2θ)/dr by a step of 1 µm outwards.
    outward = points_in - final.x[:2]
    outward /= np.linalg.norm(outward, axis=1)[:, None]
    step = _two_theta(plane, foot, final.x[:2], points_in + 1e-3 * outward, s0)
    slope = (step - _two_theta(plane, foot, final.x[:2], points_in, s0)) / 1e-3
    return final.x[:2], float(final.x[2]), covariance, res / slope, inliers


def predicted_ring(plane, beam, beam_mm, two_theta, centre_px, origin_px, nphi):
    """Radius (image px) of the ring of `two_theta` in each of nphi sectors
    around `centre_px` (image px), for the beam hitting at `beam_mm`."""
    s0 = np.array(beam.get_unit_s0())
    foot = plane.beam_foot(beam)
    phi = phi_samples(nphi)
    direction = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    centre_mm = (np.asarray(centre_px) + origin_px) * plane.pixel
    r = np.full(nphi, np.linalg.norm(centre_mm - beam_mm) + 1.0)
    r = np.maximum(r, 1e-3)
    for _ in range(20):  # Newton along each sector's ray
        points = centre_mm + r[:, None] * direction * plane.pixel
        value = _two_theta(plane, foot, beam_mm, points, s0) - two_theta
        ahead = centre_mm + (r[:, None] + 1e-3) * direction * plane.pixel
        slope = (_two_theta(plane, foot, beam_mm, ahead, s0) - two_theta - value) / 1e-3
        r = np.maximum(r - value / np.where(slope > 0, slope, np.inf), 1e-3)
    return r


#: Least fraction of a fitted ring's length on valid pixels where the image
#: must show the ring: a beam centre in a wrong minimum predicts a ring the
#: image follows only in part (a tilted detector started far off).
MIN_RING_COVERAGE = 0.6


def ring_coverage(valid, plane, beam, beam_mm, two_theta, origin_px, nphi, found):
    """Fraction of the predicted ring's sectors on valid pixels that hold a point.

    The ring of `two_theta` for the beam at `beam_mm` is cut into `nphi`
    sectors about the beam; `found` ring points were fitted.
    """
    centre_px = beam_mm / plane.pixel - origin_px
    radius = predicted_ring(plane, beam, beam_mm, two_theta, centre_px, origin_px, nphi)
    phi = phi_samples(nphi)
    fast = np.floor(centre_px[0] + radius * np.cos(phi)).astype(np.int64)
    slow = np.floor(centre_px[1] + radius * np.sin(phi)).astype(np.int64)
    inside = (
        (fast >= 0) & (fast < valid.shape[1]) & (slow >= 0) & (slow < valid.shape[0])
    )
    on_valid = np.count_nonzero(valid[slow[inside], fast[inside]])
    return min(1.0, found / on_valid) if on_valid else 0.0


def _refined_start(
    image, valid, plane, beam, origin_px, points, beam_mm, half_width, nphi
):
    """(score, coverage, `refine_in_lab` result) of one start: the fitted
    ring's rms (px) over the fraction of it the image follows (lower is better)."""
    result = refine_in_lab(
        image, valid, plane, beam, origin_px, points, beam_mm, half_width, nphi
    )
    beam_mm, two_theta, _, radial_mm, inliers, _ = result
    coverage = ring_coverage(
        valid, plane, beam, beam_mm, two_theta, origin_px, nphi, inliers.sum()
    )
    rms_px = np.sqrt(np.mean(radial_mm**2)) / np.mean(plane.pixel)
    return rms_px / max(coverage, 0.05), coverage, result


def refine_in_lab(
    image, valid, plane, beam, origin_px, points, beam_mm, half_width, nphi
):
    """Beam centre and 2θ from ring points, in laboratory coordinates.

    The points (image px) are fitted by `fit_beam_centre`; then new points
    are taken along the ring the fitted beam centre predicts (an ellipse on
    a tilted detector), within ±`half_width` px of it in `nphi` sectors, at
    least once and until the beam centre settles (1e-3 px, at most 5
    rounds). Returns (beam_mm, two_theta, covariance, radial_mm, inliers,
    points) of the last round.
    """
    for iteration in range(5):
        points_mm = (points + origin_px) * plane.pixel
        new_mm, two_theta, covariance, radial_mm, inliers = fit_beam_centre(
            points_mm, plane, beam, beam_mm
        )
        moved = np.hypot(*((new_mm - beam_mm) / plane.pixel))
        beam_mm = new_mm
        # Points are always taken again at least once: the start's may be
        # coarse (the ridge's, on a 0.5 px grid).
        if (moved < 1e-3 and iteration > 0) or iteration == 4:
            break
        centre_px = beam_mm / plane.pixel - origin_px
        expected = predicted_ring(
            plane, beam, beam_mm, two_theta, centre_px, origin_px, nphi
        )
        fresh = ring_points(image, valid, centre_px, expected, half_width, nphi)
        if len(fresh) < 10:
            break
        points = fresh
    return beam_mm, two_theta, covariance, radial_mm, inliers, points


def do_find_ring_center(shots, experiments, params):
    """Fit the beam centre of the selected shots from a powder ring.

    Parameters
    ----------
    shots : dials_diffuse.algorithms.xfel.shots.Shots
    experiments : ExperimentList
        The experiments of the shots (a copy gets the fitted centre).
    params : PHIL extract of `phil_scope`

    Returns
    -------
    RingCentre
    """
    chosen = shots.select(params.shots, params.tags)
    images, masks = sum_shots(shots, chosen)
    logger.info(
        "Summed %d shot(s); %d pixels valid",
        len(chosen),
        int(sum(m.sum() for m in masks)),
    )
    result = fit_ring_centre(
        shots.detector,
        shots.beam,
        images,
        masks,
        ring=params.ring,
        radius_guess=params.ring_radius_guess,
        d_spacing=params.d_spacing,
        search_px=params.search_radius,
    )
    result.shots = len(chosen)
    result.experiments = move_beam_centre(experiments, result.beam_centre_mm)
    return result


def fit_ring_centre(
    detector,
    beam,
    images,
    masks,
    ring=None,
    radius_guess=None,
    d_spacing=None,
    search_px=None,
):
    """The beam centre from a ring in per-panel images (see the module).

    Parameters
    ----------
    detector, beam : dxtbx models
    images, masks : list of ndarray (rows, columns), one per panel
        Counts and valid pixels (True = use).
    ring, radius_guess, d_spacing, search_px
        As the parameters of `phil_scope` (radius and search in px).

    Returns
    -------
    RingCentre
    """
    plane = PanelPlane(detector)
    image, valid, origin_px = assemble(detector, images, masks)
    origin_px = np.asarray(origin_px)
    foot_mm = plane.beam_foot(beam)
    start = foot_mm / plane.pixel - origin_px
    guess = radius_guess
    if d_spacing:
        guess = _radius_of_d(d_spacing, beam, plane, foot_mm)
        logger.info("d = %.4f Å: ring radius about %.1f px", d_spacing, guess)
    fit = find_ring_centre(
        image, valid, start=start, radius_guess=guess, search_px=search_px, ring=ring
    )
    # The ring in laboratory coordinates, refined from two starts: the
    # circle fit's points and the ring the model's own beam centre predicts
    # (an ellipse on a tilted detector, where the circle fit can be pulled
    # far off); the start whose ring the image follows best is kept.
    half_width = 1.5 * fit.fwhm  # as find_ring_centre
    nphi = int(np.clip(np.pi * fit.radius, 36, 720))
    circle_mm = (np.asarray(fit.centre) + origin_px) * plane.pixel
    starts = [(fit.points, circle_mm)]
    two_theta_model = np.median(
        _two_theta(
            plane,
            foot_mm,
            foot_mm,
            (fit.points + origin_px) * plane.pixel,
            np.array(beam.get_unit_s0()),
        )
    )
    expected = predicted_ring(
        plane, beam, foot_mm, two_theta_model, start, origin_px, nphi
    )
    model_points = ring_points(image, valid, start, expected, half_width, nphi)
    if len(model_points) >= 10:
        starts.append((model_points, foot_mm))
    refined = [
        _refined_start(
            image, valid, plane, beam, origin_px, points, beam_mm, half_width, nphi
        )
        for points, beam_mm in starts
    ]
    if max(coverage for _, coverage, _ in refined) < MIN_RING_COVERAGE:
        # Every start ended on a ring the image does not follow: take the
        # ring's ridge in a wide window about the circle (the whole ellipse
        # where the circle fit caught part of it; with several rings it may
        # be another ring, so only now).
        ridge = ring_ridge(image, valid, fit.centre, fit.radius, 0.4 * fit.radius, nphi)
        if len(ridge) >= 10:
            logger.info("Refining from the ring's ridge in a wide window")
            refined.append(
                _refined_start(
                    image,
                    valid,
                    plane,
                    beam,
                    origin_px,
                    ridge,
                    circle_mm,
                    half_width,
                    nphi,
                )
            )
    _, coverage, best = min(refined, key=lambda r: r[0])
    beam_mm, two_theta, covariance, radial_mm, inliers, points = best
    points = points[inliers]
    centre_px = beam_mm / plane.pixel - origin_px
    radii = np.hypot(*(points - centre_px).T)
    if guess:
        low, high = guess_window(guess)
        if not low <= radii.mean() <= high:
            raise DataError(
                f"no ring within 25% of the guessed radius {guess:.1f} px (the "
                f"fit ended at {radii.mean():.1f} px)"
            )
    sigma = np.sqrt(np.diag(covariance))
    pixel_mean = float(np.mean(plane.pixel))
    rms_mm = float(np.sqrt(np.mean(radial_mm**2)))
    wavelength = beam.get_wavelength()
    result_fit = dataclasses.replace(fit, rms=rms_mm / pixel_mean)
    warnings = ring_warnings(result_fit, half_width)
    if coverage < MIN_RING_COVERAGE:
        warnings.append(
            f"the fitted ring is found in the image along only {100 * coverage:.0f} % "
            "of its length on valid pixels: the beam centre may be wrong (start "
            "from a closer beam centre, e.g. geometry.beam_centre=, or choose "
            "another ring with ring=)"
        )
    return RingCentre(
        beam_centre_mm=(float(beam_mm[0]), float(beam_mm[1])),
        beam_centre_px=tuple(float(v) for v in beam_mm / plane.pixel),
        beam_centre_sigma_px=tuple(float(v) for v in sigma[:2] / plane.pixel),
        two_theta_deg=float(np.degrees(two_theta)),
        two_theta_sigma_deg=float(np.degrees(sigma[2])),
        q=float(4 * np.pi * np.sin(two_theta / 2) / wavelength),
        d=float(wavelength / (2 * np.sin(two_theta / 2))),
        radius_px=float(radii.mean()),
        radius_sigma_px=float(radii.std() / np.sqrt(max(radii.size, 1))),
        rms_px=rms_mm / pixel_mean,
        rms_mm=rms_mm,
        points_px=points,
        fit=fit,
        warnings=warnings,
        image=image,
        valid=valid,
        image_origin_px=(float(origin_px[0]), float(origin_px[1])),
    )


def _radius_of_d(d_spacing, beam, plane, foot_mm):
    """Radius (px) of the ring of `d_spacing` (Å) on a plane normal to the beam
    at the detector's distance along the beam."""
    ratio = beam.get_wavelength() / (2 * d_spacing)
    if ratio >= 1:
        raise DataError(
            f"d_spacing={d_spacing:g} Å is below the resolution limit "
            f"{beam.get_wavelength() / 2:.4f} Å of this wavelength"
        )
    two_theta = 2 * np.arcsin(ratio)
    distance = float(np.linalg.norm(plane.lab(foot_mm[None, :])[0]))
    return distance * np.tan(two_theta) / float(np.mean(plane.pixel))


def move_beam_centre(experiments, beam_mm):
    """A copy of the experiments whose detectors are moved in the plane of
    panel 0 so that the beam hits the plane point `beam_mm` (mm)."""
    updated = copy.deepcopy(experiments)
    done = set()
    for experiment in updated:
        detector = experiment.detector
        if id(detector) in done:
            continue
        done.add(id(detector))
        plane = PanelPlane(detector)
        foot = plane.lab(plane.beam_foot(experiment.beam)[None, :])[0]
        translation = foot - plane.lab(np.asarray(beam_mm)[None, :])[0]
        try:  # as dxtbx's set_fast_slow_beam_centre_mm: move the root
            root = detector.hierarchy()
            root.set_frame(
                root.get_fast_axis(),
                root.get_slow_axis(),
                tuple(np.array(root.get_origin()) + translation),
            )
        except AttributeError:
            for panel in detector:
                panel.set_frame(
                    panel.get_fast_axis(),
                    panel.get_slow_axis(),
                    tuple(np.array(panel.get_origin()) + translation),
                )
    return updated
