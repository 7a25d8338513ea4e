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


def _integer_rotations(recmap):
    """The Laue rotations acting on integer grid coordinates i = h * subdivide.

    For h' = h R, i' = i R' with R'[a, b] = R[a, b] subdivide[b] / subdivide[a];
    a DataError if that is not integral (unequal subdivide along axes the
    group relates).
    """
    subdivide = recmap.subdivide.astype(np.float64)
    rotations = []
    for rotation in laue_rotations(recmap.group()):
        scaled = rotation * subdivide[None, :] / subdivide[:, None]
        integral = np.rint(scaled)
        if np.any(np.abs(scaled - integral) > 1e-9):
            raise DataError(
                f"{recmap.source}: the Laue group of {recmap.space_group} moves grid "
                f"points off the grid (subdivide {recmap.subdivide.tolist()}): it "
                "needs equal subdivide along symmetry-related axes"
            )
        rotations.append(integral.astype(np.int64))
    return rotations


def symmetry_mates(recmap, start=0, stop=None, rotations=None):
    """Flat indices of the mates of grid points start..stop, one row per Laue rotation.

    Returns
    -------
    ndarray of int64 (rotations, points)
        The flat index of the mate h R of every grid point, -1 where the mate
        lies outside the grid.
    """
    rotations = _integer_rotations(recmap) if rotations is None else rotations
    shape = np.array(recmap.shape)
    stop = int(np.prod(shape)) if stop is None else stop
    first = recmap.first_index()
    points = np.stack(np.unravel_index(np.arange(start, stop), recmap.shape), axis=1)
    integer = points + first
    rows = np.empty((len(rotations), len(points)), dtype=np.int64)
    for number, rotation in enumerate(rotations):
        position = integer @ rotation - first
        inside = np.all((position >= 0) & (position < shape), axis=1)
        flat = (position[:, 0] * shape[1] + position[:, 1]) * shape[2] + position[:, 2]
        rows[number] = np.where(inside, flat, -1)
    return rows


def symmetry_average(recmap, layers=None):
    """The Laue-symmetry average of layers, the mates' spread and their number.

    Parameters
    ----------
    recmap : ReciprocalMap
        With a space group.
    layers : list of str, optional
        Default: the main layer.

    Returns
    -------
    dict of str -> (mean, spread, count)
        Per layer, ndarrays of the map's shape: the mean over the measured
        distinct mates; their standard deviation (ddof=1, NaN with fewer
        than two); how many distinct mates were measured (0: mean NaN).
        Worked in chunks of grid points, the mates found once for all layers.
    """
    layers = layers or [recmap.signal]
    rotations = _integer_rotations(recmap)
    size = int(np.prod(recmap.shape))
    flat = {name: recmap.layers[name].ravel().astype(np.float64) for name in layers}
    results = {
        name: (np.empty(size), np.empty(size), np.empty(size, dtype=np.int64))
        for name in layers
    }
    for start in range(0, size, CHUNK_POINTS):
        stop = min(start + CHUNK_POINTS, size)
        mates, distinct = _distinct(symmetry_mates(recmap, start, stop, rotations))
        for name in layers:
            mean, spread, count = results[name]
            mean[start:stop], spread[start:stop], count[start:stop] = _average(
                flat[name], mates, distinct
            )
    return {
        name: tuple(array.reshape(recmap.shape) for array in arrays)
        for name, arrays in results.items()
    }


def _distinct(mates):
    """Mates sorted per point, and True for the first of equal ones.

    A point on a symmetry element is its own mate under several rotations:
    each distinct mate counts once.
    """
    mates = np.sort(mates, axis=0)
    distinct = np.ones(mates.shape, dtype=bool)
    distinct[1:] = mates[1:] != mates[:-1]
    return mates, distinct & (mates >= 0)


def _average(values, mates, use):
    """Mean, spread and number of the measured mates (columns of `mates` where `use`)."""
    mate_values = np.where(use, values[np.where(use, mates, 0)], np.nan)
    measured = np.isfinite(mate_values)
    count = measured.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(measured, mate_values, 0.0).sum(axis=0) / count
        deviation = np.where(measured, mate_values - mean, 0.0)
        variance = (deviation * deviation).sum(axis=0) / (count - 1)
        spread = np.where(count > 1, np.sqrt(variance), np.nan)
    return mean, spread, count
