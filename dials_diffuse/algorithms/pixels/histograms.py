"""Histograms of pixel values, accumulated by the C++ kernel.

A `PixelHistogram` holds counts for one or more groups (detector panels, or
experiments) on a common set of bins, plus the pixels that fell outside the
range, were NaN, or were masked. Bins are numpy's: equal width on
[low, high], the last closed on the right. With integer data, integer `low`
and unit width, each bin holds exactly one pixel value (exact integer bins).
"""

import dataclasses

import numpy as np
import pandas as pd

from dials_diffuse import _kernels
from dials_diffuse.images.imageset import image_numbers, read_frame
from dials_diffuse.images.source import frame_range
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.progress import progress

# Largest number of bins a default (unit-width) histogram may have.
MAX_DEFAULT_BINS = 1 << 22


@dataclasses.dataclass
class PixelHistogram:
    """Counts of pixel values for several groups on one set of bins.

    Attributes
    ----------
    low, high : float
        Range of the bins, in the pixel values' units (counts for raw data).
    counts : ndarray of int64, shape (groups, bins)
    underflow, overflow, nan, masked : ndarray of int64, shape (groups,)
        Valid pixels below `low`, above `high`, NaN; and pixels the mask
        excluded.
    labels : list of str
        One name per group (e.g. "panel 0", "experiment 2").
    """

    low: float
    high: float
    counts: np.ndarray
    underflow: np.ndarray
    overflow: np.ndarray
    nan: np.ndarray
    masked: np.ndarray
    labels: list

    @classmethod
    def empty(cls, low, high, bins, labels):
        groups = len(labels)
        zeros = np.zeros(groups, dtype=np.int64)
        return cls(
            low=float(low),
            high=float(high),
            counts=np.zeros((groups, bins), dtype=np.int64),
            underflow=zeros.copy(),
            overflow=zeros.copy(),
            nan=zeros.copy(),
            masked=zeros.copy(),
            labels=list(labels),
        )

    @property
    def bins(self):
        return self.counts.shape[1]

    @property
    def edges(self):
        """Bin edges, as numpy.histogram_bin_edges gives them."""
        return np.linspace(self.low, self.high, self.bins + 1)

    @property
    def centres(self):
        edges = self.edges
        return 0.5 * (edges[:-1] + edges[1:])

    @property
    def total(self):
        """Counts summed over groups."""
        return self.counts.sum(axis=0)

    def add(self, group, data, mask=None):
        """Accumulate one array of pixel values (and its validity mask) into `group`."""
        counts_row = self.counts[group]
        _, under, over, nan, masked = _kernels.histogram(
            np.ascontiguousarray(data),
            self.low,
            self.high,
            self.bins,
            mask=None if mask is None else np.ascontiguousarray(mask),
            counts=counts_row,
        )
        self.underflow[group] += under
        self.overflow[group] += over
        self.nan[group] += nan
        self.masked[group] += masked

    def occupied_range(self):
        """Slice of bins from the first to the last non-empty bin (all bins if none)."""
        nonzero = np.flatnonzero(self.total)
        if nonzero.size == 0:
            return slice(0, self.bins)
        return slice(int(nonzero[0]), int(nonzero[-1]) + 1)

    def to_frame(self, trim=True):
        """A pandas DataFrame: bin_low, bin_high, bin_centre, one count column per group, total.

        With `trim`, only bins from the first to the last non-empty one.
        """
        window = self.occupied_range() if trim else slice(0, self.bins)
        edges = self.edges
        frame = pd.DataFrame(
            {
                "bin_low": edges[:-1][window],
                "bin_high": edges[1:][window],
                "bin_centre": self.centres[window],
            }
        )
        for label, row in zip(self.labels, self.counts):
            frame[label] = row[window]
        frame["total"] = self.total[window]
        return frame

    def summary(self):
        """Key figures for logs and JSON: pixels counted, outside the range, masked."""
        total = self.total
        counted = int(total.sum())
        mean = float((self.centres * total).sum() / counted) if counted else None
        occupied = np.flatnonzero(total)
        return {
            "bins": self.bins,
            "low": self.low,
            "high": self.high,
            "pixels_counted": counted,
            "underflow": int(self.underflow.sum()),
            "overflow": int(self.overflow.sum()),
            "nan": int(self.nan.sum()),
            "masked": int(self.masked.sum()),
            "mean_value": mean,
            "lowest_occupied_bin": float(self.edges[occupied[0]])
            if occupied.size
            else None,
            "highest_occupied_bin": float(self.edges[occupied[-1]])
            if occupied.size
            else None,
        }


def default_bins(low, high, integer_data, bins=None):
    """Bins for [low, high]: `bins` if given; unit bins for integer data; else 1000.

    Raises DataError for an empty range or more unit bins than MAX_DEFAULT_BINS.
    """
    if not high > low:
        raise DataError(f"histogram range is empty: low={low} is not below high={high}")
    if bins:
        return int(bins)
    if integer_data and float(low).is_integer() and float(high).is_integer():
        n = int(high - low)
        if n > MAX_DEFAULT_BINS:
            raise DataError(
                f"range {low}..{high} would need {n} unit bins: set histogram.bins or a smaller range"
            )
        return n
    return 1000


def histogram_imageset(
    imageset, low=0, high=None, bins=None, image_range=None, panels=None
):
    """Histogram the raw pixel values of an imageset, per panel.

    Parameters
    ----------
    imageset : dxtbx ImageSet or ImageSequence
    low, high : float
        Range of values. `high` defaults to the first panel's upper trusted
        value (the overload level), so every valid pixel is inside.
    bins : int, optional
        Default: unit bins (exact for integer counts), else 1000.
    image_range : (int, int), optional
        First and last image number, inclusive, as DIALS's `image_range`
        (the sequence's image numbers, `images.source.frame_range`).
    panels : list of int, optional
        Panels to include; default all.

    Returns
    -------
    PixelHistogram
        One group per panel. Pixels that the DIALS mask excludes (gaps, bad
        pixels, outside the trusted range) are counted in `masked`.
    """
    start, stop = frame_range(image_numbers(imageset), image_range)
    detector = imageset.get_detector()
    panels = list(range(len(detector))) if panels is None else list(panels)
    bad = [p for p in panels if not 0 <= p < len(detector)]
    if bad:
        raise DataError(
            f"panel {bad[0]} does not exist (the detector has {len(detector)})"
        )
    if high is None:
        high = float(detector[panels[0]].get_trusted_range()[1])
    histogram = None
    for index in progress(range(start, stop), desc="Histogram", unit="image"):
        data, valid = read_frame(imageset, index)
        if histogram is None:
            integer = np.issubdtype(data[panels[0]].dtype, np.integer)
            n_bins = default_bins(low, high, integer, bins)
            histogram = PixelHistogram.empty(
                low, high, n_bins, [f"panel_{p}" for p in panels]
            )
        for group, panel in enumerate(panels):
            histogram.add(group, data[panel], valid[panel])
    return histogram
