"""Frame sums, detrending and statistics against known truth."""

import numpy as np
import pandas as pd
import pytest

from dials_diffuse.algorithms.frames.describe import describe_series
from dials_diffuse.algorithms.frames.detrend import detrend, running_cv
from dials_diffuse.algorithms.frames.sums import sum_frames
from dials_diffuse.images.eiger import EigerMasterSource
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.parallel import ParallelMap
from tests.eiger_files import drifting_series, real_master, write_series


def numpy_sums(frames, valid, low, high, invalid_from=np.inf):
    use = valid & (frames >= low) & (frames <= high) & (frames < invalid_from)
    return np.where(use, frames, 0).sum(axis=(1, 2)).astype(float), use.sum(axis=(1, 2))


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    frames, scale = drifting_series()
    mask = np.zeros(frames.shape[1:], np.uint32)
    mask[:, 20] = 1  # a gap column
    mask[5, 7] = 8  # a hot pixel
    frames[:, mask != 0] = 65535
    master = write_series(
        tmp_path_factory.mktemp("drift"), frames, 50, pixel_mask=mask, bit_depth=16
    )
    return master, frames, scale, mask == 0


def test_sums_equal_numpy_and_parallel_equals_serial(drifting):
    master, frames, _, valid = drifting
    source = EigerMasterSource(master)
    serial = sum_frames(source, low=5, high=40, batch_frames=7)
    with ParallelMap(nproc=2) as pmap:
        parallel = sum_frames(source, low=5, high=40, pmap=pmap, batch_frames=16)
    sums, used = numpy_sums(frames, valid, 5, 40)
    assert np.array_equal(serial.sums, sums) and np.array_equal(serial.used, used)
    assert np.array_equal(parallel.sums, serial.sums)
    assert np.array_equal(serial.image_numbers, np.arange(1, 121))
    assert np.all(serial.invalid == 0)  # gaps are in the pixel mask, not per frame
    table = serial.to_frame()
    assert list(table.columns) == [
        "image",
        "sum",
        "pixels_used",
        "mean",
        "max",
        "invalid",
    ]
    np.testing.assert_allclose(table["mean"], sums / used)


def test_image_range_spans_the_data_file_boundary(drifting):
    master, frames, _, valid = drifting
    result = sum_frames(EigerMasterSource(master), image_range=(45, 60))
    sums, _ = numpy_sums(frames[44:60], valid, 0, np.inf)
    assert np.array_equal(result.image_numbers, np.arange(45, 61))
    assert np.array_equal(result.sums, sums)


def test_drift_and_cv_recovered(drifting):
    master, frames, scale, valid = drifting
    result = sum_frames(EigerMasterSource(master))
    detrended, trend = detrend(result.sums, "linear")
    # The drift: trend rises by 10 % over the series (fit of the scale truth).
    rise = trend[-1] / trend[0] - 1
    truth_trend = np.polynomial.Polynomial.fit(np.arange(scale.size), scale, 1)(
        np.arange(scale.size)
    )
    assert rise == pytest.approx(truth_trend[-1] / truth_trend[0] - 1, abs=0.005)
    assert rise == pytest.approx(0.10, abs=0.02)
    # CV of the detrended sums: the 2 % frame-to-frame scatter plus Poisson
    # noise (1/sqrt(expected counts), about 0.16 % here).
    table = describe_series({"raw": result.sums, "detrended": detrended})
    expected = (
        np.std(scale / truth_trend * truth_trend.mean(), ddof=1) / scale.mean() * 100
    )
    poisson = 100 / np.sqrt(result.sums.mean())
    assert table.loc["CV%", "detrended"] == pytest.approx(
        np.hypot(expected, poisson), rel=0.08
    )
    # The raw CV includes the drift, so it is larger.
    assert table.loc["CV%", "raw"] > table.loc["CV%", "detrended"] * 1.2


def test_real_bitshuffle_and_lz4_sets_give_identical_sums(tmp_path, dectris_testfiles):
    results = {}
    for name in ("eiger1_bslz4", "eiger1_lz4", "eiger2_bslz4", "eiger2_lz4"):
        source = EigerMasterSource(real_master(tmp_path, dectris_testfiles, name))
        results[name] = sum_frames(source, low=1, high=500, batch_frames=3)
    assert np.array_equal(results["eiger1_bslz4"].sums, results["eiger1_lz4"].sums)
    assert np.array_equal(results["eiger2_bslz4"].sums, results["eiger2_lz4"].sums)
    assert np.array_equal(results["eiger1_bslz4"].invalid, [38164] * 4)


