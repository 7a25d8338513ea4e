"""The real DIALS chain on the simulator's transmission series, then our programs.

The simulator (dials_diffuse.simulate.transmission_series) records true
counts in [notch_low, notch_high) as notch_high (a gain-switch notch) and
writes five sweeps at known transmissions. dials.import, find_spots, index
and integrate run once (module scope, about two minutes on two cores); the
tests check that pixel_histogram reports the notch where it was simulated
and that intensity_linearity recovers the transmissions.
"""

import json
import subprocess

import h5py
import numpy as np
import pytest

from dials_diffuse.command_line import intensity_linearity, pixel_histogram

pytestmark = pytest.mark.slow


def _dials(directory, *args):
    result = subprocess.run(
        list(args), cwd=directory, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, (
        f"{args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    )


@pytest.fixture(scope="module")
def processed(simulated_transmission_series, tmp_path_factory):
    directory = tmp_path_factory.mktemp("transmission_chain")
    masters = [
        str(sweep["master"]) for sweep in simulated_transmission_series["sweeps"]
    ]
    _dials(directory, "dials.import", *masters)
    _dials(directory, "dials.find_spots", "imported.expt", "nproc=2")
    # Five sweeps of one crystal: joint indexing (DIALS >= 3.27 asks for it).
    _dials(
        directory,
        "dials.index",
        "imported.expt",
        "strong.refl",
        "space_group=P212121",
        "joint_indexing=True",
    )
    _dials(directory, "dials.integrate", "indexed.expt", "indexed.refl", "nproc=2")
    with h5py.File(simulated_transmission_series["truth"], "r") as handle:
        truth = dict(handle.attrs)
    return directory, truth


def test_notch_reported_at_the_simulated_values(processed, tmp_path, monkeypatch):
    directory, truth = processed
    monkeypatch.chdir(tmp_path)
    args = [
        str(directory / "indexed.refl"),
        str(directory / "indexed.expt"),
        "output.json=summary.json",
    ]
    assert pixel_histogram.run(args) == 0
    results = json.loads((tmp_path / "summary.json").read_text())["results"]
    assert results["groups"].keys() == {f"experiment_{e}" for e in range(5)}
    low, high = float(truth["notch_low"]), float(truth["notch_high"])
    anomalies = results["anomalies"]
    combined = [a for a in anomalies if a["group"] == "all"]
    assert [(a["kind"], a["low"], a["high"], a["observed"]) for a in combined] == [
        ("notch", low, high, 0.0)
    ]
    assert combined[0]["significance"] < -10
    # Per experiment: the brighter sweeps have pixels enough to show it alone;
    # a dim one may show only the notch's own pile-up (its counts recorded at
    # notch_high); nothing else (no false notch or pile-up) is reported.
    for anomaly in anomalies:
        if anomaly["kind"] == "pile-up":
            assert anomaly["group"] != "all"
            assert anomaly["low"] <= high <= anomaly["high"] <= high + 3
            continue
        assert anomaly["kind"] == "notch"
        assert low - 1 <= anomaly["low"] and anomaly["high"] <= high + 1
    assert {a["group"] for a in anomalies} >= {"experiment_3", "experiment_4"}
    table = np.loadtxt(tmp_path / "pixel_histogram_experiment_4.hist")
    in_notch = (table[:, 0] > low) & (table[:, 0] < high)
    assert in_notch.sum() == high - low and table[in_notch, 1].sum() == 0
    assert table[table[:, 0] == high + 0.5, 1] > 3 * np.median(
        table[:, 1][table[:, 1] > 0]
    )


def test_ratios_equal_the_simulated_transmissions(processed, tmp_path, monkeypatch):
    directory, truth = processed
    monkeypatch.chdir(tmp_path)
    args = [
        str(directory / "integrated.refl"),
        str(directory / "integrated.expt"),
        "output.json=summary.json",
    ]
    assert intensity_linearity.run(args) == 0
    results = json.loads((tmp_path / "summary.json").read_text())["results"]
    transmissions = np.asarray(truth["transmissions"])
    assert results["reference"] == int(np.argmax(transmissions))
    rows = results["experiments"]
    np.testing.assert_allclose([r["transmission"] for r in rows], transmissions)
    assert min(r["matched"] for r in rows) > 200
    # Poisson noise, background and the pile-up at saturation in the
    # brightest sweep: the mean ratios are within 3% of the truth.
    np.testing.assert_allclose(
        [r["mean_ratio"] for r in rows], transmissions / transmissions.max(), rtol=0.03
    )
    fit = results["fit"]
    assert fit["slope"] == pytest.approx(1.0, abs=0.02)
    assert abs(fit["intercept"]) < 0.01
    assert fit["r_squared"] > 0.999
    assert (tmp_path / "pair0.dat").exists()
