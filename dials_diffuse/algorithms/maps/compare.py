"""Compare two maps: CC over the total and the anisotropic signal, scale and offset.

As LUNUS's ``corrlt`` and the comparisons of experimental with molecular-
dynamics maps: the maps are taken on the grid points they share (same
fractional h, k, l; maps of different subdivide meet on the coarser grid),
over the voxels measured in both. Then

- CC_total: Pearson's correlation of the two maps;
- CC_aniso: the correlation of their anisotropic parts, each map minus its
  own isotropic component (the mean per shell of |s| over the shared
  voxels, interpolated, as `isotropic`);
- scale and offset: the least-squares fit first = scale * second + offset,
  with the rms of the residual;

overall and per shell of |s| (inverse Angstrom).
"""

import dataclasses

import numpy as np
import pandas as pd
from libtbx.phil import parse

from dials_diffuse.algorithms.maps.analyse import pearson
from dials_diffuse.algorithms.maps.grid import Shells, resolution_grid
from dials_diffuse.algorithms.maps.isotropic import isotropic_grid, isotropic_profile
from dials_diffuse.util.errors import DataError

phil_str = """
shells {
  width = 0.02
    .type = float(value_min=0)
    .help = "Width of the resolution shells in |s| = 1/d (inverse Angstrom), for"
            "the isotropic components and the table per shell."
}
min_voxels = 10
  .type = int(value_min=3)
  .help = "Shells with fewer shared voxels are reported without correlations."
"""

phil_scope = parse(phil_str)


@dataclasses.dataclass
class MapComparison:
    """The result of `do_compare_maps`.

    Attributes
    ----------
    overall : dict
        cc_total, cc_anisotropic, scale, offset, rms_residual, voxels.
    shells : DataFrame
        The same per shell: s_low, s_high, d_low, d_high and the columns above.
    first, second : ndarray
        The two maps on the shared grid (NaN where either is unmeasured).
    first_anisotropic, second_anisotropic : ndarray
    """

    overall: dict
    shells: pd.DataFrame
    first: np.ndarray
    second: np.ndarray
    first_anisotropic: np.ndarray
    second_anisotropic: np.ndarray


def shared_grid(first, second):
    """Index arrays (per axis) of the grid points the two maps share.

    Returns
    -------
    first_index, second_index : lists of three int arrays
    axes : list of three arrays (r.l.u.)
    """
    scale = int(np.lcm.reduce(np.concatenate([first.subdivide, second.subdivide])))
    first_index, second_index, axes = [], [], []
    for a, b in zip(first.axes, second.axes):
        keys_a = np.rint(a * scale).astype(np.int64)
        keys_b = np.rint(b * scale).astype(np.int64)
        common, index_a, index_b = np.intersect1d(
            keys_a, keys_b, assume_unique=True, return_indices=True
        )
        if not len(common):
            raise DataError(
                f"{first.source} and {second.source} share no grid point "
                f"(h, k, l ranges and subdivide differ)"
            )
        first_index.append(index_a)
        second_index.append(index_b)
        axes.append(common / scale)
    return first_index, second_index, axes


def fit_scale_offset(x, y):
    """Least squares y = scale * x + offset over the finite pairs; and the rms residual."""
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < 3:
        return np.nan, np.nan, np.nan
    design = np.stack([x[both], np.ones(both.sum())], axis=1)
    (scale, offset), *_ = np.linalg.lstsq(design, y[both], rcond=None)
    residual = y[both] - (scale * x[both] + offset)
    return float(scale), float(offset), float(np.sqrt(np.mean(residual**2)))


def _statistics(first, second, first_aniso, second_aniso):
    scale, offset, rms = fit_scale_offset(second, first)
    return {
        "voxels": int((np.isfinite(first) & np.isfinite(second)).sum()),
        "cc_total": pearson(first, second),
        "cc_anisotropic": pearson(first_aniso, second_aniso),
        "scale": scale,
        "offset": offset,
        "rms_residual": rms,
    }


def do_compare_maps(first, second, params, unit_cell=None):
    """CC_total, CC_aniso, scale and offset of two maps, overall and per shell.

    Parameters
    ----------
    first, second : ReciprocalMap
        The reference (e.g. the experimental map) and the map compared with it.
    params : extracted `phil_scope`
    unit_cell : cctbx unit cell, optional
        For |s|; default the first map's, else the second's.

    Returns
    -------
    MapComparison
    """
    first_index, second_index, axes = shared_grid(first, second)
    a = first.values[np.ix_(*first_index)].astype(np.float64)
    b = second.values[np.ix_(*second_index)].astype(np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3:
        raise DataError(
            f"{first.source} and {second.source} have fewer than 3 voxels measured "
            "in both"
        )
    a = np.where(both, a, np.nan)
    b = np.where(both, b, np.nan)
    if unit_cell is None:
        source = first if first.unit_cell is not None else second
        unit_cell = source.cell()
    s = resolution_grid(axes, unit_cell)
    shells = Shells.of_width(params.shells.width, float(s[both].max()))
    a_aniso = a - isotropic_grid(isotropic_profile(a, s, shells), s)
    b_aniso = b - isotropic_grid(isotropic_profile(b, s, shells), s)
    overall = _statistics(a, b, a_aniso, b_aniso)
    number = shells.index(s)
    rows = []
    for shell in range(shells.count):
        inside = number == shell
        row = {
            "s_low": shells.edges[shell],
            "s_high": shells.edges[shell + 1],
            "d_low": 1.0 / shells.edges[shell] if shell else np.inf,
            "d_high": 1.0 / shells.edges[shell + 1],
        }
        if (both & inside).sum() >= params.min_voxels:
            row.update(
                _statistics(a[inside], b[inside], a_aniso[inside], b_aniso[inside])
            )
        else:
            row["voxels"] = int((both & inside).sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    return MapComparison(overall, table, a, b, a_aniso, b_aniso)
