"""The fast path for DECTRIS Eiger (NXmx) master files: raw chunks, decoded in C++.

A DECTRIS master file holds the metadata (`/entry/instrument/detector`) and
links to the frames: external links `/entry/data/data_000001`, ... to data
files whose `/entry/data/data` carry `image_nr_low`/`image_nr_high` (1-based
image numbers), or one dataset `/entry/data/data` (plain or virtual). Each
frame is one HDF5 chunk compressed with bitshuffle/LZ4 (filter 32008), LZ4
(32004) or deflate. This source reads the raw chunks
(`read_direct_chunk`, cheap: HDF5 does no filtering) and decodes them in the
`dials_diffuse._kernels` C++ kernels with the GIL released, so threads
decode in parallel; memory is bounded by the frames asked for.

Pixels are invalid where the DECTRIS `pixel_mask` is nonzero (gaps, dead,
hot, noisy pixels), where the value is the all-ones gap marker 2^N-1 of the
image bit depth, and where it exceeds the saturation value.

Datasets chunked otherwise, or with other filters, are read through h5py
(HDF5's own filters, with hdf5plugin loaded): slower, but correct.
"""

import collections
import contextlib
import dataclasses
import logging
import os
import threading
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 HDF5 filters)
import numpy as np

from dials_diffuse import _kernels
from dials_diffuse.images.hdf5_chunks import (  # noqa: F401  (CODEC_* re-exported)
    CODEC_BITSHUFFLE_LZ4,
    CODEC_DEFLATE,
    CODEC_LZ4,
    CODEC_NAMES,
    CODEC_NONE,
    chunk_codec,
    chunk_queries_available,
    read_raw_chunks,
    thread_read_buffer,
)
from dials_diffuse.images.hdf5_sources import check_frames, open_hdf5
from dials_diffuse.images.source import (
    ImageSource,
    exclude_non_finite,
    output_buffer,
)
from dials_diffuse.io.dectris_master import data_links, read_header
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.parallel import pickled_by_path

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DataBlock:
    """Consecutive frames stored in one dataset.

    Attributes
    ----------
    file : str
        The HDF5 file holding the dataset.
    dataset : str
        Path of the (frames, rows, columns) dataset in `file`.
    first : int
        0-based frame number of the block's first frame in the series.
    source_first : int
        Index of that frame in the dataset.
    n_frames : int
    codec : int, str or None
        How raw chunks are decoded (CODEC_*); None: read through h5py.
    """

    file: str
    dataset: str
    first: int
    source_first: int
    n_frames: int
    codec: object


def is_eiger_master(path):
    """True when `path` is an HDF5 file laid out as a DECTRIS/NXmx master file."""
    try:
        with open_hdf5(path) as handle:
            data = handle.get("/entry/data")
            if not isinstance(data, h5py.Group):
                return False
            names = list(data.keys())
    except (OSError, KeyError):
        return False
    return "data" in names or any(name.startswith("data_") for name in names)


def _codec_of(dataset, frame_shape):
    """The raw-chunk codec of a dataset of one chunk per frame, or None for h5py.

    Shuffled deflate is left to h5py: DECTRIS never writes it.
    """
    if dataset.chunks != (1, *frame_shape):
        return None
    codec = chunk_codec(dataset)
    if codec not in (CODEC_NONE, CODEC_LZ4, CODEC_BITSHUFFLE_LZ4, CODEC_DEFLATE):
        return None
    if dataset.dtype.kind != "u" or dataset.dtype.itemsize not in (1, 2, 4):
        return None
    return codec


def _select_bounds(space):
    """(first, last) corners of a dataspace selection; the whole space if 'all'."""
    if space.get_select_type() == h5py.h5s.SEL_ALL:
        shape = space.shape
        return tuple(0 for _ in shape), tuple(n - 1 for n in shape)
    return space.get_select_bounds()


class _MasterFile:
    """The master file in the place of an OpenDataFile (frames stored in it)."""

    def __init__(self, handle, path):
        self.handle = handle
        self.path = path
        self._descriptor = None

    @property
    def descriptor(self):
        if self._descriptor is None:
            self._descriptor = os.open(self.path, os.O_RDONLY)
        return self._descriptor

    def close(self):
        """Close the descriptor (the master's h5py file is the source's)."""
        if self._descriptor is not None:
            with contextlib.suppress(OSError, TypeError):  # TypeError: at exit
                os.close(self._descriptor)
            self._descriptor = None


