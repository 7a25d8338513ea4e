"""dials.diffuse.pixel_histogram on real PILATUS frames, against numpy through dxtbx."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.command_line import pixel_histogram
from tests.helpers import console_script


@pytest.fixture(scope="module")
def cbf_files(l_cysteine):
    files = sorted(l_cysteine.glob("*.cbf"))
    assert len(files) == 15
    return files


def numpy_histogram_through_dxtbx(files, low, high, bins, first=1, last=None):
    """The reference: every frame read by dxtbx, DIALS mask applied, numpy.histogram."""
    imageset = ExperimentListFactory.from_filenames([str(f) for f in files])[0].imageset
    last = last or len(imageset)
    counts = np.zeros(bins, dtype=np.int64)
    masked = 0
    for index in range(first - 1, last):
        data = imageset.get_raw_data(index)[0].as_numpy_array()
        valid = imageset.get_mask(index)[0].as_numpy_array()
        counts += np.histogram(data[valid], bins=bins, range=(low, high))[0]
        masked += int((~valid).sum())
    return counts, masked


def test_counts_equal_numpy_through_dxtbx(in_tmp_path, cbf_files):
    args = [str(f) for f in cbf_files] + [
        "histogram.high=100",
        "image_range=3,9",
        "output.json=summary.json",
    ]
    assert pixel_histogram.run(args) == 0
    expected, masked = numpy_histogram_through_dxtbx(cbf_files, 0, 100, 100, 3, 9)
    table = np.loadtxt(in_tmp_path / "pixel_histogram.hist")
    centres, counts = table[:, 0], table[:, 1].astype(np.int64)
    first = int(centres[0] - 0.5)
    np.testing.assert_array_equal(counts, expected[first : first + len(counts)])
    assert counts.sum() == expected.sum()  # nothing outside the written rows
    summary = json.loads((in_tmp_path / "summary.json").read_text())
    assert summary["results"]["masked"] == masked
    assert summary["results"]["images"] == 7
    assert summary["results"]["pixels_counted"] == expected.sum()
    csv = np.genfromtxt(in_tmp_path / "pixel_histogram.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(csv["total"].astype(np.int64), counts)
    png = (in_tmp_path / "pixel_histogram.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert (in_tmp_path / "dials.diffuse.pixel_histogram.log").exists()


def test_default_range_covers_every_valid_pixel(in_tmp_path, cbf_files):
    assert pixel_histogram.run([str(cbf_files[0]), "output.json=s.json"]) == 0
    results = json.loads((in_tmp_path / "s.json").read_text())["results"]
    assert results["underflow"] == 0 and results["overflow"] == 0
    imageset = ExperimentListFactory.from_filenames([str(cbf_files[0])])[0].imageset
    valid = imageset.get_mask(0)[0].as_numpy_array()
    data = imageset.get_raw_data(0)[0].as_numpy_array()
    assert results["pixels_counted"] == valid.sum()
    assert results["highest_occupied_bin"] == data[valid].max()


def test_experiment_list_input(in_tmp_path, cbf_files):
    subprocess.run(
        ["dials.import", *map(str, cbf_files[:3]), "output.experiments=imported.expt"],
        check=True,
        capture_output=True,
    )
    assert pixel_histogram.run(["imported.expt", "histogram.high=50"]) == 0
    expected, _ = numpy_histogram_through_dxtbx(cbf_files[:3], 0, 50, 50)
    counts = np.loadtxt(in_tmp_path / "pixel_histogram.hist")[:, 1]
    assert counts.sum() == expected.sum()


def test_console_script_and_config_listing():
    result = subprocess.run(
        [console_script("dials.diffuse.pixel_histogram"), "-c"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "histogram" in result.stdout and "exact" in result.stdout
    assert "output.json" in result.stdout or "json = None" in result.stdout


@pytest.mark.parametrize("kind", ["truncated", "garbage", "missing"])
def test_bad_image_files_one_line_exit_1(in_tmp_path, cbf_files, kind):
    name = "frame_00001.cbf"
    if kind == "truncated":
        data = cbf_files[0].read_bytes()
        (in_tmp_path / name).write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        (in_tmp_path / name).write_bytes(b"###CBF: VERSION 1.5\n garbage" * 10)
    result = subprocess.run(
        [console_script("dials.diffuse.pixel_histogram"), name],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    ours = [line for line in result.stderr.splitlines() if "dials.diffuse" in line]
    assert len(ours) == 1 and name in ours[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (in_tmp_path / "pixel_histogram.hist").exists()


def test_inputs_not_modified(in_tmp_path, cbf_files):
    local = in_tmp_path / cbf_files[0].name
    shutil.copy(cbf_files[0], local)
    before = local.read_bytes()
    assert pixel_histogram.run([local.name, f"output.table={local.name}"]) == 1
    assert local.read_bytes() == before


def test_image_range_outside_is_an_error(in_tmp_path, cbf_files, capsys):
    assert pixel_histogram.run([str(cbf_files[0]), "image_range=2,5"]) == 1
    assert "outside the images 1-1" in capsys.readouterr().err
