"""A simulated Eiger rotation sweep (NXmx) with Bragg peaks and diffuse scattering.

`simulate_rotation` writes, into one directory:

- ``rotation_master.h5`` + ``rotation_data_00000N.h5``: an NXmx Eiger sweep
  (bitshuffle/LZ4, uint16) that ``dials.import`` reads with DIALS's own
  format classes;
- ``truth.h5``: the ground truth (documented in `dials_diffuse.simulate.truth`);
- ``truth.expt``: the exact dxtbx models (with the crystal) used.

The forward model is in `dials_diffuse.simulate.scattering`: Bragg peaks of a
P 21 21 21 crystal (systematic absences h00, 0k0, 00l odd) with random
Wilson-distributed intensities, an analytic diffuse signal (halos + liquid
ring), a flat background, the physical corrections, Poisson noise, hot
pixels, a horizontal module gap and, if asked for, dead pixels and modules
of unequal efficiency.
"""

import logging
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from dials_diffuse.simulate import models
from dials_diffuse.simulate.eiger_files import DEAD_BIT, GAP_BIT, write_eiger_dataset
from dials_diffuse.simulate.output import dataset_directory
from dials_diffuse.simulate.scattering import (
    BraggModel,
    Corrections,
    DiffuseModel,
    IntensityLookup,
    correction_factors,
    rotation_frame_rates,
)
from dials_diffuse.simulate.truth import write_rotation_truth, write_truth_expt
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.parallel import ParallelMap

logger = logging.getLogger(__name__)

GAP_VALUE = 65535  # 2**16 - 1: what an EIGER writes in gap pixels (uint16)


@dataclass(frozen=True)
class RotationSetup:
    """Everything that defines a simulated rotation sweep.

    Lengths in mm, angles in degrees, rates in counts/s, wavelength in Å.
    """

    nx: int
    ny: int
    pixel_mm: float
    frames: int
    width_deg: float = 0.5
    start_deg: float = 0.0
    exposure_s: float = 0.2
    wavelength: float = 1.0
    distance_mm: float = 60.0
    beam_offset_mm: tuple = (0.31, -0.23)
    unit_cell: tuple = (34.0, 41.0, 52.0, 90.0, 90.0, 90.0)
    space_group: str = "P 21 21 21"
    mean_intensity: float = 2500.0
    wilson_b: float = 20.0
    background: float = 10.0
    hot_pixels: int = 5
    hot_rate: float = 50000.0
    gap_rows: int = 4
    saturation: int = 60000
    bragg: BraggModel = field(default_factory=BraggModel)
    diffuse: DiffuseModel = field(default_factory=DiffuseModel)
    corrections: Corrections = field(default_factory=Corrections)
    substep_deg: float = 0.1
    frames_per_file: int = 100
    #: Multiplies the scattered signal (Bragg, diffuse, background; not the
    #: hot pixels): a sweep's overall scale, e.g. beam intensity.
    scale: float = 1.0
    #: Seeds the crystal's orientation U instead of `seed` (None: `seed`):
    #: the same crystal (cell, intensities) mounted differently.
    orientation_seed: int = None
    #: False: counts are the expected counts rounded (noise-free twin of a
    #: sweep, for truth comparisons), not Poisson draws.
    poisson_noise: bool = True
    #: (rows, columns) of NXmx detector modules, one DIALS panel each
    #: (`module_tiles`); None: one panel.
    modules: tuple = None
    #: Pixels that record 0 whatever they receive, flagged dead (bit 1) in
    #: the NXmx pixel_mask; chosen at random outside the gap and hot pixels.
    dead_pixels: int = 0
    #: Relative efficiency of each module (`module_tiles` order), multiplying
    #: the scattered signal on its pixels (not the hot pixels): a per-panel
    #: detector response to recover. None: every module 1.
    module_efficiency: tuple = None

    @property
    def layout(self):
        half_x = self.nx * self.pixel_mm / 2 + self.beam_offset_mm[0]
        half_y = self.ny * self.pixel_mm / 2 + self.beam_offset_mm[1]
        return models.DetectorLayout(
            nx=self.nx,
            ny=self.ny,
            pixel_mm=self.pixel_mm,
            distance_mm=self.distance_mm,
            beam_px=(half_x / self.pixel_mm, half_y / self.pixel_mm),
            saturation=self.saturation,
        )

    @property
    def gap_slice(self):
        """Rows (slow) of the module gap: a band about 70% down the detector."""
        first = int(0.7 * self.ny)
        return slice(first, first + self.gap_rows)

    @property
    def module_tiles(self):
        """The detector modules (first row, first column, rows, columns), or None.

        With ``modules = (n_slow, n_fast)`` the frame is cut into that many
        modules, each a panel of its own in the NXmx file: the gap rows
        separate the modules above them from those below (they are left out
        of every module, a real gap between modules), the rows on each side
        and the columns are shared out evenly. The pixels stay where they are
        on the flat detector, so the truth is the single-panel one.
        """
        if self.modules is None:
            return None
        n_slow, n_fast = self.modules
        gap = self.gap_slice
        above = min(max(round(n_slow * gap.start / self.ny), 1), n_slow - 1)
        if n_slow == 1 or self.gap_rows == 0:
            bands = [np.linspace(0, self.ny, n_slow + 1)]
        else:
            bands = [
                np.linspace(0, gap.start, above + 1),
                np.linspace(gap.stop, self.ny, n_slow - above + 1),
            ]
        rows = [
            (int(band[i]), int(band[i + 1]) - int(band[i]))
            for band in bands
            for i in range(len(band) - 1)
        ]
        edges = np.linspace(0, self.nx, n_fast + 1).astype(int)
        return [
            (first_row, int(edges[j]), n_rows, int(edges[j + 1] - edges[j]))
            for first_row, n_rows in rows
            for j in range(n_fast)
        ]

    def efficiency_map(self):
        """(ny, nx) relative efficiency of every pixel (`module_efficiency`)."""
        efficiency = np.ones((self.ny, self.nx))
        if self.module_efficiency is None:
            return efficiency
        tiles = self.module_tiles
        if tiles is None or len(tiles) != len(self.module_efficiency):
            raise DataError(
                f"module_efficiency has {len(self.module_efficiency)} values for "
                f"{0 if tiles is None else len(tiles)} modules"
            )
        for (row, column, rows, columns), value in zip(tiles, self.module_efficiency):
            efficiency[row : row + rows, column : column + columns] = value
        return efficiency


