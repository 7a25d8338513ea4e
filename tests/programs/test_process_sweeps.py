"""dials.diffuse.process on two simulated sweeps of one crystal in one command.

Two sweeps of the simulated crystal mounted in different orientations (the
simulator's seed 0, 30 frames, and seed 1, 20 frames: the diffuse signal is
the same function of hkl, the orientation and the noise differ). Each goes
through import_data ... correct in its own folder; scale, merge and map
take both. The joint merged map is checked against the simulator's truth,
one sweep's recorded command against the step run alone.
"""

import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest

from dials_diffuse.io.scale_model import read_scale_model
from dials_diffuse.io.tables import load_table
from tests.programs.test_diffuse_simulated import scale_constant  # noqa: F401

pytestmark = pytest.mark.slow

SWEEP_FILES = [
    "experiment.expt",
    "data.nxs",
    "peaks.nxs",
    "mask.nxs",
    "integrated.nxs",
    "corrected.nxs",
    "find_peaks.png",
    "dials.diffuse.integrate.log",
]


@pytest.fixture(scope="session")
def second_sweep(tmp_path_factory):
    """The simulated crystal in another orientation: 20 frames of 0.5 degrees."""
    from dials_diffuse.simulate import simulate_rotation

    directory = tmp_path_factory.mktemp("simulated") / "second_sweep"
    return simulate_rotation(directory, seed=1, frames=20)


def run_process(workdir, *args):
    from command_line import process as process_program

    previous = os.getcwd()
    os.chdir(workdir)
    try:
        assert process_program.run(list(args)) == 0
    finally:
        os.chdir(previous)
    return workdir


def two_sweep_args(simulated_rotation, second_sweep):
    return [
        str(simulated_rotation["truth_expt"]),
        str(second_sweep["truth_expt"]),
        "find_peaks.count_threshold=30",
        "integrate.subdivide=4,4,4",
        "map.limits=-2,2,-2,2,-2,2",
        "output.json=process.json",
        "nproc=2",
    ]


@pytest.fixture(scope="module")
def two_sweeps(simulated_rotation, second_sweep, tmp_path_factory):
    """One process run on both sweeps (two .expt files), the two at the same
    time (parallel_sweeps=2); its working folder."""
    return run_process(
        tmp_path_factory.mktemp("two_sweeps"),
        *two_sweep_args(simulated_rotation, second_sweep),
        "parallel_sweeps=2",
    )


def test_sweeps_run_at_once_give_what_they_give_one_after_the_other(
    two_sweeps, simulated_rotation, second_sweep, tmp_path
):
    """The same outputs, value for value; each step's log only its sweep's lines."""
    one_by_one = run_process(
        tmp_path,
        *two_sweep_args(simulated_rotation, second_sweep),
        "parallel_sweeps=1",
        "output.report=None",
    )
    for name in ("sweep_2/corrected.nxs", "merged.nxs"):
        np.testing.assert_array_equal(
            load_table(two_sweeps / name).to_frame().to_numpy(),
            load_table(one_by_one / name).to_frame().to_numpy(),
        )
    for n in (1, 2):
        np.testing.assert_array_equal(
            read_scale_model(two_sweeps / f"scale_{n}.nxs").terms["scaling"].values,
            read_scale_model(one_by_one / f"scale_{n}.nxs").terms["scaling"].values,
        )
    log = (two_sweeps / "dials.diffuse.process.log").read_text()
    assert "2 sweeps, 2 at a time (parallel_sweeps), sharing 2 workers" in log
    assert "sweep_2: Found" in log and "sweep_1: Found" in log
    assert "at a time" not in (one_by_one / "dials.diffuse.process.log").read_text()
    for folder, other in (("sweep_1", "sweep_2"), ("sweep_2", "sweep_1")):
        for step in ("import_data", "find_peaks", "mask_peaks", "integrate"):
            text = (two_sweeps / folder / f"dials.diffuse.{step}.log").read_text()
            assert f"=== {folder}/{step}:" in text
            assert other not in text, f"{folder}/{step} log"


