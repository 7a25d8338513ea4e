"""dials.diffuse.merge: merge corrected voxel observations, split halves and CC1/2."""

import logging
import sys

import numpy as np
import pandas as pd

from dials_diffuse.algorithms.diffuse.crystals import (
    check_indexing_phil,
    check_tables,
    refuse_inconsistent_indexing,
)
from dials_diffuse.algorithms.diffuse.merge import do_merge
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.io.scale_model import is_scale_model_file, read_scale_model
from dials_diffuse.io.tables import load_table, table_names, write_tables
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.merge")

help_message = """
Merge the corrected observations of every asymmetric-unit voxel (from one
or more corrected.nxs, e.g. several sweeps, each optionally with the
scale.nxs of scale, applied as I / (a b d) - c / b): inverse-variance
weighted mean intensity and its error, the number of observations (a
scale.nxs holding a fallback that scale chose, e.g. no scaling, is
reported as such);
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

  dials.diffuse.merge corrected.nxs output.mtz=merged.mtz output.csv=merged.csv

MTZ and CSV export: voxels at fractional h, k, l (multiples of 1/subdivide)
become integer indices H = h n_a, K = k n_b, L = l n_c of the supercell
(a n_a, b n_b, c n_c), so Phenix, Coot, gemmi and CCP4 programs read the map;
the space group is the crystal's point group without screw axes or centring
(P 2 2 2 for P 21 21 21: a diffuse map has intensity at every voxel).
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = """
include scope dials_diffuse.algorithms.diffuse.merge.phil_scope
output {
  table = merged.nxs
    .type = path
    .help = "The merged voxel table."
  plot = merge.png
    .type = path
    .help = "Mean intensity and the halves' correlation against s. None: no plot."
  mtz = None
    .type = path
    .help = "Also write the merged map as MTZ (e.g. merged.mtz): integer indices"
            "of the supercell (cell x subdivide), columns I, SIGI, COUNT (and"
            "the split's halves I_HALF1, SIGI_HALF1, I_HALF2, SIGI_HALF2), the"
            "crystal's point group (P 1 if the subdivide breaks it). None: not"
            "written."
  csv = None
    .type = path
    .help = "Also write the merged map as a CSV table (e.g. merged.csv): h, k, l"
            "(fractional), H, K, L (supercell), intensity, intensity_error,"
            "count, s. None: not written."
}
"""

#: The program's own: process checks the indexing of its sweeps itself.
phil_scope = step_phil + check_indexing_phil


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


def main(params, inputs, run):
    tables = [p for p in inputs.nexus if "hkl_table" in table_names(p)]
    models = [p for p in inputs.nexus if is_scale_model_file(p)]
    if not tables:
        raise UserError("no corrected table given: name the corrected.nxs of correct")
    if models and len(models) != len(tables):
        raise UserError(
            f"{len(models)} scaling model(s) for {len(tables)} table(s): give one "
            "scale.nxs per corrected.nxs, in the same order, or none"
        )
    loaded = [load_table(path, "hkl_table", finite=True) for path in tables]
    if params.check_indexing and len(tables) > 1:
        names = [str(path) for path in tables]
        refuse_inconsistent_indexing(
            check_tables(loaded, names, loaded[0].attrs),
            {name: f"{name}'s experiment" for name in names},
        )
    with run.timer("merge"):
        result = do_merge(
            loaded,
            params,
            models=[read_scale_model(path) for path in models],
            names=[str(path) for path in tables],
            model_names=[str(path) for path in models],
        )
    write_outputs(result, params, run, inputs.experiments)


def write_outputs(result, params, run, experiments=None):
    """Write the merged table, the plot and the exports; record the results.

    `experiments` (optional) give the crystal's cell and space group to a
    table that does not record them (written by an older correct).
    """
    run.results.update(result.summary())
    with run.write(params.output.table, "merged table") as path:
        write_tables(path, result.tables())
    if params.output.plot:
        with run.write(params.output.plot, "merge plot") as path:
            plot_merged(result.merged, result.shells, path)
    if params.output.mtz or params.output.csv:
        export_map(result, params, run, experiments)


def export_map(result, params, run, experiments=None):
    """Write output.mtz and output.csv (dials_diffuse.io.mtz, io.hkl_csv)."""
    from dials_diffuse.io.hkl_csv import write_hkl_csv

    attrs = result.attrs
    subdivide = tuple(int(n) for n in attrs.get("subdivide", (1, 1, 1)))
    if params.output.csv:
        with run.write(params.output.csv, "merged map (CSV)") as path:
            run.results["csv_rows"] = write_hkl_csv(path, result.merged, subdivide)
    if not params.output.mtz:
        return
    from cctbx import sgtbx

    from dials_diffuse.io.mtz import write_mtz

    if experiments:
        crystal = experiments[0].crystal
        unit_cell = crystal.get_unit_cell().parameters()
        space_group = crystal.get_space_group()
    elif "unit_cell" in attrs and "space_group" in attrs:
        unit_cell = attrs["unit_cell"]
        space_group = sgtbx.space_group_info(str(attrs["space_group"])).group()
    else:
        raise UserError(
            "output.mtz needs the crystal's cell and space group: the tables do "
            "not record them (written by an older correct); give the refined "
            ".expt too"
        )
    with run.write(params.output.mtz, "merged map (MTZ)") as path:
        written = write_mtz(
            path,
            result.merged,
            unit_cell,
            space_group,
            subdivide,
            attrs.get("wavelength"),
        )
    logger.info(
        "MTZ: %d voxels as integer indices of the supercell %s (cell x %s), "
        "space group %s%s",
        written["reflections"],
        " ".join(f"{v:.3f}" for v in written["supercell"]),
        ",".join(map(str, subdivide)),
        written["space_group"],
        " (expanded: the subdivide breaks the point group)"
        if written["expanded"]
        else "",
    )
    run.results["mtz"] = written


program = Program(name="merge", phil=phil_scope, help=help_message, main=main)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
