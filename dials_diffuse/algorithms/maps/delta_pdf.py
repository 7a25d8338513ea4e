"""The 3D-DeltaPDF of a diffuse map: punch and fill, apodise, Fourier transform.

As NXRefine's punch-and-fill (Weber & Simonov 2012): the voxels around every
Bragg position (integer hkl that the space group allows) are removed
("punched") -- within a sphere of `punch.radius` r.l.u., or within the peak
model's ellipsoid of peaks.nxs at `punch.sigma_cutoff` -- and, with every
voxel never measured, filled (with zero, or with the isotropic shell mean).
The map is then multiplied by a window in |s| (apodised: a spherical Tukey
window, flat to (1 - fraction) s_max and a cosine to zero at s_max, as
NXRefine's taper, or a Gaussian) to suppress the truncation ripples, and
Fourier transformed on the supercell that the grid samples:

    P(x) = (1/N) sum_h I(h) cos(2 pi h . x),

the mean over the N grid points (the map's intensity units). With h on a
grid of spacing 1/subdivide and n points along an axis, x runs over
subdivide cells in steps of subdivide / n cells (subdivide a / n Angstrom
along a): the periodic box of the transform is the supercell (subdivide x
the unit cell), the origin of the Patterson at the grid's centre. Positive
peaks at an interatomic vector u are pair correlations stronger than in
the average structure, negative ones weaker.
"""

import dataclasses

import numpy as np
from libtbx.phil import parse

from dials_diffuse.algorithms.maps.grid import Shells, inscribed_s
from dials_diffuse.algorithms.maps.isotropic import isotropic_grid, isotropic_profile
from dials_diffuse.util.errors import DataError

phil_str = """
map = *total anisotropic
  .type = choice
  .help = "Transform the total diffuse map (as NXRefine) or its anisotropic"
          "part (the isotropic shell mean subtracted: no large origin peak)."
punch {
  shape = *sphere ellipsoid none
    .type = choice
    .help = "Remove the Bragg positions within a sphere of radius r.l.u., or"
            "within the peak model's ellipsoid (give peaks.nxs of find_peaks),"
            "or not at all."
  radius = 0.2
    .type = float(value_min=0)
    .help = "Radius of the punched sphere in r.l.u. (distance in fractional"
            "h, k, l)."
  sigma_cutoff = 3.0
    .type = float(value_min=0)
    .help = "Size of the punched ellipsoid in standard deviations of the peak"
            "model."
}
fill = zero *shell_mean
  .type = choice
  .help = "Value of punched and unmeasured voxels: zero, or the isotropic mean"
          "of their resolution shell."
apodise {
  window = *tukey gaussian none
    .type = choice
    .help = "Window in |s| that takes the map smoothly to zero at s_max:"
            "spherical Tukey (flat, then a cosine) or Gaussian."
  s_max = None
    .type = float(value_min=0)
    .help = "|s| (inverse Angstrom) where the window reaches zero. Default: the"
            "sphere inscribed in the map's box, or the highest measured |s| if"
            "smaller."
  fraction = 0.5
    .type = float(value_min=0, value_max=1)
    .help = "Tukey window: the fraction of s_max over which the cosine falls"
            "(0.5: flat to s_max/2, as NXRefine)."
  gaussian_sigma = 0.4
    .type = float(value_min=0)
    .help = "Gaussian window: its standard deviation as a fraction of s_max"
            "(cut at s_max)."
}
shells {
  width = 0.01
    .type = float(value_min=0)
    .help = "Width of the shells of |s| (inverse Angstrom) for the shell-mean fill"
            "and the anisotropic part."
}
"""

phil_scope = parse(phil_str)


@dataclasses.dataclass
class DeltaPDF:
    """A real-space grid (3D-DeltaPDF) and its geometry.

    Attributes
    ----------
    values : ndarray (na, nb, nc)
        The transform (the map's intensity units; see the module).
    fractional_axes : list of 3 arrays
        Grid positions along a, b, c in fractions of the unit cell.
    unit_cell : tuple
        The crystal's cell (Angstrom, degrees).
    supercell : tuple
        The periodic box of the grid: subdivide x a, b, c and the angles.
    origin_index : ndarray of int (3,)
        Grid index of the first point (-n // 2): x = (origin + i) * step.
    space_group : str or None
    punched_fraction, filled_fraction : float
        Of the reciprocal-space grid.
    s_max : float
        Where the window reaches zero (inverse Angstrom).
    """

    values: np.ndarray
    fractional_axes: list
    unit_cell: tuple
    supercell: tuple
    origin_index: np.ndarray
    space_group: str
    punched_fraction: float
    filled_fraction: float
    s_max: float

    @property
    def axes_angstrom(self):
        """Grid positions along a, b, c in Angstrom (fraction x cell length)."""
        return [
            axis * length for axis, length in zip(self.fractional_axes, self.unit_cell)
        ]

    @property
    def step_angstrom(self):
        return np.array(
            [a[1] - a[0] if len(a) > 1 else 0.0 for a in self.axes_angstrom]
        )

    def peak(self, exclude_origin=0.0):
        """Fractional position (3,) of the largest value.

        With `exclude_origin` (Angstrom), points nearer the origin are left
        out (the distance taken in the a, b, c axes' Angstrom as if they were
        orthogonal: a rough cut for the origin peak).
        """
        values = self.values
        if exclude_origin:
            x, y, z = np.meshgrid(*self.axes_angstrom, indexing="ij")
            values = np.where(
                np.sqrt(x * x + y * y + z * z) > exclude_origin, values, -np.inf
            )
        index = np.unravel_index(np.argmax(values), values.shape)
        return np.array([axis[i] for axis, i in zip(self.fractional_axes, index)])