# Same physical detector (38.4 mm square at 60 mm); the test size has
# 2x2-binned pixels and fewer frames, so the real DIALS chain runs in a minute.
SIZES = {
    "test": RotationSetup(nx=256, ny=256, pixel_mm=0.15, frames=30, gap_rows=4),
    "demo": RotationSetup(
        nx=512, ny=512, pixel_mm=0.075, frames=90, gap_rows=8, hot_pixels=10
    ),
}


def rotation_setup(size="test", **overrides):
    """The `RotationSetup` of a size preset, with fields replaced by `overrides`."""
    if size not in SIZES:
        raise DataError(f"unknown size '{size}': choose one of {', '.join(SIZES)}")
    return replace(SIZES[size], **overrides)


@dataclass
class RotationExperiment:
    """The models and fixed per-pixel arrays of a simulated sweep."""

    setup: RotationSetup
    beam: object
    detector: object
    goniometer: object
    scan: object
    crystal: object
    miller_indices: np.ndarray
    intensities: np.ndarray
    hot_pixels: np.ndarray
    hot_rates: np.ndarray
    gap_mask: np.ndarray
    dead_mask: np.ndarray
    corrections: dict
    s1: np.ndarray

    @cached_property
    def lookup(self):
        """The Bragg intensities as an `IntensityLookup` (built once)."""
        return IntensityLookup(self.miller_indices, self.intensities)


def build_experiment(setup, seed):
    """Models, Bragg intensities, hot pixels and per-pixel arrays for `setup`."""
    streams = np.random.SeedSequence(seed).spawn(4)
    beam = models.make_beam(setup.wavelength)
    detector = models.make_detector(setup.layout, setup.wavelength)
    goniometer = models.make_goniometer()
    scan = models.make_scan(
        setup.frames, setup.start_deg, setup.width_deg, setup.exposure_s
    )
    orientation = (
        int(streams[0].generate_state(1)[0])
        if setup.orientation_seed is None
        else int(setup.orientation_seed)
    )
    crystal = models.make_crystal(setup.unit_cell, setup.space_group, orientation)
    panel = detector[0]
    s1 = models.pixel_s1(panel, beam)
    s0 = np.array(beam.get_s0())
    d_min = 1.0 / np.linalg.norm(s1 - s0, axis=-1).max()
    indices, intensities = wilson_intensities(
        crystal,
        0.97 * d_min,
        setup.mean_intensity,
        setup.wilson_b,
        np.random.default_rng(streams[1]),
    )
    rng = np.random.default_rng(streams[2])
    gap_mask = np.zeros((setup.ny, setup.nx), dtype=bool)
    gap_mask[setup.gap_slice] = True
    candidates = np.flatnonzero(~gap_mask.ravel())
    chosen = rng.choice(candidates, size=setup.hot_pixels, replace=False)
    hot_pixels = np.stack(np.unravel_index(np.sort(chosen), gap_mask.shape), axis=1)
    hot_rates = setup.hot_rate * rng.uniform(0.5, 1.0, size=setup.hot_pixels)
    dead_mask = np.zeros_like(gap_mask)
    if setup.dead_pixels:
        taken = gap_mask.copy()
        taken[hot_pixels[:, 0], hot_pixels[:, 1]] = True
        dead = np.random.default_rng(streams[3]).choice(
            np.flatnonzero(~taken.ravel()), size=setup.dead_pixels, replace=False
        )
        dead_mask.ravel()[dead] = True
    corrections = correction_factors(panel, beam, setup.corrections)
    if setup.module_efficiency is not None:
        corrections["module_efficiency"] = setup.efficiency_map()
        corrections["total"] = corrections["total"] * corrections["module_efficiency"]
    return RotationExperiment(
        setup=setup,
        beam=beam,
        detector=detector,
        goniometer=goniometer,
        scan=scan,
        crystal=crystal,
        miller_indices=indices,
        intensities=intensities,
        hot_pixels=hot_pixels,
        hot_rates=hot_rates,
        gap_mask=gap_mask,
        dead_mask=dead_mask,
        corrections=corrections,
        s1=s1,
    )


