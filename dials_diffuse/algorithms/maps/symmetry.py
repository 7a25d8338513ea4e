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
from dials_diffuse.util.errors import DataError

CHUNK_POINTS = 1 << 20


def symmetry_mates(recmap, start=0, stop=None):
    """Flat indices of the mates of grid points start..stop, one row per Laue rotation.

    Returns
    -------
    ndarray of int64 (rotations, points)
        The flat index of the mate h R of every grid point, -1 where the mate
        lies outside the grid.
    """
    group = recmap.group()
    subdivide = recmap.subdivide
    shape = np.array(recmap.shape)
    stop = int(np.prod(shape)) if stop is None else stop
    points = np.stack(np.unravel_index(np.arange(start, stop), recmap.shape), axis=1)
    hkl = (points + recmap.first_index()) / subdivide
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
        Mean over the measured distinct mates; their standard deviation
        (ddof=1, NaN with fewer than two); how many distinct mates were
        measured (0: mean NaN). Worked in chunks of grid points.
    """
    values = recmap.layers[layer or recmap.signal].ravel().astype(np.float64)
    mean = np.empty(values.size)
    spread = np.empty(values.size)
    count = np.empty(values.size, dtype=np.int64)
    for start in range(0, values.size, CHUNK_POINTS):
        stop = min(start + CHUNK_POINTS, values.size)
        part = slice(start, stop)
        mean[part], spread[part], count[part] = _average(
            values, symmetry_mates(recmap, start, stop)
        )
    shape = recmap.shape
    return mean.reshape(shape), spread.reshape(shape), count.reshape(shape)


def _average(values, mates):
    """Mean, spread and number of the measured distinct mates (columns of `mates`)."""
    # A point on a symmetry element is its own mate under several rotations:
    # each distinct mate counts once.
    mates = np.sort(mates, axis=0)
    distinct = np.ones(mates.shape, dtype=bool)
    distinct[1:] = mates[1:] != mates[:-1]
    use = distinct & (mates >= 0)
    mate_values = np.where(use, values[np.where(use, mates, 0)], np.nan)
    measured = np.isfinite(mate_values)
    count = measured.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(measured, mate_values, 0.0).sum(axis=0) / count
        deviation = np.where(measured, mate_values - mean, 0.0)
        variance = (deviation * deviation).sum(axis=0) / (count - 1)
        spread = np.where(count > 1, np.sqrt(variance), np.nan)
    return mean, spread, count
