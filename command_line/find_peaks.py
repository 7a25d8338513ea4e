"""dials.diffuse.find_peaks: peak pixels above a count threshold and a Gaussian peak model."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.diffuse.peaks import do_find_peaks, peaks_to_reflections
from dials_diffuse.algorithms.diffuse.sweep import sweep_phil
from dials_diffuse.io.plots import histogram, new_figure, prefetch_matplotlib, save_png
from dials_diffuse.io.tables import write_tables
from dials_diffuse.util.inputs import load_sweep_for_program
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.find_peaks")

help_message = """
Find every pixel above a count threshold (Bragg peaks, hot pixels, ice,
zingers), index it to a fractional Miller index with the refined geometry,
and fit a global Gaussian peak model to the offsets from the nearest lattice
point (mdx2's find_peaks: one fit, outliers beyond sigma_cutoff rejected,
refit). mask_peaks uses the model to mask every Bragg peak.

Choose count_threshold above the diffuse and background level: a few
hundred counts for strong data, lower for weak or highly mosaic crystals
(see the log's count of peak pixels and the plot of the offsets).

Images come from data.nxs when given, else from the .expt's image files.

Outputs: peaks.nxs (/entry/peaks: one row per peak pixel with frame,
image, phi, iy, ix, counts, h, k, l, outlier; /entry/peak_model),
peaks.refl (a DIALS reflection table of the peak pixels for
dials.image_viewer), find_peaks.png (offset histograms with the model).

Examples:

  dials.diffuse.find_peaks refined.expt data.nxs count_threshold=20

  dials.diffuse.find_peaks refined.expt count_threshold=100 sigma_cutoff=3 nproc=4

  dials.image_viewer refined.expt peaks.refl
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = """
include scope dials_diffuse.algorithms.diffuse.peaks.phil_scope
output {
  peaks = peaks.nxs
    .type = path
    .help = "Peak pixels and the peak model (NeXus tables)."
  reflections = peaks.refl
    .type = path
    .help = "The peak pixels as a DIALS reflection table. None: not written."
  plot = find_peaks.png
    .type = path
    .help = "Histograms of the Miller-index offsets with the model. None: no plot."
}
"""
phil_scope = sweep_phil + step_phil


def plot_offsets(offsets, outlier, model, path):
    """Histograms of dh, dk, dl (inliers, outliers) with the fitted Gaussian."""
    figure, panels = new_figure(width=12, height=4, columns=3)
    width = min(0.5, 6 * float(np.sqrt(np.max(np.diag(model.covariance)))))
    bins = np.linspace(-width, width, 61)
    grid = np.linspace(-width, width, 301)
    for axis, name, panel in zip(range(3), ("dh", "dk", "dl"), panels):
        histogram(panel, offsets[~outlier, axis], bins=bins, label="fitted", alpha=0.7)
        histogram(panel, offsets[outlier, axis], bins=bins, label="outliers", alpha=0.7)
        sigma = np.sqrt(model.covariance[axis, axis])
        density = np.exp(-0.5 * ((grid - model.centre[axis]) / sigma) ** 2)
        scale = (
            np.count_nonzero(~outlier)
            * (bins[1] - bins[0])
            / (sigma * np.sqrt(2 * np.pi))
        )
        panel.plot(grid, scale * density, "k-", label="model")
        panel.set_xlabel(f"{name} (r.l.u.)")
    panels[0].set_ylabel("Peak pixels")
    panels[0].legend(fontsize="small")
    save_png(figure, path)


def main(params, inputs, run):
    sweep, frame_range = load_sweep_for_program(params, inputs)
    if params.output.plot:
        prefetch_matplotlib()
    with run.timer("find_peaks"), parallel_map_from_params(params) as pmap:
        result = do_find_peaks(
            sweep, params, pmap, frame_range, frames_per_chunk=params.frames_per_chunk
        )
    write_outputs(result, sweep.experiment, params, run)


def write_outputs(result, experiment, params, run):
    """Write the peaks, their reflection table and the plot; record the results."""
    run.results.update(result.summary())
    with run.write(params.output.peaks, "peaks and peak model") as path:
        write_tables(path, [result.peaks, result.model_table()])
    if params.output.reflections:
        reflections = peaks_to_reflections(result.peaks, experiment, result.outlier)
        with run.write(params.output.reflections, "peak reflections") as path:
            reflections.as_file(str(path))
    if params.output.plot:
        with run.write(params.output.plot, "peak offsets plot") as path:
            plot_offsets(result.offsets, result.outlier, result.model, path)


program = Program(
    name="find_peaks",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
