"""dials.diffuse.scale and merge end to end on a corrected table with known distortions."""

import json

import h5py
import numpy as np
import pytest

from dials_diffuse.command_line import merge as merge_program
from dials_diffuse.command_line import scale as scale_program
from dials_diffuse.io.tables import Table, load_table, write_tables
from tests.algorithms.diffuse.test_scale_model import (
    relative_spread,
    simulate,
    true_b,
    true_c,
    true_d,
)

CELL = (34.0, 41.0, 52.0, 90.0, 90.0, 90.0)


def write_corrected(path, frame, space_group="P 21 21 21", subdivide=(1, 1, 1)):
    """A corrected.nxs as correct writes it (the columns scale and merge read)."""
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    columns["op"] = np.zeros(len(frame), dtype=np.int32)
    attrs = {
        "subdivide": subdivide,
        "space_group": space_group,
        "unit_cell": CELL,
        "wavelength": 0.9,
    }
    write_tables(path, [Table("hkl_table", columns, attrs)])


def merged_against_truth(path, truth):
    merged = load_table(path).to_frame().sort_values("h")
    return relative_spread(merged["intensity"].to_numpy(), truth)


def test_scale_then_merge_recovers_the_truth(in_tmp_path):
    frame, truth, _ = simulate(b=true_b, d=true_d, noise=0.03)
    write_corrected("corrected.nxs", frame)
    assert (
        scale_program.run(
            [
                "corrected.nxs",
                "detector.enable=True",
                "detector.x_nodes=9",
                "detector.y_nodes=9",
                "output.json=scale.json",
            ]
        )
        == 0
    )
    with h5py.File("scale.nxs", "r") as handle:
        assert set(handle["entry"]) == {"scaling_model", "detector_model"}
        assert tuple(handle["entry/detector_model"].attrs["shape"]) == (9, 9)
    summary = json.loads(open("scale.json").read())["results"]
    assert summary["terms"] == ["scaling", "detector"]
    assert summary["chi_square"][-1] < 1.1
    assert (in_tmp_path / "scale.png").stat().st_size > 0
    # Merged with the model: within 2% rms of the truth (noise 3%/sqrt(8)).
    assert merge_program.run(["corrected.nxs", "scale.nxs"]) == 0
    assert merged_against_truth("merged.nxs", truth) < 0.02
    # Without the detector term (apply.detector=False) the gain pattern stays.
    assert (
        merge_program.run(
            ["corrected.nxs", "scale.nxs", "apply.detector=False", "output.table=b.nxs"]
        )
        == 0
    )
    assert merged_against_truth("b.nxs", truth) > 0.03


def test_offset_through_the_programs(in_tmp_path):
    frame, truth, _ = simulate(b=true_b, c=true_c)
    write_corrected("corrected.nxs", frame)
    args = ["corrected.nxs", "offset.enable=True", "offset.s_nodes=6"]
    assert scale_program.run(args) == 0
    offset = load_table("scale.nxs", "offset_model").to_frame()
    assert set(offset.columns) == {"s", "phi", "offset"}
    assert offset.groupby("s")["offset"].min().abs().max() < 1e-9
    assert merge_program.run(["corrected.nxs", "scale.nxs"]) == 0
    merged = load_table("merged.nxs").to_frame().sort_values("h")
    assert np.median(merged["intensity"] / truth) == pytest.approx(1.0, abs=0.01)


def test_merge_friedel_split_program(in_tmp_path):
    from cctbx import sgtbx

    from dials_diffuse.algorithms.diffuse.merge import improper_operators

    improper = improper_operators(sgtbx.space_group_info("P 21 21 21").group())
    rng = np.random.default_rng(2)
    frame, _, _ = simulate()
    write_corrected("corrected.nxs", frame)
    # Same table, op set so that each voxel has proper and improper views,
    # improper ones 10% stronger: CC(Friedel) high, the halves' ratio 1.1.
    table = load_table("corrected.nxs")
    op = rng.integers(0, 8, size=len(frame)).astype(np.int32)
    table.columns["op"] = op
    table.columns["intensity"] = np.where(improper[op], 1.1, 1.0) * np.asarray(
        table["intensity"]
    )
    write_tables("friedel.nxs", [table])
    assert (
        merge_program.run(["friedel.nxs", "split=friedel", "output.json=m.json"]) == 0
    )
    merged = load_table("merged.nxs").to_frame().dropna()
    ratio = merged["intensity_2"] / merged["intensity_1"]
    assert np.median(ratio) == pytest.approx(1.1, abs=0.01)
    results = json.loads(open("m.json").read())["results"]
    assert results["cc_friedel"] > 0.99
    assert load_table("merged.nxs", "cc_half").attrs["split"] == "friedel"


