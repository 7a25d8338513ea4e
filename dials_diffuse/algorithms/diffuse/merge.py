"""Merge corrected voxel observations: weighted means, split halves, CC1/2.

As mdx2's merge: the observations of each asymmetric-unit voxel (h, k, l)
are averaged with inverse-variance weights, I = sum(w I_i) / sum(w),
sigma = 1 / sqrt(sum(w)), w = 1 / sigma_i^2. Optionally observations more
than `outlier` sigma above the mean are rejected and the voxel merged
again. A split also merges two halves of every voxel's observations
separately (mdx2's ``--split``):

- ``random_half`` (mdx2's randomHalf): dealt at random, half each, the odd
  one to a random half;
- ``weighted_random_half`` (weightedRandomHalf): dealt at random into
  halves of about equal total weight (1 / sigma^2), not equal numbers;
- ``friedel`` (Friedel): observations mapped to the asymmetric unit by a
  proper rotation of the Laue group in one half, by an improper one (the
  Friedel mates, -h -k -l and its equivalents) in the other.

The correlation of the halves over the voxels seen in both, overall and in
shells of s = 1/d, is CC1/2 for the random splits (the map's precision) and
the Friedel-pair correlation for ``friedel``.
"""

import dataclasses
import logging

import numpy as np
import pandas as pd
from libtbx.phil import parse

from dials_diffuse.algorithms.diffuse.scale import TERMS, ScaleModel
from dials_diffuse.io.tables import Table
from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)

#: The parameters of merge (dials.diffuse.merge and process include them).
phil_scope = parse(
    """
outlier = None
  .type = float(value_min=0)
  .help = "Reject observations more than this many standard errors above the"
          "voxel's mean, then merge again. None: keep all."
split = *random_half weighted_random_half friedel none
  .type = choice
  .help = "Also merge two halves of each voxel's observations and report their"
          "correlation: random_half (CC1/2), weighted_random_half (halves of"
          "equal weight), friedel (Friedel mates), none."
seed = 0
  .type = int(allow_none=False)
  .help = "Seed of the random halves (the split is reproducible)."
shells = 10
  .type = int(value_min=1, allow_none=False)
  .help = "Resolution shells (equal numbers of voxels) for the correlation."
apply {
  scaling = True
    .type = bool
    .help = "Apply the scaling model's b(phi), if the scale.nxs has one."
  offset = True
    .type = bool
    .help = "Apply the offset c(s, phi), if the scale.nxs has one."
  detector = True
    .type = bool
    .help = "Apply the detector term d(ix, iy), if the scale.nxs has one."
  absorption = True
    .type = bool
    .help = "Apply the absorption term a(ix, iy, phi), if the scale.nxs has one."
}
"""
)

KEYS = ["h", "k", "l"]


def _weighted_means(group, intensity, weight, n_groups):
    weight_sum = np.bincount(group, weights=weight, minlength=n_groups)
    mean = np.bincount(group, weights=weight * intensity, minlength=n_groups)
    count = np.bincount(group, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, mean / weight_sum, np.nan)
        error = np.where(count > 0, 1.0 / np.sqrt(weight_sum), np.nan)
    return mean, error, count


def random_halves(group, rng, weight=None):
    """True for the observations dealt to the first half, per group.

    Each group's observations are shuffled and laid end to end, each as an
    interval of length its weight (1 without `weight`); those whose
    interval's midpoint lies beyond half the group's total weight form one
    half, the rest the other, and a coin per group decides which is the
    first. Unweighted: floor(n/2) and ceil(n/2) observations, the odd one in
    a random half. Weighted: the halves' total weights differ by at most the
    weight of one observation. (mdx2's ``wrs`` leaves the first
    observation's weight out of the running sum, which can unbalance the
    halves; otherwise the same.)
    """
    weight = np.ones(len(group)) if weight is None else np.asarray(weight, float)
    order = np.lexsort((rng.random(len(group)), group))
    sorted_group, sorted_weight = group[order], weight[order]
    cumulative = np.cumsum(sorted_weight)
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    sizes = np.diff(np.r_[starts, len(group)])
    before = np.repeat(cumulative[starts] - sorted_weight[starts], sizes)
    total = np.repeat(cumulative[starts + sizes - 1], sizes) - before
    midpoint = cumulative - before - 0.5 * sorted_weight
    coin = np.repeat(rng.random(len(starts)) < 0.5, sizes)
    first = (midpoint > 0.5 * total) != coin
    result = np.empty(len(group), dtype=bool)
    result[order] = first
    return result


def improper_operators(space_group):
    """True for each Laue-group operator (in `op` order) with determinant -1."""
    from dials_diffuse.algorithms.diffuse.correct import laue_rotations

    return np.linalg.det(laue_rotations(space_group)) < 0


SPLITS = ("random_half", "weighted_random_half", "friedel")


