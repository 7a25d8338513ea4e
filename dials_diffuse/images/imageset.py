"""Read frames of a dxtbx imageset as numpy arrays, with the DIALS mask.

`read_frame` reads one whole frame; `ImagesetSource` streams any dxtbx
imageset as an `ImageSource`. Every frame of an HDF5 (NXmx, Eiger) file is
first checked to be readable in full (`dials_diffuse.images.hdf5_sources`:
HDF5 would read a missing or truncated data file as zeros). Errors while
reading (a missing, truncated or corrupt image file) become a `DataError`
``"<file>: image N cannot be read: <reason>"``.
"""

import collections
import dataclasses
import functools
import threading

import dxtbx.model  # noqa: F401  (its converters unpickle an imageset's models: Dask workers)
import numpy as np
from dxtbx import flumpy

from dials_diffuse import _kernels
from dials_diffuse.geometry import rotation_angle_deg
from dials_diffuse.images.hdf5_sources import check_frames, is_hdf5, open_hdf5
from dials_diffuse.images.source import (
    ImageSource,
    exclude_non_finite,
    output_buffer,
)
from dials_diffuse.io.dectris_master import nxmx_bit_depth_readout
from dials_diffuse.util.compat import trusted_range_is_inclusive, within_trusted_range
from dials_diffuse.util.errors import DataError


def frame_file(imageset, index):
    """The file that holds frame `index` (0-based within the imageset)."""
    try:
        return imageset.get_path(index)
    except Exception:
        return "<unknown file>"


@functools.lru_cache(maxsize=256)
def _is_hdf5(path):
    return is_hdf5(path)


def check_frame(imageset, index):
    """Raise a DataError if frame `index` of an HDF5 imageset cannot be read in full.

    The frame's number in its file is the imageset's index of it (an image
    range of an NXmx sweep starts inside the file).
    """
    path = frame_file(imageset, index)
    if not _is_hdf5(path):
        return
    try:
        in_file = int(imageset.indices()[index])
    except (AttributeError, IndexError, RuntimeError):
        in_file = index
    check_frames(path, in_file, in_file + 1)


def read_frame(imageset, index, static_masks=None):
    """Raw pixel data and validity mask of every panel of one frame.

    Parameters
    ----------
    imageset : dxtbx ImageSet or ImageSequence
    index : int
        0-based index within the imageset.
    static_masks : list of ndarray of bool, optional
        The imageset's static mask per panel (``ImagesetSource.static_mask``).
        When given (and the imageset has no dynamic, goniometer-shadow mask),
        the mask is this and the trusted range, as ``imageset.get_mask`` does,
        without dxtbx reading the image a second time.

    Returns
    -------
    data : list of ndarray
        One (ny, nx) array per panel, in the detector's own dtype (int32 for
        most counting detectors, float64 where dxtbx gives doubles).
    mask : list of ndarray of bool
        True where the pixel is valid: the format's static mask (gaps, bad
        pixels), any external mask, and the panel's trusted range.
    """
    check_frame(imageset, index)
    try:
        raw = imageset.get_raw_data(index)
        if not isinstance(raw, tuple):
            raw = (raw,)
        # Views of dxtbx's arrays (no copy); each keeps its flex array alive.
        data = [np.ascontiguousarray(flumpy.to_numpy(panel)) for panel in raw]
        if static_masks is None or imageset.has_dynamic_mask():
            mask = [panel.as_numpy_array() for panel in imageset.get_mask(index)]
        else:
            detector = imageset.get_detector()
            mask = []
            for static, panel, values in zip(static_masks, detector, data):
                valid = within_trusted_range(panel, values)
                valid &= static
                mask.append(valid)
    except Exception as error:
        message = str(error).strip().splitlines()
        reason = message[-1] if message else type(error).__name__
        raise DataError(
            f"{frame_file(imageset, index)}: image {index + 1} cannot be read: {reason}"
        ) from error
    valid = [np.ascontiguousarray(panel, dtype=bool) for panel in mask]
    for values, panel_valid in zip(data, valid):
        exclude_non_finite(values, panel_valid, frame_file(imageset, index))
    return data, valid


def _external_mask(imageset, panel):
    """The imageset's external (user) mask of one panel, or None."""
    mask = imageset.external_lookup.mask.data
    if mask.empty():
        return None
    return mask.tile(panel).data().as_numpy_array().astype(bool)


def _format_static_mask(imageset, panel):
    """The format class's static mask (gaps, bad pixels) of one panel, or None."""
    try:
        data = imageset.data()
        if data.has_single_file_reader():
            path = data.get_master_path()
        else:
            path = imageset.get_path(0)
        instance = imageset.get_format_class().get_instance(path, **imageset.params())
        masks = instance.get_static_mask()
    except Exception as error:
        raise DataError(
            f"{frame_file(imageset, 0)}: cannot read the detector mask ({error})"
        ) from error
    if masks is None:
        return None
    return np.asarray(masks[panel].as_numpy_array(), dtype=bool)


