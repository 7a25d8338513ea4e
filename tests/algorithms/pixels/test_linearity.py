"""Intensity linearity on synthetic transmission series with known truth."""

import numpy as np
import pandas as pd
import pytest

from dials_diffuse.algorithms.pixels.linearity import (
    experiment_transmissions,
    fit_line,
    intensity_linearity,
    match_to_reference,
    reflection_frame,
    transmission_from_name,
)
from dials_diffuse.util.errors import DataError
from tests.transmission_tables import experiments_with_names, transmission_series

TRANSMISSIONS = [0.064, 0.127, 0.253, 0.503, 1.0]


@pytest.fixture(scope="module")
def series():
    return transmission_series(TRANSMISSIONS, seed=4)


@pytest.fixture(scope="module")
def named_experiments(tmp_path_factory):
    return experiments_with_names(TRANSMISSIONS, tmp_path_factory.mktemp("images"))


def test_ratios_equal_transmissions_from_file_names(series, named_experiments):
    table, _ = series
    result = intensity_linearity(table, named_experiments)
    assert result.transmission_source == "file names"
    assert result.reference == 4  # the highest transmission
    frame = result.experiments
    np.testing.assert_allclose(frame["transmission"], TRANSMISSIONS)
    # 0.2% noise per intensity: the means are good to well under 0.1%.
    np.testing.assert_allclose(frame["mean_ratio"], TRANSMISSIONS, rtol=1e-3)
    np.testing.assert_allclose(frame["median_ratio"], TRANSMISSIONS, rtol=1e-3)
    assert np.all(np.abs(frame["deviation"]) < 1e-3)
    assert result.fit["slope"] == pytest.approx(1.0, abs=1e-3)
    assert result.fit["intercept"] == pytest.approx(0.0, abs=1e-3)
    assert result.fit["r_squared"] > 0.99999


def test_pairs_match_on_miller_index_and_entering(series, named_experiments):
    table, _ = series
    result = intensity_linearity(table, named_experiments)
    frame = reflection_frame(table)
    keys = {
        e: set(map(tuple, frame[frame["id"] == e][["h", "k", "l", "entering"]].values))
        for e in range(5)
    }
    for number, pairs in result.pairs.items():
        assert len(pairs) == len(keys[4] & keys[number])
        # Decoys share Miller indices with other reflections: a pair across
        # `entering` would be far off the transmission ratio.
        np.testing.assert_allclose(pairs["ratio"], TRANSMISSIONS[number], rtol=0.02)
    assert result.experiments["matched"].tolist() == [
        len(result.pairs[e]) for e in range(5)
    ]


def test_transmissions_from_the_beam_and_from_parameters(series, tmp_path):
    table, _ = series
    experiments = experiments_with_names(
        TRANSMISSIONS, tmp_path, beam_transmission=True
    )
    values, source = experiment_transmissions(experiments)
    assert source == "beam"
    np.testing.assert_allclose(values, TRANSMISSIONS)
    given = [6.4, 12.7, 25.3, 50.3, 100.0]  # percentages: only ratios matter
    result = intensity_linearity(table, experiments, transmissions=given, reference=2)
    assert result.transmission_source == "parameter"
    expected = np.array(TRANSMISSIONS) / TRANSMISSIONS[2]
    np.testing.assert_allclose(result.experiments["relative_transmission"], expected)
    np.testing.assert_allclose(result.experiments["mean_ratio"], expected, rtol=1e-3)
    with pytest.raises(DataError, match="3 values for 5 experiments"):
        experiment_transmissions(experiments, [1, 2, 3])


