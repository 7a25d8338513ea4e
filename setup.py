"""Build dials-diffuse: the C++ kernels, the packages and the console scripts.

Every module in command_line/ becomes a program `dials.diffuse.<module>`, and
every Format class in dials_diffuse/format/ listed in FORMAT_CLASSES is
registered with dxtbx through the `dxtbx.format` entry-point group.
"""

from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

HERE = Path(__file__).parent

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
]

kernels = Pybind11Extension(
    "dials_diffuse._kernels",
    sorted(str(p.relative_to(HERE)) for p in (HERE / "cpp").glob("*.cpp")),
    include_dirs=["cpp"],
    libraries=["deflate"],  # libdeflate (Debian libdeflate-dev): HDF5 gzip chunks
    cxx_std=17,
    extra_compile_args=["-O3", "-fno-trapping-math", "-Wall", "-Wextra"],
    depends=sorted(str(p.relative_to(HERE)) for p in (HERE / "cpp").glob("*.h")),
)

setup(
    packages=find_packages(include=["dials_diffuse", "dials_diffuse.*"])
    + ["dials_diffuse.command_line"],
    package_dir={"dials_diffuse.command_line": "command_line"},
    ext_modules=[kernels],
    cmdclass={"build_ext": build_ext},
    entry_points={
        "console_scripts": [
            f"dials.diffuse.{name}=dials_diffuse.command_line.{name}:run"
            for name in PROGRAMS
        ],
        "dxtbx.format": FORMAT_CLASSES,
    },
)