def test_each_sweep_writes_into_its_folder(two_sweeps):
    for folder in ("sweep_1", "sweep_2"):
        for name in SWEEP_FILES:
            assert (two_sweeps / folder / name).is_file(), f"{folder}/{name}"
    for name in ("scale_1.nxs", "scale_2.nxs", "merged.nxs", "map.nxs"):
        assert (two_sweeps / name).is_file(), name
    # Nothing of a sweep's own in the working folder.
    for name in ("data.nxs", "corrected.nxs", "scale.nxs", "dials.diffuse.correct.log"):
        assert not (two_sweeps / name).exists(), name
    summary = json.loads((two_sweeps / "process.json").read_text())
    results = summary["results"]
    assert results["sweep_2/integrate"]["outputs"] == {
        "integrated table": "sweep_2/integrated.nxs",
        "voxel histograms": "sweep_2/integrate.png",
    }
    assert summary["outputs"]["sweep_1 corrected table"] == "sweep_1/corrected.nxs"
    assert results["scale"]["models"] == ["scale_1.nxs", "scale_2.nxs"]
    assert results["crystals"] == {"space_group": "P 21 21 21"}
    assert {"sweep_1/find_peaks", "sweep_2/correct", "merge"} <= set(summary["timings"])
    # The report: each sweep's steps, then the joint ones, each once.
    report = (two_sweeps / "dials.diffuse.process.html").read_text()
    for step in ("find_peaks", "mask_peaks", "integrate", "correct"):
        for folder in ("sweep_1", "sweep_2"):
            assert report.count(f"<h2>dials.diffuse.{step} ({folder})</h2>") == 1
    for step in ("scale", "merge", "map"):
        assert report.count(f"<h2>dials.diffuse.{step}</h2>") == 1
    assert "Indexing ambiguity" not in report
    log = (two_sweeps / "dials.diffuse.process.log").read_text()
    assert log.index("=== sweep_2/correct:") < log.index("=== scale:")
    sweep_log = (two_sweeps / "sweep_2" / "dials.diffuse.integrate.log").read_text()
    assert "=== sweep_2/integrate:" in sweep_log and "sweep_1" not in sweep_log


def test_the_joint_map_holds_both_sweeps_and_matches_truth(
    two_sweeps,
    simulated_rotation,
    scale_constant,  # noqa: F811
):
    tables = [load_table(two_sweeps / f"sweep_{n}/corrected.nxs") for n in (1, 2)]
    summary = json.loads((two_sweeps / "process.json").read_text())
    assert summary["results"]["merge"]["observations"] == sum(map(len, tables))
    merged = load_table(two_sweeps / "merged.nxs").to_frame()
    first = tables[0].to_frame().groupby(["h", "k", "l"]).ngroups
    assert len(merged) > 1.15 * first  # the second orientation adds voxels
    # One crystal at one beam intensity: the two sweeps' scales agree.
    b = [
        read_scale_model(two_sweeps / f"scale_{n}.nxs").terms["scaling"].values.mean()
        for n in (1, 2)
    ]
    assert b[1] / b[0] == pytest.approx(1.0, abs=0.02)
    merged = merged[merged["count"] >= 2]
    hkl = merged[["h", "k", "l"]].to_numpy()
    with h5py.File(simulated_rotation["truth"], "r") as truth:
        grid = truth["diffuse/grid"][()]
        axes = [truth[f"diffuse/{a}"][()] for a in "hkl"]
        background = json.loads(truth.attrs["setup"])["background"]
    index = tuple(
        np.clip(
            np.rint((hkl[:, i] - axes[i][0]) / (axes[i][1] - axes[i][0])).astype(int),
            0,
            len(axes[i]) - 1,
        )
        for i in range(3)
    )
    expected = grid[index] + background
    recovered = merged["intensity"].to_numpy() / scale_constant
    assert np.corrcoef(recovered, expected)[0, 1] > 0.9
    assert np.median(recovered / expected) == pytest.approx(1.0, abs=0.03)