#: Data files kept open at once by one source (h5py handle + descriptor each).
MAX_OPEN_DATA_FILES = 32


class OpenDataFile:
    """One data file of a series, opened on first use: h5py handle, descriptor."""

    def __init__(self, path, swmr=False):
        self.path = path
        self.swmr = swmr
        self.users = 0
        self._handle = None
        self._descriptor = None

    @property
    def handle(self):
        if self._handle is None:
            self._handle = open_hdf5(self.path, self.swmr)
        return self._handle

    @property
    def descriptor(self):
        """A descriptor for plain reads (os.pread releases the GIL)."""
        if self._descriptor is None:
            self._descriptor = os.open(self.path, os.O_RDONLY)
        return self._descriptor

    def close(self):
        if self._handle is not None:
            with contextlib.suppress(Exception):
                self._handle.close()
            self._handle = None
        if self._descriptor is not None:
            with contextlib.suppress(OSError, TypeError):  # TypeError: at exit
                os.close(self._descriptor)
            self._descriptor = None


class OpenDataFiles:
    """At most `limit` data files open at once, the least recently used closed first.

    A series of thousands of data files would otherwise hold a descriptor and
    an HDF5 file (about 0.65 MB of metadata cache) per file, and fail with
    "Too many open files". Threads share the cache; a file a thread is
    reading (`use`) is never closed under it.
    """

    def __init__(self, limit=MAX_OPEN_DATA_FILES, swmr=False):
        self.limit = limit
        self.swmr = swmr
        self._lock = threading.Lock()
        self._files = collections.OrderedDict()

    @contextlib.contextmanager
    def use(self, path):
        """Yield the OpenDataFile of `path`, kept open until the block ends."""
        with self._lock:
            opened = self._files.get(path)
            if opened is None:
                opened = self._files[path] = OpenDataFile(path, self.swmr)
            self._files.move_to_end(path)
            opened.users += 1
            # HDF5 calls are serialised by h5py anyway: open under the lock.
            try:
                opened.handle  # noqa: B018  (opens the file)
            except BaseException:
                opened.users -= 1
                raise
        try:
            yield opened
        finally:
            with self._lock:
                opened.users -= 1
                self._evict()

    def _evict(self):
        idle = [path for path, opened in self._files.items() if opened.users == 0]
        for path in idle[: max(0, len(self._files) - self.limit)]:
            self._files.pop(path).close()

    def __len__(self):
        return len(self._files)

    def close(self):
        with self._lock:
            for opened in self._files.values():
                opened.close()
            self._files.clear()


