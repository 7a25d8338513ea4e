"""Programs on a multi-module NXmx sweep, against the simulator's truth.

`simulated_modules`: the test rotation sweep written as 4 x 2 NXmx modules
(one DIALS panel each), 20 dead pixels flagged in the pixel mask, and
module 2 recording 10 % less than the others (a per-panel detector response
the chain does not know about).
"""

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
