"""Several simulated sweeps of one crystal with known scales: scale and merge vs truth.

Sweep A (start 0 degrees, scale 1.0) and sweep B (the crystal remounted,
start 45 degrees, its signal scaled by 1.35) each run through find_peaks,
mask_peaks, integrate (subdivide 2) and correct, then are scaled together
(each its own b(phi)). The truth of the merged map is the same chain on
noise-free twins of the sweeps (the expected counts of 20x longer
exposures, rounded: the same count rates without Poisson noise), with the
same masks, so that every observation has its exact noise-free value; the
twins' intensities divided by the sweeps' true scales and merged with the
data's weights are the map the data should give, up to one constant.
A short sweep C (two frames, 1 degree, scale 0.8) cannot determine b(phi).
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dials_diffuse.algorithms.diffuse.scale import ScaleModel
from dials_diffuse.command_line import correct as correct_program
from dials_diffuse.command_line import find_peaks as find_peaks_program
from dials_diffuse.command_line import integrate as integrate_program
from dials_diffuse.command_line import mask_peaks as mask_peaks_program
from dials_diffuse.command_line import merge as merge_program
from dials_diffuse.command_line import scale as scale_program
from dials_diffuse.io.tables import load_table

pytestmark = pytest.mark.slow

SWEEPS = {
    "a": {"start_deg": 0.0, "scale": 1.0},
    "b": {"start_deg": 45.0, "orientation_seed": 11, "scale": 1.35},
    "c": {"start_deg": 20.0, "frames": 2, "scale": 0.8},
}
TWIN_EXPOSURE = 20  # the twins' exposure, in units of the sweeps'


def _run(program, args):
    assert program.run([*args, "output.plot=None"]) == 0, (program.__name__, args)


@pytest.fixture(scope="session")
def sweeps(tmp_path_factory):
    """{name: directory with corrected.nxs and twin_corrected.nxs}."""
    from dials_diffuse.simulate import simulate_rotation

    root = tmp_path_factory.mktemp("scale_truth")
    previous = Path.cwd()
    directories = {}
    try:
        for number, (name, setup) in enumerate(SWEEPS.items()):
            common = {"size": "test", "seed": 5, "sweep": number, **setup}
            data = simulate_rotation(root / f"{name}_images", **common)
            work = root / name
            work.mkdir()
            os.chdir(work)
            expt = str(data["truth_expt"])
            _run(find_peaks_program, [expt, "count_threshold=30"])
            _run(mask_peaks_program, [expt, "peaks.nxs"])
            _run(integrate_program, [expt, "mask=mask.nxs", "subdivide=2,2,2"])
            _run(correct_program, [expt, "integrated.nxs"])
            if name != "c":
                twin = simulate_rotation(
                    root / f"{name}_twin",
                    exposure_s=0.2 * TWIN_EXPOSURE,
                    poisson_noise=False,
                    **common,
                )
                twin_expt = str(twin["truth_expt"])
                args = ["mask=mask.nxs", "subdivide=2,2,2"]
                _run(
                    integrate_program,
                    [twin_expt, *args, "output.table=twin_integrated.nxs"],
                )
                _run(
                    correct_program,
                    [twin_expt, "twin_integrated.nxs", "output.table=twin.nxs"],
                )
            directories[name] = work
    finally:
        os.chdir(previous)
    return directories


def _b_mean(model_path, table_path):
    """Mean b(phi) of a scale.nxs over its table's observations."""
    table = load_table(table_path).to_frame()
    return float(ScaleModel.from_file(model_path).terms["scaling"].at(table).mean())


