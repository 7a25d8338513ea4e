"""What the scaling model may refine, and whether it helps: node choice, validation."""

import numpy as np
import pandas as pd
import pytest

from dials_diffuse.algorithms.diffuse.merge import do_merge
from dials_diffuse.algorithms.diffuse.merge import phil_scope as merge_phil
from dials_diffuse.algorithms.diffuse.scale import (
    GridTerm,
    ScaleModel,
    b_against_frame_totals,
    check_model,
    choose_nodes,
    compare_merges,
    do_scale,
    frame_total_spread,
    phil_scope,
    settings_copy,
)
from dials_diffuse.io.scale_model import read_scale_model, write_scale_model
from dials_diffuse.io.tables import Table
from tests.algorithms.diffuse.test_scale_model import simulate, true_b


def params(**changes):
    """The scale step's PHIL extract with `changes` ("scaling.phi_step": 2, ...)."""
    extract = phil_scope.extract()
    for key, value in changes.items():
        scope = extract
        *path, name = key.split(".")
        for part in path:
            scope = getattr(scope, part)
        setattr(scope, name, value)
    return extract


def test_nodes_thinned_to_what_the_observations_afford():
    frame, _, _ = simulate()  # 32000 observations of 4000 voxels, 8 each
    defaults = params(**{"detector.enable": True})
    settings = {"scaling": defaults.scaling, "detector": defaults.detector}
    chosen, notes = choose_nodes(frame, settings, min_observations=20)
    # mdx2's 200 x 200 detector nodes: 40000 nodes for 32000 observations.
    assert chosen["detector"].x_nodes * chosen["detector"].y_nodes <= 32000 / 20
    assert chosen["detector"].x_nodes >= 20  # thinned, not switched off
    assert any(n.startswith("detector:") and "32000 redundant" in n for n in notes)
    # b(phi): 31 nodes over 30 degrees, 1000 observations each: untouched.
    assert chosen["scaling"].phi_step == 1.0
    assert not any(n.startswith("scaling") for n in notes)


def test_b_of_a_narrow_sweep_is_not_refined_but_one_per_sweep_is():
    frame, _, _ = simulate()
    narrow = frame.assign(phi=frame["phi"] / 60)  # 0.5 degrees
    settings = {"scaling": params().scaling}
    chosen, notes = choose_nodes(narrow, settings, min_observations=20)
    assert chosen == {}
    assert "span 0.50 degrees, less than phi_step = 1" in notes[0]
    assert "not refined" in notes[1]
    # Two sweeps: one b each (their relative scale), no variation within.
    two = narrow.assign(batch=(np.arange(len(narrow)) % 2))
    chosen, notes = choose_nodes(two, settings, min_observations=20)
    assert chosen["scaling"].phi_step == np.inf
    assert len(notes) == 1


def test_merges_compared_with_a_true_model_and_a_wrong_one():
    frame, _, _ = simulate(b=true_b, noise=0.05)
    frame["pixels"] = 100
    phi_axis = np.linspace(0, 30, 31)
    true_model = ScaleModel(
        {"scaling": GridTerm("scaling", {"phi": phi_axis}, true_b(phi_axis))}
    )
    check = compare_merges(frame, [true_model])
    assert not check["reasons"]
    assert check["cc_half_scaled"] > check["cc_half_unscaled"]
    assert check["chi_square_scaled"] < check["chi_square_unscaled"]
    # The frame totals follow b (+-30%), so b is within what they allow.
    totals = b_against_frame_totals(frame, [true_model])
    assert totals["frame_total_spread"][0] == pytest.approx(0.3, abs=0.03)
    assert totals["b_spread"][0] == pytest.approx(0.3, abs=0.01)
    assert not totals["reasons"]
    # A b(phi) that runs 0.4 -> 1.9 on undistorted data.
    plain, _, _ = simulate(noise=0.05)
    plain["pixels"] = 100
    wrong = ScaleModel(
        {"scaling": GridTerm("scaling", {"phi": phi_axis}, np.linspace(0.4, 1.9, 31))}
    )
    check = compare_merges(plain, [wrong])
    assert check["cc_half_scaled"] < check["cc_half_unscaled"]
    assert any("CC1/2" in r for r in check["reasons"])
    totals = b_against_frame_totals(plain, [wrong])
    assert totals["frame_total_spread"][0] < 0.05
    assert "varies by +-65.2%" in totals["reasons"][0]
    # check_model: refined on half the voxels, judged on the others.
    defaults = params()
    result = check_model(frame, {"scaling": defaults.scaling}, [true_model])
    assert result["passed"], result["reasons"]


def test_frame_total_spread_of_a_known_trend():
    phi = np.linspace(0, 10, 4001)  # 10 bins of 1 degree, 400 observations each
    frame = pd.DataFrame(
        {"phi": phi, "pixels": 50.0, "intensity": 100 * (1 + 0.1 * (phi / 5 - 1))}
    )
    assert frame_total_spread(frame, 1.0) == pytest.approx(0.09, abs=0.005)
    # A node spacing wider than the sweep: the two halves (a linear b).
    assert frame_total_spread(frame, 20.0) == pytest.approx(0.05, abs=0.001)
    assert frame_total_spread(frame[:399], 1.0) is None  # too few to tell
    assert frame_total_spread(frame.drop(columns="pixels"), 1.0) is None