def image_numbers(imageset):
    """DIALS image number of every image of an imageset (ndarray of int).

    A sequence's numbers are its scan's image range (they need not start at
    1); images without a scan (stills) are numbered by their position in the
    file list, from 1.
    """
    scan = imageset.get_scan() if hasattr(imageset, "get_scan") else None
    if scan is not None:
        first, last = scan.get_image_range()
        return np.arange(first, last + 1)
    return np.asarray(imageset.indices(), dtype=int) + 1


#: Stored integer types that dxtbx's NXmx reader turns into int32 without
#: changing a value (uint32 would wrap; floats become float32 or float64).
_EXACT_AS_INT32 = frozenset(np.dtype(name) for name in ("u1", "u2", "i1", "i2", "i4"))


@dataclasses.dataclass
class ChunkDecoder:
    """Frames of an NXmx imageset decoded by our C++ codecs, as dxtbx gives them.

    `source` decodes the file's frames; the imageset's image i is the file's
    frame `first_frame + i`. As dxtbx's `FormatNXmx.get_raw_data` does, the
    values become int32 and, with a readout bit depth N (2^31 for 32), the
    markers 2^N - 1 and 2^N - 2 become -1 and -2.
    """

    source: object
    first_frame: int
    top: int = None

    def read(self, frames, rows, columns, static_mask, trusted_range, out=None):
        """Images [frames] (a slice), rows x columns of them: (data, valid).

        data : int32 values, as dxtbx gives them (`out` if given);
        valid : the static mask (rows, columns of one frame) and the trusted
        range (low, high) on the installed dxtbx's rule, as `read_frame`.
        One C++ pass (`stored_to_dxtbx`) after decoding, GIL released.
        """
        first = self.first_frame + frames.start
        stored = self.source.read_frames(first, first + frames.stop - frames.start)
        block = np.ascontiguousarray(stored[:, rows, columns])
        data = output_buffer(block.shape, np.int32, out)
        valid = np.empty(block.shape, dtype=bool)
        low, high = trusted_range
        _kernels.stored_to_dxtbx(
            block,
            self.top or 0,
            low,
            high,
            trusted_range_is_inclusive(),
            np.ascontiguousarray(static_mask[rows, columns]),
            data,
            valid,
        )
        return data, valid


def chunk_decoder(imageset):
    """A `ChunkDecoder` of this imageset's frames where it gives dxtbx's values.

    dxtbx reads an NXmx frame through h5py, whose HDF5 filters decode one
    chunk at a time behind h5py's global lock (about 24 M px/s for
    bitshuffle/LZ4 whatever the number of threads). The DECTRIS reader
    (`dials_diffuse.images.eiger.EigerMasterSource`) decodes the same chunks
    in C++ with the GIL released, in every worker thread. It stands in for
    dxtbx only where the values are bound to be identical: one panel, a
    format that reads frames as dxtbx's `FormatNXmx` does (not overridden),
    integer frames that convert to int32 exactly, images numbered
    consecutively in the file, no per-image (dynamic) mask, and the first
    image read both ways equal. Otherwise None: dxtbx reads.
    """
    from dxtbx.format.FormatNXmx import FormatNXmx

    from dials_diffuse.images.eiger import EigerMasterSource

    format_class = imageset.get_format_class()
    if (
        len(imageset.get_detector()) != 1
        or len(imageset) == 0
        or format_class is None
        or not issubclass(format_class, FormatNXmx)
        or format_class.get_raw_data is not FormatNXmx.get_raw_data
        or imageset.has_dynamic_mask()
        or not imageset.data().has_single_file_reader()
    ):
        return None
    indices = np.array(list(imageset.indices()), dtype=np.int64)
    first = int(indices[0])
    if not np.array_equal(indices, first + np.arange(len(indices))):
        return None
    shape = tuple(imageset.get_detector()[0].get_image_size()[::-1])
    try:
        path = imageset.data().get_master_path()
        source = EigerMasterSource(path, swmr=True)
        with open_hdf5(path, swmr=True) as handle:
            bits = nxmx_bit_depth_readout(handle)
        if (
            source.dtype not in _EXACT_AS_INT32
            or source.panel_shapes != [shape]
            or source.n_frames < first + len(indices)
            or any(block.codec is None for block in source.blocks)
        ):
            return None
        top = None if not bits else 2**31 if bits == 32 else 2**bits
        decoder = ChunkDecoder(source, first, top)
        everywhere = np.ones(shape, dtype=bool)
        decoded = decoder.read(
            slice(0, 1), slice(None), slice(None), everywhere, (-np.inf, np.inf)
        )[0][0]
        expected = flumpy.to_numpy(imageset.get_raw_data(0)[0])
    except Exception:  # dxtbx reads, and reports any problem itself
        return None
    return decoder if np.array_equal(decoded, expected) else None


