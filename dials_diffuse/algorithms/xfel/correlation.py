"""Difference angular correlations of still-shot pairs, with masks.

For a pair of polar images A, B (rows q, columns phi) with validity masks,
the difference D = A - B is taken where both are valid (M = M_A & M_B), its
masked mean is removed from every q row, and

    C(q, dphi) = sum_phi M D(phi) M D(phi + dphi) / sum_phi M(phi) M(phi + dphi)

is computed with FFTs along phi (the numerator is the circular
autocorrelation of M D, the denominator that of the mask itself). Dividing
by the mask's own correlation makes C the mean product over the sample pairs
that actually exist, so gaps in the detector do not bias it. Lags with fewer
than `min_overlap` sample pairs are left undefined (NaN).

Pairs whose difference is far stronger (or weaker) than the others, by a
robust z-score of the mean squared difference (median and MAD over pairs,
|z| > z_max), are rejected before the mean over pairs is taken.
"""

import dataclasses
import json
import logging

import numpy as np
from libtbx.phil import parse

from dials_diffuse.util.errors import DataError
from dials_diffuse.util.progress import progress

logger = logging.getLogger(__name__)

phil_scope = parse(
    """
pairs = consecutive
  .type = str
  .help = "'consecutive' for neighbouring shots, or a JSON file of tag pairs"
          "[[tag_a, tag_b], ...]."
skip_dark = 0
  .type = int(value_min=0, allow_none=False)
  .help = "Leave out the first N shots as dark, besides the shots flagged"
          "dark (shutter closed) in the polar file."
outliers {
  z_max = 3.5
    .type = float(value_min=0)
    .help = "Reject pairs whose robust z-score of the mean squared difference"
            "exceeds this. None: keep every pair."
}
min_overlap = 4
  .type = int(value_min=1, allow_none=False)
  .help = "Fewest valid phi sample pairs for a lag to count in one pair."
"""
)


def masked_difference(a, valid_a, b, valid_b):
    """Row-mean-subtracted difference of two polar images and its mask."""
    valid = valid_a & valid_b
    difference = np.where(valid, a - b, 0.0)
    counts = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = difference.sum(axis=-1) / counts
    means = np.where(counts > 0, means, 0.0)
    difference = np.where(valid, difference - means[..., None], 0.0)
    return difference, valid


def masked_autocorrelation(values, valid, min_overlap=1):
    """Masked circular autocorrelation along the last axis.

    Parameters
    ----------
    values : ndarray (..., n_phi), zero where invalid
    valid : ndarray of bool, same shape
    min_overlap : int
        Fewest valid sample pairs for a defined lag.

    Returns
    -------
    correlation : ndarray (..., n_phi)
        Mean of values(phi) * values(phi + lag) over valid pairs; NaN where
        fewer than `min_overlap` pairs exist.
    overlap : ndarray of int (..., n_phi)
        Number of valid sample pairs at each lag.
    """
    n = values.shape[-1]
    spectrum = np.fft.rfft(values * valid, axis=-1)
    numerator = np.fft.irfft(spectrum * np.conj(spectrum), n=n, axis=-1)
    mask_spectrum = np.fft.rfft(valid.astype(np.float64), axis=-1)
    overlap = np.rint(
        np.fft.irfft(mask_spectrum * np.conj(mask_spectrum), n=n, axis=-1)
    ).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = numerator / overlap
    correlation[overlap < max(min_overlap, 1)] = np.nan
    return correlation, overlap


def pair_score(a, valid_a, b, valid_b):
    """Mean squared masked difference of a pair (the lag-0 correlation)."""
    difference, valid = masked_difference(a, valid_a, b, valid_b)
    n = valid.sum()
    return float((difference**2).sum() / n) if n else np.nan


