"""dials.diffuse.frame_statistics: per-frame intensity statistics of an Eiger series."""

import logging
import sys
from pathlib import Path

import numpy as np

from dials_diffuse.algorithms.frames.statistics import do_frame_statistics
from dials_diffuse.images.eiger import EigerMasterSource, is_eiger_master
from dials_diffuse.images.shots import ShotReader
from dials_diffuse.io.dials_mask import read_dials_mask
from dials_diffuse.io.frame_plots import write_html, write_png
from dials_diffuse.io.redis_store import post_series, redis_key
from dials_diffuse.io.summing_tool_config import expand_config_files
from dials_diffuse.util.errors import DataError, UserError
from dials_diffuse.util.inputs import REFLECTION_SUFFIXES
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.frame_statistics")

help_message = """
Sum every frame of a long image series, with pixels outside [low, high]
excluded, and describe how stable the frame sums are: remove a slow drift
(detrend), then the count, mean, standard deviation, coefficient of
variation (CV% = std/mean*100), minimum, quartiles and maximum of the raw and
detrended sums. Used to check beam and detector stability from a diffuse
scatter (or flat-field) series.

Input: DECTRIS Eiger master files (fast path: raw chunks are decoded in
C++ threads, bitshuffle/LZ4, LZ4 or deflate), or experiment lists or any
images DIALS reads: any number of sweeps and sets of stills (serial SSX/XFEL
shots, grid scans), every image one frame of the series, in order. The detector mask (DECTRIS pixel_mask, module gaps),
gap values 2^N-1 and values above the saturation value are always excluded;
a DIALS mask file (mask=) excludes more. The 2018 Eiger summing tool's config.yaml (in /
filter / out / sys_settings) is accepted in place of parameters.

Outputs: frame_statistics.csv (one row per frame: experiment and imageset
when there are several, image, sum, pixels used, mean, max, invalid
(overloaded/gap) pixels, trend, detrended sum), frame_statistics_panels.csv
for a multi-panel detector (the same per frame and panel),
frame_statistics_summary.csv (the statistics table, also in the log and the
JSON summary), frame_statistics.html (interactive Plotly page, works
offline) and frame_statistics.png. With redis.enabled=True the series is
also posted to Redis (after the files are written) with an expiry.

Examples:

  dials.diffuse.frame_statistics series_master.h5 low=0 high=4500

  dials.diffuse.frame_statistics series_master.h5 image_range=1,10000 nproc=8 \\
      detrend.method=moving_window detrend.window=201

  dials.diffuse.frame_statistics imported.expt high=1000 mask=pixels.mask

  dials.diffuse.frame_statistics config.yaml

  dials.diffuse.frame_statistics series_master.h5 redis.enabled=True \\
      redis.host=127.0.0.1 redis.prefix=summed_eiger_frames redis.expire_days=7
"""

phil_scope = """
include scope dials_diffuse.algorithms.frames.statistics.phil_scope
mask = None
  .type = path
  .help = "A DIALS mask file (mask.pickle, from dials.generate_mask): pixels it"
          "marks False are excluded, besides the detector's own mask."
plot {
  cv_window = None
    .type = int(value_min=2)
    .help = "Window (frames) of the running coefficient of variation. Default:"
            "a tenth of the frames, at least 10."
}
redis {
  enabled = False
    .type = bool
    .help = "Also post the per-frame series (JSON) to a Redis key, after the"
            "files are written."
  host = 127.0.0.1
    .type = str
    .help = "Redis server host name or address."
  port = 6379
    .type = int(value_min=1, value_max=65535)
    .help = "Redis server port."
  db = 0
    .type = int(value_min=0)
    .help = "Redis database number."
  password = None
    .type = str
    .help = "Redis password (AUTH), never shown in the log or the summary."
            "None: the environment variable DIALS_DIFFUSE_REDIS_PASSWORD if"
            "set (keeps it off the command line), else no password."
  prefix = summed_eiger_frames
    .type = str
    .help = "Key prefix: the key is <prefix>:<absolute path of the input file>,"
            "unique per data set."
  key = None
    .type = str
    .help = "The whole Redis key, instead of <prefix>:<absolute path>."
  expire_days = 1
    .type = float(value_min=0)
    .help = "Time to live of the key, in days."
}
output {
  series = frame_statistics.csv
    .type = path
    .help = "Per-frame series (CSV): image, sum, pixels_used, mean, max,"
            "invalid, trend, detrended. None: not written."
  panels = frame_statistics_panels.csv
    .type = path
    .help = "Multi-panel detectors: one row per frame and panel (experiment,"
            "imageset, image, panel, sum, pixels_used, max, invalid). None: not"
            "written."
  statistics = frame_statistics_summary.csv
    .type = path
    .help = "The statistics table (CSV) of the raw and detrended sums."
  html = frame_statistics.html
    .type = path
    .help = "Interactive Plotly page (plotly.js embedded). None: not written."
  plot = frame_statistics.png
    .type = path
    .help = "The same plots as a PNG. None: not written."
}
"""


