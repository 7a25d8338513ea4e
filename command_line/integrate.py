"""dials.diffuse.integrate: bin every unmasked pixel into reciprocal-space voxels."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.diffuse.integrate import do_integrate
from dials_diffuse.algorithms.diffuse.sweep import sweep_phil
from dials_diffuse.io.mask_file import MaskFile
from dials_diffuse.io.plots import (
    histogram,
    log_y,
    new_figure,
    prefetch_matplotlib,
    save_png,
)
from dials_diffuse.io.tables import write_tables
from dials_diffuse.util.inputs import load_sweep_for_program, nexus_input
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.integrate")

help_message = """
Integrate the diffuse scattering: every unmasked pixel of every frame is
indexed with the refined geometry (pixel centre, frame-centre rotation and
crystal orientation) and binned into the voxel round(hkl * subdivide), i.e.
voxels of 1/subdivide reciprocal lattice units centred on multiples of
1/subdivide. Per voxel the table holds the sum of counts, the number of
pixels, the summed exposure seconds, and the mean phi, iy, ix. A voxel seen
again more than max_spread degrees later (e.g. in the second half of a 360
degree sweep) is a separate observation with a higher index n (mdx2).

A fused C++ kernel computes the Miller indices and bins them in one pass
over each chunk of frames; chunks run in parallel (nproc=, dask.scheduler=).

More subdivisions give finer maps but fewer pixels per voxel: subdivide=1,1,1
(the default) is fast; 2-4 for most diffuse maps.

Output: integrated.nxs (/entry/hkl_table; columns h, k, l, n, counts,
pixels, seconds, phi, iy, ix). In Python, as in mdx2's tutorial:

  from dials_diffuse.io.tables import load_table
  df = load_table("integrated.nxs").to_frame().set_index(["h", "k", "l"])

Examples:

  dials.diffuse.integrate refined.expt data.nxs mask=mask.nxs subdivide=2,2,2

  dials.diffuse.integrate refined.expt mask.nxs subdivide=3,3,3 nproc=8

  dials.diffuse.integrate refined.expt data.nxs dask.scheduler=tcp://host:8786
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = """
mask = None
  .type = path
  .help = "The mask.nxs of mask_peaks (1 = pixel excluded); it may also be"
          "given as a positional file. None: only the detector mask applies."
include scope dials_diffuse.algorithms.diffuse.integrate.phil_scope
output {
  table = integrated.nxs
    .type = path
    .help = "The integrated voxel table."
  plot = integrate.png
    .type = path
    .help = "Histograms of counts and pixels per voxel. None: no plot."
}
"""
phil_scope = sweep_phil + step_phil


def plot_voxels(table, path):
    figure, (left, right) = new_figure(width=10, height=4, columns=2)
    rate = np.asarray(table["counts"]) / np.asarray(table["seconds"])
    positive = rate[rate > 0]
    if positive.size:
        histogram(left, np.log10(positive), bins=60)
    left.set_xlabel("log10 count rate per voxel (counts/s)")
    left.set_ylabel("Voxels")
    log_y(left)
    histogram(right, table["pixels"], bins=60)
    right.set_xlabel("Pixels per voxel")
    log_y(right)
    save_png(figure, path)


def main(params, inputs, run):
    sweep, frame_range = load_sweep_for_program(params, inputs)
    mask_path = params.mask or nexus_input(inputs, "mask")
    if params.output.plot:
        prefetch_matplotlib()
    with run.timer("integrate"), parallel_map_from_params(params) as pmap:
        result = do_integrate(
            sweep,
            params,
            pmap,
            MaskFile(mask_path) if mask_path else None,
            frame_range,
            frames_per_chunk=params.frames_per_chunk,
        )
    write_outputs(result, params, run)


def write_outputs(result, params, run):
    """Write the voxel table and the plot; record the results."""
    run.results.update(result.summary())
    with run.write(params.output.table, "integrated table") as path:
        write_tables(path, [result.table])
    if params.output.plot:
        with run.write(params.output.plot, "voxel histograms") as path:
            plot_voxels(result.table, path)


program = Program(
    name="integrate",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
