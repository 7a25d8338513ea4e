"""Programs on a multi-module NXmx sweep, against the simulator's truth.

`simulated_modules`: the test rotation sweep written as 4 x 2 NXmx modules
(one DIALS panel each), 20 dead pixels flagged in the pixel mask, and
module 2 recording 10 % less than the others (a per-panel detector response
the chain does not know about).
"""

import json
import os

import h5py
import numpy as np
import pytest

from dials_diffuse.command_line import correct as correct_program
from dials_diffuse.command_line import find_peaks as find_peaks_program
from dials_diffuse.command_line import integrate as integrate_program
from dials_diffuse.command_line import mask_peaks as mask_peaks_program
from dials_diffuse.command_line import scale as scale_program
from dials_diffuse.io.scale_model import read_scale_model
from dials_diffuse.io.tables import load_table
from tests.conftest import MODULE_EFFICIENCY

pytestmark = pytest.mark.slow


def _run(steps, workdir):
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        for program, args in steps:
            assert program.run(args) == 0, (program.__name__, args)
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def scaled(simulated_modules, tmp_path_factory):
    """find_peaks ... correct, then scale with the detector term, in one directory."""
    workdir = tmp_path_factory.mktemp("modules_chain")
    expt = str(simulated_modules["truth_expt"])
    _run(
        [
            (find_peaks_program, [expt, "count_threshold=30"]),
            (mask_peaks_program, [expt, "peaks.nxs", "sigma_cutoff=3"]),
            (integrate_program, [expt, "mask=mask.nxs", "subdivide=2,2,2"]),
            (correct_program, [expt, "integrated.nxs"]),
            # 3 x 3 nodes per panel: what 8 modules of a 15-degree sweep
            # determine; the check of the model is another test's business.
            (
                scale_program,
                [
                    "corrected.nxs",
                    "detector.enable=True",
                    "detector.x_nodes=3",
                    "detector.y_nodes=3",
                    "validation.enable=False",
                ],
            ),
        ],
        workdir,
    )
    return workdir


def test_dead_pixels_are_excluded_from_every_frame_of_the_mask(
    simulated_modules, scaled
):
    with h5py.File(simulated_modules["truth"], "r") as handle:
        tiles = handle["modules/tiles"][()]
        dead = handle["mask/dead"][()]
    with h5py.File(scaled / "mask.nxs", "r") as handle:
        for panel, (row, column, rows, columns) in enumerate(tiles):
            mask = handle[f"entry/mask/panel_{panel:02d}/mask"][()]
            panel_dead = dead[row : row + rows, column : column + columns]
            assert np.all(mask[:, panel_dead] == 1)


def test_per_panel_detector_response_recovered(scaled):
    """d(ix, iy, panel): module 2 at 90 % of the others, within 2 %."""
    model = read_scale_model(scaled / "scale.nxs")
    term = model.terms["detector"]
    assert term.coordinates == ("ix", "iy", "panel") and term.shape[-1] == 8
    table = load_table(scaled / "corrected.nxs").to_frame()
    d = model.factors(table)[3]
    panel = table["panel"].to_numpy()
    means = np.array([np.mean(d[panel == p]) for p in range(8)])
    truth = np.array(MODULE_EFFICIENCY)
    relative = means / np.mean(means[truth == 1])
    np.testing.assert_allclose(relative, truth, atol=0.02)
    assert (scaled / "scale.png").read_bytes().startswith(b"\x89PNG")


def test_validation_keeps_a_true_per_panel_model(scaled):
    """With the check on (the default), the true per-panel model is kept.

    Held-out chi-square falls (1.29 -> 1.17) while CC1/2 moves within its
    standard error; before the check had a tolerance it wrote a neutral model.
    """
    _run(
        [
            (
                scale_program,
                [
                    "corrected.nxs",
                    "detector.enable=True",
                    "detector.x_nodes=3",
                    "detector.y_nodes=3",
                    "output.model=checked.nxs",
                    "output.json=checked.json",
                    "output.plot=None",
                ],
            )
        ],
        scaled,
    )
    results = json.loads((scaled / "checked.json").read_text())["results"]
    (check,) = results["validation"]
    assert results["model_used"] == "as refined" and check["passed"]
    assert check["chi_square_scaled"] < check["chi_square_unscaled"]
    assert read_scale_model(scaled / "checked.nxs").model_used == "as refined"


