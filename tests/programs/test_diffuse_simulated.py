"""The diffuse chain on the simulated rotation sweep, against its ground truth.

The simulator (dials_diffuse.simulate, 256 x 256 px Eiger, 30 frames of
0.5 degrees, P212121) writes pixel counts = rate x corrections x exposure,
its corrections relative ones (solid angle relative to a normal pixel at the
panel distance, efficiency relative to normal incidence, air relative to the
panel centre). Our corrected intensities are rates divided by the absolute
corrections, so they equal the true rate times one constant K = (relative /
absolute corrections), computed here from the truth file (constant over the
panel to 1e-4).
"""

import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest

from dials_diffuse.command_line import correct as correct_program
from dials_diffuse.command_line import find_peaks as find_peaks_program
from dials_diffuse.command_line import integrate as integrate_program
from dials_diffuse.command_line import mask_peaks as mask_peaks_program
from dials_diffuse.command_line import merge as merge_program
from dials_diffuse.io.tables import load_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def truth_chain(simulated_rotation, tmp_path_factory):
    """Run the chain once on truth.expt (exact models), diffuse and Bragg masks."""
    workdir = tmp_path_factory.mktemp("diffuse_truth")
    expt = str(simulated_rotation["truth_expt"])
    steps = [
        (find_peaks_program, [expt, "count_threshold=30"]),
        (mask_peaks_program, [expt, "peaks.nxs", "sigma_cutoff=3"]),
        (integrate_program, [expt, "mask=mask.nxs", "subdivide=4,4,4"]),
        (correct_program, [expt, "integrated.nxs"]),
        (merge_program, ["corrected.nxs", "output.json=merge.json"]),
        (
            mask_peaks_program,
            [expt, "peaks.nxs", "bragg=True", "output.mask=bragg.nxs"],
        ),
        (
            integrate_program,
            [expt, "mask=bragg.nxs", "output.table=bragg_integrated.nxs"],
        ),
        (
            correct_program,
            [expt, "bragg_integrated.nxs", "output.table=bragg_corrected.nxs"],
        ),
    ]
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        for program, args in steps:
            assert program.run(args) == 0, (program.__name__, args)
    finally:
        os.chdir(previous)
    return workdir


