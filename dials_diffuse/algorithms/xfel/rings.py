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

import numpy as np
from scipy import optimize

from dials_diffuse.algorithms.xfel.polar import phi_samples, pixel_polar_map
from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)


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
    """

    centre: tuple
    radius: float
    centre_sigma: tuple
    radius_sigma: float
    rms: float
    points: np.ndarray


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

    def profile(self, centre, bin_width):
        r = np.hypot(self.fast - centre[0], self.slow - centre[1])
        bins = (r * (1.0 / bin_width)).astype(np.int64)
        sums = np.bincount(bins, weights=self.sums)
        counts = np.bincount(bins, weights=self.counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / counts
        return (np.arange(sums.size) + 0.5) * bin_width, mean


def _sharpness(pixels, centre, radius_window, bin_width):
    radii, profile = pixels.profile(centre, bin_width)
    use = np.isfinite(profile)
    if radius_window is not None:
        use &= (radii >= radius_window[0]) & (radii <= radius_window[1])
    if np.count_nonzero(use) < 3:
        return -np.inf, np.nan
    peak = np.argmax(np.where(use, profile, -np.inf))
    return profile[peak] - np.median(profile[use]), radii[peak]


def _annulus(shape, centre, window):
    """Pixels whose centres lie at radii within `window` (px) of `centre`."""
    slow, fast = np.ogrid[: shape[0], : shape[1]]
    r = np.hypot(fast + 0.5 - centre[0], slow + 0.5 - centre[1])
    return (r >= window[0]) & (r <= window[1])


def sharpest_centre(image, valid, start, search_px, radius_guess=None):
    """Centre (fast, slow) in px that makes the radial profile sharpest.

    Searches a grid of +-`search_px` (steps of search/5) around `start`, then
    grids of +-1 step around the best point with steps 4 times finer, down
    to 0.5 px. Coarse steps work on binned pixels (blocks of about half a
    step); after the first stage only an annulus around the ring found is
    used. With `radius_guess`, only ring peaks within 25% of it count.
    Returns (centre, ring radius px).
    """
    window = None
    if radius_guess:
        window = (0.75 * radius_guess, 1.25 * radius_guess)
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
    radius : float
        Current radius px; the ring is looked for in radius +- half_width.
    nphi : int, optional
        Sectors; default one per ~2 px of circumference (at most 720).
    step : float
        Radial sampling in px.

    Returns
    -------
    ndarray (n, 2) of (fast, slow) px, sectors with a clear ring only.
    """
    if nphi is None:
        nphi = int(np.clip(np.pi * radius, 36, 720))
    radii = np.arange(radius - half_width, radius + half_width + step / 2, step)
    radii = radii[radii > 0]
    polar_map = pixel_polar_map(centre, radii, nphi, image.shape, "bilinear")
    polar, polar_valid = polar_map.apply(image[None], valid[None])
    polar, polar_valid = polar[0].astype(np.float64).T, polar_valid[0].T
    complete = polar_valid.all(axis=1)
    # A straight background under the ring, through the means of the first
    # and last few samples (a sloping background, e.g. the tail of a
    # neighbouring ring, must not pull the centroid).
    edge = max(2, radii.size // 8)
    inner, outer = polar[:, :edge], polar[:, -edge:]
    r_inner, r_outer = radii[:edge].mean(), radii[-edge:].mean()
    slope = (outer.mean(axis=1) - inner.mean(axis=1)) / (r_outer - r_inner)
    background = inner.mean(axis=1)[:, None] + slope[:, None] * (radii - r_inner)
    noise = np.concatenate([inner, outer], axis=1).std(axis=1) + 1e-12
    signal = np.clip(polar - background, 0, None)
    total = signal.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r_centroid = (signal * radii).sum(axis=1) / total
        strength = (polar - background).max(axis=1) / noise
    good = complete & (total > 0) & (strength > 3.0)
    phi = phi_samples(nphi)[good]
    r = r_centroid[good]
    return np.stack([centre[0] + r * np.cos(phi), centre[1] + r * np.sin(phi)], axis=1)


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
        Ring radius in px to look near (within 25%); default the sharpest ring.
    search_px : float, optional
        Half-width of the coarse centre search; default 10% of the image.
    half_width : float, optional
        Radial half-width of the window the ring is refined in, px; default
        1.5 times the ring's FWHM in the radial profile (at least 3 px).

    Returns
    -------
    RingFit
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
    logger.debug("Sharpest radial profile at %s px, ring at %.1f px", centre, radius)
    if half_width is None:
        half_width = _ring_half_width(image, valid, centre, radius)
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
    sigma = np.sqrt(np.diag(covariance))
    return RingFit(
        centre=centre,
        radius=radius,
        centre_sigma=(float(sigma[0]), float(sigma[1])),
        radius_sigma=float(sigma[2]),
        rms=rms,
        points=points[inliers],
    )


def _ring_half_width(image, valid, centre, radius):
    """Radial half-width (px) to refine the ring in: 1.5 FWHM (about 3.5
    sigma of a Gaussian ring), at least 3 px."""
    radii, profile = radial_profile(image, valid, centre, 0.5)
    near = np.isfinite(profile) & (np.abs(radii - radius) < 0.25 * radius)
    if np.count_nonzero(near) < 5:
        return 4.0
    r, p = radii[near], profile[near]
    background = np.median(p)
    peak = p.max()
    above = r[p > background + 0.5 * (peak - background)]
    fwhm = above.max() - above.min() + 0.5 if above.size else 2.0
    return float(np.clip(1.5 * fwhm, 3.0, 0.5 * radius))
