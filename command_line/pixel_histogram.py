"""dials.diffuse.pixel_histogram: histograms of raw or shoebox pixel values."""

import logging
import sys

import numpy as np
import pandas as pd

from dials_diffuse.algorithms.pixels.anomalies import find_histogram_anomalies
from dials_diffuse.algorithms.pixels.histograms import histogram_shots
from dials_diffuse.algorithms.pixels.shoeboxes import (
    DEFAULT_CHUNK_SIZE,
    experiment_groups,
    histogram_shoeboxes,
    select_reflections,
)
from dials_diffuse.images.shots import ShotReader
from dials_diffuse.io.histogram_files import (
    group_table_path,
    plot_histogram,
    write_csv,
    write_two_column,
)
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.pixel_histogram")

ANOMALY_COLUMNS = [
    "group",
    "kind",
    "low",
    "high",
    "observed",
    "expected",
    "ratio",
    "significance",
]

help_message = """
Histogram pixel values to look at a detector's response: a notch (a gain
switching artefact), pile-up where the pixels are full, the background level.

From reflections (indexed.refl, integrated.refl, strong.refl): the pixels
inside the reflections' shoeboxes, one histogram per experiment (for example
one per sweep of a transmission series), all shoeboxes at once by a C++
kernel. selection.flag picks the reflections (indexed by default),
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

phil_scope = f"""
selection {{
  flag = *indexed integrated strong all
    .type = choice
    .help = "Reflections whose shoeboxes are histogrammed: those with this"
            "flag, or all."
  pixels = *foreground valid all
    .type = choice
    .help = "Pixels of each shoebox: the valid foreground (mask"
            "Foreground|Valid), every valid pixel of the box, or every pixel"
            "of the box (valid or not)."
  nproc = Auto
    .type = int(value_min=1)
    .help = "Threads histogramming chunks of shoeboxes (the kernels release"
            "the GIL). Auto: every core."
  chunk_size = {DEFAULT_CHUNK_SIZE}
    .type = int(value_min=1)
    .help = "Reflections serialised and histogrammed at once: bounds the"
            "memory used (small chunks are also the fastest)."
}}
image_range = None
  .type = ints(size=2, value_min=1)
  .help = "Images only: first and last image to include, inclusive, numbered"
          "as DIALS numbers the sequence's images (stills: 1, 2, ... in their"
          "files), in every image set. Default: all."
panel = None
  .type = ints(value_min=0)
  .help = "Images only: detector panels to include (0-based). Default: all."
histogram {{
  low = None
    .type = float
    .help = "Lower edge of the first bin, in counts. Valid pixels below it are"
            "counted as underflow. Default: 0 (or the lowest shoebox value when"
            "that is negative)."
  high = None
    .type = float
    .help = "Upper edge of the last bin (inclusive), in counts. Default: for"
            "shoeboxes, just above the highest value counted; for images, the"
            "detector's upper trusted value (overload)."
  bins = None
    .type = int(value_min=1)
    .help = "Number of equal bins. Default: one per whole number (exact) for"
            "whole-number data, else 1000."
}}
anomalies {{
  significance = 5
    .type = float(value_min=0)
    .help = "Poisson significance (standard deviations) a notch or pile-up"
            "must reach, counting the uncertainty of its expected value."
  min_deviation = 0.3
    .type = float(value_min=0)
    .help = "Relative deviation from the expected count it must reach"
            "(0.3: 30% missing or in excess)."
  min_pixels = 20
    .type = float(value_min=0)
    .help = "Pixels it must miss or have in excess."
  top_fraction = 0.01
    .type = float(value_min=0, value_max=1)
    .help = "Pile-ups are looked for among this highest fraction of the pixels."
}}
plot {{
  zoom = None
    .type = floats(size=2)
    .help = "x range of the plot, e.g. 0,50 for the low-count region. Default:"
            "the occupied bins."
}}
output {{
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
}}
"""


def reads_images(file_names):
    """Experiment lists need their images unless reflections are given."""
    return not any(str(name).endswith(".refl") for name in file_names)


def histogram_reflections(params, inputs):
    """The shoebox histogram of the reflection files, and legend texts."""
    tables = [
        select_reflections(table, params.selection.flag) for table in inputs.reflections
    ]
    n_reflections = sum(table.size() for table in tables)
    logger.info(
        "Histogramming the pixels (%s) of %d shoeboxes (reflections: %s)",
        params.selection.pixels,
        n_reflections,
        params.selection.flag,
    )
    h = params.histogram
    histogram = histogram_shoeboxes(
        tables,
        pixels=params.selection.pixels,
        low=h.low,
        high=h.high,
        bins=h.bins,
        chunk_size=params.selection.chunk_size,
        nproc=params.selection.nproc,
    )
    # The legend names each experiment's first image file, when known.
    numbers, _ = experiment_groups(tables)
    legend = list(histogram.labels)
    experiments = inputs.experiments
    for index, number in enumerate(numbers):
        if 0 <= number < len(experiments) and experiments[number].imageset:
            paths = experiments[number].imageset.paths()
            if paths:
                legend[index] += f" ({paths[0].rsplit('/', 1)[-1]})"
    return histogram, legend, n_reflections


def histogram_images(params, inputs, pmap):
    """The per-panel histogram of the images, per-shot rows, and the reader."""
    if len(inputs.experiments) == 0:
        raise UserError(
            "nothing to histogram: name reflection files, image files or an "
            "experiment list"
        )
    reader = ShotReader(inputs.experiments)
    shots = reader.shots(params.image_range)
    logger.info(
        "Histogramming %d image(s) of %d image set(s), %d panel(s)",
        len(shots),
        len(reader.sources),
        len(reader.panel_shapes) if params.panel is None else len(params.panel),
    )
    h = params.histogram
    histogram, per_shot = histogram_shots(
        reader,
        shots,
        low=0 if h.low is None else h.low,
        high=h.high,
        bins=h.bins,
        panels=params.panel,
        pmap=pmap,
    )
    return histogram, per_shot, reader


def log_per_shot(per_shot, reader):
    """Summarise the per-shot table: the spread of the shots' mean values."""
    frame = per_shot.assign(total=(per_shot["mean"] * per_shot["pixels"]).fillna(0))
    shots = frame.groupby(["imageset", "image"], sort=False)[["total", "pixels"]].sum()
    counted = shots["pixels"]
    means = (shots["total"] / counted.where(counted > 0)).dropna()
    if means.empty:
        return
    logger.info(
        "Per shot (%d shots of %d image set(s)): mean pixel value %.4g (median), "
        "%.4g to %.4g; pixels counted %d to %d",
        len(counted),
        len(reader.sources),
        means.median(),
        means.min(),
        means.max(),
        counted.min(),
        counted.max(),
    )
    empty = int((counted == 0).sum())
    if empty:
        logger.warning("%d shot(s) have no pixel inside the histogram range", empty)


