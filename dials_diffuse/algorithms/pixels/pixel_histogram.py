"""The pixel histogram step: pixel values of shoeboxes or images, and their anomalies.

Two sources of pixels: the shoeboxes of reflection tables, one histogram per
experiment (`shoeboxes.histogram_shoeboxes`), or the raw images of any
number of sweeps and sets of stills, one histogram per detector panel
(`histograms.histogram_shots`). Either way the notches and pile-ups of the
histogram are then found (`anomalies.find_histogram_anomalies`) and the
figures logged.
"""

import dataclasses
import logging

import numpy as np
from libtbx.phil import parse

from dials_diffuse.algorithms.pixels.anomalies import find_histogram_anomalies
from dials_diffuse.algorithms.pixels.histograms import histogram_shots
from dials_diffuse.algorithms.pixels.shoeboxes import (
    DEFAULT_CHUNK_SIZE,
    experiment_groups,
    histogram_shoeboxes,
    select_reflections,
)
from dials_diffuse.images.shots import ShotReader

logger = logging.getLogger(__name__)

phil_scope = parse(
    f"""
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
"""
)


@dataclasses.dataclass
class PixelHistogramResult:
    """A histogram of pixel values and its anomalies.

    Attributes
    ----------
    histogram : PixelHistogram
        One group per experiment (shoeboxes) or per panel (images).
    anomalies : list of Anomaly
        The notches and pile-ups found.
    counted : dict
        What was histogrammed: {"reflections": n} or {"images": n,
        "image_sets": m}.
    title : str
        A title for plots ("Shoebox pixel values (foreground)").
    legend : list of str, optional
        Per group, the label with the experiment's first image file when
        known (shoeboxes); None: the labels.
    per_shot : pandas.DataFrame, optional
        Images: one row per image and panel (`histograms.SHOT_COLUMNS`).
    """

    histogram: object
    anomalies: list
    counted: dict
    title: str
    legend: list = None
    per_shot: object = None

    @property
    def empty(self):
        """True when no selected pixel fell inside the histogram range (no
        anomalies are looked for then)."""
        return not self.histogram.counts.any()

    def anomaly_rows(self):
        """The anomalies as dicts (kind, low, high, observed, expected,
        significance, group, ratio)."""
        return [{**vars(anomaly), "ratio": anomaly.ratio} for anomaly in self.anomalies]

    def summary(self):
        """The key results for a program's JSON summary."""
        histogram = self.histogram
        return {
            **self.counted,
            **histogram.summary(),
            "anomalies": self.anomaly_rows(),
            "groups": {
                label: int(row.sum())
                for label, row in zip(histogram.labels, histogram.counts)
            },
        }


def do_shoebox_histogram(reflections, experiments, params, nproc=None):
    """Histogram the shoebox pixels of reflection tables, one group per experiment.

    Parameters
    ----------
    reflections : list of flex.reflection_table
        With shoeboxes; experiment ids of later tables follow those of
        earlier ones (`shoeboxes.experiment_groups`).
    experiments : dxtbx ExperimentList
        Their experiments, for the legend (may be empty: images not needed).
    params : PHIL extract with the parameters of `phil_scope`
    nproc : int, optional
        Threads histogramming chunks of shoeboxes; None: every core.

    Returns
    -------
    PixelHistogramResult
    """
    tables = [select_reflections(table, params.selection.flag) for table in reflections]
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
        nproc=nproc,
    )
    # The legend names each experiment's first image file, when known.
    numbers, _ = experiment_groups(tables)
    legend = list(histogram.labels)
    for index, number in enumerate(numbers):
        if 0 <= number < len(experiments) and experiments[number].imageset:
            paths = experiments[number].imageset.paths()
            if paths:
                legend[index] += f" ({paths[0].rsplit('/', 1)[-1]})"
    return _with_anomalies(
        PixelHistogramResult(
            histogram=histogram,
            anomalies=[],
            counted={"reflections": n_reflections},
            title=f"Shoebox pixel values ({params.selection.pixels})",
            legend=legend,
        ),
        params,
    )


def do_image_histogram(experiments, params, pmap=None):
    """Histogram every pixel of the images, one group per detector panel.

    Parameters
    ----------
    experiments : dxtbx ExperimentList
        Sweeps and stills with readable images (`ShotReader`).
    params : PHIL extract with the parameters of `phil_scope`
    pmap : ParallelMap, optional
        Reads and histograms batches of images in parallel.

    Returns
    -------
    PixelHistogramResult
        With `per_shot`, one row per image and panel.
    """
    reader = ShotReader(experiments)
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
    counted = {
        "images": int(per_shot.groupby(["imageset", "image"]).ngroups),
        "image_sets": len(reader.sources),
    }
    return _with_anomalies(
        PixelHistogramResult(
            histogram=histogram,
            anomalies=[],
            counted=counted,
            title="Pixel values",
            per_shot=per_shot,
        ),
        params,
    )


def _with_anomalies(result, params):
    """Log the histogram (and the shots) and find its anomalies, unless it is
    empty (see `PixelHistogramResult.empty`)."""
    log_histogram(result.histogram)
    if not result.empty:
        if result.per_shot is not None:
            log_per_shot(result.per_shot, result.counted["image_sets"])
        result.anomalies = find_anomalies(result.histogram, params.anomalies)
    return result


def log_histogram(histogram):
    """Log the pixels counted and excluded, and each group's range."""
    summary = histogram.summary()
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
    if summary["pixels_counted"] and len(histogram.labels) > 1:
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


def log_per_shot(per_shot, n_image_sets):
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
        n_image_sets,
        means.median(),
        means.min(),
        means.max(),
        counted.min(),
        counted.max(),
    )
    empty = int((counted == 0).sum())
    if empty:
        logger.warning("%d shot(s) have no pixel inside the histogram range", empty)


def find_anomalies(histogram, options):
    """The notches and pile-ups of `histogram` (`options`: the `anomalies`
    scope of `phil_scope`), logged."""
    anomalies = find_histogram_anomalies(
        histogram,
        significance=options.significance,
        min_deviation=options.min_deviation,
        min_pixels=options.min_pixels,
        top_fraction=options.top_fraction,
    )
    if anomalies:
        logger.info("Anomalies found:")
        for anomaly in anomalies:
            logger.info("  %s", anomaly.describe())
    else:
        logger.info("No notch or pile-up found.")
    return anomalies
