"""setup.py's libdeflate check: found where the compiler looks, one clear message if not."""

import importlib.util
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "setup.py"


@pytest.fixture(scope="module")
def setup_module():
    """setup.py as a module (setup() runs only as __main__, as pip runs it)."""
    spec = importlib.util.spec_from_file_location("dials_diffuse_setup", SETUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _installation(root, library="libdeflate.so.0"):
    (root / "include").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "include" / "libdeflate.h").write_text("/* header */\n")
    (root / "lib" / library).write_bytes(b"")
    return root


def test_found_in_the_python_prefix(setup_module, tmp_path):
    prefix = _installation(tmp_path / "env", "libdeflate.a")
    include, library = setup_module.libdeflate_search_dirs(environ={}, prefix=prefix)
    assert include[0] == f"{prefix}/include" and library[0] == f"{prefix}/lib"
    assert setup_module.find_libdeflate(include, library) == (
        f"{prefix}/include",
        f"{prefix}/lib",
    )


def test_found_through_compiler_flags_and_paths(setup_module, tmp_path):
    flags = _installation(tmp_path / "flags")
    paths = _installation(tmp_path / "paths")
    environ = {
        "CPPFLAGS": f"-DNDEBUG -isystem {flags}/include",
        "LDFLAGS": f"-Wl,-O2 -L{flags}/lib",
        "CPATH": f"{paths}/include",
        "LIBRARY_PATH": f"{paths}/lib",
    }
    include, library = setup_module.libdeflate_search_dirs(
        environ=environ, prefix=tmp_path / "empty"
    )
    assert include[:2] == [f"{flags}/include", f"{paths}/include"]
    assert library[:2] == [f"{flags}/lib", f"{paths}/lib"]
    assert setup_module.find_libdeflate(include, library) == (
        f"{flags}/include",
        f"{flags}/lib",
    )


@pytest.mark.parametrize(
    "present, missing",
    [
        ("library", "libdeflate.h was not found"),
        ("header", "the libdeflate library was not found"),
        (None, "libdeflate.h and the libdeflate library were not found"),
    ],
)
def test_missing_is_one_message_saying_how_to_install(
    setup_module, tmp_path, present, missing
):
    (tmp_path / "include").mkdir()
    (tmp_path / "lib").mkdir()
    if present == "header":
        (tmp_path / "include" / "libdeflate.h").write_text("")
    if present == "library":
        (tmp_path / "lib" / "libdeflate.so").write_bytes(b"")
    with pytest.raises(SystemExit) as raised:
        setup_module.find_libdeflate(
            [str(tmp_path / "include")], [str(tmp_path / "lib")]
        )
    message = str(raised.value)
    assert "\n" not in message and missing in message
    assert "conda-forge" in message and "libdeflate-dev" in message
    assert str(tmp_path / "include") in message  # where it looked


def test_this_machine_builds_with_it(setup_module):
    """The installed kernels were built, so the check finds libdeflate here."""
    include, library = setup_module.find_libdeflate(
        *setup_module.libdeflate_search_dirs()
    )
    assert (Path(include) / "libdeflate.h").is_file()
    assert any(Path(library).glob("libdeflate.*"))
