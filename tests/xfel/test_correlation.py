"""Difference angular correlations: the masked FFT against a direct sum, the
known n-fold symmetry, no bias from gaps, outlier pairs rejected."""

import json

import numpy as np
import pytest
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.algorithms.xfel.correlation import (
    consecutive_pairs,
    masked_autocorrelation,
    mean_pair_correlation,
    pairs_from_json,
    robust_z,
)
from dials_diffuse.algorithms.xfel.polar import normalise_rows, q_at_radius, q_polar_map
from dials_diffuse.algorithms.xfel.shots import Shots
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.parallel import ParallelMap

from .conftest import write_sacla_file

NPHI = 180


def test_masked_autocorrelation_matches_direct_sum():
    rng = np.random.default_rng(5)
    values = rng.normal(size=(3, 40))
    valid = rng.random((3, 40)) > 0.3
    values[~valid] = 0
    correlation, overlap = masked_autocorrelation(values, valid, min_overlap=1)
    for row in range(3):
        for lag in range(40):
            shifted = np.roll(np.arange(40), -lag)
            both = valid[row] & valid[row, shifted]
            assert overlap[row, lag] == both.sum()
            if both.any():
                expected = (values[row] * values[row, shifted])[both].mean()
                assert correlation[row, lag] == pytest.approx(expected)
            else:
                assert np.isnan(correlation[row, lag])


def _polar_shots(truth, mask=None):
    """Normalised polar images of every shot of a SACLA file, rows around the ring."""
    experiments = ExperimentListFactory.from_filenames([str(truth.path)])
    shots = Shots(experiments, external_mask=mask)
    q_ring = q_at_radius(shots.detector, shots.beam, truth.ring_radius)
    q_step = q_at_radius(shots.detector, shots.beam, truth.ring_radius + 1) - q_ring
    q = q_ring + q_step * np.arange(-2, 3)
    polar_map = q_polar_map(shots.detector, shots.beam, q, NPHI, "bilinear")
    _, data, valid = next(shots.blocks(range(len(shots)), size=len(shots)))
    polar, polar_valid = polar_map.apply(data, valid)
    normalise_rows(polar, polar_valid)
    dark = shots.dark.copy()
    shots.close()
    return polar.astype(np.float64), polar_valid, dark


def _correlate(polar, valid, dark, **kwargs):
    pairs = consecutive_pairs(len(polar), dark)
    return mean_pair_correlation(lambda i: (polar[i], valid[i]), pairs, **kwargs)


@pytest.fixture(scope="module")
def with_and_without_gap(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gap")
    gapped = write_sacla_file(directory / "gap.h5", gap=True, n_shots=14)
    clean = write_sacla_file(directory / "clean.h5", gap=False, n_shots=14)
    return (
        _correlate(*_polar_shots(gapped, mask=gapped.mask)),
        _correlate(*_polar_shots(clean)),
        gapped,
    )


def test_symmetry_appears_at_the_right_lag(with_and_without_gap):
    _, result, truth = with_and_without_gap
    curve = np.nanmean(result.correlation, axis=0)
    dphi = 360.0 * np.arange(NPHI) / NPHI
    away = (dphi > 20) & (dphi < 340)
    peaks = dphi[away][np.argsort(curve[away])[-1]]
    period = 360.0 / truth.symmetry
    # The strongest peak away from 0 is at a multiple of 360/n.
    assert min(abs(peaks - k * period) for k in range(1, truth.symmetry)) <= 2.0
    # And the n-th harmonic dominates the correlation.
    spectrum = np.abs(np.fft.rfft(curve))
    assert np.argmax(spectrum[1:]) + 1 == truth.symmetry
    assert spectrum[truth.symmetry] > 10 * np.median(spectrum[1:])
    # Minima at half periods: C(period/2) < 0 < C(period).
    assert curve[int(NPHI / truth.symmetry / 2)] < 0 < curve[int(NPHI / truth.symmetry)]


def test_a_masked_gap_does_not_bias_the_correlation(with_and_without_gap):
    gapped, clean, truth = with_and_without_gap
    ring_rows = slice(1, 4)
    a = gapped.correlation[ring_rows]
    b = clean.correlation[ring_rows]
    amplitude = np.nanmax(np.abs(b))
    assert np.nanmax(np.abs(a - b)) < 0.1 * amplitude
    # Without dividing by the mask's correlation, the gap would bias C.
    polar, valid, dark = _polar_shots(truth, mask=truth.mask)
    pairs = consecutive_pairs(len(polar), dark)
    naive = []
    for i, j in pairs:
        difference = np.where(valid[i] & valid[j], polar[i] - polar[j], 0)
        spectrum = np.fft.rfft(difference, axis=-1)
        naive.append(np.fft.irfft(spectrum * spectrum.conj(), n=NPHI) / NPHI)
    naive = np.mean(naive, axis=0)[ring_rows]
    assert np.nanmax(np.abs(naive - b)) > 2 * np.nanmax(np.abs(a - b))


def test_outlier_pairs_are_rejected():
    rng = np.random.default_rng(2)
    nphi, n = 64, 12
    phi = 2 * np.pi * np.arange(nphi) / nphi
    shots = np.array(
        [1 + 0.3 * np.cos(4 * (phi - rng.uniform(0, 2 * np.pi))) for _ in range(n)]
    )[:, None, :] + rng.normal(0, 0.01, (n, 1, nphi))
    shots[7] += 50 * rng.normal(size=(1, nphi))  # a wild shot: pairs 6-7 and 7-8
    valid = np.ones(shots.shape, dtype=bool)
    pairs = consecutive_pairs(n, np.zeros(n, bool))
    result = mean_pair_correlation(lambda i: (shots[i], valid[i]), pairs, z_max=3.5)
    rejected = [tuple(p) for p, ok in zip(result.pairs, result.accepted) if not ok]
    assert rejected == [(6, 7), (7, 8)]
    kept = mean_pair_correlation(
        lambda i: (shots[i], valid[i]),
        [p for p in pairs if 7 not in p],
        z_max=None,
    )
    np.testing.assert_allclose(result.correlation, kept.correlation)
    with ParallelMap(nproc=2) as pmap:
        parallel = mean_pair_correlation(
            lambda i: (shots[i], valid[i]), pairs, z_max=3.5, pmap=pmap
        )
    np.testing.assert_allclose(parallel.correlation, result.correlation)


def test_pairs_consecutive_and_from_json(tmp_path):
    dark = np.array([True, True, False, False, False, False])
    assert consecutive_pairs(6, dark) == [(2, 3), (3, 4), (4, 5)]
    assert consecutive_pairs(6, dark, skip_first=3) == [(3, 4), (4, 5)]
    tags = np.array([10, 12, 14, 16])
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([["tag_10", "tag_12"], [14, 16], ["tag_16", "tag_99"]]))
    assert pairs_from_json(path, tags) == [(0, 1), (2, 3)]
    path.write_text("{not json")
    with pytest.raises(DataError, match="pairs.json"):
        pairs_from_json(path, tags)


def test_robust_z():
    z = robust_z([1.0, 1.1, 0.9, 1.0, 10.0])
    assert abs(z[-1]) > 3.5 and np.all(np.abs(z[:-1]) < 1.5)
    assert np.all(robust_z([2.0, 2.0, 2.0]) == 0)