def wilson_intensities(crystal, d_min, mean_intensity, b_factor, rng):
    """Random Bragg intensities for every reflection to `d_min` (Å).

    One intensity per symmetry-unique reflection, drawn from the acentric
    Wilson distribution (exponential) with mean
    ``mean_intensity * exp(-B |s|² / 2)`` (|s| = 1/d, Å⁻¹), then copied to all
    symmetry mates and Friedel mates; systematic absences get none.

    Returns
    -------
    indices : ndarray of int (n, 3)
        Every present reflection in P1 (all mates).
    intensities : ndarray (n,)
        Peak rates (counts/s).
    """
    from cctbx import crystal as cctbx_crystal
    from cctbx import miller
    from scitbx.array_family import flex

    symmetry = cctbx_crystal.symmetry(
        unit_cell=crystal.get_unit_cell(),
        space_group=crystal.get_space_group(),
    )
    unique = miller.build_set(symmetry, anomalous_flag=False, d_min=d_min)
    unique = unique.remove_systematic_absences()
    d = unique.d_spacings().data().as_numpy_array()
    mean = mean_intensity * np.exp(-0.5 * b_factor / d**2)
    values = rng.exponential(mean)
    array = miller.array(unique, data=flex.double(values))
    p1 = array.expand_to_p1().generate_bijvoet_mates()
    indices = np.array(p1.indices(), dtype=np.int64).reshape(-1, 3)
    return indices, p1.data().as_numpy_array()


def expected_frame(experiment, frame):
    """Expected counts on 0-based `frame`, split into components (ny, nx).

    Returns a dict of the corrected ``bragg``, ``diffuse`` and ``background``
    counts, ``hot`` counts (hot pixels only, uncorrected) and their ``total``.
    """
    setup = experiment.setup
    phi0 = setup.start_deg + frame * setup.width_deg
    substeps = max(1, math.ceil(setup.width_deg / setup.substep_deg - 1e-9))
    rates = rotation_frame_rates(
        experiment.s1,
        np.array(experiment.beam.get_s0()),
        experiment.crystal,
        experiment.goniometer,
        phi0,
        setup.width_deg,
        substeps,
        setup.bragg,
        experiment.lookup,
        setup.diffuse,
        setup.background,
    )
    scale = setup.scale * setup.exposure_s * experiment.corrections["total"]
    counts = {name: scale * rate for name, rate in rates.items()}
    hot = np.zeros_like(scale)
    hot[experiment.hot_pixels[:, 0], experiment.hot_pixels[:, 1]] = (
        experiment.hot_rates * setup.exposure_s
    )
    counts["hot"] = hot
    counts["total"] = counts["bragg"] + counts["diffuse"] + counts["background"] + hot
    return counts


def measured_frame(experiment, frame, expected, seed, response=None, sweep=0):
    """Poisson counts for `expected` (ny, nx), overloads marked, gap filled.

    The noise of each frame comes from its own stream (seed, sweep, frame), so
    frames can be made in any order or in parallel with identical results.
    `response`, if given, maps true counts to recorded values (a detector
    non-linearity); counts at or above the detector's saturation are then
    recorded as saturation + 1 (`models.record_overloads`).
    """
    if experiment.setup.poisson_noise:
        rng = np.random.default_rng([seed, 1, sweep, frame])
        counts = rng.poisson(expected)
    else:
        counts = np.rint(expected).astype(np.int64)
    if response is not None:
        counts = response(counts)
    saturation = int(experiment.detector[0].get_trusted_range()[1])
    counts = models.record_overloads(counts, saturation)
    counts[experiment.gap_mask] = GAP_VALUE
    counts[experiment.dead_mask] = 0
    return counts.astype(np.uint16)