@pytest.fixture(scope="session")
def scale_constant(simulated_rotation):
    """K = simulator's relative corrections / our absolute corrections (per pixel)."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    from dials_diffuse import geometry

    experiment = ExperimentListFactory.from_json_file(
        str(simulated_rotation["truth_expt"]), check_format=False
    )[0]
    panel, beam = experiment.detector[0], experiment.beam
    ours = (
        geometry.solid_angle(panel, beam)
        * geometry.air_attenuation(panel, beam)
        * geometry.detector_efficiency(panel, beam)
        * geometry.polarization_factor(geometry.pixel_s1(panel, beam), beam)
    )
    with h5py.File(simulated_rotation["truth"], "r") as truth:
        ratio = truth["corrections/total"][()] / ours
    assert ratio.std() / ratio.mean() < 1e-3
    return float(ratio.mean())


def test_hot_pixels_and_gap_are_masked(truth_chain, simulated_rotation):
    with h5py.File(simulated_rotation["truth"], "r") as truth:
        hot = truth["hot_pixels/position"][()]
        gap = truth["mask/gap"][()]
    with h5py.File(truth_chain / "mask.nxs", "r") as handle:
        mask = handle["entry/mask/mask"][()].astype(bool)
        found_hot = handle["entry/mask/hot_pixels"][()].astype(bool)
    assert np.all(found_hot[hot[:, 0], hot[:, 1]])
    # No more hot pixels found than planted.
    assert found_hot.sum() == len(hot)
    assert np.all(mask[:, hot[:, 0], hot[:, 1]])
    assert np.all(mask[:, gap])
    # Gap, hot pixels and Bragg ellipsoids: a few percent of the pixels.
    assert gap.mean() < mask.mean() < gap.mean() + 0.10


def test_recovered_diffuse_matches_truth(
    truth_chain, simulated_rotation, scale_constant
):
    table = load_table(truth_chain / "corrected.nxs").to_frame()
    table = table[table["pixels"] >= 20]
    table["weighted"] = table["intensity"] * table["pixels"]
    merged = table.groupby(["h", "k", "l"])[["weighted", "pixels"]].sum()
    intensity = (merged["weighted"] / merged["pixels"]).to_numpy()
    hkl = np.array(merged.index.to_list())
    with h5py.File(simulated_rotation["truth"], "r") as truth:
        grid = truth["diffuse/grid"][()]
        axes = [truth[f"diffuse/{a}"][()] for a in "hkl"]
        background = float(__import__("json").loads(truth.attrs["setup"])["background"])
    index = [
        np.rint((hkl[:, i] - axes[i][0]) / (axes[i][1] - axes[i][0])).astype(int)
        for i in range(3)
    ]
    inside = np.all(
        [(index[i] >= 0) & (index[i] < len(axes[i])) for i in range(3)], axis=0
    )
    assert inside.mean() > 0.99
    expected = grid[index[0][inside], index[1][inside], index[2][inside]] + background
    recovered = intensity[inside] / scale_constant
    assert len(recovered) > 5000
    # Correlation limited by Poisson noise (a few counts per pixel).
    assert np.corrcoef(recovered, expected)[0, 1] > 0.9
    ratio = recovered / expected
    # Scale: the median within 2% of the truth; no Bragg leakage in the tail.
    assert np.median(ratio) == pytest.approx(1.0, abs=0.02)
    assert np.percentile(ratio, 99.5) < 1.6


def test_merged_map_matches_truth(truth_chain, simulated_rotation, scale_constant):
    import json

    merged = load_table(truth_chain / "merged.nxs").to_frame()
    merged = merged[merged["count"] >= 2]
    hkl = merged[["h", "k", "l"]].to_numpy()
    with h5py.File(simulated_rotation["truth"], "r") as truth:
        grid = truth["diffuse/grid"][()]
        axes = [truth[f"diffuse/{a}"][()] for a in "hkl"]
        background = json.loads(truth.attrs["setup"])["background"]
    index = tuple(
        np.clip(
            np.rint((hkl[:, i] - axes[i][0]) / (axes[i][1] - axes[i][0])).astype(int),
            0,
            len(axes[i]) - 1,
        )
        for i in range(3)
    )
    expected = grid[index] + background
    recovered = merged["intensity"].to_numpy() / scale_constant
    assert np.corrcoef(recovered, expected)[0, 1] > 0.9
    assert np.median(recovered / expected) == pytest.approx(1.0, abs=0.03)
    summary = json.loads((truth_chain / "merge.json").read_text())
    assert summary["results"]["cc_half"] > 0.5
    halves = load_table(truth_chain / "merged.nxs", "cc_half").to_frame()
    assert halves["voxels"].sum() > 1000


def test_bragg_mask_keeps_hot_pixels_and_gap_masked(truth_chain, simulated_rotation):
    """bragg=True inverts the ellipsoids only: a hot pixel inside a peak stays out."""
    with h5py.File(simulated_rotation["truth"], "r") as truth:
        hot = truth["hot_pixels/position"][()]
        gap = truth["mask/gap"][()]
    with h5py.File(truth_chain / "bragg.nxs", "r") as handle:
        mask = handle["entry/mask/mask"][()].astype(bool)
    assert np.all(mask[:, hot[:, 0], hot[:, 1]])
    assert np.all(mask[:, gap])


def test_bragg_mask_keeps_a_hot_pixel_inside_a_peak_masked(
    truth_chain, simulated_rotation
):
    """A hot pixel inside a Bragg ellipsoid (as in the demo data) stays masked."""
    from dials_diffuse.algorithms.diffuse.mask import PeakMasker
    from dials_diffuse.algorithms.diffuse.peaks import PeakModel
    from dials_diffuse.util.inputs import load_inputs, load_sweep

    sweep = load_sweep(load_inputs([str(simulated_rotation["truth_expt"])], True))
    model = PeakModel.from_table(load_table(truth_chain / "peaks.nxs", "peak_model"))
    (chunk,) = sweep.chunks(sweep.source.n_frames)
    kept = ~PeakMasker(sweep, model, 3.0, bragg=True)(sweep, chunk).astype(bool)
    rows, columns = np.nonzero(kept.any(axis=0))  # inside a peak in some frame
    hot = np.zeros(kept.shape[1:], dtype=bool)
    hot[rows[::7], columns[::7]] = True
    mask = PeakMasker(sweep, model, 3.0, hot=hot, bragg=True)(sweep, chunk)
    assert hot.sum() > 5 and np.all(mask[:, hot])
    np.testing.assert_array_equal(mask[:, ~hot], ~kept[:, ~hot])


def test_bragg_intensities_with_bragg_mask(truth_chain, simulated_rotation):
    with h5py.File(truth_chain / "bragg.nxs", "r") as handle:
        kept = 1 - handle["entry/mask/mask"][()].mean()
    # Only the ellipsoids are kept: a few percent of the pixels.
    assert 0.005 < kept < 0.1
    table = load_table(truth_chain / "bragg_corrected.nxs").to_frame()
    assert np.all(table[["h", "k", "l"]] == np.round(table[["h", "k", "l"]]))
    with h5py.File(simulated_rotation["truth"], "r") as truth:
        indices = truth["bragg/miller_index"][()]
        intensities = truth["bragg/intensity"][()]
    # P212121 intensities are the same for every sign of h, k, l.
    lookup = {tuple(np.abs(m)): i for m, i in zip(indices, intensities)}
    merged = table[table["pixels"] > 20].groupby(["h", "k", "l"])["intensity"].mean()
    truth = np.array(
        [lookup.get(tuple(abs(int(v)) for v in key), 0.0) for key in merged.index]
    )
    assert len(merged) > 300
    assert np.corrcoef(merged.to_numpy(), truth)[0, 1] > 0.9


def _run(program, args, capsys):
    code = program.run(args)
    return code, capsys.readouterr().err


def _no_outputs(directory, name):
    return not (directory / name).exists() and not list(directory.glob(f".{name}*"))


def test_zero_exposure_is_a_clear_error(simulated_rotation, in_tmp_path, capsys):
    from dxtbx.model.experiment_list import ExperimentListFactory

    experiments = ExperimentListFactory.from_json_file(
        str(simulated_rotation["truth_expt"]), check_format=False
    )
    scan = experiments[0].scan
    times = scan.get_exposure_times()
    times[2] = 0.0
    times[3] = 0.0
    scan.set_exposure_times(times)
    experiments.as_file("zero.expt")
    before = (in_tmp_path / "zero.expt").read_bytes()
    code, err = _run(integrate_program, ["zero.expt"], capsys)
    assert code == 1
    assert "image(s) 3, 4 have a zero or unknown exposure time" in err
    assert "Traceback" not in err
    assert _no_outputs(in_tmp_path, "integrated.nxs")
    assert (in_tmp_path / "zero.expt").read_bytes() == before


def test_first_exposure_only_is_filled_in(simulated_rotation, in_tmp_path, capsys):
    """dxtbx's fast CBF import records only the first exposure time (as mdx2 fixes)."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    experiments = ExperimentListFactory.from_json_file(
        str(simulated_rotation["truth_expt"]), check_format=False
    )
    scan = experiments[0].scan
    times = scan.get_exposure_times()
    first = times[0]
    for index in range(1, len(times)):
        times[index] = 0.0
    scan.set_exposure_times(times)
    experiments.as_file("first_only.expt")
    assert integrate_program.run(["first_only.expt", "image_range=1,4"]) == 0
    assert "Only the first image has an exposure time" in capsys.readouterr().out
    table = load_table(in_tmp_path / "integrated.nxs").to_frame()
    assert table["seconds"].sum() == pytest.approx(table["pixels"].sum() * first)