def main(params, inputs, run):
    per_shot = None
    with run.timer("histogram"):
        if inputs.reflections:
            histogram, legend, n_reflections = histogram_reflections(params, inputs)
            run.results["reflections"] = n_reflections
            title = f"Shoebox pixel values ({params.selection.pixels})"
        else:
            with parallel_map_from_params(params) as pmap:
                histogram, per_shot, reader = histogram_images(params, inputs, pmap)
            run.results["images"] = int(per_shot.groupby(["imageset", "image"]).ngroups)
            run.results["image_sets"] = len(reader.sources)
            legend = None
            title = "Pixel values"
    summary = histogram.summary()
    run.results.update(summary)
    logger.info(
        "Histogram of %d pixels in %d bins from %g to %g; excluded by the mask %d, "
        "below range %d, above range %d, NaN %d",
        summary["pixels_counted"],
        summary["bins"],
        summary["low"],
        summary["high"],
        summary["masked"],
        summary["underflow"],
        summary["overflow"],
        summary["nan"],
    )
    if summary["pixels_counted"] == 0:
        raise UserError("no selected pixel falls inside the histogram range")
    if len(histogram.labels) > 1:
        centres = histogram.centres
        for label, counts in zip(histogram.labels, histogram.counts):
            occupied = np.flatnonzero(counts)
            if occupied.size:
                logger.info(
                    "  %s: %d pixels, mean %.4g, from %g to %g",
                    label,
                    counts.sum(),
                    (centres * counts).sum() / counts.sum(),
                    histogram.edges[occupied[0]],
                    histogram.edges[occupied[-1]],
                )

    if per_shot is not None:
        log_per_shot(per_shot, reader)

    with run.timer("anomalies"):
        a = params.anomalies
        anomalies = find_histogram_anomalies(
            histogram,
            significance=a.significance,
            min_deviation=a.min_deviation,
            min_pixels=a.min_pixels,
            top_fraction=a.top_fraction,
        )
    if anomalies:
        logger.info("Anomalies found:")
        for anomaly in anomalies:
            logger.info("  %s", anomaly.describe())
    else:
        logger.info("No notch or pile-up found.")
    rows = [{**vars(anomaly), "ratio": anomaly.ratio} for anomaly in anomalies]
    run.results["anomalies"] = rows
    run.results["groups"] = {
        label: int(row.sum()) for label, row in zip(histogram.labels, histogram.counts)
    }

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
    if per_shot is not None and params.output.shots:
        with run.write(params.output.shots, "per-shot table") as path:
            per_shot.to_csv(path, index=False)
    if params.output.anomalies:
        with run.write(params.output.anomalies, "anomaly table") as path:
            pd.DataFrame(rows, columns=ANOMALY_COLUMNS).to_csv(path, index=False)
    if params.output.plot:
        with run.write(params.output.plot, "histogram plot") as path:
            plot_histogram(
                histogram,
                path,
                zoom=params.plot.zoom,
                title=title,
                legend=legend,
                anomalies=anomalies,
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
