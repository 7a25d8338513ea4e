"""Shared test fixtures: the real data beside the checkout, and program runs."""

import os
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
SHARED_DATA = REPOSITORY.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """`../shared/data` beside the repository (real files, see its README)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data missing: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def in_tmp_path(tmp_path):
    """Run the test with the temporary directory as working directory."""
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)


# Simulated datasets with known truth (dials_diffuse.simulate), made once per
# test session at the "test" size. Each returns the dict of paths of the
# simulate_* function (the truth file under "truth").


@pytest.fixture(scope="session")
def simulated_rotation(tmp_path_factory):
    """An NXmx Eiger rotation sweep (256 x 256 px, 30 frames) and its truth."""
    from dials_diffuse.simulate import simulate_rotation

    return simulate_rotation(tmp_path_factory.mktemp("simulated") / "rotation")


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