def open_sources(inputs):
    """The Eiger master sources, or one ShotReader of every image set, and a
    name for the plots and the Redis key."""
    if inputs.reflections or inputs.nexus:
        unwanted = inputs.nexus + [
            path for path in inputs.files if path.suffix in REFLECTION_SUFFIXES
        ]
        raise UserError(
            f"{unwanted[0]}: not images; give a master file, an experiment list or images"
        )
    if inputs.claimed:
        if len(inputs.experiments):
            raise UserError(
                f"{inputs.claimed[0]}: give Eiger master files or other images, "
                "not both"
            )
        sources = []
        for path in inputs.claimed:
            source = EigerMasterSource(path)
            logger.info("Reading %s: %s", path, source.describe())
            sources.append(source)
        return sources, inputs.claimed[0]
    if len(inputs.experiments) == 0:
        raise UserError(
            "no images given: name an Eiger master file, images or an .expt"
        )
    reader = ShotReader(inputs.experiments)
    logger.info(
        "Reading %d image set(s) through dxtbx (%d panel(s))",
        len(reader.sources),
        len(reader.panel_shapes),
    )
    return [reader], Path(reader.path(reader.shots()[0]))


def main(params, inputs, run):
    sources, source_path = open_sources(inputs)
    mask = read_dials_mask(params.mask) if params.mask else None
    with run.timer("sum frames"), parallel_map_from_params(params) as pmap:
        result = do_frame_statistics(sources, params, pmap, mask)
    write_outputs(result, params, run, source_path)


def write_outputs(result, params, run, source_path):
    """Write the tables and plots, post to Redis if asked; record the results."""
    run.results.update(result.summary())
    sums = result.sums
    if params.output.series:
        with run.write(params.output.series, "per-frame series") as path:
            result.series().to_csv(path, index=False)
    if sums.panels is not None and params.output.panels:
        with run.write(params.output.panels, "per-panel sums") as path:
            sums.panels.to_csv(path, index=False)
    with run.write(params.output.statistics, "statistics table") as path:
        result.table.to_csv(path, index_label="statistic")
    window, cv_raw, cv_detrended = result.running_cv(params.plot.cv_window)
    several = sums.imagesets is not None and np.unique(sums.imagesets).size > 1
    plot_args = (
        np.arange(1, sums.sums.size + 1) if several else sums.image_numbers,
        sums.sums,
        result.trend,
        result.detrended,
        cv_raw,
        cv_detrended,
        window,
        source_path.name,
    )
    if params.output.html:
        with (
            run.timer("plots"),
            run.write(params.output.html, "interactive plot") as path,
        ):
            write_html(path, *plot_args)
    if params.output.plot:
        with run.timer("plots"), run.write(params.output.plot, "plot") as path:
            write_png(path, *plot_args)

    if params.redis.enabled:
        r = params.redis
        key = redis_key(r.prefix, source_path, r.key)
        payload = {
            "source": str(source_path),
            "image": sums.image_numbers.tolist(),
            "sum": sums.sums.tolist(),
            "pixels_used": sums.used.tolist(),
            "low": params.low,
            "high": params.high,
            "statistics": result.statistics,
        }
        try:
            expiry = post_series(
                key, payload, r.host, r.port, r.db, r.password, r.expire_days
            )
        except DataError as error:
            raise UserError(
                f"could not post to Redis ({error}); the results are in the files written"
            ) from error
        run.results["redis_key"] = key
        logger.info("Posted the series to Redis key %s (expires in %d s)", key, expiry)


program = Program(
    name="frame_statistics",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
    reads_images=True,
    claim_file=is_eiger_master,
    expand_args=expand_config_files,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