def test_a_sweeps_recorded_command_runs_alone(two_sweeps):
    from dials_diffuse.command_line import correct as correct_program

    summary = json.loads((two_sweeps / "process.json").read_text())
    command = summary["results"]["sweep_2/correct"]["command"].split()
    assert command[:3] == [
        "dials.diffuse.correct",
        "sweep_2/experiment.expt",
        "sweep_2/integrated.nxs",
    ]
    previous = os.getcwd()
    os.chdir(two_sweeps)
    try:
        again = [*command[1:], "output.table=again.nxs", "output.plot=None"]
        assert correct_program.run([*again, "output.log=again.log"]) == 0
    finally:
        os.chdir(previous)
    np.testing.assert_array_equal(
        load_table(two_sweeps / "again.nxs").to_frame().to_numpy(),
        load_table(two_sweeps / "sweep_2/corrected.nxs").to_frame().to_numpy(),
    )


def test_every_output_is_checked_before_any_work(
    simulated_rotation, second_sweep, in_tmp_path, capsys
):
    """A multi-experiment .expt; an output named twice stops the run at once."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    from command_line import process as process_program

    both = ExperimentListFactory.from_json_file(
        str(simulated_rotation["truth_expt"]), check_format=False
    )
    both.extend(
        ExperimentListFactory.from_json_file(
            str(second_sweep["truth_expt"]), check_format=False
        )
    )
    both.as_json("both.expt")
    # The merged table named as the second sweep's scaling model (a name
    # process derives): refused before any work, naming both.
    args = [
        "both.expt",
        "find_peaks.count_threshold=30",
        "merge.output.table=scale_2.nxs",
    ]
    assert process_program.run(args) == 1
    error = capsys.readouterr().err
    assert "scale_2.nxs: both merge.output.table and scale.output.model 2" in error
    assert not (in_tmp_path / "sweep_1").exists()
    # An output inside a sweep folder process has not made yet: refused too.
    args[-1] = "merge.output.table=sweep_2/corrected.nxs"
    assert process_program.run(args) == 1
    assert "sweep_2/corrected.nxs: output directory sweep_2 does not exist" in (
        capsys.readouterr().err
    )
    assert not (in_tmp_path / "sweep_1").exists()
    args = ["both.expt", "find_peaks.count_threshold=30", "map.output.map=both.expt"]
    assert process_program.run(args) == 1
    assert "both.expt: refusing to overwrite an input file" in capsys.readouterr().err


def _reintegrate(workdir, *args):
    """dials.diffuse.reintegrate on both sweeps of the process run (masks, models)."""
    from dials_diffuse.command_line import reintegrate as reintegrate_program

    files = [
        f"sweep_{n}/{name}" for name in ("experiment.expt", "data.nxs") for n in (1, 2)
    ]
    files += ["sweep_1/mask.nxs", "sweep_2/mask.nxs", "scale_1.nxs", "scale_2.nxs"]
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        assert reintegrate_program.run([*files, *args]) == 0
    finally:
        os.chdir(previous)


def test_reintegrate_sums_what_correct_and_scale_give(two_sweeps):
    """At the chain's grid: the same counts and pixels per voxel, and the same
    exposure x corrections x scale as the corrected observations with their
    models."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    from dials_diffuse.algorithms.diffuse.correct import correction_factors

    _reintegrate(
        two_sweeps, "subdivide=4,4,4", "output_type=counts", "output.table=counts.nxs"
    )
    observations = []
    for n in (1, 2):
        experiment = ExperimentListFactory.from_json_file(
            str(two_sweeps / f"sweep_{n}/experiment.expt"), check_format=False
        )[0]
        table = load_table(two_sweeps / f"sweep_{n}/corrected.nxs").to_frame()
        factors = correction_factors(
            experiment,
            table["iy"],
            table["ix"],
            ("solid_angle", "attenuation", "efficiency", "polarization"),
        )
        exposure = table["seconds"] * np.prod(list(factors.values()), axis=0)
        a, b, c, d = read_scale_model(two_sweeps / f"scale_{n}.nxs").factors(table)
        table["scale"] = exposure * a * b * d
        table["background_counts"] = exposure * a * d * c
        observations.append(table)
    columns = ["counts", "pixels", "scale", "background_counts"]
    chain = (
        pd.concat(observations).groupby(["h", "k", "l"])[columns].sum().reset_index()
    )
    ours = load_table(two_sweeps / "counts.nxs").to_frame()
    both = ours.merge(chain, on=["h", "k", "l"], suffixes=("", "_chain"))
    assert len(both) == len(ours) == len(chain)
    np.testing.assert_array_equal(both["counts"], both["counts_chain"])
    np.testing.assert_array_equal(both["pixels"], both["pixels_chain"])
    ratio = both["scale"] / both["scale_chain"]
    assert np.median(ratio) == pytest.approx(1.0, abs=1e-6)
    # Voxel observations spread over several chunks: the factors at each
    # chunk's mean position rather than at the observation's (second order).
    assert np.percentile(np.abs(ratio - 1), 90) < 1e-3
    assert np.percentile(np.abs(ratio - 1), 99) < 5e-3
    assert np.abs(ratio - 1).max() < 2e-2
    # The chain's merged intensities (inverse-variance means of the same
    # observations) estimate the same voxel intensities.
    _reintegrate(two_sweeps, "subdivide=4,4,4")
    reintegrated = load_table(two_sweeps / "reintegrated.nxs").to_frame()
    merged = load_table(two_sweeps / "merged.nxs").to_frame()
    both = reintegrated.merge(merged, on=["h", "k", "l"], suffixes=("", "_merged"))
    assert len(both) == len(merged)
    assert np.corrcoef(both["intensity"], both["intensity_merged"])[0, 1] > 0.99


