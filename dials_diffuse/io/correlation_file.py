"""The angular correlation file correlation.h5, written and read.

Written by ``dials.diffuse.angular_correlation``::

    /                      creator, default = "entry"
    /entry                 NXentry; source = the polar file correlated
    /entry/correlation     NXdata; signal = "C", axes = ["q", "dphi"]
      C                    (q, dphi) mean difference correlation C(q, dphi)
      pairs_used           (q, dphi) pairs that contributed to each value
      q                    (q,) 1/angstrom
      dphi                 (dphi,) degrees
    /entry/pairs           NXcollection, one row per shot pair:
      tag_a, tag_b         the pair's shot tags
      score, robust_z      the outlier score and its robust z
      used                 1 if the pair was kept (not an outlier)
"""

import dataclasses

import h5py
import numpy as np

import dials_diffuse
from dials_diffuse.util.errors import DataError


def write_correlation(path, result, q, dphi, tags, source):
    """Write a new correlation.h5 at `path`.

    Parameters
    ----------
    result : algorithms.xfel.correlation result
        correlation, pairs_used, pairs (indices into `tags`), scores, z,
        accepted.
    q : ndarray
        1/angstrom.
    dphi : ndarray
        degrees.
    tags : ndarray
        The shot tags of the polar file.
    source : path
        The polar file correlated.
    """
    with h5py.File(path, "w") as f:
        f.attrs["creator"] = f"dials-diffuse {dials_diffuse.__version__}"
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "correlation"
        entry["source"] = str(source)
        group = entry.create_group("correlation")
        group.attrs["NX_class"] = "NXdata"
        group.attrs["signal"] = "C"
        group.attrs["axes"] = np.array(["q", "dphi"], dtype=h5py.string_dtype())
        group["C"] = result.correlation
        group["C"].attrs["long_name"] = "mean difference correlation C(q, dphi)"
        group["pairs_used"] = result.pairs_used
        group["q"] = q
        group["q"].attrs["units"] = "1/angstrom"
        group["dphi"] = dphi
        group["dphi"].attrs["units"] = "degrees"
        pairs = entry.create_group("pairs")
        pairs.attrs["NX_class"] = "NXcollection"
        pairs["tag_a"] = tags[result.pairs[:, 0]]
        pairs["tag_b"] = tags[result.pairs[:, 1]]
        pairs["score"] = result.scores
        pairs["robust_z"] = result.z
        pairs["used"] = result.accepted.astype(np.uint8)


@dataclasses.dataclass
class Correlation:
    """The content of a correlation.h5 (names and units as in the file)."""

    C: np.ndarray
    pairs_used: np.ndarray
    q: np.ndarray
    dphi: np.ndarray
    tag_a: np.ndarray
    tag_b: np.ndarray
    score: np.ndarray
    robust_z: np.ndarray
    used: np.ndarray
    source: str


def read_correlation(path):
    """The Correlation stored in a correlation.h5.

    Raises
    ------
    DataError
        Naming the file, when it is not one.
    """
    try:
        with h5py.File(path, "r") as f:
            group, pairs = f["entry/correlation"], f["entry/pairs"]
            source = f["entry/source"][()]
            return Correlation(
                *(group[name][()] for name in ("C", "pairs_used", "q", "dphi")),
                *(
                    pairs[name][()]
                    for name in ("tag_a", "tag_b", "score", "robust_z", "used")
                ),
                source.decode() if isinstance(source, bytes) else str(source),
            )
    except (OSError, KeyError) as error:
        raise DataError(f"{path}: not a correlation file ({error})") from None
