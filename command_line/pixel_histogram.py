"""dials.diffuse.pixel_histogram: histograms of raw or shoebox pixel values."""

import sys

from dials_diffuse.algorithms.pixels.pixel_histogram import (
    do_image_histogram,
    do_shoebox_histogram,
)
from dials_diffuse.io.histogram_files import (
    group_table_path,
    plot_histogram,
    write_anomaly_table,
    write_csv,
    write_two_column,
)
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program

help_message = """
Histogram pixel values to look at a detector's response: a notch (a gain
switching artefact), pile-up where the pixels are full, the background level.

From reflections (indexed.refl, integrated.refl, strong.refl): the pixels
inside the reflections' shoeboxes, one histogram per experiment (for example
one per sweep of a transmission series), all shoeboxes at once by a C++
kernel on nproc threads (dask.scheduler is for images only). selection.flag picks the reflections (indexed by default),
selection.pixels the pixels: the valid foreground of each shoebox (default),
every valid pixel of the box, or every pixel as a per-shoebox flex.histogram
loop would. An experiment list may be given too; it is not needed.

From images (any format dxtbx reads, or an experiment list with its images;
any number of sweeps and sets of stills, e.g. serial SSX/XFEL shots or a
grid scan): every pixel, per detector panel, summed over the images; pixels
that DIALS masks (module gaps, bad pixels, values outside the trusted range)
are excluded and counted. Images are read and histogrammed in parallel
(nproc=). Per image and panel, pixel_histogram_shots.csv gives the pixels
counted, masked and out of range, and their mean and largest value; the log
summarises the spread over the shots.

Whole-number data get exact unit bins by default, covering every value
counted; the tables list the bins from the first to the last one occupied.
Notches (bins far below their smooth neighbourhood) and pile-ups (excess at
the top end) are found automatically, judged by their Poisson significance,
and reported with the pixel values where they occur.

Outputs: pixel_histogram.hist (two columns, bin centre and count, as the
flex.histogram scripts wrote; the sum over groups) and, with several
experiments or panels, pixel_histogram_<group>.hist for each;
pixel_histogram.csv (every group as a column); the anomalies in
pixel_histogram_anomalies.csv; a log-scale plot
pixel_histogram.png with one colour per group and the anomalies shaded; and
output.json= for pipelines, with the anomalies.

Examples:

  dials.diffuse.pixel_histogram indexed.refl

  dials.diffuse.pixel_histogram indexed.refl indexed.expt plot.zoom=0,50

  dials.diffuse.pixel_histogram integrated.refl selection.flag=integrated \\
      selection.pixels=valid histogram.low=0 histogram.high=12000

  dials.diffuse.pixel_histogram images/*.cbf

  dials.diffuse.pixel_histogram imported.expt image_range=1,100 histogram.high=200

  dials.diffuse.pixel_histogram master.h5 histogram.low=0 histogram.high=12000 \\
      histogram.bins=12000 plot.zoom=0,50 output.json=histogram.json
"""

phil_scope = """
include scope dials_diffuse.algorithms.pixels.pixel_histogram.phil_scope
plot {
  zoom = None
    .type = floats(size=2)
    .help = "x range of the plot, e.g. 0,50 for the low-count region. Default:"
            "the occupied bins."
}
output {
  table = pixel_histogram.hist
    .type = path
    .help = "Two-column text: bin centre and count per line, summed over"
            "groups; with several groups also <name>_<group>.hist for each."
  csv = pixel_histogram.csv
    .type = path
    .help = "CSV with bin edges, centres, one count column per group and the total."
  plot = pixel_histogram.png
    .type = path
    .help = "Log-scale plot of the histograms. None: no plot."
  shots = pixel_histogram_shots.csv
    .type = path
    .help = "Images only: one row per image and panel (experiment, imageset,"
            "image, panel, pixels counted, masked, underflow, overflow, nan,"
            "mean, max). None: not written."
  anomalies = pixel_histogram_anomalies.csv
    .type = path
    .help = "The notches and pile-ups found: group, kind, pixel values low"
            "and high, observed and expected pixels, ratio, significance."
            "None: not written."
}
"""


def reads_images(file_names):
    """Experiment lists need their images unless reflections are given."""
    return not any(str(name).endswith(".refl") for name in file_names)


def main(params, inputs, run):
    with run.timer("histogram"):
        if inputs.reflections:
            result = do_shoebox_histogram(
                inputs.reflections, inputs.experiments, params, nproc=params.nproc
            )
        else:
            if len(inputs.experiments) == 0:
                raise UserError(
                    "nothing to histogram: name reflection files, image files or an "
                    "experiment list"
                )
            with parallel_map_from_params(params) as pmap:
                result = do_image_histogram(inputs.experiments, params, pmap)
    run.results.update(result.summary())
    if result.empty:
        raise UserError("no selected pixel falls inside the histogram range")
    write_outputs(result, params, run)


def write_outputs(result, params, run):
    """Write the tables (one per group too), the anomalies and the plot."""
    histogram = result.histogram
    groups = histogram.labels if len(histogram.labels) > 1 else []
    group_tables = {
        f"histogram table {label}": group_table_path(params.output.table, label)
        for label in groups
    }
    run.plan_outputs(group_tables)
    with run.write(params.output.table, "histogram table") as path:
        write_two_column(histogram, path)
    for group, (what, table_path) in enumerate(group_tables.items()):
        with run.write(table_path, what) as path:
            write_two_column(histogram, path, group=group)
    with run.write(params.output.csv, "histogram CSV") as path:
        write_csv(histogram, path)
    if result.per_shot is not None and params.output.shots:
        with run.write(params.output.shots, "per-shot table") as path:
            result.per_shot.to_csv(path, index=False)
    if params.output.anomalies:
        with run.write(params.output.anomalies, "anomaly table") as path:
            write_anomaly_table(result.anomaly_rows(), path)
    if params.output.plot:
        with run.write(params.output.plot, "histogram plot") as path:
            plot_histogram(
                histogram,
                path,
                zoom=params.plot.zoom,
                title=result.title,
                legend=result.legend,
                anomalies=result.anomalies,
            )


program = Program(
    name="pixel_histogram",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
    reads_images=reads_images,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
