"""Serial stills (several image sets) through pixel_histogram, frame_statistics
and polar_transform: every shot of every set, per-shot tables against numpy
on what dxtbx reads, and real PILATUS frames imported as stills."""

import subprocess

import h5py
import numpy as np
import pandas as pd
import pytest
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.command_line import (
    frame_statistics,
    pixel_histogram,
    polar_transform,
)
from dials_diffuse.simulate.sacla import simulate_sacla

SHOTS = 5


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two small simulated SACLA runs (stills, one dark shot each)."""
    root = tmp_path_factory.mktemp("serial")
    runs = [
        simulate_sacla(root / name, seed=seed, shots=SHOTS, dark_shots=1)
        for seed, name in ((1, "a"), (2, "b"))
    ]
    return [run["data"] for run in runs]


def dxtbx_shots(paths):
    """(data, valid) of every image of every file, read by dxtbx itself."""
    experiments = ExperimentListFactory.from_filenames([str(p) for p in paths])
    shots = []
    for imageset in experiments.imagesets():
        for index in range(len(imageset)):
            data = imageset.get_raw_data(index)[0].as_numpy_array()
            valid = imageset.get_mask(index)[0].as_numpy_array()
            shots.append((data, valid))
    return shots


def test_pixel_histogram_of_two_runs_per_shot(in_tmp_path, two_runs):
    args = [str(p) for p in two_runs] + ["histogram.low=-100", "histogram.high=4000"]
    assert pixel_histogram.run(args + ["nproc=2"]) == 0
    per_shot = pd.read_csv("pixel_histogram_shots.csv")
    # Each still is an image set of its own; its image number is its place
    # in its file.
    assert per_shot["imageset"].tolist() == list(range(2 * SHOTS))
    assert per_shot["experiment"].tolist() == list(range(2 * SHOTS))
    assert per_shot["image"].tolist() == list(range(1, SHOTS + 1)) * 2
    for row, (data, valid) in zip(per_shot.itertuples(), dxtbx_shots(two_runs)):
        inside = valid & (data >= -100) & (data <= 4000)
        assert row.pixels == inside.sum()
        assert row.masked == (~valid).sum()
        assert row.underflow == (valid & (data < -100)).sum()
        assert row.overflow == (valid & (data > 4000)).sum()
        assert row.mean == pytest.approx(data[inside].mean(), rel=1e-9)
        assert row.max == pytest.approx(data[inside].max())
    histogram = pd.read_csv("pixel_histogram.csv")
    assert histogram["total"].sum() == per_shot["pixels"].sum()
    # The same histogram with one thread.
    assert pixel_histogram.run(args + ["nproc=1", "output.csv=one.csv"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv("one.csv"), histogram)


def test_frame_statistics_of_two_runs(in_tmp_path, two_runs):
    assert frame_statistics.run([str(p) for p in two_runs] + ["nproc=2"]) == 0
    series = pd.read_csv("frame_statistics.csv")
    assert series["imageset"].tolist() == list(range(2 * SHOTS))
    assert series["image"].tolist() == list(range(1, SHOTS + 1)) * 2
    for row, (data, valid) in zip(series.itertuples(), dxtbx_shots(two_runs)):
        used = valid & (data >= 0)
        assert row.sum == pytest.approx(data[used].sum(dtype=np.float64), rel=1e-9)
        assert row.pixels_used == used.sum()


def test_polar_transform_of_two_runs(in_tmp_path, two_runs):
    args = [str(p) for p in two_runs] + ["nphi=72", "nq=20", "nproc=2"]
    assert polar_transform.run(args) == 0
    with h5py.File("polar.h5") as f:
        assert f["entry/polar/data"].shape == (2 * SHOTS, 20, 72)
        dark = f["entry/polar/dark"][()].astype(bool)
    # The first shot of each run is dark.
    assert dark.tolist() == ([True] + [False] * (SHOTS - 1)) * 2


@pytest.fixture(scope="module")
def cbf_stills(tmp_path_factory, l_cysteine):
    """Four real PILATUS 2M frames imported as stills (one image set each)."""
    files = sorted(l_cysteine.glob("*.cbf"))[:4]
    directory = tmp_path_factory.mktemp("stills")
    subprocess.run(
        ["dials.import", *map(str, files), "convert_sequences_to_stills=True"],
        cwd=directory,
        check=True,
        capture_output=True,
    )
    return files, directory / "imported.expt"


def test_real_stills_equal_the_sweep(in_tmp_path, cbf_stills):
    """Frames imported as four stills give the same histogram and sums as
    the same frames read as a sweep, with one row per still."""
    files, stills = cbf_stills
    assert pixel_histogram.run([str(stills), "output.csv=stills.csv"]) == 0
    per_shot = pd.read_csv("pixel_histogram_shots.csv")
    assert per_shot["imageset"].tolist() == [0, 1, 2, 3]
    assert per_shot["experiment"].tolist() == [0, 1, 2, 3]
    assert pixel_histogram.run([*map(str, files), "output.csv=sweep.csv"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv("stills.csv"), pd.read_csv("sweep.csv"))
    assert frame_statistics.run([str(stills), "output.series=stills_series.csv"]) == 0
    assert frame_statistics.run([*map(str, files), "output.series=sweep.csv"]) == 0
    a, b = pd.read_csv("stills_series.csv"), pd.read_csv("sweep.csv")
    assert a["imageset"].tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(a["sum"], b["sum"])
    np.testing.assert_array_equal(a["pixels_used"], b["pixels_used"])