def robust_z(values):
    """Robust z-scores 0.6745 (x - median) / MAD (0 where MAD is 0)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    median = np.median(values[finite])
    mad = np.median(np.abs(values[finite] - median))
    if mad == 0:
        return np.where(finite, 0.0, np.inf)
    return np.where(finite, 0.6745 * (values - median) / mad, np.inf)


def consecutive_pairs(n_shots, dark, skip_first=0):
    """Pairs (i, j) of neighbouring usable shots: (0, 1), (1, 2), ... as in the SACLA recipe.

    Dark shots and the first `skip_first` shots are left out; pairs join
    neighbours in acquisition order among the shots that remain.
    """
    usable = [i for i in range(skip_first, n_shots) if not dark[i]]
    return list(zip(usable[:-1], usable[1:]))


def pairs_from_json(path, tags):
    """Index pairs from a JSON list of [tag_a, tag_b] (tags as ints or 'tag_N').

    Pairs naming a tag that is not in the polar file are skipped (as in the
    SACLA difference-correlation recipe) and counted in the log.
    """
    try:
        with open(path) as handle:
            listed = json.load(handle)
        listed = [(_tag_value(a), _tag_value(b)) for a, b in listed]
    except (OSError, ValueError, TypeError) as error:
        raise DataError(
            f"{path}: not a JSON list of tag pairs [[tag_a, tag_b], ...] ({error})"
        ) from error
    position = {int(t): i for i, t in enumerate(tags)}
    pairs = [
        (position[a], position[b]) for a, b in listed if a in position and b in position
    ]
    skipped = len(listed) - len(pairs)
    if skipped:
        logger.info("Skipped %d pair(s) naming tags not in the polar file", skipped)
    return pairs


def _tag_value(tag):
    if isinstance(tag, str) and tag.startswith("tag_"):
        tag = tag[len("tag_") :]
    return int(tag)


@dataclasses.dataclass
class CorrelationResult:
    """Mean difference correlation over accepted pairs.

    Attributes
    ----------
    correlation : ndarray (n_q, n_phi)
        C(q, dphi), NaN where no pair has the lag.
    pairs_used : ndarray (n_q, n_phi) of int
        How many pairs contribute to each value.
    pairs : ndarray (n_pairs, 2) of int
        Shot indices of every pair considered.
    scores : ndarray (n_pairs,)
        Mean squared difference of each pair.
    z : ndarray (n_pairs,)
        Robust z-score of each pair's score.
    accepted : ndarray of bool (n_pairs,)
    """

    correlation: np.ndarray
    pairs_used: np.ndarray
    pairs: np.ndarray
    scores: np.ndarray
    z: np.ndarray
    accepted: np.ndarray

    @property
    def dphi(self):
        """The lags of the columns of `correlation`, degrees."""
        n_phi = self.correlation.shape[-1]
        return 360.0 * np.arange(n_phi) / n_phi

    def summary(self):
        """The key results for a program's JSON summary."""
        n_used = int(self.accepted.sum())
        return {
            "pairs": len(self.pairs),
            "pairs_used": n_used,
            "pairs_rejected": len(self.pairs) - n_used,
            "n_q": self.correlation.shape[0],
            "n_phi": self.correlation.shape[-1],
        }


class _ShotCache:
    """Read polar shots by index, keeping the last few (pairs share shots)."""

    def __init__(self, read, size=4):
        self._read = read
        self._size = size
        self._cache = {}

    def __call__(self, index):
        if index not in self._cache:
            if len(self._cache) >= self._size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = self._read(index)
        return self._cache[index]


class _BlockCorrelator:
    """Sum of the correlations of a block of pairs, and how many define each lag.

    A picklable callable (for Dask workers) when `read_shot` is.
    """

    def __init__(self, read_shot, min_overlap):
        self.read_shot = read_shot
        self.min_overlap = min_overlap

    def __call__(self, block):
        total = None
        count = None
        read = _ShotCache(self.read_shot)  # neighbouring pairs share shots
        for a, b in block:
            difference, valid = masked_difference(*read(a), *read(b))
            correlation, _ = masked_autocorrelation(difference, valid, self.min_overlap)
            defined = np.isfinite(correlation)
            if total is None:
                total = np.zeros(correlation.shape)
                count = np.zeros(correlation.shape, dtype=np.int64)
            total += np.where(defined, correlation, 0.0)
            count += defined
        return total, count


