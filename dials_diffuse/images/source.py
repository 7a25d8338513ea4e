"""The ImageSource interface: a stack of frames read chunk by chunk.

Every image reader of dials-diffuse (any dxtbx imageset, the fast HDF5 path
for NXmx/Eiger files, SACLA DataConvert files, our own data.nxs) implements
this interface, so algorithms never care where pixels come from. A *chunk* is
always a block of frames x rows x columns of one panel.

Conventions
-----------
- Frames are numbered 0 .. n_frames-1 within the source; `image_numbers`
  gives the DIALS image number of each (the scan's numbers, which need not
  start at 1), and `frame_range` turns a DIALS `image_range` into frames.
- `read` returns raw values in the detector's dtype, with a validity mask:
  True where the pixel is usable (the DIALS convention). Gap, bad-pixel and
  overload values are marked invalid in the mask, never used as numbers.
- Memory is bounded by the chunk asked for: sources never load whole data
  sets.
- Non-finite pixel values (NaN, ±Inf in floating-point images) are excluded
  like masked pixels, never used as numbers, and counted
  (`exclude_non_finite`): the program runner logs the count per file at the
  end of the run. (Non-finite model parameters and table values are a
  `DataError` naming the file: `dials_diffuse.io.tables.load_table`.)
"""

import abc
import collections
import dataclasses
import threading

import numpy as np

from dials_diffuse.util.errors import DataError


