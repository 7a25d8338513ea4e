"""dials.diffuse.find_ring_center: the beam centre from a powder ring."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.xfel import find_ring_center
from dials_diffuse.algorithms.xfel.shots import geometry_phil
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.util.inputs import shots_from_inputs
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.find_ring_center")

help_message = """
Find the beam centre of still shots (the point where the direct beam hits
the detector) from a powder ring, with sub-pixel accuracy and standard
uncertainties, on single- and multi-panel detectors.

The selected shots (default: every shot that is not dark) are summed,
streaming one shot at a time. The panels are put on the plane of panel 0
(a CSPAD or JUNGFRAU makes one image, its gaps masked). A coarse-to-fine
search finds the centre that makes the radial profile sharpest; the rings
of that profile are listed, and the strongest is fitted (or ring=N, the
N-th from the centre, or the ring near ring_radius_guess= px or
d_spacing= Å: never a ring outside 25% of the guess). In every azimuth
sector the radial centroid of the ring gives a ring point; the fit finds
the beam centre and the ring's 2θ that give every point the same
scattering angle, in laboratory coordinates. On a detector normal to the
beam that is a circle fit; on a tilted detector the ring is an ellipse
whose centre lies off the beam, and the fitted point is still where the
beam hits. Masked pixels are excluded.

The log gives the ring's 2θ, q and d-spacing, its radius, and the rms of
the ring points about the fitted ring (px and mm), and warns when that rms
is large against the ring's width or when another ring lies inside the fit
window (blended rings): then choose a ring with ring= or a guess.

The search starts at the beam centre of the detector model (for SACLA files
without one: the image centre; set it with geometry.beam_centre=). The
detector model is moved in its plane so that the beam hits the fitted
point, and written to ring_center.expt, which
dials.diffuse.polar_transform and DIALS programs read. ring_center.png
shows the summed image with the ring points and the beam centre.

Pixel coordinates are (fast, slow) in pixels of panel 0 with pixel centres
at i+0.5 (the DIALS convention: subtract 0.5 for array indices).

Examples:

  dials.diffuse.find_ring_center run_178884.h5

  dials.diffuse.find_ring_center run_178884.h5 tags=166762340 ring_radius_guess=765

  dials.diffuse.find_ring_center imported.expt mask=mask.npy shots=50,51,52,53

  dials.diffuse.find_ring_center ceo2.cbf ring=2

  dials.diffuse.find_ring_center ceo2.cbf d_spacing=3.124

  dials.diffuse.find_ring_center run_178884.h5 geometry.distance=53 \\
      geometry.beam_centre=1190,1215 search_radius=20
"""

phil_scope = (
    find_ring_center.phil_str
    + """
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


def main(params, inputs, run):
    shots, experiments = shots_from_inputs(inputs, params.mask, params.geometry)
    try:
        with run.timer("fit"):
            result = find_ring_center.do_find_ring_center(shots, experiments, params)
    finally:
        shots.close()
    logger.info(
        "Beam centre (fast, slow) on panel 0: %.3f ± %.3f, %.3f ± %.3f px "
        "(%.4f, %.4f mm)",
        result.beam_centre_px[0],
        result.beam_centre_sigma_px[0],
        result.beam_centre_px[1],
        result.beam_centre_sigma_px[1],
        *result.beam_centre_mm,
    )
    logger.info(
        "Ring: 2θ %.4f ± %.4f°, q = %.4f Å⁻¹, d = %.4f Å, radius %.3f px; "
        "%d ring points, rms %.3f px (%.4f mm) against a FWHM of %.2f px",
        result.two_theta_deg,
        result.two_theta_sigma_deg,
        result.q,
        result.d,
        result.radius_px,
        len(result.points_px),
        result.rms_px,
        result.rms_mm,
        result.fit.fwhm,
    )
    others = [c for c in result.fit.candidates if abs(c.radius - result.radius_px) > 2]
    if others:
        logger.info(
            "Other rings in the radial profile: %s px (ring=N picks one, counting "
            "from the centre)",
            ", ".join(
                f"{c.radius:.1f}" for c in sorted(others, key=lambda c: c.radius)
            ),
        )
    for warning in result.warnings:
        logger.warning("Warning: %s", warning)
    run.results.update(
        beam_centre_px=list(result.beam_centre_px),
        beam_centre_sigma_px=list(result.beam_centre_sigma_px),
        beam_centre_mm=list(result.beam_centre_mm),
        ring_radius_px=result.radius_px,
        ring_radius_sigma_px=result.radius_sigma_px,
        ring_two_theta_deg=result.two_theta_deg,
        ring_q=result.q,
        ring_d=result.d,
        ring_points=len(result.points_px),
        rms_px=result.rms_px,
        rms_mm=result.rms_mm,
        ring_fwhm_px=result.fit.fwhm,
        candidate_radii_px=[c.radius for c in result.fit.candidates],
        warnings=result.warnings,
        panels=len(shots.detector),
        shots=result.shots,
    )
    with run.write(
        params.output.experiments, "experiments with the beam centre"
    ) as path:
        result.experiments.as_json(str(path))
    if params.output.plot:
        with run.write(params.output.plot, "ring fit plot") as path:
            plot_ring_fit(result, path)


def plot_ring_fit(result, path):
    """The summed image (masked pixels grey), ring points and the beam centre."""
    from matplotlib.patches import Circle

    image, valid = result.image, result.valid
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
    points = result.points_px
    axes.plot(
        points[:, 0],
        points[:, 1],
        ".",
        ms=2,
        color="cyan",
        label=f"ring points ({len(points)}), rms {result.rms_px:.2f} px",
    )
    centre = np.array(result.beam_centre_px) - result.image_origin_px
    axes.add_patch(Circle(centre, result.radius_px, fill=False, ec="white", lw=1.0))
    axes.plot(
        *centre,
        "+",
        color="white",
        ms=12,
        label=f"beam ({result.beam_centre_px[0]:.2f}, {result.beam_centre_px[1]:.2f}) px",
    )
    axes.set_xlabel("fast (px)")
    axes.set_ylabel("slow (px)")
    axes.set_title(
        f"Ring fit: 2θ {result.two_theta_deg:.3f}°, d {result.d:.4f} Å, "
        f"radius {result.radius_px:.2f} px"
    )
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
