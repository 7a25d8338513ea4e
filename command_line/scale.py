"""dials.diffuse.scale: refine mdx2's scaling model (b, c, d, a) from a corrected table."""

import dataclasses
import logging
import pathlib
import sys

import numpy as np
import pandas as pd

from dials_diffuse.algorithms.diffuse.scale import (
    SETTINGS,
    TERMS,
    refine_scale_model,
)
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.io.tables import load_table, write_tables
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.scale")

help_message = """
Refine mdx2's scaling model from the symmetry-equivalent and repeated
observations of a corrected table. Each observation of a voxel with merged
intensity M is modelled as

  I = a(ix, iy, phi) d(ix, iy) (b(phi) M + c(s, phi))

b: a scale against rotation angle (beam intensity, illuminated volume,
radiation damage; on by default); c: an offset against resolution and
angle (background left after correction); d: a smooth gain across the
detector; a: absorption, against detector position and angle. Each term is
piecewise linear between nodes, refined by alternating weighted least
squares with smoothness restraints (mdx2 1.0.5's defaults), in mdx2's order
(b; b with c; c; d; a), each stage followed by outlier rejection. a, b and d
are normalised to a mean of 1. merge applies the model (give scale.nxs with
the corrected.nxs): I / (a b d) - c / b.

Several corrected tables (sweeps of the same crystal form) are scaled
together, their voxels merged across tables: each table gets its own b, c
and a (on one common scale), all share d, and each its own output file
(scale_1.nxs, scale_2.nxs, ... in the order given), as mdx2's batches.

Output: scale.nxs (/entry/scaling_model, offset_model, detector_model,
absorption_model: one row per node, the coordinates (phi in degrees, s in
1/Angstrom, ix/iy in pixels) and the value) and scale.png.

Examples:

  dials.diffuse.scale corrected.nxs

  dials.diffuse.scale corrected.nxs scaling.phi_step=2 scaling.smoothness=10

  dials.diffuse.scale corrected.nxs offset.enable=True detector.enable=True \\
      absorption.enable=True

  dials.diffuse.merge corrected.nxs scale.nxs

  dials.diffuse.scale sweep1/corrected.nxs sweep2/corrected.nxs
  dials.diffuse.merge sweep1/corrected.nxs sweep2/corrected.nxs \\
      scale_1.nxs scale_2.nxs
"""

_stage_phil = """
  cycles = {cycles}
    .type = int(value_min=1, allow_none=False)
    .help = "At most this many alternations of merging and refining the term."
  tolerance = {tolerance}
    .type = float(value_min=0, allow_none=False)
    .help = "Stop when the reduced chi-square improves by less than this."
  outlier = {outlier}
    .type = float(value_min=0, allow_none=False)
    .help = "After refining, reject observations more than this many standard"
            "errors above the model."
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = phil_scope = (
    """
