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

import contextlib
import dataclasses
import logging
import os
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
)
from dials_diffuse.images.source import ImageSource, output_buffer
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
        with h5py.File(path, "r") as handle:
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


class EigerMasterSource(ImageSource):
    """Frames of a DECTRIS Eiger master file, decoded by the C++ kernels.

    Parameters
    ----------
    path : str or Path
        The master file (`*_master.h5`), or an NXmx file whose
        `/entry/data/data` holds the frames.

    Raises
    ------
    DataError
        Naming the file: not HDF5, no frames, a data file missing, frames
        missing between data files, inconsistent frame shapes or types.
    """

    def __init__(self, path):
        self.path = str(path)
        self._handles = {}
        self._descriptors = {}
        try:
            self._master = h5py.File(self.path, "r")
        except OSError as error:
            raise DataError(
                f"{self.path}: not a readable HDF5 file ({error})"
            ) from error
        self._read_metadata()
        self.blocks = self._find_blocks()

    # -- pickling (Dask workers reopen the file) -----------------------------

    def __reduce__(self):
        return pickled_by_path(EigerMasterSource, self.path)

    def close(self):
        """Close the master and data files."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._close_descriptors()
        self._master.close()

    def _close_descriptors(self):
        for descriptor in self._descriptors.values():
            with contextlib.suppress(OSError, TypeError):  # TypeError: at exit
                os.close(descriptor)
        self._descriptors.clear()

    def __del__(self):
        self._close_descriptors()

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

    def _descriptor(self, name):
        """A file descriptor for plain reads (os.pread releases the GIL)."""
        path = self._resolve(name)
        if path not in self._descriptors:
            self._descriptors[path] = os.open(path, os.O_RDONLY)
        return self._descriptors[path]

    def _data_file(self, name):
        """An open h5py.File for a data file name as a link or VDS gives it."""
        if name in ("", "."):
            return self._master
        path = self._resolve(name)
        if path not in self._handles:
            try:
                self._handles[path] = h5py.File(path, "r")
            except OSError as error:
                raise DataError(
                    f"{self.path}: cannot open its data file {name} ({error})"
                ) from error
        return self._handles[path]

    def _dataset(self, block):
        return self._data_file(block.file)[block.dataset]

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
                handle = self._data_file(file_name)
                if dataset_path not in handle:
                    raise DataError(
                        f"{self.path}: {name} links to {file_name}:{dataset_path}, "
                        "which does not exist"
                    )
                dataset = handle[dataset_path]
            else:
                file_name, dataset_path = ".", f"/entry/data/{name}"
                try:
                    dataset = data[name]
                except KeyError as error:
                    raise DataError(f"{self.path}: cannot resolve {name}") from error
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
                    DataBlock(file_name, dataset_path, first, 0, dataset.shape[0], None)
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
            dataset = self._dataset(block)
            if shape is None:
                shape, dtype = dataset.shape[1:], dataset.dtype
            if dataset.shape[1:] != shape or dataset.dtype != dtype:
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
                raise DataError(
                    f"{self.path}: {block.file} holds fewer frames than linked"
                )
            block.codec = _codec_of(dataset, shape)
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

    def raw_frames(self, start, stop):
        """Raw stored chunks of frames [start, stop), grouped by codec.

        Yields
        ------
        (codec, first_frame, payload)
            `payload` is a list of bytes (one chunk per frame) for the C++
            codecs and deflate, or a decoded (frames, rows, columns) array
            when h5py had to decode (codec None).
        """
        frame = start
        while frame < stop:
            block = self._locate(frame)
            end = min(stop, block.first + block.n_frames)
            dataset = self._dataset(block)
            offset = block.source_first - block.first
            codec = block.codec
            try:
                payload = None
                if codec is not None:
                    payload = self._read_chunks(
                        block, dataset, frame + offset, end + offset
                    )
                if payload is None:  # h5py decodes (other layouts, skipped filters)
                    codec = None
                    payload = dataset[frame + offset : end + offset]
            except (OSError, ValueError, KeyError) as error:
                raise DataError(
                    f"{block.file}: cannot read images {frame + 1}-{end} ({error})"
                ) from error
            yield codec, frame, payload
            frame = end

    def _read_chunks(self, block, dataset, first, stop):
        """Raw chunks of dataset frames [first, stop), or None if h5py must decode.

        The chunks' file offsets come from HDF5 (cheap); the bytes are read
        with os.pread, which releases the GIL, so worker threads read in
        parallel. Without chunk queries (h5py < 3, HDF5 < 1.10.5) or pread
        (Windows), read_direct_chunk is used.
        """
        if not chunk_queries_available(dataset):
            return [
                dataset.id.read_direct_chunk((i, 0, 0))[1] for i in range(first, stop)
            ]
        chunks = read_raw_chunks(
            dataset,
            self._descriptor(block.file),
            [(i, 0, 0) for i in range(first, stop)],
        )
        if chunks is not None and None in chunks:
            index = first + chunks.index(None)
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

    def read(self, chunk, out=None):
        frames = chunk.frames
        rows, columns = (
            len(range(*s.indices(n)))
            for s, n in zip((chunk.rows, chunk.columns), self._frame_shape)
        )
        shape = (frames.stop - frames.start, rows, columns)
        whole = shape[1:] == self._frame_shape
        frames_read = (
            output_buffer(shape, self.dtype, out)
            if whole
            else np.empty((frames.stop - frames.start, *self._frame_shape), self.dtype)
        )
        for codec, first, payload in self.raw_frames(frames.start, frames.stop):
            index = first - frames.start
            if codec is None:
                frames_read[index : index + len(payload)] = payload
            else:
                for i, raw in enumerate(payload):
                    self.decode_into(codec, raw, frames_read[index + i], first + i)
        data = frames_read
        if not whole:  # a tile of the frames
            data = output_buffer(shape, self.dtype, out)
            data[...] = frames_read[:, chunk.rows, chunk.columns]
        valid = self.static_mask()[chunk.rows, chunk.columns] & (
            data < self.invalid_from
        )
        return data, valid

    def describe(self):
        """One line for the log: frames, shape, type, codecs, data files."""
        files = sorted({Path(block.file).name for block in self.blocks})
        return (
            f"{self.n_frames} frames of {self._frame_shape[0]} x {self._frame_shape[1]} "
            f"{self.dtype} ({', '.join(self.codecs)}) in {len(files)} data file(s)"
        )
