"""process on two sweeps of a crystal whose lattice allows two indexings.

P 21 21 21 with a = b = 40 Å: the tetragonal lattice lets each sweep be
indexed as (h, k, l) or (k, h, -l), the Bragg geometry fitting both. The
simulated halos are stronger along a* than along b*, so the diffuse map
tells the two apart. Sweep 2's crystal model is given reindexed: process
must stop before merging unrelated voxels and name the reindexing; given
consistently, it merges.
"""

import json
import os

import pytest

from dials_diffuse.algorithms.diffuse.crystals import reindexing_ambiguity

pytestmark = pytest.mark.slow

SETUP = {"unit_cell": (40.0, 40.0, 52.0, 90.0, 90.0, 90.0), "frames": 20}


@pytest.fixture(scope="module")
def ambiguous_sweeps(tmp_path_factory):
    """Two sweeps of the a = b crystal (other orientations and noise), and
    sweep 2's experiment reindexed by the lattice's other indexing."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    from dials_diffuse.simulate import simulate_rotation
    from dials_diffuse.simulate.scattering import DiffuseModel

    root = tmp_path_factory.mktemp("ambiguous")
    diffuse = DiffuseModel(halo_amplitude=100.0, halo_weights=(1.0, 0.0, 0.5))
    first, second = (
        simulate_rotation(root / name, seed=seed, diffuse=diffuse, **SETUP)
        for name, seed in (("one", 0), ("two", 1))
    )
    experiments = ExperimentListFactory.from_json_file(str(second["truth_expt"]))
    (operator,) = reindexing_ambiguity(experiments[0].crystal).operators
    from cctbx import sgtbx

    experiments[0].crystal = experiments[0].crystal.change_basis(
        sgtbx.change_of_basis_op(operator)
    )
    reindexed = root / "two_reindexed.expt"
    experiments.as_file(str(reindexed))
    return first["truth_expt"], second["truth_expt"], reindexed, operator


def run_process(workdir, *args):
    from command_line import process as process_program

    previous = os.getcwd()
    os.chdir(workdir)
    try:
        return process_program.run(
            [
                *map(str, args),
                "find_peaks.count_threshold=30",
                "integrate.subdivide=2,2,2",
                "map.limits=-2,2,-2,2,-2,2",
                "output.json=process.json",
                "nproc=2",
            ]
        )
    finally:
        os.chdir(previous)


def test_a_sweep_indexed_the_other_way_is_named_before_merging(
    ambiguous_sweeps, tmp_path, capsys
):
    first, _, reindexed, operator = ambiguous_sweeps
    assert run_process(tmp_path, first, reindexed) == 1
    error = capsys.readouterr().err
    assert "the sweeps are indexed differently" in error
    assert f"change_of_basis_op={operator}" in error and "sweep 2" in error
    assert "Traceback" not in error
    # The sweeps' own work is kept; nothing merged.
    assert (tmp_path / "sweep_2" / "corrected.nxs").is_file()
    assert not (tmp_path / "merged.nxs").exists()
    log = (tmp_path / "dials.diffuse.process.log").read_text()
    assert "Indexing of sweep 2" in log


def test_sweeps_indexed_alike_merge(ambiguous_sweeps, tmp_path):
    first, second, _, operator = ambiguous_sweeps
    assert run_process(tmp_path, first, second) == 0
    summary = json.loads((tmp_path / "process.json").read_text())
    (check,) = summary["results"]["crystals"]["indexing_check"].values()
    scores = {op: cc for op, cc, _ in check["scores"]}
    assert check["best"] == "h,k,l"
    assert scores["h,k,l"] > scores[operator] + 0.1
    assert (tmp_path / "merged.nxs").is_file()
    log = (tmp_path / "dials.diffuse.process.log").read_text()
    assert "their indexing is consistent" in log
    report = (tmp_path / "dials.diffuse.process.html").read_text()
    assert "anisotropic voxel intensities per indexing: h,k,l: CC" in report


@pytest.fixture(scope="module")
def misindexed_run(ambiguous_sweeps, tmp_path_factory):
    """process on the misindexed pair (it stops before scale), its folder."""
    first, _, reindexed, _ = ambiguous_sweeps
    workdir = tmp_path_factory.mktemp("misindexed")
    assert run_process(workdir, first, reindexed) == 1
    return workdir


@pytest.mark.parametrize("program", ["scale", "merge"])
def test_scale_and_merge_check_the_tables_they_are_given(
    misindexed_run, ambiguous_sweeps, program, in_tmp_path, capsys
):
    """The same check from the tables' own cell and space group."""
    import importlib

    module = importlib.import_module(f"command_line.{program}")
    operator = ambiguous_sweeps[3]
    tables = [str(misindexed_run / f"sweep_{n}" / "corrected.nxs") for n in (1, 2)]
    assert module.run([*tables, "output.plot=None"]) == 1
    error = capsys.readouterr().err
    assert "the sweeps are indexed differently" in error
    assert f"sweep_2/corrected.nxs's experiment change_of_basis_op={operator}" in error
    assert module.run([*tables, "output.plot=None", "check_indexing=False"]) == 0
