"""Frame statistics: how stable the per-frame sums of a long image series are.

Every frame is summed (pixels outside [low, high] and masked pixels
excluded, `sums.sum_frames`), a slow drift removed (`detrend.detrend`), and
the raw and detrended sums described (`describe.describe_series`: count,
mean, standard deviation, CV%, quartiles): the beam and detector stability
check of the 2018 Eiger summing tool, on any number of image series.
"""

import dataclasses
import logging
import time

import numpy as np
from libtbx.phil import parse

from dials_diffuse.algorithms.frames.describe import describe_series
from dials_diffuse.algorithms.frames.detrend import detrend, running_cv
from dials_diffuse.algorithms.frames.sums import FrameSums, sum_frames
from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)

phil_scope = parse(
    """
image_range = None
  .type = ints(size=2, value_min=0)
  .help = "First and last image to sum, inclusive, numbered as DIALS numbers"
          "the sequence's images (a master file's from 1). A last image of 0"
          "means the last image of the series: image_range=101,0 sums from"
          "image 101 to the end (end: 0 of the 2018 Eiger summing tool's"
          "config.yaml). Default: all."
low = 0
  .type = float
  .help = "Pixels below this value (counts) are excluded from the sums."
high = None
  .type = float
  .help = "Pixels above this value (counts) are excluded from the sums. Default:"
          "no upper threshold (overloads and gap values are always excluded)."
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
"""
)


@dataclasses.dataclass
class FrameStatisticsResult:
    """The per-frame sums, their trend and the statistics table.

    Attributes
    ----------
    sums : FrameSums
        Per frame (and panel): sum, pixels used, largest value, invalid pixels.
    trend, detrended : ndarray of float
        The slow trend of the sums and the sums without it (keeping their
        mean), counts, one value per frame.
    table : pandas.DataFrame
        `describe_series` of the raw and detrended sums (columns "raw",
        "detrended").
    low, high : float
        The pixel value range summed (counts); `high` None for no upper limit.
    method : str
        The detrend method.
    seconds : float
        Wall time of the summing, s.
    """

    sums: FrameSums
    trend: np.ndarray
    detrended: np.ndarray
    table: object
    low: float
    high: object
    method: str
    seconds: float

    @property
    def statistics(self):
        """The statistics table as {column: {statistic: value}}."""
        return {
            column: {
                row: float(self.table.loc[row, column]) for row in self.table.index
            }
            for column in self.table.columns
        }

    def series(self):
        """The per-frame series (pandas.DataFrame): `FrameSums.to_frame` with
        the trend and the detrended sum."""
        series = self.sums.to_frame()
        series["trend"] = self.trend
        series["detrended"] = self.detrended
        return series

    def running_cv(self, window=None):
        """(window, raw, detrended): the running coefficient of variation (%)
        of the raw and detrended sums over `window` frames (default a tenth
        of the frames, at least 10)."""
        window = window or max(10, self.sums.sums.size // 10)
        return (
            window,
            running_cv(self.sums.sums, window),
            running_cv(self.detrended, window),
        )

    def summary(self):
        """The key results for a program's JSON summary."""
        sums = self.sums
        n = sums.sums.size
        return {
            "frames": int(n),
            "image_sets": int(np.unique(sums.imagesets).size)
            if sums.imagesets is not None
            else 1,
            "first_image": int(sums.image_numbers[0]),
            "last_image": int(sums.image_numbers[-1]),
            "low": self.low,
            "high": self.high,
            "detrend": self.method,
            "statistics": self.statistics,
            "frames_per_second": n / self.seconds if self.seconds else None,
            "invalid_pixels_per_frame": float(sums.invalid.mean()),
        }


def check_mask(mask, source):
    """DataError unless `mask` (one array per panel) has the panel shapes of `source`."""
    shapes = source.panel_shapes
    if [m.shape for m in mask] != [tuple(s) for s in shapes]:
        raise DataError(
            f"mask has panel shapes {[m.shape for m in mask]}, the images {shapes}"
        )


def do_frame_statistics(sources, params, pmap=None, mask=None):
    """Sum every frame of `sources`, remove the trend and describe the sums.

    Parameters
    ----------
    sources : list of EigerMasterSource or ShotReader
        The image series, one after the other (`sums.sum_frames`).
    params : PHIL extract with the parameters of `phil_scope`
    pmap : ParallelMap, optional
        Runs batches of frames in parallel; default one thread.
    mask : list of ndarray of bool, optional
        One per panel, True = use (a DIALS mask file), besides the detector's.

    Returns
    -------
    FrameStatisticsResult
    """
    if mask is not None:
        for source in sources:
            check_mask(mask, source)
    high = np.inf if params.high is None else params.high
    logger.info(
        "Summing pixels within [%g, %g] on %d worker(s)",
        params.low,
        high,
        pmap.workers if pmap is not None else 1,
    )
    start = time.perf_counter()
    sums = FrameSums.concatenate(
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
    seconds = time.perf_counter() - start
    n = sums.sums.size
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
    return FrameStatisticsResult(
        sums=sums,
        trend=trend,
        detrended=detrended,
        table=table,
        low=params.low,
        high=params.high,
        method=d.method,
        seconds=seconds,
    )
