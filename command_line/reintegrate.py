"""dials.diffuse.reintegrate: a map from the images with corrections and scaling applied."""

import logging
import sys

from dials_diffuse.algorithms.diffuse.reintegrate import do_reintegrate
from dials_diffuse.algorithms.diffuse.sweep import (
    sweep_from_experiment,
    sweep_phil,
)
from dials_diffuse.io.mask_file import MaskFile
from dials_diffuse.io.scale_model import is_scale_model_file, read_scale_model
from dials_diffuse.io.tables import write_tables
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.inputs import nexus_inputs_by_group, readable_experiments
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.reintegrate")

help_message = """
Bin the images again on a new grid (usually finer than the one scaled), with
the corrections of correct and each sweep's scaling model (scale.nxs) applied
to every chunk's partial voxel sums, and sum all sweeps per asymmetric-unit
voxel (mdx2's reintegrate, for several sweeps at once). Per voxel: counts,
background_counts (the model's offset c), scale (exposure x corrections x
a b d) and intensity = (counts - background_counts) / scale, or the sums
alone with output_type=counts.

Give the refined experiments (one or more .expt files, or a multi-experiment
.expt) and, in the same order, one mask.nxs per sweep, one scale.nxs per
sweep (scale's scale_1.nxs, scale_2.nxs, ...) and optionally one data.nxs per
sweep (else the images of the experiments are read).

Output: reintegrated.nxs (/entry/hkl_table: h, k, l, s, pixels, rs_volume,
intensity, intensity_error or counts, background_counts, scale); map takes it
as it takes merged.nxs.

Examples:

  dials.diffuse.reintegrate refined.expt data.nxs mask.nxs scale.nxs \\
      subdivide=6,6,6

  dials.diffuse.reintegrate sweep_1/experiment.expt sweep_2/experiment.expt \\
      sweep_1/mask.nxs sweep_2/mask.nxs scale_1.nxs scale_2.nxs subdivide=8,8,8

  dials.diffuse.reintegrate refined.expt mask.nxs scale.nxs subdivide=4,4,4 \\
      output_type=counts apply.offset=False
"""

phil_scope = (
    sweep_phil
    + """
include scope dials_diffuse.algorithms.diffuse.reintegrate.phil_scope
output {
  table = reintegrated.nxs
    .type = path
    .help = "The reintegrated voxel table."
}
"""
)


def main(params, inputs, run):
    experiments = inputs.experiments
    if len(experiments) == 0:
        raise UserError("give the refined .expt of each sweep")
    files = nexus_inputs_by_group(inputs, ["image_series", "mask"])
    files["scale"] = files.pop(None)
    for path in files["scale"]:
        if not is_scale_model_file(path):
            raise UserError(f"{path}: not a data.nxs, mask.nxs or scale.nxs")
    count = len(experiments)
    for kind, what in (
        ("image_series", "data.nxs"),
        ("mask", "mask.nxs"),
        ("scale", "scale.nxs"),
    ):
        if files[kind] and len(files[kind]) != count:
            raise UserError(
                f"{len(files[kind])} {what} for {count} sweep(s): give one per "
                "sweep, in the order of the experiments, or none"
            )
    if not files["mask"]:
        logger.warning(
            "No mask given: Bragg peaks are reintegrated with the diffuse signal"
        )
    if files["image_series"]:
        sweeps = [
            sweep_from_experiment(experiment, data_file=data)
            for experiment, data in zip(experiments, files["image_series"])
        ]
    else:
        sweeps = [
            sweep_from_experiment(experiment, imageset=readable.imageset)
            for experiment, readable in zip(experiments, readable_experiments(inputs))
        ]
    with run.timer("reintegrate"), parallel_map_from_params(params) as pmap:
        result = do_reintegrate(
            sweeps,
            params,
            pmap,
            masks=[MaskFile(path) for path in files["mask"]] or None,
            models=[read_scale_model(path) for path in files["scale"]] or None,
            frame_ranges=[sweep.frame_range(params.image_range) for sweep in sweeps],
            frames_per_chunk=params.frames_per_chunk,
        )
    run.results.update(result.summary())
    with run.write(params.output.table, "reintegrated table") as path:
        write_tables(path, [result.table])


program = Program(
    name="reintegrate",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
