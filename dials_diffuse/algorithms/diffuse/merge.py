"""Merge corrected voxel observations: weighted means, random halves, CC1/2.

As mdx2's merge (without a scaling model): the observations of each
asymmetric-unit voxel (h, k, l) are averaged with inverse-variance weights,
I = sum(w I_i) / sum(w), sigma = 1 / sqrt(sum(w)), w = 1 / sigma_i^2.
Optionally observations more than `outlier` sigma above the mean are
rejected and the voxel merged again. With ``split="random_half"`` the
observations of every voxel are dealt at random into two halves (half each,
the odd one to a random half) and merged separately; CC1/2 is the Pearson
correlation of the two halves over the voxels seen in both, overall and in
shells of s = 1/d.
"""

import numpy as np
import pandas as pd

from dials_diffuse.util.errors import UserError

KEYS = ["h", "k", "l"]


def _weighted_means(group, intensity, weight, n_groups):
    weight_sum = np.bincount(group, weights=weight, minlength=n_groups)
    mean = np.bincount(group, weights=weight * intensity, minlength=n_groups)
    count = np.bincount(group, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, mean / weight_sum, np.nan)
        error = np.where(count > 0, 1.0 / np.sqrt(weight_sum), np.nan)
    return mean, error, count


def random_halves(group, rng):
    """True for the observations dealt to the first half, per group.

    Each group's observations are shuffled; the first floor(n/2) go to half
    one, and the odd one out of an odd group to a random half.
    """
    order = np.lexsort((rng.random(len(group)), group))
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    sizes = np.diff(np.r_[starts, len(group)])
    rank = np.arange(len(group)) - np.repeat(starts, sizes)
    size = np.repeat(sizes, sizes)
    coin = np.repeat(rng.random(len(starts)) < 0.5, sizes)
    first = (rank < size // 2) | ((size % 2 == 1) & (rank == size // 2) & coin)
    result = np.empty(len(group), dtype=bool)
    result[order] = first
    return result


def merge_observations(observations, outlier=None, split=None, seed=0):
    """Merge a corrected table (pandas, one row per observation).

    Parameters
    ----------
    observations : DataFrame
        Columns h, k, l (asymmetric unit), intensity, intensity_error, and
        s (optional, carried to the output).
    outlier : float, optional
        Reject observations more than this many sigma above the merged mean
        (then merge again).
    split : {None, "random_half"}
    seed : int
        For the random halves.

    Returns
    -------
    DataFrame
        h, k, l, intensity, intensity_error, count (and s), plus
        intensity_1, intensity_error_1, count_1 and the same for half 2 with
        a split.
    """
    error = observations["intensity_error"].to_numpy(np.float64)
    intensity = observations["intensity"].to_numpy(np.float64)
    usable = np.isfinite(intensity) & np.isfinite(error) & (error > 0)
    if not np.any(usable):
        raise UserError("no observation with a finite intensity and a positive error")
    observations = observations[usable]
    intensity, error = intensity[usable], error[usable]
    keys = observations[KEYS].to_numpy(np.float64)
    unique, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.ravel()
    weight = 1.0 / error**2
    mean, sigma, count = _weighted_means(group, intensity, weight, len(unique))
    rejected = 0
    if outlier is not None:
        keep = (intensity - mean[group]) / error <= outlier
        rejected = int((~keep).sum())
        mean, sigma, count = _weighted_means(
            group, intensity, np.where(keep, weight, 0.0), len(unique)
        )
        count = np.bincount(group, weights=keep, minlength=len(unique)).astype(int)
    merged = pd.DataFrame(
        {
            "h": unique[:, 0].astype(np.float32),
            "k": unique[:, 1].astype(np.float32),
            "l": unique[:, 2].astype(np.float32),
            "intensity": mean,
            "intensity_error": sigma,
            "count": count.astype(np.int32),
        }
    )
    if "s" in observations:
        merged["s"] = np.bincount(
            group, weights=observations["s"].to_numpy(np.float64), minlength=len(unique)
        ) / np.bincount(group, minlength=len(unique))
    if split == "random_half":
        first = random_halves(group, np.random.default_rng(seed))
        for number, half in ((1, first), (2, ~first)):
            half_mean, half_sigma, half_count = _weighted_means(
                group, intensity, np.where(half, weight, 0.0), len(unique)
            )
            half_count = np.bincount(group, weights=half, minlength=len(unique))
            merged[f"intensity_{number}"] = np.where(half_count > 0, half_mean, np.nan)
            merged[f"intensity_error_{number}"] = np.where(
                half_count > 0, half_sigma, np.nan
            )
            merged[f"count_{number}"] = half_count.astype(np.int32)
    elif split is not None:
        raise UserError(f"unknown split '{split}': use random_half")
    merged.attrs["rejected_outliers"] = rejected
    return merged


def cc_half(merged, shells=10):
    """CC1/2 overall and in shells of s with equal numbers of voxels.

    Parameters
    ----------
    merged : DataFrame
        From `merge_observations` with a random-half split (and s).
    shells : int

    Returns
    -------
    overall : float
    table : DataFrame
        s_low, s_high (inverse Angstrom), voxels, cc_half per shell.
    """
    both = merged.dropna(subset=["intensity_1", "intensity_2"])
    if len(both) < 3:
        raise UserError("fewer than 3 voxels observed in both halves: no CC1/2")
    overall = float(np.corrcoef(both["intensity_1"], both["intensity_2"])[0, 1])
    rows = []
    if "s" in both:
        edges = np.quantile(both["s"], np.linspace(0, 1, shells + 1))
        shell = np.clip(
            np.searchsorted(edges, both["s"], side="right") - 1, 0, shells - 1
        )
        for number in range(shells):
            part = both[shell == number]
            value = (
                float(np.corrcoef(part["intensity_1"], part["intensity_2"])[0, 1])
                if len(part) >= 3
                else np.nan
            )
            rows.append((edges[number], edges[number + 1], len(part), value))
    return overall, pd.DataFrame(rows, columns=["s_low", "s_high", "voxels", "cc_half"])
