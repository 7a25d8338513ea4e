"""Tables as NeXus/HDF5 files: `/entry/<name>`, one 1-D dataset per column.

The layout, readable with h5py, NeXpy or nexusformat::

    /                    attrs: creator = "dials-diffuse <version>", NX_class = NXroot
    /entry               NXentry
    /entry/<name>        NXdata-like group; attrs: NX_class = NXdata,
                         columns = column names in order, signal = first data
                         column, plus table metadata (e.g. subdivide)
    /entry/<name>/<col>  1-D dataset, gzip-compressed, same length for all

`load_table(path, name)` returns a `Table`; `table.to_frame()` gives a pandas
DataFrame (``loadobj(...).to_frame()`` in mdx2's tutorial), e.g.::

    from dials_diffuse.io.tables import load_table
    df = load_table("integrated.nxs").to_frame().set_index(["h", "k", "l"])
"""

import dataclasses

import h5py
import numpy as np

import dials_diffuse
from dials_diffuse.util.errors import DataError

CREATOR = f"dials-diffuse {dials_diffuse.__version__}"


@dataclasses.dataclass
class Table:
    """Named columns of equal length, with metadata.

    Attributes
    ----------
    name : str
        Group name under /entry (e.g. "hkl_table", "peaks").
    columns : dict of str -> ndarray
        1-D arrays of equal length, in order.
    attrs : dict
        Metadata stored as attributes of the group (numbers, strings, arrays).
    """

    name: str
    columns: dict
    attrs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"table {self.name}: columns differ in length {lengths}")

    def __len__(self):
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, column):
        return self.columns[column]

    def to_frame(self):
        """The table as a pandas DataFrame (one column per table column)."""
        import pandas as pd  # only here: programs that never ask do not load pandas

        return pd.DataFrame(self.columns)

    @classmethod
    def from_frame(cls, name, frame, attrs=None):
        """A Table from a DataFrame (its index is dropped: reset it first to keep it)."""
        columns = {str(c): frame[c].to_numpy() for c in frame.columns}
        return cls(name, columns, dict(attrs or {}))


def open_nexus_for_writing(path):
    """Create an HDF5 file with our root attributes and an /entry group."""
    handle = h5py.File(path, "w")
    handle.attrs["creator"] = CREATOR
    handle.attrs["NX_class"] = "NXroot"
    entry = handle.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    return handle


def write_table_group(entry, table):
    """Write `table` as a group of `entry` (an open h5py group)."""
    group = entry.create_group(table.name)
    group.attrs["NX_class"] = "NXdata"
    names = list(table.columns)
    group.attrs["columns"] = np.array(names, dtype=h5py.string_dtype())
    if names:
        group.attrs["signal"] = names[-1]
    for key, value in table.attrs.items():
        group.attrs[key] = value
    for column, values in table.columns.items():
        values = np.asarray(values)
        group.create_dataset(
            column,
            data=values,
            compression="gzip" if values.size > 1024 else None,
            shuffle=values.size > 1024,
        )


def write_tables(path, tables):
    """Write one or more tables into a new file at `path`."""
    with open_nexus_for_writing(path) as handle:
        for table in tables:
            write_table_group(handle["entry"], table)


def _attribute_value(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in value]
    return value


def load_table(path, name="hkl_table", finite=False, columns=None):
    """Load `/entry/<name>` of a dials-diffuse table file.

    Parameters
    ----------
    path : str or Path
    name : str
        The table's group under /entry.
    columns : collection of str, optional
        Load only these columns (those the table has; the caller checks
        for missing ones), e.g. to hold fewer bytes per row of a large
        table. None: every column.
    finite : bool or sequence of str
        Columns whose values must all be finite (the non-finite policy:
        NaN or Inf in a table a program computes with is an error naming the
        file): True for every column (programs reading counts, exposures,
        intensities or model parameters), a list for those columns only,
        False (the default, for looking at a table) for none: a merged
        table's half-set columns are NaN where a half is empty.

    Raises
    ------
    DataError
        Naming the file: it cannot be read, has no such table, a column is
        not a 1-D column of numbers, columns differ in length, or a column
        that must be finite holds NaN or Inf.
    """
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path}: not a readable HDF5 file ({error})") from error
    with handle:
        group = handle.get(f"entry/{name}")
        if not isinstance(group, h5py.Group):
            raise DataError(f"{path}: has no table /entry/{name}")
        attrs = {k: _attribute_value(v) for k, v in group.attrs.items()}
        order = attrs.pop("columns", None) or [
            k for k in group if isinstance(group[k], h5py.Dataset)
        ]
        for key in ("NX_class", "signal"):
            attrs.pop(key, None)
        if columns is not None:
            order = [column for column in order if column in columns]
        try:
            columns = {column: group[column][()] for column in order}
        except (KeyError, OSError, TypeError, ValueError) as error:
            raise DataError(
                f"{path}: table /entry/{name} is damaged ({error})"
            ) from error
    _check_columns(path, name, columns, finite)
    return Table(name, columns, attrs)


def _check_columns(path, name, columns, finite):
    """DataError naming the file for columns the table loader cannot accept."""
    where = f"{path}: table /entry/{name}"
    for column, values in columns.items():
        if not isinstance(values, np.ndarray) or values.ndim != 1:
            raise DataError(f"{where}: {column} is not a 1-D column")
        if values.dtype.kind not in "biuf":
            raise DataError(f"{where}: {column} holds {values.dtype}, not numbers")
    lengths = {column: len(values) for column, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(
            f"{where}: columns differ in length "
            f"({', '.join(f'{c} {n}' for c, n in lengths.items())})"
        )
    checked = columns if finite is True else (finite or ())
    for column in checked:
        values = columns.get(column)
        if values is None or values.dtype.kind != "f":
            continue
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise DataError(
                f"{where}: {column} holds {bad} non-finite value(s) (NaN or Inf)"
            )


def table_names(path):
    """Names of the groups under /entry of a file."""
    with h5py.File(path, "r") as handle:
        return list(handle.get("entry", {}))
