"""Write our image-series file data.nxs from any ImageSource.

The layout (mdx2's `image_series`, with NXdata attributes so NeXpy plots it)
is described in `dials_diffuse.images.nexus_data`, which reads it back::

    /entry/image_series     NXdata; signal = "data", axes = ["phi", "iy", "ix"]
      data                  (frames, rows, columns) int32 (float32 for float
                            images), chunked, gzip + shuffle (or bitshuffle/LZ4,
                            see COMPRESSIONS); masked pixels -1
      phi                   (frames,) rotation angle at each frame centre, degrees
      iy, ix                0-based pixel indices (pixel centre at index + 0.5)
      exposure_times        (frames,) seconds
      image_numbers         (frames,) 1-based DIALS image numbers

Single-panel detectors only (as mdx2).

Worker threads (or Dask workers) read the frames, mark the masked pixels
and, for gzip, compress whole HDF5 chunks (shuffle + libdeflate, GIL
released); the writer thread only stores the bytes (`write_direct_chunk`).
The chunks are standard gzip (HDF5 filters 2 and 1): any HDF5 reader opens
the file without plugins. bitshuffle/LZ4 chunks go through HDF5's filter.
"""

import h5py
import hdf5plugin
import numpy as np

from dials_diffuse.images.hdf5_chunks import deflate_chunks
from dials_diffuse.images.source import read_reusing, thread_buffer
from dials_diffuse.io.tables import open_nexus_for_writing
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.progress import progress

MASKED = -1
GROUP = "entry/image_series"

#: Compressions of data.nxs. gzip (+ shuffle) is the default: every HDF5
#: reader opens it (NeXpy, h5py and mdx2 without hdf5plugin, HDFView).
#: bitshuffle/LZ4 (HDF5 filter 32008, as Eiger detectors write) needs the
#: filter plugin (hdf5plugin) to open; our readers decode both in C++ at
#: similar speeds (benchmarks/diffuse_io.py).
COMPRESSIONS = ("gzip", "bslz4")


def default_chunks(n_frames, shape, frames=10):
    """Chunk shape (frames, rows, columns) for data.nxs: a few frames of 256 x 256 tiles."""
    return (min(frames, n_frames), min(256, shape[0]), min(256, shape[1]))


def stored_dtype(dtype):
    """int32 for integer detectors, float32 for float images (both hold -1)."""
    return np.dtype(np.int32) if np.dtype(dtype).kind in "iub" else np.dtype(np.float32)


def compression_options(compression, level=2):
    """h5py create_dataset keywords for a data.nxs compression (COMPRESSIONS)."""
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level, "shuffle": True}
    if compression == "bslz4":
        return dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression}")


class BlockEncoder:
    """Worker: one chunk of frames as stored data.nxs content.

    Reads the chunk, stores masked pixels as -1 in the stored dtype and, for
    gzip, compresses it into whole HDF5 chunks (shuffle + deflate) so the
    writer only stores bytes. Picklable (Dask) when the source is.

    Parameters
    ----------
    source : ImageSource
    dtype : numpy dtype
        The stored dtype (`stored_dtype`).
    chunks : (int, int, int)
        The dataset's chunk shape; work chunks start on its frame boundaries.
    compression : str
        One of COMPRESSIONS.
    level : int
        gzip level.
    """

    def __init__(self, source, dtype, chunks, compression, level):
        self.source = source
        self.dtype = np.dtype(dtype)
        self.chunks = tuple(chunks)
        self.compression = compression
        self.level = level

    def __call__(self, chunk):
        """(masked pixel-frames, [((0, row, column), bytes)] for gzip or the block)."""
        pixels, valid = read_reusing(self.source, chunk)
        block = thread_buffer(chunk.shape, self.dtype, "image_series")
        np.copyto(block, pixels, casting="unsafe")
        invalid = np.logical_not(valid, out=thread_buffer(chunk.shape, bool, "invalid"))
        np.copyto(block, MASKED, where=invalid)
        masked = int(np.count_nonzero(invalid))
        if self.compression == "gzip":
            return masked, deflate_chunks(block, self.chunks, self.level, shuffle=True)
        return masked, block.copy()