def test_bad_inputs_name_the_file(simulated_rotation, truth_chain, in_tmp_path, capsys):
    expt = str(simulated_rotation["truth_expt"])
    peaks = str(truth_chain / "peaks.nxs")
    code, err = _run(find_peaks_program, [expt], capsys)
    assert code == 1 and "count_threshold is required" in err
    code, err = _run(integrate_program, [expt, f"mask={peaks}"], capsys)
    assert code == 1 and "peaks.nxs: not a dials-diffuse mask" in err
    code, err = _run(mask_peaks_program, [expt], capsys)
    assert code == 1 and "no peak model given" in err
    code, err = _run(correct_program, [expt, peaks], capsys)
    assert code == 1 and "no integrated table given" in err
    truncated = in_tmp_path / "integrated.nxs"
    truncated.write_bytes((truth_chain / "integrated.nxs").read_bytes()[:3000])
    code, err = _run(correct_program, [expt, str(truncated)], capsys)
    assert code == 1 and "integrated.nxs" in err and "Traceback" not in err
    assert _no_outputs(in_tmp_path, "corrected.nxs")


def test_mask_must_cover_the_images(
    simulated_rotation, truth_chain, in_tmp_path, capsys
):
    expt = str(simulated_rotation["truth_expt"])
    peaks = str(truth_chain / "peaks.nxs")
    code, _ = _run(
        mask_peaks_program,
        [expt, peaks, "image_range=1,10", "output.mask=part.nxs", "output.plot=None"],
        capsys,
    )
    assert code == 0
    code, err = _run(integrate_program, [expt, "mask=part.nxs"], capsys)
    assert code == 1 and "part.nxs: has no mask for image(s) 11" in err
    # The same slice integrates.
    code, _ = _run(
        integrate_program, [expt, "mask=part.nxs", "image_range=1,10"], capsys
    )
    assert code == 0
    table = load_table(in_tmp_path / "integrated.nxs").to_frame()
    assert table["phi"].max() < 10 * 0.5