def test_reintegrate_refuses_a_file_it_cannot_use(two_sweeps, capsys):
    """corrected.nxs is ours but neither images, mask nor scale model: named, exit 1."""
    from dials_diffuse.command_line import reintegrate as reintegrate_program

    args = [
        str(two_sweeps / f"sweep_1/{name}")
        for name in ("experiment.expt", "corrected.nxs")
    ]
    before = (two_sweeps / "sweep_1/corrected.nxs").read_bytes()
    assert reintegrate_program.run([*args, "output.table=unused.nxs"]) == 1
    error = capsys.readouterr().err
    assert "corrected.nxs: not a data.nxs, mask.nxs or scale.nxs" in error
    assert "Traceback" not in error
    assert (two_sweeps / "sweep_1/corrected.nxs").read_bytes() == before


def test_reintegrate_a_finer_map_against_truth(
    two_sweeps,
    simulated_rotation,
    scale_constant,  # noqa: F811
):
    """Scaled at subdivide 4, reintegrated at 6: the finer map against truth."""
    _reintegrate(two_sweeps, "subdivide=6,6,6", "output.table=fine.nxs")
    table = load_table(two_sweeps / "fine.nxs")
    assert list(table.attrs["subdivide"]) == [6, 6, 6]
    fine = table.to_frame()
    assert np.allclose(fine[["h", "k", "l"]] * 6, np.rint(fine[["h", "k", "l"]] * 6))
    fine = fine[fine["pixels"] >= 20]
    hkl = fine[["h", "k", "l"]].to_numpy()
    with h5py.File(simulated_rotation["truth"], "r") as truth:
        grid = truth["diffuse/grid"][()]
        axes = [truth[f"diffuse/{a}"][()] for a in "hkl"]
        background = json.loads(truth.attrs["setup"])["background"]
    index = tuple(
        np.clip(
            np.rint((hkl[:, i] - axes[i][0]) / (axes[i][1] - axes[i][0])).astype(int),
            0,
            len(axes[i]) - 1,
        )
        for i in range(3)
    )
    expected = grid[index] + background
    recovered = fine["intensity"].to_numpy() / scale_constant
    assert np.corrcoef(recovered, expected)[0, 1] > 0.9
    assert np.median(recovered / expected) == pytest.approx(1.0, abs=0.03)


