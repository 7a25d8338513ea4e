"""Build dials-diffuse: the C++ kernels, the packages and the console scripts.

Every module in command_line/ becomes a program `dials.diffuse.<module>`, and
every Format class in dials_diffuse/format/ listed in FORMAT_CLASSES is
registered with dxtbx through the `dxtbx.format` entry-point group.
"""

import os
import shlex
import sys
import sysconfig
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

HERE = Path(__file__).parent

LIBDEFLATE_MISSING = (
    "dials-diffuse needs libdeflate (headers and library) to build its C++ "
    "kernels, and {missing} not found. Install it: conda-forge "
    "'conda install -c conda-forge libdeflate' (in the DIALS environment), "
    "Debian/Ubuntu 'apt install libdeflate-dev', Fedora 'dnf install "
    "libdeflate-devel', macOS 'brew install libdeflate'; or point CPATH and "
    "LIBRARY_PATH at an installation. Searched: {searched}"
)


def _flag_dirs(variables, prefixes, environ):
    """Directories given with `prefixes` (-I, -L, ...) in compiler flag variables."""
    found = []
    for name in variables:
        words = shlex.split(environ.get(name, ""))
        for i, word in enumerate(words):
            for prefix in prefixes:
                if word == prefix and i + 1 < len(words):
                    found.append(words[i + 1])
                elif word.startswith(prefix) and len(word) > len(prefix):
                    found.append(word[len(prefix) :])
    return found


def libdeflate_search_dirs(environ=None, prefix=None):
    """Where the compiler looks for libdeflate: (include dirs, library dirs).

    Compiler flags and CPATH/LIBRARY_PATH first, then this Python's prefix
    (a conda or DIALS environment) and the system's standard directories.
    """
    environ = os.environ if environ is None else environ
    prefixes = [prefix or sys.prefix, environ.get("CONDA_PREFIX", "")]
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    include = _flag_dirs(
        ("CPPFLAGS", "CFLAGS", "CXXFLAGS"), ("-I", "-isystem"), environ
    )
    library = _flag_dirs(("LDFLAGS",), ("-L",), environ)
    for name in ("CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH"):
        include += environ.get(name, "").split(os.pathsep)
    library += environ.get("LIBRARY_PATH", "").split(os.pathsep)
    for root in [p for p in prefixes if p] + ["/usr/local", "/opt/homebrew", "/usr"]:
        include += [f"{root}/include", f"{root}/include/{multiarch}"]
        library += [f"{root}/lib", f"{root}/lib64", f"{root}/lib/{multiarch}"]
    library.append(f"/lib/{multiarch}")

    def unique(dirs):
        return list(dict.fromkeys(d for d in dirs if d and not d.endswith("/")))

    return unique(include), unique(library)


def find_libdeflate(include_dirs, library_dirs):
    """(include dir, library dir) holding libdeflate.h and libdeflate.

    Raises SystemExit with one message naming what is missing and how to
    install it, before any compiler runs.
    """
    header = next(
        (d for d in include_dirs if (Path(d) / "libdeflate.h").is_file()), None
    )
    library = next((d for d in library_dirs if any(Path(d).glob("libdeflate.*"))), None)
    missing = [
        what
        for what, where in (
            ("libdeflate.h", header),
            ("the libdeflate library", library),
        )
        if where is None
    ]
    if missing:
        searched = ", ".join(include_dirs + library_dirs)
        raise SystemExit(
            LIBDEFLATE_MISSING.format(
                missing=" and ".join(missing)
                + (" were" if len(missing) > 1 else " was"),
                searched=searched,
            )
        )
    return header, library


PROGRAMS = sorted(
    path.stem
    for path in (HERE / "command_line").glob("*.py")
    if not path.stem.startswith("_")
)

# "ClassName:base1,base2" = module path, as dxtbx's entry points expect.
FORMAT_CLASSES = [
    "FormatEigerFilewriter:FormatHDF5 = "
    "dials_diffuse.format.FormatEigerFilewriter:FormatEigerFilewriter",
    # A child of dxtbx's broken-on-h5py-3 FormatHDF5Sacla, so it wins for
    # every file that class claims; also of FormatHDF5 for dxtbx without it.
    "FormatSACLA:FormatHDF5Sacla,FormatHDF5 = "
    "dials_diffuse.format.FormatSACLA:FormatSACLA",
    # Claims only NXmx files whose pixel mask dxtbx 3.11 cannot cut into
    # modules (see the class); FormatNXmx reads all others.
    "FormatNXmxModuleMask:FormatNXmx = "
    "dials_diffuse.format.FormatNXmxModuleMask:FormatNXmxModuleMask",
]


def kernels_extension():
    """The C++ kernels, linked with libdeflate (HDF5 gzip chunks) where it lies."""
    include, library = find_libdeflate(*libdeflate_search_dirs())
    system = ("/usr/include", "/usr/lib", "/lib")
    extra_include = [] if include.startswith(system) else [include]
    extra_library = [] if library.startswith(system) else [library]
    return Pybind11Extension(
        "dials_diffuse._kernels",
        sorted(str(p.relative_to(HERE)) for p in (HERE / "cpp").glob("*.cpp")),
        include_dirs=["cpp"] + extra_include,
        library_dirs=extra_library,
        runtime_library_dirs=extra_library,
        libraries=["deflate"],
        cxx_std=17,
        extra_compile_args=["-O3", "-fno-trapping-math", "-Wall", "-Wextra"],
        depends=sorted(str(p.relative_to(HERE)) for p in (HERE / "cpp").glob("*.h")),
    )


if __name__ == "__main__":
    setup(
        # The SPDX string here, not in pyproject.toml: a TOML table there is
        # deprecated and a string needs setuptools >= 77 (Debian 12 has 66).
        license="BSD-3-Clause",
        packages=find_packages(include=["dials_diffuse", "dials_diffuse.*"])
        + ["dials_diffuse.command_line"],
        package_dir={"dials_diffuse.command_line": "command_line"},
        ext_modules=[kernels_extension()],
        cmdclass={"build_ext": build_ext},
        entry_points={
            "console_scripts": [
                f"dials.diffuse.{name}=dials_diffuse.command_line.{name}:run"
                for name in PROGRAMS
            ],
            "dxtbx.format": FORMAT_CLASSES,
        },
    )
