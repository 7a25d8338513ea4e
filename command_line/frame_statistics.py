"""dials.diffuse.frame_statistics: per-frame intensity statistics of an Eiger series."""

import logging
import sys
from pathlib import Path

import numpy as np

from dials_diffuse.algorithms.frames.describe import describe_series
from dials_diffuse.algorithms.frames.detrend import detrend, running_cv
from dials_diffuse.algorithms.frames.sums import FrameSums, sum_frames
from dials_diffuse.images.eiger import EigerMasterSource, is_eiger_master
from dials_diffuse.images.shots import ShotReader
from dials_diffuse.io.dials_mask import read_dials_mask
from dials_diffuse.io.frame_plots import write_html, write_png
from dials_diffuse.io.redis_store import post_series, redis_key
from dials_diffuse.io.seed_config import arguments_from_seed_config
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
image_range = None
  .type = ints(size=2, value_min=0)
  .help = "First and last image to sum, inclusive, numbered as DIALS numbers"
          "the sequence's images (a master file's from 1); a last image of 0"
          "means the last image of the series. Default: all."
low = 0
  .type = float
  .help = "Pixels below this value (counts) are excluded from the sums."
high = None
  .type = float
  .help = "Pixels above this value (counts) are excluded from the sums. Default:"
          "no upper threshold (overloads and gap values are always excluded)."
mask = None
  .type = path
  .help = "A DIALS mask file (mask.pickle, from dials.generate_mask): pixels it"
          "marks False are excluded, besides the detector's own mask."
batch_frames = Auto
  .type = int(value_min=1)
  .help = "Frames summed per parallel task. Memory holds about nproc x 2 batches"
          "of compressed frames. Auto: about 64 MB of pixels per batch (1 to 64"
          "frames)."
detrend {
  method = *linear polynomial moving_window none
    .type = choice
    .help = "How the slow trend is removed: a least-squares line, a polynomial"
            "of degree detrend.order, a centred moving mean over detrend.window"
            "frames, or nothing. The detrended series keeps the raw mean."
  order = 2
    .type = int(value_min=0)
    .help = "Polynomial degree for detrend.method=polynomial."
  window = 101
    .type = int(value_min=1)
    .help = "Window length (frames) for detrend.method=moving_window."
}
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


def check_mask(mask, source):
    if mask is None:
        return None
    shapes = source.panel_shapes
    if [m.shape for m in mask] != [tuple(s) for s in shapes]:
        raise UserError(
            f"mask has panel shapes {[m.shape for m in mask]}, the images {shapes}"
        )
    return mask


def concatenate_sums(parts):
    """One FrameSums of the frames of several Eiger series, with the series
    (imageset) of each frame."""
    if len(parts) == 1:
        return parts[0]
    return FrameSums(
        image_numbers=np.concatenate([p.image_numbers for p in parts]),
        sums=np.concatenate([p.sums for p in parts]),
        used=np.concatenate([p.used for p in parts]),
        maxima=np.concatenate([p.maxima for p in parts]),
        invalid=np.concatenate([p.invalid for p in parts]),
        imagesets=np.concatenate(
            [np.full(p.sums.size, i) for i, p in enumerate(parts)]
        ),
        experiments=np.concatenate(
            [np.full(p.sums.size, i) for i, p in enumerate(parts)]
        ),
    )


def main(params, inputs, run):
    sources, source_path = open_sources(inputs)
    mask = read_dials_mask(params.mask) if params.mask else None
    for source in sources:
        check_mask(mask, source)
    high = np.inf if params.high is None else params.high
    with run.timer("sum frames"), parallel_map_from_params(params) as pmap:
        logger.info(
            "Summing pixels within [%g, %g] on %d worker(s)",
            params.low,
            high,
            pmap.workers,
        )
        sums = concatenate_sums(
            [
                sum_frames(
                    source,
                    image_range=params.image_range,
                    low=params.low,
                    high=high,
                    mask=mask,
                    pmap=pmap,
                    batch_frames=params.batch_frames
                    if isinstance(params.batch_frames, int)
                    else None,
                )
                for source in sources
            ]
        )
    n = sums.sums.size
    seconds = run.timings["sum frames"]
    logger.info(
        "Summed %d frames in %.2f s (%.1f frames/s); %.0f pixels used per frame on average",
        n,
        seconds,
        n / seconds if seconds else np.inf,
        sums.used.mean(),
    )
    if sums.invalid.any():
        logger.info(
            "Excluded overloaded/gap values (not in the static mask): %.1f pixels per "
            "frame on average, at most %d in one frame",
            sums.invalid.mean(),
            sums.invalid.max(),
        )
    if np.any(sums.used == 0):
        logger.warning(
            "%d frame(s) have no pixel within [%g, %g]",
            int(np.sum(sums.used == 0)),
            params.low,
            high,
        )
    d = params.detrend
    detrended, trend = detrend(sums.sums, d.method, d.order, d.window)
    table = describe_series({"raw": sums.sums, "detrended": detrended})
    logger.info(
        "Descriptive statistics of the frame sums (detrend: %s):\n%s",
        d.method,
        table.to_string(float_format=lambda v: f"{v:.6e}"),
    )
    statistics = {
        column: {row: float(table.loc[row, column]) for row in table.index}
        for column in table.columns
    }
    run.results.update(
        {
            "frames": int(n),
            "image_sets": int(np.unique(sums.imagesets).size)
            if sums.imagesets is not None
            else 1,
            "first_image": int(sums.image_numbers[0]),
            "last_image": int(sums.image_numbers[-1]),
            "low": params.low,
            "high": None if params.high is None else params.high,
            "detrend": d.method,
            "statistics": statistics,
            "frames_per_second": n / seconds if seconds else None,
            "invalid_pixels_per_frame": float(sums.invalid.mean()),
        }
    )
    series = sums.to_frame()
    series["trend"] = trend
    series["detrended"] = detrended

    if params.output.series:
        with run.write(params.output.series, "per-frame series") as path:
            series.to_csv(path, index=False)
    if sums.panels is not None and params.output.panels:
        with run.write(params.output.panels, "per-panel sums") as path:
            sums.panels.to_csv(path, index=False)
    with run.write(params.output.statistics, "statistics table") as path:
        table.to_csv(path, index_label="statistic")
    window = params.plot.cv_window or max(10, n // 10)
    cv_raw, cv_detrended = running_cv(sums.sums, window), running_cv(detrended, window)
    several = sums.imagesets is not None and np.unique(sums.imagesets).size > 1
    plot_args = (
        np.arange(1, n + 1) if several else sums.image_numbers,
        sums.sums,
        trend,
        detrended,
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
            "high": None if params.high is None else params.high,
            "statistics": statistics,
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


def expand_config_files(args):
    """Replace a config.yaml argument (of the 2018 Eiger summing tool) by the arguments it stands for."""
    expanded = []
    for arg in args:
        if arg.lower().endswith((".yaml", ".yml")) and "=" not in arg:
            expanded.extend(arguments_from_seed_config(arg))
        else:
            expanded.append(arg)
    return expanded


program = Program(
    name="frame_statistics",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
    reads_images=True,
    claim_file=is_eiger_master,
)


def run(args=None):
    """Entry point: run the program, return its exit code."""
    args = list(sys.argv[1:] if args is None else args)
    try:
        args = expand_config_files(args)
    except DataError as error:
        print(f"{program.full_name}: error: {error}", file=sys.stderr)
        return error.exit_code
    return program.run(args)


if __name__ == "__main__":
    sys.exit(run())
