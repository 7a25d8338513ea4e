"""The fault suite's data: every program's inputs, made once per session.

`world` holds a simulated NXmx rotation sweep (its .expt, master and data
file), the diffuse chain's files from one `dials.diffuse.process` run
(data.nxs ... merged.nxs), simulated SACLA shots with their ring_center.expt
and polar.h5, a simulated DECTRIS Eiger series and a synthetic integrated
transmission series (.refl/.expt). Tests never write into it: that they
leave it byte-identical is what they check.
"""

import contextlib
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def working_directory(path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(previous)


@pytest.fixture(scope="session")
def world(
    simulated_rotation,
    simulated_sacla,
    simulated_eiger_series,
    tmp_path_factory,
):
    from dials_diffuse.command_line import find_ring_center, polar_transform, process
    from tests.transmission_tables import experiments_with_names, transmission_series

    directory = tmp_path_factory.mktemp("fault_world")
    expt = str(simulated_rotation["truth_expt"])
    with working_directory(directory):
        assert process.run([expt, "find_peaks.count_threshold=30"]) == 0
        data, mask = str(simulated_sacla["data"]), str(simulated_sacla["mask"])
        assert find_ring_center.run([data, f"mask={mask}"]) == 0
        assert (
            polar_transform.run(["ring_center.expt", f"mask={mask}", "nq=7", "nphi=36"])
            == 0
        )
        transmissions = [0.25, 0.5, 1.0]
        table, _ = transmission_series(transmissions, seed=2)
        experiments = experiments_with_names(transmissions, directory)
        identifiers = table.experiment_identifiers()
        for j, experiment in enumerate(experiments):
            identifiers[j] = experiment.identifier
        table.as_file("integrated.refl")
        experiments.as_file("integrated.expt")
    files = {
        "expt": Path(expt),
        "master": Path(simulated_rotation["master"]),
        "data_file": Path(simulated_rotation["data"][0]),
        "sacla": Path(simulated_sacla["data"]),
        "sacla_mask": Path(simulated_sacla["mask"]),
        "series": Path(simulated_eiger_series["master"]),
        "series_data": Path(simulated_eiger_series["data"][0]),
    }
    for name in (
        "data.nxs",
        "peaks.nxs",
        "mask.nxs",
        "integrated.nxs",
        "corrected.nxs",
        "scale.nxs",
        "merged.nxs",
        "map.nxs",
        "ring_center.expt",
        "polar.h5",
        "integrated.refl",
        "integrated.expt",
    ):
        files[name] = directory / name
    return files


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fingerprints(paths):
    """{path: sha256} of the existing files among `paths`."""
    return {str(p): sha256(p) for p in map(Path, paths) if p.is_file()}


@contextlib.contextmanager
def mounted_tmpfs(path, size="1m", read_only=False):
    """A tmpfs mounted at `path` for the block; skip the test where that is impossible."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (read-only and full-disk faults)")
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