def test_bad_input_one_line_errors(in_tmp_path, capsys):
    frame, _, _ = simulate(b=true_b)
    write_corrected("corrected.nxs", frame.drop(columns=["ix", "iy"]))
    # No term enabled.
    assert scale_program.run(["corrected.nxs", "scaling.enable=False"]) == 1
    assert "no term enabled" in capsys.readouterr().err
    # A term whose coordinates the table lacks: the file named, no output.
    assert scale_program.run(["corrected.nxs", "detector.enable=True"]) == 1
    error = capsys.readouterr().err
    assert "corrected.nxs" in error and "ix, iy" in error and "Traceback" not in error
    assert not (in_tmp_path / "scale.nxs").exists()
    # A model needing columns the table lacks, at merge.
    write_corrected("full.nxs", frame)
    assert (
        scale_program.run(
            [
                "full.nxs",
                "detector.enable=True",
                "detector.x_nodes=4",
                "detector.y_nodes=4",
                "scaling.enable=False",
            ]
        )
        == 0
    )
    before = open("corrected.nxs", "rb").read()
    assert merge_program.run(["corrected.nxs", "scale.nxs"]) == 1
    assert "no ix, iy column" in capsys.readouterr().err
    assert not (in_tmp_path / "merged.nxs").exists()
    assert open("corrected.nxs", "rb").read() == before
    # Friedel split of a table without a space group.
    table = load_table("full.nxs")
    table.attrs.pop("space_group")
    write_tables("nosg.nxs", [table])
    assert merge_program.run(["nosg.nxs", "split=friedel"]) == 1
    assert "one space group" in capsys.readouterr().err


def test_two_sweeps_scaled_together(in_tmp_path):
    first, truth, _ = simulate(b=true_b, noise=0.03, seed=4)
    second, _, _ = simulate(
        b=lambda phi: 2 + 0.3 * np.cos(phi / 4.0), noise=0.03, seed=5
    )
    write_corrected("first.nxs", first)
    write_corrected("second.nxs", second)
    assert scale_program.run(["first.nxs", "second.nxs", "output.json=s.json"]) == 0
    results = json.loads(open("s.json").read())["results"]
    assert results["models"] == ["scale_1.nxs", "scale_2.nxs"]
    assert not (in_tmp_path / "scale.nxs").exists()
    assert load_table("scale_2.nxs", "scaling_model").attrs["table"] == "second.nxs"
    args = ["first.nxs", "second.nxs", "scale_1.nxs", "scale_2.nxs"]
    assert merge_program.run(args) == 0
    # 16 observations per voxel now (noise 3% / 4 = 0.8%).
    assert merged_against_truth("merged.nxs", truth) < 0.015
    # The same table twice is refused.
    assert scale_program.run(["first.nxs", "first.nxs"]) == 1


def test_merge_exports_mtz_and_csv(in_tmp_path, capsys):
    """output.mtz/output.csv: the merged table, read back by gemmi and pandas."""
    gemmi = pytest.importorskip("gemmi")
    import pandas as pd

    frame, _, _ = simulate(b=true_b)
    # Voxels at multiples of 1/2 r.l.u. along h and 1/4 along k: subdivide 2,4,1.
    frame["k"] = (frame["h"] % 7) / 4.0
    frame["h"] = (frame["h"] // 7) / 2.0
    write_corrected("corrected.nxs", frame, subdivide=(2, 4, 1))
    args = ["corrected.nxs", "output.mtz=merged.mtz", "output.csv=merged.csv"]
    assert merge_program.run([*args, "output.json=m.json"]) == 0
    merged = load_table("merged.nxs").to_frame()
    merged = merged.sort_values(["h", "k", "l"]).reset_index(drop=True)
    mtz = gemmi.read_mtz_file("merged.mtz")
    assert mtz.spacegroup.hm == "P 2 2 2"
    assert mtz.cell.parameters == pytest.approx((68.0, 164.0, 52.0, 90, 90, 90))
    data = pd.DataFrame(np.array(mtz, copy=False), columns=mtz.column_labels())
    data = data.sort_values(["H", "K", "L"]).reset_index(drop=True)
    np.testing.assert_array_equal(data["H"], merged["h"] * 2)
    np.testing.assert_array_equal(data["K"], merged["k"] * 4)
    np.testing.assert_allclose(data["I"], merged["intensity"], rtol=1e-6)
    np.testing.assert_allclose(data["SIGI"], merged["intensity_error"], rtol=1e-6)
    np.testing.assert_array_equal(data["COUNT"], merged["count"])
    # The random halves (split=random_half), for CC1/2 in other programs.
    assert mtz.column_labels()[6:] == [
        "I_HALF1", "SIGI_HALF1", "I_HALF2", "SIGI_HALF2",
    ]  # fmt: skip
    np.testing.assert_allclose(data["I_HALF1"], merged["intensity_1"], rtol=1e-6)
    np.testing.assert_allclose(
        data["SIGI_HALF2"], merged["intensity_error_2"], rtol=1e-6
    )
    csv = pd.read_csv("merged.csv").sort_values(["h", "k", "l"])
    np.testing.assert_allclose(csv["intensity"], merged["intensity"], rtol=1e-7)
    np.testing.assert_array_equal(csv["K"], merged["k"] * 4)
    results = json.loads(open("m.json").read())["results"]
    assert results["mtz"]["space_group"] == "P 2 2 2"
    assert results["csv_rows"] == len(merged)
    # A table without its cell (an older correct): a one-line error, no MTZ.
    table = load_table("corrected.nxs")
    table.attrs.pop("unit_cell")
    write_tables("old.nxs", [table])
    code = merge_program.run(["old.nxs", "output.mtz=old.mtz"])
    assert code == 1 and "give the refined .expt too" in capsys.readouterr().err
    assert not (in_tmp_path / "old.mtz").exists()
