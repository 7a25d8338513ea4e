"""Polar resampling of detector images through a precomputed sparse map.

A `PolarMap` is built once (from the dxtbx geometry for a (q, phi) grid, or
from a pixel centre for an (r, phi) grid) and applied to any number of shots
by the C++ kernel `_kernels.polar_resample`, which releases the GIL so that
shots resample in parallel threads.

Conventions
-----------
- Pixel coordinates are (fast, slow) in pixels with pixel centres at i+0.5.
- phi of a (q, phi) grid is the azimuth around the beam of
  `dials_diffuse.geometry.azimuth`: from the lab x axis towards the lab y
  axis in the plane normal to the beam. For the usual detector (fast along
  +x, slow along -y, e.g. SACLA) phi = 0 is +fast and phi = 90 degrees is
  -slow (up on an image displayed with slow pointing down).
- phi of an (r, phi) pixel grid (`pixel_polar_map`, used by the ring fit) is
  the image angle ``arctan2(slow - slow_c, fast - fast_c)``.
- Sample j of nphi lies at phi = 2 pi j / nphi, so lag k of an angular
  correlation is 360 k / nphi degrees.
- Nearest: the pixel containing the sample point. Bilinear: the four pixels
  around it, weighted by distance to their centres. A polar sample is valid
  only when every pixel it uses (with non-zero weight) is valid and on the
  detector; masks carry over to the polar mask this way.
"""

import dataclasses

import numpy as np

from dials_diffuse import _kernels
from dials_diffuse.util.errors import DataError

METHODS = ("nearest", "bilinear")


class PolarMap:
    """A precomputed map from the flattened pixels of a frame to polar samples.

    Attributes
    ----------
    shape : (int, int)
        (n_rows, n_phi) of the polar grid.
    n_pixels : int
        Pixels per frame (all panels, concatenated in order).

    Subclasses hold the map in one of the layouts of ``cpp/polar.h``:
    `CompactMap` (one pixel, or the four pixels around the sample, per bin:
    the fast layout) and `SparseMap` (CSR, any number of pixels per bin:
    oversampled maps).
    """

    shape: tuple
    n_pixels: int

    @property
    def coverage(self):
        """Polar samples that fall on the detector: bool array of `shape`."""
        raise NotImplementedError

    def _resample(self, frames, valid):
        raise NotImplementedError

    def apply(self, frames, valid=None):
        """Resample frames (n, ...pixels) onto the grid (C++, GIL released).

        Returns
        -------
        polar : ndarray of float32, shape (n,) + shape
        polar_valid : ndarray of bool, shape (n,) + shape
        """
        frames = np.ascontiguousarray(frames)
        if frames[0].size != self.n_pixels:
            raise ValueError(
                f"frames have {frames[0].size} pixels, the map {self.n_pixels}"
            )
        if valid is not None:
            valid = np.ascontiguousarray(valid)
        out, out_valid = self._resample(frames, valid)
        n = frames.shape[0]
        return out.reshape((n,) + self.shape), out_valid.view(bool).reshape(
            (n,) + self.shape
        )


