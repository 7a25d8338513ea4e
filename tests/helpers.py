"""Small helpers for tests that run programs as a user would."""

import sys
from pathlib import Path


def console_script(name):
    """Path of an installed console script (`dials.diffuse.*`) beside this Python."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"console script {name} is not installed (run ./install.sh)"
    return str(path)
