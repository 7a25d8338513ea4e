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


@dataclasses.dataclass
class PolarMap:
    """A sparse (CSR) map from the flattened pixels of a frame to polar samples.

    Attributes
    ----------
    indptr : ndarray of int64, length n_rows * n_phi + 1
    indices : ndarray of int32
        Flattened pixel index (panels concatenated in order).
    weights : ndarray of float32
    shape : (int, int)
        (n_rows, n_phi) of the polar grid.
    n_pixels : int
        Pixels per frame (all panels).
    """

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    shape: tuple
    n_pixels: int

    @property
    def coverage(self):
        """Polar samples that fall on the detector: bool array of `shape`."""
        return (np.diff(self.indptr) > 0).reshape(self.shape)

    def apply(self, frames, valid=None):
        """Resample frames (n, ...pixels) onto the grid.

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
        out, out_valid = _kernels.polar_resample(
            self.indptr, self.indices, self.weights, frames, valid
        )
        n = frames.shape[0]
        return out.reshape((n,) + self.shape), out_valid.view(bool).reshape(
            (n,) + self.shape
        )


def phi_samples(nphi):
    """Azimuths of the polar samples in radians: 2 pi j / nphi."""
    return 2.0 * np.pi * np.arange(nphi) / nphi


def map_from_pixel_coordinates(fast, slow, panel, panel_shapes, method="bilinear"):
    """Build a PolarMap from the pixel coordinates of every polar sample.

    Parameters
    ----------
    fast, slow : ndarray of float, shape (n_rows, n_phi) or (n_rows, n_phi, n_sub)
        Pixel coordinates of each sample (px, centres at i+0.5); NaN where
        the sample misses the detector. With a third axis, each polar sample
        is the mean over its n_sub sub-samples (oversampling: an area
        average over the polar cell, like pixel splitting), valid only when
        all of them are.
    panel : ndarray of int, broadcastable to the shape of `fast`
        Panel of each sample (ignored where the coordinates are NaN).
    panel_shapes : list of (rows, columns)
    method : "nearest" or "bilinear"
    """
    if method not in METHODS:
        raise DataError(f"unknown interpolation '{method}': use one of {METHODS}")
    fast = np.asarray(fast, dtype=np.float64)
    slow = np.asarray(slow, dtype=np.float64)
    panel = np.broadcast_to(np.asarray(panel), fast.shape)
    if fast.ndim == 2:
        fast, slow, panel = fast[..., None], slow[..., None], panel[..., None]
    shape = fast.shape[:2]
    n_sub = fast.shape[2]
    fast, slow = fast.ravel(), slow.ravel()
    panel = panel.ravel().astype(np.int64)
    rows = np.array([s[0] for s in panel_shapes], dtype=np.int64)
    columns = np.array([s[1] for s in panel_shapes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(rows * columns)])
    finite = np.isfinite(fast) & np.isfinite(slow)
    panel = np.where(finite, panel, 0)
    n_rows, n_columns = rows[panel], columns[panel]
    fast = np.where(finite, fast, -1.0)
    slow = np.where(finite, slow, -1.0)
    if method == "nearest":
        i = np.floor(fast).astype(np.int64)[:, None]
        j = np.floor(slow).astype(np.int64)[:, None]
        weights = np.ones((fast.size, 1))
    else:
        fx, fy = fast - 0.5, slow - 0.5
        i0, j0 = np.floor(fx), np.floor(fy)
        tx, ty = fx - i0, fy - j0
        i0, j0 = i0.astype(np.int64), j0.astype(np.int64)
        i = np.stack([i0, i0 + 1, i0, i0 + 1], axis=1)
        j = np.stack([j0, j0, j0 + 1, j0 + 1], axis=1)
        weights = np.stack(
            [(1 - tx) * (1 - ty), tx * (1 - ty), (1 - tx) * ty, tx * ty], axis=1
        )
    inside = (i >= 0) & (i < n_columns[:, None]) & (j >= 0) & (j < n_rows[:, None])
    used = weights > 0
    row_ok = finite & np.all(inside | ~used, axis=1)
    i = np.clip(i, 0, n_columns[:, None] - 1)
    j = np.clip(j, 0, n_rows[:, None] - 1)
    index = offsets[panel][:, None] + j * n_columns[:, None] + i
    # Gather the sub-samples of each polar sample into one row.
    n_bins = shape[0] * shape[1]
    index = index.reshape(n_bins, -1)
    weights = weights.reshape(n_bins, -1) / n_sub
    used = used.reshape(n_bins, -1)
    row_ok = row_ok.reshape(n_bins, n_sub).all(axis=1)
    # Entries of zero weight are left out, so that a masked pixel that does
    # not contribute does not mask the sample.
    keep = used & row_ok[:, None]
    counts = keep.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if offsets[-1] > np.iinfo(np.int32).max:
        raise DataError("the detector has too many pixels for a 32-bit pixel index")
    return PolarMap(
        indptr=indptr,
        indices=np.ascontiguousarray(index[keep], dtype=np.int32),
        weights=np.ascontiguousarray(weights[keep], dtype=np.float32),
        shape=shape,
        n_pixels=int(offsets[-1]),
    )


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
    panel : ndarray of int (n_q, nphi)
    """
    q = np.asarray(q, dtype=np.float64)
    return pixel_coordinates_at(detector, beam, q[:, None], phi_samples(nphi)[None, :])


