"""A real Dask cluster: a scheduler and a worker process started here, on loopback.

The worker runs in a folder of its own, as on another machine; the program
runs in the folder that holds its inputs and names them relatively, as every
README example does. Every path must reach the worker resolved (the files
are at the same absolute paths for both), and a file a worker cannot open
must be reported as such.
"""

import contextlib
import importlib.util
import operator
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from dials_diffuse.command_line import find_peaks as find_peaks_program
from dials_diffuse.command_line import import_data as import_data_program
from dials_diffuse.command_line import integrate as integrate_program
from dials_diffuse.command_line import mask_peaks as mask_peaks_program
from dials_diffuse.io.tables import load_table
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.parallel import ParallelMap

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("distributed") is None
        or importlib.util.find_spec("distributed.cli.dask_scheduler") is None,
        reason="the dask scheduler and worker commands (distributed) are not installed",
    ),
]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_worker(address, deadline_s=90):
    from distributed import Client

    start = time.monotonic()
    while True:
        try:
            with Client(address, timeout="5s") as client:
                client.wait_for_workers(1, timeout=deadline_s)
                return
        except OSError:
            if time.monotonic() - start > deadline_s:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def dask_cluster(worker_folder):
    """`dask scheduler` and one `dask worker` (1 thread) on 127.0.0.1; yields the address."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    common = {"cwd": worker_folder, "env": environment}
    processes = []
    try:
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_scheduler"]
                + ["--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                **common,
            )
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address]
                + ["--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1"]
                + ["--no-dashboard", "--local-directory", str(worker_folder)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                **common,
            )
        )
        _wait_for_worker(address)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    worker_folder = tmp_path_factory.mktemp("dask_worker_folder")
    with dask_cluster(worker_folder) as address:
        yield address, worker_folder


@pytest.fixture(scope="module")
def client_folder(simulated_rotation, tmp_path_factory):
    """data.nxs and mask.nxs of the simulated sweep, made with relative paths."""
    folder = tmp_path_factory.mktemp("dask_client_folder")
    shutil.copy(simulated_rotation["truth_expt"], folder / "sweep.expt")
    steps = [
        (import_data_program, ["sweep.expt", "nproc=1"]),
        (find_peaks_program, ["sweep.expt", "data.nxs", "count_threshold=30"]),
        (mask_peaks_program, ["sweep.expt", "data.nxs", "peaks.nxs"]),
        (
            integrate_program,
            ["sweep.expt", "data.nxs", "mask=mask.nxs", "nproc=1"]
            + ["output.table=threads.nxs", "output.plot=None"],
        ),
    ]
    previous = os.getcwd()
    os.chdir(folder)
    try:
        for program, args in steps:
            assert program.run(args) == 0, (program.__name__, args)
    finally:
        os.chdir(previous)
    return folder


def test_relative_paths_give_the_threaded_result(cluster, client_folder, monkeypatch):
    address, worker_folder = cluster
    assert not (worker_folder / "mask.nxs").exists()
    monkeypatch.chdir(client_folder)
    args = ["sweep.expt", "data.nxs", "mask=mask.nxs", f"dask.scheduler={address}"]
    args += ["output.table=dask.nxs", "output.plot=None"]
    assert integrate_program.run(args) == 0
    with_dask = load_table(client_folder / "dask.nxs").to_frame()
    threads = load_table(client_folder / "threads.nxs").to_frame()
    assert list(with_dask.columns) == list(threads.columns)
    assert len(with_dask) > 1000
    np.testing.assert_array_equal(with_dask.to_numpy(), threads.to_numpy())


def test_a_file_the_worker_cannot_open_is_named(cluster, client_folder, monkeypatch):
    """The client opened it; by the time the worker reopens it, it is gone."""
    from dials_diffuse.io.mask_file import MaskFile

    address, _ = cluster
    monkeypatch.chdir(client_folder)
    shutil.copy("mask.nxs", "vanishing.nxs")
    mask = MaskFile("vanishing.nxs")
    os.remove("vanishing.nxs")
    path = client_folder / "vanishing.nxs"
    with ParallelMap(nproc=1, scheduler=address) as pmap:
        with pytest.raises(DataError) as raised:
            list(pmap(operator.attrgetter("shape"), [mask]))
    assert str(raised.value) == (
        f"worker on {socket.gethostname()} cannot open {path}: "
        "no such file or directory"
    )
