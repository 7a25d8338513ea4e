"""The diffuse chain on a multi-panel detector, against the single-panel chain and truth.

The simulated rotation sweep is written twice from the same frames: once as
one flat panel, once cut into 4 x 2 NXmx modules (one DIALS panel each; the
simulator's four gap rows lie between the third and fourth row of modules,
outside every module). The pixels are the same and lie in the same places,
so every voxel's counts and pixel count of the multi-panel chain must equal
the single-panel chain's exactly (the single panel's gap rows are masked),
and the corrected intensities must match the truth as the single panel's do.
"""

import os

import h5py
import numpy as np
import pytest

from dials_diffuse.command_line import correct as correct_program
from dials_diffuse.command_line import find_peaks as find_peaks_program
from dials_diffuse.command_line import integrate as integrate_program
from dials_diffuse.command_line import mask_peaks as mask_peaks_program
from dials_diffuse.io.tables import load_table

pytestmark = pytest.mark.slow

MODULES = (4, 2)


def _chain(expt, workdir):
    steps = [
        (find_peaks_program, [expt, "count_threshold=30"]),
        (mask_peaks_program, [expt, "peaks.nxs", "sigma_cutoff=3"]),
        (integrate_program, [expt, "mask=mask.nxs", "subdivide=2,2,2"]),
        (correct_program, [expt, "integrated.nxs"]),
    ]
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        for program, args in steps:
            assert program.run(args) == 0, (program.__name__, args)
    finally:
        os.chdir(previous)
    return workdir


@pytest.fixture(scope="module")
def chains(simulated_rotation, tmp_path_factory):
    """The multi-panel dataset (same seed and frames) and both chains' outputs."""
    from dials_diffuse.simulate import simulate_rotation

    multi = simulate_rotation(
        tmp_path_factory.mktemp("simulated") / "rotation_modules", modules=MODULES
    )
    single_dir = _chain(
        str(simulated_rotation["truth_expt"]), tmp_path_factory.mktemp("single")
    )
    multi_dir = _chain(str(multi["truth_expt"]), tmp_path_factory.mktemp("multi"))
    return multi, single_dir, multi_dir


def test_modules_are_panels_where_their_pixels_are(chains, simulated_rotation):
    """dials.import's panels: each module's origin on the flat panel (hand-computed)."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    from dials_diffuse.simulate.rotation import rotation_setup

    multi, _, _ = chains
    flat = ExperimentListFactory.from_json_file(
        str(simulated_rotation["truth_expt"]), check_format=False
    )[0].detector[0]
    detector = ExperimentListFactory.from_filenames([str(multi["master"])])[0].detector
    tiles = rotation_setup("test", modules=MODULES).module_tiles
    assert len(detector) == len(tiles) == 8
    fast, slow = np.array(flat.get_fast_axis()), np.array(flat.get_slow_axis())
    for panel, (row, column, rows, columns) in zip(detector, tiles):
        pixel = flat.get_pixel_size()[0]
        expected = np.array(flat.get_origin()) + pixel * (row * slow + column * fast)
        assert np.allclose(panel.get_origin(), expected, atol=1e-9)
        assert panel.get_image_size() == (columns, rows)
    # A gap between the third and fourth row of modules (the simulator's gap rows).
    assert tiles[6][0] - (tiles[4][0] + tiles[4][2]) == 4


def test_mask_has_every_panel(chains):
    _, single_dir, multi_dir = chains
    with h5py.File(multi_dir / "mask.nxs", "r") as handle:
        group = handle["entry/mask"]
        assert group.attrs["panels"] == 8
        assert handle["entry"].attrs["default"] == "mask"
        panels = [group[f"panel_{p:02d}/mask"][()] for p in range(8)]
        hot = [group[f"panel_{p:02d}/hot_pixels"][()] for p in range(8)]
    with h5py.File(single_dir / "mask.nxs", "r") as handle:
        single = handle["entry/mask/mask"][()]
        single_hot = handle["entry/mask/hot_pixels"][()]
    from dials_diffuse.simulate.rotation import rotation_setup

    tiles = rotation_setup("test", modules=MODULES).module_tiles
    for (row, column, rows, columns), mask, panel_hot in zip(tiles, panels, hot):
        window = (slice(row, row + rows), slice(column, column + columns))
        assert np.array_equal(mask, single[(slice(None), *window)])
        assert np.array_equal(panel_hot, single_hot[window])


def test_integrated_counts_equal_single_panel(chains):
    """Every voxel: the same counts and pixels summed over panels as the one panel's."""
    _, single_dir, multi_dir = chains
    single = load_table(single_dir / "integrated.nxs").to_frame()
    multi = load_table(multi_dir / "integrated.nxs").to_frame()
    assert "panel" in multi and "panel" not in single
    assert set(multi["panel"]) == set(range(8))
    # Observations are split by panel; per voxel the sums are the same.
    keys = ["h", "k", "l"]
    a = single.groupby(keys)[["counts", "pixels", "seconds"]].sum()
    b = multi.groupby(keys)[["counts", "pixels", "seconds"]].sum()
    assert a.index.equals(b.index)
    assert np.array_equal(a["counts"], b["counts"])
    assert np.array_equal(a["pixels"], b["pixels"])
    assert np.allclose(a["seconds"], b["seconds"], rtol=1e-12)
    # iy, ix are within the panel.
    from dials_diffuse.simulate.rotation import rotation_setup

    tiles = rotation_setup("test", modules=MODULES).module_tiles
    for panel, rows in multi.groupby("panel"):
        _, _, n_rows, n_columns = tiles[panel]
        assert rows["iy"].min() >= 0 and rows["ix"].min() >= 0
        assert rows["iy"].max() < n_rows and rows["ix"].max() < n_columns