def frame_range(image_numbers, image_range=None):
    """0-based half-open frame range of a source for a DIALS `image_range`.

    DIALS's rule (``dials.import image_range=``, ``dials.slice_sequence``):
    `image_range` is the first and last image *number* of the sequence,
    inclusive, where image numbers are those of the scan
    (``scan.get_image_range()``), not positions within the imageset: images
    11-20 of a sequence that starts at image 11 are its first ten frames.

    Parameters
    ----------
    image_numbers : sequence of int
        The DIALS image number of each frame of the source, increasing
        (``ImageSource.image_numbers``).
    image_range : (int, int), optional
        First and last image number, inclusive. None: every frame.

    Returns
    -------
    (int, int)
        First frame and one past the last, 0-based, within the source.

    Raises
    ------
    DataError
        When either image is not among the source's images, or first > last.
    """
    numbers = np.asarray(image_numbers)
    if image_range is None:
        return 0, len(numbers)
    first, last = (int(i) for i in image_range)
    start = int(np.searchsorted(numbers, first))
    stop = int(np.searchsorted(numbers, last)) + 1
    inside = (
        first <= last
        and start < len(numbers)
        and numbers[start] == first
        and stop <= len(numbers)
        and numbers[stop - 1] == last
    )
    if not inside:
        raise DataError(
            f"image_range={first},{last} is outside the images "
            f"{numbers[0]}-{numbers[-1]} of the data"
            if len(numbers)
            else f"image_range={first},{last}: the data hold no image"
        )
    return start, stop


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Where a chunk lies: a panel and a block of frames x rows x columns."""

    panel: int
    frames: slice
    rows: slice
    columns: slice

    @property
    def shape(self):
        return (
            self.frames.stop - self.frames.start,
            self.rows.stop - self.rows.start,
            self.columns.stop - self.columns.start,
        )


class ImageSource(abc.ABC):
    """A stack of frames with per-frame metadata and a static mask."""

    @property
    @abc.abstractmethod
    def n_frames(self):
        """Number of frames."""

    @property
    @abc.abstractmethod
    def panel_shapes(self):
        """(rows, columns) of each panel."""

    @property
    @abc.abstractmethod
    def dtype(self):
        """numpy dtype of the raw pixel values."""

    @property
    def image_numbers(self):
        """DIALS image number of each frame (ndarray of int); default 1 .. n_frames."""
        return np.arange(1, self.n_frames + 1)

    @property
    def exposure_times(self):
        """Exposure time of each frame in seconds (ndarray), NaN where unknown."""
        return np.full(self.n_frames, np.nan)

    @property
    def angles_deg(self):
        """Rotation angle (degrees) at the centre of each frame (ndarray), NaN for stills."""
        return np.full(self.n_frames, np.nan)

    @abc.abstractmethod
    def static_mask(self, panel=0):
        """Validity mask (rows, columns) of bool valid for every frame: gaps, bad pixels."""

    @abc.abstractmethod
    def read(self, chunk, out=None):
        """Read one chunk.

        Parameters
        ----------
        chunk : Chunk
        out : ndarray, optional
            C-contiguous, shape chunk.shape, dtype self.dtype: receives the
            pixels and is returned as `data`, so that a loop over chunks
            reuses one buffer instead of a new array per chunk (see
            `read_reusing`). Sources written before this parameter existed
            may not accept it; `read_reusing` copes with both.

        Returns
        -------
        data : ndarray, shape chunk.shape, dtype self.dtype
        valid : ndarray of bool, shape chunk.shape
            The static mask and per-frame invalid values (overloads, gap
            markers) combined.
        """

    def chunks(self, frames=1, rows=None, columns=None, panels=None, frame_range=None):
        """Iterate Chunk descriptors covering the data, frame block by block.

        Within a block of `frames` frames: panel by panel, then rows and
        columns in C order. A source that reads whole frames (a dxtbx
        imageset: all panels at once) then reads each frame once, not once
        per panel.

        Parameters
        ----------
        frames, rows, columns : int
            Chunk size; rows/columns default to the whole panel.
        panels : list of int, optional
            Default all panels.
        frame_range : (int, int), optional
            0-based half-open range of frames; default all.
        """
        first, stop = frame_range if frame_range else (0, self.n_frames)
        panels = range(len(self.panel_shapes)) if panels is None else panels
        for f in range(first, stop, frames):
            for panel in panels:
                n_rows, n_columns = self.panel_shapes[panel]
                row_step = rows or n_rows
                column_step = columns or n_columns
                for r in range(0, n_rows, row_step):
                    for c in range(0, n_columns, column_step):
                        yield Chunk(
                            panel,
                            slice(f, min(f + frames, stop)),
                            slice(r, min(r + row_step, n_rows)),
                            slice(c, min(c + column_step, n_columns)),
                        )


_non_finite = collections.Counter()
_non_finite_lock = threading.Lock()


def exclude_non_finite(data, valid, name):
    """The pixel policy for NaN/Inf: invalid, like a masked pixel, and counted.

    Parameters
    ----------
    data : ndarray
        Pixel values; only floating-point data can hold non-finite values.
    valid : ndarray of bool, the shape of `data`
        Set False where `data` is not finite (in place).
    name : str
        The file the pixels come from (the count is kept per file).

    Returns
    -------
    int
        The number of non-finite values found.
    """
    if data.dtype.kind not in "fc":
        return 0
    finite = np.isfinite(data)
    n = int(finite.size - np.count_nonzero(finite))
    if n:
        valid &= finite
        with _non_finite_lock:
            _non_finite[str(name)] += n
    return n


def take_non_finite_counts():
    """{file: non-finite pixel values excluded} since the last call, and reset."""
    with _non_finite_lock:
        counts = dict(_non_finite)
        _non_finite.clear()
    return counts


def output_buffer(shape, dtype, out=None):
    """`out` checked (shape, dtype, C order) for a chunk's data, or a new array."""
    shape = tuple(shape)
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != shape or out.dtype != np.dtype(dtype) or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous {np.dtype(dtype)} array of shape "
            f"{shape}, not {out.dtype} {out.shape}"
        )
    return out


_buffers = threading.local()


def thread_buffer(shape, dtype, name="data"):
    """A reusable array of `shape` and `dtype` owned by the calling thread.

    The same array is returned to the same thread for the same name, shape
    and dtype: its contents are valid until the thread's next call, so use
    it only for data consumed before then (e.g. a chunk passed to a kernel).
    """
    key = (name, tuple(shape), np.dtype(dtype).str)
    cache = getattr(_buffers, "arrays", None)
    if cache is None:
        cache = _buffers.arrays = {}
    if key not in cache:
        if len(cache) >= 8:  # shapes changed: drop the old buffers
            cache.clear()
        cache[key] = np.empty(shape, dtype=dtype)
    return cache[key]


def read_reusing(source, chunk):
    """`source.read(chunk)` into this thread's reusable buffer, where the source can.

    Reading into a reused buffer avoids allocating (and page-faulting) a new
    array per chunk. The returned data (and, for sources that reuse one too,
    such as NexusDataSource, the validity mask) is overwritten by this
    thread's next `read_reusing` of a chunk of the same shape: consume it
    before then.
    """
    return source.read(chunk, out=thread_buffer(chunk.shape, source.dtype))
