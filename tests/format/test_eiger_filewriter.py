"""FormatEigerFilewriter: real dials.import and dials.find_spots on bare DECTRIS files."""

import subprocess
import sys

import h5py
import numpy as np
import pytest
from dxtbx.format.FormatHDF5EigerNearlyNexus import FormatHDF5EigerNearlyNexus
from dxtbx.format.Registry import get_format_class_for_file
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.format.FormatEigerFilewriter import FormatEigerFilewriter
from dials_diffuse.simulate.eiger_files import write_dectris_files

SHAPE = (1065, 1030)  # EIGER 1M: two 514-row modules and a 37-row gap
GAP_ROWS = slice(514, 551)
N_FRAMES = 6
WAVELENGTH = 0.9537


def spot_truth(seed=1, n=25):
    """Known spots: (frame, row, column) centres away from gaps and edges."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate(
        [rng.uniform(30, 480, n // 2), rng.uniform(585, 1030, n - n // 2)]
    )
    columns = rng.uniform(30, 1000, n)
    frames = rng.integers(0, N_FRAMES, n)
    return np.stack([frames, rows, columns], axis=1)


def make_frames(truth, dtype=np.uint16, seed=2):
    """Poisson background, Gaussian spots (σ 1.2 px, 3000 counts), gap pixels 2^n - 1."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    for frame in range(N_FRAMES):
        image = rng.poisson(0.5, SHAPE).astype(float)
        for f, row, column in truth:
            if f == frame:
                near = (abs(y - row) < 8) & (abs(x - column) < 8)
                image[near] += (
                    3000
                    / (2 * np.pi * 1.2**2)
                    * np.exp(
                        -((y[near] + 0.5 - row) ** 2 + (x[near] + 0.5 - column) ** 2)
                        / (2 * 1.2**2)
                    )
                )
        image = rng.poisson(image)
        image[GAP_ROWS] = np.iinfo(dtype).max
        image[700, 200] = np.iinfo(dtype).max  # a dead pixel, flagged in pixel_mask
        yield image.astype(dtype)


def pixel_mask():
    mask = np.zeros(SHAPE, np.uint32)
    mask[GAP_ROWS] = 1
    mask[700, 200] = 2
    return mask


@pytest.fixture(scope="module")
def bare_series(tmp_path_factory):
    """Flat-header master (no NeXus geometry, no NX_class) with a pixel mask."""
    directory = tmp_path_factory.mktemp("eiger")
    truth = spot_truth()
    master = write_dectris_files(
        directory,
        "sweep",
        make_frames(truth),
        n_frames=N_FRAMES,
        shape=SHAPE,
        frames_per_file=4,
        beam_center=(515.3, 530.2),
        wavelength=WAVELENGTH,
        countrate_cutoff=60000,
        pixel_mask=pixel_mask(),
        omega_start=10.0,
        omega_increment=0.2,
        count_time=0.05,
    )
    return master, truth


def dials(module, *args, cwd):
    """Run a DIALS program in this interpreter's environment (where our entry
    points are registered; Debian's /usr/bin/dials.* use the system python)."""
    code = f"from dials.command_line.{module} import run; run()"
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_registry_picks_our_class(bare_series):
    master, _ = bare_series
    assert get_format_class_for_file(str(master)) is FormatEigerFilewriter
    assert not FormatEigerFilewriter.understand(
        str(master.parent / "sweep_data_000001.h5")
    )


def test_models_from_header(bare_series):
    master, _ = bare_series
    experiment = ExperimentListFactory.from_filenames([str(master)])[0]
    imageset = experiment.imageset
    assert len(imageset) == N_FRAMES
    assert experiment.beam.get_wavelength() == pytest.approx(WAVELENGTH)
    panel = experiment.detector[0]
    assert panel.get_image_size() == (1030, 1065)
    assert panel.get_pixel_size() == pytest.approx((0.075, 0.075))
    assert panel.get_distance() == pytest.approx(200.0)
    assert panel.get_material() == "Si" and panel.get_thickness() == pytest.approx(0.45)
    assert panel.get_px_mm_strategy().name() == "ParallaxCorrectedPxMmStrategy"
    # Beam centre in px (parallax-free along the normal): as written.
    centre = panel.get_beam_centre_px(experiment.beam.get_s0())
    assert centre == pytest.approx((515.3, 530.2), abs=1e-6)
    scan = experiment.scan
    assert scan.get_image_range() == (1, N_FRAMES)
    assert scan.get_oscillation() == pytest.approx((10.0, 0.2))
    assert list(scan.get_exposure_times()) == pytest.approx([0.05] * N_FRAMES)
    assert experiment.goniometer.get_rotation_axis() == pytest.approx((1, 0, 0))


