"""dials.diffuse.find_peaks: peak pixels above a count threshold and a Gaussian peak model."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.diffuse.peaks import (
    find_peaks,
    fit_peak_model,
    peaks_to_reflections,
)
from dials_diffuse.algorithms.diffuse.sweep import load_sweep_for_program, sweep_phil
from dials_diffuse.io.plots import histogram, new_figure, prefetch_matplotlib, save_png
from dials_diffuse.io.tables import write_tables
from dials_diffuse.util.errors import UserError
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
count_threshold = None
  .type = float
  .help = "Pixels with counts above this value are peak pixels (required)."
sigma_cutoff = 3.0
  .type = float(value_min=0, allow_none=False)
  .help = "Outlier rejection in the peak-model fit: peak pixels farther"
          "than this many standard deviations (Mahalanobis distance) from the"
          "model's centre are outliers."
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
    if params.count_threshold is None:
        raise UserError("count_threshold is required, e.g. count_threshold=20")
    sweep, frame_range = load_sweep_for_program(params, inputs)
    if params.output.plot:
        prefetch_matplotlib()
    with run.timer("find_peaks"), parallel_map_from_params(params) as pmap:
        peaks = find_peaks(
            sweep,
            params.count_threshold,
            pmap,
            frames_per_chunk=params.frames_per_chunk,
            frame_range=frame_range,
        )
    logger.info(
        "Found %d peak pixels above %g counts in %d frames",
        len(peaks),
        params.count_threshold,
        frame_range[1] - frame_range[0],
    )
    if len(peaks) == 0:
        raise UserError(
            f"no pixel above count_threshold={params.count_threshold:g}: lower it"
        )
    hkl = np.stack([peaks["h"], peaks["k"], peaks["l"]], axis=1)
    offsets = hkl - np.round(hkl)
    with run.timer("fit"):
        model, outlier = fit_peak_model(offsets, params.sigma_cutoff)
    peaks.columns["outlier"] = outlier.astype(np.uint8)
    sigmas, axes = model.semi_axes()
    logger.info(
        "Peak model from %d pixels (%d outliers beyond %g sigma): centre %s r.l.u.",
        len(peaks) - int(outlier.sum()),
        int(outlier.sum()),
        params.sigma_cutoff,
        np.array2string(model.centre, precision=4),
    )
    logger.info(
        "Standard deviations along the principal axes: %s r.l.u.",
        np.array2string(sigmas, precision=4),
    )
    run.results.update(
        {
            "peak_pixels": len(peaks),
            "outliers": int(outlier.sum()),
            "model_centre": model.centre,
            "model_covariance": model.covariance,
            "model_sigmas": sigmas,
        }
    )
    with run.write(params.output.peaks, "peaks and peak model") as path:
        write_tables(
            path,
            [
                peaks,
                model.to_table(
                    params.sigma_cutoff,
                    len(peaks) - int(outlier.sum()),
                    int(outlier.sum()),
                ),
            ],
        )
    if params.output.reflections:
        reflections = peaks_to_reflections(peaks, sweep.experiment, outlier)
        with run.write(params.output.reflections, "peak reflections") as path:
            reflections.as_file(str(path))
    if params.output.plot:
        with run.write(params.output.plot, "peak offsets plot") as path:
            plot_offsets(offsets, outlier, model, path)


program = Program(
    name="find_peaks",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
)


def run(args=None):
    """Entry point: run the program, return its exit code."""
    return program.run(args)


if __name__ == "__main__":
    sys.exit(run())