def pixel_coordinates_at(detector, beam, q, phi):
    """Pixel coordinates where scattering at |q| (Å⁻¹) and azimuth phi (rad) lands.

    `q` and `phi` broadcast against each other; returns (fast, slow, panel)
    of the broadcast shape, fast/slow in pixels (NaN off every panel).
    """
    from scitbx.array_family import flex

    wavelength = beam.get_wavelength()
    q, phi = np.broadcast_arrays(np.asarray(q, float), np.asarray(phi, float))
    sin_theta = q * wavelength / (4.0 * np.pi)
    if np.any((sin_theta <= 0) | (sin_theta >= 1)):
        raise DataError(
            f"q must lie in (0, {4 * np.pi / wavelength:.3f}) Å⁻¹ at "
            f"λ = {wavelength:.4f} Å"
        )
    two_theta = 2.0 * np.arcsin(sin_theta)
    b = np.array(beam.get_unit_s0())
    e1, e2 = azimuth_basis(beam)
    direction = (
        np.cos(two_theta)[..., None] * b
        + (np.sin(two_theta) * np.cos(phi))[..., None] * e1
        + (np.sin(two_theta) * np.sin(phi))[..., None] * e2
    ).reshape(-1, 3)
    fast = np.full(direction.shape[0], np.nan)
    slow = np.full(direction.shape[0], np.nan)
    panel_of = np.zeros(direction.shape[0], dtype=np.int64)
    for panel_id, panel in enumerate(detector):
        D = np.array(panel.get_D_matrix()).reshape(3, 3)
        v = direction @ D.T
        todo = np.isnan(fast) & (v[:, 2] > 0)
        if not np.any(todo):
            continue
        mm = np.stack([v[todo, 0] / v[todo, 2], v[todo, 1] / v[todo, 2]], axis=1)
        px = np.array(panel.millimeter_to_pixel(flex.vec2_double(mm))).reshape(-1, 2)
        n_fast, n_slow = panel.get_image_size()
        on = (px[:, 0] >= 0) & (px[:, 0] < n_fast) & (px[:, 1] >= 0)
        on &= px[:, 1] < n_slow
        where = np.flatnonzero(todo)[on]
        fast[where], slow[where] = px[on, 0], px[on, 1]
        panel_of[where] = panel_id
    shape = q.shape
    return fast.reshape(shape), slow.reshape(shape), panel_of.reshape(shape)


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
    q = np.asarray(q, dtype=np.float64)
    phi = phi_samples(nphi)
    if oversample > 1:
        offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
        dq = (q[-1] - q[0]) / (q.size - 1) if q.size > 1 else 0.0
        sub_q = (offsets[:, None] * dq + 0.0 * offsets[None, :]).ravel()
        sub_phi = (0.0 * offsets[:, None] + offsets[None, :] * 2 * np.pi / nphi).ravel()
        q_grid = q[:, None, None] + sub_q[None, None, :]
        phi_grid = phi[None, :, None] + sub_phi[None, None, :]
    else:
        q_grid, phi_grid = q[:, None], phi[None, :]
    fast, slow, panel = pixel_coordinates_at(detector, beam, q_grid, phi_grid)
    shapes = [tuple(reversed(p.get_image_size())) for p in detector]
    return map_from_pixel_coordinates(fast, slow, panel, shapes, method)


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
