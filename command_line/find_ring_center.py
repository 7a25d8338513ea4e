"""dials.diffuse.find_ring_center: the beam centre from a powder ring."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.xfel.polar import q_at_radius
from dials_diffuse.algorithms.xfel.rings import find_ring_centre
from dials_diffuse.algorithms.xfel.shots import (
    geometry_phil,
    override_geometry,
    shots_from_inputs,
)
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program
from dials_diffuse.util.progress import progress

logger = logging.getLogger("dials_diffuse.command_line.find_ring_center")

help_message = """
Find the beam centre of still shots (the point where the direct beam would
hit the detector) by fitting a circle to a powder ring, with sub-pixel
accuracy and standard uncertainties.

The selected shots (default: every shot that is not dark) are summed,
streaming one shot at a time. A coarse-to-fine search finds the centre that
makes the azimuthally averaged radial profile sharpest; then, in every
azimuth sector, the radial centroid of the ring gives a ring point, and a
robust least-squares circle fit to those points gives the centre and radius
(repeated until the centre is stable). Masked pixels are excluded. The fit
assumes one assembled image (a single panel) roughly normal to the beam, so
that rings are circles.

The search starts at the beam centre of the detector model (for SACLA files
without one: the image centre; set it with geometry.beam_centre=). The
detector model gets the fitted beam centre (dxtbx's
set_fast_slow_beam_centre_mm) and is written to ring_center.expt, which
dials.diffuse.polar_transform and DIALS programs read. ring_center.png shows
the summed image with the fitted circle.

Pixel coordinates are (fast, slow) in pixels with pixel centres at i+0.5
(the DIALS convention: subtract 0.5 for array indices).

Examples:

  dials.diffuse.find_ring_center run_178884.h5

  dials.diffuse.find_ring_center run_178884.h5 tags=166762340 ring_radius_guess=765

  dials.diffuse.find_ring_center imported.expt mask=mask.npy shots=50,51,52,53

  dials.diffuse.find_ring_center run_178884.h5 geometry.distance=53 \\
      geometry.beam_centre=1190,1215 search_radius=20
"""

phil_scope = (
    """
shots = None
  .type = ints(value_min=0)
  .help = "Sum only these shots (0-based, in acquisition order). Default: all"
          "shots that are not dark."
tags = None
  .type = ints
  .help = "Sum only the shots with these SACLA tags."
ring_radius_guess = None
  .type = float(value_min=1)
  .help = "Approximate ring radius in pixels; the ring is looked for within"
          "25% of it. Default: the sharpest ring in the radial profile."
search_radius = None
  .type = float(value_min=0.5)
  .help = "Half-width in pixels of the coarse centre search around the start"
          "(the beam centre of the detector model, or geometry.beam_centre)."
          "Default: 10% of the image size."
mask = None
  .type = path
  .help = "Extra mask: a .npy array (non-zero = valid) or a DIALS mask pickle."
output {
  experiments = ring_center.expt
    .type = path
    .help = "The experiments with the fitted beam centre in the detector model."
  plot = ring_center.png
    .type = path
    .help = "The summed image with the fitted ring and centre. None: no plot."
}
"""
    + geometry_phil
)


def sum_shots(shots, indices):
    """Sum of the selected shots (float64, slow x fast) and the pixels valid in all."""
    if len(shots.panel_shapes) != 1:
        raise UserError(
            f"the detector has {len(shots.panel_shapes)} panels: ring fitting needs "
            "one assembled image"
        )
    total = np.zeros(shots.n_pixels)
    valid = np.ones(shots.n_pixels, dtype=bool)
    blocks = shots.blocks(indices, size=4)
    for _, data, block_valid in progress(
        blocks, total=-(-len(indices) // 4), desc="Summing shots", unit="block"
    ):
        total += np.where(block_valid, data, 0).sum(axis=0)
        valid &= block_valid.all(axis=0)
    shape = shots.panel_shapes[0]
    return total.reshape(shape), valid.reshape(shape)


def main(params, inputs, run):
    shots, experiments = shots_from_inputs(inputs, params.mask, params.geometry)
    try:
        chosen = shots.select(params.shots, params.tags)
        with run.timer("sum"):
            image, valid = sum_shots(shots, chosen)
    finally:
        shots.close()
    logger.info("Summed %d shot(s); %d pixels valid", len(chosen), valid.sum())
    start = shots.detector[0].get_beam_centre_px(shots.beam.get_s0())
    with run.timer("fit"):
        fit = find_ring_centre(
            image,
            valid,
            start=start,
            radius_guess=params.ring_radius_guess,
            search_px=params.search_radius,
        )
    updated = override_geometry(experiments, beam_centre=fit.centre)
    q_ring = q_at_radius(updated[0].detector, updated[0].beam, fit.radius)
    logger.info(
        "Beam centre (fast, slow): %.3f ± %.3f, %.3f ± %.3f px",
        fit.centre[0],
        fit.centre_sigma[0],
        fit.centre[1],
        fit.centre_sigma[1],
    )
    logger.info(
        "Ring radius %.3f ± %.3f px (q = %.4f Å⁻¹), %d ring points, rms %.3f px",
        fit.radius,
        fit.radius_sigma,
        q_ring,
        len(fit.points),
        fit.rms,
    )
    run.results.update(
        beam_centre_px=list(fit.centre),
        beam_centre_sigma_px=list(fit.centre_sigma),
        ring_radius_px=fit.radius,
        ring_radius_sigma_px=fit.radius_sigma,
        ring_q=q_ring,
        ring_points=len(fit.points),
        rms_px=fit.rms,
        shots=len(chosen),
    )
    with run.write(
        params.output.experiments, "experiments with the beam centre"
    ) as path:
        updated.as_json(str(path))
    if params.output.plot:
        with run.write(params.output.plot, "ring fit plot") as path:
            plot_ring_fit(image, valid, fit, path)


def plot_ring_fit(image, valid, fit, path):
    """The summed image (masked pixels grey), ring points and the fitted circle."""
    from matplotlib.patches import Circle

    figure, axes = new_figure(7, 6.5)
    shown = np.ma.masked_array(image, ~valid)
    finite = image[valid]
    vmin, vmax = np.percentile(finite, [1, 99.5]) if finite.size else (0, 1)
    axes.set_facecolor("0.6")
    rows, columns = image.shape
    axes.imshow(
        shown,
        cmap="magma",
        vmin=vmin,
        vmax=vmax,
        origin="upper",
        extent=(0, columns, rows, 0),
        interpolation="nearest",
    )
    axes.plot(
        fit.points[:, 0],
        fit.points[:, 1],
        ".",
        ms=2,
        color="cyan",
        label=f"ring points ({len(fit.points)})",
    )
    axes.add_patch(Circle(fit.centre, fit.radius, fill=False, ec="white", lw=1.2))
    axes.plot(
        *fit.centre,
        "+",
        color="white",
        ms=12,
        label=f"centre ({fit.centre[0]:.2f}, {fit.centre[1]:.2f}) px",
    )
    axes.set_xlabel("fast (px)")
    axes.set_ylabel("slow (px)")
    axes.set_title(f"Ring fit: radius {fit.radius:.2f} ± {fit.radius_sigma:.2f} px")
    axes.legend(loc="upper right", fontsize=8)
    save_png(figure, path)


program = Program(
    name="find_ring_center",
    phil=phil_scope,
    help=help_message,
    main=main,
    reads_images=True,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
