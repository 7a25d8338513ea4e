"""dials.diffuse.polar_transform: still shots resampled onto a (q, phi) grid."""

import copy
import logging
import sys

import numpy as np

from dials_diffuse.algorithms.xfel.polar import (
    normalise_rows,
    q_at_radius,
    q_polar_map,
)
from dials_diffuse.algorithms.xfel.shots import geometry_phil, shots_from_inputs
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.io.polar_files import (
    PolarFileWriter,
    compress_polar_images,
    open_polar_file,
)
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program
from dials_diffuse.util.progress import progress

logger = logging.getLogger("dials_diffuse.command_line.polar_transform")

help_message = """
Resample still shots onto a polar grid of |q| (Å⁻¹) and azimuth phi, for
angular correlations. The map from detector pixels to (q, phi) is computed
once from the real geometry (the detector and beam models: distance,
wavelength, pixel size, beam centre, tilt) and applied to every shot in
parallel by a C++ kernel. Masked pixels (the DIALS mask of the images, a
mask= file, gaps, non-finite values) carry over to a per-shot polar mask.

Input: SACLA DataConvert HDF5 files, any still images dxtbx reads, or an
experiment list (e.g. ring_center.expt from dials.diffuse.find_ring_center,
which carries the fitted beam centre). Shots are read and written block by
block: memory does not grow with the number of shots.

phi is the azimuth around the beam from the lab x axis towards lab y (for
the usual detector: 0 along +fast, 90 degrees along -slow); sample j lies at
360 j / nphi degrees.

Output polar.h5 (NeXus): /entry/polar/data (shots, q, phi), mask (1 =
valid), q (Å⁻¹), phi (degrees), tag and dark flag of each shot, and the
geometry used. polar.png shows the mean polar image of the shots.

Examples:

  dials.diffuse.polar_transform run_178884.h5 q_range=2.64,2.71 nphi=360

  dials.diffuse.polar_transform ring_center.expt mask=mask.npy normalise=True

  dials.diffuse.polar_transform run_178884.h5 geometry.distance=53 \\
      geometry.beam_centre=1201.5,1210.2 q_range=2.64,2.71

  dials.diffuse.polar_transform imported.expt q_range=0.3,0.6 nq=50 \\
      interpolation=nearest nproc=4
"""

phil_scope = (
    """
q_range = None
  .type = floats(size=2, value_min=0)
  .help = "Smallest and largest |q| = 4 pi sin(theta) / lambda, in Å⁻¹."
          "Default: from 5% to 95% of the largest circle around the beam"
          "centre that stays on the detector."
nq = None
  .type = int(value_min=1)
  .help = "Number of q rows, evenly spaced over q_range. Default: about one"
          "per pixel of radius."
nphi = None
  .type = int(value_min=4)
  .help = "Number of azimuth samples over 360 degrees. Default: about one"
          "pixel apart at the largest q (2 pi r_max), rounded to a multiple of 4."
interpolation = *bilinear nearest
  .type = choice
  .help = "bilinear: the 4 pixels around each sample, weighted; nearest: the"
          "pixel that contains it. A sample is masked when any pixel it uses is."
oversample = 1
  .type = int(value_min=1, value_max=16)
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
mask = None
  .type = path
  .help = "Extra mask for every shot: a .npy array (non-zero = valid, as the"
          "SACLA mask.npy files) or a DIALS mask pickle (dials.generate_mask)."
dark {
  first = 0
    .type = int(value_min=0)
    .help = "The first N shots are dark (e.g. shutter closed at the start of"
            "the run), besides shots the file flags as dark."
  detect = True
    .type = bool
    .help = "Also flag as dark the shots whose mean valid-pixel value is below"
            "dark.fraction times the 90th percentile of all shots' means."
  fraction = 0.5
    .type = float(value_min=0, value_max=1)
    .help = "Threshold of the dark detection, as a fraction of a bright shot's"
            "mean."
}
block_size = 8
  .type = int(value_min=1)
  .help = "Shots per unit of parallel work."
output {
  polar = polar.h5
    .type = path
    .help = "The polar images, masks, q, tags and geometry (NeXus/HDF5)."
  plot = polar.png
    .type = path
    .help = "Mean polar image of the non-dark shots. None: no plot."
}
"""
    + geometry_phil
)


def default_q_grid(detector, beam, q_range=None, nq=None, nphi=None):
    """q rows (Å⁻¹) and nphi, filling in defaults from the detector extent."""
    panel = detector[0]
    centre = np.array(panel.get_beam_centre_px(beam.get_s0()))
    size = np.array(panel.get_image_size(), dtype=float)
    r_max = float(min(centre[0], centre[1], size[0] - centre[0], size[1] - centre[1]))
    if r_max <= 2 and q_range is None:
        raise UserError(
            "the beam centre is not on the detector: give q_range= explicitly"
        )
    if q_range is None:
        q_range = (
            q_at_radius(detector, beam, 0.05 * r_max),
            q_at_radius(detector, beam, 0.95 * r_max),
        )
    q_min, q_max = q_range
    if not q_max > q_min:
        raise UserError(f"q_range={q_min},{q_max}: the second value must be larger")
    pixel_q = q_at_radius(detector, beam, max(r_max, 2.0)) / max(r_max, 2.0)
    if nq is None:
        nq = max(2, int(round((q_max - q_min) / pixel_q)))
    if nphi is None:
        r_q_max = q_max / pixel_q
        nphi = max(8, int(4 * round(2 * np.pi * r_q_max / 4)))
    return np.linspace(q_min, q_max, nq), int(nphi)


