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
    return ambiguity_of_symmetry(crystal.get_crystal_symmetry(), max_delta)


def ambiguity_of_symmetry(symmetry, max_delta=MAX_DELTA_DEG):
    """`reindexing_ambiguity` of a cctbx crystal.symmetry (cell and space group)."""
    from cctbx import sgtbx
    from cctbx.sgtbx import lattice_symmetry

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


def _merging_symmetry(space_group):
    """What sweeps merged into one map must share: the point group in the
    crystal's axes and the systematic absences (tested on |h|, |k|, |l| <= 4).

    Not the origin: dials.reindex of a P 21 21 21 crystal by -k,-h,-l gives
    P 21 21 21 (a+1/4,b-1/4,c-1/4), with the same intensities, absences and
    asymmetric unit. P 21 21 2 and P 2 21 21 (the screw axes along other
    crystal axes) differ in their absences, and are refused.
    """
    import itertools

    from cctbx import sgtbx

    point_group = space_group.build_derived_point_group()
    indices = itertools.product(range(-4, 5), repeat=3)
    absent = tuple(space_group.is_sys_absent(hkl) for hkl in indices)
    return str(sgtbx.space_group_info(group=point_group)), absent


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
        When the crystals' space groups differ (beyond their origin).
    """
    groups = [str(e.crystal.get_space_group().info()) for e in experiments]
    if len({_merging_symmetry(e.crystal.get_space_group()) for e in experiments}) > 1:
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


#: Standard errors of the difference (Fisher z) by which another indexing of
#: a sweep must agree better with the first sweep than its own indexing.
INDEXING_Z = 3.0
#: Shells of |s| whose mean is taken out of the voxels before comparing.
INDEXING_SHELLS = 20
AS_INDEXED = "h,k,l"


@dataclasses.dataclass
class IndexingCheck:
    """How one sweep's voxels agree with the first sweep's, per indexing.

    Attributes
    ----------
    sweep : str
    scores : list of (str, float, int)
        (operator, CC of the anisotropic voxel intensities, common voxels),
        "h,k,l" for the sweep as indexed; operators that do not map the
        voxel grid onto itself are left out.
    best : str
        The operator that agrees best beyond `INDEXING_Z` standard errors,
        else "h,k,l".
    """

    sweep: str
    scores: list
    best: str = AS_INDEXED

    @property
    def consistent(self):
        return self.best == AS_INDEXED

    def describe(self):
        return ", ".join(f"{op}: CC {cc:.3f} ({n} voxels)" for op, cc, n in self.scores)


def anisotropic_voxel_means(table, subdivide, space_group, operator=AS_INDEXED):
    """Mean intensity per asymmetric-unit voxel, less its |s| shell's mean.

    Parameters
    ----------
    table : DataFrame or Table
        A corrected table (columns h, k, l, s, intensity).
    subdivide : (int, int, int)
    space_group : cctbx sgtbx.space_group
    operator : str
        Reindexing operator applied to the indices first (as dials.reindex's
        ``change_of_basis_op``, e.g. "k,h,-l").

    Returns
    -------
    pandas Series of float, indexed by an integer voxel key.

    Raises
    ------
    DataError
        When the operator moves voxel centres off the grid (subdivide not
        equal along the axes it exchanges).
    """
    import numpy as np
    import pandas as pd
    from cctbx import sgtbx

    from dials_diffuse.algorithms.diffuse.correct import map_to_asu
    from dials_diffuse.algorithms.diffuse.integrate import pack_voxel_index

    rotation = np.array(sgtbx.change_of_basis_op(operator).c_inv().r().as_double())
    hkl = np.column_stack([np.asarray(table[c], np.float64) for c in "hkl"])
    hkl = hkl @ rotation.reshape(3, 3)
    asu, _ = map_to_asu(hkl, subdivide, space_group)
    scale = int(np.lcm.reduce(np.asarray(subdivide, dtype=np.int64)))
    key = pack_voxel_index(np.rint(asu * scale).astype(np.int64))
    voxels = (
        pd.DataFrame(
            {
                "key": key,
                "s": np.asarray(table["s"]),
                "i": np.asarray(table["intensity"]),
            }
        )
        .groupby("key")
        .mean()
    )
    shell = pd.qcut(voxels["s"], INDEXING_SHELLS, labels=False, duplicates="drop")
    return voxels["i"] - voxels["i"].groupby(shell).transform("mean")


def check_indexing(tables, names, operators, subdivide, space_group):
    """Which indexing of each sweep agrees with the first sweep's voxels.

    The alternative indexings of an ambiguous lattice give the same Bragg
    geometry but exchange voxels the point group does not relate; the
    diffuse map tells them apart where it is anisotropic. Each sweep's
    voxels (after each operator) are correlated with the first sweep's, the
    isotropic part (shell means of |s|) taken out of both.

    Parameters
    ----------
    tables : iterable of DataFrame or Table
        Corrected tables, the first the reference; taken one at a time (a
        generator that loads each keeps one table in memory).
    names : list of str
    operators : list of str
        The alternative indexings (`reindexing_ambiguity`).
    subdivide : (int, int, int)
    space_group : cctbx sgtbx.space_group

    Returns
    -------
    list of IndexingCheck, one per sweep after the first.
    """
    import numpy as np

    tables = iter(tables)
    reference = anisotropic_voxel_means(next(tables), subdivide, space_group)
    checks = []
    for name, table in zip(names[1:], tables):
        scores = []
        for operator in (AS_INDEXED, *operators):
            try:
                means = anisotropic_voxel_means(table, subdivide, space_group, operator)
            except DataError:
                continue  # the operator does not map this voxel grid onto itself
            both = reference.to_frame("first").join(means.rename("this"), how="inner")
            if len(both) > 10:
                cc = float(np.corrcoef(both["first"], both["this"])[0, 1])
                scores.append((operator, cc, len(both)))
        check = IndexingCheck(name, scores)
        if scores and scores[0][0] == AS_INDEXED:
            own = scores[0]
            best = max(scores, key=lambda score: score[1])
            sigma = np.sqrt(1 / (own[2] - 3) + 1 / (best[2] - 3))
            z_best, z_own = np.arctanh(np.clip([best[1], own[1]], -0.999999, 0.999999))
            if z_best - z_own > INDEXING_Z * sigma:
                check.best = best[0]
        checks.append(check)
    return checks


#: The indexing check's parameter, in process and in the scale and merge programs.
check_indexing_phil = """
check_indexing = True
  .type = bool
  .help = "When the lattice allows other indexings than the point group"
          "(e.g. P 21 21 21 with a = b), compare each sweep's voxels with the"
          "first sweep's under each of them (the anisotropic part: the mean"
          "of each |s| shell taken out) and stop before merging if one agrees"
          "clearly better reindexed, naming the dials.reindex command that"
          "makes it consistent. False: merge them as they are."
