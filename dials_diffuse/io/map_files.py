"""Reciprocal-space maps in and out: NeXus, MTZ, CCP4/MRC, CSV.

`read_map(path, ...)` returns a `ReciprocalMap` from any of

- a voxel table of dials-diffuse (``merged.nxs`` of merge, ``corrected.nxs``;
  ``/entry/hkl_table``): the asymmetric unit expanded by the Laue group onto
  the grid of every symmetry mate (as ``dials.diffuse.map``), with the
  errors and the split halves (``intensity_1``, ``intensity_2``) when the
  table has them;
- a NeXus map: an NXdata group with a 3-D signal and h, k, l axes
  (``map.nxs`` of map, mdx2's ``map.nxs``, our ``map_analysis.nxs``): the
  group named as the column if there is one (``intensity``: the map, not
  its anisotropic part), else the one ``/entry@default`` names, else the
  first found;
- an MTZ file (iotbx.mtz) in mdx2's ``to_mtz`` convention: Miller indices
  multiplied by subdivide and the cell multiplied by subdivide (a
  supercell); subdivide is the ratio of the MTZ cell to the crystal's cell
  when that is known, else the `subdivide` parameter (default 1). The
  asymmetric unit is expanded by the MTZ's space group;
- a CCP4/MRC map (iotbx.mrcfile) in the convention of ``dials.diffuse.map``:
  the cell is the box in r.l.u. (subdivide = grid points / cell length) and
  the origin the first grid point times subdivide. CCP4 maps cannot mark
  unmeasured voxels (dials.diffuse.map writes the map's mean there): every
  voxel counts as measured, and a warning says so.

Writers: `write_map_nexus` and `write_map_ccp4` (the map of
``dials.diffuse.map``), `write_map_layers` (several NXdata groups in one NeXus file,
NeXpy opens each), `write_real_space_nexus` and `write_real_space_ccp4`
(the 3D-DeltaPDF grid in Angstrom, with the supercell as the CCP4 cell).
"""

import logging
from pathlib import Path

import h5py
import numpy as np

from dials_diffuse.algorithms.maps.grid import ReciprocalMap
from dials_diffuse.io.tables import open_nexus_for_writing
from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)

MAP_SUFFIXES = (".nxs", ".h5", ".hdf5", ".nx5", ".mtz", ".ccp4", ".map", ".mrc")

input_phil_str = """
input {
  column = intensity
    .type = str
    .help = "The column of a voxel table (merged.nxs), or the MTZ column label,"
            "to map. NeXus and CCP4 maps give their own signal."
  unit_cell = None
    .type = floats(size=6, value_min=0)
    .help = "The crystal's unit cell (a,b,c,alpha,beta,gamma in Angstrom and"
            "degrees) when no .expt is given and the map does not record it."
  space_group = None
    .type = str
    .help = "The space group when no .expt is given and the map does not"
            "record it."
  subdivide = None
    .type = ints(size=3, value_min=1)
    .help = "Grid points per r.l.u. of an MTZ map when it cannot be found from"
            "the MTZ cell and the crystal's cell."
}
"""


def read_map_as_given(path, input_params, crystal=None):
    """`read_map` with the `input` scope of `input_phil_str` (`input_params`).

    The cell and space group are the parameters' where given, else those of
    `crystal` (a dxtbx crystal, e.g. of the refined .expt; None: the map's own).
    """
    unit_cell = input_params.unit_cell
    space_group = input_params.space_group
    if crystal is not None:
        unit_cell = unit_cell or crystal.get_unit_cell().parameters()
        space_group = space_group or str(crystal.get_space_group().info())
    return read_map(
        path,
        column=input_params.column,
        unit_cell=unit_cell,
        space_group=space_group,
        subdivide=input_params.subdivide,
    )


def is_map_file(path):
    """True for a file name that `read_map` may read (by suffix)."""
    return Path(path).suffix.lower() in MAP_SUFFIXES


