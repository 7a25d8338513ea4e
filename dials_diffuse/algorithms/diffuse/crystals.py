"""Several crystals merged into one map: a common space group, and indexing ambiguity.

Sweeps of different crystals (or remounts of one) merge voxel by voxel in
fractional Miller indices, each sweep in its own cell and orientation; this
needs the same space group for every crystal. When a crystal's lattice has
higher symmetry than its point group (e.g. P 21 21 21 with a = b), the
indexing of each sweep is one of several equally valid choices, related by
the lattice's operators that are not in the point group: sweeps indexed
differently would merge symmetry-unrelated voxels without any error. That
cannot be told from the geometry; it is detected here and reported, and the
indexing must be made consistent (dials.cosym, or dials.reindex) before
merging.
"""

import dataclasses
import logging

from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)

#: Largest angle (degrees) between lattice vectors and symmetry directions for
#: a lattice symmetry to count (DIALS's default for lattice symmetry searches).
MAX_DELTA_DEG = 3.0


@dataclasses.dataclass
class Ambiguity:
    """The indexing ambiguity of one crystal.

    Attributes
    ----------
    lattice_group : str
        The lattice's symmetry (a centrosymmetric space group, in the crystal's
        setting), e.g. "P 4/m m m".
    point_group : str
        The crystal's Laue group, e.g. "P m m m".
    operators : list of str
        Change-of-basis operators on hkl (e.g. "k,h,-l") that relate the other
        equally valid indexings to this one; empty when there is no ambiguity.
    """

    lattice_group: str
    point_group: str
    operators: list


def reindexing_ambiguity(crystal, max_delta=MAX_DELTA_DEG):
    """The alternative indexings of `crystal` (a dxtbx Crystal): lattice vs point group.

    The operators of the lattice's symmetry group (cctbx
    `sgtbx.lattice_symmetry`, within `max_delta` degrees) fall into cosets of
    the crystal's Laue group; one representative per coset other than the
    Laue group itself is an alternative indexing.
    """
    from cctbx import sgtbx
    from cctbx.sgtbx import lattice_symmetry

    symmetry = crystal.get_crystal_symmetry()
    to_minimum = symmetry.change_of_basis_op_to_minimum_cell()
    minimum = symmetry.change_basis(to_minimum)
    lattice = lattice_symmetry.group(minimum.unit_cell(), max_delta=max_delta)
    point = minimum.space_group().build_derived_point_group()
    proper = [op.r() for op in point.all_ops() if op.r().determinant() > 0]
    covered = {r.as_xyz() for r in proper}
    operators = []
    for op in lattice.all_ops():
        rotation = op.r()
        if rotation.determinant() < 0 or rotation.as_xyz() in covered:
            continue
        covered |= {rotation.multiply(other).as_xyz() for other in proper}
        change = sgtbx.change_of_basis_op(sgtbx.rt_mx(rotation))
        change = change.new_denominators(to_minimum)
        in_crystal_setting = to_minimum.inverse() * change * to_minimum
        operators.append(in_crystal_setting.as_hkl())
    laue = minimum.space_group().build_derived_laue_group()
    to_crystal = to_minimum.inverse()
    return Ambiguity(
        lattice_group=str(
            sgtbx.space_group_info(group=lattice.change_basis(to_crystal))
        ),
        point_group=str(sgtbx.space_group_info(group=laue.change_basis(to_crystal))),
        operators=operators,
    )


def check_crystals(experiments, names):
    """One space group for all crystals; log each sweep's cell and any ambiguity.

    Parameters
    ----------
    experiments : sequence of dxtbx Experiment
    names : list of str
        One name per experiment for the log ("sweep 1 (a.expt)").

    Returns
    -------
    dict
        ``space_group`` (its symbol) and, when the lattice allows other
        indexings, ``reindexing`` ({"lattice_group", "point_group",
        "operators", "sweeps"}) for the summary and the report.

    Raises
    ------
    DataError
        When the crystals' space groups differ.
    """
    groups = [str(e.crystal.get_space_group().info()) for e in experiments]
    if len(set(groups)) > 1:
        listed = ", ".join(f"{n}: {g}" for n, g in zip(names, groups))
        raise DataError(
            f"the crystals have different space groups ({listed}): only sweeps "
            "of one space group merge into one map"
        )
    result = {"space_group": groups[0]}
    ambiguous = []
    for name, experiment in zip(names, experiments):
        cell = experiment.crystal.get_unit_cell().parameters()
        logger.info(
            "%s: %s, cell %s", name, groups[0], " ".join(f"{x:.2f}" for x in cell)
        )
        ambiguity = reindexing_ambiguity(experiment.crystal)
        if ambiguity.operators:
            ambiguous.append((name, ambiguity))
    if ambiguous and len(experiments) > 1:
        ambiguity = ambiguous[0][1]
        sweeps = [name for name, _ in ambiguous]
        logger.warning(
            "Indexing ambiguity: the lattice of %s has the symmetry %s, higher than "
            "the point group %s, so each sweep may be indexed in %d equally valid "
            "ways (related by %s). Merging assumes every sweep is indexed alike: "
            "make the indexing consistent first (dials.cosym, or dials.reindex "
            "change_of_basis_op=...), or the merged map mixes unrelated voxels.",
            ", ".join(sweeps),
            ambiguity.lattice_group,
            ambiguity.point_group,
            len(ambiguity.operators) + 1,
            " or ".join(ambiguity.operators),
        )
        result["reindexing"] = {
            "lattice_group": ambiguity.lattice_group,
            "point_group": ambiguity.point_group,
            "operators": ambiguity.operators,
            "sweeps": sweeps,
        }
    return result