def bragg_positions(recmap, punch, peak_model=None):
    """True at the grid points within the punch shape around an allowed Bragg position.

    Parameters
    ----------
    recmap : ReciprocalMap
    punch : extracted ``punch`` scope
    peak_model : dials_diffuse.algorithms.diffuse.peaks.PeakModel, optional
        For ``shape=ellipsoid``.
    """
    if punch.shape == "none":
        return np.zeros(recmap.shape, dtype=bool)
    h = recmap.axes[0][:, None, None]
    k = recmap.axes[1][None, :, None]
    l = recmap.axes[2][None, None, :]  # noqa: E741 - Miller index name
    offsets = np.stack(
        np.broadcast_arrays(h - np.rint(h), k - np.rint(k), l - np.rint(l)), axis=-1
    )
    if punch.shape == "sphere":
        inside = np.sqrt((offsets * offsets).sum(axis=-1)) <= punch.radius
    else:
        if peak_model is None:
            raise DataError("punch.shape=ellipsoid needs the peaks.nxs of find_peaks")
        inside = (
            peak_model.distance(offsets.reshape(-1, 3)).reshape(recmap.shape)
            <= punch.sigma_cutoff
        )
    if recmap.space_group is not None:
        # Only the points near a lattice point: those whose index it is.
        candidates = np.flatnonzero(inside)
        nearest = np.rint(
            np.stack(np.broadcast_arrays(h, k, l), axis=-1).reshape(-1, 3)[candidates]
        )
        inside.ravel()[candidates] = _allowed(recmap, nearest)
    return inside


def _allowed(recmap, hkl):
    """True for each integer (h, k, l) row that is not systematically absent."""
    from cctbx.array_family import flex

    unique, inverse = np.unique(hkl.astype(np.int32), axis=0, return_inverse=True)
    indices = flex.miller_index(
        *(flex.int(np.ascontiguousarray(unique[:, i])) for i in range(3))
    )
    absent = recmap.group().is_sys_absent(indices).as_numpy_array()
    return ~absent[inverse.ravel()]


def window(s, params):
    """The apodisation window (0 to 1) at |s| (inverse Angstrom)."""
    s_max = params.s_max
    if params.window == "none":
        return np.where(s <= s_max, 1.0, 0.0)
    if params.window == "gaussian":
        sigma = params.gaussian_sigma * s_max
        return np.where(s <= s_max, np.exp(-0.5 * (s / sigma) ** 2), 0.0)
    start = (1.0 - params.fraction) * s_max
    taper = 0.5 * (1.0 + np.cos(np.pi * (s - start) / max(s_max - start, 1e-12)))
    return np.where(s <= start, 1.0, np.where(s < s_max, taper, 0.0))


def do_delta_pdf(recmap, params, peak_model=None):
    """Punch, fill, apodise and Fourier transform a map (see the module).

    Parameters
    ----------
    recmap : ReciprocalMap
        With a unit cell (the space group, when known, limits the punch to
        allowed reflections).
    params : extracted `phil_scope`
    peak_model : PeakModel, optional
        For ``punch.shape=ellipsoid``.

    Returns
    -------
    DeltaPDF
    """
    import copy

    s = recmap.s()
    values = np.array(recmap.values, dtype=np.float64)
    measured = np.isfinite(values)
    if not measured.any():
        raise DataError(f"{recmap.source}: the map has no measured voxel")
    punched = bragg_positions(recmap, params.punch, peak_model) & measured
    values[punched] = np.nan
    usable = np.isfinite(values)
    shells = Shells.of_width(params.shells.width, float(s[usable].max()))
    isotropic = None
    if params.fill == "shell_mean" or params.map == "anisotropic":
        isotropic = isotropic_grid(isotropic_profile(values, s, shells), s)
    if params.map == "anisotropic":
        values = values - isotropic
        fill = np.zeros_like(values)
    else:
        fill = isotropic if params.fill == "shell_mean" else np.zeros_like(values)
    values = np.where(usable, values, fill)

    apodise = copy.copy(params.apodise)
    if apodise.s_max is None:
        apodise.s_max = min(
            inscribed_s(recmap.axes, recmap.cell()), float(s[usable].max())
        )
    values *= window(s, apodise)

    transform = np.real(np.fft.fftn(_origin_first(values, recmap.first_index())))
    transform = np.fft.fftshift(transform) / values.size
    shape = np.array(values.shape)
    origin = -(shape // 2)
    fractional = [
        (origin[i] + np.arange(shape[i])) * recmap.subdivide[i] / shape[i]
        for i in range(3)
    ]
    cell = recmap.cell().parameters()
    supercell = tuple(
        [cell[i] * recmap.subdivide[i] for i in range(3)] + list(cell[3:])
    )
    return DeltaPDF(
        values=transform,
        fractional_axes=fractional,
        unit_cell=tuple(cell),
        supercell=supercell,
        origin_index=origin,
        space_group=recmap.space_group,
        punched_fraction=float(punched.mean()),
        filled_fraction=float((~usable).mean()),
        s_max=float(apodise.s_max),
    )


def _origin_first(values, first_index):
    """Place grid point i (h = i / subdivide) at array index i mod n, for the FFT."""
    for axis, first in enumerate(first_index):
        values = np.roll(values, int(first), axis=axis)
    return values
