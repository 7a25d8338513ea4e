"""Find the beam centre of a still image by fitting a powder ring.

Two steps, both on the masked image in pixel coordinates (fast, slow; pixel
centres at i+0.5):

1. A coarse-to-fine search for the centre that makes the azimuthally
   averaged radial profile sharpest (the highest ring peak above the
   profile's median): robust to a poor start, no ring radius needed.
2. Refinement: the image is resampled on an (r, phi) grid around the
   current centre (bilinear, the polar kernel); in each azimuth sector the
   background-subtracted radial centroid of the ring gives one ring point;
   a robust least-squares circle fit to these points gives the centre and
   radius with standard uncertainties. Repeated until the centre moves less
   than 0.001 px.

Masked pixels take no part in either step.
"""

import dataclasses
import logging
import warnings

import numpy as np
from scipy import optimize

from dials_diffuse.algorithms.xfel.polar import (
    map_from_pixel_coordinates,
    phi_samples,
)
from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)

#: Rings of smaller radius (px) are not looked for: too few pixels to fit.
MIN_RING_RADIUS_PX = 10.0
#: A radius guess looks for the ring within this fraction of it.
GUESS_WINDOW = 0.25


@dataclasses.dataclass
class RingFit:
    """A fitted ring: pixel units (fast, slow), pixel centres at i+0.5.

    Attributes
    ----------
    centre : (float, float)
        Beam centre (fast, slow) in px.
    radius : float
        Ring radius in px.
    centre_sigma : (float, float)
        Standard uncertainties of the centre in px.
    radius_sigma : float
        Standard uncertainty of the radius in px.
    rms : float
        RMS distance of the accepted ring points from the circle, px.
    points : ndarray, shape (n, 2)
        Ring points (fast, slow) used in the final fit.
    fwhm : float
        The ring's full width at half maximum in the radial profile, px.
    candidates : list of RingCandidate
        The rings of the radial profile around the start, strongest first.
    warnings : list of str
        Why the fit may not be one clean ring (points scattered widely
        against the ring's width; another ring inside the fit window).
    """

    centre: tuple
    radius: float
    centre_sigma: tuple
    radius_sigma: float
    rms: float
    points: np.ndarray
    fwhm: float = float("nan")
    candidates: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)


def radial_profile(image, valid, centre, bin_width=0.5):
    """Mean of valid pixels in rings of `bin_width` px around `centre`.

    Returns (radii of the bin centres in px, mean per bin; NaN for empty bins).
    """
    return _ValidPixels(image, valid).profile(centre, bin_width)