def read_map(
    path, column="intensity", unit_cell=None, space_group=None, subdivide=None
):
    """Read a reciprocal-space map (see the module for the formats).

    Parameters
    ----------
    path : str or Path
    column : str
        The voxel-table column or MTZ label to map.
    unit_cell, space_group : optional
        Used where the file does not record them (a tuple of 6 floats and a
        symbol); the file's own values win otherwise.
    subdivide : sequence of 3 ints, optional
        For MTZ files without a known crystal cell.

    Raises
    ------
    DataError
        Naming the file, for a file that is not a map it understands.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".mtz":
        recmap = _read_mtz(path, column, unit_cell, subdivide)
    elif suffix in (".ccp4", ".map", ".mrc"):
        recmap = _read_ccp4(path)
    else:
        recmap = _read_nexus(path, column, space_group)
    if recmap.unit_cell is None and unit_cell is not None:
        recmap.unit_cell = tuple(float(v) for v in unit_cell)
    if recmap.space_group is None and space_group is not None:
        recmap.space_group = str(space_group)
    return recmap


def _text(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [_text(v) for v in value]
    return value


def _read_nexus(path, column, space_group):
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path}: not a readable HDF5 file ({error})") from error
    with handle:
        if isinstance(handle.get("entry/hkl_table"), h5py.Group):
            return _read_table(path, column, space_group)
        group = _map_group(handle, column)
        if group is None:
            raise DataError(
                f"{path}: neither a voxel table (/entry/hkl_table) nor an NXdata "
                "map with h, k, l axes"
            )
        return _read_nxdata(path, group)


def _map_group(handle, preferred):
    """The NXdata group of a 3-D map with h, k, l axes.

    The group named `preferred` if there is one, else the default one, else
    the first found.
    """
    entry = handle.get("entry")
    if not isinstance(entry, h5py.Group):
        return None
    names = list(entry)
    default = _text(entry.attrs.get("default"))
    if default in names:
        names.remove(default)
        names.insert(0, default)
    if preferred in names:
        names.remove(preferred)
        names.insert(0, preferred)
    for name in names:
        group = entry[name]
        if not isinstance(group, h5py.Group) or "signal" not in group.attrs:
            continue
        axes = _text(group.attrs.get("axes"))
        if isinstance(axes, str):
            axes = axes.replace(",", " ").split()
        if axes is None or len(axes) != 3 or [a.lower() for a in axes] != list("hkl"):
            continue
        signal = group.get(_text(group.attrs["signal"]))
        if isinstance(signal, h5py.Dataset) and signal.ndim == 3:
            return group
    return None


def _read_nxdata(path, group):
    signal = _text(group.attrs["signal"])
    axes_names = _text(group.attrs["axes"])
    if isinstance(axes_names, str):
        axes_names = axes_names.replace(",", " ").split()
    axes = [group[name][()].astype(np.float64) for name in axes_names]
    layers = {signal: group[signal][()].astype(np.float64)}
    # Companion layers written beside the signal (our map_analysis.nxs).
    for name in ("intensity_error", "intensity_1", "intensity_2"):
        if (
            name != signal
            and name in group
            and group[name].shape == layers[signal].shape
        ):
            layers[name] = group[name][()].astype(np.float64)
    subdivide = group.attrs.get("subdivide")
    if subdivide is None:
        steps = [np.diff(a).mean() if len(a) > 1 else 1.0 for a in axes]
        subdivide = [int(round(1.0 / step)) for step in steps]
    unit_cell = group.attrs.get("unit_cell")
    space_group = _text(group.attrs.get("space_group"))
    return ReciprocalMap(
        axes=axes,
        layers=layers,
        subdivide=np.asarray(subdivide, dtype=np.int64),
        unit_cell=tuple(float(v) for v in unit_cell) if unit_cell is not None else None,
        space_group=space_group,
        signal=signal,
        source=str(path),
    )


def _read_table(path, column, space_group):
    from dials_diffuse.io.tables import load_table

    table = load_table(path, "hkl_table")
    frame = table.to_frame()
    if column not in frame:
        raise DataError(f"{path}: the voxel table has no column '{column}'")
    symbol = table.attrs.get("space_group") or (
        str(space_group) if space_group is not None else None
    )
    if symbol is None:
        raise DataError(
            f"{path}: no space group recorded: give the refined .expt or space_group="
        )
    from cctbx import sgtbx

    group = sgtbx.space_group_info(str(symbol)).group()
    subdivide = np.asarray(table.attrs.get("subdivide", (1, 1, 1)), dtype=np.int64)
    return _table_map(frame, column, subdivide, group, str(symbol), str(path))


def _table_map(frame, column, subdivide, group, symbol, source, unit_cell=None):
    """Expand an asymmetric-unit table onto the grid of all symmetry mates."""
    from dials_diffuse.algorithms.diffuse.maps import default_limits, grids_from_table

    hkl = frame[["h", "k", "l"]].to_numpy(np.float64)
    limits = default_limits(hkl, group)
    names = [column]
    if column == "intensity":
        names += ["intensity_error", "intensity_1", "intensity_2"]
    names = [name for name in names if name in frame]
    axes, layers = grids_from_table(frame, names, subdivide, group, limits)
    return ReciprocalMap(
        axes=axes,
        layers=layers,
        subdivide=subdivide,
        unit_cell=unit_cell,
        space_group=symbol,
        signal=column,
        source=source,
    )


def _read_mtz(path, column, unit_cell, subdivide):
    import pandas as pd
    from iotbx import mtz

    try:
        mtz_object = mtz.object(str(path))
    except Exception as error:  # iotbx raises RuntimeError and others
        raise DataError(f"{path}: not a readable MTZ file ({error})") from error
    arrays = {
        array.info().labels[0]: array
        for array in mtz_object.as_miller_arrays()
        if array.is_real_array()
    }
    label = column if column in arrays else None
    if label is None:
        for candidate in ("IMEAN", "I", "intensity", "FP", "F"):
            if candidate in arrays:
                label = candidate
                break
    if label is None:
        raise DataError(
            f"{path}: no column '{column}' (real columns: {', '.join(arrays) or 'none'})"
        )
    array = arrays[label]
    mtz_cell = array.unit_cell().parameters()
    if unit_cell is not None:
        ratio = np.array(mtz_cell[:3]) / np.array(unit_cell[:3])
        subdivide = np.rint(ratio).astype(np.int64)
        if np.any(subdivide < 1) or np.any(np.abs(ratio - subdivide) > 1e-3 * ratio):
            raise DataError(
                f"{path}: the MTZ cell {mtz_cell[:3]} is not a whole multiple of the "
                f"crystal's cell {tuple(unit_cell[:3])}"
            )
    subdivide = np.asarray((1, 1, 1) if subdivide is None else subdivide, np.int64)
    crystal_cell = tuple(
        [mtz_cell[i] / subdivide[i] for i in range(3)] + list(mtz_cell[3:])
    )
    indices = np.array(array.indices(), dtype=np.float64).reshape(-1, 3)
    data = array.data().as_numpy_array().astype(np.float64)
    frame = pd.DataFrame(
        {
            "h": indices[:, 0] / subdivide[0],
            "k": indices[:, 1] / subdivide[1],
            "l": indices[:, 2] / subdivide[2],
            "intensity": data,
        }
    )
    if array.sigmas() is not None:
        frame["intensity_error"] = array.sigmas().as_numpy_array()
    group = array.space_group()
    return _table_map(
        frame,
        "intensity",
        subdivide,
        group,
        str(array.space_group_info()),
        str(path),
        unit_cell=crystal_cell,
    )


def _read_ccp4(path):
    from iotbx import mrcfile

    try:
        reader = mrcfile.map_reader(file_name=str(path))
    except Exception as error:  # iotbx raises Sorry, RuntimeError, ...
        raise DataError(f"{path}: not a readable CCP4/MRC map ({error})") from error
    data = reader.map_data()
    values = data.as_numpy_array().astype(np.float64)
    origin = np.array(data.origin())
    grid = np.array(reader.unit_cell_grid, dtype=np.float64)
    cell = np.array(reader.unit_cell_parameters[:3], dtype=np.float64)
    ratio = grid / cell
    subdivide = np.rint(ratio).astype(np.int64)
    if np.any(subdivide < 1) or np.any(np.abs(ratio - subdivide) > 1e-3 * ratio):
        raise DataError(
            f"{path}: not a reciprocal-space map in dials.diffuse.map's convention "
            f"(grid {grid.astype(int).tolist()} over a cell of {cell.tolist()} r.l.u.)"
        )
    axes = [(origin[i] + np.arange(values.shape[i])) / subdivide[i] for i in range(3)]
    return ReciprocalMap(
        axes=axes,
        layers={"intensity": values},
        subdivide=subdivide,
        source=str(path),
    )


def _write_nxdata(entry, name, signal, data, axes, axis_names, attrs=None, units=None):
    group = entry.create_group(name)
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = signal
    group.attrs["axes"] = np.array(axis_names, dtype=h5py.string_dtype())
    for index, (axis_name, axis) in enumerate(zip(axis_names, axes)):
        group.attrs[f"{axis_name}_indices"] = index
        dataset = group.create_dataset(axis_name, data=np.asarray(axis))
        if units:
            dataset.attrs["units"] = units
    for key, value in (attrs or {}).items():
        if value is not None:
            group.attrs[key] = value
    group.create_dataset(
        signal,
        data=np.asarray(data, dtype=np.float32),
        chunks=True,
        compression="gzip",
        compression_opts=1,
        shuffle=True,
    )
    return group


def map_attributes(recmap):
    """The attributes that let `read_map` rebuild a map's metadata."""
    return {
        "subdivide": recmap.subdivide,
        "unit_cell": np.asarray(recmap.unit_cell) if recmap.unit_cell else None,
        "space_group": recmap.space_group,
    }


