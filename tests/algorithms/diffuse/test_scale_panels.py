"""Per-panel detector and absorption terms: d(ix, iy, panel), a(ix, iy, phi, panel).

Synthetic redundant tables on a detector of four 64 x 64 pixel panels whose
gains differ by up to 15 % (a step between panels, which no smooth function
of pixel indices shared by all panels can follow).
"""

import numpy as np
import pandas as pd
import pytest
from libtbx.phil import parse

from dials_diffuse.algorithms.diffuse.scale import (
    AbsorptionSettings,
    DetectorSettings,
    ScalingSettings,
    do_scale,
    phil_scope,
    refine_scale_model,
)
from dials_diffuse.io.scale_model import read_scale_model, write_scale_model
from dials_diffuse.util.errors import DataError

GAINS = np.array([1.0, 1.05, 0.9, 0.97])


def true_d(ix, iy, panel):
    return GAINS[panel] * (1 + 0.1 * (ix / 64 - 0.5) - 0.05 * (iy / 64))


def simulate(d=None, a=None, panels=4, noise=0.02, seed=1):
    """3000 voxels seen 8 times at random panels, (ix, iy) within 0-64, phi 0-30.

    The voxels' intensities are the same for every seed (sweeps of one crystal).
    """
    n_voxels, per_voxel = 3000, 8
    truth = np.random.default_rng(0).gamma(2.0, 50.0, size=n_voxels)
    rng = np.random.default_rng(seed)
    n = n_voxels * per_voxel
    voxel = np.repeat(np.arange(n_voxels), per_voxel)
    panel = rng.integers(0, panels, n)
    ix, iy, phi = rng.uniform(0, 64, n), rng.uniform(0, 64, n), rng.uniform(0, 30, n)
    d_values = d(ix, iy, panel) if d else np.ones(n)
    a_values = a(ix, iy, phi, panel) if a else np.ones(n)
    expected = a_values * d_values * truth[voxel]
    sigma = noise * expected + 0.5
    frame = pd.DataFrame(
        {
            "h": voxel,
            "k": 0,
            "l": 0,
            "phi": phi,
            "ix": ix,
            "iy": iy,
            "panel": panel,
            "s": 0.3,
            "intensity": expected + rng.normal(size=n) * sigma,
            "intensity_error": sigma,
        }
    )
    return frame, truth, d_values, a_values


def relative_spread(recovered, truth):
    ratio = recovered / truth
    return float(np.std(ratio) / np.mean(ratio))


def test_per_panel_detector_gain_recovered():
    frame, _, d_true, _ = simulate(d=true_d)
    (model,), history = refine_scale_model(
        frame, {"detector": DetectorSettings(x_nodes=5, y_nodes=5)}
    )
    term = model.terms["detector"]
    assert term.coordinates == ("ix", "iy", "panel") and term.shape == (5, 5, 4)
    d = model.factors(frame)[3]
    assert relative_spread(d, d_true) < 0.01
    # The panels' gains relative to panel 0, each within 1 %.
    per_panel = [np.mean(d[frame["panel"] == p]) for p in range(4)]
    expected = [np.mean(d_true[frame["panel"] == p]) for p in range(4)]
    np.testing.assert_allclose(
        np.array(per_panel) / per_panel[0],
        np.array(expected) / expected[0],
        rtol=0.01,
    )
    assert history[-1]["chi_square"] < 1.1


def test_one_grid_over_all_panels_cannot_follow_the_steps():
    """Without the panel column, d(ix, iy) misses the gains (the test can fail)."""
    frame, _, d_true, _ = simulate(d=true_d)
    (model,), _ = refine_scale_model(
        frame.drop(columns="panel"),
        {"detector": DetectorSettings(x_nodes=5, y_nodes=5)},
    )
    assert relative_spread(model.factors(frame)[3], d_true) > 0.04


def test_per_panel_absorption_recovered():
    def a(ix, iy, phi, panel):
        return GAINS[panel] * (1 + 0.2 * (iy / 64 - 0.5) * (phi / 30))

    frame, _, _, a_true = simulate(a=a)
    (model,), history = refine_scale_model(
        frame, {"absorption": AbsorptionSettings(x_nodes=5, y_nodes=5, phi_step=10)}
    )
    term = model.terms["absorption"]
    assert term.coordinates == ("ix", "iy", "phi", "panel")
    assert relative_spread(model.factors(frame)[0], a_true) < 0.01
    assert history[-1]["chi_square"] < 1.1


def test_model_file_round_trip_and_panels_outside(tmp_path):
    frame, _, _, _ = simulate(d=true_d)
    (model,), _ = refine_scale_model(
        frame,
        {
            "scaling": ScalingSettings(),
            "detector": DetectorSettings(x_nodes=4, y_nodes=4),
        },
    )
    write_scale_model(tmp_path / "scale.nxs", model)
    back = read_scale_model(tmp_path / "scale.nxs")
    assert back.terms["detector"].coordinates == ("ix", "iy", "panel")
    np.testing.assert_array_equal(
        back.terms["detector"].values, model.terms["detector"].values
    )
    np.testing.assert_allclose(back.factors(frame)[3], model.factors(frame)[3])
    with pytest.raises(DataError, match="panels 0-3, not panel 4"):
        model.factors(frame.assign(panel=4))


def test_a_panel_without_redundant_observations_stays_neutral():
    frame, _, _, _ = simulate(d=true_d)
    # Panel 5 exists (a row seen once) but no voxel seen twice lies on it.
    lonely = frame.iloc[:1].assign(h=10**6, panel=5)
    (model,), _ = refine_scale_model(
        pd.concat([frame, lonely], ignore_index=True),
        {"detector": DetectorSettings(x_nodes=4, y_nodes=4)},
    )
    values = model.terms["detector"].values
    assert values.shape[-1] == 6
    np.testing.assert_array_equal(values[..., 4:], 1.0)


def test_do_scale_takes_multi_panel_tables_of_one_detector():
    frame, _, d_true, _ = simulate(d=true_d)
    params = phil_scope.fetch(
        parse("detector.enable=True\nvalidation.enable=False")
    ).extract()
    table = frame.drop(columns=["s"])
    result = do_scale([table], params, names=["corrected.nxs"])
    d = result.models[0].factors(frame)[3]
    assert relative_spread(d, d_true) < 0.02
    with pytest.raises(DataError, match="no panel column, unlike a.nxs"):
        do_scale([table, table.drop(columns="panel")], params, names=["a.nxs", "b.nxs"])


def test_per_panel_absorption_of_two_sweeps():
    """Each sweep its own a(..., panel) (other panel gains), on one scale, M shared."""
    other = np.array([0.95, 1.0, 1.08, 0.9])

    def first_a(ix, iy, phi, panel):
        return GAINS[panel] * (1 + 0.1 * (phi / 30))

    def second_a(ix, iy, phi, panel):
        return other[panel] * (1 - 0.1 * (phi / 30))

    first, _, _, a_first = simulate(a=first_a, seed=1)
    second, _, _, a_second = simulate(a=second_a, seed=2)
    observations = pd.concat(
        [first.assign(batch=0), second.assign(batch=1)], ignore_index=True
    )
    models, history = refine_scale_model(
        observations,
        {"absorption": AbsorptionSettings(x_nodes=2, y_nodes=2, phi_step=10)},
    )
    recovered = np.concatenate(
        [models[0].factors(first)[0], models[1].factors(second)[0]]
    )
    assert relative_spread(recovered, np.concatenate([a_first, a_second])) < 0.01
    assert history[-1]["chi_square"] < 1.1
