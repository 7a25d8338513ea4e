"""The table of programs the fault suite runs: add a program here to add its cases.

Each entry says how to run the program on the session's `world` (see
conftest.py), which output parameter to aim at inputs and bad directories,
which positional file to damage, which file its inputs refer to, whether it
reads the images of the NXmx sweep, and which of our tables it computes with.
"""

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class ProgramCase:
    """How the fault suite runs one program.

    Attributes
    ----------
    name : str
        The program (``dials.diffuse.<name>``).
    args : callable
        ``args(world) -> list of str``: a command line that succeeds.
    output : str
        An output parameter (``output.table``) the suite points at inputs,
        into read-only and full directories.
    primary : int or None
        Index in `args` of the positional file the suite damages (missing,
        empty, truncated, wrong kind); None for a program without inputs.
    referenced : str or None
        The `world` key of a file an input refers to (an image data file).
    reads_sweep_images : bool
        Reads the pixels of the NXmx sweep (missing/truncated data file).
    table : tuple or None
        (world key, table name, column) of a table it computes with: the
        suite makes it ragged, non-numeric and non-finite.
    """

    name: str
    args: object
    output: str
    primary: object = 0
    referenced: object = None
    reads_sweep_images: bool = False
    table: object = None

    @property
    def module(self):
        return importlib.import_module(f"dials_diffuse.command_line.{self.name}")

    def __str__(self):
        return self.name


def _files(*keys, extra=()):
    return lambda world: [str(world[key]) for key in keys] + list(extra)


PROGRAMS = [
    ProgramCase(
        "import_data",
        _files("expt"),
        "output.data",
        referenced="data_file",
        reads_sweep_images=True,
    ),
    ProgramCase(
        "find_peaks",
        _files("expt", extra=["count_threshold=30"]),
        "output.peaks",
        referenced="data_file",
        reads_sweep_images=True,
    ),
    ProgramCase(
        "mask_peaks",
        _files("expt", "peaks.nxs"),
        "output.mask",
        referenced="data_file",
        table=("peaks.nxs", "peak_model", "centre"),
    ),
    ProgramCase(
        "integrate",
        lambda world: [str(world["expt"]), f"mask={world['mask.nxs']}"],
        "output.table",
        referenced="data_file",
        reads_sweep_images=True,
    ),
    ProgramCase(
        "bin_image_series",
        _files("expt"),
        "output.background",
        referenced="data_file",
        reads_sweep_images=True,
    ),
    ProgramCase(
        "correct",
        _files("integrated.nxs", "expt"),
        "output.table",
        referenced="data_file",
        table=("integrated.nxs", "hkl_table", "seconds"),
    ),
    ProgramCase(
        "scale",
        _files("corrected.nxs"),
        "output.model",
        table=("corrected.nxs", "hkl_table", "intensity"),
    ),
    ProgramCase(
        "merge",
        _files("corrected.nxs"),
        "output.table",
        table=("corrected.nxs", "hkl_table", "intensity"),
    ),
    ProgramCase(
        "map",
        _files("merged.nxs", "expt"),
        "output.map",
        table=("merged.nxs", "hkl_table", "h"),
    ),
    ProgramCase(
        "analyse_map",
        _files("merged.nxs", "expt", extra=["output.viewer=None"]),
        "output.analysis",
        referenced="data_file",
    ),
    ProgramCase(
        "compare_maps",
        _files("merged.nxs", "map.nxs", "expt"),
        "output.table",
        referenced="data_file",
    ),
    ProgramCase(
        "reintegrate",
        _files("expt", "data.nxs", "mask.nxs", "scale.nxs", extra=["subdivide=2,2,2"]),
        "output.table",
        referenced="data_file",
    ),
    ProgramCase(
        "process",
        _files("expt", extra=["find_peaks.count_threshold=30"]),
        "find_peaks.output.peaks",
        referenced="data_file",
        reads_sweep_images=True,
    ),
    ProgramCase(
        "pixel_histogram",
        _files("expt"),
        "output.table",
        referenced="data_file",
        reads_sweep_images=True,
    ),
    ProgramCase(
        "intensity_linearity",
        _files("integrated.refl", "integrated.expt"),
        "output.table",
    ),
    ProgramCase(
        "find_ring_center",
        lambda world: [str(world["sacla"]), f"mask={world['sacla_mask']}"],
        "output.experiments",
    ),
    ProgramCase(
        "polar_transform",
        lambda world: [
            str(world["ring_center.expt"]),
            f"mask={world['sacla_mask']}",
            "nq=7",
            "nphi=36",
        ],
        "output.polar",
        referenced="sacla",
    ),
    ProgramCase(
        "angular_correlation",
        _files("polar.h5"),
        "output.correlation",
    ),
    ProgramCase(
        "frame_statistics",
        _files("series"),
        "output.statistics",
        referenced="series_data",
    ),
    ProgramCase(
        "simulate",
        lambda world: ["kind=eiger_series", "frames=20", "output.directory=sim"],
        "output.directory",
        primary=None,
    ),
]

WITH_INPUTS = [case for case in PROGRAMS if case.primary is not None]
WITH_REFERENCES = [case for case in PROGRAMS if case.referenced]
READING_SWEEP_IMAGES = [case for case in PROGRAMS if case.reads_sweep_images]
WITH_TABLES = [case for case in PROGRAMS if case.table]
