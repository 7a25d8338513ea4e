"""The transmission series: notch and pile-up in the pixel histogram, scaling with T."""

import h5py
import numpy as np
import pytest

from dials_diffuse.simulate.transmission_series import DetectorResponse
from dials_diffuse.util.compat import within_trusted_range


@pytest.fixture(scope="module")
def series(simulated_transmission_series):
    with h5py.File(simulated_transmission_series["truth"], "r") as handle:
        truth = dict(handle.attrs)
    sweeps = []
    for sweep in simulated_transmission_series["sweeps"]:
        with h5py.File(sweep["master"], "r") as handle:
            images = handle["/entry/data/data"][()]
        with h5py.File(sweep["truth"], "r") as handle:
            sweeps.append(
                {
                    "images": images,
                    "gap": handle["mask/gap"][()],
                    "hot": handle["hot_pixels/position"][()],
                    "expected_total": handle["frames/expected_total"][()],
                    "expected_hot": handle["frames/expected_hot"][()],
                    "transmission": handle.attrs["transmission"],
                }
            )
    return truth, sweeps


def test_truth_lists_the_series(series):
    truth, sweeps = series
    assert list(truth["transmissions"]) == [0.064, 0.127, 0.253, 0.503, 1.0]
    assert [s["transmission"] for s in sweeps] == list(truth["transmissions"])
    assert (truth["notch_low"], truth["notch_high"], truth["saturation"]) == (
        200,
        212,
        4000,
    )
    assert truth["overload_value"] == 4001


def test_notch_and_pile_up_in_the_pixel_histogram(series):
    truth, sweeps = series
    values = np.concatenate([s["images"][:, ~s["gap"]].ravel() for s in sweeps])
    low, high, saturation = truth["notch_low"], truth["notch_high"], truth["saturation"]
    overload = truth["overload_value"]
    histogram = np.bincount(values, minlength=overload + 1)
    assert histogram[low:high].sum() == 0  # the notch is empty
    assert histogram[high] > 5 * histogram[high + 1]  # its counts piled up above it
    assert histogram[low - 5 : low].sum() > 0  # values on both sides exist
    # True counts >= saturation pile up at the overload value; the saturation
    # value itself never occurs (both dxtbx trusted-range rules agree).
    assert values.max() == overload and histogram[saturation] == 0
    assert histogram[overload] > 10 * histogram[saturation - 20 : saturation].mean()
    assert histogram[saturation - 20 : saturation].sum() > 0


def test_frame_sums_scale_with_transmission(series):
    _, sweeps = series
    scattered = []
    for sweep in sweeps:
        valid = ~sweep["gap"]
        valid[sweep["hot"][:, 0], sweep["hot"][:, 1]] = False
        sums = sweep["images"][:, valid].astype(float).sum(axis=1)
        scattered.append(sums.sum())
        # Hot pixels saturate; the rest differs from the model only by the
        # notch and pile-up of a few pixels.
        expected = sweep["expected_total"] - sweep["expected_hot"]
        assert sums == pytest.approx(expected, rel=0.05)
    ratio = np.array(scattered) / scattered[-1]
    transmissions = np.array([s["transmission"] for s in sweeps])
    assert ratio == pytest.approx(transmissions, rel=0.05)


def test_response_function():
    response = DetectorResponse(notch_low=10, notch_high=13, saturation=20)
    counts = np.arange(25)
    recorded = response(counts)
    assert list(recorded[9:15]) == [9, 13, 13, 13, 13, 14]
    assert list(recorded[18:]) == [18, 19, 21, 21, 21, 21, 21]


def test_sweeps_record_transmission_and_saturation(simulated_transmission_series):
    from dxtbx.model.experiment_list import ExperimentListFactory

    for sweep in simulated_transmission_series["sweeps"]:
        with h5py.File(sweep["master"], "r") as handle:
            recorded = handle["/entry/instrument/attenuator/attenuator_transmission"][
                ()
            ]
        assert recorded == pytest.approx(sweep["transmission"])
        assert f"transmission_{sweep['transmission']:.3f}" in sweep["master"].name
    imported = ExperimentListFactory.from_filenames(
        [str(simulated_transmission_series["sweeps"][0]["master"])]
    )
    # The file declares the saturation; DIALS masks the pile-up above it, and
    # trusts every count below it, whichever trusted-range rule dxtbx has.
    panel = imported[0].detector[0]
    assert panel.get_trusted_range()[1] == 4000
    values = np.array([0, 3998, 3999, 4001])
    np.testing.assert_array_equal(
        within_trusted_range(panel, values), [True, True, True, False]
    )
