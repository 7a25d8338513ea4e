"""Fast reads and writes of chunked HDF5 datasets: raw chunks coded outside h5py.

h5py serialises every call behind one global lock, so HDF5's own filters
(gzip, shuffle, bitshuffle) decode one chunk at a time however many threads
ask. Here HDF5 only says where each chunk lies (`get_chunk_info_by_coord`,
cheap); the bytes are read with `os.pread` and handed, a block of chunks at
a time, to the C++ `place_chunks`, which decodes them (libdeflate for gzip,
our LZ4 codecs), undoes the shuffle filter and places them into the
caller's buffer, optionally computing the validity mask (value >= 0) on the
way: all of this releases the GIL, so worker threads decode in parallel.
The Eiger source and our data.nxs/mask.nxs readers share this machinery.

Writing is the mirror image: `deflate_chunks` cuts a block of frames into
whole chunks and compresses them (shuffle + libdeflate, or for masks a
coder of runs and repeated rows; GIL released) in the worker threads; the
one thread that owns the h5py file only stores the bytes
(`write_direct_chunk`). The chunks are standard zlib streams, so any HDF5
reader decodes them with its built-in gzip filter.

Layouts read: 3-d datasets of native-endian numbers, chunked, with no
filter, deflate (gzip), shuffle + deflate, LZ4 (HDF5 filter 32004) or
bitshuffle/LZ4 (32008); chunks never written read as the fill value. Any
other layout (virtual, contiguous, other filters, chunks stored with a
filter skipped) is read through h5py: slower, but correct.
"""

import os
import threading

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 HDF5 filters)
import numpy as np

from dials_diffuse import _kernels
from dials_diffuse.util.parallel import pickled_by_path

FILTER_DEFLATE = 1
FILTER_SHUFFLE = 2
FILTER_LZ4 = 32004
FILTER_BITSHUFFLE = 32008
BITSHUFFLE_COMPRESS_LZ4 = 2

# Codecs: the C++ kernels' numbers (cpp/chunks.h; 0-2 also cpp/eiger.h).
CODEC_NONE = 0
CODEC_LZ4 = 1
CODEC_BITSHUFFLE_LZ4 = 2
CODEC_DEFLATE = 3
CODEC_SHUFFLE_DEFLATE = 4
#: dtypes whose validity mask place_chunks computes while placing.
FUSED_VALID_DTYPES = frozenset(
    np.dtype(name) for name in ("u1", "u2", "u4", "i1", "i2", "i4", "i8", "f4", "f8")
)
CODEC_NAMES = {
    CODEC_NONE: "uncompressed",
    CODEC_LZ4: "LZ4",
    CODEC_BITSHUFFLE_LZ4: "bitshuffle/LZ4",
    CODEC_DEFLATE: "deflate",
    CODEC_SHUFFLE_DEFLATE: "shuffle+deflate",
    None: "HDF5 filters (h5py)",
}


def chunk_codec(dataset):
    """How raw chunks of an h5py dataset are decoded (CODEC_*), None for h5py.

    None when the dataset is not chunked, virtual, not of native-endian
    numbers, or has filters other than those listed in the module docstring.
    """
    if dataset.chunks is None or dataset.is_virtual:
        return None
    if dataset.dtype.kind not in "uif" or not dataset.dtype.isnative:
        return None
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(i)[:3] for i in range(plist.get_nfilters())]
    codes = [code for code, _, _ in filters]
    if not codes:
        return CODEC_NONE
    if codes == [FILTER_DEFLATE]:
        return CODEC_DEFLATE
    if codes == [FILTER_SHUFFLE, FILTER_DEFLATE]:
        return CODEC_SHUFFLE_DEFLATE
    if dataset.dtype.itemsize not in (1, 2, 4, 8):
        return None
    if codes == [FILTER_LZ4]:
        return CODEC_LZ4
    values = filters[0][2]
    if (
        codes == [FILTER_BITSHUFFLE]
        and len(values) > 4
        and values[4] == BITSHUFFLE_COMPRESS_LZ4
    ):
        return CODEC_BITSHUFFLE_LZ4
    return None


