"""Every program under everyday faults: one line naming the file, the right exit
code, no traceback, no partial output, inputs byte-identical.

The programs and how to run them are in `programs.py`; each test runs every
program it applies to. Most run in this process; the full disk and kill -9
run the program as a command (a separate process), as users do.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.faults.conftest import fingerprints, mounted_tmpfs
from tests.faults.programs import (
    PROGRAMS,
    READING_SWEEP_IMAGES,
    WITH_INPUTS,
    WITH_REFERENCES,
    WITH_TABLES,
)


def world_files(world):
    return fingerprints(world.values())


def run_here(case, args, capsys):
    """Run a program in this process: (exit code, stderr)."""
    code = case.module.run(args)
    return code, capsys.readouterr().err


def run_as_command(case, args, cwd, timeout=300):
    """Run a program as a separate process: (exit code, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", f"dials_diffuse.command_line.{case.name}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stderr


def assert_clean_failure(case, code, err, name, directory, expected_code=1, kept=()):
    """One line naming `name`, the exit code, no traceback, nothing half-written.

    `directory` may hold only the program's logs and `kept` (files the test
    put there) afterwards.
    """
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dials.diffuse.{case.name}: error: "), err
    assert str(name) in lines[0], err
    left = sorted(
        path.name
        for path in Path(directory).iterdir()
        if not path.name.startswith("dials.diffuse.") and path.name not in kept
    )
    if case.name == "process":  # earlier steps' complete outputs stay
        left = [name for name in left if ".partial" in name]
    assert left == [], f"left behind: {left}"
    assert not list(Path(directory).rglob("*.partial"))


def replaced(args, old, new):
    return [arg.replace(str(old), str(new)) for arg in args]


# -- damaged inputs -----------------------------------------------------------


def _damage(kind, source, target):
    data = source.read_bytes()
    if kind == "empty":
        target.write_bytes(b"")
    elif kind == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif kind == "wrong_kind":  # another kind of file under the same name
        if data.startswith(b"\x89HDF"):
            with h5py.File(target, "w") as handle:
                handle.attrs["creator"] = "dials-diffuse (damaged)"
                handle["unrelated"] = np.arange(3)
        else:
            target.write_bytes(b"\x89PNG\r\n\x1a\n not what the program reads")


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "wrong_kind"])
@pytest.mark.parametrize("case", WITH_INPUTS, ids=str)
def test_damaged_input(case, kind, world, in_tmp_path, capsys):
    before = world_files(world)
    args = case.args(world)
    source = Path(args[case.primary])
    target = in_tmp_path / source.name
    if kind != "missing":
        _damage(kind, source, target)
    args[case.primary] = target.name
    code, err = run_here(case, args, capsys)
    assert_clean_failure(case, code, err, target.name, in_tmp_path, kept=[target.name])
    assert world_files(world) == before


