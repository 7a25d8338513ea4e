"""A 3-D reciprocal-space map from a merged (or corrected) voxel table.

As mdx2's map: a grid of voxel centres h = i / subdivide (and k, l) over
limits in reciprocal lattice units; with symmetry every grid point is mapped
to the asymmetric unit (the Laue group of the space group) and takes the
value of that voxel in the table; voxels not in the table are NaN.

Files: NeXus (``/entry/<column>``, NXdata with axes h, k, l; NeXpy shows it)
and, optionally, a CCP4/MRC map through iotbx. The CCP4 "cell" is the box
in reciprocal lattice units (lengths = grid points / subdivide, 90 degree
angles, space group P1), so that map viewers show the grid with the right
proportions in r.l.u. (not in inverse Angstrom).
"""

import dataclasses
import logging

import h5py
import numpy as np
from libtbx.phil import parse

from dials_diffuse.algorithms.diffuse.correct import map_to_asu
from dials_diffuse.io.tables import open_nexus_for_writing
from dials_diffuse.util.errors import DataError

MAX_GRID_POINTS = 400_000_000

logger = logging.getLogger(__name__)

#: The parameters of map (dials.diffuse.map and process include them).
phil_scope = parse(
    """
column = intensity
  .type = str
  .help = "The table column to map (intensity, intensity_error, count, ...)."
limits = None
  .type = floats(size=6)
  .help = "hmin,hmax,kmin,kmax,lmin,lmax in reciprocal lattice units."
          "Default: every symmetry mate of the table's voxels."
symmetry = True
  .type = bool
  .help = "Fill the grid by symmetry from the asymmetric unit (Laue group)."
"""
)


def _packed(integer):
    shifted = integer.astype(np.int64) + (1 << 20)
    return (shifted[:, 0] << 42) | (shifted[:, 1] << 21) | shifted[:, 2]


def map_axes(limits, subdivide):
    """Grid axes (r.l.u.) for limits (hmin, hmax, kmin, kmax, lmin, lmax)."""
    axes = []
    for axis in range(3):
        low, high = limits[2 * axis], limits[2 * axis + 1]
        if low > high:
            raise DataError(f"limits: the minimum {low} exceeds the maximum {high}")
        first = int(np.ceil(low * subdivide[axis] - 1e-9))
        last = int(np.floor(high * subdivide[axis] + 1e-9))
        axes.append(np.arange(first, last + 1) / subdivide[axis])
    size = int(np.prod([len(a) for a in axes]))
    if size > MAX_GRID_POINTS:
        raise DataError(f"the map would have {size} points: narrow the limits")
    return axes


def default_limits(hkl, space_group):
    """Symmetric limits covering every symmetry mate of the voxels (r.l.u.)."""
    from dials_diffuse.algorithms.diffuse.correct import laue_rotations

    extent = np.zeros(3)
    for rotation in laue_rotations(space_group):
        extent = np.maximum(extent, np.abs(hkl @ rotation).max(axis=0))
    return [value for e in extent for value in (-e, e)]


def grid_from_table(table, column, subdivide, space_group, limits, symmetry=True):
    """The map (nh, nk, nl) of `column` of a voxel table and its axes.

    Parameters
    ----------
    table : DataFrame
        Columns h, k, l (voxel centres, asymmetric unit when symmetry is
        used) and `column`.
    subdivide : (int, int, int)
    space_group : cctbx space_group
    limits : sequence of 6 floats
    symmetry : bool
        Expand by the Laue group; else look the grid points up directly.
    """
    axes, grids = grids_from_table(
        table, [column], subdivide, space_group, limits, symmetry
    )
    return axes, grids[column]


def grids_from_table(table, columns, subdivide, space_group, limits, symmetry=True):
    """As `grid_from_table` for several columns, mapping to the asymmetric unit once.

    Returns
    -------
    axes : list of three arrays
    grids : dict of column -> ndarray (nh, nk, nl)
    """
    for column in columns:
        if column not in table:
            raise DataError(f"the table has no column '{column}'")
    subdivide = np.asarray(subdivide, dtype=np.int64)
    axes = map_axes(limits, subdivide)
    h, k, l = np.meshgrid(*axes, indexing="ij")  # noqa: E741 - Miller index name
    points = np.stack([h.ravel(), k.ravel(), l.ravel()], axis=1)
    if symmetry:
        points, _ = map_to_asu(points, subdivide, space_group)
    keys = _packed(np.rint(points * subdivide).astype(np.int64))
    table_hkl = table[["h", "k", "l"]].to_numpy(np.float64)
    table_keys = _packed(np.rint(table_hkl * subdivide).astype(np.int64))
    order = np.argsort(table_keys)
    sorted_keys = table_keys[order]
    position = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    found = sorted_keys[position] == keys
    grids = {
        column: np.where(
            found, table[column].to_numpy(np.float64)[order][position], np.nan
        ).reshape(h.shape)
        for column in columns
    }
    return axes, grids