def chunk_queries_available(dataset):
    """True when HDF5 can say where chunks lie and os.pread exists (not Windows)."""
    return hasattr(dataset.id, "get_chunk_info_by_coord") and hasattr(os, "pread")


def read_raw_chunks(dataset, descriptor, coords):
    """The stored bytes of the chunks at `coords`, or None if h5py must decode.

    Parameters
    ----------
    dataset : h5py.Dataset
    descriptor : int
        An os.open descriptor of the dataset's file (os.pread releases the GIL).
    coords : list of tuple
        Element coordinates of the chunks' first elements.

    Returns
    -------
    list of (bytes or None)
        None for a chunk never written (it reads as the fill value). The whole
        result is None when a chunk was stored with a filter skipped.

    Raises
    ------
    ValueError
        When the file is shorter than a chunk's recorded extent.
    """
    infos = [dataset.id.get_chunk_info_by_coord(tuple(c)) for c in coords]
    if any(info.filter_mask for info in infos if info.byte_offset is not None):
        return None
    chunks = []
    for info in infos:
        if info.byte_offset is None:
            chunks.append(None)
            continue
        chunk = os.pread(descriptor, info.size, info.byte_offset)
        if len(chunk) != info.size:
            raise ValueError("the file is truncated")
        chunks.append(chunk)
    return chunks


