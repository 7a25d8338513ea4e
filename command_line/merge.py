"""dials.diffuse.merge: merge corrected voxel observations, random halves and CC1/2."""

import logging
import sys

import numpy as np
import pandas as pd

from dials_diffuse.algorithms.diffuse.merge import cc_half, merge_observations
from dials_diffuse.algorithms.diffuse.scale import PhiScaleModel
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.io.tables import Table, load_table, table_names, write_tables
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.merge")

help_message = """
Merge the corrected observations of every asymmetric-unit voxel (from one
or more corrected.nxs, e.g. several sweeps, each optionally with the
scale.nxs of scale, whose b(phi) divides its intensities): inverse-variance weighted mean
intensity and its error, the number of observations; optionally reject
outliers (more than outlier= sigma above the mean). With
split=random_half the observations of each voxel are also dealt at random
into two halves merged separately, and CC1/2 (the correlation of the
halves) is reported overall and in resolution shells: the quality of the
diffuse map. mdx2's merge without a scaling model.

Output: merged.nxs (/entry/hkl_table: h, k, l, intensity, intensity_error,
count, s, and the halves' columns; /entry/cc_half with the shells) and
merge.png (mean intensity and CC1/2 against s).

Examples:

  dials.diffuse.merge corrected.nxs

  dials.diffuse.merge sweep1/corrected.nxs sweep2/corrected.nxs outlier=5

  dials.diffuse.merge corrected.nxs split=none

  dials.diffuse.merge corrected.nxs scale.nxs
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = phil_scope = """
outlier = None
  .type = float(value_min=0)
  .help = "Reject observations more than this many standard errors above the"
          "voxel's mean, then merge again. None: keep all."
split = *random_half none
  .type = choice
  .help = "random_half: also merge two random halves and report CC1/2."
seed = 0
  .type = int
  .help = "Seed of the random halves (the split is reproducible)."
shells = 10
  .type = int(value_min=1)
  .help = "Resolution shells (equal numbers of voxels) for CC1/2."
output {
  table = merged.nxs
    .type = path
    .help = "The merged voxel table."
  plot = merge.png
    .type = path
    .help = "Mean intensity and CC1/2 against s. None: no plot."
}
"""


def plot_merged(merged, shells, path):
    figure, (left, right) = new_figure(width=11, height=4, columns=2)
    if "s" in merged:
        edges = np.quantile(merged["s"], np.linspace(0, 1, 41))
        centres = 0.5 * (edges[1:] + edges[:-1])
        means = (
            merged.groupby(pd.cut(merged["s"], edges), observed=False)["intensity"]
            .mean()
            .to_numpy()
        )
        left.plot(centres, means, "o-")
    left.set_xlabel("s = 1/d (1/Angstrom)")
    left.set_ylabel("Mean intensity")
    if len(shells):
        right.plot(0.5 * (shells["s_low"] + shells["s_high"]), shells["cc_half"], "o-")
    right.set_xlabel("s = 1/d (1/Angstrom)")
    right.set_ylabel("CC1/2")
    right.set_ylim(min(0, float(np.nanmin(shells["cc_half"])) if len(shells) else 0), 1)
    save_png(figure, path)


def main(params, inputs, run):
    tables = [p for p in inputs.nexus if "hkl_table" in table_names(p)]
    models = [p for p in inputs.nexus if "scaling_model" in table_names(p)]
    if not tables:
        raise UserError("no corrected table given: name the corrected.nxs of correct")
    if models and len(models) != len(tables):
        raise UserError(
            f"{len(models)} scaling model(s) for {len(tables)} table(s): give one "
            "scale.nxs per corrected.nxs, in the same order, or none"
        )
    frames = []
    attrs = {}
    for number, path in enumerate(tables):
        loaded = load_table(path, "hkl_table")
        attrs = attrs or {
            key: loaded.attrs[key]
            for key in ("subdivide", "space_group")
            if key in loaded.attrs
        }
        table = loaded.to_frame()
        missing = {"h", "k", "l", "intensity", "intensity_error"} - set(table)
        if missing:
            raise UserError(
                f"{path}: not a corrected table (no {', '.join(sorted(missing))})"
            )
        if models:
            model = PhiScaleModel.from_table(
                load_table(models[number], "scaling_model")
            )
            factor = model(table["phi"].to_numpy())
            table["intensity"] = table["intensity"] / factor
            table["intensity_error"] = table["intensity_error"] / factor
            logger.info("Applied the scaling model of %s to %s", models[number], path)
        frames.append(table)
    observations = pd.concat(frames, ignore_index=True)
    split = None if params.split == "none" else params.split
    with run.timer("merge"):
        merged = merge_observations(
            observations, outlier=params.outlier, split=split, seed=params.seed
        )
    logger.info(
        "Merged %d observations into %d asymmetric-unit voxels (%d outliers rejected)",
        len(observations),
        len(merged),
        merged.attrs["rejected_outliers"],
    )
    run.results.update(
        {
            "observations": len(observations),
            "voxels": len(merged),
            "rejected_outliers": merged.attrs["rejected_outliers"],
        }
    )
    tables = [Table.from_frame("hkl_table", merged, attrs)]
    shells = pd.DataFrame(columns=["s_low", "s_high", "voxels", "cc_half"])
    if split:
        overall, shells = cc_half(merged, params.shells)
        logger.info("CC1/2 = %.4f overall", overall)
        for row in shells.itertuples(index=False):
            logger.info(
                "  s %.3f-%.3f 1/A: %6d voxels, CC1/2 %.4f",
                row.s_low,
                row.s_high,
                row.voxels,
                row.cc_half,
            )
        run.results["cc_half"] = overall
        tables.append(Table.from_frame("cc_half", shells, {"overall": overall}))
    with run.write(params.output.table, "merged table") as path:
        write_tables(path, tables)
    if params.output.plot:
        with run.write(params.output.plot, "merge plot") as path:
            plot_merged(merged, shells, path)


program = Program(name="merge", phil=phil_scope, help=help_message, main=main)


def run(args=None):
    """Entry point: run the program, return its exit code."""
    return program.run(args)


if __name__ == "__main__":
    sys.exit(run())
