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


def test_library_code_raises_data_errors():
    """Only the program layer (command_line/, the runner) speaks of UserError.

    Library code raises DataError, naming the file; io/atomic.py is the
    runner's atomic output path (a refused output name is the user's).
    """
    library = REPOSITORY / "dials_diffuse"
    offenders = [
        str(path.relative_to(REPOSITORY))
        for folder in ("algorithms", "images", "io", "format", "simulate")
        for path in sorted((library / folder).rglob("*.py"))
        if "UserError" in path.read_text() and path.name != "atomic.py"
    ]
    if "UserError" in (library / "geometry.py").read_text():
        offenders.append("dials_diffuse/geometry.py")
    assert offenders == []


def test_kernel_headers_are_plain_cpp():
    """Kernel headers hold no Python: the pybind11 glue is in bindings_*.cpp.

    Only bindings.h and common.h (the glue's shared helpers) may include
    pybind11 or use py:: types.
    """
    glue = {"bindings.h", "common.h"}
    offenders = []
    for header in sorted((REPOSITORY / "cpp").glob("*.h")):
        if header.name in glue:
            continue
        code = "\n".join(
            line.split("//", 1)[0] for line in header.read_text().splitlines()
        )
        if "pybind11" in code or "py::" in code:
            offenders.append(header.name)
    assert offenders == []
