"""dials.diffuse.pixel_histogram on reflection files: real shoeboxes and synthetic truth."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from dials_diffuse.command_line import pixel_histogram
from dials_diffuse.util.compat import shoebox_has_data
from tests.helpers import console_script
from tests.shoebox_tables import notched_table


@pytest.fixture(scope="module")
def centroid(dials_centroid):
    return dials_centroid


def test_real_indexed_refl_equals_flex_histogram(in_tmp_path, centroid):
    from dials.array_family import flex

    args = [
        str(centroid / "indexed.refl"),
        str(centroid / "indexed.expt"),  # images absent: not needed
        "selection.pixels=all",
        "histogram.low=0",
        "histogram.high=12000",
        "histogram.bins=12000",
        "output.json=summary.json",
    ]
    assert pixel_histogram.run(args) == 0
    table = flex.reflection_table.from_file(str(centroid / "indexed.refl"))
    table = table.select(table.get_flags(table.flags.indexed))
    total = flex.histogram(flex.double(), data_min=0, data_max=12000, n_slots=12000)
    for shoebox in table["shoebox"]:
        total.update(
            flex.histogram(
                shoebox.data.as_double().as_1d(),
                data_min=0,
                data_max=12000,
                n_slots=12000,
            )
        )
    slots = np.array(total.slots())
    written = np.loadtxt(in_tmp_path / "pixel_histogram.hist")
    first = int(written[0, 0] - 0.5)
    np.testing.assert_array_equal(written[:, 1], slots[first : first + len(written)])
    assert written[:, 1].sum() == slots.sum() == 27385
    np.testing.assert_allclose(
        written[:, 0], np.array(total.slot_centers())[first : first + len(written)]
    )
    summary = json.loads((in_tmp_path / "summary.json").read_text())
    assert summary["results"]["reflections"] == table.size()
    assert summary["results"]["anomalies"] == []
    assert (in_tmp_path / "pixel_histogram.png").read_bytes().startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def notched_refl(tmp_path_factory):
    """Three experiments, the second with a notch at 23 (counts moved to 24)."""
    table, truth, ids = notched_table()
    path = tmp_path_factory.mktemp("notched") / "indexed.refl"
    table.as_file(str(path))
    return path, truth, ids


def test_per_experiment_tables_plot_and_notch_report(in_tmp_path, notched_refl):
    path, truth, ids = notched_refl
    before = path.read_bytes()
    result = subprocess.run(
        [
            console_script("dials.diffuse.pixel_histogram"),
            str(path),
            "plot.zoom=0,60",
            "output.json=summary.json",
            "nproc=2",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == before  # input untouched
    assert "experiment_1: notch at pixel values 23 to 24" in result.stdout
    for e in range(3):
        values = np.concatenate(
            [truth["foreground"][r] for r in np.flatnonzero(ids == e)]
        )
        written = np.loadtxt(in_tmp_path / f"pixel_histogram_experiment_{e}.hist")
        expected = np.bincount(values.astype(int))
        first = int(written[0, 0] - 0.5)
        np.testing.assert_array_equal(
            written[:, 1], np.pad(expected, (0, 200))[first : first + len(written)]
        )
    frame = pd.read_csv(in_tmp_path / "pixel_histogram.csv")
    assert list(frame.columns[3:]) == [
        "experiment_0",
        "experiment_1",
        "experiment_2",
        "total",
    ]
    assert frame.loc[frame.bin_low == 23, "experiment_1"].item() == 0
    summary = json.loads((in_tmp_path / "summary.json").read_text())
    anomalies = summary["results"]["anomalies"]
    # In experiment 1 (empty bin), and in the sum over experiments (a third).
    assert [(a["group"], a["kind"], a["low"], a["high"]) for a in anomalies] == [
        ("experiment_1", "notch", 23.0, 24.0),
        ("all", "notch", 23.0, 24.0),
    ]
    assert anomalies[0]["observed"] == 0
    table = pd.read_csv(in_tmp_path / "pixel_histogram_anomalies.csv")
    assert table[["group", "kind", "low", "high"]].values.tolist() == [
        ["experiment_1", "notch", 23.0, 24.0],
        ["all", "notch", 23.0, 24.0],
    ]
    assert anomalies[0]["significance"] < -5
    assert (in_tmp_path / "pixel_histogram.png").stat().st_size > 1000


def test_valid_selection_counts_background_too(in_tmp_path, notched_refl):
    path, truth, ids = notched_refl
    assert (
        pixel_histogram.run([str(path), "selection.pixels=valid", "output.json=s.json"])
        == 0
    )
    results = json.loads((in_tmp_path / "s.json").read_text())["results"]
    n_valid = sum(
        len(truth["foreground"][r]) + len(truth["background"][r])
        for r in range(len(ids))
    )
    n_invalid = sum(len(v) for v in truth["invalid"])
    assert results["pixels_counted"] == n_valid
    assert results["masked"] == n_invalid
    assert results["groups"] == {
        f"experiment_{e}": sum(
            len(truth["foreground"][r]) + len(truth["background"][r])
            for r in np.flatnonzero(ids == e)
        )
        for e in range(3)
    }


def run_failing(args, capsys):
    """Run in this process: exit code 1, one line on stderr, no traceback."""
    capsys.readouterr()
    assert pixel_histogram.run(args) == 1
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    return stderr


def test_reflections_without_shoeboxes(in_tmp_path, centroid, capsys):
    from dials.array_family import flex

    table = flex.reflection_table.from_file(str(centroid / "integrated.refl"))
    del table["shoebox"]
    table.as_file("no_shoeboxes.refl")
    stderr = run_failing(["no_shoeboxes.refl"], capsys)
    assert "no shoebox column" in stderr
    assert not (in_tmp_path / "pixel_histogram.hist").exists()
    # integrated.refl keeps the pixels of only some shoeboxes: those are used.
    args = [
        str(centroid / "integrated.refl"),
        "selection.flag=all",
        "output.json=s.json",
    ]
    assert pixel_histogram.run(args) == 0
    assert "1991 of 2269 shoeboxes hold no pixel data" in capsys.readouterr().out
    # The counts: every valid foreground pixel of the 278 shoeboxes with data.
    full = flex.reflection_table.from_file(str(centroid / "integrated.refl"))
    expected = sum(
        int(((s.mask.as_numpy_array() & 5) == 5).sum())
        for s in full["shoebox"]
        if shoebox_has_data(s)
    )
    assert (
        json.loads((in_tmp_path / "s.json").read_text())["results"]["pixels_counted"]
        == expected
    )


def test_no_reflection_with_the_flag(in_tmp_path, centroid, capsys):
    stderr = run_failing(
        [str(centroid / "indexed.refl"), "selection.flag=integrated"], capsys
    )
    assert "flagged integrated" in stderr
    assert not (in_tmp_path / "pixel_histogram.csv").exists()


def test_corrupt_reflection_file(in_tmp_path, centroid):
    """Through the console script: exit code 1, one line naming the file."""
    truncated = in_tmp_path / "truncated.refl"
    truncated.write_bytes((centroid / "indexed.refl").read_bytes()[:5000])
    result = subprocess.run(
        [console_script("dials.diffuse.pixel_histogram"), str(truncated)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "truncated.refl" in result.stderr
    assert not (in_tmp_path / "pixel_histogram.hist").exists()