def test_pixels_and_masks_as_written(bare_series):
    master, truth = bare_series
    imageset = ExperimentListFactory.from_filenames([str(master)])[0].imageset
    expected = list(make_frames(truth))
    for index in (0, 3, 4, 5):  # across the data-file boundary (4 per file)
        data = imageset.get_raw_data(index)[0].as_numpy_array()
        np.testing.assert_array_equal(data, expected[index].astype(np.int32))
        valid = imageset.get_mask(index)[0].as_numpy_array()
        assert not valid[GAP_ROWS].any()
        assert not valid[700, 200]
        overloaded = expected[index] >= 60000
        assert not valid[overloaded].any()
        ordinary = ~overloaded
        ordinary[GAP_ROWS] = False
        ordinary[700, 200] = False
        assert valid[ordinary].all()


def test_uint32_gaps_are_masked(tmp_path):
    """uint32 gap value 2^32 - 1 becomes -1 (as dxtbx reads NXmx) and is masked."""
    truth = spot_truth(n=2)
    master = write_dectris_files(
        tmp_path,
        "u32",
        make_frames(truth, np.uint32),
        n_frames=N_FRAMES,
        shape=SHAPE,
        dtype=np.uint32,
        countrate_cutoff=None,
        pixel_mask=None,
    )
    imageset = ExperimentListFactory.from_filenames([str(master)])[0].imageset
    data = imageset.get_raw_data(1)[0].as_numpy_array()
    assert (data[GAP_ROWS] == -1).all()
    valid = imageset.get_mask(1)[0].as_numpy_array()
    assert not valid[GAP_ROWS].any() and not valid[700, 200]
    assert valid[:514].sum() > 0.99 * 514 * 1030


def test_stills_when_omega_does_not_advance(tmp_path):
    master = write_dectris_files(
        tmp_path,
        "stills",
        make_frames(spot_truth(n=2)),
        n_frames=N_FRAMES,
        shape=SHAPE,
        omega_increment=None,
        compression="lz4",
    )
    experiments = ExperimentListFactory.from_filenames([str(master)])
    assert all(e.scan is None and e.goniometer is None for e in experiments)
    assert len(experiments) == N_FRAMES  # one still per image


def test_bare_header_uses_placeholders_and_warns(tmp_path, caplog):
    master = write_dectris_files(
        tmp_path,
        "bare",
        make_frames(spot_truth(n=2)),
        n_frames=2,
        shape=SHAPE,
        detector_distance=None,
        wavelength=None,
        photon_energy=None,
        sensor_material=None,
        description=None,
    )
    with caplog.at_level("WARNING"):
        experiment = ExperimentListFactory.from_filenames([str(master)])[0]
    assert experiment.detector[0].get_distance() == pytest.approx(100.0)
    assert experiment.beam.get_wavelength() == pytest.approx(1.0)
    assert "no detector_distance" in caplog.text and "distance=" in caplog.text
    assert "no wavelength" in caplog.text


def test_photon_energy_gives_wavelength(tmp_path):
    master = write_dectris_files(
        tmp_path,
        "energy",
        make_frames(spot_truth(n=2)),
        n_frames=1,
        shape=SHAPE,
        wavelength=None,
        photon_energy=12398.419843320026,
    )
    experiment = ExperimentListFactory.from_filenames([str(master)])[0]
    assert experiment.beam.get_wavelength() == pytest.approx(1.0)


def test_leaves_files_dxtbx_reads_to_dxtbx(bare_series, tmp_path):
    """With DECTRIS' NeXus-ish geometry and NX_class, dxtbx's own class wins."""
    master, _ = bare_series
    copy = tmp_path / "nearly_master.h5"
    with h5py.File(master) as source, h5py.File(copy, "w") as f:
        source.copy("entry", f)
        f["entry"].attrs["NX_class"] = np.bytes_("NXentry")
        detector = f["entry/instrument/detector"]
        detector["geometry/orientation/value"] = [1.0, 0, 0, 0, -1, 0]
        detector["geometry/translation/distances"] = [0.0, 0, 0.2]
    assert FormatHDF5EigerNearlyNexus.understand(str(copy))
    assert not FormatEigerFilewriter.understand(str(copy))


