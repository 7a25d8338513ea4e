"""Shared test fixtures: the real data beside the checkout, and program runs."""

import os
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent

#: Where the small real data sets live (README "Test data"): the folder in
#: DIALS_DIFFUSE_TEST_DATA, else ../shared/data beside the checkout.
TEST_DATA = Path(
    os.environ.get("DIALS_DIFFUSE_TEST_DATA") or REPOSITORY.parent / "shared" / "data"
)

#: Each real data set: its folder under TEST_DATA, a file that must be there,
#: and where to get it.
DATA_SETS = {
    "l_cysteine": (
        "l_cysteine_sweep1",
        "l-cyst_01_00015.cbf",
        "the first 15 frames of L-cysteine sweep 1 (DLS I19 PILATUS 2M) from "
        "https://github.com/dials/data-files (l_cysteine/), DOI 10.5281/zenodo.51405",
    ),
    "dials_centroid": (
        "dials_centroid_test_data",
        "indexed.refl",
        "indexed.expt, indexed.refl and integrated.refl of DIALS's centroid test "
        "data from https://github.com/dials/data-files (centroid_test_data/)",
    ),
    "dectris_testfiles": (
        "dectris_eiger_testfiles",
        "dataset_artificial_small_001/test_master.h5",
        "datasets_eiger1/, datasets_eiger2/ and dataset_artificial_small_001/ of "
        "https://github.com/dectris/h5-testfiles",
    ),
}


def data_set(name):
    """The folder of a real data set, or skip the test saying how to get it."""
    folder, marker, source = DATA_SETS[name]
    directory = TEST_DATA / folder
    if not (directory / marker).is_file():
        pytest.skip(
            f"real data set {folder} not found in {TEST_DATA} "
            f"(set DIALS_DIFFUSE_TEST_DATA): {source}"
        )
    return directory


@pytest.fixture(scope="session")
def shared_data():
    """The folder of all real data sets (prefer the per-data-set fixtures below)."""
    if not TEST_DATA.is_dir():
        pytest.skip(
            f"real test data not found in {TEST_DATA} (set DIALS_DIFFUSE_TEST_DATA; "
            "README: Test data)"
        )
    return TEST_DATA


@pytest.fixture(scope="session")
def l_cysteine():
    """15 real PILATUS 2M rotation frames (CBF), L-cysteine, DLS I19."""
    return data_set("l_cysteine")


@pytest.fixture(scope="session")
def dials_centroid():
    """Real DIALS output of the centroid test data (indexed/integrated .expt/.refl)."""
    return data_set("dials_centroid")


@pytest.fixture(scope="session")
def dectris_testfiles():
    """Real DECTRIS EIGER/EIGER2 data files (no master files) and one artificial set."""
    return data_set("dectris_testfiles")


@pytest.fixture
def in_tmp_path(tmp_path):
    """Run the test with the temporary directory as working directory."""
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)


# Programs run by tests (dials.import, dials.diffuse.*) come from this venv
# first: its dials.* wrappers see our dxtbx Format classes.
os.environ["PATH"] = os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
)


# Simulated datasets with known truth (dials_diffuse.simulate), made once per
# test session at the "test" size. Each returns the dict of paths of the
# simulate_* function (the truth file under "truth").


@pytest.fixture(scope="session")
def simulated_rotation(tmp_path_factory):
    """An NXmx Eiger rotation sweep (256 x 256 px, 30 frames) and its truth."""
    from dials_diffuse.simulate import simulate_rotation

    return simulate_rotation(tmp_path_factory.mktemp("simulated") / "rotation")


#: Relative efficiency of each module of `simulated_modules` (module 2: 10 % less).
MODULE_EFFICIENCY = (1.0, 1.0, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0)


@pytest.fixture(scope="session")
def simulated_modules(tmp_path_factory):
    """The rotation sweep on 4 x 2 NXmx modules with 20 dead pixels, module 2 at 90 %."""
    from dials_diffuse.simulate import simulate_rotation

    return simulate_rotation(
        tmp_path_factory.mktemp("simulated") / "rotation_modules",
        modules=(4, 2),
        dead_pixels=20,
        module_efficiency=MODULE_EFFICIENCY,
    )


@pytest.fixture(scope="session")
def simulated_eiger_series(tmp_path_factory):
    """A DECTRIS-style Eiger series (300 frames of 64 x 48 px) and its truth."""
    from dials_diffuse.simulate import simulate_eiger_series

    return simulate_eiger_series(tmp_path_factory.mktemp("simulated") / "series")


@pytest.fixture(scope="session")
def simulated_sacla(tmp_path_factory):
    """A SACLA DataConvert run (24 shots, 4 dark), mask.npy and truth."""
    from dials_diffuse.simulate import simulate_sacla

    return simulate_sacla(tmp_path_factory.mktemp("simulated") / "sacla")


@pytest.fixture(scope="session")
def simulated_transmission_series(tmp_path_factory):
    """Five 10-frame sweeps at transmissions 0.064 ... 1.0 with a notch."""
    from dials_diffuse.simulate import simulate_transmission_series

    return simulate_transmission_series(
        tmp_path_factory.mktemp("simulated") / "transmission_series"
    )
