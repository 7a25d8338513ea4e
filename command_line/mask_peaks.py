"""dials.diffuse.mask_peaks: mask Bragg peaks, peak pixels, hot pixels and the detector mask."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.diffuse.mask import do_mask_peaks
from dials_diffuse.algorithms.diffuse.peaks import PeakModel
from dials_diffuse.algorithms.diffuse.sweep import sweep_phil
from dials_diffuse.io.plots import new_figure, prefetch_matplotlib, save_png
from dials_diffuse.io.tables import load_table
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.inputs import load_sweep_for_program, nexus_input
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.mask_peaks")

help_message = """
Make the pixel mask for diffuse scattering: every pixel whose Miller-index
offset from the nearest reciprocal-lattice point lies inside the peak
model's ellipsoid at sigma_cutoff standard deviations (for every lattice
point the space group allows: all systematic absences are left unmasked;
mask_absent=True masks those of screw axes and glide planes too, as mdx2),
plus the peak pixels find_peaks found (in their frames), plus hot pixels
(peak-model outliers in at least hot_pixels.min_fraction of the frames,
masked in every frame), plus the detector mask (gaps, bad pixels).

A larger sigma_cutoff masks more: 3 is safe for Bragg tails; 1-2 keeps more
diffuse signal close to the peaks of high-quality data. bragg=True inverts
the ellipsoid mask: only the Bragg peaks are kept (to integrate them).

The peak model comes from find_peaks (peaks.nxs). Only the geometry is
needed, not the pixels: the images are read for the detector mask only.
mask.nxs follows mdx2: 1 = pixel excluded.

Outputs: mask.nxs (/entry/mask: frames x rows x columns uint8, chunked,
compressed) and mask_peaks.png (masked fraction per image).

Examples:

  dials.diffuse.mask_peaks refined.expt data.nxs peaks.nxs sigma_cutoff=3

  dials.diffuse.mask_peaks refined.expt peaks.nxs sigma_cutoff=1.5 nproc=4

  dials.diffuse.mask_peaks refined.expt peaks.nxs bragg=True output.mask=bragg_mask.nxs
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = """
include scope dials_diffuse.algorithms.diffuse.mask.phil_scope
output {
  mask = mask.nxs
    .type = path
    .help = "The mask (1 = excluded) as a chunked, compressed NeXus dataset."
  plot = mask_peaks.png
    .type = path
    .help = "Masked fraction per image. None: no plot."
}
"""
phil_scope = sweep_phil + step_phil


def plot_masked_fraction(images, fraction, path):
    figure, axes = new_figure()
    axes.plot(images, 100 * np.asarray(fraction), "o-")
    axes.set_xlabel("Image number")
    axes.set_ylabel("Masked pixels (%)")
    axes.set_title("Masked fraction per image")
    save_png(figure, path)


def main(params, inputs, run):
    peaks_file = nexus_input(inputs, "peak_model")
    if peaks_file is None:
        raise UserError("no peak model given: name the peaks.nxs from find_peaks")
    sweep, frame_range = load_sweep_for_program(params, inputs)
    model = PeakModel.from_table(load_table(peaks_file, "peak_model", finite=True))
    peaks = load_table(peaks_file, "peaks", finite=True)
    if params.output.plot:
        prefetch_matplotlib()
    with (
        run.timer("mask_peaks"),
        parallel_map_from_params(params) as pmap,
        run.write(params.output.mask, "mask") as path,
    ):
        result = do_mask_peaks(
            sweep,
            peaks,
            model,
            path,
            params,
            pmap,
            frame_range,
            frames_per_chunk=params.frames_per_chunk,
        )
    write_outputs(result, params, run)


def write_outputs(result, params, run):
    """Record the results and write the plot (the mask is written as it is computed)."""
    run.results.update(result.summary())
    if params.output.plot:
        with run.write(params.output.plot, "masked fraction plot") as path:
            plot_masked_fraction(
                result.image_numbers, result.masked_fraction_per_image, path
            )


program = Program(
    name="mask_peaks",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