@pytest.mark.slow
def test_dials_import_and_find_spots(bare_series, tmp_path):
    """The real programs: import picks our class; find_spots finds the true spots."""
    master, truth = bare_series
    dials("dials_import", master, cwd=tmp_path)
    imported = ExperimentListFactory.from_json_file(str(tmp_path / "imported.expt"))
    assert imported[0].imageset.get_format_class() is FormatEigerFilewriter
    assert imported[0].scan.get_oscillation() == pytest.approx((10.0, 0.2))
    dials("find_spots", "imported.expt", "nproc=1", cwd=tmp_path)
    from dials.array_family import flex

    strong = flex.reflection_table.from_file(str(tmp_path / "strong.refl"))
    x, y, z = (part.as_numpy_array() for part in strong["xyzobs.px.value"].parts())
    # Every true spot found within 0.5 px (centroids in pixel-corner coordinates).
    for frame, row, column in truth:
        distance = np.hypot(x - column, y - row)
        nearest = np.argmin(distance)
        assert distance[nearest] < 0.5
        assert frame <= z[nearest] <= frame + 1
    # The bright spots (3000 counts each) are exactly the true ones; the rest
    # are faint Poisson noise at a 0.5-count background.
    intensity = strong["intensity.sum.value"].as_numpy_array()
    assert (intensity > 1000).sum() == len(truth)
    assert intensity[intensity <= 1000].max() < 200
    # Nothing from the gap rows (2^16 - 1) or the dead pixel: masks respected.
    # A centroid (pixel-corner coordinates) of pixels outside the gap lies
    # below row 513.5 or from row 551.5 on, so none is in [514, 551).
    assert not ((y >= GAP_ROWS.start) & (y < GAP_ROWS.stop)).any()
    assert np.hypot(x - 200.5, y - 700.5).min() > 2


def test_real_artificial_master_file(dectris_testfiles):
    """DECTRIS' own bare test master (pixel sizes, pixel_mask, one link): stills."""
    master = dectris_testfiles / "dataset_artificial_small_001/test_master.h5"
    assert get_format_class_for_file(str(master)) is FormatEigerFilewriter
    experiments = ExperimentListFactory.from_filenames([str(master)])
    assert len(experiments) == 5 and experiments[0].scan is None
    imageset = experiments[0].imageset
    assert experiments[0].detector[0].get_pixel_size() == pytest.approx((250.0, 500.0))
    with h5py.File(master.parent / "test_data_000001.h5") as f:
        expected = f["entry/data/data"][0]
    with h5py.File(master) as f:
        bad = f["entry/instrument/detector/detectorSpecific/pixel_mask"][()] != 0
    np.testing.assert_array_equal(
        imageset.get_raw_data(0)[0].as_numpy_array(), expected
    )
    np.testing.assert_array_equal(imageset.get_mask(0)[0].as_numpy_array(), ~bad)


def write_master_for(tmp_path, data_files, name):
    """A flat-header master linking real DECTRIS data files (absolute paths)."""
    master = tmp_path / f"{name}_master.h5"
    with h5py.File(master, "w") as f:
        detector = f.create_group("entry/instrument/detector")
        detector["x_pixel_size"] = 75e-6
        detector["y_pixel_size"] = 75e-6
        detector["detector_distance"] = 0.1
        detector["count_time"] = 0.1
        f["entry/sample/goniometer/omega_increment"] = 0.1
        f["entry/sample/goniometer/omega"] = np.arange(4) * 0.1
        for number, path in enumerate(data_files, start=1):
            f[f"entry/data/data_{number:06d}"] = h5py.ExternalLink(
                str(path), "/entry/data/data"
            )
    return master