def test_process_runs_the_chain_like_the_steps(
    simulated_rotation, truth_chain, in_tmp_path
):
    from command_line import process as process_program

    args = [
        str(simulated_rotation["truth_expt"]),
        "find_peaks.count_threshold=30",
        "integrate.subdivide=4,4,4",
        "map.limits=-2,2,-2,2,-2,2",
        "run_scale=False",
        "output.json=process.json",
    ]
    assert process_program.run(args) == 0
    for name in (
        "data.nxs",
        "peaks.nxs",
        "mask.nxs",
        "integrated.nxs",
        "corrected.nxs",
        "merged.nxs",
        "map.nxs",
        "map.ccp4",
    ):
        assert (in_tmp_path / name).is_file(), name
    # In one process: no PHIL files or per-step JSON between the steps.
    assert not list(in_tmp_path.glob("dials.diffuse.process.*.phil"))
    assert not (in_tmp_path / "dials.diffuse.integrate.json").exists()
    # Same data, same parameters: the same merged map as the steps run one by one.
    ours = load_table(in_tmp_path / "merged.nxs").to_frame()
    steps = load_table(truth_chain / "merged.nxs").to_frame()
    np.testing.assert_allclose(ours["intensity"], steps["intensity"], rtol=1e-6)
    with h5py.File(in_tmp_path / "map.nxs", "r") as handle:
        assert handle["entry/intensity/intensity"].shape == (17, 17, 17)
    # Each step's key results reach process.json; the report embeds every plot.
    summary = json.loads((in_tmp_path / "process.json").read_text())
    mask_results = summary["results"]["mask_peaks"]
    mask = h5py.File(in_tmp_path / "mask.nxs", "r")["entry/mask/mask"][()]
    assert mask_results["masked_fraction"] == pytest.approx(mask.mean())
    assert (
        summary["results"]["integrate"]["outputs"]["integrated table"]
        == "integrated.nxs"
    )
    # Each step's command runs it alone with the same parameters.
    integrate_command = summary["results"]["integrate"]["command"]
    assert integrate_command.startswith("dials.diffuse.integrate ")
    assert "subdivide=4,4,4" in integrate_command.split()
    assert "mask=mask.nxs" in integrate_command.split()
    # ... and gives the same table run alone.
    again = [*integrate_command.split()[1:], "output.table=again.nxs"]
    again.append("output.log=again.log")
    assert integrate_program.run([*again, "output.plot=None"]) == 0
    np.testing.assert_array_equal(
        load_table(in_tmp_path / "again.nxs").to_frame().to_numpy(),
        load_table(in_tmp_path / "integrated.nxs").to_frame().to_numpy(),
    )
    assert set(summary["timings"]) >= {"find_peaks", "merge", "map", "total"}
    report = (in_tmp_path / "dials.diffuse.process.html").read_text()
    plots = [p for p in in_tmp_path.glob("*.png")]
    assert len(plots) >= 6
    assert report.count("data:image/png;base64,") == len(plots)
    for step in ("find_peaks", "mask_peaks", "integrate", "correct", "merge", "map"):
        assert f"<h2>dials.diffuse.{step}</h2>" in report
    # The log holds every step (it once stopped after the first), the report
    # and the total time; each step's part of it is also in its own log.
    log = (in_tmp_path / "dials.diffuse.process.log").read_text()
    steps = ["import_data", "find_peaks", "mask_peaks", "integrate"]
    steps += ["correct", "merge", "map"]
    for step in steps:
        assert f"=== {step}: dials.diffuse.{step} " in log, step
        assert f"=== {step}:" in (in_tmp_path / f"dials.diffuse.{step}.log").read_text()
    assert (
        log.index("=== find_peaks:")
        < log.index("Found ")
        < log.index("Wrote peaks and peak model to peaks.nxs")
    )
    assert "Masked pixels: " in log
    assert "Integrated " in log and "voxel observations" in log
    assert "Corrected " in log and "Merged " in log and "Map of intensity" in log
    assert "Wrote map (CCP4) to map.ccp4" in log
    assert "Wrote HTML report to dials.diffuse.process.html" in log
    assert log.rstrip().splitlines()[-1].startswith("Total time: ")
    assert "Found " not in (in_tmp_path / "dials.diffuse.map.log").read_text()
    # analyse_map's viewer, linked from the report; CC1/2 of merge's halves.
    assert '<a href="map_viewer.html">' in report
    assert (in_tmp_path / "map_viewer.html").is_file()
    assert summary["results"]["analyse_map"]["cc_half"] > 0.5