def write_map_nexus(path, axes, grid, column, attrs=None):
    """Write the map as NXdata /entry/<column> with axes h, k, l."""
    with open_nexus_for_writing(path) as handle:
        handle.attrs["default"] = "entry"
        handle["entry"].attrs["default"] = column
        group = handle["entry"].create_group(column)
        group.attrs["NX_class"] = "NXdata"
        group.attrs["signal"] = column
        group.attrs["axes"] = np.array(["h", "k", "l"], dtype=h5py.string_dtype())
        for index, name in enumerate("hkl"):
            group.attrs[f"{name}_indices"] = index
            group.create_dataset(name, data=axes[index])
        for key, value in (attrs or {}).items():
            group.attrs[key] = value
        group.create_dataset(
            column,
            data=grid.astype(np.float32),
            chunks=True,
            compression="gzip",
            compression_opts=1,
        )


def write_map_ccp4(path, axes, grid, subdivide, title):
    """Write the map as CCP4/MRC (see the module docstring for the "cell")."""
    from cctbx import crystal, sgtbx, uctbx
    from iotbx import mrcfile
    from scitbx.array_family import flex

    shape = grid.shape
    cell = uctbx.unit_cell(
        tuple(n / s for n, s in zip(shape, subdivide)) + (90.0, 90.0, 90.0)
    )
    symmetry = crystal.symmetry(
        unit_cell=cell, space_group=sgtbx.space_group_info("P 1").group()
    )
    # Empty voxels as the map's mean, since CCP4 maps have no NaN convention.
    filled = np.where(np.isfinite(grid), grid, np.nanmean(grid)).astype(np.float64)
    data = flex.double(np.ascontiguousarray(filled).ravel())
    data.reshape(flex.grid(shape))
    origin = [int(round(a[0] * s)) for a, s in zip(axes, subdivide)]
    mrcfile.write_ccp4_map(
        file_name=str(path),
        crystal_symmetry=symmetry,
        map_data=data,
        labels=flex.std_string([title[:80]]),
        unit_cell_grid=shape,
        origin_shift_grid_units=origin,
        verbose=False,
    )


@dataclasses.dataclass
class MapResult:
    """What `do_map` made: the grid, its h, k, l axes (r.l.u.), the column, subdivide."""

    axes: list
    grid: np.ndarray
    column: str
    subdivide: np.ndarray

    def summary(self):
        """The key results for a program's JSON summary."""
        return {
            "shape": [len(a) for a in self.axes],
            "filled_fraction": float(np.isfinite(self.grid).mean()),
        }


def do_map(table, space_group, params, name="the table"):
    """A 3-D map of a voxel table over limits in r.l.u. (dials.diffuse.map).

    Parameters
    ----------
    table : Table
        A merged (or corrected) table, `hkl_table`, with its subdivide attribute.
    space_group : cctbx space_group
        Whose Laue group expands the asymmetric unit.
    params : PHIL extract with the parameters of `phil_scope`
    name : str
        The table's file name, for messages.

    Returns
    -------
    MapResult
    """
    subdivide = np.asarray(table.attrs.get("subdivide", (1, 1, 1)), dtype=np.int64)
    frame = table.to_frame()
    if params.column not in frame:
        raise DataError(f"{name}: no column '{params.column}'")
    hkl = frame[["h", "k", "l"]].to_numpy(np.float64)
    limits = params.limits or default_limits(hkl, space_group)
    axes, grid = grid_from_table(
        frame, params.column, subdivide, space_group, limits, params.symmetry
    )
    logger.info(
        "Map of %s: %s points (h %g..%g, k %g..%g, l %g..%g), %.1f%% filled",
        params.column,
        "x".join(str(len(a)) for a in axes),
        axes[0][0],
        axes[0][-1],
        axes[1][0],
        axes[1][-1],
        axes[2][0],
        axes[2][-1],
        100 * float(np.isfinite(grid).mean()),
    )
    return MapResult(axes, grid, params.column, subdivide)