scaling {
  enable = True
    .type = bool
    .help = "Refine b(phi), a scale against rotation angle."
  phi_step = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Degrees between the nodes of b(phi)."
  smoothness = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the curvature restraint along phi, relative to the data"
            "(0: none)."
"""
    + _stage_phil.format(cycles=10, tolerance=1e-4, outlier=10.0)
    + """
}
offset {
  enable = False
    .type = bool
    .help = "Refine c(s, phi), an additive offset against resolution and angle"
            "(with b, the two are first refined together)."
  phi_step = 2.5
    .type = float(value_min=0, allow_none=False)
    .help = "Degrees between the nodes of c along phi."
  s_nodes = 31
    .type = int(value_min=1, allow_none=False)
    .help = "Nodes of c along s = 1/d, from the smallest to the largest s."
  smoothness_s = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the curvature restraint along s."
  smoothness_phi = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the curvature restraint along phi."
  ridge = 0.001
    .type = float(value_min=0, allow_none=False)
    .help = "Weight pulling the nodes towards 0 (relative to the largest"
            "diagonal element of the normal matrix)."
  minimum = 0.0
    .type = float
    .help = "The offset's smallest value over phi at each s (the data fix c"
            "only up to a function of s, merged away). None: leave it free."
"""
    + _stage_phil.format(cycles=5, tolerance=1e-3, outlier=5.0)
    + """
}
detector {
  enable = False
    .type = bool
    .help = "Refine d(ix, iy), a smooth gain across the detector face."
  x_nodes = 200
    .type = int(value_min=1, allow_none=False)
    .help = "Nodes of d across the detector's fast axis (ix)."
  y_nodes = 200
    .type = int(value_min=1, allow_none=False)
    .help = "Nodes of d across the detector's slow axis (iy)."
  smoothness = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the neighbour (Laplacian) restraint across the detector."
"""
    + _stage_phil.format(cycles=5, tolerance=1e-3, outlier=5.0)
    + """
}
absorption {
  enable = False
    .type = bool
    .help = "Refine a(ix, iy, phi), a scale against detector position and angle."
  phi_step = 5.0
    .type = float(value_min=0, allow_none=False)
    .help = "Degrees between the nodes of a along phi."
  x_nodes = 20
    .type = int(value_min=1, allow_none=False)
    .help = "Nodes of a across the detector's fast axis (ix)."
  y_nodes = 20
    .type = int(value_min=1, allow_none=False)
    .help = "Nodes of a across the detector's slow axis (iy)."
  smoothness_xy = 10.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the neighbour (Laplacian) restraint across the detector."
  smoothness_phi = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the curvature restraint along phi."
"""
    + _stage_phil.format(cycles=5, tolerance=1e-4, outlier=5.0)
    + """
}
output {
  model = scale.nxs
    .type = path
    .help = "The scaling model; with several tables, one file per table with"
            "the table's number before the suffix (scale_1.nxs, ...)."
  plot = scale.png
    .type = path
    .help = "The refined terms. None: no plot."
}
"""
)


def settings_from_params(params):
    """{term name: settings} of the enabled terms, from the PHIL extract."""
    chosen = {}
    for name, settings_class in SETTINGS.items():
        scope = getattr(params, name)
        if scope.enable:
            chosen[name] = settings_class(
                **{
                    field.name: getattr(scope, field.name)
                    for field in dataclasses.fields(settings_class)
                }
            )
    return chosen


def model_paths(template, count):
    """Output names: `template` for one table, else scale_1.nxs, scale_2.nxs, ..."""
    template = pathlib.Path(template)
    if count == 1:
        return [template]
    return [
        template.with_name(f"{template.stem}_{number}{template.suffix}")
        for number in range(1, count + 1)
    ]


def plot_models(models, path):
    """One panel per term: b against phi (every sweep), c/d/a of the first sweep."""
    terms = models[0].terms
    figure, axes = new_figure(width=4.5 * len(terms), height=4, columns=len(terms))
    axes = np.atleast_1d(axes)
    for panel, name in zip(axes, terms):
        if name == "scaling":
            for number, model in enumerate(models, 1):
                term = model.terms["scaling"]
                label = f"sweep {number}" if len(models) > 1 else None
                panel.plot(term.axes["phi"], term.values, "o-", label=label)
            if len(models) > 1:
                panel.legend()
            panel.axhline(1.0, color="grey", lw=0.5)
            panel.set_xlabel("phi (degrees)")
            panel.set_ylabel("scale b(phi)")
            continue
        term = terms[name]
        values = term.values.mean(axis=2) if name == "absorption" else term.values
        first, second = list(term.axes)[:2]
        image = panel.imshow(
            values.T,
            origin="lower",
            aspect="auto",
            extent=(
                term.axes[first][0],
                term.axes[first][-1],
                term.axes[second][0],
                term.axes[second][-1],
            ),
        )
        figure.colorbar(image, ax=panel)
        units = {
            "s": "s (1/Angstrom)",
            "phi": "phi (degrees)",
            "ix": "ix (px)",
            "iy": "iy (px)",
        }
        panel.set_xlabel(units[first])
        panel.set_ylabel(units[second])
        sweep = " (sweep 1)" if len(models) > 1 and name != "detector" else ""
        panel.set_title(
            {
                "offset": "offset c(s, phi)",
                "detector": "detector d(ix, iy)",
                "absorption": "absorption a(ix, iy), mean over phi",
            }[name]
            + sweep
        )
    save_png(figure, path)


def load_corrected(paths, settings):
    """The corrected tables as one DataFrame with a batch column (0, 1, ...)."""
    needed = {"h", "k", "l", "intensity", "intensity_error"}
    for name in settings:
        needed |= set(TERMS[name][1])
    frames = []
    for number, path in enumerate(paths):
        table = load_table(path, "hkl_table", finite=True).to_frame()
        missing = needed - set(table)
        if missing:
            raise UserError(
                f"{path}: not a corrected table (no {', '.join(sorted(missing))})"
            )
        frames.append(table[sorted(needed)].assign(batch=number))
    return pd.concat(frames, ignore_index=True)


def main(params, inputs, run):
    if not inputs.nexus:
        raise UserError("give a corrected.nxs (the output of correct), or several")
    if len(set(inputs.nexus)) != len(inputs.nexus):
        raise UserError("the same corrected table given twice")
    settings = settings_from_params(params)
    if not settings:
        raise UserError(
            "no term enabled: set at least one of scaling.enable, offset.enable, "
            "detector.enable, absorption.enable"
        )
    observations = load_corrected(inputs.nexus, settings)
    with run.timer("scale"):
        models, history = refine_scale_model(
            observations,
            settings,
            progress=lambda stage: logger.info("Refining %s", stage),
        )
    for entry in history:
        logger.info(
            "  %-15s cycle %2d: reduced chi-square %.4f%s",
            entry["stage"],
            entry["cycle"],
            entry["chi_square"],
            f"; {entry['outliers']} outliers rejected" if "outliers" in entry else "",
        )
    for path, model in zip(inputs.nexus, models):
        for name, term in model.terms.items():
            logger.info(
                "%s: %s term on %s nodes, %.4g to %.4g",
                path,
                name,
                " x ".join(str(n) for n in term.shape),
                term.values.min(),
                term.values.max(),
            )
    outputs = model_paths(params.output.model, len(models))
    run.results.update(
        {
            "terms": list(models[0].terms),
            "nodes": {name: list(term.shape) for name, term in models[0].terms.items()},
            "chi_square": [entry["chi_square"] for entry in history],
            "outliers": sum(entry.get("outliers", 0) for entry in history),
            "models": [str(path) for path in outputs],
        }
    )
    run.plan_outputs(
        {f"scaling model of {table}": out for out, table in zip(outputs, inputs.nexus)}
    )
    for output, model, table in zip(outputs, models, inputs.nexus):
        with run.write(output, f"scaling model of {table}") as path:
            write_tables(path, model.to_tables({"table": str(table)}))
    if params.output.plot:
        with run.write(params.output.plot, "scale plot") as path:
            plot_models(models, path)


program = Program(name="scale", phil=phil_scope, help=help_message, main=main)


def run(args=None):
    """Entry point: run the program, return its exit code."""
    return program.run(args)


if __name__ == "__main__":
    sys.exit(run())