def write_map_layers(path, recmap, layers, default, tables=()):
    """Write layers of a map as NXdata groups /entry/<layer> (axes h, k, l).

    Parameters
    ----------
    recmap : ReciprocalMap
    layers : list of str
        Layer names, each its own NXdata group (NeXpy plots each).
    default : str
        The group NeXpy opens first (``/entry@default``).
    tables : sequence of `dials_diffuse.io.tables.Table`
        Written beside the maps (e.g. per-shell statistics).
    """
    from dials_diffuse.io.tables import write_table_group

    with open_nexus_for_writing(path) as handle:
        handle.attrs["default"] = "entry"
        entry = handle["entry"]
        entry.attrs["default"] = default
        for name in layers:
            _write_nxdata(
                entry,
                name,
                name,
                recmap.layers[name],
                recmap.axes,
                ["h", "k", "l"],
                map_attributes(recmap),
            )
        for table in tables:
            write_table_group(entry, table)


def write_real_space_nexus(path, pdf, tables=()):
    """Write a real-space grid (the 3D-DeltaPDF) as NXdata /entry/delta_pdf.

    Axes x, y, z in Angstrom along a, b, c (attribute ``units``); attributes
    ``unit_cell`` (the crystal's cell) and ``supercell`` (the periodic box of
    the grid, Angstrom and degrees).
    """
    from dials_diffuse.io.tables import write_table_group

    with open_nexus_for_writing(path) as handle:
        handle.attrs["default"] = "entry"
        entry = handle["entry"]
        entry.attrs["default"] = "delta_pdf"
        _write_nxdata(
            entry,
            "delta_pdf",
            "delta_pdf",
            pdf.values,
            pdf.axes_angstrom,
            ["x", "y", "z"],
            {
                "unit_cell": np.asarray(pdf.unit_cell),
                "supercell": np.asarray(pdf.supercell),
                "space_group": pdf.space_group,
            },
            units="Angstrom",
        )
        for table in tables:
            write_table_group(entry, table)


