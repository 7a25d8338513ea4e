"""Several crystals in one map: the common space group and indexing ambiguity."""

import logging

import pytest
from cctbx import sgtbx, uctbx
from dxtbx.model import Crystal
from dxtbx.model.experiment_list import Experiment
from scitbx import matrix

from dials_diffuse.algorithms.diffuse.crystals import (
    check_crystals,
    reindexing_ambiguity,
)
from dials_diffuse.util.errors import DataError


def crystal(cell, space_group):
    """A dxtbx Crystal with `cell` (Å, degrees) in the standard orientation."""
    fractionalization = uctbx.unit_cell(cell).fractionalization_matrix()
    B = matrix.sqr(fractionalization).transpose()
    return Crystal(B, sgtbx.space_group_info(space_group).group())


@pytest.mark.parametrize(
    "cell, space_group, indexings",
    [
        # Orthorhombic metric, orthorhombic group: one indexing.
        ((34, 41, 52, 90, 90, 90), "P 21 21 21", 1),
        # a = b: the tetragonal lattice allows h <-> k (|422| / |222| = 2).
        ((40, 40, 52, 90, 90, 90), "P 21 21 21", 2),
        # a = b = c: the cubic lattice, |432| / |222| = 6.
        ((40, 40, 40, 90, 90, 90), "P 21 21 21", 6),
        # The classic merohedry of P 3 (|622| / |3| = 4) and P 4 (2).
        ((40, 40, 60, 90, 90, 120), "P 3", 4),
        ((40, 40, 60, 90, 90, 120), "P 31 2 1", 2),
        ((40, 40, 52, 90, 90, 90), "P 4", 2),
        ((40, 40, 52, 90, 90, 90), "P 41 21 2", 1),
        # Monoclinic with beta = 90: the orthorhombic lattice, 2 indexings.
        ((30, 40, 50, 90, 90, 90), "P 1 21 1", 2),
        ((30, 40, 50, 90, 100, 90), "P 1 21 1", 1),
    ],
)
def test_number_of_indexings(cell, space_group, indexings):
    ambiguity = reindexing_ambiguity(crystal(cell, space_group))
    assert len(ambiguity.operators) + 1 == indexings


def test_the_operator_maps_the_lattice_onto_itself_and_not_the_point_group():
    ambiguity = reindexing_ambiguity(crystal((40, 40, 52, 90, 90, 90), "P 21 21 21"))
    assert ambiguity.lattice_group == "P 4 2 2"
    assert ambiguity.point_group == "P m m m"
    (operator,) = ambiguity.operators
    change = sgtbx.change_of_basis_op(operator)
    # h and k exchanged (and signs): k,h,l up to the point group's sign changes.
    assert sorted(operator.replace("-", "").split(",")) == ["h", "k", "l"]
    assert operator.replace("-", "").split(",")[:2] == ["k", "h"]
    # The cell is unchanged by it; P 21 21 21 is not.
    cell = uctbx.unit_cell((40, 40, 52, 90, 90, 90))
    assert cell.change_basis(change).is_similar_to(cell)


def experiment(cell, space_group):
    return Experiment(crystal=crystal(cell, space_group))


def test_different_space_groups_are_refused():
    experiments = [
        experiment((34, 41, 52, 90, 90, 90), "P 21 21 21"),
        experiment((34, 41, 52, 90, 90, 90), "P 2 2 2"),
    ]
    with pytest.raises(DataError, match="different space groups.*sweep 2: P 2 2 2"):
        check_crystals(experiments, ["sweep 1", "sweep 2"])


def test_a_reindexed_crystal_in_a_shifted_origin_merges():
    """dials.reindex by -k,-h,-l moves P 21 21 21's origin (a+1/4,b-1/4,c-1/4):
    the same point group and absences, so the same map."""
    reindexed = crystal((40, 40, 52, 90, 90, 90), "P 21 21 21").change_basis(
        sgtbx.change_of_basis_op("-k,-h,-l")
    )
    assert "a+1/4" in str(reindexed.get_space_group().info())
    experiments = [
        experiment((40, 40, 52, 90, 90, 90), "P 21 21 21"),
        Experiment(crystal=reindexed),
    ]
    assert check_crystals(experiments, ["one", "two"])["space_group"] == "P 21 21 21"


def test_screw_axes_along_other_crystal_axes_are_refused():
    """P 21 21 2 and P 2 21 21: one point group, other absences (axes permuted)."""
    experiments = [
        experiment((34, 41, 52, 90, 90, 90), "P 21 21 2"),
        experiment((34, 41, 52, 90, 90, 90), "P 2 21 21"),
    ]
    with pytest.raises(DataError, match="different space groups"):
        check_crystals(experiments, ["sweep 1", "sweep 2"])


