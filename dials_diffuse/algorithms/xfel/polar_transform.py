"""The polar transform step: still shots resampled onto a (q, phi) grid.

`do_polar_transform(shots, params, open_output)` chooses the grid (defaults
from the detector's extent, any number of panels), builds the sparse map
once from the real geometry, resamples every selected shot block by block
(in parallel through a `ParallelMap`; the C++ kernel releases the GIL),
flags dark shots and hands each block to the output as it comes, so memory
does not grow with the number of shots. `phil_scope` holds the step's
parameters; the program adds its inputs (mask, geometry) and outputs.
"""

import copy
import dataclasses
import logging
import time

import numpy as np
from libtbx.phil import parse

from dials_diffuse.algorithms.xfel.polar import (
    METHODS,
    normalise_rows,
    panel_edge_lab,
    q_at_radius,
    q_polar_map,
    two_theta_of_q,
)
from dials_diffuse.io.polar_files import compress_polar_images
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.progress import progress

logger = logging.getLogger(__name__)

phil_str = f"""
q_range = None
  .type = floats(size=2, value_min=0)
  .help = "Smallest and largest |q| = 4 pi sin(theta) / lambda, in Å⁻¹."
          "Default (one panel): from 5% to 95% of the largest circle around"
          "the beam centre that stays on the detector; (several panels): the"
          "q range of the detector's pixels."
nq = None
  .type = int(value_min=1)
  .help = "Number of q rows, evenly spaced over q_range. Default: about one"
          "per pixel of radius."
nphi = None
  .type = int(value_min=4)
  .help = "Number of azimuth samples over 360 degrees. Default: about one"
          "pixel apart at the largest q (2 pi r_max), rounded to a multiple of 4."
interpolation = {" ".join(("*" if m == "bilinear" else "") + m for m in METHODS)}
  .type = choice
  .help = "bilinear: the 4 pixels around each sample, weighted; nearest: the"
          "pixel that contains it. A sample is masked when any pixel it uses is."
oversample = 1
  .type = int(value_min=1, value_max=16, allow_none=False)
  .help = "Average oversample x oversample points over each polar cell (one"
          "q step by 360/nphi degrees) instead of taking the value at its"
          "centre: an area average, like pixel splitting, for coarse grids."
normalise = False
  .type = bool
  .help = "Divide each q row of each shot by its mean over valid phi samples"
          "(removes shot-to-shot intensity changes before differences)."
shots = None
  .type = ints(value_min=0)
  .help = "Only these shots (0-based, in acquisition order). Default: all."
tags = None
  .type = ints
  .help = "Only the shots with these SACLA tags. Default: all."
dark {{
  first = 0
    .type = int(value_min=0, allow_none=False)
    .help = "The first N shots are dark (e.g. shutter closed at the start of"
            "the run), besides shots the file flags as dark."
  detect = True
    .type = bool
    .help = "Also flag as dark the shots whose mean valid-pixel value is below"
            "dark.fraction times the 90th percentile of all shots' means."
  fraction = 0.5
    .type = float(value_min=0, value_max=1, allow_none=False)
    .help = "Threshold of the dark detection, as a fraction of a bright shot's"
            "mean."
}}
block_size = 8
  .type = int(value_min=1, allow_none=False)
  .help = "Shots per unit of parallel work."
"""

phil_scope = parse(phil_str)


@dataclasses.dataclass
class PolarGrid:
    """The polar grid and map of a transform.

    Attributes
    ----------
    beam : dxtbx Beam
        The beam of the map (the shots' median wavelength).
    q : ndarray
        |q| of each row, Å⁻¹.
    nphi : int
        Azimuth samples over 360 degrees (sample j at 360 j / nphi degrees).
    polar_map : PolarMap
    geometry : dict
        What polar.h5 records of the geometry.
    """

    beam: object
    q: np.ndarray
    nphi: int
    polar_map: object
    geometry: dict

    @property
    def coverage(self):
        """Fraction of the polar samples that fall on the detector."""
        return float(self.polar_map.coverage.mean())


@dataclasses.dataclass
class PolarTransformResult:
    """What `do_polar_transform` did.

    Attributes
    ----------
    grid : PolarGrid
    chosen : list of int
        0-based indices of the resampled shots.
    dark : ndarray of bool
        Dark flag of each resampled shot.
    means : ndarray
        Mean valid raw pixel value of each resampled shot.
    seconds : dict
        Wall time of building the map ("map") and resampling ("resample").
    """

    grid: PolarGrid
    chosen: list
    dark: np.ndarray
    means: np.ndarray
    seconds: dict


