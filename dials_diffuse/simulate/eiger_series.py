"""A long series of small Eiger frames with known frame-sum statistics.

A diffuse scatterer (no crystal, no rotation) seen by a small EIGER: every
frame ``i`` (0-based) expects ``f_i * image(x, y)`` counts in each pixel, with

- ``image``: a smooth pattern (a Gaussian central lobe on a flat level);
- ``f_i = (1 + drift * i) * (1 + cv * z_i)``: a linear drift (fraction per
  frame) times a beam-intensity fluctuation with coefficient of variation
  ``cv`` (``z_i`` standard normal, clipped at ±4);

then Poisson noise. Module gap pixels (two vertical bands) hold 65535 and are
flagged in ``pixel_mask`` (bit 0); a few saturated pixels (a bright spot
far above the count-rate cutoff) also read 65535, as an EIGER writes them,
but are not in the mask.

The files are DECTRIS style: ``series_master.h5`` (no NXmx ``definition``;
``detectorSpecific``), ``series_data_00000N.h5`` with ``image_nr_low/high``,
bitshuffle/LZ4, linked as ``/entry/data/data_00000N``.

``truth.h5`` (root attributes ``kind = "eiger_series"``, ``seed``, ``cv``,
``drift_per_frame``, ``mean_frame_sum``, ``frame_time_s``,
``countrate_cutoff``, ``expected_cv_percent``):

``/frames/expected_sum`` (frames,)
    Expected sum over the valid pixels (neither gap nor saturated) of each
    frame: ``f_i * sum(image)`` (counts), before Poisson noise.
``/frames/factor`` (frames,)
    ``f_i``; ``/frames/fluctuation`` the ``1 + cv z_i`` part alone.
``/image`` (ny, nx)
    The expected counts per pixel of a frame with ``f = 1``.
``/mask/gap``, ``/mask/saturated`` (ny, nx) bool.

``expected_cv_percent`` is the CV (%) of the detrended frame sums:
``100 sqrt(cv² + 1 / mean_frame_sum)`` (beam fluctuation and Poisson noise).
"""

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from dials_diffuse.simulate import models
from dials_diffuse.simulate.eiger_files import GAP_BIT, write_eiger_dataset
from dials_diffuse.simulate.output import dataset_directory
from dials_diffuse.util.errors import DataError

OVERFLOW_VALUE = 65535  # 2**16 - 1: gap and saturated pixels (uint16 EIGER data)


@dataclass(frozen=True)
class SeriesSetup:
    """A frame series; counts per pixel per frame, times in seconds."""

    nx: int
    ny: int
    frames: int
    frames_per_file: int = 100
    pixel_mm: float = 0.075
    distance_mm: float = 200.0
    wavelength: float = 1.0
    frame_time_s: float = 0.01
    lobe_counts: float = 20.0
    lobe_sigma_px: float = 12.0
    flat_counts: float = 2.0
    cv: float = 0.02
    drift_per_frame: float = -2.0e-4
    gap_columns: int = 4
    saturated_pixels: int = 6
    countrate_cutoff: int = 50000


SIZES = {
    "test": SeriesSetup(nx=64, ny=48, frames=300),
    # The size of an EIGER2 500K module: dxtbx's own Eiger class reads it too.
    "demo": SeriesSetup(
        nx=1030,
        ny=514,
        frames=400,
        lobe_counts=5.0,
        lobe_sigma_px=120.0,
        flat_counts=0.5,
        drift_per_frame=-5.0e-5,
    ),
}


def series_setup(size="test", **overrides):
    """The `SeriesSetup` of a size preset, with fields replaced by `overrides`."""
    if size not in SIZES:
        raise DataError(f"unknown size '{size}': choose one of {', '.join(SIZES)}")
    return replace(SIZES[size], **overrides)


def series_image(setup):
    """Expected counts per pixel on a frame with factor 1 (ny, nx)."""
    y, x = np.mgrid[0 : setup.ny, 0 : setup.nx] + 0.5
    cx, cy = 0.45 * setup.nx, 0.55 * setup.ny
    r2 = (x - cx) ** 2 + (y - cy) ** 2
    return setup.flat_counts + setup.lobe_counts * np.exp(
        -0.5 * r2 / setup.lobe_sigma_px**2
    )


def series_masks(setup, rng):
    """Gap (two vertical bands of columns) and saturated pixels (a small spot)."""
    gap = np.zeros((setup.ny, setup.nx), dtype=bool)
    for fraction in (1 / 3, 2 / 3):
        first = int(fraction * setup.nx)
        gap[:, first : first + setup.gap_columns] = True
    saturated = np.zeros_like(gap)
    candidates = np.flatnonzero(~gap.ravel())
    chosen = rng.choice(candidates, size=setup.saturated_pixels, replace=False)
    saturated.ravel()[chosen] = True
    return gap, saturated


