"""Fast reads of chunked HDF5 datasets: raw chunks decoded outside h5py.

h5py serialises every call behind one global lock, so HDF5's own filters
(gzip, shuffle, bitshuffle) decode one chunk at a time however many threads
ask. Here HDF5 only says where each chunk lies (`get_chunk_info_by_coord`,
cheap); the bytes are read with `os.pread`, inflated by `zlib.decompress`
or the C++ LZ4 codecs, and placed (shuffle undone) into the caller's buffer
by the C++ `place_chunk`: all of these release the GIL, so worker threads
decode in parallel. The Eiger source and our data.nxs/mask.nxs readers share
this machinery.

Layouts handled: 3-d datasets of native-endian numbers, chunked, with no
filter, deflate (gzip), shuffle + deflate, LZ4 (HDF5 filter 32004) or
bitshuffle/LZ4 (32008); chunks never written read as the fill value. Any
other layout (virtual, contiguous, other filters, chunks stored with a
filter skipped) is read through h5py: slower, but correct.
"""

import os
import threading
import zlib

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 HDF5 filters)
import numpy as np

from dials_diffuse import _kernels

FILTER_DEFLATE = 1
FILTER_SHUFFLE = 2
FILTER_LZ4 = 32004
FILTER_BITSHUFFLE = 32008
BITSHUFFLE_COMPRESS_LZ4 = 2

# Codecs: the C++ kernel's numbers (cpp/eiger.h), plus deflate decoded by zlib.
CODEC_NONE = 0
CODEC_LZ4 = 1
CODEC_BITSHUFFLE_LZ4 = 2
CODEC_DEFLATE = "deflate"
CODEC_SHUFFLE_DEFLATE = "shuffle+deflate"
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


def decode_chunk(codec, raw, dtype, n_elements, scratch=None):
    """Decode one raw chunk of `n_elements` elements of `dtype`.

    Parameters
    ----------
    codec : CODEC_*
    raw : bytes
    dtype : numpy dtype
    n_elements : int
        Elements in a chunk (the product of the chunk shape).
    scratch : ndarray of uint8, optional
        A reusable buffer for the LZ4 codecs (a new one if too small).

    Returns
    -------
    bytes-like holding the decoded chunk; still in byte planes for
    CODEC_SHUFFLE_DEFLATE.

    Raises
    ------
    ValueError (zlib.error is converted) for corrupt chunks.
    """
    dtype = np.dtype(dtype)
    nbytes = n_elements * dtype.itemsize
    if codec in (CODEC_DEFLATE, CODEC_SHUFFLE_DEFLATE):
        try:
            decoded = zlib.decompress(raw, bufsize=nbytes)
        except zlib.error as error:
            raise ValueError(str(error)) from None
    elif codec == CODEC_NONE:
        decoded = raw
    else:
        if scratch is None or scratch.size < nbytes:
            scratch = np.empty(nbytes, dtype=np.uint8)
        decoded = _kernels.decompress_chunk(raw, codec, scratch[:nbytes].view(dtype))
        return decoded
    if len(decoded) != nbytes:
        raise ValueError(f"chunk decodes to {len(decoded)} bytes, not {nbytes}")
    return decoded


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
        self._local = threading.local()
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

    def __getstate__(self):
        return {"path": self.path, "name": self.name}

    def __setstate__(self, state):
        self.__init__(state["path"], state["name"])

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
            except (OSError, TypeError):  # TypeError: at interpreter exit
                pass

    @property
    def codec_name(self):
        """How chunks are decoded, e.g. 'shuffle+deflate' or 'HDF5 filters (h5py)'."""
        return CODEC_NAMES[self.codec]

    def _scratch(self, nbytes):
        scratch = getattr(self._local, "scratch", None)
        if scratch is None or scratch.size < nbytes:
            scratch = self._local.scratch = np.empty(nbytes, dtype=np.uint8)
        return scratch

    def read(self, frames, rows, columns, out=None):
        """The block [frames, rows, columns] (slices with step 1) of the dataset.

        Parameters
        ----------
        frames, rows, columns : slice
            Within the dataset's shape, start and stop given.
        out : ndarray, optional
            C-contiguous, of the block's shape and the dataset's dtype; filled
            and returned (no new array per block).

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
        if self.codec is None or not self._read_chunks(box, out):
            self.dataset.read_direct(out, np.s_[frames, rows, columns])
        return out

    def _read_chunks(self, box, out):
        """Fill `out` from raw chunks; False when h5py must read this block."""
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
        n_elements = int(np.prod(self.chunks))
        scratch = self._scratch(n_elements * self.dtype.itemsize)
        shuffled = self.codec == CODEC_SHUFFLE_DEFLATE
        for coord, raw in zip(coords, raw_chunks):
            origin = tuple(c - start for c, (start, _) in zip(coord, box))
            if raw is None:
                self._fill(out, origin)
                continue
            decoded = decode_chunk(self.codec, raw, self.dtype, n_elements, scratch)
            _kernels.place_chunk(decoded, self.chunks, out, origin, shuffled)
        return True

    def _fill(self, out, origin):
        """Write the fill value where an unwritten chunk overlaps `out`."""
        region = tuple(
            slice(max(0, o), max(0, min(n, o + size)))
            for o, n, size in zip(origin, out.shape, self.chunks)
        )
        out[region] = self.fillvalue


def deflate_chunks(block, chunk_shape, level=1):
    """Compress a block of frames into whole HDF5 deflate chunks (zlib, GIL released).

    The writing side of this module: worker threads compress, and the one
    thread that owns the h5py file only stores the bytes
    (`Dataset.id.write_direct_chunk`), so HDF5's serial gzip filter is not
    the bottleneck of writing a large dataset.

    Parameters
    ----------
    block : ndarray (frames, rows, columns)
        At most chunk_shape[0] frames starting on a chunk boundary, and every
        row and column of the dataset.
    chunk_shape : (int, int, int)
        The dataset's chunk shape; its filter must be deflate alone.
    level : int
        zlib level 1-9.

    Returns
    -------
    list of ((0, row, column), bytes)
        Each chunk's offset within the block's first frame and its stored
        bytes; edge chunks are padded with zeros to the full chunk shape, as
        HDF5 stores them.
    """
    frames, rows, columns = block.shape
    if frames > chunk_shape[0]:
        raise ValueError(f"block has {frames} frames, a chunk {chunk_shape[0]}")
    result = []
    padded = np.zeros(chunk_shape, dtype=block.dtype)
    for row in range(0, rows, chunk_shape[1]):
        for column in range(0, columns, chunk_shape[2]):
            tile = block[
                :, row : row + chunk_shape[1], column : column + chunk_shape[2]
            ]
            if tile.shape == tuple(chunk_shape):
                raw = np.ascontiguousarray(tile)
            else:
                padded[...] = 0
                padded[: tile.shape[0], : tile.shape[1], : tile.shape[2]] = tile
                raw = padded
            result.append(((0, row, column), zlib.compress(raw, level)))
    return result
