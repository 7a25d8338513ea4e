"""Laue-symmetry averaging of a map, with the spread of the mates as an error.

Every grid point h is averaged with its symmetry mates h R (R over the
rotations of the space group's Laue group, identity and inversion included)
that lie on the grid and were measured. The spread of the mates (their
standard deviation) measures how far the map departs from the symmetry:
noise, absorption or scaling errors, or a wrong Laue group. The standard
error of the average is spread / sqrt(mates).

A map made by symmetry expansion of an asymmetric unit (``dials.diffuse.map``
with ``symmetry=True``) is unchanged by the average and has no spread; the
average matters for maps made without symmetry (``symmetry=False``, P1
merging) and for maps from other programs (a model, molecular dynamics).
"""

import numpy as np

from dials_diffuse.algorithms.diffuse.correct import laue_rotations
from dials_diffuse.algorithms.maps.grid import grid_coordinates
from dials_diffuse.util.errors import DataError


def symmetry_mates(recmap):
    """Flat indices of each grid point's mates, one row per Laue rotation.

    Returns
    -------
    ndarray of int64 (rotations, points)
        The flat index of the mate h R of every grid point, -1 where the mate
        lies outside the grid.
    """
    group = recmap.group()
    subdivide = recmap.subdivide
    integer = grid_coordinates(recmap.shape) + recmap.first_index()
    hkl = integer / subdivide
    shape = np.array(recmap.shape)
    rows = []
    for rotation in laue_rotations(group):
        scaled = (hkl @ rotation) * subdivide
        mate = np.rint(scaled).astype(np.int64)
        if np.any(np.abs(scaled - mate) > 1e-6):
            raise DataError(
                f"{recmap.source}: the Laue group of {recmap.space_group} moves grid "
                f"points off the grid (subdivide {subdivide.tolist()}): it needs "
                "equal subdivide along symmetry-related axes"
            )
        position = mate - recmap.first_index()
        inside = np.all((position >= 0) & (position < shape), axis=1)
        flat = np.full(len(position), -1, dtype=np.int64)
        flat[inside] = np.ravel_multi_index(position[inside].T, recmap.shape)
        rows.append(flat)
    return np.array(rows)


def symmetry_average(recmap, layer=None):
    """The Laue-symmetry average of a layer, the mates' spread and their number.

    Parameters
    ----------
    recmap : ReciprocalMap
        With a space group.
    layer : str, optional
        Default: the main layer.

    Returns
    -------
    mean, spread, count : ndarrays (shape of the map)
        Mean over the measured mates; their standard deviation (ddof=1, NaN
        with fewer than two); how many mates were measured (0: mean NaN).
    """
    values = recmap.layers[layer or recmap.signal].ravel().astype(np.float64)
    total = np.zeros(values.size)
    total_sq = np.zeros(values.size)
    count = np.zeros(values.size, dtype=np.int64)
    for flat in symmetry_mates(recmap):
        mate = np.full(values.size, np.nan)
        inside = flat >= 0
        mate[inside] = values[flat[inside]]
        measured = np.isfinite(mate)
        total += np.where(measured, mate, 0.0)
        total_sq += np.where(measured, mate * mate, 0.0)
        count += measured
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
        variance = (total_sq - count * mean * mean) / (count - 1)
        spread = np.where(count > 1, np.sqrt(np.maximum(variance, 0.0)), np.nan)
    shape = recmap.shape
    return mean.reshape(shape), spread.reshape(shape), count.reshape(shape)
