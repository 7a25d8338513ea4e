"""The simulated rotation sweep: readable by dxtbx, and its images match its truth."""

import h5py
import numpy as np
import pytest

from dials_diffuse.simulate import simulate_rotation
from dials_diffuse.simulate.rotation import (
    GAP_VALUE,
    build_experiment,
    expected_frame,
    rotation_setup,
)
from dials_diffuse.simulate.scattering import DiffuseModel
from dials_diffuse.util.errors import DataError


@pytest.fixture(scope="module")
def images(simulated_rotation):
    with h5py.File(simulated_rotation["master"], "r") as handle:
        return handle["/entry/data/data"][()]


@pytest.fixture(scope="module")
def truth(simulated_rotation):
    with h5py.File(simulated_rotation["truth"], "r") as handle:
        return {
            "gap": handle["mask/gap"][()],
            "hot": handle["hot_pixels/position"][()],
            "hot_rate": handle["hot_pixels/rate"][()],
            "expected_total": handle["frames/expected_total"][()],
            "expected_bragg": handle["frames/expected_bragg"][()],
            "exposure": handle["models"].attrs["exposure_s"],
            "grid": handle["diffuse/grid"][()],
            "axes": [handle[f"diffuse/{a}"][()] for a in "hkl"],
            "A": handle["models"].attrs["A_matrix"],
            "diffuse_attrs": dict(handle["diffuse"].attrs),
        }


def test_dxtbx_reads_the_sweep_with_the_true_models(simulated_rotation):
    from dxtbx.model.experiment_list import ExperimentListFactory

    imported = ExperimentListFactory.from_filenames([str(simulated_rotation["master"])])
    truth = ExperimentListFactory.from_json_file(str(simulated_rotation["truth_expt"]))
    assert imported[0].imageset.get_format_class().__name__ == "FormatNXmx"
    assert len(imported[0].imageset) == 30
    got, want = imported[0].detector[0], truth[0].detector[0]
    assert got.get_origin() == pytest.approx(want.get_origin())
    assert got.get_fast_axis() == pytest.approx(want.get_fast_axis())
    assert got.get_slow_axis() == pytest.approx(want.get_slow_axis())
    assert got.get_pixel_size() == pytest.approx(want.get_pixel_size())
    # The sensor the file declares: dials.import's parallax correction is the
    # one the forward model applied (tests/simulate/test_geometry.py).
    got_px_mm, want_px_mm = got.get_px_mm_strategy(), want.get_px_mm_strategy()
    assert got_px_mm.name() == want_px_mm.name() == "ParallaxCorrectedPxMmStrategy"
    assert got_px_mm.mu() == pytest.approx(want_px_mm.mu(), rel=1e-6)
    assert got_px_mm.t0() == pytest.approx(want_px_mm.t0(), rel=1e-6)
    assert imported[0].beam.get_wavelength() == pytest.approx(
        truth[0].beam.get_wavelength()
    )
    assert imported[0].scan.get_oscillation() == pytest.approx((0.0, 0.5))
    assert imported[0].scan.get_exposure_times()[0] == pytest.approx(0.2)
    assert imported[0].goniometer.get_rotation_axis() == pytest.approx((1.0, 0.0, 0.0))
    assert truth[0].crystal is not None
    # The module gap is masked by DIALS (pixel_mask and the 65535 values).
    mask = imported[0].imageset.get_mask(0)[0].as_numpy_array()
    with h5py.File(simulated_rotation["truth"], "r") as handle:
        assert np.array_equal(~mask, handle["mask/gap"][()])


def test_data_files_are_bitshuffle_lz4_with_image_numbers(simulated_rotation):
    with h5py.File(simulated_rotation["data"][0], "r") as handle:
        dataset = handle["/entry/data/data"]
        assert "32008" in dataset._filters
        assert dataset.attrs["image_nr_low"] == 1
        assert dataset.attrs["image_nr_high"] == 30
        assert dataset.dtype == np.uint16
    with h5py.File(simulated_rotation["master"], "r") as handle:
        assert handle["/entry/data/data_000001"].shape == (30, 256, 256)


def test_frame_sums_match_the_model(images, truth):
    valid = ~truth["gap"]
    measured = images[:, valid].astype(np.float64).sum(axis=1)
    expected = truth["expected_total"]
    # Poisson: the sum is within a few standard deviations of its expectation.
    assert np.all(np.abs(measured - expected) < 5 * np.sqrt(expected))
    assert np.all(truth["expected_bragg"] > 0)


