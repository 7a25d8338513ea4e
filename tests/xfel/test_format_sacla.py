"""FormatSACLA: dxtbx picks it for SACLA files, with the right models."""

import subprocess
import sys

import h5py
import numpy as np
import pytest
from dxtbx.format.Registry import get_format_class_for_file
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.format.FormatSACLA import DEFAULT_DISTANCE_MM, FormatSACLA

from .conftest import write_sacla_file


def test_dxtbx_picks_our_class_over_its_own(sacla_file):
    from dxtbx.format.FormatHDF5Sacla import FormatHDF5Sacla

    assert FormatHDF5Sacla.understand(str(sacla_file.path))
    assert get_format_class_for_file(str(sacla_file.path)) is FormatSACLA


def test_models_from_the_file(sacla_file):
    experiments = ExperimentListFactory.from_filenames([str(sacla_file.path)])
    assert len(experiments) == sacla_file.n_shots
    beam, panel = experiments[0].beam, experiments[0].detector[0]
    assert beam.get_wavelength() == pytest.approx(sacla_file.wavelength, rel=1e-9)
    assert panel.get_pixel_size() == pytest.approx((0.05, 0.05))
    assert panel.get_image_size() == (sacla_file.shape[1], sacla_file.shape[0])
    assert panel.get_distance() == pytest.approx(sacla_file.distance_mm)
    assert panel.get_beam_centre_px(beam.get_s0()) == pytest.approx(
        sacla_file.beam_centre
    )
    raw = experiments[4].imageset.get_raw_data(0)[0].as_numpy_array()
    instance = FormatSACLA(str(sacla_file.path))
    assert instance.get_tag(4) == sacla_file.tags[4]
    np.testing.assert_array_equal(raw, instance.get_raw_data(4).as_numpy_array())
    assert raw.shape == sacla_file.shape and raw.sum() > 0


def test_defaults_without_geometry(tmp_path):
    truth = write_sacla_file(tmp_path / "nogeo.h5", n_shots=3, geometry_in_file=False)
    experiments = ExperimentListFactory.from_filenames([str(truth.path)])
    beam, panel = experiments[0].beam, experiments[0].detector[0]
    assert panel.get_distance() == pytest.approx(DEFAULT_DISTANCE_MM)
    assert panel.get_beam_centre_px(beam.get_s0()) == pytest.approx((160.0, 150.0))


def _dials(tmp_path, program, *args):
    """Run a DIALS program with this interpreter, so our Format classes are seen."""
    subprocess.run(
        [sys.executable, "-m", f"dials.command_line.{program}", *args],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )


def test_dials_import_with_overrides_then_find_spots(tmp_path):
    spots = [(40.3, 60.7), (250.6, 220.2), (100.5, 250.5)]
    truth = write_sacla_file(
        tmp_path / "run.h5",
        n_shots=3,
        n_dark=1,
        geometry_in_file=False,
        amplitude=0.0,
        gap=False,
        spots=spots,
    )
    _dials(
        tmp_path,
        "dials_import",
        str(truth.path),
        "distance=53.5",
        "fast_slow_beam_centre=163.3,141.7",
    )
    imported = ExperimentListFactory.from_json_file(str(tmp_path / "imported.expt"))
    assert len(imported) == 3
    assert imported[0].imageset.get_format_class() is FormatSACLA
    panel, beam = imported[0].detector[0], imported[0].beam
    assert panel.get_distance() == pytest.approx(53.5)
    assert panel.get_beam_centre_px(beam.get_s0()) == pytest.approx((163.3, 141.7))
    _dials(tmp_path, "find_spots", "imported.expt", "nproc=1")
    from dials.array_family import flex

    found = flex.reflection_table.from_file(str(tmp_path / "strong.refl"))
    # Every spot on both light shots, at its true position; none on the dark one.
    assert sorted(set(found["id"])) == [1, 2]
    assert len(found) == 2 * len(spots)
    x, y, _ = found["xyzobs.px.value"].parts()
    for fast, slow in spots:
        distance = np.hypot(np.array(x) - fast, np.array(y) - slow)
        assert np.sort(distance)[:2] == pytest.approx([0, 0], abs=0.1)


def test_status_flags_reach_the_dials_mask(tmp_path):
    truth = write_sacla_file(tmp_path / "status.h5", n_shots=3, n_dark=0, gap=False)
    with h5py.File(truth.path, "a") as f:
        detector = f["run_178884/detector_2d_assembled_1"]
        status = np.zeros(truth.shape, dtype=np.int32)
        status[10:12, 20:25] = 1
        del detector[f"tag_{truth.tags[1]}/detector_status"]
        detector[f"tag_{truth.tags[1]}/detector_status"] = status
        data = detector[f"tag_{truth.tags[2]}/detector_data"]
        data[0, 0] = np.nan
    experiments = ExperimentListFactory.from_filenames([str(truth.path)])
    masks = [e.imageset.get_mask(0)[0].as_numpy_array() for e in experiments]
    assert masks[0].all()
    np.testing.assert_array_equal(masks[1], status == 0)
    assert not masks[2][0, 0] and masks[2].sum() == masks[2].size - 1
