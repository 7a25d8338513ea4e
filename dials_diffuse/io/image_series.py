"""Our image-series file data.nxs: written from any ImageSource, read as one.

``dials.diffuse.import_data`` writes a chunked, compressed NeXus copy of a
rotation sweep (mdx2's `image_series`, with NXdata attributes so NeXpy
plots it), which NeXpy and h5py open::

    /                       creator = "dials-diffuse <version>", default = "entry"
    /entry/image_series     NXdata; signal = "data", axes = ["phi", "iy", "ix"]
      data                  (frames, rows, columns) int32 (float32 for float
                            images), chunked, gzip + shuffle (or bitshuffle/LZ4,
                            see COMPRESSIONS); masked pixels -1
      phi                   (frames,) rotation angle at each frame centre, degrees
      iy, ix                0-based pixel indices (pixel centre at index + 0.5)
      exposure_times        (frames,) seconds
      image_numbers         (frames,) DIALS image numbers (optional when
                            reading; default 1 .. frames)

A multi-panel detector has one such NXdata stack per panel (each its own
rows and columns) under ``/entry/image_series/panel_00``, ``panel_01``, ...
(DIALS's panel numbers); ``/entry/image_series`` is then an NXcollection
with the attribute ``panels``. The mask file mask.nxs
(`dials_diffuse.io.mask_file`) is a stack of the same layout
(`create_stack`). Every later step can read data.nxs instead of the
original images (`read_image_series`, a `NexusDataSource`): its chunks are
read raw and decoded outside h5py, in parallel threads
(`dials_diffuse.images.hdf5_chunks`); any other HDF5 layout of the same
names is read through h5py. Masked pixels are stored as -1 in each frame,
so the static mask is all valid and ``read`` marks every negative (or NaN)
value invalid.

Worker threads (or Dask workers) read the frames, mark the masked pixels
and, for gzip, compress whole HDF5 chunks (shuffle + libdeflate, GIL
released); the writer thread only stores the bytes (`write_direct_chunk`).
The chunks are standard gzip (HDF5 filters 2 and 1): any HDF5 reader opens
the file without plugins. bitshuffle/LZ4 chunks go through HDF5's filter.
"""

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from dials_diffuse.images.hdf5_chunks import ChunkedDataset, deflate_chunks
from dials_diffuse.images.source import (
    ImageSource,
    exclude_non_finite,
    output_buffer,
    read_reusing,
    thread_buffer,
)
from dials_diffuse.io.tables import open_nexus_for_writing
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.parallel import pickled_by_path
from dials_diffuse.util.progress import progress

MASKED = -1
GROUP = "entry/image_series"
#: Where the image series lives in the file.
IMAGE_SERIES = "/" + GROUP

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


