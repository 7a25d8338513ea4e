"""The scaling model file ``scale.nxs``, written by scale and read by merge.

One table (`dials_diffuse.io.tables`) per term of the model, one row per node::

    /entry/scaling_model      phi, scale               b(phi)
    /entry/offset_model       s, phi, offset           c(s, phi)
    /entry/detector_model     ix, iy, scale            d(ix, iy)
    /entry/absorption_model   ix, iy, phi, scale       a(ix, iy, phi)

Coordinates are the node positions (phi in degrees, s = 1/d in inverse
Angstrom, ix/iy in pixels), in C order of the node grid; on a multi-panel
detector the detector and absorption tables have a last ``panel`` column
(one node per panel, 0, 1, ...: d and a per panel); each group carries
the grid's ``shape``, the table it was refined from (``table``) and which
model scale wrote (``model_used``: "as refined" or the fallback its
validation chose, `ScaleModel.model_used`). The older b(phi)-only files
(one ``scaling_model`` table) read the same way.
"""

import numpy as np

from dials_diffuse.algorithms.diffuse.scale import PANEL, TERMS, GridTerm, ScaleModel
from dials_diffuse.io.tables import Table, load_table, table_names, write_tables
from dials_diffuse.util.errors import DataError

#: Table name -> term name.
MODEL_TABLES = {table: name for name, (table, _, _) in TERMS.items()}


def term_to_table(term, attrs=None):
    """Table `<name>_model` of one GridTerm: coordinate columns, then the value."""
    table_name, _, value_column = TERMS[term.name]
    mesh = np.meshgrid(*term.axes.values(), indexing="ij")
    columns = {c: m.ravel() for c, m in zip(term.coordinates, mesh)}
    columns[value_column] = term.values.ravel()
    return Table(table_name, columns, {"shape": term.shape, **(attrs or {})})


def term_from_table(table):
    """The GridTerm stored by `term_to_table`."""
    name = MODEL_TABLES[table.name]
    _, coordinates, value_column = TERMS[name]
    if PANEL in table.columns:
        coordinates = (*coordinates, PANEL)
    axes = {c: np.unique(np.asarray(table[c], np.float64)) for c in coordinates}
    shape = tuple(len(axis) for axis in axes.values())
    values = np.asarray(table[value_column], np.float64).reshape(shape)
    return GridTerm(name, axes, values)


def write_scale_model(path, model, attrs=None):
    """Write a ScaleModel as a new scale.nxs at `path` (`attrs` on every table)."""
    attrs = {"model_used": model.model_used, **(attrs or {})}
    write_tables(path, [term_to_table(term, attrs) for term in model.terms.values()])


def read_scale_model(path, which=None):
    """The ScaleModel of a scale.nxs (only the terms named in `which`, if given).

    Raises
    ------
    DataError
        Naming the file, when it holds no model table (and `which` is None).
    """
    terms = {}
    model_used = "as refined"
    for table_name in table_names(path):
        name = MODEL_TABLES.get(table_name)
        if name and (which is None or name in which):
            table = load_table(path, table_name, finite=True)
            terms[name] = term_from_table(table)
            model_used = table.attrs.get("model_used", model_used)
    if not terms and which is None:
        raise DataError(f"{path}: no scaling model (/entry/*_model) in it")
    return ScaleModel(terms, model_used=str(model_used))


def is_scale_model_file(path):
    """True if the file holds at least one model table."""
    return any(name in MODEL_TABLES for name in table_names(path))
