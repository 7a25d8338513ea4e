"""dials.diffuse.merge: merge corrected voxel observations, split halves and CC1/2."""

import logging
import sys

import numpy as np
import pandas as pd

from dials_diffuse.algorithms.diffuse.merge import cc_half, merge_observations
from dials_diffuse.algorithms.diffuse.scale import TERMS, ScaleModel, is_model_file
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.io.tables import Table, load_table, table_names, write_tables
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.merge")

help_message = """
Merge the corrected observations of every asymmetric-unit voxel (from one
or more corrected.nxs, e.g. several sweeps, each optionally with the
scale.nxs of scale, applied as I / (a b d) - c / b): inverse-variance
weighted mean intensity and its error, the number of observations;
optionally reject outliers (more than outlier= sigma above the mean).
A split also merges two halves of each voxel's observations separately
(mdx2's --split) and reports the correlation of the halves overall and in
resolution shells:

  random_half            dealt at random, half the observations each: CC1/2,
                         the precision of the diffuse map (mdx2's randomHalf)
  weighted_random_half   dealt at random into halves of about equal total
                         weight 1/sigma^2 (weightedRandomHalf)
  friedel                observations of hkl-like and of -h-k-l-like
                         orientations (proper and improper Laue operators,
                         the op column): the Friedel-pair correlation (Friedel)

Output: merged.nxs (/entry/hkl_table: h, k, l, intensity, intensity_error,
count, s, and the halves' columns intensity_1, intensity_error_1, count_1,
..._2; /entry/cc_half with the shells) and merge.png (mean intensity and the
halves' correlation against s).

Examples:

  dials.diffuse.merge corrected.nxs

  dials.diffuse.merge sweep1/corrected.nxs sweep2/corrected.nxs outlier=5

  dials.diffuse.merge corrected.nxs split=friedel

  dials.diffuse.merge corrected.nxs scale.nxs apply.offset=False
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = phil_scope = """
outlier = None
  .type = float(value_min=0)
  .help = "Reject observations more than this many standard errors above the"
          "voxel's mean, then merge again. None: keep all."
split = *random_half weighted_random_half friedel none
  .type = choice
  .help = "Also merge two halves of each voxel's observations and report their"
          "correlation: random_half (CC1/2), weighted_random_half (halves of"
          "equal weight), friedel (Friedel mates), none."
seed = 0
  .type = int(allow_none=False)
  .help = "Seed of the random halves (the split is reproducible)."
shells = 10
  .type = int(value_min=1, allow_none=False)
  .help = "Resolution shells (equal numbers of voxels) for the correlation."
apply {
  scaling = True
    .type = bool
    .help = "Apply the scaling model's b(phi), if the scale.nxs has one."
  offset = True
    .type = bool
    .help = "Apply the offset c(s, phi), if the scale.nxs has one."
  detector = True
    .type = bool
    .help = "Apply the detector term d(ix, iy), if the scale.nxs has one."
  absorption = True
    .type = bool
    .help = "Apply the absorption term a(ix, iy, phi), if the scale.nxs has one."
}
output {
  table = merged.nxs
    .type = path
    .help = "The merged voxel table."
  plot = merge.png
    .type = path
    .help = "Mean intensity and the halves' correlation against s. None: no plot."
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
    right.set_ylabel("correlation of the halves")
    right.set_ylim(min(0, float(np.nanmin(shells["cc_half"])) if len(shells) else 0), 1)
    save_png(figure, path)


def load_scaled(table_path, model_path, which):
    """A corrected table (pandas) with a scaling model's terms `which` applied."""
    loaded = load_table(table_path, "hkl_table", finite=True)
    table = loaded.to_frame()
    missing = {"h", "k", "l", "intensity", "intensity_error"} - set(table)
    if missing:
        raise UserError(
            f"{table_path}: not a corrected table (no {', '.join(sorted(missing))})"
        )
    if model_path is not None:
        model = ScaleModel.from_file(model_path, which)
        absent = model.missing_columns(table)
        if absent:
            raise UserError(
                f"{table_path}: no {', '.join(absent)} column for the model of "
                f"{model_path}"
            )
        table["intensity"], table["intensity_error"] = model.apply(table)
        logger.info(
            "Applied %s of %s to %s",
            ", ".join(model.terms) or "no term",
            model_path,
            table_path,
        )
    return loaded.attrs, table


def main(params, inputs, run):
    tables = [p for p in inputs.nexus if "hkl_table" in table_names(p)]
    models = [p for p in inputs.nexus if is_model_file(p)]
    if not tables:
        raise UserError("no corrected table given: name the corrected.nxs of correct")
    if models and len(models) != len(tables):
        raise UserError(
            f"{len(models)} scaling model(s) for {len(tables)} table(s): give one "
            "scale.nxs per corrected.nxs, in the same order, or none"
        )
    which = [name for name in TERMS if getattr(params.apply, name)]
    frames = []
    attrs = {}
    space_groups = set()
    for number, path in enumerate(tables):
        table_attrs, table = load_scaled(
            path, models[number] if models else None, which
        )
        attrs = attrs or {
            key: table_attrs[key]
            for key in ("subdivide", "space_group")
            if key in table_attrs
        }
        space_groups.add(table_attrs.get("space_group"))
        frames.append(table)
    observations = pd.concat(frames, ignore_index=True)
    split = None if params.split == "none" else params.split
    space_group = None
    if split == "friedel":
        if len(space_groups) != 1 or None in space_groups:
            raise UserError(
                "split=friedel needs tables mapped with one space group (their "
                f"space_group attributes: {sorted(map(str, space_groups))})"
            )
        from cctbx import sgtbx

        space_group = sgtbx.space_group_info(space_groups.pop()).group()
    with run.timer("merge"):
        merged = merge_observations(
            observations,
            outlier=params.outlier,
            split=split,
            seed=params.seed,
            space_group=space_group,
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
        statistic = "CC(Friedel)" if split == "friedel" else "CC1/2"
        overall, shells = cc_half(merged, params.shells)
        logger.info("%s = %.4f overall (split=%s)", statistic, overall, split)
        for row in shells.itertuples(index=False):
            logger.info(
                "  s %.3f-%.3f 1/A: %6d voxels, %s %.4f",
                row.s_low,
                row.s_high,
                row.voxels,
                statistic,
                row.cc_half,
            )
        run.results["cc_friedel" if split == "friedel" else "cc_half"] = overall
        tables.append(
            Table.from_frame("cc_half", shells, {"overall": overall, "split": split})
        )
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