def create_stack(handle, name, signal, phi, shape, image_numbers):
    """The NXdata group /entry/<name> of an image stack, with its axes.

    The layout shared by data.nxs and mask.nxs: `signal` is the name of the
    (frames, rows, columns) dataset the caller creates in the group; axes
    phi (degrees, one per frame), iy and ix (0-based pixel indices), and
    the frames' DIALS image numbers. The file's default plot is the stack.
    """
    rows, columns = shape
    handle.attrs["default"] = "entry"
    handle["entry"].attrs["default"] = name
    group = handle.create_group(f"entry/{name}")
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = signal
    group.attrs["axes"] = np.array(["phi", "iy", "ix"], dtype=h5py.string_dtype())
    for index, axis in enumerate(("phi", "iy", "ix")):
        group.attrs[f"{axis}_indices"] = index
    group.create_dataset("phi", data=np.asarray(phi, dtype=np.float64))
    group["phi"].attrs["units"] = "deg"
    group.create_dataset("iy", data=np.arange(rows, dtype=np.int32))
    group.create_dataset("ix", data=np.arange(columns, dtype=np.int32))
    group.create_dataset("image_numbers", data=np.asarray(image_numbers))
    return group


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
    """Copy an ImageSource (every panel) into a new data.nxs at `path`.

    Parameters
    ----------
    source : ImageSource
    phi : ndarray
        Rotation angle (degrees) at the centre of every frame of `source`.
    chunks : (int, int, int), optional
        HDF5 chunk shape (cut to each panel's size); default `default_chunks`.
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
    first, stop = frame_range or (0, source.n_frames)
    n_frames = stop - first
    n_panels = len(source.panel_shapes)
    with open_nexus_for_writing(path) as handle:
        if n_panels > 1:
            top = handle.create_group(GROUP)
            top.attrs["NX_class"] = "NXcollection"
            top.attrs["panels"] = n_panels
        datasets, encoders = [], []
        for panel, (rows, columns) in enumerate(source.panel_shapes):
            panel_chunks = tuple(chunks or default_chunks(n_frames, (rows, columns)))
            panel_chunks = (
                min(panel_chunks[0], n_frames),
                min(panel_chunks[1], rows),
                min(panel_chunks[2], columns),
            )
            datasets.append(
                _create_panel_stack(
                    handle,
                    _panel_group(panel, n_panels)[len("entry/") :],
                    source,
                    phi,
                    (rows, columns),
                    panel_chunks,
                    (first, stop),
                    compression,
                    compression_level,
                )
            )
            encoders.append(
                BlockEncoder(
                    source,
                    stored_dtype(source.dtype),
                    panel_chunks,
                    compression,
                    compression_level,
                )
            )
        # Frame block by frame block, every panel of a block in turn (the
        # panels' chunks all hold the same frames): a source that reads
        # whole frames reads each frame once.
        blocks = list(
            source.chunks(frames=datasets[0].chunks[0], frame_range=(first, stop))
        )
        encoder = PanelEncoders(encoders)
        encoded = (
            map(encoder, blocks)
            if pmap is None
            else pmap(encoder, blocks, in_flight=pmap.workers + 1)
        )
        masked = 0
        for chunk, (n_masked, stored) in zip(
            blocks,
            progress(encoded, total=len(blocks), desc="import_data", unit="chunk"),
        ):
            data = datasets[chunk.panel]
            start = chunk.frames.start - first
            if compression == "gzip":
                for (_, row, column), raw in stored:
                    data.id.write_direct_chunk((start, row, column), raw)
            else:
                data[start : start + stored.shape[0]] = stored
            masked += n_masked
        if n_panels > 1:
            handle["entry"].attrs["default"] = "image_series"
            handle[GROUP].attrs["default"] = "panel_00"
    return {"frames": n_frames, "masked_pixel_frames": masked}


def _panel_group(panel, n_panels):
    """Where one panel's stack lives: entry/image_series, or .../panel_NN."""
    return GROUP if n_panels == 1 else f"{GROUP}/panel_{panel:02d}"


class PanelEncoders:
    """Worker: each chunk encoded by its panel's `BlockEncoder` (picklable)."""

    def __init__(self, encoders):
        self.encoders = list(encoders)

    def __call__(self, chunk):
        return self.encoders[chunk.panel](chunk)


def _create_panel_stack(
    handle, name, source, phi, shape, chunks, frame_range, compression, level
):
    """One panel's empty stack /entry/<name> of data.nxs; returns its dataset."""
    first, stop = frame_range
    group = create_stack(
        handle,
        name,
        "data",
        np.asarray(phi, dtype=np.float64)[first:stop],
        shape,
        np.asarray(source.image_numbers)[first:stop],
    )
    data = group.create_dataset(
        "data",
        shape=(stop - first, *shape),
        dtype=stored_dtype(source.dtype),
        chunks=chunks,
        fillvalue=MASKED,
        **compression_options(compression, level),
    )
    data.attrs["masked_value"] = MASKED
    group.create_dataset(
        "exposure_times", data=np.asarray(source.exposure_times)[first:stop]
    )
    group["exposure_times"].attrs["units"] = "s"
    return data


def read_image_series(path):
    """The data.nxs at `path` as an ImageSource (`NexusDataSource`)."""
    return NexusDataSource(path)


