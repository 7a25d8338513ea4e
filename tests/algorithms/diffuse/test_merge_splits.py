"""merge's splits (mdx2's randomHalf, weightedRandomHalf, Friedel) against hand-computed halves."""

import numpy as np
import pandas as pd
import pytest
from cctbx import sgtbx

from dials_diffuse.algorithms.diffuse.correct import laue_rotations
from dials_diffuse.algorithms.diffuse.merge import (
    improper_operators,
    merge_observations,
    random_halves,
)
from dials_diffuse.util.errors import DataError


def test_weighted_halves_balance_weight_not_numbers():
    rng = np.random.default_rng(5)
    group = rng.integers(0, 300, size=3000)
    weight = rng.choice([1.0, 10.0], size=group.size) * rng.uniform(
        0.5, 1.5, group.size
    )
    first = random_halves(group, rng, weight)
    w1 = np.bincount(group, weight * first, minlength=300)
    w2 = np.bincount(group, weight * ~first, minlength=300)
    largest = pd.Series(weight).groupby(group).max().reindex(range(300)).to_numpy()
    seen = np.bincount(group, minlength=300) > 0
    # The halves' total weights differ by at most one observation's weight.
    assert np.all(np.abs(w1 - w2)[seen] <= largest[seen] + 1e-9)
    # Both halves non-empty wherever a voxel has two observations.
    sizes = np.bincount(group, minlength=300)
    in_first = np.bincount(group, first, minlength=300)
    assert np.all(
        (in_first[sizes >= 2] > 0) & (in_first[sizes >= 2] < sizes[sizes >= 2])
    )
    # Equal weights: the unweighted split, floor(n/2) and ceil(n/2).
    even = random_halves(group, np.random.default_rng(1), np.full(group.size, 3.0))
    same = random_halves(group, np.random.default_rng(1))
    np.testing.assert_array_equal(even, same)


def test_weighted_split_of_one_voxel_by_hand():
    # Weights 9, 1, 1, 1 (errors 1/3, 1, 1, 1): whatever the order, the
    # heavy observation's half has weight 9 or 10 and the other 3 or 2.
    observations = pd.DataFrame(
        {
            "h": 0,
            "k": 0,
            "l": 0,
            "intensity": [10.0, 1.0, 2.0, 3.0],
            "intensity_error": [1 / 3, 1.0, 1.0, 1.0],
        }
    )
    for seed in range(8):
        merged = merge_observations(
            observations, split="weighted_random_half", seed=seed
        ).iloc[0]
        heavy = 1 if merged["intensity_1"] > 5 else 2
        light = 3 - heavy
        assert merged[f"count_{heavy}"] in (1, 2)
        # The light half: two or three of the unit-weight observations.
        assert merged[f"intensity_{light}"] in (1.5, 2.0, 2.5)
        # The halves recombine to the full merge.
        weights = 1 / merged[["intensity_error_1", "intensity_error_2"]] ** 2
        recombined = (
            weights.iloc[0] * merged["intensity_1"]
            + weights.iloc[1] * merged["intensity_2"]
        ) / weights.sum()
        assert recombined == pytest.approx(merged["intensity"])
        assert merged["intensity"] == pytest.approx((90 + 6) / 12)


def test_improper_operators_of_laue_groups():
    p1 = sgtbx.space_group_info("P 1").group()
    np.testing.assert_array_equal(improper_operators(p1), [False, True])
    orthorhombic = sgtbx.space_group_info("P 21 21 21").group()
    improper = improper_operators(orthorhombic)
    assert improper.sum() == 4 and len(improper) == 8
    rotations = laue_rotations(orthorhombic)
    np.testing.assert_array_equal(improper, np.linalg.det(rotations) < 0)


def test_friedel_split_by_hand():
    group = sgtbx.space_group_info("P 21 21 21").group()
    improper = improper_operators(group)
    # One voxel seen once through each Laue operator: 10 through the proper
    # ones, 20 through the improper ones (errors 1 and 2).
    op = np.arange(8)
    observations = pd.DataFrame(
        {
            "h": 1.0,
            "k": 2.0,
            "l": 3.0,
            "op": op,
            "intensity": np.where(improper, 20.0, 10.0),
            "intensity_error": np.where(improper, 2.0, 1.0),
        }
    )
    merged = merge_observations(observations, split="friedel", space_group=group).iloc[
        0
    ]
    assert merged["intensity_1"] == 10.0 and merged["intensity_2"] == 20.0
    assert merged["count_1"] == 4 and merged["count_2"] == 4
    assert merged["intensity_error_1"] == pytest.approx(1 / 2)
    assert merged["intensity_error_2"] == pytest.approx(2 / 2)
    assert merged["intensity"] == pytest.approx((4 * 10 + 4 * 20 / 4) / (4 + 1))
    with pytest.raises(DataError, match="op column"):
        merge_observations(
            observations.drop(columns="op"), split="friedel", space_group=group
        )
    with pytest.raises(DataError, match="op outside"):
        merge_observations(
            observations.assign(op=op + 3), split="friedel", space_group=group
        )
    with pytest.raises(DataError, match="unknown split"):
        merge_observations(observations, split="halves")


def test_halves_leave_out_rejected_outliers():
    observations = pd.DataFrame(
        {
            "h": 0,
            "k": 0,
            "l": 0,
            "intensity": [10.0, 11.0, 9.0, 10.0, 1000.0],
            "intensity_error": 1.0,
        }
    )
    merged = merge_observations(observations, outlier=3.0, split="random_half").iloc[0]
    assert merged["count_1"] + merged["count_2"] == 4
    assert max(merged["intensity_1"], merged["intensity_2"]) <= 11.0