def mean_pair_correlation(
    read_shot, pairs, z_max=3.5, min_overlap=4, pmap=None, progress=None
):
    """Difference correlations of `pairs`, outliers rejected, averaged.

    Parameters
    ----------
    read_shot : callable
        index -> (polar image float64 (n_q, n_phi), valid bool); picklable
        (e.g. a `PolarFile`) for Dask.
    pairs : list of (int, int)
    z_max : float or None
        Reject pairs with |robust z| above this; None keeps every pair.
    min_overlap : int
        Fewest valid sample pairs for a defined lag in one pair.
    pmap : ParallelMap, optional
        Runs the correlation of blocks of pairs in parallel.
    progress : callable, optional
        Wraps an iterable in a progress bar.
    """
    if not pairs:
        raise DataError("no shot pairs to correlate")
    wrap = progress or (lambda iterable, **_: iterable)
    cached = _ShotCache(read_shot)
    scores = np.array(
        [
            pair_score(*cached(a), *cached(b))
            for a, b in wrap(pairs, desc="Scoring pairs")
        ]
    )
    z = robust_z(scores)
    accepted = np.isfinite(scores)
    if z_max is not None:
        accepted &= np.abs(z) <= z_max
    if not accepted.any():
        raise DataError("every pair was rejected as an outlier")
    chosen = [pair for pair, ok in zip(pairs, accepted) if ok]

    blocks = [chosen[k : k + 16] for k in range(0, len(chosen), 16)]
    correlate_block = _BlockCorrelator(read_shot, min_overlap)
    results = (
        pmap(correlate_block, blocks)
        if pmap is not None
        else map(correlate_block, blocks)
    )
    total, count = None, None
    for block_total, block_count in wrap(
        results, total=len(blocks), desc="Correlating"
    ):
        total = block_total if total is None else total + block_total
        count = block_count if count is None else count + block_count
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return CorrelationResult(
        correlation=mean,
        pairs_used=count,
        pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
        scores=scores,
        z=z,
        accepted=accepted,
    )


def choose_pairs(polar, params):
    """The shot pairs (indices) to correlate, as `params.pairs` says.

    'consecutive': neighbouring shots (`consecutive_pairs`); else the tag
    pairs of a JSON file (`pairs_from_json`), those with a dark shot (flagged
    in the polar file, or among the first `params.skip_dark`) left out.
    """
    if params.pairs == "consecutive":
        return consecutive_pairs(len(polar.tags), polar.dark.copy(), params.skip_dark)
    pairs = pairs_from_json(params.pairs, polar.tags)
    excluded = polar.dark.copy()
    excluded[: params.skip_dark] = True
    before = len(pairs)
    pairs = [(a, b) for a, b in pairs if not (excluded[a] or excluded[b])]
    if len(pairs) < before:
        logger.info("Left out %d pair(s) with a dark shot", before - len(pairs))
    return pairs


def do_angular_correlation(polar, params, pmap=None):
    """The mean difference correlation C(q, dphi) of the pairs of a polar file.

    Parameters
    ----------
    polar : dials_diffuse.io.polar_files.PolarFile
        The polar images of polar_transform (open).
    params : PHIL extract with the parameters of `phil_scope`
    pmap : ParallelMap, optional
        Correlates blocks of pairs in parallel.

    Returns
    -------
    CorrelationResult
    """
    pairs = choose_pairs(polar, params)
    if not pairs:
        raise DataError(f"{polar.path}: no shot pairs to correlate")
    logger.info("Correlating %d shot pairs of %s", len(pairs), polar.path)
    result = mean_pair_correlation(
        polar,
        pairs,
        z_max=params.outliers.z_max,
        min_overlap=params.min_overlap,
        pmap=pmap,
        progress=progress,
    )
    summary = result.summary()
    logger.info(
        "Used %d pairs, rejected %d as outliers (|z| > %s)",
        summary["pairs_used"],
        summary["pairs_rejected"],
        params.outliers.z_max,
    )
    return result