class NexusDataSource(ImageSource):
    """Read a ``data.nxs`` (layout in the module docstring) chunk by chunk.

    The file is opened lazily in each process (the source pickles by path, so
    it can be sent to Dask workers). Chunks are read raw and decoded outside
    h5py (`dials_diffuse.images.hdf5_chunks`), so threads sharing one source
    decode in parallel; layouts that path does not handle go through h5py.

    Raises
    ------
    DataError
        Naming the file, when it is not HDF5 or lacks the layout.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._file = None
        top = self._series()
        n_panels = int(top.attrs.get("panels", 1))
        self._groups = [_panel_group(panel, n_panels) for panel in range(n_panels)]
        self._shapes = []
        for group in self._groups:
            data = self._file.get(group + "/data")
            if data is None:
                raise self._error(f"no /{group}/data")
            if data.ndim != 3:
                raise self._error(f"/{group}/data has {data.ndim} dimensions, not 3")
            if data.dtype.kind not in "iuf":
                raise self._error(f"/{group}/data holds {data.dtype}, not numbers")
            if self._shapes and data.shape[0] != self._shapes[0][0]:
                raise self._error(f"/{group}/data has another number of frames")
            self._shapes.append(data.shape)
        series = self._file[self._groups[0]]
        data = series["data"]
        self._shape = data.shape
        self._dtype = data.dtype
        self._phi = self._axis(series, "phi", self._shape[0])
        self._exposure_times = self._axis(series, "exposure_times", self._shape[0])
        self._chunk_shape = data.chunks
        self._data_sets = [
            ChunkedDataset(self.path, "/" + group + "/data") for group in self._groups
        ]
        self._data = self._data_sets[0]
        self._image_numbers = (
            self._axis(series, "image_numbers", self._shape[0]).astype(int)
            if "image_numbers" in series
            else np.arange(1, self._shape[0] + 1)
        )

    def _error(self, problem):
        return DataError(f"{self.path}: {problem}")

    def _series(self):
        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r")
            except FileNotFoundError:
                raise self._error("no such file") from None
            except OSError as error:
                raise self._error(f"not a readable HDF5 file ({error})") from None
        series = self._file.get(IMAGE_SERIES)
        if not isinstance(series, h5py.Group) or (
            "data" not in series and "panels" not in series.attrs
        ):
            raise self._error(f"no {IMAGE_SERIES}/data: not a dials-diffuse data.nxs")
        return series

    def _axis(self, series, name, length):
        if name not in series:
            raise self._error(f"no {IMAGE_SERIES}/{name}")
        values = np.asarray(series[name][()], dtype=float)
        if values.shape != (length,):
            raise self._error(
                f"{IMAGE_SERIES}/{name} has shape {values.shape}, expected ({length},)"
            )
        return values

    def __reduce__(self):
        return pickled_by_path(NexusDataSource, self.path)

    def close(self):
        """Close the file (it reopens on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for data in self._data_sets:
            data.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def n_frames(self):
        return self._shape[0]

    @property
    def panel_shapes(self):
        return [tuple(shape[1:]) for shape in self._shapes]

    @property
    def dtype(self):
        return self._dtype

    @property
    def chunk_shape(self):
        """The HDF5 chunk shape of the data (frames, rows, columns), None if contiguous.

        Reading chunks aligned with it decompresses each HDF5 chunk once.
        """
        return self._chunk_shape

    @property
    def image_numbers(self):
        return self._image_numbers.copy()

    @property
    def exposure_times(self):
        return self._exposure_times.copy()

    @property
    def angles_deg(self):
        return self._phi.copy()

    def static_mask(self, panel=0):
        self._check_panel(panel)
        return np.ones(self._shapes[panel][1:], dtype=bool)

    def _check_panel(self, panel):
        if not 0 <= panel < len(self._shapes):
            raise ValueError(
                f"{self.path} has {len(self._shapes)} panel(s), not panel {panel}"
            )

    @property
    def codec_name(self):
        """How the chunks are decoded, e.g. 'shuffle+deflate' (see hdf5_chunks)."""
        return self._data.codec_name

    def read(self, chunk, out=None):
        self._check_panel(chunk.panel)
        frames, rows, columns = (
            slice(*axis.indices(n)[:2])
            for axis, n in zip(
                (chunk.frames, chunk.rows, chunk.columns), self._shapes[chunk.panel]
            )
        )
        shape = tuple(axis.stop - axis.start for axis in (frames, rows, columns))
        # With `out` the caller reuses buffers: the validity mask is this
        # thread's reusable one too (valid until its next read of this shape).
        valid = (
            np.empty(shape, dtype=bool)
            if out is None
            else thread_buffer(shape, bool, "valid")
        )
        out = output_buffer(shape, self._dtype, out)
        try:
            # valid = data >= 0, computed while placing: -1 (masked) and NaN
            # are invalid.
            data = self._data_sets[chunk.panel].read(
                frames, rows, columns, out=out, valid=valid
            )
        except (OSError, ValueError) as error:
            raise self._error(
                f"cannot read frames {chunk.frames.start}-{chunk.frames.stop - 1} ({error})"
            ) from None
        exclude_non_finite(data, valid, self.path)  # +Inf passed data >= 0
        return data, valid