def overfit_table(seed=7):
    """Two noisy observations per voxel, no distortion: anything b fits is noise."""
    rng = np.random.default_rng(seed)
    n_voxels = 3000
    truth = rng.gamma(2.0, 50.0, n_voxels)
    voxel = np.repeat(np.arange(n_voxels), 2)
    sigma = 0.3 * truth[voxel] + 1
    return pd.DataFrame(
        {
            "h": voxel,
            "k": 0,
            "l": 0,
            "phi": rng.uniform(0, 30, len(voxel)),
            "pixels": 100,
            "intensity": truth[voxel] + rng.normal(size=len(voxel)) * sigma,
            "intensity_error": sigma,
        }
    )


def test_a_model_that_fits_noise_falls_back_to_unscaled(tmp_path, caplog):
    table = overfit_table()
    free = {
        "scaling.phi_step": 0.25,
        "scaling.smoothness": 0.0,
        "auto_nodes": False,
    }
    result = do_scale([table], params(**free))
    tried = [check["model"] for check in result.validation]
    assert tried[0] == "as refined" and not result.validation[0]["passed"]
    # Worse by more than the statistics' standard errors.
    assert "standard errors" in " ".join(result.validation[0]["reasons"])
    assert result.model_used in ("b(phi) linear over each sweep", "none (unscaled)")
    final = result.validation[-1]
    if result.model_used == "none (unscaled)":
        assert np.all(result.models[0].terms["scaling"].values == 1.0)
    else:
        assert final["passed"]
    summary = result.summary()
    assert summary["model_used"] == result.model_used
    assert summary["validation"][0]["reasons"]
    # The models say which they are; scale.nxs records it and merge says so.
    assert {model.model_used for model in result.models} == {result.model_used}
    write_scale_model(tmp_path / "scale.nxs", result.models[0])
    model = read_scale_model(tmp_path / "scale.nxs")
    assert model.model_used == result.model_used
    with caplog.at_level("WARNING"):
        do_merge(
            [Table.from_frame("hkl_table", table)],
            merge_phil.extract(),
            [model],
            model_names=["scale.nxs"],
        )
    assert f"scale.nxs: scale wrote the model '{result.model_used}'" in caplog.text
    # validation.action=warn keeps the model, still recorded.
    kept = do_scale([table], params(**free, **{"validation.action": "warn"}))
    assert kept.model_used == "as refined" and not kept.validation[0]["passed"]
    assert kept.models[0].terms["scaling"].values.std() > 0


def test_a_true_distortion_is_kept():
    frame, _, _ = simulate(b=true_b, noise=0.03)
    frame["pixels"] = 100
    result = do_scale([frame], params())
    assert result.model_used == "as refined"
    assert result.validation[0]["passed"]
    b = result.models[0].terms["scaling"]
    phi = np.linspace(1, 29, 50)
    ratio = b(phi) / true_b(phi)
    assert np.std(ratio) / np.mean(ratio) < 0.01


def test_a_model_that_changes_nothing_is_accepted_without_warning(caplog):
    """As on the demo: no distortion, b(phi) fits the noise by +-1.4 % and the
    held-out CC1/2 is lower with it by far less than its standard error."""
    frame, _, _ = simulate(noise=0.2, seed=1)
    frame["pixels"] = 100
    with caplog.at_level("INFO"):
        result = do_scale([frame], params())
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert result.model_used == "as refined"
    check = result.validation[0]
    assert check["passed"] and check["b_spread"][0] < 0.02
    # Lower, so a strict comparison (tolerance 0) would have refused it ...
    assert check["cc_half_scaled"] < check["cc_half_unscaled"]
    drop = check["cc_half_unscaled"] - check["cc_half_scaled"]
    assert drop < 0.1 * check["cc_half_sigma"]
    assert check["voxels"] > 1900 and check["degrees_of_freedom"] > 13000
    line = next(r.getMessage() for r in caplog.records if "not refined on" in r.message)
    # ... as it does.
    strict = do_scale([frame], params(**{"validation.tolerance": 0.0}))
    assert not strict.validation[0]["passed"]
    assert strict.model_used == "none (unscaled)"
    # The figures are in the log line and the report's text.
    assert f"{check['voxels']} voxels" in line
    assert "passed (no change beyond 1 standard error)" in result.check_text()


def test_cc_half_standard_error_from_fisher_z():
    """sigma(CC1/2) = (1 - CC^2) / sqrt(n - 3): against the spread of CC1/2
    over many independent draws of the same size."""
    rng = np.random.default_rng(5)
    n, rho = 400, 0.8
    values = []
    for _ in range(400):
        truth = rng.normal(size=n)
        noise = np.sqrt(1 / rho - 1)
        values.append(
            np.corrcoef(
                truth + noise * rng.normal(size=n), truth + noise * rng.normal(size=n)
            )[0, 1]
        )
    from dials_diffuse.algorithms.diffuse.scale import _judge

    judged = _judge(
        {
            "cc_half_unscaled": rho,
            "cc_half_scaled": rho,
            "voxels": n,
            "chi_square_unscaled": 1.0,
            "chi_square_scaled": 1.0,
            "degrees_of_freedom": 800,
        },
        tolerance=1.0,
    )
    assert judged["cc_half_sigma"] == pytest.approx(np.std(values), rel=0.15)
    assert judged["chi_square_sigma"] == pytest.approx(0.05)
    assert not judged["reasons"]


def test_settings_copy_of_phil_and_dataclass():
    extract = params(**{"scaling.phi_step": 3.0})
    copied = settings_copy("scaling", extract.scaling, smoothness=5.0)
    assert (copied.phi_step, copied.smoothness) == (3.0, 5.0)
    assert settings_copy("scaling", copied).phi_step == 3.0