"""

#: The columns of a corrected table that the indexing check reads.
INDEXING_COLUMNS = ("h", "k", "l", "s", "intensity")


def check_tables(tables, names, attrs):
    """`check_indexing` of corrected tables, from their own symmetry.

    `attrs` (the first table's attributes: unit_cell, space_group,
    subdivide) give the alternative indexings; none, and the check is empty
    and `tables` (a list, or a generator that loads each) is not read.
    """
    from cctbx import crystal

    symmetry = crystal.symmetry(
        unit_cell=tuple(attrs["unit_cell"]),
        space_group_symbol=str(attrs["space_group"]),
    )
    operators = ambiguity_of_symmetry(symmetry).operators
    if not operators or len(names) < 2:
        return []
    return check_indexing(
        tables,
        names,
        operators,
        tuple(int(n) for n in attrs["subdivide"]),
        symmetry.space_group(),
    )


def check_table_files(paths):
    """`check_tables` of corrected table files, read one at a time, only the
    columns the check needs (for a program that holds other columns)."""
    from dials_diffuse.io.tables import load_table

    tables = (
        load_table(path, "hkl_table", finite=True, columns=INDEXING_COLUMNS)
        for path in paths
    )
    first = load_table(paths[0], "hkl_table", columns=())
    return check_tables(tables, [str(path) for path in paths], first.attrs)


def refuse_inconsistent_indexing(checks, fixes):
    """Log each check; a DataError if a sweep is indexed unlike the first.

    Parameters
    ----------
    checks : list of IndexingCheck
    fixes : dict
        Sweep name -> what to reindex, e.g. its experiment file (the
        message names ``dials.reindex <it> change_of_basis_op=<op>``).
    """
    for check in checks:
        logger.info(
            "\nIndexing of %s against the first sweep (anisotropic voxel "
            "intensities): %s",
            check.sweep,
            check.describe() or "no voxels in common",
        )
    lines = []
    for check in checks:
        if not check.consistent:
            scores = {op: cc for op, cc, _ in check.scores}
            lines.append(
                f"{check.sweep} agrees with the first sweep reindexed by "
                f"{check.best} (CC {scores[check.best]:.2f}) far better than as "
                f"indexed (CC {scores[AS_INDEXED]:.2f}): dials.reindex "
                f"{fixes[check.sweep]} change_of_basis_op={check.best}"
            )
    if lines:
        raise DataError(
            "the sweeps are indexed differently and would merge unrelated voxels: "
            + "; ".join(lines)
            + ". Reindex, and run again (check_indexing=False merges them as they are)"
        )
    if checks and all(check.scores for check in checks):
        logger.info("The sweeps agree best as indexed: their indexing is consistent.")