def split_halves(split, group, weight, observations, seed=0, space_group=None):
    """True for the observations of the first half of a split (see the module).

    Parameters
    ----------
    split : {"random_half", "weighted_random_half", "friedel"}
    group : ndarray of int
        The voxel of each observation.
    weight : ndarray
        1 / sigma^2 of each observation (0 for rejected ones).
    observations : DataFrame
        With column `op` for "friedel".
    seed : int
        For the random splits (reproducible).
    space_group : cctbx space_group
        Whose Laue group `op` indexes, for "friedel".
    """
    if split == "random_half":
        return random_halves(group, np.random.default_rng(seed))
    if split == "weighted_random_half":
        return random_halves(group, np.random.default_rng(seed), weight)
    if split == "friedel":
        if "op" not in observations or space_group is None:
            raise DataError(
                "split=friedel needs the op column and space group of a corrected table"
            )
        improper = improper_operators(space_group)
        op = observations["op"].to_numpy()
        if np.any((op < 0) | (op >= len(improper))):
            raise DataError(
                f"op outside 0-{len(improper) - 1}: the table was not mapped with "
                f"space group {space_group.info()}"
            )
        return ~improper[op]
    raise DataError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")


def merge_observations(
    observations, outlier=None, split=None, seed=0, space_group=None
):
    """Merge a corrected table (pandas, one row per observation).

    Parameters
    ----------
    observations : DataFrame
        Columns h, k, l (asymmetric unit), intensity, intensity_error, and
        s (optional, carried to the output), op (for the Friedel split).
    outlier : float, optional
        Reject observations more than this many sigma above the merged mean
        (then merge again).
    split : {None, "random_half", "weighted_random_half", "friedel"}
    seed : int
        For the random halves.
    space_group : cctbx space_group, optional
        The group the table's `op` refers to (its Laue group's operators),
        for the Friedel split.

    Returns
    -------
    DataFrame
        h, k, l, intensity, intensity_error, count (and s), plus
        intensity_1, intensity_error_1, count_1 and the same for half 2 with
        a split (NaN intensities where a half has no observation).
    """
    error = observations["intensity_error"].to_numpy(np.float64)
    intensity = observations["intensity"].to_numpy(np.float64)
    usable = np.isfinite(intensity) & np.isfinite(error) & (error > 0)
    if not np.any(usable):
        raise DataError("no observation with a finite intensity and a positive error")
    observations = observations[usable]
    intensity, error = intensity[usable], error[usable]
    keys = observations[KEYS].to_numpy(np.float64)
    unique, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.ravel()
    weight = 1.0 / error**2
    mean, sigma, count = _weighted_means(group, intensity, weight, len(unique))
    keep = np.ones(len(group), dtype=bool)
    if outlier is not None:
        keep = (intensity - mean[group]) / error <= outlier
        weight = np.where(keep, weight, 0.0)
        mean, sigma, count = _weighted_means(group, intensity, weight, len(unique))
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
    if split is not None:
        first = split_halves(split, group, weight, observations, seed, space_group)
        for number, half in ((1, first & keep), (2, ~first & keep)):
            half_mean, half_sigma, _ = _weighted_means(
                group, intensity, np.where(half, weight, 0.0), len(unique)
            )
            half_count = np.bincount(group, weights=half, minlength=len(unique))
            merged[f"intensity_{number}"] = np.where(half_count > 0, half_mean, np.nan)
            merged[f"intensity_error_{number}"] = np.where(
                half_count > 0, half_sigma, np.nan
            )
            merged[f"count_{number}"] = half_count.astype(np.int32)
    merged.attrs["rejected_outliers"] = int((~keep).sum())
    return merged


def cc_half(merged, shells=10):
    """CC1/2 overall and in shells of s with equal numbers of voxels.

    Parameters
    ----------
    merged : DataFrame
        From `merge_observations` with a split (and s).
    shells : int

    Returns
    -------
    overall : float
    table : DataFrame
        s_low, s_high (inverse Angstrom), voxels, cc_half per shell.
    """
    both = merged.dropna(subset=["intensity_1", "intensity_2"])
    if len(both) < 3:
        raise DataError("fewer than 3 voxels observed in both halves: no CC1/2")
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


@dataclasses.dataclass
class MergeResult:
    """What `do_merge` merged.

    Attributes
    ----------
    merged : DataFrame
        One row per asymmetric-unit voxel (`merge_observations`).
    attrs : dict
        The corrected tables' subdivide, space_group, wavelength and (mean)
        unit_cell, for the merged table and its export.
    observations : int
        Observations merged.
    split : str or None
    overall : float or None
        The halves' correlation (CC1/2, or CC Friedel for split=friedel).
    shells : DataFrame
        s_low, s_high, voxels, cc_half per resolution shell (empty without a split).
    """

    merged: pd.DataFrame
    attrs: dict
    observations: int
    split: str = None
    overall: float = None
    shells: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(
            columns=["s_low", "s_high", "voxels", "cc_half"]
        )
    )

    def tables(self):
        """The merged table (`hkl_table`) and, with a split, the shells (`cc_half`)."""
        tables = [Table.from_frame("hkl_table", self.merged, self.attrs)]
        if self.split:
            tables.append(
                Table.from_frame(
                    "cc_half",
                    self.shells,
                    {"overall": self.overall, "split": self.split},
                )
            )
        return tables

    def summary(self):
        """The key results for a program's JSON summary."""
        summary = {
            "observations": self.observations,
            "voxels": len(self.merged),
            "rejected_outliers": self.merged.attrs["rejected_outliers"],
        }
        if self.split:
            key = "cc_friedel" if self.split == "friedel" else "cc_half"
            summary[key] = self.overall
        return summary


