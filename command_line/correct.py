"""dials.diffuse.correct: count rates to corrected intensities in the asymmetric unit."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.diffuse.correct import do_correct, observations_per_voxel
from dials_diffuse.io.background_file import read_background
from dials_diffuse.io.plots import histogram, new_figure, save_png
from dials_diffuse.io.tables import load_table, write_tables
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.inputs import nexus_input
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.correct")

help_message = """
Turn the integrated voxel counts into intensities: count rate = counts /
seconds (error sqrt(counts) / seconds, that of one count for an empty voxel), divided by the pixel's solid angle
and, each switchable, air attenuation, detector efficiency and polarization,
evaluated at the voxel's mean pixel position. Adds s = 1/d (inverse
Angstrom), rs_volume (the reciprocal-space volume the voxel's pixels swept,
in reciprocal cell volumes), and maps (h, k, l) to the asymmetric unit of the
Laue group with op, the index of the symmetry operator used (cctbx's order).
The observation index n from integrate is kept. With background= the
binned background count rate of bin_image_series is subtracted first. mdx2's definitions, with
DIALS's pixel-centre convention.

A voxel with zero exposure time is an error (check the images' exposure
times), never a division by zero.

Output: corrected.nxs (/entry/hkl_table: h, k, l, op, n, phi, iy, ix, s,
rs_volume, counts, pixels, seconds, intensity, intensity_error) and
correct.png (intensity histogram, redundancy, phi coverage). In Python:

  from dials_diffuse.io.tables import load_table
  df = load_table("corrected.nxs").to_frame().set_index(["h", "k", "l", "op", "n"]).sort_index()

Examples:

  dials.diffuse.correct refined.expt integrated.nxs

  dials.diffuse.correct refined.expt integrated.nxs polarization=False p1=True

  dials.diffuse.correct refined.expt integrated.nxs background=background.nxs
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = phil_scope = """
include scope dials_diffuse.algorithms.diffuse.correct.phil_scope
background = None
  .type = path
  .help = "A background.nxs of bin_image_series: its count rate per pixel at"
          "each voxel's mean (phi, iy, ix) is subtracted. None: no subtraction."
output {
  table = corrected.nxs
    .type = path
    .help = "The corrected voxel table."
  plot = correct.png
    .type = path
    .help = "Report plots: intensity histogram, redundancy, phi coverage."
            "None: no plot."
}
"""


def plot_report(table, path):
    """Intensity histogram, observations per ASU voxel, phi coverage."""
    figure, (left, middle, right) = new_figure(width=13, height=4, columns=3)
    intensity = np.asarray(table["intensity"], dtype=np.float64)
    finite = intensity[np.isfinite(intensity)]
    low, high = np.percentile(finite, [0.5, 99.5]) if finite.size else (0, 1)
    histogram(left, finite, bins=80, range=(low, high if high > low else low + 1))
    left.set_xlabel("Intensity (counts/s/sr), central 99%")
    left.set_ylabel("Voxels")
    redundancy = observations_per_voxel(table)
    histogram(middle, redundancy, bins=np.arange(0.5, redundancy.max() + 1.5))
    middle.set_xlabel("Observations per asymmetric-unit voxel")
    histogram(right, table["phi"], bins=60)
    right.set_xlabel("Mean phi of the observation (degrees)")
    right.set_ylabel("Voxel observations")
    save_png(figure, path)


def main(params, inputs, run):
    experiments = inputs.experiments
    if len(experiments) != 1:
        raise UserError(
            f"need one experiment (the refined .expt), got {len(experiments)}"
        )
    integrated = nexus_input(inputs, "hkl_table")
    if integrated is None:
        raise UserError(
            "no integrated table given: name the integrated.nxs of integrate"
        )
    table = load_table(integrated, "hkl_table", finite=True)
    with run.timer("correct"):
        result = do_correct(
            table,
            experiments[0],
            params,
            background=read_background(params.background)
            if params.background
            else None,
            name=str(integrated),
        )
    write_outputs(result, params, run)


def write_outputs(result, params, run):
    """Write the corrected table and the plots; record the results."""
    run.results.update(result.summary())
    with run.write(params.output.table, "corrected table") as path:
        write_tables(path, [result.table])
    if params.output.plot:
        with run.write(params.output.plot, "report plots") as path:
            plot_report(result.table, path)


program = Program(
    name="correct",
    phil=phil_scope,
    help=help_message,
    main=main,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
