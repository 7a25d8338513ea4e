"""dials.diffuse.intensity_linearity end to end on a synthetic transmission series."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from dials_diffuse.command_line import intensity_linearity
from tests.helpers import console_script
from tests.transmission_tables import experiments_with_names, transmission_series

TRANSMISSIONS = [0.064, 0.127, 0.253, 0.503, 1.0]


@pytest.fixture(scope="module")
def integrated(tmp_path_factory):
    """integrated.refl + integrated.expt whose image names carry the transmissions."""
    directory = tmp_path_factory.mktemp("series")
    table, _ = transmission_series(TRANSMISSIONS, seed=2)
    experiments = experiments_with_names(TRANSMISSIONS, directory)
    identifiers = table.experiment_identifiers()
    for j, experiment in enumerate(experiments):
        identifiers[j] = experiment.identifier
    table.as_file(str(directory / "integrated.refl"))
    experiments.as_file(str(directory / "integrated.expt"))
    return directory / "integrated.refl", directory / "integrated.expt"


def test_outputs_and_ratios(in_tmp_path, integrated):
    refl, expt = integrated
    before = refl.read_bytes()
    args = [str(refl), str(expt), "output.json=summary.json"]
    assert intensity_linearity.run(args) == 0
    assert refl.read_bytes() == before
    table = pd.read_csv(in_tmp_path / "intensity_linearity.csv")
    np.testing.assert_allclose(table["transmission"], TRANSMISSIONS)
    np.testing.assert_allclose(table["mean_ratio"], TRANSMISSIONS, rtol=1e-3)
    for j in range(5):
        pairs = np.loadtxt(in_tmp_path / f"pair{j}.dat")
        assert pairs.shape == (table["matched"][j], 2)
        np.testing.assert_allclose(
            pairs[:, 1] / pairs[:, 0], TRANSMISSIONS[j], rtol=0.02
        )
    bins = pd.read_csv(in_tmp_path / "intensity_linearity_bins.csv")
    assert set(bins["experiment"]) == {0, 1, 2, 3}
    assert np.all(np.abs(bins["deviation"].dropna()) < 0.01)
    summary = json.loads((in_tmp_path / "summary.json").read_text())
    results = summary["results"]
    assert results["reference"] == 4
    assert results["transmission_source"] == "file names"
    assert results["fit"]["slope"] == pytest.approx(1.0, abs=1e-3)
    assert results["fit"]["r_squared"] > 0.99999
    for name in (
        "intensity_linearity_scatter.png",
        "intensity_linearity_ratio.png",
        "intensity_linearity_deviation.png",
    ):
        assert (in_tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_options_through_the_console_script(in_tmp_path, integrated):
    refl, expt = integrated
    result = subprocess.run(
        [
            console_script("dials.diffuse.intensity_linearity"),
            str(refl),
            str(expt),
            "reference=3",
            "intensity=sum",
            "min_i_over_sigma=5",
            "match.max_separation=3",
            "transmission.values=1,2,4,8,16",
            "output.pairs=matched_",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "transmissions from parameter" in result.stdout
    table = pd.read_csv(in_tmp_path / "intensity_linearity.csv")
    np.testing.assert_allclose(
        table["relative_transmission"], [1 / 8, 2 / 8, 4 / 8, 1, 2]
    )
    # The data follow the real transmissions, not the ones given: the
    # deviation shows it.
    expected = np.array(TRANSMISSIONS) / TRANSMISSIONS[3]
    np.testing.assert_allclose(table["median_ratio"], expected, rtol=2e-3)
    assert (in_tmp_path / "matched_0.dat").exists()
    assert not (in_tmp_path / "pair0.dat").exists()


def run_failing(args, capsys):
    """Run in this process; the error is one line on stderr, exit code 1."""
    capsys.readouterr()
    assert intensity_linearity.run(args) == 1
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    return stderr


def test_bad_input(in_tmp_path, integrated, dials_centroid, capsys):
    refl, expt = integrated
    indexed = dials_centroid / "indexed.refl"
    assert "intensity.prf.value" in run_failing([str(indexed)], capsys)
    assert "reference=9" in run_failing([str(refl), str(expt), "reference=9"], capsys)
    assert "2 values for 5" in run_failing(
        [str(refl), str(expt), "transmission.values=1,2"], capsys
    )
    assert "integrated.refl: given twice" in run_failing([str(refl), str(refl)], capsys)
    single = dials_centroid / "integrated.refl"
    assert "matches the reference" in run_failing([str(single)], capsys)
    result = subprocess.run(  # the console script too: exit code, one line
        [console_script("dials.diffuse.intensity_linearity"), str(indexed)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if "Traceback" not in line
    ]
    assert not list(in_tmp_path.glob("*.csv")) and not list(in_tmp_path.glob("*.dat"))
