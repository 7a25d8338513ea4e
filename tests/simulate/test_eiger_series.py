"""The simulated Eiger series: DECTRIS layout, and frame sums that match the truth."""

import h5py
import numpy as np
import pytest

from dials_diffuse.simulate.eiger_series import OVERFLOW_VALUE


@pytest.fixture(scope="module")
def series(simulated_eiger_series):
    with h5py.File(simulated_eiger_series["master"], "r") as master:
        links = sorted(k for k in master["/entry/data"] if k.startswith("data_"))
        frames = np.concatenate([master[f"/entry/data/{k}"][()] for k in links])
        pixel_mask = master["/entry/instrument/detector/pixel_mask"][()]
        cutoff = master[
            "/entry/instrument/detector/detectorSpecific/countrate_correction_count_cutoff"
        ][()]
    with h5py.File(simulated_eiger_series["truth"], "r") as handle:
        truth = {
            **dict(handle.attrs),
            "expected_sum": handle["frames/expected_sum"][()],
            "gap": handle["mask/gap"][()],
            "saturated": handle["mask/saturated"][()],
        }
    return frames, pixel_mask, cutoff, truth


def test_dectris_layout(simulated_eiger_series):
    assert len(simulated_eiger_series["data"]) == 3
    with h5py.File(simulated_eiger_series["master"], "r") as master:
        assert "definition" not in master["/entry"]
        for number in (1, 2, 3):
            link = master["/entry/data"].get(f"data_{number:06d}", getlink=True)
            assert isinstance(link, h5py.ExternalLink)
            dataset = master[f"/entry/data/data_{number:06d}"]
            assert dataset.attrs["image_nr_low"] == 100 * (number - 1) + 1
            assert dataset.attrs["image_nr_high"] == 100 * number
            assert "32008" in dataset._filters
        assert master["/entry/instrument/detector/frame_time"][()] == pytest.approx(
            0.01
        )


def test_frame_sums_match_truth(series):
    frames, _, cutoff, truth = series
    valid = ~(truth["gap"] | truth["saturated"])
    sums = frames[:, valid].astype(np.float64).sum(axis=1)
    expected = truth["expected_sum"]
    assert np.all(np.abs(sums - expected) < 5 * np.sqrt(expected))
    # The same sums come from thresholds alone: pixels within [0, cutoff].
    thresholded = (
        np.where(frames <= cutoff, frames, 0).astype(np.float64).sum(axis=(1, 2))
    )
    assert np.array_equal(thresholded, sums)


def test_cv_and_drift_recovered(series):
    frames, _, cutoff, truth = series
    sums = np.where(frames <= cutoff, frames, 0).astype(np.float64).sum(axis=(1, 2))
    index = np.arange(len(sums))
    slope, intercept = np.polyfit(index, sums, 1)
    assert slope / intercept == pytest.approx(truth["drift_per_frame"], abs=4e-5)
    detrended = sums / (intercept + slope * index)
    cv_percent = 100 * detrended.std(ddof=1)
    assert cv_percent == pytest.approx(truth["expected_cv_percent"], rel=0.2)
    assert truth["mean_frame_sum"] == pytest.approx(intercept, rel=0.01)


def test_gap_and_saturated_pixels(series):
    frames, pixel_mask, _, truth = series
    assert np.all(frames[:, truth["gap"]] == OVERFLOW_VALUE)
    assert np.all(frames[:, truth["saturated"]] == OVERFLOW_VALUE)
    assert np.array_equal(pixel_mask & 1 == 1, truth["gap"])
    assert not np.any(pixel_mask[truth["saturated"]])
    assert truth["saturated"].sum() == 6