def test_detrend_methods_recover_known_trends():
    t = np.arange(200.0)
    line = 1000 + 3 * t
    detrended, trend = detrend(line, "linear")
    np.testing.assert_allclose(trend, line)
    np.testing.assert_allclose(detrended, line.mean())
    quadratic = 500 + 2 * t - 0.01 * t**2
    detrended, _ = detrend(quadratic, "polynomial", order=2)
    np.testing.assert_allclose(detrended, quadratic.mean())
    # A slow sine under fast alternation: the moving mean over an even
    # window removes the sine and keeps the alternation.
    slow = 100 * np.sin(2 * np.pi * t / 200)
    fast = np.where(t % 2 == 0, 1.0, -1.0)
    detrended, trend = detrend(1e4 + slow + fast, "moving_window", window=10)
    inner = slice(10, -10)
    np.testing.assert_allclose(trend[inner], (1e4 + slow)[inner], atol=1.7)
    detrended, trend = detrend(line, "none")
    np.testing.assert_allclose(detrended, line)


def test_describe_matches_pandas_and_hand_cv():
    values = np.array([10.0, 12.0, 11.0, 13.0, 9.0, np.nan])
    table = describe_series({"raw": values})
    reference = pd.Series(values).describe()
    for row in ("count", "mean", "std", "min", "25%", "50%", "75%", "max"):
        assert table.loc[row, "raw"] == pytest.approx(reference[row])
    assert table.loc["CV%", "raw"] == pytest.approx(
        np.std(values[:5], ddof=1) / 11 * 100
    )
    assert list(table.index) == [
        "count",
        "mean",
        "std",
        "CV%",
        "min",
        "25%",
        "50%",
        "75%",
        "max",
    ]


def test_running_cv():
    values = np.tile([90.0, 110.0], 50)
    cv = running_cv(values, 10)
    np.testing.assert_allclose(cv[5:-5], np.std([90, 110] * 5, ddof=1) / 100 * 100)


def test_a_last_image_of_zero_means_the_last(drifting):
    master, frames, _, valid = drifting
    n = len(frames)
    result = sum_frames(EigerMasterSource(master), image_range=(45, 0))
    np.testing.assert_array_equal(result.image_numbers, np.arange(45, n + 1))
    sums, _ = numpy_sums(frames[44:], valid, 0, np.inf)
    np.testing.assert_array_equal(result.sums, sums)
    with pytest.raises(DataError, match=f"outside the images 1-{n}"):
        sum_frames(EigerMasterSource(master), image_range=(1, n + 1))


@pytest.mark.parametrize("compression", ["gzip", "none", "lz4"])
def test_sums_for_every_codec(tmp_path, compression):
    frames, _ = drifting_series(n_frames=20, shape=(16, 12))
    frames[:, 0, 0] = 65535
    source = EigerMasterSource(
        write_series(tmp_path, frames, 8, compression, bit_depth=16)
    )
    result = sum_frames(source, low=3, high=30, batch_frames=5)
    sums, used = numpy_sums(frames, np.ones(frames.shape[1:], bool), 3, 30, 65535)
    assert np.array_equal(result.sums, sums) and np.array_equal(result.used, used)
    assert np.all(result.invalid == 1)


def test_sums_through_h5py_for_tiled_chunks(tmp_path):
    import h5py

    from tests.eiger_files import link_master

    frames, _ = drifting_series(n_frames=10, shape=(16, 12))
    path = tmp_path / "tiled_data_000001.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("/entry/data/data", data=frames, chunks=(4, 8, 12))
    master = tmp_path / "tiled_master.h5"
    link_master(master, [path], frames.shape[1:])
    result = sum_frames(EigerMasterSource(master), batch_frames=3)
    assert np.array_equal(result.sums, frames.sum(axis=(1, 2)))


def test_default_batch_bounds_memory(tmp_path, drifting):
    from dials_diffuse.algorithms.frames.sums import default_batch_frames

    assert default_batch_frames(EigerMasterSource(drifting[0])) == 64  # small frames
    big = np.zeros((1, 2048, 2048), np.uint32)  # 16 MiB per frame
    assert default_batch_frames(EigerMasterSource(write_series(tmp_path, big, 1))) == 4
