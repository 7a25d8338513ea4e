"""Shared test fixtures: the real data beside the checkout, and program runs."""

import os
import sys
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


# Programs run by tests (dials.import, dials.diffuse.*) come from this venv
# first: its dials.* wrappers see our dxtbx Format classes.
os.environ["PATH"] = os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
)