def test_different_cells_merge_and_an_ambiguity_is_reported(caplog):
    plain = [
        experiment((34, 41, 52, 90, 90, 90), "P 21 21 21"),
        experiment((34.5, 41.2, 51.6, 90, 90, 90), "P 21 21 21"),
    ]
    with caplog.at_level(logging.INFO):
        result = check_crystals(plain, ["sweep 1", "sweep 2"])
    assert result == {"space_group": "P 21 21 21"}
    assert "sweep 2: P 21 21 21, cell 34.50 41.20 51.60" in caplog.text
    assert "ambiguity" not in caplog.text
    caplog.clear()
    ambiguous = [
        experiment((40, 40, 52, 90, 90, 90), "P 21 21 21"),
        experiment((40.1, 39.9, 52, 90, 90, 90), "P 21 21 21"),
    ]
    with caplog.at_level(logging.INFO):
        result = check_crystals(ambiguous, ["sweep 1", "sweep 2"])
    assert result["reindexing"]["sweeps"] == ["sweep 1", "sweep 2"]
    assert result["reindexing"]["lattice_group"] == "P 4 2 2"
    assert "Indexing ambiguity" in caplog.text and "dials.cosym" in caplog.text


def voxel_table(hkl_labels, hkl_true, rng, cell=(40.0, 40.0, 52.0)):
    """A corrected-like table: voxels labelled `hkl_labels` (mapped to the ASU
    of P 21 21 21) holding the intensity of `hkl_true`: a fall-off in |s|
    and halos that are stronger along a* than along b* (not symmetric under
    h <-> k), with 5 % noise."""
    import numpy as np
    import pandas as pd

    from dials_diffuse.algorithms.diffuse.correct import map_to_asu

    group = sgtbx.space_group_info("P 21 21 21").group()
    s = np.sqrt(((hkl_true / np.array(cell)) ** 2).sum(axis=1))
    halos = np.cos(2 * np.pi * hkl_true) @ np.array([1.0, 0.2, 0.6])
    intensity = 100 * np.exp(-10 * s**2) * (3 + halos)
    intensity *= 1 + 0.05 * rng.standard_normal(len(intensity))
    asu, _ = map_to_asu(hkl_labels, (2, 2, 2), group)
    return pd.DataFrame(
        {"h": asu[:, 0], "k": asu[:, 1], "l": asu[:, 2], "s": s, "intensity": intensity}
    )


@pytest.mark.parametrize("indexed_as", ["h,k,l", "k,h,-l"])
def test_the_indexing_that_agrees_with_the_first_sweep(indexed_as):
    """A second sweep indexed the other way (its labels are k,h,-l of the
    truth) is found, and reindexing it by k,h,-l is what makes it agree;
    indexed alike, it agrees as it is."""
    import numpy as np

    from dials_diffuse.algorithms.diffuse.crystals import check_indexing

    rng = np.random.default_rng(0)
    first = rng.integers(-16, 17, (40000, 3)) / 2.0
    second = rng.integers(-16, 17, (40000, 3)) / 2.0
    swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]])
    labels = second @ swap if indexed_as == "k,h,-l" else second
    tables = [voxel_table(first, first, rng), voxel_table(labels, second, rng)]
    group = sgtbx.space_group_info("P 21 21 21").group()
    (check,) = check_indexing(tables, ["one", "two"], ["k,h,-l"], (2, 2, 2), group)
    assert [op for op, _, _ in check.scores] == ["h,k,l", "k,h,-l"]
    assert check.best == indexed_as
    assert check.consistent == (indexed_as == "h,k,l")
    right = dict((op, cc) for op, cc, _ in check.scores)[indexed_as]
    assert right > 0.9


def test_an_operator_off_the_voxel_grid_is_left_out():
    """subdivide 2,4,2 is not mapped onto itself by h <-> k: only as indexed."""
    import numpy as np

    from dials_diffuse.algorithms.diffuse.crystals import check_indexing

    rng = np.random.default_rng(1)
    hkl = rng.integers(-16, 17, (5000, 3)) / np.array([2.0, 4.0, 2.0])
    group = sgtbx.space_group_info("P 21 21 21").group()
    from dials_diffuse.algorithms.diffuse.correct import map_to_asu

    asu, _ = map_to_asu(hkl, (2, 4, 2), group)
    table = voxel_table(hkl, hkl, rng)
    table[["h", "k", "l"]] = asu
    (check,) = check_indexing([table, table], ["a", "b"], ["k,h,-l"], (2, 4, 2), group)
    assert [op for op, _, _ in check.scores] == ["h,k,l"] and check.consistent