def _merged_against_truth(sweeps, models):
    """(residual/sigma of each voxel seen twice or more, the merged rows).

    The data merged with `models` (None: unscaled) against the twins'
    noise-free intensities over the true scales, merged with the same
    weights, up to one least-squares constant.
    """
    rows = []
    for number, name in enumerate(("a", "b")):
        data = load_table(sweeps[name] / "corrected.nxs").to_frame()
        twin = load_table(sweeps[name] / "twin.nxs").to_frame()
        # The same observations (the same pixels of the same voxels), in order.
        keys = ["h", "k", "l", "n", "pixels"]
        np.testing.assert_array_equal(data[keys].to_numpy(), twin[keys].to_numpy())
        if models is None:
            intensity = data["intensity"].to_numpy(float)
            sigma = data["intensity_error"].to_numpy(float)
        else:
            intensity, sigma = ScaleModel.from_file(models[number]).apply(data)
        rows.append(
            pd.DataFrame(
                {
                    "h": data["h"],
                    "k": data["k"],
                    "l": data["l"],
                    "weight": 1 / sigma**2,
                    "weighted": intensity / sigma**2,
                    "truth": twin["intensity"].to_numpy(float)
                    / SWEEPS[name]["scale"]
                    / sigma**2,
                    "count": 1,
                }
            )
        )
    sums = pd.concat(rows).groupby(["h", "k", "l"]).sum()
    sums = sums[sums["count"] >= 2]
    merged = sums["weighted"] / sums["weight"]
    truth = sums["truth"] / sums["weight"]
    sigma = 1 / np.sqrt(sums["weight"])
    constant = np.sum(merged * truth / sigma**2) / np.sum(truth**2 / sigma**2)
    return ((merged - constant * truth) / sigma).to_numpy(), merged


def test_two_sweeps_scaled_together_recover_their_scales_and_the_map(
    sweeps, in_tmp_path
):
    tables = [str(sweeps[name] / "corrected.nxs") for name in ("a", "b")]
    assert scale_program.run([*tables, "output.json=scale.json"]) == 0
    results = json.loads(open("scale.json").read())["results"]
    assert results["model_used"] == "as refined", results["check"]
    # The relative scale of the sweeps: 1.35 within 2 % (found: 0.2 %).
    ratio = _b_mean("scale_2.nxs", tables[1]) / _b_mean("scale_1.nxs", tables[0])
    assert ratio == pytest.approx(1.35, rel=0.02)
    # The merged map at the counting-noise limit (found: rms 1.015), and the
    # same program merge writes.
    residual, merged = _merged_against_truth(sweeps, ["scale_1.nxs", "scale_2.nxs"])
    assert len(residual) > 5000
    assert np.sqrt(np.mean(residual**2)) <= 1.1
    assert abs(np.mean(residual)) < 0.1
    assert merge_program.run([*tables, "scale_1.nxs", "scale_2.nxs"]) == 0
    written = load_table("merged.nxs").to_frame().set_index(["h", "k", "l"])
    both = written["intensity"].reindex(merged.index)
    np.testing.assert_allclose(both.to_numpy(), merged.to_numpy(), rtol=1e-5)
    # Unscaled, the two sweeps disagree by 35 %: far from the noise limit.
    unscaled, _ = _merged_against_truth(sweeps, None)
    assert np.sqrt(np.mean(unscaled**2)) > 2


def test_a_short_sweep_is_not_scaled_alone_but_joins_with_one_scale(
    sweeps, in_tmp_path
):
    short = str(sweeps["c"] / "corrected.nxs")
    assert scale_program.run([short, "output.json=alone.json"]) == 0
    results = json.loads(open("alone.json").read())["results"]
    # 1 degree: b(phi) refused, with the reason; the model written is neutral.
    assert any("less than phi_step" in note for note in results["notes"])
    assert any("not refined" in note for note in results["notes"])
    assert results["model_used"] == "none (unscaled)"
    assert np.all(load_table("scale.nxs", "scaling_model")["scale"] == 1.0)
    # With sweep A: one b for it (restrained to its overall scale), right to 2 %.
    long = str(sweeps["a"] / "corrected.nxs")
    assert scale_program.run([long, short, "output.json=joint.json"]) == 0
    results = json.loads(open("joint.json").read())["results"]
    assert any("sweep 2 spans" in note for note in results["notes"])
    assert load_table("scale_2.nxs", "scaling_model").attrs["shape"][0] == 1
    ratio = _b_mean("scale_2.nxs", short) / _b_mean("scale_1.nxs", long)
    assert ratio == pytest.approx(0.8, rel=0.02)
