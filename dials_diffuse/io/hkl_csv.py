"""The merged diffuse map as a plain CSV table, and reading it back.

One row per voxel of the asymmetric unit with a finite intensity, columns:
h, k, l (fractional, r.l.u. of the crystal's cell), H, K, L (the integer
indices of the supercell, cell × subdivide, as in the MTZ), intensity,
intensity_error, count (observations merged) and s = 1/d (Å⁻¹) when the
table has it. A header line, comma separated, '.' decimal point: every
spreadsheet, pandas and R read it.
"""

import numpy as np
import pandas as pd

from dials_diffuse.algorithms.diffuse.supercell import supercell_indices
from dials_diffuse.util.errors import DataError

COLUMNS = ["h", "k", "l", "H", "K", "L", "intensity", "intensity_error", "count"]


def write_hkl_csv(path, merged, subdivide):
    """Write a merged voxel table (pandas) as CSV; return the number of rows."""
    merged = merged[np.isfinite(merged["intensity"].to_numpy(np.float64))]
    if merged.empty:
        raise DataError(f"{path}: no voxel with a finite intensity to write")
    hkl = merged[["h", "k", "l"]].to_numpy(np.float64)
    indices = supercell_indices(hkl, subdivide, name=str(path))
    table = pd.DataFrame(
        {
            "h": hkl[:, 0],
            "k": hkl[:, 1],
            "l": hkl[:, 2],
            "H": indices[:, 0],
            "K": indices[:, 1],
            "L": indices[:, 2],
            "intensity": merged["intensity"].to_numpy(np.float64),
            "intensity_error": merged["intensity_error"].to_numpy(np.float64),
            "count": merged["count"].to_numpy(np.int64),
        }
    )
    if "s" in merged:
        table["s"] = merged["s"].to_numpy(np.float64)
    table.to_csv(path, index=False, float_format="%.8g")
    return len(table)


def read_hkl_csv(path):
    """A CSV of `write_hkl_csv` as a DataFrame; `DataError` naming the file if not."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{path}: not a CSV table ({error})") from error
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} column")
    return table
