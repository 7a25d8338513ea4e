"""dials.diffuse.scale: refine a smooth scale factor against rotation angle."""

import logging
import sys

from dials_diffuse.algorithms.diffuse.scale import refine_phi_scale
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.io.tables import load_table, write_tables
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.scale")

help_message = """
Refine a scale factor b(phi) (piecewise linear against the rotation angle)
from the symmetry-equivalent and repeated observations of a corrected
table, by alternating weighted least squares with a smoothness restraint:
the beam intensity, illuminated volume and radiation damage change along a
sweep. mdx2's b(phi) scaling term; its offset, absorption and detector terms
are not refined. merge applies the model (give scale.nxs with the
corrected.nxs).

Output: scale.nxs (/entry/scaling_model: phi nodes in degrees, scale) and
scale.png.

Examples:

  dials.diffuse.scale corrected.nxs

  dials.diffuse.scale corrected.nxs phi_step=2 smoothness=10
  dials.diffuse.merge corrected.nxs scale.nxs
"""

# The step's own parameters.
step_phil = phil_scope = """
phi_step = 1.0
  .type = float(value_min=0, allow_none=False)
  .help = "Degrees between the nodes of b(phi)."
smoothness = 1.0
  .type = float(value_min=0)
  .help = "Weight of the restraint between neighbouring nodes (0: none)."
cycles = 10
  .type = int(value_min=1)
  .help = "Alternations of merging and refining the nodes."
output {
  model = scale.nxs
    .type = path
    .help = "The scaling model."
  plot = scale.png
    .type = path
    .help = "b(phi) against phi. None: no plot."
}
"""


def main(params, inputs, run):
    if len(inputs.nexus) != 1:
        raise UserError("give one corrected.nxs (the output of correct)")
    table = load_table(inputs.nexus[0], "hkl_table").to_frame()
    missing = {"h", "k", "l", "phi", "intensity", "intensity_error"} - set(table)
    if missing:
        raise UserError(
            f"{inputs.nexus[0]}: not a corrected table (no {', '.join(sorted(missing))})"
        )
    with run.timer("scale"):
        model, history = refine_phi_scale(
            table, params.phi_step, params.smoothness, params.cycles
        )
    logger.info(
        "b(phi) on %d nodes from %.2f to %.2f degrees: %.3f to %.3f; "
        "reduced chi-square %.3f -> %.3f",
        len(model.phi),
        model.phi[0],
        model.phi[-1],
        model.scale.min(),
        model.scale.max(),
        history[0],
        history[-1],
    )
    run.results.update({"nodes": len(model.phi), "chi_square": history})
    with run.write(params.output.model, "scaling model") as path:
        write_tables(path, [model.to_table({"phi_step": params.phi_step})])
    if params.output.plot:
        with run.write(params.output.plot, "scale plot") as path:
            figure, axes = new_figure()
            axes.plot(model.phi, model.scale, "o-")
            axes.set_xlabel("phi (degrees)")
            axes.set_ylabel("scale b(phi)")
            axes.axhline(1.0, color="grey", lw=0.5)
            save_png(figure, path)


program = Program(name="scale", phil=phil_scope, help=help_message, main=main)


def run(args=None):
    """Entry point: run the program, return its exit code."""
    return program.run(args)


if __name__ == "__main__":
    sys.exit(run())