def test_dask_workers_give_the_same_table(simulated_rotation, truth_chain, in_tmp_path):
    """Chunks sent to a local Dask cluster (sources and geometry pickled)."""
    args = [
        str(simulated_rotation["truth_expt"]),
        f"mask={truth_chain / 'mask.nxs'}",
        "subdivide=4,4,4",
        "dask.scheduler=local",
        "nproc=2",
        "output.plot=None",
    ]
    assert integrate_program.run(args) == 0
    with_dask = load_table(in_tmp_path / "integrated.nxs").to_frame()
    threads = load_table(truth_chain / "integrated.nxs").to_frame()
    np.testing.assert_array_equal(with_dask.to_numpy(), threads.to_numpy())


def test_correct_subtracts_the_binned_background(
    simulated_rotation, truth_chain, in_tmp_path
):
    from command_line import bin_image_series as bin_program
    from dials_diffuse.algorithms.diffuse.background import BinnedBackground
    from dials_diffuse.io.background_file import read_background, write_background

    expt = str(simulated_rotation["truth_expt"])
    args = [expt, f"mask={truth_chain / 'mask.nxs'}", "bins=10,64,64"]
    assert bin_program.run(args) == 0
    binned = read_background(in_tmp_path / "background.nxs")
    assert binned.rate.shape == (3, 4, 4)
    # A constant background of 2 counts/s per pixel.
    write_background(
        in_tmp_path / "flat.nxs",
        BinnedBackground(
            binned.phi, binned.iy, binned.ix, np.full(binned.rate.shape, 2.0)
        ),
    )
    integrated = str(truth_chain / "integrated.nxs")
    assert correct_program.run([expt, integrated, "background=flat.nxs"]) == 0
    with_background = load_table(in_tmp_path / "corrected.nxs").to_frame()
    without = load_table(truth_chain / "corrected.nxs").to_frame()
    rate = without["counts"] / without["seconds"]
    scale = rate / without["intensity"].astype(float)
    keep = rate > 0
    difference = (without["intensity"] - with_background["intensity"]).astype(float)
    np.testing.assert_allclose((difference * scale)[keep], 2.0, rtol=1e-4)


