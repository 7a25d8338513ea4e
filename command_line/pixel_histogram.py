"""dials.diffuse.pixel_histogram: histograms of raw pixel values."""

import logging
import sys

from dials_diffuse.algorithms.pixels.histograms import histogram_imageset
from dials_diffuse.io.histogram_files import plot_histogram, write_csv, write_two_column
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.pixel_histogram")

help_message = """
Histogram the pixel values of images, per detector panel, to look at the
detector's response: a notch (a gain-switching artefact), pile-up below
saturation, the background level. Pixels that DIALS masks (module gaps, bad
pixels, values outside the trusted range) are excluded and counted.

Images come as image files (any format dxtbx reads) or as an experiment list.
Integer data get exact unit bins by default, from 0 to the overload value;
the tables list only the bins from the first to the last one occupied.

Outputs: pixel_histogram.hist (two columns, bin centre and count, as
flex.histogram scripts write), pixel_histogram.csv (every panel), a log-scale
plot pixel_histogram.png, and output.json= for pipelines.

Examples:

  dials.diffuse.pixel_histogram images/*.cbf

  dials.diffuse.pixel_histogram imported.expt image_range=1,100 histogram.high=200

  dials.diffuse.pixel_histogram master.h5 histogram.low=0 histogram.high=12000 \\
      histogram.bins=12000 plot.zoom=0,50 output.json=histogram.json
"""

phil_scope = """
image_range = None
  .type = ints(size=2, value_min=1)
  .help = "First and last image to include, 1-based and inclusive. Default: all."
panel = None
  .type = ints(value_min=0)
  .help = "Detector panels to include (0-based). Default: all."
histogram {
  low = 0
    .type = float
    .help = "Lower edge of the first bin, in counts. Valid pixels below it are"
            "counted as underflow."
  high = None
    .type = float
    .help = "Upper edge of the last bin (inclusive), in counts. Default: the"
            "detector's upper trusted value (overload), so no valid pixel is lost."
  bins = None
    .type = int(value_min=1)
    .help = "Number of equal bins. Default: one per integer value (exact) for"
            "integer data, else 1000."
}
plot {
  zoom = None
    .type = floats(size=2)
    .help = "x range of the plot, e.g. 0,50 for the low-count region. Default:"
            "the occupied bins."
}
output {
  table = pixel_histogram.hist
    .type = path
    .help = "Two-column text: bin centre and total count per line."
  csv = pixel_histogram.csv
    .type = path
    .help = "CSV with bin edges, centres and one count column per panel."
  plot = pixel_histogram.png
    .type = path
    .help = "Log-scale plot of the histogram. None: no plot."
}
"""


def main(params, inputs, run):
    if inputs.reflections:
        raise UserError(
            "reflection files are not supported yet: give images or an experiment list"
        )
    if len(inputs.experiments) == 0:
        raise UserError("no images given: name image files or an experiment list")
    imagesets = inputs.experiments.imagesets()
    if len(imagesets) > 1:
        raise UserError(
            f"the input holds {len(imagesets)} image sets: give one sweep at a time"
        )
    imageset = imagesets[0]
    h = params.histogram
    with run.timer("histogram"):
        histogram = histogram_imageset(
            imageset,
            low=h.low,
            high=h.high,
            bins=h.bins,
            image_range=params.image_range,
            panels=params.panel,
        )
    summary = histogram.summary()
    run.results.update(summary)
    run.results["images"] = (
        params.image_range[1] - params.image_range[0] + 1
        if params.image_range
        else len(imageset)
    )
    logger.info(
        "Histogram of %d valid pixels in %d bins from %g to %g; masked %d, "
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
        raise UserError("no valid pixel falls inside the histogram range")
    with run.write(params.output.table, "histogram table") as path:
        write_two_column(histogram, path)
    with run.write(params.output.csv, "histogram CSV") as path:
        write_csv(histogram, path)
    if params.output.plot:
        with run.write(params.output.plot, "histogram plot") as path:
            plot_histogram(histogram, path, zoom=params.plot.zoom, title="Pixel values")


program = Program(
    name="pixel_histogram",
    phil=phil_scope,
    help=help_message,
    main=main,
    reads_images=True,
)


def run(args=None):
    """Entry point: run the program, return its exit code."""
    return program.run(args)


if __name__ == "__main__":
    sys.exit(run())
