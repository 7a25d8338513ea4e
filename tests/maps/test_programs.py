"""dials.diffuse.analyse_map and compare_maps end to end: outputs, and errors as one line."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from dials_diffuse.command_line import analyse_map, compare_maps
from dials_diffuse.io.map_files import read_map, read_real_space_ccp4, write_map_layers
from dials_diffuse.io.map_viewer import read_viewer_layers
from dials_diffuse.io.tables import Table, write_tables
from tests.maps.conftest import CELL, KnownMap

CELL_ARGUMENT = "unit_cell=" + ",".join(str(v) for v in CELL)


@pytest.fixture(scope="module")
def map_files(tmp_path_factory):
    """map.nxs (a noisy known map) and truth.nxs (the noiseless one)."""
    directory = tmp_path_factory.mktemp("map_programs")
    known = KnownMap(seed=7)
    write_map_layers(directory / "map.nxs", known.map, ["intensity"], "intensity")
    truth = known.map.with_layers({"intensity": known.total})
    write_map_layers(directory / "truth.nxs", truth, ["intensity"], "intensity")
    return directory, known


def test_analyse_map_writes_every_output(map_files, in_tmp_path):
    directory, known = map_files
    code = analyse_map.run(
        [
            str(directory / "map.nxs"),
            "output.viewer_voxels=30000",
            "output.json=summary.json",
        ]
    )
    assert code == 0
    with h5py.File("map_analysis.nxs", "r") as handle:
        entry = handle["entry"]
        assert entry.attrs["default"] == "anisotropic"
        for name in ("intensity", "isotropic", "anisotropic", "symmetry_spread"):
            group = entry[name]
            assert group.attrs["NX_class"] == "NXdata"
            assert list(group.attrs["axes"]) == ["h", "k", "l"]
            assert group[name].shape == known.map.shape
        assert "shell_statistics" in entry and "isotropic_profile" in entry
    statistics = pd.read_csv("map_statistics.csv")
    assert {"completeness", "mean", "sigma", "anisotropic_rms"} <= set(statistics)
    isotropic = pd.read_csv("isotropic.csv")
    assert isotropic["voxels"].sum() == np.isfinite(known.map.values).sum()
    values, cell, grid, origin = read_real_space_ccp4("delta_pdf.ccp4")
    assert cell[:3] == pytest.approx([2 * v for v in CELL[:3]])
    assert grid == known.map.shape and origin == tuple(-(n // 2) for n in grid)
    with h5py.File("delta_pdf.nxs", "r") as handle:
        group = handle["entry/delta_pdf"]
        assert group["x"].attrs["units"] == "Angstrom"
        assert np.allclose(
            group["delta_pdf"][()], values, rtol=1e-5, atol=1e-6 * np.abs(values).max()
        )
    layers = read_viewer_layers(open("map_viewer.html").read())
    assert [layer["name"] for layer in layers] == [
        "intensity",
        "isotropic",
        "anisotropic",
        "3D-DeltaPDF",
    ]
    assert layers[3]["axis_names"] == ["x along a", "y along b", "z along c"]
    for name in ("map_statistics.png", "map_sections.png", "delta_pdf.png"):
        assert open(name, "rb").read(4) == b"\x89PNG"
    summary = json.loads(open("summary.json").read())
    assert summary["results"]["delta_pdf"]["supercell"][:3] == pytest.approx(
        [2 * v for v in CELL[:3]]
    )


def test_merged_table_with_halves_gives_cc_half(in_tmp_path):
    # A merged.nxs as merge writes it: the asymmetric unit (h, k, l >= 0 for
    # mmm) with the split halves' columns.
    known = KnownMap(seed=9)
    rng = np.random.default_rng(1)
    hkl = np.stack(np.meshgrid(*known.map.axes, indexing="ij"), -1).reshape(-1, 3)
    asu = np.all(hkl >= 0, axis=1) & np.isfinite(known.total.ravel())
    total, sigma = known.total.ravel()[asu], known.sigma.ravel()[asu]
    frame = pd.DataFrame({"h": hkl[asu, 0], "k": hkl[asu, 1], "l": hkl[asu, 2]})
    frame["intensity_1"] = total + rng.normal(size=total.size) * sigma
    frame["intensity_2"] = total + rng.normal(size=total.size) * sigma
    frame["intensity"] = 0.5 * (frame["intensity_1"] + frame["intensity_2"])
    frame["intensity_error"] = sigma / np.sqrt(2)
    attrs = {"subdivide": np.array([2, 2, 2]), "space_group": "P 21 21 21"}
    write_tables("merged.nxs", [Table.from_frame("hkl_table", frame, attrs)])
    code = analyse_map.run(
        [
            "merged.nxs",
            CELL_ARGUMENT,
            "delta_pdf.enable=False",
            "output.viewer=None",
            "output.json=summary.json",
        ]
    )
    assert code == 0
    results = json.loads(open("summary.json").read())["results"]
    signal = np.var(total)
    assert results["cc_half"] == pytest.approx(
        signal / (signal + np.mean(sigma**2)), abs=0.03
    )
    assert 0 < results["cc_half_anisotropic"] < results["cc_half"]
    statistics = pd.read_csv("map_statistics.csv")
    assert {
        "cc_half",
        "cc_half_anisotropic",
        "i_over_sigma",
        "anisotropic_over_sigma",
    } <= set(statistics)
    assert not any(
        name.startswith("delta_pdf") for name in map(str, in_tmp_path.iterdir())
    )


def test_compare_maps_against_the_truth(map_files, in_tmp_path):
    directory, known = map_files
    code = compare_maps.run(
        [str(directory / "map.nxs"), str(directory / "truth.nxs"), CELL_ARGUMENT]
    )
    assert code == 0
    results = json.loads(open("compare_maps.json").read())
    measured = np.isfinite(known.total)
    signal = np.var(known.total[measured])
    limit = np.sqrt(signal / (signal + np.mean(known.sigma[measured] ** 2)))
    assert results["overall"]["cc_total"] == pytest.approx(limit, abs=0.01)
    assert results["overall"]["scale"] == pytest.approx(1.0, abs=0.02)
    table = pd.read_csv("compare_maps.csv")
    assert list(table.columns[:4]) == ["s_low", "s_high", "d_low", "d_high"]
    assert len(results["shells"]) == len(table)
    assert open("compare_maps.png", "rb").read(4) == b"\x89PNG"


@pytest.mark.parametrize(
    "program, args, message",
    [
        (analyse_map, ["map.nxs", "garbage.nxs"], "give one map"),
        (analyse_map, ["garbage.nxs"], "garbage.nxs: not a readable HDF5 file"),
        (analyse_map, ["map.nxs"], "no unit cell known"),
        (compare_maps, ["map.nxs"], "give two maps"),
        (
            analyse_map,
            ["map.nxs", CELL_ARGUMENT, "delta_pdf.punch.shape=ellipsoid"],
            "needs the peaks.nxs",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    map_files, in_tmp_path, capsys, program, args, message
):
    directory, known = map_files
    without_cell = known.map.with_layers({"intensity": known.map.values})
    without_cell.unit_cell = None
    write_map_layers("map.nxs", without_cell, ["intensity"], "intensity")
    (in_tmp_path / "garbage.nxs").write_text("not a map")
    code = program.program.run(args)
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(error) == 1 and message in error[0], error
    assert not (in_tmp_path / "map_analysis.nxs").exists() or "ellipsoid" in " ".join(
        args
    )
    assert not list(in_tmp_path.glob(".*"))  # no temporary output left behind
    assert read_map("map.nxs").unit_cell is None  # the input untouched