def test_transmission_from_file_names():
    assert transmission_from_name(
        "/dls/i24/data/2024/cm37275-4/jungfrau_commissioning/"
        "00661_insulin_scan_360deg_0.064transmission/"
        "insulin_scan_360deg_0.064transmission_corrected.nxs"
    ) == pytest.approx(0.064)
    assert transmission_from_name("/data/run_transmission_12.5/x_0001.cbf") == 12.5
    assert transmission_from_name("/data/run/x_0001.cbf") is None
    assert transmission_from_name("/d/att_0.5/x.cbf", r"att_([0-9.]+)/") == 0.5
    with pytest.raises(DataError, match="needs a group"):
        transmission_from_name("/d/att_0.5/x.cbf", r"att_[0-9.]+")
    with pytest.raises(DataError, match="filename_pattern"):
        transmission_from_name("/d/x.cbf", r"(unclosed")


def test_saturating_detector_deviates_by_intensity_bin():
    saturation = 1e5
    table, _ = transmission_series(TRANSMISSIONS, saturation=saturation, seed=9)
    result = intensity_linearity(table, transmissions=TRANSMISSIONS, n_bins=6)
    assert result.reference == 4
    for number in range(4):
        pairs = result.pairs[number]
        measured = pairs["reference_intensity"].to_numpy()
        true = measured / (1.0 - measured / saturation)  # invert the response
        t = TRANSMISSIONS[number]
        analytic = (1.0 + true / saturation) / (1.0 + t * true / saturation) - 1.0
        bins = result.bins[result.bins["experiment"] == number]
        assert bins["pairs"].sum() == len(pairs)
        edges = np.append(bins["bin_low"].to_numpy(), bins["bin_high"].iloc[-1])
        index = np.digitize(measured, edges[1:-1])
        for b, row in enumerate(bins.itertuples()):
            if row.pairs:
                assert row.deviation == pytest.approx(
                    np.median(analytic[index == b]), abs=0.01
                )
        deviations = bins["deviation"].dropna().to_numpy()
        assert np.all(np.diff(deviations) > 0)  # brighter: more non-linear
        assert deviations[-1] > 0.1
    assert result.fit["slope"] > 1.02  # the weak experiments look too bright


def test_match_by_position_resolves_repeats_and_max_separation():
    reference = pd.DataFrame(
        {
            "h": [1, 1, 2],
            "k": [0, 0, 0],
            "l": [0, 0, 0],
            "entering": [True, True, False],
            "x": [10.0, 500.0, 50.0],
            "y": [10.0, 500.0, 50.0],
            "z": [1.0, 300.0, 5.0],
            "intensity": [100.0, 200.0, 400.0],
            "sigma": [1.0, 1.0, 1.0],
            "index": [0, 1, 2],
        }
    )
    other = reference.copy()
    other["x"] += [1.0, -1.0, 8.0]  # the repeat of (1,0,0) is listed in the other order
    other = other.iloc[[1, 0, 2]].reset_index(drop=True)
    other["index"] = [10, 11, 12]
    other["intensity"] = [20.0, 10.0, 40.0]
    pairs = match_to_reference(reference, other)
    assert pairs["reference_intensity"].tolist() == [100.0, 200.0, 400.0]
    assert pairs["intensity"].tolist() == [10.0, 20.0, 40.0]
    np.testing.assert_allclose(pairs["ratio"], 0.1)
    close = match_to_reference(reference, other, max_separation=2.0)
    assert close["reference_intensity"].tolist() == [100.0, 200.0]


def test_fit_line_is_exact_on_a_line():
    assert fit_line([0.1, 0.5, 1.0], [0.3, 1.1, 2.1]) == pytest.approx((2.0, 0.1, 1.0))


def test_bad_input(series, named_experiments, dials_centroid):
    from dials.array_family import flex

    table, _ = series
    with pytest.raises(DataError, match="reference=7"):
        intensity_linearity(table, named_experiments, reference=7)
    with pytest.raises(DataError, match="intensity.prf.value"):
        indexed = flex.reflection_table.from_file(str(dials_centroid / "indexed.refl"))
        intensity_linearity(indexed)
    with pytest.raises(DataError, match="I/sigma >= 1e"):
        intensity_linearity(table, named_experiments, min_i_over_sigma=1e9)