def main(params, inputs, run):
    shots, _ = shots_from_inputs(inputs, params.mask, params.geometry)
    try:
        chosen = shots.select(params.shots, params.tags, include_dark=True)
        beam = map_beam(shots, chosen)
        q, nphi = default_q_grid(
            shots.detector, beam, params.q_range, params.nq, params.nphi
        )
        with run.timer("map"):
            polar_map = q_polar_map(
                shots.detector,
                beam,
                q,
                nphi,
                params.interpolation,
                params.oversample or 1,
            )
        coverage = polar_map.coverage.mean()
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
            raise UserError(
                f"q_range={q[0]:.4g},{q[-1]:.4g} Å⁻¹ falls entirely off the detector"
            )
        geometry = _geometry_record(shots.detector, beam, params)
        transform = ShotTransform(polar_map, params.normalise)
        means = np.zeros(len(chosen))
        with run.write(params.output.polar, "polar images") as path:
            with (
                PolarFileWriter(
                    path, q, nphi, shots.tags[chosen], geometry, params.normalise
                ) as writer,
                parallel_map_from_params(params) as pmap,
                run.timer("resample"),
            ):
                position = 0
                block_size = params.block_size or 8
                blocks = shots.blocks(chosen, block_size)
                for indices, polar, polar_valid, compressed, block_means in progress(
                    pmap(transform, blocks),
                    total=-(-len(chosen) // block_size),
                    desc="Polar transform",
                    unit="block",
                ):
                    writer.write(position, polar, polar_valid, compressed)
                    means[position : position + len(indices)] = block_means
                    position += len(indices)
                dark = dark_shots(shots.dark[chosen], means, params.dark)
                writer.finish(dark, means, shots.wavelengths[chosen])
    finally:
        shots.close()
    run.results.update(
        shots=len(chosen),
        dark_shots=int(dark.sum()),
        n_q=len(q),
        n_phi=nphi,
        q_range=[float(q[0]), float(q[-1])],
        coverage=float(coverage),
    )
    logger.info("Resampled %d shots (%d dark)", len(chosen), int(dark.sum()))
    if params.output.plot:
        with run.write(params.output.plot, "polar plot") as path:
            plot_polar(mean_polar_image(params.output.polar), q, path)


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
    dark[: dark_params.first or 0] = True
    if dark_params.detect and len(means) > 1:
        reference = np.percentile(means, 90)
        if reference > 0:
            fraction = 0.5 if dark_params.fraction is None else dark_params.fraction
            detected = means < fraction * reference
            if np.any(detected & ~dark):
                logger.info(
                    "Detected %d dark shot(s) by their mean intensity",
                    int(np.sum(detected & ~dark)),
                )
            dark |= detected
    return dark


def mean_polar_image(path):
    """Mean over the non-dark shots of a polar file (NaN where never valid)."""
    polar = open_polar_file(path)
    try:
        total = np.zeros(polar.shape[1:])
        count = np.zeros(polar.shape[1:])
        for index in np.flatnonzero(~polar.dark):
            image, valid = polar.read(int(index))
            total += np.where(valid, image, 0)
            count += valid
    finally:
        polar.close()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


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


def _geometry_record(detector, beam, params):
    panel = detector[0]
    return {
        "beam_centre_px": np.array(panel.get_beam_centre_px(beam.get_s0())),
        "wavelength": beam.get_wavelength(),
        "distance": panel.get_distance(),
        "pixel_size": np.array(panel.get_pixel_size()),
        "method": params.interpolation,
        "oversample": params.oversample or 1,
    }


def plot_polar(image, q, path):
    """The mean polar image: phi (degrees) across, q (Å⁻¹) up."""
    figure, axes = new_figure(8, 4.5)
    finite = image[np.isfinite(image)]
    vmin, vmax = np.percentile(finite, [1, 99]) if finite.size else (0, 1)
    shown = axes.imshow(
        image,
        aspect="auto",
        origin="lower",
        extent=(0, 360, q[0], q[-1]),
        vmin=vmin,
        vmax=vmax,
        cmap="viridis",
        interpolation="nearest",
    )
    axes.set_xlabel("phi (degrees)")
    axes.set_ylabel("q (Å⁻¹)")
    axes.set_title("Mean polar image (masked samples blank)")
    figure.colorbar(shown, ax=axes, label="intensity")
    save_png(figure, path)


program = Program(
    name="polar_transform",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
    reads_images=True,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