@dataclasses.dataclass
class CompactMap(PolarMap):
    """One sample per bin: nearest (the pixel that contains it) or bilinear
    (the four pixels around it; every panel has `stride` columns).

    Entries are sorted by pixel so that the kernel reads a frame once, in
    order (`from_bin_order` sorts them).

    Attributes
    ----------
    bins : ndarray of int32
        The output bin of each entry (flattened (q, phi)).
    index : ndarray of int32
        The pixel (nearest) or the lower-left pixel of the four (bilinear)
        of each entry; -1 where the sample is off the detector.
    fractions : ndarray of float32, shape (n, 2), or None (nearest)
        (tx, ty) of the sample from its lower-left pixel's centre, in [0, 1].
    stride : int
        Columns of every panel.
    """

    shape: tuple
    n_pixels: int
    bins: np.ndarray
    index: np.ndarray
    fractions: np.ndarray = None
    stride: int = 1

    @classmethod
    def from_bin_order(cls, shape, n_pixels, index, fractions=None, stride=1):
        """The map of per-bin `index` (and `fractions`), entries sorted by pixel."""
        bins, index, sorted_fractions = _kernels.polar_sort_by_pixel(
            np.ascontiguousarray(index, dtype=np.int32),
            None if fractions is None else np.ascontiguousarray(fractions),
            int(n_pixels),
        )
        return cls(
            shape=tuple(shape),
            n_pixels=int(n_pixels),
            bins=bins,
            index=index,
            fractions=None if fractions is None else sorted_fractions,
            stride=int(stride),
        )

    @property
    def coverage(self):
        covered = np.zeros(int(np.prod(self.shape)), dtype=bool)
        covered[self.bins] = self.index >= 0
        return covered.reshape(self.shape)

    def _resample(self, frames, valid):
        return _kernels.polar_resample_compact(
            self.bins,
            self.index,
            self.fractions,
            self.stride,
            int(np.prod(self.shape)),
            frames,
            valid,
        )


@dataclasses.dataclass
class SparseMap(PolarMap):
    """A CSR map: bin b is sum_k weights[k] * pixel[indices[k]] over
    k in indptr[b] .. indptr[b+1]-1.

    Attributes
    ----------
    indptr : ndarray of int64, length n_bins + 1
    indices : ndarray of int32
        Flattened pixel index (panels concatenated in order).
    weights : ndarray of float32
    """

    shape: tuple
    n_pixels: int
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray

    @property
    def coverage(self):
        return (np.diff(self.indptr) > 0).reshape(self.shape)

    def _resample(self, frames, valid):
        return _kernels.polar_resample(
            self.indptr, self.indices, self.weights, frames, valid
        )


def phi_samples(nphi):
    """Azimuths of the polar samples in radians: 2 pi j / nphi."""
    return 2.0 * np.pi * np.arange(nphi) / nphi


