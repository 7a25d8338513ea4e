"""The code base is ruff-clean (lint rules in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed (./install.sh test installs it)")
    result = subprocess.run(
        [ruff, "check", str(REPOSITORY)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
