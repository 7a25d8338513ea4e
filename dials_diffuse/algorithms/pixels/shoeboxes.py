"""Histograms of the pixel values inside DIALS shoeboxes, per experiment.

Commissioning scripts looped over shoeboxes in Python, one `flex.histogram` each.
Here the shoebox column is taken in bulk: DIALS serialises it (the same bytes
a `.refl` file holds) to one binary blob, and the C++ kernels walk that blob
and histogram every selected pixel of every shoebox in one call, with the GIL
released. Reflections are processed in chunks (one blob per chunk), so memory
stays bounded by the chunk size, and chunks run in parallel on threads,
each thread adding into its own accumulator.
"""

import dataclasses
import itertools
import logging
import threading

import msgpack
import numpy as np

from dials_diffuse import _kernels
from dials_diffuse.algorithms.pixels.histograms import PixelHistogram, default_bins
from dials_diffuse.util.compat import shoeboxes_with_data
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.parallel import ParallelMap
from dials_diffuse.util.progress import progress

logger = logging.getLogger(__name__)

# DIALS MaskCode values (dials.algorithms.shoebox.MaskCode).
MASK_VALID = 1
MASK_FOREGROUND = 4

# Which pixels of a shoebox are histogrammed: the mask bits they must have.
PIXEL_SELECTIONS = {
    "foreground": MASK_VALID | MASK_FOREGROUND,
    "valid": MASK_VALID,
    "all": 0,
}

# Reflection flags a selection may ask for.
FLAG_NAMES = ("indexed", "integrated", "strong")

# Reflections serialised at once. Small chunks are fastest: DIALS's
# serialiser slows down superlinearly with the size of its buffer.
DEFAULT_CHUNK_SIZE = 500

# Serialised shoeboxes kept in memory between the range and histogram passes.
CACHE_BYTES = 64 * 2**20


@dataclasses.dataclass
class ShoeboxChunk:
    """One chunk of the shoebox column, serialised, and where each record lies.

    Attributes
    ----------
    blob : ndarray of uint8
        The serialised `Shoebox<>` column.
    offset, pixels, mask_bytes : ndarray
        Per shoebox: byte offset of its data in `blob` (-1: no data), number
        of pixels, size of a mask value (4 or 1 bytes).
    group : ndarray of int32
        Per shoebox: the histogram row (group) it goes to.
    """

    blob: np.ndarray
    offset: np.ndarray
    pixels: np.ndarray
    mask_bytes: np.ndarray
    group: np.ndarray

    @property
    def records(self):
        """The per-record arrays in the order the kernels take them."""
        return self.blob, self.offset, self.pixels, self.mask_bytes


def serialise_shoeboxes(shoeboxes):
    """The bytes of a `flex.shoebox` column as DIALS writes it, as uint8.

    Uses `reflection_table.as_msgpack` on a table holding only this column,
    in DIALS 3.12 (int32 masks) and newer (uint8 masks) alike.
    """
    from dials.array_family import flex

    table = flex.reflection_table()
    table["shoebox"] = shoeboxes
    document = msgpack.unpackb(table.as_msgpack(), raw=False, strict_map_key=False)
    type_name, column = document[2]["data"]["shoebox"]
    if type_name != "Shoebox<>":
        raise DataError(f"the shoebox column has type {type_name}, not Shoebox<>")
    size, blob = column  # [number of shoeboxes, the records as one binary]
    if size != len(shoeboxes):
        raise DataError(f"the serialised shoebox column holds {size} shoeboxes")
    return np.frombuffer(blob, dtype=np.uint8)


def shoebox_chunk(shoeboxes, group):
    """Serialise `shoeboxes` and locate each record; see `ShoeboxChunk`."""
    blob = serialise_shoeboxes(shoeboxes)
    try:
        _, _, offset, pixels, mask_bytes = _kernels.shoebox_layout(blob, len(shoeboxes))
    except ValueError as error:
        raise DataError(f"corrupt shoebox data: {error}") from error
    return ShoeboxChunk(blob, offset, pixels, mask_bytes, group)


def select_reflections(table, flag="indexed"):
    """Rows with `flag` set (one of FLAG_NAMES), or every row for None/'all'.

    Raises DataError when the table has no shoebox column or nothing is left.
    """
    if "shoebox" not in table:
        raise DataError(
            "the reflections have no shoebox column: use indexed.refl or "
            "strong.refl, where DIALS keeps the shoebox pixels"
        )
    if flag in (None, "all"):
        return table
    if flag not in FLAG_NAMES:
        raise DataError(f"unknown reflection flag {flag!r}: use one of {FLAG_NAMES}")
    selection = table.get_flags(getattr(table.flags, flag))
    selected = table.select(selection)
    if selected.size() == 0:
        raise DataError(
            f"none of the {table.size()} reflections is flagged {flag}: "
            "choose another selection.flag (or all)"
        )
    return selected


def experiment_groups(tables):
    """Experiment numbers present and, per table, each row's group index.

    The experiment ids of each table are shifted past those of the tables
    before it (as when several `.refl` files are given); rows with id -1
    (not assigned to an experiment) form a group of their own per table.

    Returns
    -------
    numbers : list of int
        The experiment number of each group (-1 for unassigned rows).
    groups : list of ndarray of int32
        Per table, the group index of each row.
    """
    shifted = []
    offset = 0
    for table in tables:
        ids = table["id"].as_numpy_array().astype(np.int64)
        assigned = ids >= 0
        # Unassigned rows of table k get a unique negative key -1 - k.
        shifted.append(np.where(assigned, ids + offset, -1 - len(shifted)))
        if assigned.any():
            offset += int(ids[assigned].max()) + 1
    present = np.unique(np.concatenate(shifted))
    order = np.concatenate([present[present >= 0], present[present < 0][::-1]])
    to_group = np.empty(present.size, dtype=np.int32)
    to_group[np.searchsorted(present, order)] = np.arange(order.size)
    groups = [to_group[np.searchsorted(present, keys)] for keys in shifted]
    numbers = [int(key) if key >= 0 else -1 for key in order]
    return numbers, groups


