"""dials.diffuse.correct: count rates to corrected intensities in the asymmetric unit."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.diffuse.background import BinnedBackground
from dials_diffuse.algorithms.diffuse.correct import correct, observations_per_voxel
from dials_diffuse.algorithms.diffuse.sweep import nexus_input
from dials_diffuse.io.plots import histogram, new_figure, save_png
from dials_diffuse.io.tables import load_table, write_tables
from dials_diffuse.util.errors import UserError
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
attenuation = True
  .type = bool
  .help = "Correct for absorption in the air between sample and detector."
efficiency = True
  .type = bool
  .help = "Correct for the sensor's absorption efficiency (oblique incidence)."
polarization = True
  .type = bool
  .help = "Correct for the polarization of the beam."
lorentz = False
  .type = bool
  .help = "Multiply intensities by rs_volume (the Lorentz correction for"
          "integrated Bragg intensities)."
background = None
  .type = path
  .help = "A background.nxs of bin_image_series: its count rate per pixel at"
          "each voxel's mean (phi, iy, ix) is subtracted. None: no subtraction."
p1 = False
  .type = bool
  .help = "Map to the asymmetric unit with Friedel symmetry only (P-1)"
          "instead of the crystal's Laue group."
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
    missing = {
        "h",
        "k",
        "l",
        "n",
        "counts",
        "pixels",
        "seconds",
        "iy",
        "ix",
        "phi",
    } - set(table.columns)
    if missing:
        raise UserError(
            f"{integrated}: not an integrated table (no {', '.join(sorted(missing))})"
        )
    if len(experiments[0].detector) != 1:
        raise UserError("only single-panel detectors are supported")
    corrections = [
        name
        for name in ("attenuation", "efficiency", "polarization")
        if getattr(params, name)
    ]
    with run.timer("correct"):
        corrected = correct(
            table,
            experiments[0],
            corrections=corrections,
            lorentz=params.lorentz,
            p1=params.p1,
            background=BinnedBackground.read(params.background)
            if params.background
            else None,
        )
    intensity = corrected["intensity"]
    logger.info(
        "Corrected %d voxel observations (%s); %d asymmetric-unit voxels; "
        "median intensity %.4g",
        len(corrected),
        ", ".join(["solid angle", *corrections]),
        len(observations_per_voxel(corrected)),
        float(np.median(intensity)),
    )
    run.results.update(
        {"voxels": len(corrected), "corrections": ["solid_angle", *corrections]}
    )
    with run.write(params.output.table, "corrected table") as path:
        write_tables(path, [corrected])
    if params.output.plot:
        with run.write(params.output.plot, "report plots") as path:
            plot_report(corrected, path)


program = Program(
    name="correct",
    phil=phil_scope,
    help=help_message,
    main=main,
)


def run(args=None):
    """Entry point: run the program, return its exit code."""
    return program.run(args)


if __name__ == "__main__":
    sys.exit(run())