class EigerMasterSource(ImageSource):
    """Frames of a DECTRIS Eiger master file, decoded by the C++ kernels.

    Parameters
    ----------
    path : str or Path
        The master file (`*_master.h5`), or an NXmx file whose
        `/entry/data/data` holds the frames.
    swmr : bool
        Open the files in HDF5's SWMR read mode, as dxtbx's NXmx format does
        (`hdf5_sources.open_hdf5`): for frames of a file dxtbx reads too.

    Raises
    ------
    DataError
        Naming the file: not HDF5, no frames, a data file missing, frames
        missing between data files, inconsistent frame shapes or types.
    """

    def __init__(self, path, swmr=False):
        self.path = str(path)
        self.swmr = swmr
        self._files = OpenDataFiles(swmr=swmr)
        try:
            self._master = open_hdf5(self.path, swmr)
        except OSError as error:
            raise DataError(
                f"{self.path}: not a readable HDF5 file ({error})"
            ) from error
        self._master_file = _MasterFile(self._master, self.path)
        self._read_metadata()
        self.blocks = self._find_blocks()

    # -- pickling (Dask workers reopen the file) -----------------------------

    def __reduce__(self):
        return pickled_by_path(EigerMasterSource, self.path, self.swmr)

    def close(self):
        """Close the master and data files."""
        self._files.close()
        self._master_file.close()
        self._master.close()

    def __del__(self):
        for name in ("_files", "_master_file"):
            opened = getattr(self, name, None)
            if opened is not None:
                opened.close()

    # -- metadata ----------------------------------------------------------

    def _read_metadata(self):
        """Mask, saturation, bit depth, exposure from the DECTRIS or NXmx header
        (`dials_diffuse.io.dectris_master.read_header`)."""
        header = read_header(self._master)
        self.saturation_value = header.saturation_value
        self.bit_depth = header.bit_depth
        self.count_time = header.count_time_s
        self._pixel_mask = header.pixel_mask

    def _resolve(self, name):
        """Absolute path of a data file name as a link or VDS gives it."""
        if name in ("", "."):
            return os.path.abspath(self.path)
        if os.path.isabs(name):
            return name
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), name)

    @contextlib.contextmanager
    def _data_file(self, name):
        """The data file a link or VDS names, open for the block (OpenDataFile).

        The master itself for "." (frames stored in it).
        """
        if name in ("", "."):
            yield self._master_file
            return
        try:
            context = self._files.use(self._resolve(name))
            opened = context.__enter__()
        except OSError as error:
            raise DataError(
                f"{self.path}: cannot open its data file {name} ({error})"
            ) from error
        try:
            yield opened
        finally:
            context.__exit__(None, None, None)

    @contextlib.contextmanager
    def _dataset(self, block):
        """(dataset, OpenDataFile) of a block, open for the block."""
        with self._data_file(block.file) as opened:
            yield opened.handle[block.dataset], opened

    def _find_blocks(self):
        data = self._master.get("/entry/data")
        if not isinstance(data, h5py.Group):
            raise DataError(
                f"{self.path}: no /entry/data group (not an Eiger master file)"
            )
        names = data_links(self._master)
        if not names and "data" in data:
            names = ["data"]
        if not names:
            raise DataError(f"{self.path}: /entry/data holds no frames")
        blocks = []
        next_first = 0
        for name in names:
            link = data.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                file_name, dataset_path = link.filename, link.path
            else:
                file_name, dataset_path = ".", f"/entry/data/{name}"
            with self._data_file(file_name) as opened:
                if dataset_path not in opened.handle:
                    raise DataError(
                        f"{self.path}: {name} links to {file_name}:{dataset_path}, "
                        "which does not exist"
                    )
                dataset = opened.handle[dataset_path]
                if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 3:
                    raise DataError(
                        f"{self.path}: {name} is not a (frames, rows, columns) dataset"
                    )
                low = dataset.attrs.get("image_nr_low")
                first = int(low) - 1 if low is not None else next_first
                if dataset.is_virtual:
                    blocks.extend(
                        self._virtual_blocks(dataset, file_name, dataset_path, first)
                    )
                else:
                    blocks.append(
                        DataBlock(
                            file_name, dataset_path, first, 0, dataset.shape[0], None
                        )
                    )
                next_first = first + dataset.shape[0]
        self._check_blocks(blocks)
        return blocks

    def _virtual_blocks(self, dataset, file_name, dataset_path, first):
        """Map a virtual dataset onto its sources where each maps whole frames."""
        base = os.path.dirname(file_name) if file_name not in ("", ".") else ""
        blocks = []
        try:
            sources = dataset.virtual_sources()
            for source in sources:
                (v0, vr0, vc0), (v1, vr1, vc1) = _select_bounds(source.vspace)
                if source.src_space.shape:
                    (s0, sr0, sc0), (s1, _, _) = _select_bounds(source.src_space)
                else:  # a whole source dataset, as HDF5 may record it
                    s0, sr0, sc0, s1 = 0, 0, 0, v1 - v0
                whole = (vr0, vc0, sr0, sc0) == (0, 0, 0, 0) and (vr1 + 1, vc1 + 1) == (
                    dataset.shape[1:]
                )
                if not whole or v1 - v0 != s1 - s0:
                    raise ValueError("partial-frame mapping")
                name = source.file_name
                if name != "." and base and not os.path.isabs(name):
                    name = os.path.join(base, name)
                blocks.append(
                    DataBlock(name, source.dset_name, first + v0, s0, v1 - v0 + 1, None)
                )
        except (ValueError, TypeError, OSError):
            # Not a simple frame-block mapping: let HDF5 resolve it.
            return [
                DataBlock(file_name, dataset_path, first, 0, dataset.shape[0], None)
            ]
        return blocks

    def _check_blocks(self, blocks):
        blocks.sort(key=lambda b: b.first)
        shape = dtype = None
        expected = 0
        for block in blocks:
            with self._dataset(block) as (dataset, _):
                self._check_block(block, dataset, shape, dtype, expected)
                if shape is None:
                    shape, dtype = dataset.shape[1:], dataset.dtype
            expected = block.first + block.n_frames
        if dtype.kind not in "uif":
            raise DataError(f"{self.path}: frames have unsupported type {dtype}")
        self._frame_shape = tuple(int(n) for n in shape)
        self._dtype = np.dtype(dtype)
        self._n_frames = expected
        if self._pixel_mask is not None and self._pixel_mask.shape != self._frame_shape:
            raise DataError(
                f"{self.path}: pixel_mask has shape {self._pixel_mask.shape}, "
                f"frames {self._frame_shape}"
            )

    def _check_block(self, block, dataset, shape, dtype, expected):
        """Frames of one block: the first block's shape and type, no gap before it."""
        if shape is not None and (dataset.shape[1:] != shape or dataset.dtype != dtype):
            raise DataError(
                f"{self.path}: {block.file} has frames of shape {dataset.shape[1:]} "
                f"{dataset.dtype}, the first data file {shape} {dtype}"
            )
        if block.first != expected:
            raise DataError(
                f"{self.path}: images {expected + 1} to {block.first} are missing "
                "(no data file holds them)"
            )
        if block.source_first + block.n_frames > dataset.shape[0]:
            raise DataError(f"{self.path}: {block.file} holds fewer frames than linked")
        block.codec = _codec_of(dataset, shape or dataset.shape[1:])

    # -- the ImageSource interface ------------------------------------------

    @property
    def n_frames(self):
        return self._n_frames

    @property
    def panel_shapes(self):
        return [self._frame_shape]

    @property
    def dtype(self):
        return self._dtype

    @property
    def exposure_times(self):
        value = np.nan if self.count_time is None else float(self.count_time)
        return np.full(self.n_frames, value)

    @property
    def codecs(self):
        """Names of the codecs of the data blocks, e.g. {'bitshuffle/LZ4'}."""
        return sorted({CODEC_NAMES[block.codec] for block in self.blocks})

    @property
    def invalid_from(self):
        """Pixel values at or above this are invalid (gap marker, overload).

        The smallest of the all-ones gap marker 2^N-1 (N the image bit depth,
        else the integer type's width) and saturation_value + 1. Infinity
        for floating-point data.
        """
        if self.dtype.kind == "f":
            return np.inf
        bits = int(self.bit_depth) if self.bit_depth else 8 * self.dtype.itemsize
        bits = min(bits, 8 * self.dtype.itemsize)
        limit = float(2**bits - 1)
        if self.dtype.kind == "i":
            limit = float(np.iinfo(self.dtype).max)
        if self.saturation_value is not None and self.saturation_value > 0:
            limit = min(limit, float(self.saturation_value) + 1)
        return limit

    def static_mask(self, panel=0):
        """Valid pixels: True where the DECTRIS pixel_mask is zero (or all, if none)."""
        if self._pixel_mask is None:
            return np.ones(self._frame_shape, dtype=bool)
        return self._pixel_mask == 0

    def _locate(self, frame):
        for block in self.blocks:
            if block.first <= frame < block.first + block.n_frames:
                return block
        raise IndexError(f"frame {frame} outside 0..{self.n_frames - 1}")

    def raw_frames(self, start, stop, reuse_buffer=False):
        """Raw stored chunks of frames [start, stop), grouped by codec.

        Parameters
        ----------
        start, stop : int
            0-based frames, stop excluded.
        reuse_buffer : bool
            Read the chunks into this thread's reused buffer
            (`thread_read_buffer`): cheaper, but a payload is valid only
            until the next one is yielded (or this thread reads again).

        Yields
        ------
        (codec, first_frame, payload)
            `payload` is a list of chunks (bytes, or uint8 arrays with
            `reuse_buffer`; one per frame) for the C++ codecs and deflate,
            or a decoded (frames, rows, columns) array when h5py had to
            decode (codec None).
        """
        check_frames(self.path, start, stop)
        frame = start
        while frame < stop:
            block = self._locate(frame)
            end = min(stop, block.first + block.n_frames)
            offset = block.source_first - block.first
            codec = block.codec
            try:
                with self._dataset(block) as (dataset, opened):
                    payload = None
                    if codec is not None:
                        payload = self._read_chunks(
                            block,
                            dataset,
                            opened,
                            frame + offset,
                            end + offset,
                            reuse_buffer,
                        )
                    if payload is None:  # h5py decodes (other layouts, filters)
                        codec = None
                        payload = dataset[frame + offset : end + offset]
            except (OSError, ValueError, KeyError) as error:
                raise DataError(
                    f"{block.file}: image {frame + 1} cannot be read: {error}"
                ) from error
            yield codec, frame, payload
            frame = end

    def _read_chunks(self, block, dataset, opened, first, stop, reuse_buffer=False):
        """Raw chunks of dataset frames [first, stop), or None if h5py must decode.

        The chunks' file offsets come from HDF5 (cheap); the bytes are read
        with os.pread (os.preadv into this thread's buffer with
        `reuse_buffer`), which releases the GIL, so worker threads read in
        parallel. Without chunk queries (h5py < 3, HDF5 < 1.10.5) or pread
        (Windows), read_direct_chunk is used.
        """
        if not chunk_queries_available(dataset):
            return [
                dataset.id.read_direct_chunk((i, 0, 0))[1] for i in range(first, stop)
            ]
        chunks = read_raw_chunks(
            dataset,
            opened.descriptor,
            [(i, 0, 0) for i in range(first, stop)],
            thread_read_buffer if reuse_buffer else None,
        )
        missing = [] if chunks is None else [c is None for c in chunks]
        if any(missing):
            index = first + missing.index(True)
            raise ValueError(f"frame {index} of {block.dataset} was never written")
        return chunks

    def decode_into(self, codec, chunk, out, frame):
        """Decode one raw chunk of `frame` into `out` (frame shape, self.dtype)."""
        try:
            if codec == CODEC_DEFLATE:
                _kernels.inflate(chunk, out)  # libdeflate, straight into out
            else:
                _kernels.decompress_chunk(chunk, codec, out)
        except ValueError as error:
            raise DataError(
                f"{self.path}: image {frame + 1} is corrupt ({error})"
            ) from error
        return out

    def read_frames(self, start, stop, out=None):
        """Frames [start, stop) (0-based) as stored: (frames, rows, columns), self.dtype.

        The values only, decoded by the C++ codecs where they can (h5py
        otherwise); `read` adds the validity mask. `out`, if given, is
        filled and returned.
        """
        frames_read = output_buffer((stop - start, *self._frame_shape), self.dtype, out)
        for codec, first, payload in self.raw_frames(start, stop, reuse_buffer=True):
            index = first - start
            if codec is None:
                frames_read[index : index + len(payload)] = payload
            else:
                for i, raw in enumerate(payload):
                    self.decode_into(codec, raw, frames_read[index + i], first + i)
        return frames_read

    def read(self, chunk, out=None):
        frames = chunk.frames
        rows, columns = (
            len(range(*s.indices(n)))
            for s, n in zip((chunk.rows, chunk.columns), self._frame_shape)
        )
        shape = (frames.stop - frames.start, rows, columns)
        if shape[1:] == self._frame_shape:
            data = self.read_frames(frames.start, frames.stop, out)
        else:  # a tile of the frames
            data = output_buffer(shape, self.dtype, out)
            data[...] = self.read_frames(frames.start, frames.stop)[
                :, chunk.rows, chunk.columns
            ]
        valid = self.static_mask()[chunk.rows, chunk.columns] & (
            data < self.invalid_from
        )
        exclude_non_finite(data, valid, self.path)
        return data, valid

    def describe(self):
        """One line for the log: frames, shape, type, codecs, data files."""
        files = sorted({Path(block.file).name for block in self.blocks})
        return (
            f"{self.n_frames} frames of {self._frame_shape[0]} x {self._frame_shape[1]} "
            f"{self.dtype} ({', '.join(self.codecs)}) in {len(files)} data file(s)"
        )