def test_corrected_intensities_match_single_panel_and_truth(chains, simulated_rotation):
    """Per-panel corrections give the single panel's intensities, and the truth."""
    _, single_dir, multi_dir = chains
    single = load_table(single_dir / "corrected.nxs").to_frame()
    multi = load_table(multi_dir / "corrected.nxs").to_frame()
    assert "panel" in multi
    keys = ["h", "k", "l"]

    def merged(table):
        table = table[table["pixels"] >= 10].copy()
        table["weighted"] = table["intensity"] * table["pixels"]
        sums = table.groupby(keys)[["weighted", "pixels"]].sum()
        return sums["weighted"] / sums["pixels"]

    a, b = merged(single), merged(multi)
    common = a.index.intersection(b.index)
    assert len(common) > 0.9 * len(a)
    # Pixel-weighted means over differently split observations: equal within
    # the variation of the corrections across a voxel's pixels (< 1 %).
    ratio = (b[common] / a[common]).to_numpy()
    assert np.median(np.abs(ratio - 1)) < 2e-3
    # Against the truth: the diffuse map times one constant K (see
    # test_diffuse_simulated), the same K as the single panel's.
    hkl = np.array(common.to_list())
    with h5py.File(simulated_rotation["truth"], "r") as truth:
        grid = truth["diffuse/grid"][()]
        axes = [truth[f"diffuse/{a}"][()] for a in "hkl"]
    index = [
        np.rint((hkl[:, i] - axes[i][0]) / (axes[i][1] - axes[i][0])).astype(int)
        for i in range(3)
    ]
    inside = np.all(
        [(index[i] >= 0) & (index[i] < len(axes[i])) for i in range(3)], axis=0
    )
    expected = grid[index[0][inside], index[1][inside], index[2][inside]]
    recovered = b[common].to_numpy()[inside]
    reference = a[common].to_numpy()[inside]
    known = np.isfinite(expected)  # the grid is NaN where nothing was simulated
    assert known.sum() > 2000
    expected, recovered, reference = expected[known], recovered[known], reference[known]
    assert np.corrcoef(recovered, expected)[0, 1] > 0.85
    assert np.corrcoef(recovered, expected)[0, 1] == pytest.approx(
        np.corrcoef(reference, expected)[0, 1], abs=0.01
    )