def _scaled(table, model, which, name, model_name):
    """A corrected table (pandas) with the terms `which` of a scaling model applied."""
    frame = table.to_frame()
    missing = {"h", "k", "l", "intensity", "intensity_error"} - set(frame)
    if missing:
        raise DataError(
            f"{name}: not a corrected table (no {', '.join(sorted(missing))})"
        )
    if model is None:
        return frame
    if model.model_used != "as refined":
        logger.warning(
            "%s: scale wrote the model '%s', a fallback (why: see "
            "dials.diffuse.scale.log)%s",
            model_name,
            model.model_used,
            ": merged unscaled" if model.model_used.startswith("none") else "",
        )
    model = ScaleModel({t: term for t, term in model.terms.items() if t in which})
    absent = model.missing_columns(frame)
    if absent:
        raise DataError(
            f"{name}: no {', '.join(absent)} column for the model of {model_name}"
        )
    frame["intensity"], frame["intensity_error"] = model.apply(frame)
    logger.info(
        "Applied %s of %s to %s", ", ".join(model.terms) or "no term", model_name, name
    )
    return frame


def do_merge(tables, params, models=None, names=None, model_names=None):
    """Merge corrected observations of one or more tables (dials.diffuse.merge).

    Parameters
    ----------
    tables : list of Table
        Corrected tables (`hkl_table` of correct), e.g. one per sweep.
    params : PHIL extract with the parameters of `phil_scope`
    models : list of ScaleModel, optional
        One scaling model per table (from scale), applied (the terms that
        `params.apply` selects) before merging.
    names, model_names : list of str, optional
        The tables' and models' file names, for messages and the log.

    Returns
    -------
    MergeResult
    """
    names = names or [f"table {number}" for number in range(1, len(tables) + 1)]
    model_names = model_names or [f"model {n}" for n in range(1, len(tables) + 1)]
    if models and len(models) != len(tables):
        raise DataError(
            f"{len(models)} scaling model(s) for {len(tables)} table(s): give one "
            "scale.nxs per corrected.nxs, in the same order, or none"
        )
    which = [name for name in TERMS if getattr(params.apply, name)]
    frames = []
    attrs = {}
    space_groups = set()
    cells = []
    for number, table in enumerate(tables):
        model = models[number] if models else None
        frames.append(_scaled(table, model, which, names[number], model_names[number]))
        attrs = attrs or {
            key: table.attrs[key]
            for key in ("subdivide", "space_group", "unit_cell", "wavelength")
            if key in table.attrs
        }
        space_groups.add(table.attrs.get("space_group"))
        cells.append(table.attrs.get("unit_cell"))
    if all(cell is not None for cell in cells):
        # Several sweeps: their mean cell (they differ by refinement noise).
        attrs["unit_cell"] = tuple(np.mean(np.asarray(cells, float), axis=0))
    observations = pd.concat(frames, ignore_index=True)
    split = None if params.split == "none" else params.split
    space_group = None
    if split == "friedel":
        if len(space_groups) != 1 or None in space_groups:
            raise DataError(
                "split=friedel needs tables mapped with one space group (their "
                f"space_group attributes: {sorted(map(str, space_groups))})"
            )
        from cctbx import sgtbx

        space_group = sgtbx.space_group_info(next(iter(space_groups))).group()
    merged = merge_observations(
        observations,
        outlier=params.outlier,
        split=split,
        seed=params.seed,
        space_group=space_group,
    )
    logger.info(
        "Merged %d observations into %d asymmetric-unit voxels (%d outliers rejected)",
        len(observations),
        len(merged),
        merged.attrs["rejected_outliers"],
    )
    result = MergeResult(merged, attrs, len(observations), split)
    if split:
        statistic = "CC(Friedel)" if split == "friedel" else "CC1/2"
        result.overall, result.shells = cc_half(merged, params.shells)
        logger.info("%s = %.4f overall (split=%s)", statistic, result.overall, split)
        for row in result.shells.itertuples(index=False):
            logger.info(
                "  s %.3f-%.3f 1/A: %6d voxels, %s %.4f",
                row.s_low,
                row.s_high,
                row.voxels,
                statistic,
                row.cc_half,
            )
    return result