def write_image_series(
    path,
    source,
    phi,
    chunks=None,
    frame_range=None,
    compression_level=2,
    compression="gzip",
    pmap=None,
):
    """Copy an ImageSource (panel 0) into a new data.nxs at `path`.

    Parameters
    ----------
    source : ImageSource
    phi : ndarray
        Rotation angle (degrees) at the centre of every frame of `source`.
    chunks : (int, int, int), optional
        HDF5 chunk shape; default `default_chunks`.
    frame_range : (int, int), optional
        0-based half-open range of the source's frames to copy.
    compression_level : int
        gzip level 1-9.
    compression : str
        One of COMPRESSIONS.
    pmap : ParallelMap, optional
        Runs the reading and compression of chunks in parallel (default: in
        this thread). At most workers + 1 chunks are in flight.

    Returns
    -------
    dict
        frames, masked_pixel_frames (pixel-frames stored as -1).
    """
    if len(source.panel_shapes) != 1:
        raise DataError(
            f"data.nxs holds single-panel detectors; this one has {len(source.panel_shapes)} panels"
        )
    first, stop = frame_range or (0, source.n_frames)
    n_frames = stop - first
    rows, columns = source.panel_shapes[0]
    chunks = tuple(chunks or default_chunks(n_frames, (rows, columns)))
    chunks = (min(chunks[0], n_frames), min(chunks[1], rows), min(chunks[2], columns))
    dtype = stored_dtype(source.dtype)
    masked = 0
    with open_nexus_for_writing(path) as handle:
        handle.attrs["default"] = "entry"
        handle["entry"].attrs["default"] = "image_series"
        group = handle.create_group(GROUP)
        group.attrs["NX_class"] = "NXdata"
        group.attrs["signal"] = "data"
        group.attrs["axes"] = np.array(["phi", "iy", "ix"], dtype=h5py.string_dtype())
        for index, axis in enumerate(("phi", "iy", "ix")):
            group.attrs[f"{axis}_indices"] = index
        data = group.create_dataset(
            "data",
            shape=(n_frames, rows, columns),
            dtype=dtype,
            chunks=chunks,
            fillvalue=MASKED,
            **compression_options(compression, compression_level),
        )
        data.attrs["masked_value"] = MASKED
        group.create_dataset("phi", data=np.asarray(phi, dtype=np.float64)[first:stop])
        group["phi"].attrs["units"] = "deg"
        group.create_dataset("iy", data=np.arange(rows, dtype=np.int32))
        group.create_dataset("ix", data=np.arange(columns, dtype=np.int32))
        group.create_dataset(
            "exposure_times", data=np.asarray(source.exposure_times)[first:stop]
        )
        group["exposure_times"].attrs["units"] = "s"
        group.create_dataset(
            "image_numbers", data=np.asarray(source.image_numbers)[first:stop]
        )
        blocks = list(source.chunks(frames=chunks[0], frame_range=(first, stop)))
        encoder = BlockEncoder(source, dtype, chunks, compression, compression_level)
        encoded = (
            map(encoder, blocks)
            if pmap is None
            else pmap(encoder, blocks, in_flight=pmap.workers + 1)
        )
        for chunk, (n_masked, stored) in zip(
            blocks,
            progress(encoded, total=len(blocks), desc="import_data", unit="chunk"),
        ):
            start = chunk.frames.start - first
            if compression == "gzip":
                for (_, row, column), raw in stored:
                    data.id.write_direct_chunk((start, row, column), raw)
            else:
                data[start : start + stored.shape[0]] = stored
            masked += n_masked
    return {"frames": n_frames, "masked_pixel_frames": masked}