@pytest.mark.parametrize("case", WITH_TABLES, ids=str)
@pytest.mark.parametrize("fault", ["ragged", "not_numbers", "non_finite"])
def test_damaged_table(case, fault, world, in_tmp_path, capsys):
    """Our tables with columns of unequal length, strings, NaN/Inf: named errors."""
    key, group, column = case.table
    source = world[key]
    target = in_tmp_path / source.name
    shutil.copy(source, target)
    with h5py.File(target, "r+") as handle:
        dataset = handle[f"entry/{group}/{column}"]
        values = dataset[()]
        del handle[f"entry/{group}/{column}"]
        if fault == "ragged":
            values = values[:-1]
        elif fault == "not_numbers":
            values = np.array([b"x"] * len(values))
        else:
            values = values.astype(np.float64)
            values[len(values) // 2] = np.inf if case.name == "map" else np.nan
        handle[f"entry/{group}/{column}"] = values
    before = world_files(world)
    args = replaced(case.args(world), source, target.name)
    code, err = run_here(case, args, capsys)
    assert_clean_failure(case, code, err, target.name, in_tmp_path, kept=[target.name])
    assert world_files(world) == before


# -- outputs over inputs and referenced files ---------------------------------


@pytest.mark.parametrize("case", WITH_INPUTS, ids=str)
@pytest.mark.parametrize("output", ["own", "output.log", "output.json"])
def test_output_over_an_input(case, output, world, in_tmp_path, capsys):
    before = world_files(world)
    args = case.args(world)
    target = args[case.primary]
    key = case.output if output == "own" else output
    code, err = run_here(case, [*args, f"{key}={target}"], capsys)
    assert_clean_failure(case, code, err, target, in_tmp_path)
    assert "refusing to overwrite" in err
    assert world_files(world) == before


@pytest.mark.parametrize("case", WITH_REFERENCES, ids=str)
def test_output_over_a_referenced_file(case, world, in_tmp_path, capsys):
    """An image data file the .expt or master refers to is never replaced."""
    before = world_files(world)
    target = world[case.referenced]
    code, err = run_here(case, [*case.args(world), f"{case.output}={target}"], capsys)
    assert_clean_failure(case, code, err, target, in_tmp_path)
    assert world_files(world) == before


@pytest.mark.parametrize("case", WITH_INPUTS, ids=str)
def test_two_outputs_with_one_name(case, world, in_tmp_path, capsys):
    args = [*case.args(world), f"{case.output}=same.out", "output.json=same.out"]
    code, err = run_here(case, args, capsys)
    assert_clean_failure(case, code, err, "same.out", in_tmp_path)


def test_phil_file_is_an_input(world, in_tmp_path, capsys):
    case = PROGRAMS[0]
    (in_tmp_path / "params.phil").write_text("compression_level = 3\n")
    before = (in_tmp_path / "params.phil").read_bytes()
    args = [*case.args(world), "params.phil", "output.data=params.phil"]
    code, err = run_here(case, args, capsys)
    assert_clean_failure(
        case, code, err, "params.phil", in_tmp_path, kept=["params.phil"]
    )
    assert (in_tmp_path / "params.phil").read_bytes() == before


# -- images that cannot be read in full ---------------------------------------


def _sweep_copy(world, directory, fault):
    """The sweep's .expt, master and data file in `directory`, the data file faulty."""
    for key in ("master", "data_file"):
        shutil.copy(world[key], directory / world[key].name)
    text = (
        world["expt"]
        .read_text()
        .replace(str(world["master"]), str(directory / world["master"].name))
    )
    expt = directory / "sweep.expt"
    expt.write_text(text)
    data_file = directory / world["data_file"].name
    if fault == "missing":
        data_file.unlink()
    else:
        data = data_file.read_bytes()
        data_file.write_bytes(data[: len(data) // 2])
    return expt, data_file


@pytest.mark.parametrize("fault", ["missing", "truncated"])
@pytest.mark.parametrize("case", READING_SWEEP_IMAGES, ids=str)
def test_unreadable_data_file(case, fault, world, in_tmp_path, capsys):
    """HDF5 reads a missing or truncated data file as zeros: here it is an error."""
    inputs = in_tmp_path / "inputs"
    inputs.mkdir()
    expt, data_file = _sweep_copy(world, inputs, fault)
    args = replaced(case.args(world), world["expt"], expt)
    code, err = run_here(case, args, capsys)
    assert_clean_failure(
        case,
        code,
        err,
        f"{data_file}: image 1 cannot be read",
        in_tmp_path,
        kept=["inputs"],
    )


def test_frame_statistics_names_a_missing_series_file(world, in_tmp_path, capsys):
    case = next(c for c in PROGRAMS if c.name == "frame_statistics")
    master = in_tmp_path / world["series"].name
    shutil.copy(world["series"], master)
    code, err = run_here(case, [master.name], capsys)
    assert_clean_failure(
        case, code, err, world["series_data"].name, in_tmp_path, kept=[master.name]
    )


# -- directories that cannot take the outputs ---------------------------------


@pytest.mark.parametrize("case", PROGRAMS, ids=str)
def test_missing_output_directory(case, world, in_tmp_path, capsys):
    args = [*case.args(world), f"{case.output}=nowhere/out.file"]
    code, err = run_here(case, args, capsys)
    assert_clean_failure(case, code, err, "nowhere", in_tmp_path)


@pytest.mark.parametrize("case", PROGRAMS, ids=str)
def test_read_only_directory(case, world, in_tmp_path, capsys):
    with mounted_tmpfs(in_tmp_path / "ro", size="64k", read_only=True):
        args = [*case.args(world), f"{case.output}=ro/out.file"]
        code, err = run_here(case, args, capsys)
        assert_clean_failure(case, code, err, "ro/out.file", in_tmp_path, kept=["ro"])
        assert "not writable" in err


def _fill(directory):
    """Fill a file system until it has no space left."""
    descriptor = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)


def output_name(case, stem="out"):
    """A name for the case's output with the suffix of its default name."""
    params = case.module.program.master_phil.extract()
    for part in case.output.split("."):
        params = getattr(params, part)
    suffix = Path(str(params)).suffix if params else ""
    return f"{stem}{suffix}"


@pytest.mark.parametrize("case", PROGRAMS, ids=str)
def test_full_disk(case, world, in_tmp_path):
    """A full disk: one line naming the output (no HDF5 crash), nothing half-written."""
    before = world_files(world)
    with mounted_tmpfs(in_tmp_path / "full", size="256k") as full:
        _fill(full)
        target = f"full/{output_name(case)}"
        args = [*case.args(world), f"{case.output}={target}"]
        code, err = run_as_command(case, args, in_tmp_path)
        # Outputs written completely before the disk filled may stay.
        kept = ["full", "frame_statistics.csv"]
        assert_clean_failure(case, code, err, target, in_tmp_path, kept=kept)
        assert sorted(p.name for p in full.iterdir()) == ["filler"]
    assert world_files(world) == before


# -- killed runs ----------------------------------------------------------------


def _dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("case", PROGRAMS, ids=str)
def test_stale_temporaries_of_a_killed_run_are_removed(
    case, world, in_tmp_path, capsys
):
    output = output_name(case)
    stale = in_tmp_path / f".{output}.{_dead_pid()}.0123abcd.partial"
    stale.write_bytes(b"half written")
    args = [*case.args(world), f"{case.output}={output}"]
    assert case.module.run(args) == 0, capsys.readouterr().err
    assert not stale.exists()
    assert (in_tmp_path / output).exists()


def test_kill_9_mid_write_then_rerun(world, in_tmp_path):
    """import_data killed while writing data.nxs: no data.nxs; the rerun cleans up."""
    args = [str(world["expt"]), "nproc=1", "compression_level=9", "chunks=1,64,64"]
    command = [sys.executable, "-m", "dials_diffuse.command_line.import_data", *args]
    process = subprocess.Popen(
        command, cwd=in_tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not list(in_tmp_path.glob(".data.nxs.*.partial")):
        assert process.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (in_tmp_path / "data.nxs").exists()
    assert list(in_tmp_path.glob(".data.nxs.*.partial"))
    code, err = run_as_command(PROGRAMS[0], args, in_tmp_path)
    assert code == 0, err
    assert (in_tmp_path / "data.nxs").is_file()
    assert not list(in_tmp_path.glob("*.partial"))


# -- usage ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, argument",
    [
        ("integrate", "subdivide=2,2"),
        ("simulate", "kind=powder"),
        ("frame_statistics", "detrend.method=quadratic"),
        ("import_data", "compression_level=fast"),
    ],
)
def test_command_line_that_cannot_be_understood(
    case, argument, world, in_tmp_path, capsys
):
    case = next(c for c in PROGRAMS if c.name == case)
    code, err = run_here(case, [*case.args(world), argument], capsys)
    assert_clean_failure(
        case, code, err, argument.split("=")[0], in_tmp_path, expected_code=2
    )


# -- inputs of the wrong shape ---------------------------------------------------


@pytest.mark.parametrize("name", ["find_ring_center", "polar_transform", "integrate"])
def test_mask_of_the_wrong_shape(name, world, in_tmp_path, capsys):
    case = next(c for c in PROGRAMS if c.name == name)
    args = case.args(world)
    if name == "integrate":
        mask = in_tmp_path / "small_mask.nxs"
        shutil.copy(world["mask.nxs"], mask)
        with h5py.File(mask, "r+") as handle:
            frames = handle["entry/mask/mask"].shape[0]
            del handle["entry/mask/mask"]
            handle["entry/mask/mask"] = np.zeros((frames, 10, 10), dtype=np.uint8)
        args = replaced(args, world["mask.nxs"], mask.name)
    else:
        mask = in_tmp_path / "small_mask.npy"
        np.save(mask, np.ones((10, 10), dtype=bool))
        args = replaced(args, world["sacla_mask"], mask.name)
    before = world_files(world)
    code, err = run_here(case, args, capsys)
    assert_clean_failure(case, code, err, mask.name, in_tmp_path, kept=[mask.name])
    assert world_files(world) == before


# -- non-finite pixels ------------------------------------------------------------


def test_non_finite_pixels_are_excluded_and_counted(world, in_tmp_path, capsys):
    """NaN/Inf pixels act as masked pixels: the same ring, and a count in the log."""
    import json

    from dxtbx.model.experiment_list import ExperimentListFactory

    case = next(c for c in PROGRAMS if c.name == "find_ring_center")
    shots = in_tmp_path / world["sacla"].name
    shutil.copy(world["sacla"], shots)
    planted = 0
    with h5py.File(shots, "r+") as handle:
        names = []
        handle.visititems(
            lambda name, item: (
                names.append(name)
                if isinstance(item, h5py.Dataset) and name.endswith("detector_data")
                else None
            )
        )
        for name in names:
            image = handle[name][()].astype(np.float32)
            image[::7, ::5] = np.nan
            image[3, :] = np.inf
            planted += int(np.count_nonzero(~np.isfinite(image)))
            del handle[name]
            handle[name] = image
    args = [shots.name, f"mask={world['sacla_mask']}", "output.json=ring.json"]
    assert case.module.run(args) == 0, capsys.readouterr().err
    log = (in_tmp_path / "dials.diffuse.find_ring_center.log").read_text()
    assert f"{planted} non-finite pixel value(s)" in log
    summary = json.loads((in_tmp_path / "ring.json").read_text())
    assert sum(summary["results"]["non_finite_pixels"].values()) == planted

    def centre(path):
        experiment = ExperimentListFactory.from_json_file(str(path), False)[0]
        return experiment.detector[0].get_beam_centre_px(experiment.beam.get_s0())

    np.testing.assert_allclose(
        centre(in_tmp_path / "ring_center.expt"),
        centre(world["ring_center.expt"]),
        atol=0.05,
    )


@pytest.mark.parametrize("output", ["output.log", "output.json"])
def test_log_or_summary_on_a_full_disk(output, world, in_tmp_path):
    """A log that cannot be written stops the run before its work; a summary
    that cannot be written makes the exit code non-zero."""
    case = PROGRAMS[0]
    with mounted_tmpfs(in_tmp_path / "full", size="256k") as full:
        _fill(full)
        args = [*case.args(world), f"{output}=full/run.txt"]
        code, err = run_as_command(case, args, in_tmp_path)
        kept = ["full", "data.nxs"] if output == "output.json" else ["full"]
        assert_clean_failure(case, code, err, "full/run.txt", in_tmp_path, kept=kept)
        assert "no space left" in err
        assert (in_tmp_path / "data.nxs").exists() == (output == "output.json")


def test_process_checks_the_last_step_outputs_before_the_first_step(
    world, in_tmp_path, capsys
):
    """map's CCP4 name over an image data file: refused before import_data runs."""
    case = next(c for c in PROGRAMS if c.name == "process")
    before = world_files(world)
    target = world["data_file"]
    args = [*case.args(world), f"map.output.ccp4={target}"]
    code, err = run_here(case, args, capsys)
    assert_clean_failure(case, code, err, target, in_tmp_path)
    assert not (in_tmp_path / "data.nxs").exists()
    assert world_files(world) == before