def test_crystals_of_different_space_groups_are_refused_before_any_work(
    simulated_rotation, second_sweep, in_tmp_path, capsys
):
    from cctbx import sgtbx
    from dxtbx.model.experiment_list import ExperimentListFactory

    from command_line import process as process_program

    other = ExperimentListFactory.from_json_file(
        str(second_sweep["truth_expt"]), check_format=False
    )
    other[0].crystal.set_space_group(sgtbx.space_group_info("P 2 2 2").group())
    other.as_json("other.expt")
    args = [
        str(simulated_rotation["truth_expt"]),
        "other.expt",
        "find_peaks.count_threshold=30",
    ]
    assert process_program.run(args) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert "different space groups" in error[0]
    assert "sweep 2 (other.expt): P 2 2 2" in error[0]
    assert not (in_tmp_path / "sweep_1").exists()


def test_a_sweep_that_fails_at_once_with_another_stops_the_run(monkeypatch):
    """Sweeps run at once: the failing sweep's error reaches the program (one
    line, exit 1) once the other sweep has finished its current step (it
    starts no other); lines are labelled again as usual."""
    import logging
    import threading
    import time
    import types

    from command_line import process
    from dials_diffuse.util.errors import UserError

    finished = []

    def run_sweep(params, sweeps, number, chain, pmap, imageset):
        if number == 1:
            raise UserError("step sweep_2/find_peaks failed: no peak")
        time.sleep(0.2)  # its current step; the next one is not started:
        if chain.stopping.is_set():
            raise process._Stopped("find_peaks")
        finished.append(number)
        return number

    class Imageset:
        def __init__(self, path):
            self.path = path

        def paths(self):
            return [self.path]

    experiments = [types.SimpleNamespace(imageset=Imageset(f"/d/{n}.h5")) for n in "ab"]
    monkeypatch.setattr(process, "run_sweep", run_sweep)
    monkeypatch.setattr(process, "readable_experiments", lambda inputs: experiments)
    params = process.program.master_phil.extract()
    params.parallel_sweeps = 2

    class Sweeps:
        labels = ["sweep_1", "sweep_2"]

        def __len__(self):
            return 2

    sweeps = Sweeps()
    chain = types.SimpleNamespace(
        local=threading.local(), concurrent=False, stopping=threading.Event()
    )
    pmap = types.SimpleNamespace(workers=2)
    with pytest.raises(UserError, match="sweep_2/find_peaks failed"):
        process.run_sweeps(params, None, sweeps, chain, pmap)
    assert chain.stopping.is_set() and finished == []
    assert not chain.concurrent
    chain.stopping.clear()
    record = logging.getLogRecordFactory()("x", logging.INFO, "", 0, "plain", (), None)
    assert record.msg == "plain"
    # Both sweeps succeed: their results in sweep order.
    monkeypatch.setattr(process, "run_sweep", lambda *a, **k: a[2])
    assert process.run_sweeps(params, None, sweeps, chain, pmap) == [0, 1]
    # One image file read by both: one after the other, in this thread.
    experiments[1].imageset.path = "/d/a.h5"
    threads = []
    monkeypatch.setattr(
        process, "run_sweep", lambda *a, **k: threads.append(threading.get_ident())
    )
    process.run_sweeps(params, None, sweeps, chain, pmap)
    assert threads == [threading.get_ident()] * 2
