"""The merged diffuse map as an MTZ file (iotbx.mtz), and reading it back.

Columns H, K, L (the supercell's integer indices, see
`dials_diffuse.algorithms.diffuse.supercell`), I and SIGI (the merged
intensity and its error, types J and Q), COUNT (the observations merged into
the voxel, type I), and with a split merge I_HALF1, SIGI_HALF1, I_HALF2,
SIGI_HALF2 (the halves; missing, NaN, where a half has no observation). Cell: the supercell (cell × subdivide); space group: the
crystal's point group without translations, or P 1 with the map expanded
when the subdivide breaks the symmetry. Voxels without a finite intensity
are left out. The file's title and history say how to get back to the
crystal's fractional indices (h = H / n_a, ...).
"""

import numpy as np
import pandas as pd

from dials_diffuse.algorithms.diffuse.supercell import (
    expand_to_p1,
    supercell_indices,
    supercell_symmetry,
)
from dials_diffuse.util.errors import DataError


def _miller_set(symmetry, indices):
    from cctbx import miller
    from cctbx.array_family import flex

    return miller.set(
        symmetry,
        flex.miller_index(
            flex.int(indices[:, 0].astype(np.int32)),
            flex.int(indices[:, 1].astype(np.int32)),
            flex.int(indices[:, 2].astype(np.int32)),
        ),
        anomalous_flag=False,
    )


def write_mtz(path, merged, unit_cell, space_group, subdivide, wavelength=None):
    """Write a merged voxel table (pandas: h, k, l, intensity, intensity_error,
    count) as MTZ on the supercell.

    Parameters
    ----------
    path : str or Path
    merged : DataFrame
        Fractional h, k, l (r.l.u. of the crystal, asymmetric unit of its
        Laue group) on the 1/subdivide grid.
    unit_cell : 6 floats
        The crystal's a, b, c (Å), alpha, beta, gamma (degrees).
    space_group : cctbx sgtbx.space_group
        The crystal's.
    subdivide : 3 ints
    wavelength : float, optional
        Å, recorded in the dataset.

    Returns
    -------
    dict
        ``space_group`` (the file's, as text), ``supercell`` (6 floats),
        ``reflections`` (rows written), ``expanded`` (True if written in P 1).
    """
    from cctbx import miller
    from cctbx.array_family import flex

    merged = merged[np.isfinite(merged["intensity"].to_numpy(np.float64))]
    if merged.empty:
        raise DataError(f"{path}: no voxel with a finite intensity to write")
    symmetry, expand = supercell_symmetry(unit_cell, space_group, subdivide)
    hkl = merged[["h", "k", "l"]].to_numpy(np.float64)
    rows = np.arange(len(merged))
    if expand:
        hkl, rows = expand_to_p1(hkl, space_group)
    indices = supercell_indices(hkl, subdivide, name=str(path))
    intensity = merged["intensity"].to_numpy(np.float64)[rows]
    sigma = merged["intensity_error"].to_numpy(np.float64)[rows]
    count = merged["count"].to_numpy(np.int64)[rows]
    # The file's own asymmetric unit (cctbx's convention for the group).
    miller_set = _miller_set(symmetry, indices)
    asu = miller_set.map_to_asu()
    if not asu.is_unique_set_under_symmetry():
        raise DataError(
            f"{path}: two voxels of the table map to the same index of "
            f"{symmetry.space_group_info()}: not an asymmetric-unit table"
        )
    intensities = miller.array(
        asu, data=flex.double(intensity), sigmas=flex.double(sigma)
    ).set_observation_type_xray_intensity()
    dataset = intensities.as_mtz_dataset(
        column_root_label="I",
        wavelength=float(wavelength) if wavelength else None,
    )
    dataset.add_miller_array(
        miller.array(asu, data=flex.int(count.astype(np.int32))),
        column_root_label="COUNT",
    )
    for half in (1, 2):
        # The split halves of merge (CC1/2 for other programs); missing
        # where a half has no observation.
        if f"intensity_{half}" in merged:
            dataset.add_miller_array(
                miller.array(
                    asu,
                    data=flex.double(
                        merged[f"intensity_{half}"].to_numpy(np.float64)[rows]
                    ),
                    sigmas=flex.double(
                        merged[f"intensity_error_{half}"].to_numpy(np.float64)[rows]
                    ),
                ).set_observation_type_xray_intensity(),
                column_root_label=f"I_HALF{half}",
            )
    mtz = dataset.mtz_object()
    na, nb, nc = (int(v) for v in subdivide)
    a, b, c, alpha, beta, gamma = (float(v) for v in unit_cell)
    mtz.set_title(
        f"dials.diffuse merged diffuse map on the supercell cell x {na},{nb},{nc}"
    )
    for line in (
        f"crystal space group {space_group.info()}",
        f"crystal cell {a:.4f} {b:.4f} {c:.4f} {alpha:.3f} {beta:.3f} {gamma:.3f}",
        f"dials.diffuse: voxel (h,k,l) of the crystal = (H/{na}, K/{nb}, L/{nc})",
    ):
        mtz.add_history(line)
    mtz.write(file_name=str(path))
    return {
        "space_group": str(symmetry.space_group_info()),
        "supercell": list(symmetry.unit_cell().parameters()),
        "reflections": int(asu.size()),
        "expanded": bool(expand),
    }


def read_mtz(path):
    """An MTZ of `write_mtz` as a DataFrame (H, K, L, I, SIGI, COUNT).

    attrs: ``unit_cell`` (the file's cell, Å and degrees) and
    ``space_group`` (text). Raises `DataError` naming the file if it is not
    such an MTZ.
    """
    import iotbx.mtz

    try:
        mtz = iotbx.mtz.object(file_name=str(path))
    except (RuntimeError, OSError) as error:
        raise DataError(f"{path}: not an MTZ file ({error})") from error
    arrays = {array.info().labels[0]: array for array in mtz.as_miller_arrays()}
    if "I" not in arrays or "COUNT" not in arrays:
        raise DataError(f"{path}: no I, SIGI and COUNT columns")
    intensities = arrays["I"]
    count = arrays["COUNT"].data().as_numpy_array()
    indices = np.array(intensities.indices(), dtype=np.int64).reshape(-1, 3)
    frame = pd.DataFrame(
        {
            "H": indices[:, 0],
            "K": indices[:, 1],
            "L": indices[:, 2],
            "I": intensities.data().as_numpy_array(),
            "SIGI": intensities.sigmas().as_numpy_array(),
            "COUNT": count.astype(np.int64),
        }
    )
    frame.attrs["unit_cell"] = list(intensities.unit_cell().parameters())
    frame.attrs["space_group"] = str(intensities.space_group_info())
    return frame