def _chunks(tables, groups, chunk_size):
    """(shoebox column slice, group slice) pairs of at most chunk_size rows."""
    from dials.array_family import flex

    for table, group in zip(tables, groups):
        shoeboxes = table["shoebox"]
        n = len(shoeboxes)
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            rows = flex.size_t_range(start, stop)
            yield shoeboxes.select(rows), group[start:stop]


def _scan_chunk(item, required):
    """Serialise one chunk and find its value range; return both."""
    chunk = shoebox_chunk(*item)
    return _kernels.shoebox_value_range(*chunk.records, required), chunk


def histogram_shoeboxes(
    tables,
    pixels="foreground",
    low=None,
    high=None,
    bins=None,
    labels=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
    nproc=None,
):
    """Histogram the shoebox pixel values of a reflection table, per experiment.

    Parameters
    ----------
    tables : flex.reflection_table or list of them
        Reflections with `shoebox` and `id` columns (already selected, e.g.
        by `select_reflections`). The experiments of several tables are
        numbered one after the other.
    pixels : {'foreground', 'valid', 'all'}
        Valid foreground pixels (mask Foreground|Valid), every valid pixel of
        the box, or every pixel of the box as commissioning scripts did.
    low, high : float, optional
        Range in counts. Default: 0 (or the lowest value if negative) to the
        highest selected value (+1 for whole numbers, so that the top value
        has its own unit bin).
    bins : int, optional
        Default: one unit bin per whole number (exact) when every selected
        value is a whole number and the range ends are whole, else 1000.
    labels : list of str, optional
        One label per experiment present; default ``experiment_<number>``.
    chunk_size : int
        Reflections serialised and histogrammed at once.
    nproc : int, optional
        Threads; None: every core.

    Returns
    -------
    PixelHistogram
        One group per experiment present (in increasing number, rows not
        assigned to an experiment last), `masked` counting the pixels the
        mask selection excluded.
    """
    if not isinstance(tables, (list, tuple)):
        tables = [tables]
    if pixels not in PIXEL_SELECTIONS:
        raise DataError(f"unknown pixel selection {pixels!r}")
    required = PIXEL_SELECTIONS[pixels]
    with_data = sum(
        int(shoeboxes_with_data(table["shoebox"]).sum()) for table in tables
    )
    n_rows = sum(table.size() for table in tables)
    if with_data == 0:
        raise DataError(
            f"none of the {n_rows} selected shoeboxes holds pixel data (DIALS keeps "
            "shoebox pixels in indexed.refl and strong.refl, not after integration)"
        )
    if with_data < n_rows:
        logger.warning(
            "%d of %d shoeboxes hold no pixel data and are skipped",
            n_rows - with_data,
            n_rows,
        )
    numbers, groups = experiment_groups(tables)
    if labels is None:
        labels = [f"experiment_{i}" if i >= 0 else "unassigned" for i in numbers]

    with ParallelMap(nproc=nproc) as pmap:
        # Serialised chunks kept from the range pass for the histogram pass,
        # up to CACHE_BYTES (the rest are serialised again).
        cached = []
        if low is None or high is None or bins is None:
            selected, lowest, highest, integer = 0, np.inf, -np.inf, True
            cached_bytes, caching = 0, True
            for (n, lo, hi, whole), chunk in pmap(
                lambda item: _scan_chunk(item, required),
                _chunks(tables, groups, chunk_size),
            ):
                selected += n
                lowest, highest = min(lowest, lo), max(highest, hi)
                integer = integer and whole
                caching = caching and cached_bytes + chunk.blob.nbytes <= CACHE_BYTES
                if caching:
                    cached.append(chunk)
                    cached_bytes += chunk.blob.nbytes
            if selected == 0:
                raise DataError("the selected shoeboxes hold no selected pixel")
            if low is None:
                low = min(0.0, np.floor(lowest))
            if high is None:
                high = highest + 1.0 if integer else highest
                if not high > low:
                    high = low + 1.0
        else:
            integer = False
        n_bins = default_bins(low, high, integer, bins)
        histogram = PixelHistogram.empty(low, high, n_bins, labels)

        # One accumulator per worker thread: no per-chunk allocation, no race.
        accumulators = {}
        lock = threading.Lock()

        def work(item):
            chunk = item if isinstance(item, ShoeboxChunk) else shoebox_chunk(*item)
            key = threading.get_ident()
            with lock:
                if key not in accumulators:
                    accumulators[key] = (
                        np.zeros_like(histogram.counts),
                        np.zeros((len(labels), 4), dtype=np.int64),
                    )
                counts, tally = accumulators[key]
            _kernels.shoebox_histogram(
                *chunk.records, chunk.group, required, low, high, counts, tally
            )

        n_chunks = sum(-(-t.size() // chunk_size) for t in tables)
        for _ in progress(
            pmap(
                work,
                itertools.chain(
                    cached,
                    itertools.islice(
                        _chunks(tables, groups, chunk_size), len(cached), None
                    ),
                ),
            ),
            total=n_chunks,
            desc="Shoebox histogram",
            unit="chunk",
        ):
            pass
        for counts, tally in accumulators.values():
            histogram.counts += counts
            histogram.underflow += tally[:, 0]
            histogram.overflow += tally[:, 1]
            histogram.nan += tally[:, 2]
            histogram.masked += tally[:, 3]
    return histogram
