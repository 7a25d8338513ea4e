"""dials.diffuse.intensity_linearity: intensities against a reference across transmissions."""

import logging
import sys

from dials_diffuse.algorithms.pixels.linearity import do_intensity_linearity
from dials_diffuse.io.linearity_files import (
    pair_file_path,
    plot_deviation,
    plot_ratio,
    plot_scatter,
    write_pair_file,
)
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.intensity_linearity")

help_message = """
Check that measured intensities scale with the beam transmission: the same
crystal measured at several transmissions (one experiment each, integrated
together), every reflection matched to the same reflection in a reference
experiment, and the ratio of intensities compared with the ratio of
transmissions.

Reflections match on Miller index and `entering` (the same side of the Ewald
sphere); where a reflection occurs more than once the nearest in predicted
position pairs, and match.max_separation= also drops pairs farther apart, as
DIALS's reflection_table.match does. Only integrated reflections with
I/sigma >= min_i_over_sigma in both experiments are used, profile-fitted
(prf) or summation (sum) intensities.

The transmission of each experiment comes from transmission.values=, else
from the beam models (when they record one), else from the image file or
directory names (e.g. 00661_insulin_scan_360deg_0.064transmission). The
reference is the experiment with the highest transmission unless reference=
says otherwise.

Outputs: intensity_linearity.csv (per experiment: transmission, matched
pairs, mean and median ratio, deviation from linearity), the fit of ratio
against relative transmission (slope, intercept, R^2) in the log and JSON,
intensity_linearity_bins.csv (the ratio per bin of reference intensity,
where a non-linear response shows), pair0.dat, pair1.dat, ... (reference and
experiment intensity per matched reflection, as the commissioning scripts wrote),
a log-log scatter plot, a ratio-against-transmission plot and a plot of the
deviation from linearity against intensity.

Examples:

  dials.diffuse.intensity_linearity integrated.refl integrated.expt

  dials.diffuse.intensity_linearity integrated.refl integrated.expt reference=4 \\
      intensity=sum min_i_over_sigma=5

  dials.diffuse.intensity_linearity integrated.refl integrated.expt \\
      transmission.values=0.064,0.127,0.253,0.503,1.0 match.max_separation=3
"""

phil_scope = """
include scope dials_diffuse.algorithms.pixels.linearity.phil_scope
output {
  table = intensity_linearity.csv
    .type = path
    .help = "Per experiment: transmission, pairs, mean and median ratio, deviation."
  bins = intensity_linearity_bins.csv
    .type = path
    .help = "Median ratio and deviation from linearity per bin of reference intensity."
  pairs = pair
    .type = path
    .help = "Prefix of the pair files: <prefix><experiment>.dat with the"
            "reference and experiment intensity of each matched reflection."
            "None: not written."
  scatter_plot = intensity_linearity_scatter.png
    .type = path
    .help = "Log-log plot of intensities against the reference. None: no plot."
  ratio_plot = intensity_linearity_ratio.png
    .type = path
    .help = "Intensity ratio against relative transmission, with the fit. None: no plot."
  deviation_plot = intensity_linearity_deviation.png
    .type = path
    .help = "Deviation from linearity against reference intensity. None: no plot."
}
"""


def _single_table(inputs):
    if len(inputs.reflections) != 1:
        raise UserError(
            f"give one integrated reflection file (got {len(inputs.reflections)})"
        )
    return inputs.reflections[0]


def main(params, inputs, run):
    table = _single_table(inputs)
    experiments = inputs.experiments if len(inputs.experiments) else None
    with run.timer("linearity"):
        result = do_intensity_linearity(table, experiments, params)
    run.results.update(result.summary())
    if result.experiments["matched"].drop(result.reference).sum() == 0:
        raise UserError("no reflection of another experiment matches the reference")

    pair_files = {
        f"pairs of experiment {number}": pair_file_path(params.output.pairs, number)
        for number in (result.pairs if params.output.pairs else {})
    }
    run.plan_outputs(pair_files)
    with run.write(params.output.table, "linearity table") as path:
        result.experiments.to_csv(path, index=False)
    with run.write(params.output.bins, "deviation per intensity bin") as path:
        result.bins.to_csv(path, index=False)
    for (what, target), pairs in zip(pair_files.items(), result.pairs.values()):
        with run.write(target, what) as path:
            write_pair_file(pairs, path)
    if params.output.scatter_plot:
        with run.write(params.output.scatter_plot, "scatter plot") as path:
            plot_scatter(result, path)
    if params.output.ratio_plot:
        with run.write(params.output.ratio_plot, "ratio plot") as path:
            plot_ratio(result, path)
    if params.output.deviation_plot:
        with run.write(params.output.deviation_plot, "deviation plot") as path:
            plot_deviation(result, path)


program = Program(
    name="intensity_linearity",
    phil=phil_scope,
    help=help_message,
    main=main,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
