"""The real DIALS chain on the simulated rotation sweep recovers the truth.

dials.import, find_spots, index, refine, integrate and symmetry run as
subprocesses (Debian's DIALS), once per session; the tests compare the
results with the simulation's truth: the unit cell, the space group, the
orientation, the integrated intensities, and the symmetry DIALS finds in
them.
"""

import subprocess

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _dials(directory, *args):
    result = subprocess.run(
        list(args), cwd=directory, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        f"{args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    )


@pytest.fixture(scope="session")
def dials_processed(simulated_rotation, tmp_path_factory):
    directory = tmp_path_factory.mktemp("dials_chain")
    _dials(directory, "dials.import", str(simulated_rotation["master"]))
    _dials(directory, "dials.find_spots", "imported.expt", "nproc=2")
    _dials(
        directory,
        "dials.index",
        "imported.expt",
        "strong.refl",
        "space_group=P212121",
    )
    _dials(directory, "dials.refine", "indexed.expt", "indexed.refl")
    _dials(directory, "dials.integrate", "refined.expt", "refined.refl", "nproc=2")
    _dials(directory, "dials.symmetry", "integrated.expt", "integrated.refl")
    return directory


def _load(directory, stem):
    from dials.array_family import flex
    from dxtbx.model.experiment_list import ExperimentListFactory

    experiments = ExperimentListFactory.from_json_file(
        str(directory / f"{stem}.expt"), check_format=False
    )
    reflections = flex.reflection_table.from_file(str(directory / f"{stem}.refl"))
    return experiments, reflections


def test_cell_space_group_and_orientation(dials_processed, simulated_rotation):
    from dxtbx.model.experiment_list import ExperimentListFactory

    experiments, _ = _load(dials_processed, "integrated")
    truth = ExperimentListFactory.from_json_file(
        str(simulated_rotation["truth_expt"]), check_format=False
    )[0].crystal
    crystal = experiments[0].crystal
    assert str(crystal.get_space_group().info()) == "P 21 21 21"
    assert crystal.get_unit_cell().parameters() == pytest.approx(
        truth.get_unit_cell().parameters(), rel=0.003
    )
    # Same orientation up to the cell's symmetry: |A| columns match in magnitude.
    got = np.array(crystal.get_A()).reshape(3, 3)
    want = np.array(truth.get_A()).reshape(3, 3)
    signs = np.sign(np.sum(got * want, axis=0))
    assert got * signs == pytest.approx(want, abs=2e-4)


def test_dials_symmetry_finds_the_true_laue_group(dials_processed, simulated_rotation):
    """From the intensities alone (dials.symmetry, no space group given).

    The Laue group must be the truth's; the screw axes DIALS can see in a
    15° wedge must be ones the truth has (every reflection DIALS's choice
    makes absent is absent in the truth).
    """
    from cctbx import miller, sgtbx
    from dxtbx.model.experiment_list import ExperimentListFactory

    found = ExperimentListFactory.from_json_file(
        str(dials_processed / "symmetrized.expt"), check_format=False
    )[0].crystal.get_space_group()
    with h5py.File(simulated_rotation["truth"], "r") as handle:
        truth = sgtbx.space_group_info(handle["models"].attrs["space_group"]).group()
    assert str(found.build_derived_laue_group().info()) == "P m m m"
    assert found.build_derived_laue_group() == truth.build_derived_laue_group()
    indices = miller.index_generator(
        sgtbx.space_group_info("P 1").type(), False, (10, 10, 10)
    ).to_array()
    assert all(truth.is_sys_absent(h) for h in indices if found.is_sys_absent(h))


def test_integrated_intensities_follow_the_truth(dials_processed, simulated_rotation):
    experiments, reflections = _load(dials_processed, "integrated")
    assert len(reflections) > 500
    with h5py.File(simulated_rotation["truth"], "r") as handle:
        indices = handle["bragg/miller_index"][()]
        intensities = handle["bragg/intensity"][()]
    truth = dict(zip(map(tuple, indices), intensities))
    strong = reflections.get_flags(reflections.flags.integrated_sum) & (
        reflections["partiality"] > 0.99
    )
    selected = reflections.select(strong)
    observed = (
        selected["intensity.sum.value"].as_numpy_array()
        * selected["lp"].as_numpy_array()
    )
    sigma = np.sqrt(selected["intensity.sum.variance"].as_numpy_array())
    keep = observed / sigma / selected["lp"].as_numpy_array() > 20
    # DIALS may index in a setting with a and b (or any two) axes reversed.
    expected = np.array(
        [
            truth.get(tuple(abs(int(i)) for i in h), np.nan)
            for h in selected["miller_index"]
        ]
    )
    assert np.isfinite(expected[keep]).all()
    assert keep.sum() > 100
    # Integrated intensity (Lorentz-polarization corrected) is proportional to
    # the true intensity; a few reflections share their shoebox with a hot
    # pixel, so the check is robust: most ratios lie close to their median.
    ratio = observed[keep] / expected[keep]
    median = np.median(ratio)
    assert np.mean(np.abs(ratio / median - 1) < 0.25) > 0.9
    d = selected["d"].as_numpy_array()[keep]
    for low, high in [(0, 4), (4, 100)]:
        in_shell = (d >= low) & (d < high)
        assert np.median(ratio[in_shell]) == pytest.approx(median, rel=0.25)


def test_refined_detector_distance_is_the_truth(dials_processed, simulated_rotation):
    """dials.refine with the parallax the NXmx declares: the true distance.

    When the forward model drew pixels without parallax the refined distance
    came out 0.25 % short; with it, within the refinement's precision.
    """
    from dxtbx.model.experiment_list import ExperimentListFactory

    experiments, _ = _load(dials_processed, "refined")
    truth = ExperimentListFactory.from_json_file(
        str(simulated_rotation["truth_expt"]), check_format=False
    )[0]
    refined = experiments[0].detector[0].get_distance()
    assert refined == pytest.approx(truth.detector[0].get_distance(), rel=5e-4)