def test_scale_undoes_a_known_distortion_of_the_corrected_table(
    truth_chain, in_tmp_path
):
    """The sweep's corrected table times a known b(phi) d(ix): scale recovers them.

    Redundancy is low here (most voxels seen once or twice, symmetry mates
    at other detector positions), so the tolerances are wider than on the
    synthetic tables of tests/algorithms/diffuse/test_scale_model.py.
    """
    from dials_diffuse.command_line import scale as scale_program
    from dials_diffuse.io.tables import write_tables

    table = load_table(truth_chain / "corrected.nxs")
    phi, ix = np.asarray(table["phi"]), np.asarray(table["ix"])
    distortion = (1 + 0.2 * np.sin(phi / 3.0)) * (1 + 0.3 * (ix / 256 - 0.5))
    for column in ("intensity", "intensity_error"):
        table.columns[column] = np.asarray(table[column]) * distortion
    write_tables("distorted.nxs", [table])
    args = ["distorted.nxs", "detector.enable=True", "detector.x_nodes=5"]
    assert scale_program.run([*args, "detector.y_nodes=5"]) == 0
    from dials_diffuse.io.scale_model import read_scale_model

    model = read_scale_model("scale.nxs")
    a, b, c, d = model.factors(table.to_frame())
    ratio = b / (1 + 0.2 * np.sin(phi / 3.0))
    # b within 2% rms (found: 1.3%), b d within 7% (found: 4.7%; the
    # undistorted table gives 1% of noise-fitting).
    assert np.std(ratio) / np.mean(ratio) < 0.02
    ratio = b * d / distortion
    assert np.std(ratio) / np.mean(ratio) < 0.07
    # Merged with the model: the undistorted merge up to one constant, within
    # 8% rms per voxel (found: 5.4%, correlation 0.991; merged without the
    # model: 15%, 0.93).
    assert merge_program.run(["distorted.nxs", "scale.nxs", "split=none"]) == 0
    scaled = load_table("merged.nxs").to_frame().set_index(["h", "k", "l"])
    plain = load_table(truth_chain / "merged.nxs").to_frame()
    plain = plain.set_index(["h", "k", "l"])["intensity"]
    both = scaled["intensity"].to_frame("scaled").join(plain.rename("plain"))
    ratio = both["scaled"] / both["plain"]
    assert np.std(ratio) / np.mean(ratio) < 0.08
    assert np.corrcoef(both["scaled"], both["plain"])[0, 1] > 0.98


def test_analysed_map_matches_the_simulated_truth(
    truth_chain, simulated_rotation, scale_constant, in_tmp_path
):
    """merged.nxs of the chain against the simulator's diffuse grid (truth.h5)."""
    from dials_diffuse.algorithms.maps.grid import ReciprocalMap
    from dials_diffuse.command_line import analyse_map, compare_maps
    from dials_diffuse.io.map_files import write_map_layers

    with h5py.File(simulated_rotation["truth"], "r") as truth:
        grid = truth["diffuse/grid"][()].astype(np.float64)
        axes = [truth[f"diffuse/{a}"][()] for a in "hkl"]
        subdivide = int(truth["diffuse"].attrs["subdivide"])
        cell = tuple(truth["models"].attrs["unit_cell"])
        ring_s = float(truth["diffuse"].attrs["ring_s"])
        background = json.loads(truth.attrs["setup"])["background"]
    model = ReciprocalMap(
        axes, {"intensity": grid}, [subdivide] * 3, cell, "P 21 21 21"
    )
    write_map_layers("truth_map.nxs", model, ["intensity"], "intensity")
    expt = str(simulated_rotation["truth_expt"])
    merged = str(truth_chain / "merged.nxs")
    assert compare_maps.run([merged, "truth_map.nxs", expt]) == 0
    overall = json.loads((in_tmp_path / "compare_maps.json").read_text())["overall"]
    assert overall["cc_total"] > 0.85
    # merged = K (diffuse + background): the fitted scale and offset.
    assert overall["scale"] == pytest.approx(scale_constant, rel=0.05)
    assert overall["offset"] == pytest.approx(scale_constant * background, rel=0.1)
    args = [merged, expt, "output.viewer=None", "output.json=analyse.json"]
    assert analyse_map.run(args) == 0
    profile = pd.read_csv(in_tmp_path / "isotropic.csv")
    usable = profile[profile["voxels"] >= 100]
    peak = usable["s_mean"].to_numpy()[np.argmax(usable["mean"].to_numpy())]
    assert peak == pytest.approx(ring_s, abs=0.015)
    results = json.loads((in_tmp_path / "analyse.json").read_text())["results"]
    assert results["cc_half"] > 0.5
    # The correlation with the truth at the noise limit: near CC* = sqrt(2
    # CC1/2 / (1 + CC1/2)) of the halves (Karplus & Diederichs), total and
    # anisotropic (the voxels average the sharp halos: a little below).
    for name in ("", "_anisotropic"):
        half = results[f"cc_half{name}"]
        star = np.sqrt(2 * half / (1 + half))
        assert 0.75 * star < overall[f"cc_{name[1:] or 'total'}"] < star + 0.02