def frame_factors(setup, rng):
    """``(f_i, fluctuation_i)``: drift times fluctuation, and the fluctuation."""
    z = np.clip(rng.standard_normal(setup.frames), -4.0, 4.0)
    fluctuation = 1.0 + setup.cv * z
    drift = 1.0 + setup.drift_per_frame * np.arange(setup.frames)
    if not (setup.cv < 0.25 and drift.min() > 0):
        raise DataError(
            f"cv={setup.cv:g} with drift={setup.drift_per_frame:g} over "
            f"{setup.frames} frames makes the beam intensity negative: keep cv "
            "below 0.25 and 1 + drift x frames above 0"
        )
    return drift * fluctuation, fluctuation


def simulate_eiger_series(directory, size="test", seed=0, **overrides):
    """Simulate a DECTRIS-style Eiger frame series with known statistics.

    Parameters
    ----------
    directory : str or Path
        Created; must not exist or be empty.
    size : {"test", "demo"}
        "test": 300 frames of 64 x 48 px (3 data files); "demo": 400 frames
        of 1030 x 514 px (an EIGER2 500K; 4 data files), which dxtbx's own
        ``FormatHDF5EigerNearlyNexus`` also reads (it knows only real EIGER
        sizes).
    seed : int
        Seeds the fluctuations, saturated pixels and noise.
    **overrides
        Fields of `SeriesSetup` to change (e.g. ``frames=1000, cv=0.05``).

    Returns
    -------
    dict
        ``master``, ``data`` (list), ``truth``, ``directory`` paths.
    """
    setup = series_setup(size, **overrides)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    gap, saturated = series_masks(setup, rng)
    factors, fluctuation = frame_factors(setup, rng)
    image = series_image(setup)
    valid = ~(gap | saturated)

    def frames():
        for i, factor in enumerate(factors):
            frame_rng = np.random.default_rng([seed, 2, i])
            counts = frame_rng.poisson(factor * image)
            counts[gap | saturated] = OVERFLOW_VALUE
            yield counts.astype(np.uint16)

    layout = models.DetectorLayout(
        nx=setup.nx,
        ny=setup.ny,
        pixel_mm=setup.pixel_mm,
        distance_mm=setup.distance_mm,
        beam_px=(0.45 * setup.nx, 0.55 * setup.ny),
        saturation=setup.countrate_cutoff,
    )
    beam = models.make_beam(setup.wavelength)
    detector = models.make_detector(layout, setup.wavelength)
    pixel_mask = np.where(gap, GAP_BIT, 0).astype(np.uint32)
    directory = Path(directory)
    with dataset_directory(directory) as work:
        master = write_eiger_dataset(
            work,
            "series",
            frames(),
            setup.frames,
            (setup.ny, setup.nx),
            per_file=setup.frames_per_file,
            desc="simulating eiger series",
            beam=beam,
            detector=detector,
            pixel_mask=pixel_mask,
            exposure_s=setup.frame_time_s,
            geometry="dectris",
        )
        mean_sum = float(image[valid].sum())
        with h5py.File(work / "truth.h5", "w") as handle:
            attrs = {
                "kind": "eiger_series",
                "seed": seed,
                "description": __doc__,
                "cv": setup.cv,
                "drift_per_frame": setup.drift_per_frame,
                "mean_frame_sum": mean_sum,
                "frame_time_s": setup.frame_time_s,
                "countrate_cutoff": setup.countrate_cutoff,
                "overflow_value": OVERFLOW_VALUE,
                "expected_cv_percent": 100.0 * np.sqrt(setup.cv**2 + 1.0 / mean_sum),
                "setup": str(asdict(setup)),
            }
            handle.attrs.update(attrs)
            handle.create_dataset("frames/expected_sum", data=factors * mean_sum)
            handle.create_dataset("frames/factor", data=factors)
            handle.create_dataset("frames/fluctuation", data=fluctuation)
            handle.create_dataset("image", data=image)
            handle.create_dataset("mask/gap", data=gap)
            handle.create_dataset("mask/saturated", data=saturated)
        names = sorted(p.name for p in work.glob("series_data_*.h5"))
        master_name = master.name
    return {
        "master": directory / master_name,
        "data": [directory / name for name in names],
        "truth": directory / "truth.h5",
        "directory": directory,
    }
