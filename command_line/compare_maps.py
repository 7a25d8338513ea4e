"""dials.diffuse.compare_maps: CC_total and CC_aniso between two maps, per shell."""

import json
import logging
import sys

from dials_diffuse.algorithms.maps import compare
from dials_diffuse.io import map_files, map_plots
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.compare_maps")

help_message = """
Compare two diffuse maps on the grid points they share, over the voxels
measured in both: Pearson's correlation of the total maps (CC_total) and of
their anisotropic parts (CC_aniso: each map minus its own isotropic
component, the mean per shell of |s|), and the scale and offset that fit
the second map to the first (first = scale * second + offset), overall and
per resolution shell.

A map is any of: merged.nxs of merge, map.nxs of map, map_analysis.nxs of
analyse_map, mdx2's map.nxs, an MTZ (mdx2's to_mtz: indices and cell times
subdivide), or a CCP4 map of dials.diffuse.map (a map computed from a model
or by molecular dynamics written in one of these forms). The unit cell
comes from either map, the .expt or unit_cell=.

Outputs: compare_maps.csv (per shell), compare_maps.json (overall and per
shell), compare_maps.png (CC per shell and the two maps against each other).

Examples:

  dials.diffuse.compare_maps merged.nxs model_map.nxs refined.expt

  dials.diffuse.compare_maps map.nxs mdx2/map.nxs refined.expt shells.width=0.05

  dials.diffuse.compare_maps merged.nxs md.mtz refined.expt input.column=IMEAN
"""

phil_scope = (
    map_files.input_phil_str
    + compare.phil_str
    + """
output {
  table = compare_maps.csv
    .type = path
    .help = "CC_total, CC_aniso, scale, offset and voxels per shell (CSV)."
  results = compare_maps.json
    .type = path
    .help = "The overall and per-shell results as JSON. None: not written."
  plot = compare_maps.png
    .type = path
    .help = "CC per shell and the two maps against each other. None: no plot."
}
"""
)


def main(params, inputs, run):
    if len(inputs.claimed) != 2:
        raise UserError(
            f"give two maps to compare ({len(inputs.claimed)} given), and the .expt"
        )
    crystal = inputs.experiments[0].crystal if inputs.experiments else None
    maps = [
        map_files.read_map_as_given(path, params.input, crystal)
        for path in inputs.claimed
    ]
    if all(m.unit_cell is None for m in maps):
        raise UserError("no unit cell known: give the refined .expt or unit_cell=")
    with run.timer("compare"):
        result = compare.do_compare_maps(*maps, params)
    overall = result.overall
    logger.info(
        "%s against %s: %d shared voxels, CC_total %.4f, CC_aniso %.4f; "
        "first = %.4g * second + %.4g (rms residual %.4g)",
        maps[0].source,
        maps[1].source,
        overall["voxels"],
        overall["cc_total"],
        overall["cc_anisotropic"],
        overall["scale"],
        overall["offset"],
        overall["rms_residual"],
    )
    logger.info(result.shells.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    run.results.update(overall)
    with run.write(params.output.table, "comparison per shell (CSV)") as path:
        result.shells.to_csv(path, index=False, float_format="%.6g")
    if params.output.results:
        with run.write(params.output.results, "comparison (JSON)") as path:
            path.write_text(
                json.dumps(
                    {
                        "first": maps[0].source,
                        "second": maps[1].source,
                        "overall": overall,
                        "shells": json.loads(result.shells.to_json(orient="records")),
                    },
                    indent=2,
                )
            )
    if params.output.plot:
        with run.write(params.output.plot, "comparison plot") as path:
            map_plots.plot_comparison(result, [m.source for m in maps], path)


program = Program(
    name="compare_maps",
    phil=phil_scope,
    help=help_message,
    main=main,
    claim_file=map_files.is_map_file,
)

run = program.run


if __name__ == "__main__":
    sys.exit(run())