def test_mask_absent_masks_screw_absences_and_fractions_by_cause(
    simulated_rotation, truth_chain, in_tmp_path
):
    """mask_absent=True (mdx2's rule) adds the ellipsoids at h00, 0k0, 00l odd
    (P 21 21 21's screw absences) and nothing else; the masked fraction is
    split into detector mask, hot pixels and Bragg masking."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    from dials_diffuse import geometry

    expt = str(simulated_rotation["truth_expt"])
    peaks = str(truth_chain / "peaks.nxs")
    args = [expt, peaks, "sigma_cutoff=3", "mask_absent=True", "output.json=m.json"]
    assert mask_peaks_program.run(args) == 0
    with (
        h5py.File("mask.nxs", "r") as m,
        h5py.File(truth_chain / "mask.nxs", "r") as d,
        h5py.File(simulated_rotation["truth"], "r") as truth,
    ):
        with_absent = m["entry/mask/mask"][()].astype(bool)
        default = d["entry/mask/mask"][()].astype(bool)
        gap = truth["mask/gap"][()]
        hot = truth["hot_pixels/position"][()]
    assert np.all(with_absent[default])
    extra = with_absent & ~default
    assert extra.sum() > 0
    experiment = ExperimentListFactory.from_json_file(expt, check_format=False)[0]
    s1 = geometry.pixel_s1(experiment.detector[0], experiment.beam)
    frames = np.unique(np.nonzero(extra)[0])
    for frame in frames[:: max(1, len(frames) // 5)]:
        hkl = geometry.fractional_hkl(experiment, s1[extra[frame]], frame + 0.5)
        nearest = np.rint(hkl).astype(int)
        # Two indices zero, the third odd: h00, 0k0 or 00l absences only.
        assert np.all((nearest == 0).sum(axis=1) == 2)
        assert np.all(nearest.sum(axis=1) % 2 == 1)
    results = json.loads(open("m.json").read())["results"]
    assert results["masked_fraction"] == pytest.approx(with_absent.mean())
    assert results["detector_masked_fraction"] == pytest.approx(gap.mean())
    assert results["hot_pixel_fraction"] == pytest.approx(len(hot) / gap.size)
    outside = ~gap
    outside[hot[:, 0], hot[:, 1]] = False
    assert results["bragg_masked_fraction"] == pytest.approx(
        with_absent[:, outside].sum() / with_absent.size
    )


def test_integrate_from_python_gives_the_program_table(simulated_rotation, truth_chain):
    """do_integrate on DIALS objects, as a dials.python script calls it."""
    from dxtbx.model.experiment_list import ExperimentListFactory
    from libtbx.phil import parse

    from dials_diffuse.algorithms.diffuse import integrate
    from dials_diffuse.algorithms.diffuse.sweep import sweep_from_experiment
    from dials_diffuse.io.mask_file import MaskFile
    from dials_diffuse.util.parallel import ParallelMap

    experiment = ExperimentListFactory.from_json_file(
        str(simulated_rotation["truth_expt"])
    )[0]
    params = integrate.phil_scope.fetch(parse("subdivide=4,4,4")).extract()
    with ParallelMap(nproc=2) as pmap:
        result = integrate.do_integrate(
            sweep_from_experiment(experiment),
            params,
            pmap,
            MaskFile(truth_chain / "mask.nxs"),
        )
    program = load_table(truth_chain / "integrated.nxs").to_frame()
    np.testing.assert_array_equal(
        result.table.to_frame().to_numpy(), program.to_numpy()
    )
    assert result.summary()["voxels"] == len(program)