def test_hot_pixels_and_gap(images, truth):
    y, x = truth["hot"].T
    hot_counts = images[:, y, x].astype(float)
    expected = truth["hot_rate"] * truth["exposure"]
    assert np.all(np.abs(hot_counts - expected) < 6 * np.sqrt(expected))
    # Hot pixels are the brightest valid pixels of the summed sweep.
    total = np.where(truth["gap"], 0, images.astype(np.int64)).sum(axis=0)
    brightest = np.argsort(total.ravel())[-len(y) :]
    assert set(brightest) == set(np.ravel_multi_index((y, x), total.shape))
    assert np.all(images[:, truth["gap"]] == GAP_VALUE)


def test_expected_frame_reproduces_images_statistically(simulated_rotation, images):
    """Recompute the model independently of the writer: a chi-square test."""
    experiment = build_experiment(rotation_setup("test"), seed=0)
    expected = expected_frame(experiment, 12)["total"]
    valid = ~experiment.gap_mask
    observed = images[12][valid].astype(float)
    chi2 = ((observed - expected[valid]) ** 2 / expected[valid]).mean()
    assert chi2 == pytest.approx(1.0, abs=0.05)


def test_diffuse_grid_is_the_model(truth):
    attrs = truth["diffuse_attrs"]
    model = DiffuseModel(
        **{
            k: tuple(v) if np.ndim(v) else float(v)
            for k, v in attrs.items()
            if k in DiffuseModel.__dataclass_fields__
        }
    )
    h, k, m = truth["axes"]
    assert attrs["subdivide"] == 4
    assert np.allclose(np.diff(h), 0.25)
    for i, j, n in [(len(h) // 2, len(k) // 2 + 3, len(m) // 2 - 5), (5, 40, 60)]:
        hkl = np.array([h[i], k[j], m[n]])
        s = np.linalg.norm(truth["A"] @ hkl)
        value = truth["grid"][i, j, n]
        if np.isnan(value):
            continue
        assert value == pytest.approx(model(hkl[None], np.array([s]))[0], rel=1e-5)
    assert np.isnan(truth["grid"][0, 0, 0])  # the corner is beyond the detector


def test_size_presets():
    test, demo = rotation_setup("test"), rotation_setup("demo")
    assert (test.nx, test.ny, test.frames, test.width_deg) == (256, 256, 30, 0.5)
    assert (demo.nx, demo.ny, demo.frames, demo.width_deg) == (512, 512, 90, 0.5)
    # The same physical detector: the test size has 2 x 2 binned pixels.
    assert test.nx * test.pixel_mm == demo.nx * demo.pixel_mm
    assert rotation_setup("test", frames=7).frames == 7


def test_same_seed_same_data_other_seed_differs(tmp_path):
    a = simulate_rotation(tmp_path / "a", seed=5, frames=2)
    b = simulate_rotation(tmp_path / "b", seed=5, frames=2)
    c = simulate_rotation(tmp_path / "c", seed=6, frames=2)

    def read(paths):
        with h5py.File(paths["master"], "r") as handle:
            return handle["/entry/data/data"][()]

    assert np.array_equal(read(a), read(b))
    assert not np.array_equal(read(a), read(c))


def test_refuses_a_non_empty_directory_and_leaves_it(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not an empty directory"):
        simulate_rotation(tmp_path / "out", frames=1)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    with pytest.raises(DataError, match="unknown size"):
        simulate_rotation(tmp_path / "other", size="huge")


def test_no_partial_dataset_after_a_failure(tmp_path, monkeypatch):
    from dials_diffuse.simulate import rotation

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rotation, "write_rotation_truth", broken)
    with pytest.raises(RuntimeError):
        simulate_rotation(tmp_path / "out", frames=1)
    assert list(tmp_path.iterdir()) == []


def test_several_data_files_through_the_virtual_dataset(tmp_path):
    """Frames split over data files: DIALS reads them in order through the VDS."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    paths = simulate_rotation(tmp_path / "split", frames=5, frames_per_file=2)
    assert [p.name for p in paths["data"]] == [
        "rotation_data_000001.h5",
        "rotation_data_000002.h5",
        "rotation_data_000003.h5",
    ]
    with h5py.File(paths["data"][2], "r") as handle:
        dataset = handle["/entry/data/data"]
        assert (dataset.attrs["image_nr_low"], dataset.attrs["image_nr_high"]) == (5, 5)
        last = dataset[0]
    imageset = ExperimentListFactory.from_filenames([str(paths["master"])])[0].imageset
    assert len(imageset) == 5
    raw = imageset.get_raw_data(4)[0].as_numpy_array()
    valid = last != GAP_VALUE
    assert np.array_equal(raw[valid], last[valid].astype(raw.dtype))
    assert np.all(raw[~valid] == -1)  # gap pixels read as masked


def test_scale_orientation_and_noise_free_overrides():
    from dials_diffuse.simulate.rotation import expected_frame, measured_frame

    base = build_experiment(rotation_setup("test", frames=4), seed=3)
    brighter = build_experiment(rotation_setup("test", frames=4, scale=1.3), seed=3)
    one, other = expected_frame(base, 2), expected_frame(brighter, 2)
    for name in ("bragg", "diffuse", "background"):
        np.testing.assert_allclose(other[name], 1.3 * one[name])
    np.testing.assert_allclose(other["hot"], one["hot"], rtol=1e-12)
    # Remounted: another U, the same crystal (cell and intensities).
    remounted = build_experiment(
        rotation_setup("test", frames=4, orientation_seed=99), seed=3
    )
    assert not np.allclose(remounted.crystal.get_U(), base.crystal.get_U())
    assert remounted.crystal.get_unit_cell().parameters() == pytest.approx(
        base.crystal.get_unit_cell().parameters()
    )
    np.testing.assert_allclose(remounted.intensities, base.intensities, rtol=1e-12)
    # Noise-free: the expected counts, rounded; Poisson otherwise, per sweep.
    quiet = build_experiment(
        rotation_setup("test", frames=4, poisson_noise=False), seed=3
    )
    expected = expected_frame(quiet, 1)["total"]
    counts = measured_frame(quiet, 1, expected, seed=3)
    valid = ~quiet.gap_mask
    saturation = quiet.detector[0].get_trusted_range()[1]
    np.testing.assert_array_equal(
        counts[valid], np.minimum(np.rint(expected), saturation)[valid]
    )
    noisy = [measured_frame(base, 1, expected, seed=3, sweep=k) for k in (0, 1)]
    assert not np.array_equal(noisy[0], noisy[1])


def test_dead_pixels_read_zero_and_are_flagged_dead(simulated_modules):
    with h5py.File(simulated_modules["truth"], "r") as handle:
        dead = handle["mask/dead"][()]
        gap = handle["mask/gap"][()]
        hot = handle["hot_pixels/position"][()]
    with h5py.File(simulated_modules["master"], "r") as handle:
        images = handle["/entry/data/data"][()]
        pixel_mask = handle["/entry/instrument/detector/pixel_mask"][()]
    assert dead.sum() == 20 and not np.any(dead & gap)
    assert not np.any(dead[hot[:, 0], hot[:, 1]])
    assert np.all(images[:, dead] == 0)
    # DECTRIS bits: 1 gap, 2 dead; nothing else flagged.
    np.testing.assert_array_equal(pixel_mask, np.where(gap, 1, np.where(dead, 2, 0)))


def test_module_efficiency_scales_the_signal_of_its_module():
    tiles_setup = rotation_setup("test", frames=2, modules=(4, 2))
    efficiency = (1.0, 1.0, 0.9, 1.0, 1.0, 1.0, 1.0, 0.8)
    plain = build_experiment(tiles_setup, seed=0)
    weaker = build_experiment(
        rotation_setup("test", frames=2, modules=(4, 2), module_efficiency=efficiency),
        seed=0,
    )
    a, b = expected_frame(plain, 1), expected_frame(weaker, 1)
    expected_map = np.ones(a["total"].shape)
    for (row, column, rows, columns), value in zip(
        tiles_setup.module_tiles, efficiency
    ):
        expected_map[row : row + rows, column : column + columns] = value
    for name in ("bragg", "diffuse", "background"):
        np.testing.assert_allclose(b[name], a[name] * expected_map, rtol=1e-12)
    np.testing.assert_array_equal(b["hot"], a["hot"])  # hot pixels are not signal
    with pytest.raises(DataError, match="2 values for 8 modules"):
        rotation_setup(
            "test", modules=(4, 2), module_efficiency=(1, 1)
        ).efficiency_map()
