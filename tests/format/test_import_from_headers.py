"""Format claims and placeholder warnings, through real dials.import.

- A DECTRIS master that says ``/entry/definition = NXmx`` but has no NXmx
  geometry is ours (dxtbx's FormatNXmx would take it, find no detector, and
  every program after dials.import would fail).
- Values a file lacks are warned about once, at import, only if the import
  did not give them; loading the .expt later warns about nothing.
"""

import subprocess
import sys

import numpy as np
import pytest
from dxtbx.format.FormatNXmx import FormatNXmx
from dxtbx.format.Registry import get_format_class_for_file
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.format.FormatEigerFilewriter import FormatEigerFilewriter
from dials_diffuse.format.FormatSACLA import FormatSACLA
from dials_diffuse.simulate.eiger_files import write_dectris_files
from tests.xfel.conftest import write_sacla_file

SHAPE = (40, 50)

PLACEHOLDER_WARNINGS = ("no detector_distance", "no wavelength", "no beam centre")


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.poisson(3, SHAPE).astype(np.uint16)


def run(*args, cwd):
    """A program as a user runs it (the venv's dials.* and dials.diffuse.*)."""
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True
    )


def load_and_read(expt, cwd):
    """Load an .expt (check_format) and read its first image, in a new process."""
    code = (
        "import sys\n"
        "from dxtbx.model.experiment_list import ExperimentListFactory\n"
        "e = ExperimentListFactory.from_json_file(sys.argv[1], check_format=True)\n"
        "print(sum(e[0].imageset.get_raw_data(0)[0]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(expt)], cwd=cwd, capture_output=True, text=True
    )


def test_nxmx_definition_without_geometry_is_ours(tmp_path):
    master = write_dectris_files(
        tmp_path,
        "declared",
        frames(3),
        n_frames=3,
        shape=SHAPE,
        definition="NXmx",
        detector_distance=0.15,
        wavelength=0.98,
        omega_increment=0.5,
    )
    # dxtbx's own class says yes to it: without ours it would take the file.
    assert FormatNXmx.understand(str(master))
    assert get_format_class_for_file(str(master)) is FormatEigerFilewriter
    result = run("dials.import", master, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    experiments = ExperimentListFactory.from_json_file(
        str(tmp_path / "imported.expt"), check_format=False
    )
    assert experiments[0].detector[0].get_distance() == pytest.approx(150.0)
    assert experiments[0].beam.get_wavelength() == pytest.approx(0.98)
    assert experiments[0].scan.get_oscillation() == pytest.approx((0.0, 0.5))
    # A later program reads the images (was: "tuple index out of range").
    later = run(
        "dials.diffuse.frame_statistics",
        "imported.expt",
        "output.html=None",
        "output.plot=None",
        cwd=tmp_path,
    )
    assert later.returncode == 0, later.stdout + later.stderr
    assert "tuple index" not in later.stdout + later.stderr


@pytest.fixture(scope="module")
def bare_master(tmp_path_factory):
    """A flat master without distance, wavelength (nor photon energy), beam centre."""
    directory = tmp_path_factory.mktemp("bare")
    master = write_dectris_files(
        directory,
        "bare",
        frames(2),
        n_frames=2,
        shape=SHAPE,
        detector_distance=None,
        wavelength=None,
        photon_energy=None,
        beam_center=None,
    )
    import h5py

    with h5py.File(master, "a") as handle:
        for name in ("beam_center_x", "beam_center_y"):
            del handle[f"/entry/instrument/detector/{name}"]
    return master


def test_placeholders_warned_once_at_import_not_on_load(bare_master, tmp_path):
    result = run("dials.import", bare_master, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout + result.stderr
    for warning in PLACEHOLDER_WARNINGS:
        assert said.count(warning) == 1, said
    assert "dials.import distance=" in said
    loaded = load_and_read(tmp_path / "imported.expt", tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    for warning in PLACEHOLDER_WARNINGS:
        assert warning not in loaded.stdout + loaded.stderr
    later = run(
        "dials.diffuse.frame_statistics",
        "imported.expt",
        "output.html=None",
        "output.plot=None",
        cwd=tmp_path,
    )
    assert later.returncode == 0, later.stdout + later.stderr
    for warning in PLACEHOLDER_WARNINGS:
        assert warning not in later.stdout + later.stderr


def test_no_placeholder_warning_for_values_given_at_import(bare_master, tmp_path):
    result = run(
        "dials.import",
        bare_master,
        "distance=150",
        "wavelength=0.9",
        "fast_slow_beam_centre=20.5,18.5",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for warning in PLACEHOLDER_WARNINGS:
        assert warning not in result.stdout + result.stderr
    experiment = ExperimentListFactory.from_json_file(
        str(tmp_path / "imported.expt"), check_format=False
    )[0]
    panel, beam = experiment.detector[0], experiment.beam
    assert panel.get_distance() == pytest.approx(150.0)
    assert beam.get_wavelength() == pytest.approx(0.9)
    assert panel.get_beam_centre_px(beam.get_s0()) == pytest.approx((20.5, 18.5))
    # Only the distance given: the two others are still warned about.
    result = run("dials.import", bare_master, "distance=150", cwd=tmp_path)
    said = result.stdout + result.stderr
    assert "no detector_distance" not in said
    assert said.count("no wavelength") == 1 and said.count("no beam centre") == 1


def test_sacla_placeholder_distance_is_warned_at_import(tmp_path):
    truth = write_sacla_file(tmp_path / "nogeo.h5", n_shots=3, geometry_in_file=False)
    assert get_format_class_for_file(str(truth.path)) is FormatSACLA
    result = run("dials.import", truth.path, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert said.count("no detector_info/distance_in_mm") == 1, said
    assert "using 100.0 mm" in said and "dials.import distance=" in said
    loaded = load_and_read(tmp_path / "imported.expt", tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert "distance_in_mm" not in loaded.stdout + loaded.stderr
    given = run("dials.import", truth.path, "distance=53", cwd=tmp_path)
    assert given.returncode == 0
    assert "distance_in_mm" not in given.stdout + given.stderr