def simulate_rotation(directory, size="test", seed=0, sweep=0, **overrides):
    """Simulate an NXmx Eiger rotation sweep with known truth into `directory`.

    Parameters
    ----------
    directory : str or Path
        Created; must not exist or be empty.
    size : {"test", "demo"}
        Preset: "test" 256 x 256 px (0.15 mm), 30 frames of 0.5°; "demo"
        512 x 512 px (0.075 mm), 90 frames of 0.5°.
    seed : int
        Seeds everything (orientation, intensities, hot pixels, noise).
    sweep : int
        Selects an independent noise stream: sweeps of one crystal (the same
        `seed`, e.g. other ``start_deg``) with independent noise.
    **overrides
        Fields of `RotationSetup` to change (e.g. ``frames=10``,
        ``start_deg=90``, ``scale=1.3``, ``orientation_seed=7``, or
        ``modules=(4, 2)`` for a detector of 4 x 2 modules, one panel each,
        ``dead_pixels=20``, ``module_efficiency=(1, 1, 0.9, 1, 1, 1, 1, 1)``).

    Returns
    -------
    dict
        Paths: ``master``, ``data`` (list), ``truth``, ``truth_expt``,
        ``directory``.
    """
    setup = rotation_setup(size, **overrides)
    experiment = build_experiment(setup, seed)
    directory = Path(directory)
    with dataset_directory(directory) as work:
        paths = write_rotation_files(experiment, work, seed, sweep=sweep)
    paths = {key: _moved(value, work, directory) for key, value in paths.items()}
    paths["truth_expt"] = write_truth_expt(
        experiment, paths["master"], directory / "truth.expt"
    )
    paths["directory"] = directory
    return paths


def _moved(value, old, new):
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    return new / Path(value).relative_to(old)


def write_rotation_files(
    experiment,
    directory,
    seed,
    prefix="rotation",
    transmission=None,
    response=None,
    sweep=0,
    desc="rotation",
    nproc=None,
):
    """Write the image files and truth.h5 of `experiment` into `directory`.

    `transmission` (0..1) scales the scattered signal (not the hot pixels);
    with a transmission (a sweep of a series) truth.h5 has no diffuse grid;
    `response` maps true to recorded counts (see `measured_frame`); `sweep`
    selects an independent noise stream for each sweep of a series; `nproc`
    threads make frames in parallel (None: every core).
    Returns a dict with ``master``, ``data`` and ``truth`` paths.
    """
    setup = experiment.setup
    components = ("bragg", "diffuse", "background", "hot", "total")
    sums = {name: np.zeros(setup.frames) for name in components}
    valid = ~experiment.gap_mask & ~experiment.dead_mask
    scale = 1.0 if transmission is None else transmission

    def make_frame(frame):
        expected = expected_frame(experiment, frame)
        for name in ("bragg", "diffuse", "background"):
            expected[name] = expected[name] * scale
        expected["total"] = (
            expected["bragg"]
            + expected["diffuse"]
            + expected["background"]
            + expected["hot"]
        )
        for name in components:
            sums[name][frame] = expected[name][valid].sum()
        return measured_frame(
            experiment, frame, expected["total"], seed, response, sweep
        )

    def frames():
        # Frames are independent (each has its own noise stream): make them
        # in parallel threads, in order, a few at a time.
        with ParallelMap(nproc=nproc) as pmap:
            yield from pmap(make_frame, range(setup.frames))

    pixel_mask = np.zeros((setup.ny, setup.nx), dtype=np.uint32)
    pixel_mask[experiment.gap_mask] = GAP_BIT
    pixel_mask[experiment.dead_mask] = DEAD_BIT
    master = write_eiger_dataset(
        directory,
        prefix,
        frames(),
        setup.frames,
        (setup.ny, setup.nx),
        per_file=setup.frames_per_file,
        desc=f"simulating {desc}",
        beam=experiment.beam,
        detector=experiment.detector,
        pixel_mask=pixel_mask,
        exposure_s=setup.exposure_s,
        scan=experiment.scan,
        goniometer=experiment.goniometer,
        geometry="nxmx",
        transmission=transmission,
        modules=setup.module_tiles,
    )
    data = sorted(directory.glob(f"{prefix}_data_*.h5"))
    truth = write_rotation_truth(
        experiment,
        directory / "truth.h5",
        seed,
        sums,
        transmission,
        with_grid=transmission is None,
    )
    return {"master": master, "data": data, "truth": truth}