def map_from_pixel_coordinates(
    fast, slow, panel, panel_shapes, method="bilinear", oversample=1, sort=True
):
    """Build a PolarMap from the pixel coordinates of every polar sample.

    Parameters
    ----------
    fast, slow : ndarray of float, shape (n_rows * oversample, n_phi * oversample)
        Pixel coordinates of each (sub-)sample (px, centres at i+0.5); NaN
        where it misses the detector. With `oversample` > 1, polar sample
        (i, j) is the mean over the sub-samples in rows i*oversample ... and
        columns j*oversample ... (an area average over the polar cell, like
        pixel splitting), valid only when all of them are.
    panel : ndarray of int, broadcastable to the shape of `fast`
        Panel of each sample (ignored where the coordinates are NaN).
    panel_shapes : list of (rows, columns)
    method : "nearest" or "bilinear"
    oversample : int
    sort : bool
        False: a compact map is returned unsorted, in bin order, for
        `concatenate_maps` (which sorts once).

    Returns
    -------
    PolarMap
        A `CompactMap` without oversampling (for bilinear: when every panel
        has the same number of columns, at least 2, and at least 2 rows),
        else a `SparseMap`.
    """
    if method not in METHODS:
        raise DataError(f"unknown interpolation '{method}': use one of {METHODS}")
    # The kernel treats a sample with a non-finite coordinate as off the
    # detector, so the arrays are only converted (copied where they must be).
    fast = np.ascontiguousarray(np.atleast_2d(fast), dtype=np.float64)
    slow = np.ascontiguousarray(np.atleast_2d(slow), dtype=np.float64)
    panel = np.ascontiguousarray(np.broadcast_to(panel, fast.shape), dtype=np.int32)
    rows = np.array([s[0] for s in panel_shapes], dtype=np.int64)
    columns = np.array([s[1] for s in panel_shapes], dtype=np.int64)
    n_pixels = int((rows * columns).sum())
    if n_pixels > np.iinfo(np.int32).max:
        raise DataError("the detector has too many pixels for a 32-bit pixel index")
    oversample = int(oversample)
    shape = (fast.shape[0] // oversample, fast.shape[1] // oversample)
    bilinear = method == "bilinear"
    compact = oversample == 1 and (
        not bilinear
        or (np.all(columns == columns[0]) and columns.min() > 1 and rows.min() > 1)
    )
    built = _kernels.polar_build_map(
        fast, slow, panel, rows, columns, oversample, bilinear, compact
    )
    if compact:
        index, fractions = built
        fractions = fractions if bilinear else None
        if not sort:
            return _BinOrderMap(shape, n_pixels, index, fractions, int(columns[0]))
        return CompactMap.from_bin_order(
            shape, n_pixels, index, fractions, int(columns[0])
        )
    indptr, indices, weights = built
    return SparseMap(shape, n_pixels, indptr, indices, weights)


def pixel_polar_map(centre, radii, nphi, panel_shape, method="bilinear"):
    """A PolarMap of one panel on an (r, phi) grid around a pixel centre.

    Parameters
    ----------
    centre : (float, float)
        (fast, slow) in pixels.
    radii : ndarray of float
        Radii in pixels (one row each).
    nphi : int
    panel_shape : (rows, columns)
    """
    phi = phi_samples(nphi)
    radii = np.asarray(radii, dtype=np.float64)[:, None]
    fast = centre[0] + radii * np.cos(phi)
    slow = centre[1] + radii * np.sin(phi)
    return map_from_pixel_coordinates(fast, slow, 0, [panel_shape], method)


def azimuth_basis(beam):
    """Unit vectors (e_x, e_y) perpendicular to the beam that phi is measured in.

    The convention of `dials_diffuse.geometry.azimuth`: e_x is the lab x axis
    with its component along the beam removed (the lab y axis if the beam
    runs along x), e_y = e_x x unit(s0); for a beam along -z, phi = 0 is +x
    and phi = 90 degrees is +y.
    """
    b = np.array(beam.get_unit_s0())
    e_x = np.array([1.0, 0.0, 0.0])
    if abs(b @ e_x) > 0.99:
        e_x = np.array([0.0, 1.0, 0.0])
    e_x = e_x - (e_x @ b) * b
    e_x /= np.linalg.norm(e_x)
    return e_x, np.cross(e_x, b)


def q_phi_coordinates(detector, beam, q, nphi):
    """Pixel coordinates of every (q, phi) sample of a polar grid on the detector.

    Parameters
    ----------
    detector, beam : dxtbx models
    q : ndarray of float
        |q| = 4 pi sin(theta) / lambda of each row, in Å⁻¹.
    nphi : int

    Returns
    -------
    fast, slow : ndarray (n_q, nphi), pixels; NaN off the detector
    panel : ndarray of int32 (n_q, nphi); -1 off the detector
    """
    return grid_coordinates(detector, beam, q, 0.0, 2 * np.pi / nphi, nphi)


def two_theta_of_q(q, wavelength):
    """Scattering angle 2θ (radians) of |q| (Å⁻¹) at `wavelength` (Å)."""
    q = np.asarray(q, dtype=np.float64)
    sin_theta = q * wavelength / (4.0 * np.pi)
    if np.any((sin_theta <= 0) | (sin_theta >= 1)):
        raise DataError(
            f"q must lie in (0, {4 * np.pi / wavelength:.3f}) Å⁻¹ at "
            f"λ = {wavelength:.4f} Å"
        )
    return 2.0 * np.arcsin(sin_theta)


def grid_coordinates(detector, beam, q, phi_start, phi_step, nphi):
    """Where the samples of a separable (q, phi) grid land on the detector.

    Row r has |q| = q[r] (Å⁻¹), column c the azimuth phi_start + c * phi_step
    (radians; `azimuth_basis`). See `GridProjector`.

    Returns
    -------
    fast, slow : ndarray (len(q), nphi) of float64, px (NaN off the detector)
    panel : ndarray (len(q), nphi) of int32, -1 off the detector
    """
    return GridProjector(detector, beam).coordinates(q, phi_start, phi_step, nphi)


@dataclasses.dataclass
class _PanelExtent:
    """A panel's projection matrix and its bounds in (2θ, phi), radians."""

    matrix: np.ndarray  # D [b e1 e2]
    scale: tuple
    limits: np.ndarray
    simple: bool
    two_theta: tuple  # (low, high)
    phi: tuple  # (first, span), or None: every azimuth


class GridProjector:
    """Projects separable (q, phi) grids onto a detector, panel by panel.

    Each panel is bounded once in (2θ, phi) from its edges (with a margin of
    two pixels); for a grid, only the samples inside a panel's box are
    projected onto it, by a C++ kernel: the work grows with the number of
    samples, not with samples x panels. Where panels overlap, the first one
    wins. Panels whose pixel-to-mm mapping is not a plain scaling (parallax
    correction) are converted by dxtbx's own millimeter_to_pixel.
    """

    def __init__(self, detector, beam):
        self.detector = detector
        self.wavelength = beam.get_wavelength()
        b = np.array(beam.get_unit_s0())
        e1, e2 = azimuth_basis(beam)
        basis = np.stack([b, e1, e2], axis=1)
        self.extents = []
        for panel in detector:
            D = np.array(panel.get_D_matrix(), dtype=np.float64).reshape(3, 3)
            n_fast, n_slow = panel.get_image_size()
            pixel = panel.get_pixel_size()
            simple = _is_simple_strategy(panel)
            if simple:
                scale = (1.0 / pixel[0], 1.0 / pixel[1])
                limits = np.array([0.0, n_fast, 0.0, n_slow], dtype=np.float64)
            else:  # mm here, converted by dxtbx; 2 px margin for parallax
                scale = (1.0, 1.0)
                limits = np.array(
                    [
                        -2 * pixel[0],
                        (n_fast + 2) * pixel[0],
                        -2 * pixel[1],
                        (n_slow + 2) * pixel[1],
                    ]
                )
            two_theta, phi = _panel_extent(panel, b, e1, e2)
            self.extents.append(
                _PanelExtent(
                    np.ascontiguousarray(D @ basis),
                    scale,
                    limits,
                    simple,
                    two_theta,
                    phi,
                )
            )

    def coordinates(self, q, phi_start, phi_step, nphi):
        """(fast, slow, panel) of a grid: see `grid_coordinates`."""
        from scitbx.array_family import flex

        q = np.atleast_1d(np.asarray(q, dtype=np.float64))
        two_theta = two_theta_of_q(q, self.wavelength)
        phi = phi_start + phi_step * np.arange(nphi)
        cos2t, sin2t = np.cos(two_theta), np.sin(two_theta)
        cosphi, sinphi = np.cos(phi), np.sin(phi)
        shape = (q.size, nphi)
        x = np.full(shape, np.nan)
        y = np.full(shape, np.nan)
        panel_of = np.full(shape, -1, dtype=np.int32)
        ascending = bool(np.all(np.diff(two_theta) > 0))
        for panel_id, (panel, extent) in enumerate(zip(self.detector, self.extents)):
            if ascending:
                low, high = extent.two_theta
                rows = (
                    max(int(np.searchsorted(two_theta, low)) - 1, 0),
                    min(int(np.searchsorted(two_theta, high)) + 1, q.size),
                )
            else:
                rows = (0, q.size)
            if extent.phi is None:
                columns = (0, nphi)
            else:
                first, span = extent.phi
                begin = int(np.floor((first - phi_start) / phi_step)) - 1
                columns = (begin % nphi, min(int(np.ceil(span / phi_step)) + 3, nphi))
            if rows[1] <= rows[0]:
                continue
            _kernels.polar_coordinates_on_panel(
                cos2t,
                sin2t,
                rows[0],
                rows[1],
                cosphi,
                sinphi,
                columns[0],
                columns[1],
                extent.matrix,
                extent.scale[0],
                extent.scale[1],
                extent.limits,
                panel_id,
                x,
                y,
                panel_of,
            )
            if extent.simple:
                continue
            mine = np.flatnonzero(panel_of.ravel() == panel_id)
            if mine.size:
                mm = flex.vec2_double(
                    flex.double(x.ravel()[mine]), flex.double(y.ravel()[mine])
                )
                px_fast, px_slow = (
                    part.as_numpy_array()
                    for part in panel.millimeter_to_pixel(mm).parts()
                )
                n_fast, n_slow = panel.get_image_size()
                on = (px_fast >= 0) & (px_fast < n_fast)
                on &= (px_slow >= 0) & (px_slow < n_slow)
                x.ravel()[mine] = np.where(on, px_fast, np.nan)
                y.ravel()[mine] = np.where(on, px_slow, np.nan)
                panel_of.ravel()[mine[~on]] = -1
        return x, y, panel_of


def _is_simple_strategy(panel):
    """True when dxtbx maps mm to px on this panel by the pixel size alone
    (no parallax correction, no offsets)."""
    return type(panel.get_px_mm_strategy()).__name__ == "SimplePxMmStrategy"


def panel_edge_lab(panel, margin_px=0):
    """Lab coordinates (mm) of points one pixel apart along the edges of a
    flat panel, widened by `margin_px` pixels on every side: (n, 3)."""
    n_fast, n_slow = panel.get_image_size()
    pixel = np.array(panel.get_pixel_size())
    margin = margin_px * pixel
    xs = np.linspace(
        -margin[0], n_fast * pixel[0] + margin[0], n_fast + 2 * margin_px + 1
    )
    ys = np.linspace(
        -margin[1], n_slow * pixel[1] + margin[1], n_slow + 2 * margin_px + 1
    )
    edge = np.concatenate(
        [
            np.stack([xs, np.full_like(xs, ys[0])], axis=1),
            np.stack([xs, np.full_like(xs, ys[-1])], axis=1),
            np.stack([np.full_like(ys, xs[0]), ys], axis=1),
            np.stack([np.full_like(ys, xs[-1]), ys], axis=1),
        ]
    )
    origin = np.array(panel.get_origin())
    f_axis = np.array(panel.get_fast_axis())
    s_axis = np.array(panel.get_slow_axis())
    return origin + edge[:, :1] * f_axis + edge[:, 1:] * s_axis


def _panel_extent(panel, b, e1, e2):
    """A panel's range of 2θ (low, high) and of phi (first, span), radians,
    from its edges widened by two pixels; phi None when the beam crosses
    the panel (every azimuth)."""
    n_fast, n_slow = panel.get_image_size()
    pixel = np.array(panel.get_pixel_size())
    size = np.array([n_fast, n_slow]) * pixel
    margin = 2 * pixel
    lab = panel_edge_lab(panel, margin_px=2)
    lab /= np.linalg.norm(lab, axis=1)[:, None]
    edge_two_theta = np.arccos(np.clip(lab @ b, -1.0, 1.0))
    edge_phi = np.mod(np.arctan2(lab @ e2, lab @ e1), 2 * np.pi)
    # Does the beam itself cross the (widened) panel?
    D = np.array(panel.get_D_matrix()).reshape(3, 3)
    v = D @ b
    holds_beam = False
    if v[2] > 0:
        foot = v[:2] / v[2]
        holds_beam = bool(np.all(foot >= -margin) and np.all(foot <= size + margin))
    two_theta = (0.0 if holds_beam else edge_two_theta.min(), edge_two_theta.max())
    if holds_beam:
        return two_theta, None
    ordered = np.sort(edge_phi)
    gaps = np.diff(np.concatenate([ordered, [ordered[0] + 2 * np.pi]]))
    widest = int(np.argmax(gaps))
    first = ordered[(widest + 1) % ordered.size]
    return two_theta, (float(first), float(2 * np.pi - gaps[widest]))


#: Polar (sub-)samples projected at once while a map is built: bounds the
#: memory of map building (about 20 bytes per sample) for any grid.
MAP_BLOCK_SAMPLES = 1 << 20


def q_polar_map(detector, beam, q, nphi, method="bilinear", oversample=1):
    """A PolarMap on a (q, phi) grid from the dxtbx detector and beam models.

    Parameters
    ----------
    detector, beam : dxtbx models
    q : ndarray
        |q| of each row in Å⁻¹ (evenly spaced when oversampling).
    nphi : int
        Azimuth samples over 360 degrees.
    method : "nearest" or "bilinear"
    oversample : int
        Each polar sample is the mean of oversample x oversample points
        spread evenly over its cell (one q step by 360/nphi degrees): an
        area average that, like pixel splitting, lets every pixel under a
        coarse polar cell contribute. 1: the value at the sample point.
    """
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    oversample = int(oversample)
    dphi = 2 * np.pi / nphi
    offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
    dq = (q[-1] - q[0]) / (q.size - 1) if q.size > 1 else 0.0
    shapes = [tuple(reversed(p.get_image_size())) for p in detector]
    projector = GridProjector(detector, beam)
    rows_per_block = max(1, MAP_BLOCK_SAMPLES // (nphi * oversample * oversample))
    blocks = []
    for start in range(0, q.size, rows_per_block):
        block_q = q[start : start + rows_per_block]
        sub_q = (block_q[:, None] + offsets[None, :] * dq).ravel()
        fast, slow, panel = projector.coordinates(
            sub_q, offsets[0] * dphi, dphi / oversample, nphi * oversample
        )
        blocks.append(
            map_from_pixel_coordinates(
                fast, slow, panel, shapes, method, oversample, sort=False
            )
        )
    return concatenate_maps(blocks)


@dataclasses.dataclass
class _BinOrderMap:
    """A compact map's arrays in bin order, before sorting (map building)."""

    shape: tuple
    n_pixels: int
    index: np.ndarray
    fractions: np.ndarray
    stride: int


def concatenate_maps(maps):
    """One map of the q rows of several maps of one detector, in order: a
    `SparseMap`, or a `CompactMap` from `_BinOrderMap` blocks (sorted once)."""
    first = maps[0]
    shape = (sum(m.shape[0] for m in maps), first.shape[1])
    if isinstance(first, _BinOrderMap):
        return CompactMap.from_bin_order(
            shape,
            first.n_pixels,
            np.concatenate([m.index for m in maps]),
            None
            if first.fractions is None
            else np.concatenate([m.fractions for m in maps]),
            first.stride,
        )
    if len(maps) == 1:
        return first
    ends = np.cumsum([0] + [m.indptr[-1] for m in maps[:-1]])
    return SparseMap(
        shape=shape,
        n_pixels=first.n_pixels,
        indptr=np.concatenate(
            [maps[0].indptr[:1]] + [m.indptr[1:] + end for m, end in zip(maps, ends)]
        ),
        indices=np.concatenate([m.indices for m in maps]),
        weights=np.concatenate([m.weights for m in maps]),
    )


def q_at_radius(detector, beam, radius_px, panel_id=0):
    """|q| in Å⁻¹ of a ring of `radius_px` pixels around the beam centre.

    Measured along the fast axis from the beam centre on the panel, with the
    dxtbx model (exact for a detector normal to the beam, first order
    otherwise).
    """
    panel = detector[panel_id]
    s0 = beam.get_s0()
    centre = panel.get_beam_centre_px(s0)
    two_theta = panel.get_two_theta_at_pixel(
        s0, (centre[0] + float(radius_px), centre[1])
    )
    return 4.0 * np.pi * np.sin(two_theta / 2.0) / beam.get_wavelength()


def normalise_rows(polar, valid):
    """Divide each q row of each shot by its mean over valid phi samples.

    As in the SACLA difference-correlation recipe: removes shot-to-shot
    intensity changes before shots are subtracted. Rows with no valid
    sample, or a mean of 0, become invalid. Works in place; returns
    (polar, valid).
    """
    counts = valid.sum(axis=-1)
    sums = np.where(valid, polar, 0).sum(axis=-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    good = (counts > 0) & (means != 0) & np.isfinite(means)
    polar /= np.where(good, means, 1.0)[..., None].astype(polar.dtype)
    valid &= good[..., None]
    polar[~valid] = 0
    return polar, valid
