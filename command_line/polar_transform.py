"""dials.diffuse.polar_transform: still shots resampled onto a (q, phi) grid."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.xfel import polar_transform
from dials_diffuse.algorithms.xfel.shots import geometry_phil
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.io.polar_files import PolarFileWriter, mean_polar_image
from dials_diffuse.util.inputs import shots_from_inputs
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program

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
    polar_transform.phil_str
    + """
mask = None
  .type = path
  .help = "Extra mask for every shot: a .npy array (non-zero = valid, as the"
          "SACLA mask.npy files) or a DIALS mask pickle (dials.generate_mask)."
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


def main(params, inputs, run):
    shots, _ = shots_from_inputs(inputs, params.mask, params.geometry)
    try:
        with run.write(params.output.polar, "polar images") as path:

            def open_output(grid, chosen):
                return PolarFileWriter(
                    path,
                    grid.q,
                    grid.nphi,
                    shots.tags[chosen],
                    grid.geometry,
                    params.normalise,
                )

            with parallel_map_from_params(params) as pmap:
                result = polar_transform.do_polar_transform(
                    shots, params, open_output, pmap
                )
    finally:
        shots.close()
    for step, seconds in result.seconds.items():
        run.timings[step] = run.timings.get(step, 0.0) + seconds
    grid, dark = result.grid, result.dark
    run.results.update(
        shots=len(result.chosen),
        dark_shots=int(dark.sum()),
        n_q=len(grid.q),
        n_phi=grid.nphi,
        q_range=[float(grid.q[0]), float(grid.q[-1])],
        coverage=grid.coverage,
        panels=len(shots.detector),
    )
    logger.info(
        "Resampled %d shots (%d dark); map built in %.2f s",
        len(result.chosen),
        int(dark.sum()),
        result.seconds["map"],
    )
    if params.output.plot:
        with run.write(params.output.plot, "polar plot") as path:
            plot_polar(mean_polar_image(params.output.polar), grid.q, path)


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