# --- image programs: per-panel results against the simulated frames ---------------


@pytest.fixture(scope="module")
def frames_and_truth(simulated_modules):
    """The raw frames (h5py, not dxtbx), the module tiles, dead pixels, truth sums."""
    with h5py.File(simulated_modules["truth"], "r") as handle:
        tiles = handle["modules/tiles"][()]
        dead = handle["mask/dead"][()]
        expected_total = handle["frames/expected_total"][()]
        models = dict(handle["models"].attrs)
    frames = np.concatenate(
        [
            h5py.File(path, "r")["entry/data/data"][()].astype(np.int64)
            for path in simulated_modules["data"]
        ]
    )
    return frames, tiles, dead, expected_total, models


def _tile(array, tile):
    row, column, rows, columns = tile
    return array[..., row : row + rows, column : column + columns]


def test_pixel_histogram_per_panel_against_the_frames(
    simulated_modules, frames_and_truth, in_tmp_path
):
    """Per shot and panel: pixels, masked, mean and max equal the frames' tiles."""
    import pandas as pd

    from dials_diffuse.command_line import pixel_histogram

    frames, tiles, dead, expected_total, _ = frames_and_truth
    assert pixel_histogram.run([str(simulated_modules["master"])]) == 0
    shots = pd.read_csv(in_tmp_path / "pixel_histogram_shots.csv")
    assert len(shots) == len(frames) * 8
    totals = np.zeros(len(frames))
    for panel, tile in enumerate(tiles):
        rows = shots[shots["panel"] == panel].sort_values("image")
        values = _tile(frames, tile)[:, ~_tile(dead, tile)]
        np.testing.assert_array_equal(rows["pixels"], values.shape[1])
        np.testing.assert_array_equal(rows["masked"], _tile(dead, tile).sum())
        np.testing.assert_allclose(rows["mean"], values.mean(axis=1), rtol=1e-12)
        np.testing.assert_array_equal(rows["max"], values.max(axis=1))
        totals += rows["mean"].to_numpy() * rows["pixels"].to_numpy()
    # Against the truth: the expected counts of every frame (Poisson, 5 sigma).
    assert np.all(np.abs(totals - expected_total) < 5 * np.sqrt(expected_total))
    histogram = pd.read_csv(in_tmp_path / "pixel_histogram.csv")
    for panel, tile in enumerate(tiles):
        size = _tile(frames, tile)[:, ~_tile(dead, tile)].size
        assert histogram[f"panel_{panel}"].sum() == size
    assert histogram["total"].sum() == len(frames) * (~dead).sum() - len(frames) * (
        frames.shape[2] * 4  # the gap rows lie outside every module
    )


def test_frame_statistics_per_panel_sums(
    simulated_modules, frames_and_truth, in_tmp_path
):
    """Through dxtbx (8 panels) per frame and panel; the master's fast path agrees."""
    import pandas as pd

    from dials_diffuse.command_line import frame_statistics

    frames, tiles, dead, _, _ = frames_and_truth
    expt = str(simulated_modules["truth_expt"])
    assert frame_statistics.run([expt, "output.series=panels_series.csv"]) == 0
    panels = pd.read_csv(in_tmp_path / "frame_statistics_panels.csv")
    for panel, tile in enumerate(tiles):
        rows = panels[panels["panel"] == panel].sort_values("image")
        values = _tile(frames, tile)[:, ~_tile(dead, tile)]
        np.testing.assert_array_equal(rows["sum"], values.sum(axis=1))
        np.testing.assert_array_equal(rows["pixels_used"], values.shape[1])
    series = pd.read_csv(in_tmp_path / "panels_series.csv")
    np.testing.assert_array_equal(
        series["sum"], panels.groupby("image")["sum"].sum().to_numpy()
    )
    # The DECTRIS fast path reads whole frames with the pixel mask: same sums.
    master = str(simulated_modules["master"])
    assert frame_statistics.run([master, "output.series=master_series.csv"]) == 0
    fast = pd.read_csv(in_tmp_path / "master_series.csv")
    np.testing.assert_array_equal(fast["sum"], series["sum"])