class ChunkedDataset:
    """Blocks of a 3-d chunked HDF5 dataset, decoded in parallel-safe code.

    Parameters
    ----------
    path : str or Path
        The HDF5 file.
    name : str
        Path of the (frames, rows, columns) dataset in it.

    The file is opened lazily and reopened after pickling (Dask workers).
    Threads may share one instance: h5py is called only to locate chunks.
    """

    def __init__(self, path, name):
        self.path = str(path)
        self.name = name
        self._file = None
        self._descriptor = None
        self._lock = threading.Lock()  # threads open the file once
        dataset = self.dataset
        self.shape = dataset.shape
        self.dtype = dataset.dtype
        self.chunks = dataset.chunks
        self.fillvalue = dataset.fillvalue
        self.codec = (
            chunk_codec(dataset)
            if dataset.ndim == 3 and chunk_queries_available(dataset)
            else None
        )

    def __reduce__(self):
        return pickled_by_path(ChunkedDataset, self.path, self.name)

    @property
    def dataset(self):
        """The h5py dataset (file opened on first use)."""
        with self._lock:
            if self._file is None:
                self._file = h5py.File(self.path, "r")
            return self._file[self.name]

    def close(self):
        """Close the file and descriptor (both reopen on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def __del__(self):
        if self._descriptor is not None:
            try:
                os.close(self._descriptor)
            except (OSError, TypeError, AttributeError):
                pass  # TypeError/AttributeError: modules already torn down at exit

    @property
    def codec_name(self):
        """How chunks are decoded, e.g. 'shuffle+deflate' or 'HDF5 filters (h5py)'."""
        return CODEC_NAMES[self.codec]

    def read(self, frames, rows, columns, out=None, valid=None):
        """The block [frames, rows, columns] (slices with step 1) of the dataset.

        Parameters
        ----------
        frames, rows, columns : slice
            Within the dataset's shape, start and stop given.
        out : ndarray, optional
            C-contiguous, of the block's shape and the dataset's dtype; filled
            and returned (no new array per block).
        valid : ndarray of bool, optional
            C-contiguous, of the block's shape: set to block >= 0 (False for
            NaN), computed while the chunks are placed (no extra pass).

        Returns
        -------
        ndarray (frames, rows, columns), the dataset's dtype

        Raises
        ------
        ValueError
            Corrupt or truncated chunks (and h5py's OSError on its path).
        """
        box = [(s.start, s.stop) for s in (frames, rows, columns)]
        shape = tuple(stop - start for start, stop in box)
        if out is None:
            out = np.empty(shape, dtype=self.dtype)
        elif out.shape != shape or out.dtype != self.dtype:
            raise ValueError(
                f"out has shape {out.shape} {out.dtype}, expected {shape} {self.dtype}"
            )
        if valid is not None and (valid.shape != shape or valid.dtype != bool):
            raise ValueError(
                f"valid has shape {valid.shape} {valid.dtype}, expected {shape} bool"
            )
        # place_chunks computes `valid` for the pixel types of the C++ kernels.
        fused = valid if self.dtype in FUSED_VALID_DTYPES else None
        if self.codec is None or not self._read_chunks(box, out, fused):
            self.dataset.read_direct(out, np.s_[frames, rows, columns])
            fused = None
        if valid is not None and fused is None:
            np.greater_equal(out, 0, out=valid)
        return out

    def _read_chunks(self, box, out, valid):
        """Fill `out` (and `valid`) from raw chunks; False when h5py must read."""
        starts = [
            range((start // size) * size, stop, size)
            for (start, stop), size in zip(box, self.chunks)
        ]
        coords = [(f, r, c) for f in starts[0] for r in starts[1] for c in starts[2]]
        with self._lock:
            if self._descriptor is None:
                self._descriptor = os.open(self.path, os.O_RDONLY)
        raw_chunks = read_raw_chunks(self.dataset, self._descriptor, coords)
        if raw_chunks is None:
            return False
        origins = [
            tuple(c - start for c, (start, _) in zip(coord, box)) for coord in coords
        ]
        stored = [i for i, raw in enumerate(raw_chunks) if raw is not None]
        _kernels.place_chunks(
            [raw_chunks[i] for i in stored],
            [origins[i] for i in stored],
            self.chunks,
            out,
            self.codec,
            valid,
        )
        for origin, raw in zip(origins, raw_chunks):
            if raw is None:
                self._fill(out, valid, origin)
        return True

    def _fill(self, out, valid, origin):
        """Write the fill value where an unwritten chunk overlaps `out`."""
        region = tuple(
            slice(max(0, o), max(0, min(n, o + size)))
            for o, n, size in zip(origin, out.shape, self.chunks)
        )
        out[region] = self.fillvalue
        if valid is not None:
            valid[region] = self.fillvalue >= 0


def deflate_chunks(block, chunk_shape, level=1, shuffle=False, runs=False):
    """Compress a block of frames into whole HDF5 gzip chunks (GIL released).

    The writing side of this module: worker threads compress (libdeflate,
    C++), and the one thread that owns the h5py file only stores the bytes
    (`Dataset.id.write_direct_chunk`), so HDF5's serial gzip filter is not
    the bottleneck of writing a large dataset.

    Parameters
    ----------
    block : ndarray (frames, rows, columns)
        At most chunk_shape[0] frames starting on a chunk boundary, and every
        row and column of the dataset, in the dataset's dtype.
    chunk_shape : (int, int, int)
        The dataset's chunk shape; its filters must be deflate alone, or
        shuffle then deflate when `shuffle`.
    level : int
        Compression level 1-9 (as gzip's; libdeflate's 10-12 compress more).
    shuffle : bool
        Apply HDF5's shuffle filter first (byte planes: multi-byte counts
        compress better).
    runs : bool
        Code only repeats of the previous byte or of the row above, with
        fixed Huffman codes (`level` ignored): for masks, several times
        faster than libdeflate and about as small (benchmarks/diffuse_io.py).

    Returns
    -------
    list of ((0, row, column), bytes)
        Each chunk's offset within the block's first frame and its stored
        bytes (a zlib stream); edge chunks are padded with zeros to the full
        chunk shape, as HDF5 stores them.
    """
    block = np.ascontiguousarray(block)
    rows, columns = block.shape[1:]
    offsets = [
        (0, row, column)
        for row in range(0, rows, chunk_shape[1])
        for column in range(0, columns, chunk_shape[2])
    ]
    stored = _kernels.deflate_tiles(block, chunk_shape, level, shuffle, runs)
    return list(zip(offsets, stored))
