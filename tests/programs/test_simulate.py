"""dials.diffuse.simulate end to end: each kind, bad input, the JSON summary."""

import json
import subprocess
import sys

import h5py
import pytest

from dials_diffuse.command_line.simulate import run


def test_sacla_and_eiger_series_with_json(in_tmp_path):
    assert (
        run(["kind=sacla", "frames=6", "sacla.dark_shots=2", "output.json=s.json"]) == 0
    )
    summary = json.loads((in_tmp_path / "s.json").read_text())
    assert summary["exit_code"] == 0
    assert summary["outputs"]["truth"] == "simulated_sacla/truth.h5"
    assert summary["results"]["truth"]["symmetry_order"] == 6
    assert len(summary["results"]["truth"]["beam_centre_px"]) == 2
    with h5py.File("simulated_sacla/truth.h5", "r") as handle:
        assert list(handle["dark"][()]) == [True, True, False, False, False, False]
        assert handle.attrs["symmetry_order"] == 6
    assert (in_tmp_path / "simulated_sacla" / "mask.npy").is_file()
    preview = in_tmp_path / "simulated_sacla" / "preview.png"
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["outputs"]["preview"] == str(preview.relative_to(in_tmp_path))

    assert (
        run(["kind=eiger_series", "frames=150", "eiger_series.cv=0.05", "seed=2"]) == 0
    )
    with h5py.File("simulated_eiger_series/truth.h5", "r") as handle:
        assert handle.attrs["cv"] == 0.05
        assert handle["frames/expected_sum"].shape == (150,)
    assert (
        len(list((in_tmp_path / "simulated_eiger_series").glob("series_data_*.h5")))
        == 2
    )


def test_rotation_and_transmission_series(in_tmp_path):
    assert (
        run(
            ["kind=rotation", "frames=3", "output.directory=rot", "output.preview=None"]
        )
        == 0
    )
    assert not (in_tmp_path / "rot" / "preview.png").exists()
    assert (in_tmp_path / "rot" / "rotation_master.h5").is_file()
    assert (in_tmp_path / "rot" / "truth.expt").is_file()
    assert (
        "space_group = P 21 21 21"
        in (in_tmp_path / "dials.diffuse.simulate.log").read_text()
    )
    assert (
        run(
            [
                "kind=transmission_series",
                "frames=2",
                "transmission_series.transmissions=0.5,1",
                "transmission_series.notch=300,310",
            ]
        )
        == 0
    )
    with h5py.File("simulated_transmission_series/truth.h5", "r") as handle:
        assert list(handle.attrs["transmissions"]) == [0.5, 1.0]
        assert handle.attrs["notch_low"] == 300
    assert (in_tmp_path / "simulated_transmission_series" / "sweep_2").is_dir()
    assert (in_tmp_path / "simulated_transmission_series" / "preview.png").is_file()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["kind=powder"], 2, "powder"),  # not one of the choices
        (["sed=1"], 2, "unknown parameter 'sed'"),
        (
            ["transmission_series.transmissions=0,1", "kind=transmission_series"],
            1,
            "(0, 1]",
        ),
        (
            ["kind=transmission_series", "transmission_series.notch=300,200"],
            1,
            "notch_low",
        ),
    ],
)
def test_bad_parameters(in_tmp_path, capsys, args, code, message):
    assert run(args) == code
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not list(in_tmp_path.glob("simulated_*"))


def test_existing_directory_and_input_files(in_tmp_path, capsys):
    (in_tmp_path / "simulated_rotation").mkdir()
    (in_tmp_path / "simulated_rotation" / "mine.txt").write_text("keep")
    assert run(["frames=1"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (in_tmp_path / "simulated_rotation" / "mine.txt").read_text() == "keep"
    (in_tmp_path / "notes.phil").write_text("seed = 3\n")
    (in_tmp_path / "data.h5").write_bytes(b"not hdf5")
    assert run(["data.h5", "frames=1"]) == 1


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "dials_diffuse.command_line.simulate", "-h"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "kind=rotation" in result.stdout
    assert "Examples" in result.stdout


def test_rotation_modules_dead_pixels_and_efficiency(in_tmp_path):
    args = [
        "kind=rotation",
        "frames=2",
        "rotation.modules=2,2",
        "rotation.dead_pixels=5",
        "rotation.module_efficiency=1,0.9,1,1",
        "output.directory=mod",
        "output.preview=None",
    ]
    assert run(args) == 0
    with h5py.File(in_tmp_path / "mod" / "truth.h5", "r") as handle:
        assert handle["mask/dead"][()].sum() == 5
        assert list(handle["modules/efficiency"][()]) == [1, 0.9, 1, 1]
        assert len(handle["modules/tiles"]) == 4
    with h5py.File(in_tmp_path / "mod" / "rotation_master.h5", "r") as handle:
        detector = handle["entry/instrument/detector"]
        assert (detector["pixel_mask"][()] == 2).sum() == 5
        assert len([k for k in detector if k.startswith("module_")]) == 4