def test_polar_transform_nearest_against_the_flat_detector(
    simulated_modules, frames_and_truth, in_tmp_path
):
    """Every polar sample is the frame pixel under it: found on the simulator's
    one flat panel (the modules' pixels lie where they lie on it), masked in
    the gap between modules and on dead pixels."""
    from dials_diffuse.command_line import polar_transform
    from dials_diffuse.simulate.models import make_detector
    from dials_diffuse.simulate.rotation import rotation_setup

    frames, tiles, dead, _, models = frames_and_truth
    expt = str(simulated_modules["truth_expt"])
    args = [expt, "interpolation=nearest", "nq=60", "nphi=360"]
    assert polar_transform.run(args) == 0
    with h5py.File(in_tmp_path / "polar.h5", "r") as handle:
        data = handle["entry/polar/data"][()]
        valid = handle["entry/polar/mask"][()].astype(bool)
        q = handle["entry/polar/q"][()]
        phi = np.radians(handle["entry/polar/phi"][()])
    # (q, phi) -> the scattered beam s1 -> pixel of the flat panel (dxtbx,
    # with the sensor's parallax, as the simulator's forward model).
    wavelength = models["wavelength"]
    flat = make_detector(rotation_setup("test").layout, wavelength)[0]
    two_theta = 2 * np.arcsin(q * wavelength / (4 * np.pi))[:, np.newaxis]
    s1 = (
        np.stack(
            np.broadcast_arrays(
                np.sin(two_theta) * np.cos(phi),
                np.sin(two_theta) * np.sin(phi),
                -np.cos(two_theta),
            ),
            axis=-1,
        ).reshape(-1, 3)
        / wavelength
    )
    fast, slow = np.array(
        [flat.get_ray_intersection_px(tuple(v)) for v in s1]
    ).T.reshape(2, *data.shape[1:])
    ny, nx = frames.shape[1:]
    inside = (fast >= 0) & (fast < nx) & (slow >= 0) & (slow < ny)
    # Away from pixel edges (rounding decides there).
    clear = (np.abs(fast - np.round(fast)) > 1e-3) & (
        np.abs(slow - np.round(slow)) > 1e-3
    )
    column = np.clip(np.floor(fast).astype(int), 0, nx - 1)
    row = np.clip(np.floor(slow).astype(int), 0, ny - 1)
    in_module = np.zeros((ny, nx), dtype=bool)
    for tile in tiles:
        _tile(in_module, tile)[...] = True
    usable = inside & in_module[row, column] & ~dead[row, column]
    assert np.any(clear & inside & dead[row, column])  # a dead pixel is sampled
    for shot in range(0, len(frames), 10):
        expected = frames[shot][row, column]
        check = clear & inside
        np.testing.assert_array_equal(valid[shot][check], usable[check])
        both = check & usable
        assert both.sum() > 10000
        np.testing.assert_array_equal(data[shot][both], expected[both])


def test_multi_panel_stills_per_shot_and_panel(
    simulated_modules, frames_and_truth, in_tmp_path
):
    """The frames imported as 30 stills (30 image sets of 8 panels): per shot
    and panel, pixel_histogram and frame_statistics give the frames' tiles."""
    import subprocess

    import pandas as pd

    from dials_diffuse.command_line import frame_statistics, pixel_histogram

    frames, tiles, dead, _, _ = frames_and_truth
    subprocess.run(
        [
            "dials.import",
            str(simulated_modules["master"]),
            "convert_sequences_to_stills=True",
            "output.experiments=stills.expt",
        ],
        check=True,
        capture_output=True,
    )
    assert pixel_histogram.run(["stills.expt"]) == 0
    assert frame_statistics.run(["stills.expt"]) == 0
    shots = pd.read_csv(in_tmp_path / "pixel_histogram_shots.csv")
    sums = pd.read_csv(in_tmp_path / "frame_statistics_panels.csv")
    assert shots["imageset"].nunique() == len(frames) == sums["imageset"].nunique()
    for panel, tile in enumerate(tiles):
        values = _tile(frames, tile)[:, ~_tile(dead, tile)]
        rows = shots[shots["panel"] == panel].sort_values("imageset")
        np.testing.assert_array_equal(rows["pixels"], values.shape[1])
        np.testing.assert_allclose(rows["mean"], values.mean(axis=1), rtol=1e-12)
        np.testing.assert_array_equal(rows["max"], values.max(axis=1))
        rows = sums[sums["panel"] == panel].sort_values("imageset")
        np.testing.assert_array_equal(rows["sum"], values.sum(axis=1))