def write_real_space_ccp4(path, pdf, title):
    """Write the real-space grid as a CCP4/MRC map (iotbx).

    The cell is the supercell (the grid's periodic box, Angstrom and the
    crystal's angles, space group P1) sampled by the grid's points, and the
    origin the grid index of the first point (-n/2), so that viewers place
    the origin of the Patterson at (0, 0, 0).
    """
    from cctbx import crystal, sgtbx, uctbx
    from iotbx import mrcfile
    from scitbx.array_family import flex

    shape = pdf.values.shape
    symmetry = crystal.symmetry(
        unit_cell=uctbx.unit_cell(tuple(float(v) for v in pdf.supercell)),
        space_group=sgtbx.space_group_info("P 1").group(),
    )
    data = flex.double(np.ascontiguousarray(pdf.values, dtype=np.float64).ravel())
    data.reshape(flex.grid(shape))
    mrcfile.write_ccp4_map(
        file_name=str(path),
        crystal_symmetry=symmetry,
        map_data=data,
        labels=flex.std_string([title[:80]]),
        unit_cell_grid=shape,
        origin_shift_grid_units=tuple(int(v) for v in pdf.origin_index),
        verbose=False,
    )


def read_real_space_ccp4(path):
    """A CCP4 map's values, cell, grid and origin (for checks of what we wrote).

    Returns
    -------
    values : ndarray
    unit_cell : tuple of 6 floats
    unit_cell_grid : tuple of 3 ints
    origin : tuple of 3 ints
    """
    from iotbx import mrcfile

    try:
        reader = mrcfile.map_reader(file_name=str(path))
    except Exception as error:  # iotbx raises Sorry, RuntimeError, ...
        raise DataError(f"{path}: not a readable CCP4/MRC map ({error})") from error
    data = reader.map_data()
    return (
        data.as_numpy_array(),
        tuple(reader.unit_cell_parameters),
        tuple(reader.unit_cell_grid),
        tuple(data.origin()),
    )


def write_map_nexus(path, axes, grid, column, attrs=None):
    """Write the map of dials.diffuse.map as NXdata /entry/<column> with axes h, k, l
    (r.l.u.), float32, chunked, gzip; NeXpy shows it."""
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
    """Write the map as CCP4/MRC.

    The CCP4 "cell" is the box in reciprocal lattice units (lengths = grid
    points / subdivide, 90 degree angles, space group P1), so that map
    viewers show the grid with the right proportions in r.l.u. (not in
    inverse Angstrom); the origin is the first grid point times subdivide.
    Empty (NaN) voxels are written as the map's mean.
    """
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
