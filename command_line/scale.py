"""dials.diffuse.scale: refine mdx2's scaling model (b, c, d, a) from a corrected table."""

import logging
import pathlib
import sys

import numpy as np

from dials_diffuse.algorithms.diffuse.crystals import (
    check_indexing_phil,
    check_table_files,
    refuse_inconsistent_indexing,
)
from dials_diffuse.algorithms.diffuse.scale import do_scale, scale_columns
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.io.scale_model import write_scale_model
from dials_diffuse.io.tables import load_table
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
the corrected.nxs): I / (a b d) - c / b. On a multi-panel detector d and a
are per panel (ix, iy within each panel, the same nodes on every panel,
smooth within a panel only): modules of different gain are each scaled.

Only what the data determine is refined (auto_nodes=True): each node needs
min_observations redundant observations, b(phi) has one node per sweep
narrower than its phi_step, and a term left constant is not refined; every
change is logged. Then the model is checked (validation): refined on a
random half of the voxels, it must not lower CC1/2 nor raise the
chi-square of the other half's merge by more than validation.tolerance
standard errors of the statistic (CC1/2 on Fisher's z scale, sigma(z) =
1/sqrt(n - 3) for n voxels; chi-square x sqrt(2/nu) for nu degrees of
freedom: a change within the statistic's own noise is no change), and
b(phi) must not vary more than the frame totals allow. The log gives the
figures with their errors. A model that fails is replaced by b(phi) linear
over each sweep, or by no scaling at all (a neutral scale.nxs: merge then
gives the unscaled map), with a warning saying why; validation.action=warn
keeps it. mdx2's behaviour: auto_nodes=False validation.enable=False.

Several corrected tables (sweeps of the same crystal form) are scaled
together, their voxels merged across tables: each table gets its own b, c
and a (on one common scale), all share d, and each its own output file
(scale_1.nxs, scale_2.nxs, ... in the order given), as mdx2's batches.

Memory: the observations of every table are refined together, in memory:
at the peak about 310 bytes per observation with b(phi) alone (the
default) and about 830 with all four terms (measured: peak RSS against the
number of observations, 1, 2 and 4 tables of 1 M observations each: 458,
685 and 1304 MB with b(phi); 0.97 and 1.80 GB for 1 and 2 tables with all
terms). 4 sweeps of 25 M observations each need about 31 GB with b(phi).
Only the columns scale uses are read.

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

# The step's own parameters (dials.diffuse.process nests them): the model's
# terms from the algorithm, the output files here.
step_phil = """
include scope dials_diffuse.algorithms.diffuse.scale.phil_scope
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

#: The program's own: process checks the indexing of its sweeps itself.
phil_scope = step_phil + check_indexing_phil


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
        if "panel" in term.axes:
            _plot_panel_means(panel, name, term, sweep=len(models) > 1)
            continue
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


def _plot_panel_means(axes, name, term, sweep):
    """A per-panel term (multi-panel detector): its mean over each panel's nodes."""
    means = term.values.reshape(-1, term.shape[-1]).mean(axis=0)
    axes.plot(term.axes["panel"], means, "o-")
    axes.axhline(1.0, color="grey", lw=0.5)
    axes.set_xlabel("panel")
    symbol = "d" if name == "detector" else "a"
    axes.set_ylabel(f"mean {symbol} over the panel")
    title = {"detector": "detector d(ix, iy, panel)", "absorption": "absorption a"}
    axes.set_title(title[name] + (" (sweep 1)" if sweep and name != "detector" else ""))


def main(params, inputs, run):
    if not inputs.nexus:
        raise UserError("give a corrected.nxs (the output of correct), or several")
    if len(set(inputs.nexus)) != len(inputs.nexus):
        raise UserError("the same corrected table given twice")
    if params.check_indexing and len(inputs.nexus) > 1:
        refuse_inconsistent_indexing(
            check_table_files(inputs.nexus),
            {str(path): f"{path}'s experiment" for path in inputs.nexus},
        )
    # Only the columns scale reads: fewer bytes per observation held.
    columns = scale_columns(params)
    tables = [
        load_table(path, "hkl_table", finite=True, columns=columns).to_frame()
        for path in inputs.nexus
    ]
    with run.timer("scale"):
        result = do_scale(tables, params, names=[str(p) for p in inputs.nexus])
    write_outputs(result, params, run, inputs.nexus)


def write_outputs(result, params, run, tables):
    """Write the models (one per table in `tables`) and the plot; record the results."""
    outputs = model_paths(params.output.model, len(result.models))
    run.results.update(result.summary())
    run.results["models"] = [str(path) for path in outputs]
    if len(outputs) > 1:  # one model is output.model itself, planned already
        run.plan_outputs(
            {f"scaling model of {table}": out for out, table in zip(outputs, tables)}
        )
    for output, model, table in zip(outputs, result.models, tables):
        with run.write(output, f"scaling model of {table}") as path:
            write_scale_model(path, model, {"table": str(table)})
    if params.output.plot:
        with run.write(params.output.plot, "scale plot") as path:
            plot_models(result.models, path)


program = Program(name="scale", phil=phil_scope, help=help_message, main=main)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