class ImagesetSource(ImageSource):
    """Any dxtbx imageset (every format DIALS reads) as an ImageSource.

    Frames are the imageset's images in order; per-frame rotation angles and
    exposure times come from its scan (NaN for stills). The static mask is
    the DIALS one without the per-frame trusted-range test: the format's
    mask (module gaps, bad pixels), the untrusted rectangles of the detector
    model and any external mask (``dials.import mask=``). ``read`` adds the
    trusted-range test of each frame (overloads, gap markers), exactly as
    ``imageset.get_mask(index)``.

    dxtbx reads whole images (every panel), so a chunk smaller than a frame
    costs one frame read; the frames last read are kept so that row/column
    chunks of one frame, and on a multi-panel detector the other panels'
    chunks of the same frames (`ImageSource.chunks` goes frame block by
    frame block), read each frame once: the last frame, or the frames of
    the last two chunks on a multi-panel detector. dxtbx reads are
    serialised (format classes are not all thread-safe); the caller's
    per-chunk work still runs in parallel. Where `chunk_decoder` can stand
    in for dxtbx (single-panel NXmx frames, bitshuffle/LZ4 and the like),
    the frames are decoded in the worker threads instead, with the same
    values and the same mask.
    """

    def __init__(self, imageset):
        self.imageset = imageset
        self._lock = threading.RLock()
        self._frames = collections.OrderedDict()
        self._capacity = 1
        self._dtype = None
        self._static = None
        self._decoder = None  # a ChunkDecoder, or False where dxtbx reads

    def __getstate__(self):
        # The lock and the frame cache stay in this process (Dask pickles sources).
        return {"imageset": self.imageset}

    def __setstate__(self, state):
        self.__init__(state["imageset"])

    @property
    def n_frames(self):
        return len(self.imageset)

    @property
    def panel_shapes(self):
        return [
            tuple(panel.get_image_size()[::-1])
            for panel in self.imageset.get_detector()
        ]

    @property
    def dtype(self):
        if self._dtype is None:
            data, _ = self.frame(0)
            self._dtype = data[0].dtype
        return self._dtype

    @property
    def scan(self):
        """The imageset's scan, or None for stills."""
        scan = self.imageset.get_scan() if hasattr(self.imageset, "get_scan") else None
        return scan if scan is not None and scan.get_oscillation()[1] != 0 else None

    @property
    def image_numbers(self):
        return image_numbers(self.imageset)

    @property
    def exposure_times(self):
        scan = self.imageset.get_scan() if hasattr(self.imageset, "get_scan") else None
        if scan is None:
            return super().exposure_times
        times = scan.get_exposure_times().as_numpy_array()
        return (
            times if len(times) == self.n_frames else np.full(self.n_frames, times[0])
        )

    @property
    def angles_deg(self):
        scan = self.scan
        if scan is None:
            return super().angles_deg
        first = scan.get_array_range()[0]
        return rotation_angle_deg(scan, first + np.arange(self.n_frames) + 0.5)

    def static_mask(self, panel=0):
        model = self.imageset.get_detector()[panel]
        valid = model.get_untrusted_rectangle_mask().as_numpy_array().astype(bool)
        for extra in (
            _format_static_mask(self.imageset, panel),
            _external_mask(self.imageset, panel),
        ):
            if extra is not None:
                valid &= extra
        return valid

    def _static_masks(self):
        with self._lock:
            if self._static is None:
                n_panels = len(self.imageset.get_detector())
                self._static = [self.static_mask(panel) for panel in range(n_panels)]
            return self._static

    def _chunk_decoder(self):
        """`chunk_decoder` of the imageset (asked once), or None."""
        with self._lock:
            if self._decoder is None:
                self._decoder = chunk_decoder(self.imageset) or False
            return self._decoder or None

    def _decode(self, frames, rows, columns, out=None):
        """(data, valid) of images [frames] of the one panel, decoded in this
        thread: dxtbx's values, valid as `read_frame` decides."""
        return self._chunk_decoder().read(
            frames,
            rows,
            columns,
            self._static_masks()[0],
            self.imageset.get_detector()[0].get_trusted_range(),
            out,
        )

    def frame(self, index):
        """(data, valid) of every panel of frame `index` (0-based), as
        `read_frame`; dxtbx reads are serialised, the frames last read are kept."""
        if self._chunk_decoder() is not None:
            data, valid = self._decode(
                slice(index, index + 1), slice(None), slice(None)
            )
            return [data[0]], [valid[0]]
        with self._lock:
            cached = self._frames.get(index)
            if cached is None:
                cached = read_frame(self.imageset, index, self._static_masks())
                self._frames[index] = cached
                while len(self._frames) > self._capacity:
                    self._frames.popitem(last=False)
            else:
                self._frames.move_to_end(index)
            return cached

    def read(self, chunk, out=None):
        if self._chunk_decoder() is not None:
            return self._decode(chunk.frames, chunk.rows, chunk.columns, out)
        if len(self._static_masks()) > 1:
            # Keep two chunks' frames: the other panels read them next.
            n_frames = chunk.frames.stop - chunk.frames.start
            with self._lock:
                self._capacity = max(self._capacity, 2 * n_frames)
        data = output_buffer(chunk.shape, self.dtype, out)
        valid = np.empty(chunk.shape, dtype=bool)
        for i, index in enumerate(range(chunk.frames.start, chunk.frames.stop)):
            frame, mask = self.frame(index)
            data[i] = frame[chunk.panel][chunk.rows, chunk.columns]
            valid[i] = mask[chunk.panel][chunk.rows, chunk.columns]
        return data, valid