def do_polar_transform(shots, params, open_output, pmap=None):
    """Resample the selected shots onto a (q, phi) grid, block by block.

    Parameters
    ----------
    shots : dials_diffuse.algorithms.xfel.shots.Shots
    params : PHIL extract of `phil_scope`
    open_output : callable
        ``open_output(grid, chosen)`` returns a context manager whose value
        has ``write(position, polar, valid, compressed)`` (each block, in
        order) and ``finish(dark, means, wavelengths)`` (e.g. a
        `PolarFileWriter` for polar.h5).
    pmap : ParallelMap, optional
        Runs the blocks in parallel; default one thread.

    Returns
    -------
    PolarTransformResult
    """
    chosen = shots.select(params.shots, params.tags, include_dark=True)
    start = time.perf_counter()
    grid = polar_grid(shots, chosen, params)
    seconds = {"map": time.perf_counter() - start}
    transform = ShotTransform(grid.polar_map, params.normalise)
    means = np.zeros(len(chosen))
    start = time.perf_counter()
    block_size = params.block_size
    blocks = shots.blocks(chosen, block_size)
    work = map(transform, blocks) if pmap is None else pmap(transform, blocks)
    with open_output(grid, chosen) as output:
        position = 0
        for indices, polar, polar_valid, compressed, block_means in progress(
            work,
            total=-(-len(chosen) // block_size),
            desc="Polar transform",
            unit="block",
        ):
            output.write(position, polar, polar_valid, compressed)
            means[position : position + len(indices)] = block_means
            position += len(indices)
        dark = dark_shots(shots.dark[chosen], means, params.dark)
        output.finish(dark, means, shots.wavelengths[chosen])
    seconds["resample"] = time.perf_counter() - start
    return PolarTransformResult(grid, chosen, dark, means, seconds)


def polar_grid(shots, chosen, params):
    """The grid (defaults filled in) and its map for the chosen shots."""
    beam = map_beam(shots, chosen)
    q, nphi = default_q_grid(
        shots.detector, beam, params.q_range, params.nq, params.nphi
    )
    polar_map = q_polar_map(
        shots.detector, beam, q, nphi, params.interpolation, params.oversample
    )
    coverage = float(polar_map.coverage.mean())
    logger.info(
        "Polar grid: %d q rows %.4f-%.4f Å⁻¹ x %d phi samples (%s); %.1f%% of "
        "samples on the detector",
        len(q),
        q[0],
        q[-1],
        nphi,
        params.interpolation,
        100 * coverage,
    )
    if coverage == 0:
        raise DataError(
            f"q_range={q[0]:.4g},{q[-1]:.4g} Å⁻¹ falls entirely off the detector"
        )
    geometry = geometry_record(shots.detector, beam, params)
    return PolarGrid(beam, q, nphi, polar_map, geometry)


def _q_of_lab(lab, beam):
    """|q| (Å⁻¹) of scattering towards lab points (n, 3), mm."""
    lab = np.asarray(lab, dtype=np.float64)
    cos2t = lab @ np.array(beam.get_unit_s0()) / np.linalg.norm(lab, axis=-1)
    two_theta = np.arccos(np.clip(cos2t, -1.0, 1.0))
    return 4.0 * np.pi * np.sin(two_theta / 2.0) / beam.get_wavelength()


def _q_per_pixel(detector, beam):
    """Median over panels of the change of |q| (Å⁻¹) across one pixel at
    the panel's centre, radially: the natural q step of the detector."""
    steps = []
    s0 = beam.get_s0()
    for panel in detector:
        n_fast, n_slow = panel.get_image_size()
        centre = np.array([n_fast / 2.0, n_slow / 2.0])
        lab = np.array(panel.get_pixel_lab_coord(tuple(centre)))
        # One pixel further from the beam, in the panel plane.
        try:
            foot = np.array(panel.get_beam_centre_px(s0))
        except RuntimeError:  # beam parallel to the panel
            foot = centre - (1.0, 0.0)
        direction = centre - foot
        norm = np.linalg.norm(direction)
        direction = direction / norm if norm > 0 else np.array([1.0, 0.0])
        further = np.array(panel.get_pixel_lab_coord(tuple(centre + direction)))
        steps.append(abs(float(np.diff(_q_of_lab([lab, further], beam))[0])))
    return float(np.median(steps))


def default_q_grid(detector, beam, q_range=None, nq=None, nphi=None):
    """q rows (Å⁻¹) and nphi, filling in defaults from the detector extent.

    One panel: q from 5% to 95% of the largest circle around the beam centre
    that stays on the panel. Several panels: the q range of the detector's
    pixels (from the panel edges). nq: about one row per pixel of radius;
    nphi: about one pixel apart at the largest q, a multiple of 4.
    """
    if q_range is None:
        if len(detector) == 1:
            panel = detector[0]
            centre = np.array(panel.get_beam_centre_px(beam.get_s0()))
            size = np.array(panel.get_image_size(), dtype=float)
            r_max = float(
                min(centre[0], centre[1], size[0] - centre[0], size[1] - centre[1])
            )
            if r_max <= 2:
                raise DataError(
                    "the beam centre is not on the detector: give q_range= explicitly"
                )
            q_range = (
                q_at_radius(detector, beam, 0.05 * r_max),
                q_at_radius(detector, beam, 0.95 * r_max),
            )
        else:
            q_edges = np.concatenate(
                [_q_of_lab(panel_edge_lab(p), beam) for p in detector]
            )
            q_range = (max(float(q_edges.min()), 1e-6), float(q_edges.max()))
    q_min, q_max = q_range
    if not q_max > q_min:
        raise DataError(f"q_range={q_min},{q_max}: the second value must be larger")
    two_theta_of_q([q_min, q_max], beam.get_wavelength())  # in range, or DataError
    pixel_q = _q_per_pixel(detector, beam)
    if nq is None:
        nq = max(2, int(round((q_max - q_min) / pixel_q)))
    if nphi is None:
        r_q_max = q_max / pixel_q
        nphi = max(8, int(4 * round(2 * np.pi * r_q_max / 4)))
    return np.linspace(q_min, q_max, nq), int(nphi)


def map_beam(shots, chosen):
    """The beam of the polar map: the shots' beam at their median wavelength.

    Where per-shot photon energies differ (SASE jitter), one map serves all
    shots; the spread is logged (q scales with 1/λ).
    """
    wavelengths = shots.wavelengths[chosen]
    beam = copy.deepcopy(shots.beam)
    beam.set_wavelength(float(np.median(wavelengths)))
    spread = (wavelengths.max() - wavelengths.min()) / np.median(wavelengths)
    if spread > 0:
        logger.info(
            "Wavelength %.5f Å (median of the shots; they span %.3f%%)",
            beam.get_wavelength(),
            100 * spread,
        )
    return beam


def dark_shots(flagged, means, dark_params):
    """Dark shots: flagged in the file, the first `dark.first`, or (with
    `dark.detect`) a mean valid-pixel value below `dark.fraction` times the
    90th percentile of the shots' means (no X-rays reached the detector)."""
    dark = np.array(flagged, dtype=bool)
    dark[: dark_params.first] = True
    if dark_params.detect and len(means) > 1:
        reference = np.percentile(means, 90)
        if reference > 0:
            detected = means < dark_params.fraction * reference
            if np.any(detected & ~dark):
                logger.info(
                    "Detected %d dark shot(s) by their mean intensity",
                    int(np.sum(detected & ~dark)),
                )
            dark |= detected
    return dark


class ShotTransform:
    """Resample a block of shots, normalise rows, compress, and take each
    shot's mean valid-pixel value (for dark detection); picklable for Dask."""

    def __init__(self, polar_map, normalise):
        self.polar_map = polar_map
        self.normalise = normalise

    def __call__(self, block):
        indices, data, valid = block
        polar, polar_valid = self.polar_map.apply(data, valid)
        counts = valid.sum(axis=1)
        sums = np.where(valid, data, 0).sum(axis=1, dtype=np.float64)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        if self.normalise:
            normalise_rows(polar, polar_valid)
        return indices, polar, polar_valid, compress_polar_images(polar), means


def geometry_record(detector, beam, params):
    """The geometry polar.h5 records (panel 0 for the beam centre and distance)."""
    panel = detector[0]
    return {
        "beam_centre_px": np.array(panel.get_beam_centre_px(beam.get_s0())),
        "wavelength": beam.get_wavelength(),
        "distance": panel.get_distance(),
        "pixel_size": np.array(panel.get_pixel_size()),
        "method": params.interpolation,
        "oversample": params.oversample,
    }