def test_real_eiger1_bslz4_and_lz4_identical_and_masked(dectris_testfiles, tmp_path):
    directory = dectris_testfiles / "datasets_eiger1"
    pixels = {}
    for codec in ("bslz4", "lz4"):
        files = sorted(directory.glob(f"*_{codec}_data_*.h5"))
        master = write_master_for(tmp_path, files, codec)
        experiment = ExperimentListFactory.from_filenames([str(master)])[0]
        imageset = experiment.imageset
        assert len(imageset) == 4
        assert experiment.scan.get_image_range() == (1, 4)
        frames = [imageset.get_raw_data(i)[0].as_numpy_array() for i in range(4)]
        masks = [imageset.get_mask(i)[0].as_numpy_array() for i in range(4)]
        pixels[codec] = np.array(frames)
        for i in range(4):  # frames 3-4 come from the second data file
            with h5py.File(files[i // 2]) as f:
                np.testing.assert_array_equal(frames[i], f["entry/data/data"][i % 2])
            gap = frames[i] == 65535
            assert gap.sum() == 38164
            assert not masks[i][gap].any()
    # The two real acquisitions of the test pattern differ in ~0.02 % of the
    # pixels, by one count (neighbours swapped at chip edges), in the files
    # themselves (as h5py reads them); gaps and everything else are identical.
    difference = np.abs(pixels["bslz4"] - pixels["lz4"])
    assert difference.max() == 1 and difference.mean() < 3e-4
    np.testing.assert_array_equal(pixels["bslz4"] == 65535, pixels["lz4"] == 65535)


def test_links_to_unwritten_files_are_skipped(tmp_path):
    """The filewriter links data files that a short acquisition never wrote."""
    master = write_dectris_files(
        tmp_path,
        "short",
        make_frames(spot_truth(n=2)),
        n_frames=N_FRAMES,
        shape=SHAPE,
        frames_per_file=4,
    )
    with h5py.File(master, "a") as f:
        f["entry/data/data_000003"] = h5py.ExternalLink(
            "short_data_000003.h5", "/entry/data/data"
        )
    imageset = ExperimentListFactory.from_filenames([str(master)])[0].imageset
    assert len(imageset) == N_FRAMES


@pytest.mark.parametrize("kind", ["bslz4", "bslz4_uint8", "bslz4_uint32", "lz4"])
def test_real_eiger2_all_dtypes(dectris_testfiles, tmp_path, kind):
    """EIGER2 512 x 1028 real files in uint8/16/32: pixels as h5py reads them
    (integers as int32, 2^32 - 1 as -1), and every 2^n - 1 marker masked."""
    directory = dectris_testfiles / "datasets_eiger2"
    files = sorted(
        directory.glob(f"eiger2_simread7_2datafiles_4images_{kind}_data_*.h5")
    )
    assert len(files) == 2
    master = write_master_for(tmp_path, files, kind)
    imageset = ExperimentListFactory.from_filenames([str(master)])[0].imageset
    assert len(imageset) == 4
    for index in range(4):
        with h5py.File(files[index // 2]) as f:
            raw = f["entry/data/data"][index % 2]
        data = imageset.get_raw_data(index)[0].as_numpy_array()
        np.testing.assert_array_equal(data, raw.astype(np.int32))
        marker = raw == np.iinfo(raw.dtype).max
        valid = imageset.get_mask(index)[0].as_numpy_array()
        assert not valid[marker].any()
        assert valid[~marker].all()


def test_master_of_an_odd_sized_detector_is_ours(simulated_eiger_series):
    """dxtbx's 'nearly NeXus' class claims DECTRIS masters whose size is not a
    whole number of EIGER modules, then fails inside dxtbx; we read them."""
    import h5py
    from dxtbx.format.Registry import get_format_class_for_file
    from dxtbx.model.experiment_list import ExperimentListFactory

    from dials_diffuse.format.FormatEigerFilewriter import FormatEigerFilewriter

    master = str(simulated_eiger_series["master"])
    assert get_format_class_for_file(master) is FormatEigerFilewriter
    experiments = ExperimentListFactory.from_filenames([master])
    imageset = experiments[0].imageset
    with h5py.File(simulated_eiger_series["truth"], "r") as truth:
        gap = truth["mask/gap"][()].astype(bool)
        n_frames = truth["frames/expected_sum"].shape[0]
    assert len(experiments) == n_frames  # stills: the series does not rotate
    valid = imageset.get_mask(0)[0].as_numpy_array()
    assert not valid[gap].any()
    assert valid[~gap].mean() > 0.99