def test_correction_factors_on_each_panel_equal_the_flat_panels(
    chains, simulated_rotation
):
    """Each factor at a panel's pixel equals the flat panel's at the same pixel."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    from dials_diffuse.algorithms.diffuse.correct import correction_factors
    from dials_diffuse.simulate.rotation import rotation_setup

    multi, _, _ = chains

    def load(path):
        return ExperimentListFactory.from_json_file(str(path), check_format=False)[0]

    flat, modules = load(simulated_rotation["truth_expt"]), load(multi["truth_expt"])
    tiles = np.array(rotation_setup("test", modules=MODULES).module_tiles)
    rng = np.random.default_rng(1)
    panels = rng.integers(0, len(tiles), 500)
    iy = rng.uniform(0, 1, 500) * (tiles[panels, 2] - 1)
    ix = rng.uniform(0, 1, 500) * (tiles[panels, 3] - 1)
    which = ("solid_angle", "attenuation", "efficiency", "polarization", "d3s")
    ours = correction_factors(modules, iy, ix, which, panels=panels)
    reference = correction_factors(
        flat, iy + tiles[panels, 0], ix + tiles[panels, 1], which
    )
    for name in which:
        assert np.allclose(ours[name], reference[name], rtol=1e-9, atol=0), name


def test_background_per_panel_and_its_subtraction(chains, simulated_rotation):
    """bin_image_series bins each panel; correct subtracts each voxel's panel's rate."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    from dials_diffuse.command_line import bin_image_series as bin_program
    from dials_diffuse.io.background_file import read_background
    from dials_diffuse.simulate.rotation import rotation_setup

    multi, single_dir, multi_dir = chains
    expt = str(multi["truth_expt"])
    previous = os.getcwd()
    os.chdir(multi_dir)
    try:
        # One block per panel and 10 frames: the mean unmasked count rate.
        assert bin_program.run([expt, "mask=mask.nxs", "bins=10,1000,1000"]) == 0
        assert (
            correct_program.run(
                [
                    expt,
                    "integrated.nxs",
                    "background=background.nxs",
                    "output.table=corrected_bg.nxs",
                ]
            )
            == 0
        )
    finally:
        os.chdir(previous)
    background = read_background(multi_dir / "background.nxs")
    assert len(background) == 8
    # Independent reference: the single panel's frames (dxtbx) and mask, per tile.
    imageset = ExperimentListFactory.from_json_file(
        str(simulated_rotation["truth_expt"])
    )[0].imageset
    frames = np.stack(
        [imageset.get_raw_data(i)[0].as_numpy_array() for i in range(10)]
    ).astype(np.float64)
    with h5py.File(single_dir / "mask.nxs", "r") as handle:
        keep = handle["entry/mask/mask"][:10] == 0
    exposure = rotation_setup("test").exposure_s
    tiles = rotation_setup("test", modules=MODULES).module_tiles
    for panel, (row, column, rows, columns) in zip(background, tiles):
        window = (slice(None), slice(row, row + rows), slice(column, column + columns))
        expected = frames[window][keep[window]].mean() / exposure
        assert panel.rate[0, 0, 0] == pytest.approx(expected, rel=1e-9)
        assert panel.iy[0] == pytest.approx((rows - 1) / 2)
    plain = load_table(multi_dir / "corrected.nxs")
    subtracted = load_table(multi_dir / "corrected_bg.nxs")
    rate = np.asarray(plain["counts"]) / np.asarray(plain["seconds"])
    with np.errstate(invalid="ignore", divide="ignore"):  # voxels without counts
        scale = rate / np.asarray(plain["intensity"], dtype=np.float64)
    removed = background(plain["phi"], plain["iy"], plain["ix"], plain["panel"])
    ok = np.isfinite(scale)
    assert np.allclose(
        np.asarray(subtracted["intensity"], dtype=np.float64)[ok],
        ((rate - removed) / scale)[ok],
        rtol=1e-4,
        atol=1e-3 * np.median(plain["intensity"]),
    )


def test_data_nxs_holds_every_panel_and_integrates_the_same(chains, simulated_rotation):
    """import_data copies each panel; integrate from data.nxs gives the same table."""
    from dials_diffuse.command_line import import_data as import_program
    from dials_diffuse.simulate.rotation import rotation_setup

    multi, _, multi_dir = chains
    expt = str(multi["truth_expt"])
    previous = os.getcwd()
    os.chdir(multi_dir)
    try:
        assert import_program.run([expt]) == 0
        assert (
            integrate_program.run(
                [
                    expt,
                    "data.nxs",
                    "mask=mask.nxs",
                    "subdivide=2,2,2",
                    "output.table=integrated_from_data.nxs",
                ]
            )
            == 0
        )
    finally:
        os.chdir(previous)
    tiles = rotation_setup("test", modules=MODULES).module_tiles
    with h5py.File(multi_dir / "data.nxs", "r") as handle:
        assert handle["entry/image_series"].attrs["panels"] == 8
        stacks = [handle[f"entry/image_series/panel_{p:02d}/data"] for p in range(8)]
        assert [stack.shape[1:] for stack in stacks] == [t[2:] for t in tiles]
        first = [stack[0] for stack in stacks]
    with h5py.File(simulated_rotation["data"][0], "r") as handle:
        frame = handle["entry/data/data"][0].astype(np.int64)
    for (row, column, rows, columns), stored in zip(tiles, first):
        pixels = frame[row : row + rows, column : column + columns]
        valid = stored >= 0
        assert valid.mean() > 0.99
        assert np.array_equal(stored[valid], pixels[valid])
    direct = load_table(multi_dir / "integrated.nxs")
    from_data = load_table(multi_dir / "integrated_from_data.nxs")
    assert list(direct.columns) == list(from_data.columns)
    for name in direct.columns:
        assert np.array_equal(direct[name], from_data[name]), name


def test_scale_refines_the_detector_term_per_panel(chains):
    """d(ix, iy, panel) on the 8 panels of equal efficiency: every panel's d near 1."""
    from libtbx.phil import parse

    from dials_diffuse.algorithms.diffuse.scale import do_scale, phil_scope

    _, _, multi_dir = chains
    table = load_table(multi_dir / "corrected.nxs").to_frame()
    params = phil_scope.fetch(
        parse("detector.enable=True\nvalidation.enable=False")
    ).extract()
    result = do_scale([table], params, names=["corrected.nxs"])
    model = result.models[0]
    assert model.terms["detector"].coordinates == ("ix", "iy", "panel")
    d = model.factors(table)[3]
    means = [np.mean(d[table["panel"].to_numpy() == p]) for p in range(8)]
    np.testing.assert_allclose(means, 1.0, atol=0.03)
