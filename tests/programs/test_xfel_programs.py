"""find_ring_center -> polar_transform -> angular_correlation on SACLA files."""

import hashlib
import json

import h5py
import numpy as np
import pytest
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.command_line import (
    angular_correlation,
    find_ring_center,
    polar_transform,
)
from tests.xfel.conftest import write_sacla_file


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The three programs run once on a file without geometry (module cached)."""
    import os

    directory = tmp_path_factory.mktemp("xfel_pipeline")
    truth = write_sacla_file(directory / "run.h5", geometry_in_file=False)
    np.save(directory / "mask.npy", truth.mask.astype(np.uint8))
    before = _digest(truth.path)
    previous = os.getcwd()
    os.chdir(directory)
    try:
        codes = [
            find_ring_center.run(["run.h5", "mask=mask.npy", "output.json=ring.json"]),
            polar_transform.run(
                [
                    "ring_center.expt",
                    "mask=mask.npy",
                    "normalise=True",
                    "nphi=180",
                    "nq=9",
                    f"q_range={_q(directory, truth, -4)},{_q(directory, truth, 4)}",
                    "nproc=2",
                ]
            ),
            angular_correlation.run(["polar.h5", "output.json=correlation.json"]),
        ]
    finally:
        os.chdir(previous)
    assert codes == [0, 0, 0]
    assert _digest(truth.path) == before  # the input is never modified
    return directory, truth


def _q(directory, truth, offset):
    """|q| (Å⁻¹) at ring radius + offset px, from the fitted experiments."""
    from dials_diffuse.algorithms.xfel.polar import q_at_radius

    experiments = ExperimentListFactory.from_json_file(
        str(directory / "ring_center.expt"), check_format=False
    )
    return q_at_radius(
        experiments[0].detector, experiments[0].beam, truth.ring_radius + offset
    )


def test_ring_center_writes_the_fitted_beam_centre(pipeline):
    directory, truth = pipeline
    experiments = ExperimentListFactory.from_json_file(
        str(directory / "ring_center.expt")
    )
    assert len(experiments) == truth.n_shots
    for experiment in experiments:
        centre = experiment.detector[0].get_beam_centre_px(experiment.beam.get_s0())
        assert centre == pytest.approx(truth.beam_centre, abs=0.1)
    results = json.loads((directory / "ring.json").read_text())["results"]
    assert results["ring_radius_px"] == pytest.approx(truth.ring_radius, abs=0.1)
    assert results["shots"] == truth.n_shots - truth.n_dark
    assert (directory / "ring_center.png").stat().st_size > 10000


def test_polar_file_contents(pipeline):
    directory, truth = pipeline
    with h5py.File(directory / "polar.h5", "r") as f:
        polar = f["entry/polar"]
        assert polar["data"].shape == (truth.n_shots, 9, 180)
        np.testing.assert_array_equal(polar["tag"][()], truth.tags)
        np.testing.assert_array_equal(
            polar["dark"][()], np.arange(truth.n_shots) < truth.n_dark
        )
        assert polar["phi"][1] == pytest.approx(2.0)
        # The ring (centre row) is brighter than the rows at +-4 px, normalised to 1.
        mask = polar["mask"][truth.n_dark + 1] != 0
        data = polar["data"][truth.n_dark + 1]
        assert np.mean(data[4][mask[4]]) == pytest.approx(1.0, abs=1e-5)
        # The gap columns are masked: about 6 px of the 628 px circumference,
        # crossed twice.
        masked_fraction = 1 - mask[4].mean()
        assert 0.01 < masked_fraction < 0.04
        geometry = f["entry/geometry"]
        assert geometry["beam_centre_px"][()] == pytest.approx(
            truth.beam_centre, abs=0.1
        )
        assert geometry["wavelength"][()] == pytest.approx(truth.wavelength)


def test_correlation_shows_the_symmetry(pipeline):
    directory, truth = pipeline
    with h5py.File(directory / "correlation.h5", "r") as f:
        c = f["entry/correlation/C"][()]
        dphi = f["entry/correlation/dphi"][()]
        used = f["entry/pairs/used"][()]
    ring = c[4]
    spectrum = np.abs(np.fft.rfft(ring))
    assert np.argmax(spectrum[1:]) + 1 == truth.symmetry
    away = (dphi > 20) & (dphi < 340)
    peak = dphi[away][np.argmax(ring[away])]
    assert min(abs(peak - k * 60.0) for k in (1, 2, 3, 4, 5)) <= 2.0
    assert used.sum() == truth.n_shots - truth.n_dark - 1
    assert (directory / "correlation.png").stat().st_size > 10000


def test_pairs_from_json_file(pipeline, in_tmp_path):
    directory, truth = pipeline
    pairs = [[f"tag_{truth.tags[i]}", f"tag_{truth.tags[i + 2]}"] for i in (2, 4, 6)]
    pairs.append([int(truth.tags[0]), int(truth.tags[3])])  # has a dark shot
    (in_tmp_path / "pairs.json").write_text(json.dumps(pairs))
    code = angular_correlation.run(
        [str(directory / "polar.h5"), "pairs=pairs.json", "output.json=c.json"]
    )
    assert code == 0
    results = json.loads((in_tmp_path / "c.json").read_text())["results"]
    assert results["pairs"] == 3


def _fails(capsys, code, *words):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in captured.err
    return code


def test_bad_inputs(pipeline, in_tmp_path, capsys):
    directory, truth = pipeline
    assert find_ring_center.run(["missing.h5"]) == 1
    _fails(capsys, 1, "missing.h5", "no such file")

    assert polar_transform.run([str(truth.path), "q_range=5,6", "nphi=36"]) == 1
    _fails(capsys, 1, "off the detector")
    assert not list(in_tmp_path.glob("*polar.h5*"))  # no output, no partial file

    np.save(in_tmp_path / "small.npy", np.ones((5, 5), np.uint8))
    assert polar_transform.run([str(truth.path), "mask=small.npy"]) == 1
    _fails(capsys, 1, "small.npy", "does not match")

    assert polar_transform.run([str(truth.path), "nphii=36"]) == 2
    _fails(capsys, 2, "nphii")

    assert angular_correlation.run([str(directory / "polar.h5"), "pairs=no.json"]) == 1
    _fails(capsys, 1, "no.json")

    with h5py.File(in_tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    assert angular_correlation.run(["other.h5"]) == 1
    _fails(capsys, 1, "other.h5")

    assert find_ring_center.run([str(truth.path), "tags=5"]) == 1
    _fails(capsys, 1, "tag 5")


def test_work_items_pickle_for_dask(pipeline):
    """What Dask ships to workers: the polar file reader and the shot transform."""
    import pickle

    from dials_diffuse.algorithms.xfel.polar import pixel_polar_map
    from dials_diffuse.algorithms.xfel.polar_transform import ShotTransform
    from dials_diffuse.io.polar_files import open_polar_file

    directory, truth = pipeline
    polar = open_polar_file(directory / "polar.h5")
    expected = polar.read(5)
    copy = pickle.loads(pickle.dumps(polar))
    polar.close()
    for got, want in zip(copy.read(5), expected):
        np.testing.assert_array_equal(got, want)
    copy.close()
    transform = ShotTransform(
        pixel_polar_map((5.0, 5.0), [2.0, 3.0], 8, (10, 10)), normalise=True
    )
    block = ([0], np.ones((1, 100), np.float32), np.ones((1, 100), bool))
    _, polar_image, valid, _, means = pickle.loads(pickle.dumps(transform))(block)
    assert valid.all() and np.allclose(polar_image, 1.0) and means[0] == 1.0


def test_angular_correlation_on_a_local_dask_cluster(pipeline, in_tmp_path):
    directory, _ = pipeline
    code = angular_correlation.run(
        [str(directory / "polar.h5"), "dask.scheduler=local", "nproc=2"]
    )
    assert code == 0
    with h5py.File("correlation.h5") as a, h5py.File(directory / "correlation.h5") as b:
        np.testing.assert_allclose(
            a["entry/correlation/C"][()], b["entry/correlation/C"][()]
        )


def test_a_bad_shot_midway_leaves_no_output(in_tmp_path, capsys):
    truth = write_sacla_file(in_tmp_path / "bad.h5", n_shots=20, gap=False)
    bad_tag = truth.tags[15]
    with h5py.File(truth.path, "a") as f:
        group = f[f"run_178884/detector_2d_assembled_1/tag_{bad_tag}"]
        del group["detector_data"]
        group["detector_data"] = np.zeros((10, 10), np.float32)
    before = _digest(truth.path)
    code = polar_transform.run(["bad.h5", "block_size=2", "nproc=2", "nphi=36"])
    assert code == 1
    _fails(capsys, 1, "bad.h5", f"tag_{bad_tag}")
    assert not [p.name for p in in_tmp_path.iterdir() if "polar.h5" in p.name]
    assert _digest(truth.path) == before