class _ValidPixels:
    """Valid pixels, or blocks of binning x binning pixels, for radial profiles.

    Holds the centre coordinates (px) of each pixel or block, the sum of its
    valid values and how many valid pixels it has; `keep` (bool, image
    shape) restricts the pixels used.
    """

    def __init__(self, image, valid, binning=1, keep=None):
        if keep is not None:
            valid = valid & keep
        b = int(binning)
        rows, columns = (n // b * b for n in image.shape)
        values = np.where(valid, image, 0).astype(np.float64)[:rows, :columns]
        shape = (rows // b, b, columns // b, b)
        sums = values.reshape(shape).sum(axis=(1, 3))
        counts = valid[:rows, :columns].reshape(shape).sum(axis=(1, 3))
        slow, fast = np.nonzero(counts)
        self.fast = (fast + 0.5) * b
        self.slow = (slow + 0.5) * b
        self.sums = sums[slow, fast]
        self.counts = counts[slow, fast].astype(np.float64)

    def profile(self, centre, bin_width, counts=False):
        r = np.hypot(self.fast - centre[0], self.slow - centre[1])
        bins = (r * (1.0 / bin_width)).astype(np.int64)
        sums = np.bincount(bins, weights=self.sums)
        n = np.bincount(bins, weights=self.counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / n
        radii = (np.arange(sums.size) + 0.5) * bin_width
        return (radii, mean, n) if counts else (radii, mean)


def _sharpness(pixels, centre, radius_window, bin_width):
    """How clearly the radial profile around `centre` shows a ring: the
    largest excess over the profile's median, times the square root of the
    pixels in that bin (a significance: a few bright pixels near the centre
    do not outweigh a ring), and the radius where it is."""
    radii, profile, counts = pixels.profile(centre, bin_width, counts=True)
    use = np.isfinite(profile) & (radii >= MIN_RING_RADIUS_PX)
    if radius_window is not None:
        use &= (radii >= radius_window[0]) & (radii <= radius_window[1])
    if np.count_nonzero(use) < 3:
        return -np.inf, np.nan
    score = (profile - np.median(profile[use])) * np.sqrt(counts)
    peak = np.argmax(np.where(use, score, -np.inf))
    return score[peak], radii[peak]


def guess_window(radius_guess):
    """Radii (px) a ring asked for by `radius_guess` may have: within 25%."""
    return ((1 - GUESS_WINDOW) * radius_guess, (1 + GUESS_WINDOW) * radius_guess)


@dataclasses.dataclass
class RingCandidate:
    """A peak of the radial profile: radius and FWHM in px, its strength
    (the excess over the background summed over the ring's pixels, in
    counts) and significance (excess over the profile's noise)."""

    radius: float
    fwhm: float
    strength: float
    significance: float


def ring_candidates(image, valid, centre, min_significance=5.0, bin_width=0.5):
    """Rings in the radial profile around `centre`, strongest first.

    The background is a running median of the profile over 15 px; peaks
    whose excess is `min_significance` times its noise (the robust scatter
    of the residual, scaled by 1/sqrt(pixels at that radius)) count, at
    radii of at least MIN_RING_RADIUS_PX. Strength sums the excess over the peak's FWHM,
    weighted by the pixels at each radius: a wide ring of many pixels
    outranks a narrow bright artefact near the beam.
    """
    from scipy import ndimage, signal

    radii, profile, counts = _ValidPixels(image, valid).profile(
        centre, bin_width, counts=True
    )
    filled = np.isfinite(profile) & (counts > 0)
    if np.count_nonzero(filled) < 10:
        return []
    profile = np.interp(radii, radii[filled], profile[filled])
    size = max(int(round(15.0 / bin_width)) | 1, 5)
    background = ndimage.median_filter(profile, size=size, mode="nearest")
    excess = profile - background
    # The mean of n pixels scatters as 1/sqrt(n): judge each radius by its
    # excess in units of its own noise.
    weighted = excess * np.sqrt(counts)
    noise = 1.4826 * np.median(np.abs(weighted - np.median(weighted))) + 1e-12
    z = weighted / noise
    peaks, found = signal.find_peaks(
        z, height=min_significance, width=1, rel_height=0.5
    )
    candidates = []
    for peak, left, right in zip(peaks, found["left_ips"], found["right_ips"]):
        if radii[peak] < MIN_RING_RADIUS_PX:
            continue
        lo, hi = int(np.floor(left)), int(np.ceil(right)) + 1
        strength = float(np.sum(np.clip(excess[lo:hi], 0, None) * counts[lo:hi]))
        candidates.append(
            RingCandidate(
                radius=float(radii[peak]),
                fwhm=float((right - left) * bin_width),
                strength=strength,
                significance=float(z[peak]),
            )
        )
    return sorted(candidates, key=lambda c: -c.strength)


def _annulus(shape, centre, window):
    """Pixels whose centres lie at radii within `window` (px) of `centre`."""
    slow, fast = np.ogrid[: shape[0], : shape[1]]
    r = np.hypot(fast + 0.5 - centre[0], slow + 0.5 - centre[1])
    return (r >= window[0]) & (r <= window[1])


def sharpest_centre(image, valid, start, search_px, radius_guess=None, window=None):
    """Centre (fast, slow) in px that makes the radial profile sharpest.

    Searches a grid of +-`search_px` (steps of search/5) around `start`, then
    grids of +-1 step around the best point with steps 4 times finer, down
    to 0.5 px. Coarse steps work on binned pixels (blocks of about half a
    step); after the first stage only an annulus around the ring found is
    used. With `radius_guess`, only ring peaks within 25% of it count; with
    `window` (px, px), only those within it.
    Returns (centre, ring radius px).
    """
    if window is None and radius_guess:
        window = guess_window(radius_guess)
    best = np.asarray(start, dtype=np.float64)
    step = max(search_px / 5.0, 0.5)
    half = search_px
    while True:
        keep = None
        if window is not None:
            reach = (max(window[0] - 1.5 * half, 0.0), window[1] + 1.5 * half)
            keep = _annulus(image.shape, best, reach)
        binning = int(np.clip(step // 2, 1, 8))
        pixels = _ValidPixels(image, valid, binning, keep)
        offsets = np.arange(-half, half + 0.5 * step, step)
        bin_width = float(np.clip(step / 2.0, 0.5, 2.0 * binning))
        scores = [
            (*_sharpness(pixels, best + (dx, dy), window, bin_width), best + (dx, dy))
            for dy in offsets
            for dx in offsets
        ]
        score, radius, centre = max(scores, key=lambda s: s[0])
        if not np.isfinite(score):
            raise DataError("no ring found: no valid pixels in the radius window")
        best = centre
        if step <= 0.5:
            return (float(best[0]), float(best[1])), float(radius)
        margin = 3.0 * step + 2.0 * bin_width
        window = (max(radius - margin, 0.0), radius + margin)
        half = step
        step = max(step / 4.0, 0.5)


def ring_points(image, valid, centre, radius, half_width, nphi=None, step=0.25):
    """One ring point per azimuth sector: the radial centroid of the ring.

    Parameters
    ----------
    image, valid : ndarray (slow, fast)
    centre : (float, float)
        Current centre (fast, slow) px.
    radius : float, or ndarray of nphi floats
        Current radius px (one per sector: the ring expected there, e.g. an
        ellipse on a tilted detector); the ring is looked for within
        +- half_width of it.
    nphi : int, optional
        Sectors; default one per ~2 px of circumference (at most 720).
    step : float
        Radial sampling in px.

    Returns
    -------
    ndarray (n, 2) of (fast, slow) px, sectors with a clear ring only.
    """
    radius = np.asarray(radius, dtype=np.float64)
    if nphi is None:
        nphi = radius.size if radius.ndim else int(np.clip(np.pi * radius, 36, 720))
    offsets = np.arange(-half_width, half_width + step / 2, step)
    phi = phi_samples(nphi)
    radii = np.broadcast_to(radius, (nphi,))[None, :] + offsets[:, None]
    radii = np.where(radii > 0, radii, np.nan)
    fast = centre[0] + radii * np.cos(phi)
    slow = centre[1] + radii * np.sin(phi)
    polar_map = map_from_pixel_coordinates(fast, slow, 0, [image.shape], "bilinear")
    polar, polar_valid = polar_map.apply(image[None], valid[None])
    polar, polar_valid = polar[0].astype(np.float64).T, polar_valid[0].T
    radii = radii.T
    complete = polar_valid.all(axis=1)
    # A straight background under the ring, through the means of the first
    # and last few samples (a sloping background, e.g. the tail of a
    # neighbouring ring, must not pull the centroid).
    edge = max(2, offsets.size // 8)
    inner, outer = polar[:, :edge], polar[:, -edge:]
    r_inner, r_outer = offsets[:edge].mean(), offsets[-edge:].mean()
    slope = (outer.mean(axis=1) - inner.mean(axis=1)) / (r_outer - r_inner)
    background = inner.mean(axis=1)[:, None] + slope[:, None] * (offsets - r_inner)
    noise = np.concatenate([inner, outer], axis=1).std(axis=1) + 1e-12
    signal = np.clip(polar - background, 0, None)
    total = signal.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r_centroid = np.nansum(signal * radii, axis=1) / total
        strength = (polar - background).max(axis=1) / noise
    good = complete & (total > 0) & (strength > 3.0) & np.isfinite(r_centroid)
    r = r_centroid[good]
    return np.stack(
        [centre[0] + r * np.cos(phi[good]), centre[1] + r * np.sin(phi[good])], axis=1
    )


def ring_ridge(image, valid, centre, radius, half_width, nphi, step=0.5):
    """One point per azimuth sector: where the ring is brightest, in a wide window.

    For a ring that is far from the circle about `centre` (an ellipse on a
    strongly tilted detector), where `ring_points`' narrow window misses it:
    in each sector the profile within ±`half_width` px of `radius`, smoothed
    over 2 px, peaks at the ring; sectors whose peak stands less than 5
    robust standard deviations above the sector's median are left out.

    Returns
    -------
    ndarray (n, 2) of (fast, slow) px.
    """
    offsets = np.arange(-half_width, half_width + step / 2, step)
    phi = phi_samples(nphi)
    radii = np.broadcast_to(radius + offsets[:, None], (offsets.size, nphi))
    radii = np.where(radii > 0, radii, np.nan)
    fast = centre[0] + radii * np.cos(phi)
    slow = centre[1] + radii * np.sin(phi)
    polar_map = map_from_pixel_coordinates(fast, slow, 0, [image.shape], "bilinear")
    polar, polar_valid = polar_map.apply(image[None], valid[None])
    polar = np.where(polar_valid[0], polar[0], np.nan).astype(np.float64).T
    kernel = np.ones(int(round(2 / step)) + 1) / (int(round(2 / step)) + 1)
    smooth = np.stack([np.convolve(row, kernel, "same") for row in polar])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN sectors
        median = np.nanmedian(smooth, axis=1)
        spread = 1.4826 * np.nanmedian(np.abs(smooth - median[:, None]), axis=1)
    complete = np.isfinite(smooth).all(axis=1)
    peak = np.argmax(np.where(np.isfinite(smooth), smooth, -np.inf), axis=1)
    height = smooth[np.arange(nphi), peak] - median
    good = complete & (height > 5 * spread + 1e-12)
    r = radius + offsets[peak[good]]
    return np.stack(
        [centre[0] + r * np.cos(phi[good]), centre[1] + r * np.sin(phi[good])], axis=1
    )


def fit_circle(points):
    """Robust least-squares circle through points (n, 2).

    Returns (centre (2,), radius, covariance (3, 3) of (x, y, r), rms, inliers).
    """
    x, y = points[:, 0], points[:, 1]
    # Algebraic (Kasa) fit for the start.
    a = np.stack([x, y, np.ones_like(x)], axis=1)
    c, *_ = np.linalg.lstsq(a, x * x + y * y, rcond=None)
    start = np.array([c[0] / 2, c[1] / 2, 0.0])
    start[2] = np.sqrt(max(c[2] + start[0] ** 2 + start[1] ** 2, 1e-9))

    def residuals(p):
        return np.hypot(x - p[0], y - p[1]) - p[2]

    robust = optimize.least_squares(residuals, start, loss="soft_l1", f_scale=0.5)
    res = residuals(robust.x)
    mad = 1.4826 * np.median(np.abs(res - np.median(res))) + 1e-9
    inliers = np.abs(res) < 5 * mad
    x, y = x[inliers], y[inliers]
    final = optimize.least_squares(residuals, robust.x)
    res = residuals(final.x)
    dof = max(res.size - 3, 1)
    s2 = float(res @ res) / dof
    try:
        covariance = np.linalg.inv(final.jac.T @ final.jac) * s2
    except np.linalg.LinAlgError:
        covariance = np.full((3, 3), np.nan)
    return final.x[:2], float(final.x[2]), covariance, float(np.sqrt(s2)), inliers


def find_ring_centre(
    image,
    valid,
    start=None,
    radius_guess=None,
    search_px=None,
    half_width=None,
    max_iterations=10,
    ring=None,
):
    """Beam centre and ring radius of one (summed) image by fitting a ring.

    Parameters
    ----------
    image : ndarray (slow, fast)
        Counts; e.g. the sum of several shots.
    valid : ndarray of bool, same shape
        True for usable pixels.
    start : (float, float), optional
        First guess (fast, slow) px; default the image centre.
    radius_guess : float, optional
        Ring radius in px to look near: the ring found lies within 25% of
        it, or a DataError says where the rings are.
    search_px : float, optional
        Half-width of the coarse centre search; default 10% of the image.
    half_width : float, optional
        Radial half-width of the window the ring is refined in, px; default
        1.5 times the ring's FWHM in the radial profile (at least 3 px).
    ring : int, optional
        Fit the ring-th ring of the radial profile from the centre (1: the
        innermost). Default (and without radius_guess): the strongest ring.

    Returns
    -------
    RingFit
        With the candidate rings and warnings when the fit is not one clean
        ring: the points scatter widely (rms above 35% of the ring's FWHM),
        or another ring lies inside the fit window.
    """
    image = np.asarray(image)
    valid = np.asarray(valid, dtype=bool)
    if image.ndim != 2 or image.shape != valid.shape:
        raise DataError("the ring fit needs one 2-d image and a mask of its shape")
    if not valid.any():
        raise DataError("every pixel is masked: nothing to fit a ring to")
    if start is None:
        start = (image.shape[1] / 2.0, image.shape[0] / 2.0)
    if search_px is None:
        search_px = 0.1 * max(image.shape)
    centre, radius = sharpest_centre(image, valid, start, search_px, radius_guess)
    # The sharpest ring, fitted, centres the radial profile well enough to
    # resolve every ring in it.
    try:
        width = _ring_half_width(image, valid, centre, radius)
        centre, _, _, _, _ = _refine_circle(image, valid, centre, radius, width, 3)
    except DataError:
        pass
    candidates = ring_candidates(image, valid, centre)
    chosen = _choose_ring(candidates, radius_guess, ring)
    if chosen is None and not radius_guess:
        raise DataError(
            "no ring stands out in the radial profile around the centre found "
            f"({centre[0]:.1f}, {centre[1]:.1f}) px: cannot fit a circle (give "
            "ring_radius_guess= or a better start)"
        )
    if chosen is not None and abs(chosen.radius - radius) > 0.5 * max(chosen.fwhm, 2):
        # Centre the search on the ring asked for (or the strongest).
        reach = max(3.0 * chosen.fwhm, 5.0)
        centre, radius = sharpest_centre(
            image,
            valid,
            centre,
            max(search_px / 5.0, 1.0),
            window=(chosen.radius - reach, chosen.radius + reach),
        )
    logger.debug("Sharpest radial profile at %s px, ring at %.1f px", centre, radius)
    if half_width is None and chosen is not None and abs(chosen.radius - radius) < 3:
        half_width = float(np.clip(1.5 * chosen.fwhm, 3.0, 0.5 * radius))
    if half_width is None:
        half_width = _ring_half_width(image, valid, centre, radius)
    centre, radius, covariance, rms, points = _refine_circle(
        image, valid, centre, radius, half_width, max_iterations
    )
    if radius_guess:
        low, high = guess_window(radius_guess)
        if not low <= radius <= high:
            raise DataError(
                f"no ring within 25% of ring_radius_guess={radius_guess:g} px (the "
                f"fit ended at {radius:.1f} px; rings seen at "
                f"{_describe(candidates)})"
            )
    sigma = np.sqrt(np.diag(covariance))
    fwhm = half_width / 1.5  # see _ring_half_width
    fit = RingFit(
        centre=centre,
        radius=radius,
        centre_sigma=(float(sigma[0]), float(sigma[1])),
        radius_sigma=float(sigma[2]),
        rms=rms,
        points=points,
        fwhm=fwhm,
        candidates=candidates,
    )
    fit.warnings = ring_warnings(fit, half_width)
    return fit


def _refine_circle(image, valid, centre, radius, half_width, max_iterations):
    """Ring points and a robust circle fit, repeated until the centre moves
    less than 0.001 px. Returns (centre, radius, covariance, rms, points)."""
    for _ in range(max_iterations):
        points = ring_points(image, valid, centre, radius, half_width)
        if len(points) < 10:
            raise DataError(
                f"only {len(points)} azimuth sectors show the ring at "
                f"{radius:.1f} px: cannot fit a circle"
            )
        new_centre, radius, covariance, rms, inliers = fit_circle(points)
        moved = np.hypot(*(new_centre - np.asarray(centre)))
        centre = (float(new_centre[0]), float(new_centre[1]))
        if moved < 1e-3:
            break
    return centre, radius, covariance, rms, points[inliers]


def _choose_ring(candidates, radius_guess, ring):
    """The candidate asked for: the ring-th from the centre, the strongest
    within the guess window, or the strongest; None when there is none."""
    if ring is not None:
        ordered = sorted(candidates, key=lambda c: c.radius)
        if not 1 <= ring <= len(ordered):
            raise DataError(
                f"ring={ring}: the radial profile shows {len(ordered)} ring(s)"
                + (f" (at {_describe(ordered)})" if ordered else "")
            )
        return ordered[ring - 1]
    if radius_guess:
        low, high = guess_window(radius_guess)
        inside = [c for c in candidates if low <= c.radius <= high]
        return inside[0] if inside else None
    return candidates[0] if candidates else None


def _describe(candidates):
    if not candidates:
        return "no clear radius"
    return ", ".join(f"{c.radius:.1f}" for c in candidates[:8]) + " px"


def ring_warnings(fit, half_width):
    """Why a fit may not be one clean ring (empty when it is)."""
    warnings = []
    if fit.rms > 0.35 * fit.fwhm:
        warnings.append(
            f"the ring points scatter by {fit.rms:.2f} px rms against a ring FWHM "
            f"of {fit.fwhm:.2f} px: this may not be one ring (blended rings, an "
            "elliptical ring on a tilted detector, or an artefact)"
        )
    inside = [c for c in fit.candidates if abs(c.radius - fit.radius) <= half_width]
    if len(inside) > 1:
        warnings.append(
            f"{len(inside)} rings ({_describe(sorted(inside, key=lambda c: c.radius))})"
            f" lie inside the fit window {fit.radius:.1f} ± {half_width:.1f} px: the "
            "fit may blend them (choose one with ring= or a closer guess)"
        )
    return warnings


def _ring_half_width(image, valid, centre, radius):
    """Radial half-width (px) to refine the ring in: 1.5 FWHM (about 3.5
    sigma of a Gaussian ring), at least 3 px."""
    radii, profile = radial_profile(image, valid, centre, 0.5)
    near = np.isfinite(profile) & (np.abs(radii - radius) < max(10.0, 0.05 * radius))
    if np.count_nonzero(near) < 5:
        return 4.0
    r, p = radii[near], profile[near]
    background = np.median(p)
    peak = p.max()
    above = r[p > background + 0.5 * (peak - background)]
    fwhm = above.max() - above.min() + 0.5 if above.size else 2.0
    return float(np.clip(1.5 * fwhm, 3.0, 0.5 * radius))
