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
