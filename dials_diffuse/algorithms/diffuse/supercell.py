"""Fractional voxels as integer Miller indices of a supercell, for export.

A diffuse map's voxels sit at multiples of 1/subdivide reciprocal lattice
units (r.l.u.) of the crystal's cell. Reciprocal-space programs (Phenix,
Coot, gemmi, CCP4) take integer indices, so the exported map is described on
the real-space supercell a·n_a, b·n_b, c·n_c (n = subdivide, angles
unchanged): its reciprocal lattice is n times finer, and the voxel at
fractional (h, k, l) of the crystal is the integer index
(H, K, L) = (n_a h, n_b k, n_c l) of the supercell; its resolution
d = 1/|s| is the same in both descriptions.

Symmetry: the merged map is symmetric under the crystal's Laue group (the
point group with the inversion; merge averaged Friedel mates), and has
intensity at every voxel, also where the crystal's space group has
systematic absences or lattice centring. The exported group is therefore the
crystal's point group without translations (cctbx's
``build_derived_point_group``: P 2 2 2 for P 21 21 21, P 4 2 2 for
I 41 2 2), whose operators impose no absences on the supercell's indices,
with the data non-anomalous. That group acts on the supercell's integer
indices only if each rotation R keeps them integer (D R D⁻¹ integral, D =
diag(n)): always for an orthorhombic or lower crystal, and when the subdivide
is equal along axes the group mixes (correct requires that already). If it
does not, the map is expanded to P 1 and written whole.
"""

import numpy as np

from dials_diffuse.util.errors import DataError


def supercell_indices(hkl, subdivide, name="the table"):
    """Integer supercell indices (n, 3) of voxels at fractional `hkl` (r.l.u.).

    Raises `DataError` (naming `name`) if a voxel is not on the
    1/subdivide grid.
    """
    scaled = np.asarray(hkl, dtype=np.float64) * np.asarray(subdivide, np.float64)
    indices = np.rint(scaled)
    if np.any(np.abs(scaled - indices) > 1e-3):
        raise DataError(
            f"{name}: voxels off the 1/subdivide grid (subdivide "
            f"{tuple(int(n) for n in subdivide)}): not a merged voxel table"
        )
    if np.any(np.abs(indices) > 2**31 - 1):
        raise DataError(f"{name}: Miller indices too large for a reflection file")
    return indices.astype(np.int64)


def supercell_cell(unit_cell, subdivide):
    """The supercell's parameters: a·n_a, b·n_b, c·n_c (Å), angles unchanged."""
    a, b, c, alpha, beta, gamma = (float(v) for v in unit_cell)
    n = [int(v) for v in subdivide]
    return (a * n[0], b * n[1], c * n[2], alpha, beta, gamma)


def _keeps_integer(space_group, subdivide):
    """True if every rotation of the group maps supercell indices to integers."""
    D = np.diag(np.asarray(subdivide, dtype=np.float64))
    D_inverse = np.diag(1.0 / np.asarray(subdivide, dtype=np.float64))
    for operator in space_group.all_ops():
        # Indices transform as row vectors: H' = H D^-1 R D.
        R = np.reshape(operator.r().as_double(), (3, 3))
        moved = D_inverse @ R @ D
        if np.any(np.abs(moved - np.rint(moved)) > 1e-9):
            return False
    return True


def supercell_symmetry(unit_cell, space_group, subdivide):
    """(cctbx crystal.symmetry of the supercell, True if the map must go to P 1).

    The group is the crystal's point group without translations when it acts
    on the supercell's integer indices, else P 1 (see the module).
    """
    from cctbx import crystal, sgtbx

    point_group = space_group.build_derived_point_group()
    expand = not _keeps_integer(point_group, subdivide)
    group = sgtbx.space_group_info("P 1").group() if expand else point_group
    symmetry = crystal.symmetry(
        unit_cell=supercell_cell(unit_cell, subdivide), space_group=group
    )
    return symmetry, expand


def expand_to_p1(hkl, space_group):
    """Every symmetry mate of fractional `hkl` under the Laue group, and their rows.

    Returns (mates (m, 3) float, source row of each mate); Friedel mates
    (-h -k -l) are left out (a non-anomalous P 1 file implies them), and
    each mate appears once.
    """
    from dials_diffuse.algorithms.diffuse.correct import laue_rotations

    hkl = np.asarray(hkl, dtype=np.float64)
    rotations = [R for R in laue_rotations(space_group) if np.linalg.det(R) > 0]
    mates = np.concatenate([hkl @ R for R in rotations])
    rows = np.tile(np.arange(len(hkl)), len(rotations))
    # One of each +-pair: the first non-zero index positive.
    key = np.rint(mates * 1e6).astype(np.int64)
    first = np.argmax(key != 0, axis=1)
    sign = np.where(key[np.arange(len(key)), first] < 0, -1, 1)
    key = key * sign[:, None]
    _, unique = np.unique(key, axis=0, return_index=True)
    unique = np.sort(unique)
    return mates[unique] * sign[unique, None], rows[unique]
