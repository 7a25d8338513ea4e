"""Our own image file, ``data.nxs``, as an ImageSource.

``dials.diffuse.import_data`` writes a chunked, compressed NeXus copy of a
rotation sweep (the mdx2 layout), which NeXpy and h5py open:

::

    /                      creator = "dials-diffuse <version>"
    /entry                 NX_class = NXentry
    /entry/image_series    NX_class = NXdata, signal = "data", axes = ["phi", "iy", "ix"]
        data               (frames, rows, columns) counts; masked pixels are -1;
                           chunked, gzip + shuffle (default) or bitshuffle/LZ4
        phi                (frames,) rotation angle at the centre of each frame, degrees
        iy                 (rows,) row index
        ix                 (columns,) column index
        exposure_times     (frames,) seconds
        image_numbers      (frames,) 1-based DIALS image numbers (optional;
                           default 1 .. frames)

Every later step can read this file instead of the original images. Its
chunks are read raw and decoded outside h5py, in parallel threads
(`dials_diffuse.images.hdf5_chunks`); any other HDF5 layout of the same
names is read through h5py. The file
has one panel. Masked pixels are stored as -1 in each frame, so the static
mask is all valid and ``read`` marks every negative (or NaN) value invalid.
"""

from pathlib import Path

import h5py
import numpy as np

from dials_diffuse.images.hdf5_chunks import ChunkedDataset
from dials_diffuse.images.source import (
    ImageSource,
    exclude_non_finite,
    output_buffer,
    thread_buffer,
)
from dials_diffuse.util.errors import UserError

#: Where the image series lives in the file.
IMAGE_SERIES = "/entry/image_series"


class NexusDataSource(ImageSource):
    """Read a ``data.nxs`` (layout in the module docstring) chunk by chunk.

    The file is opened lazily in each process (the source pickles by path, so
    it can be sent to Dask workers). Chunks are read raw and decoded outside
    h5py (`dials_diffuse.images.hdf5_chunks`), so threads sharing one source
    decode in parallel; layouts that path does not handle go through h5py.

    Raises
    ------
    UserError
        Naming the file, when it is not HDF5 or lacks the layout.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._file = None
        series = self._series()
        data = series["data"]
        if data.ndim != 3:
            raise self._error(f"{IMAGE_SERIES}/data has {data.ndim} dimensions, not 3")
        if data.dtype.kind not in "iuf":
            raise self._error(f"{IMAGE_SERIES}/data holds {data.dtype}, not numbers")
        self._shape = data.shape
        self._dtype = data.dtype
        self._phi = self._axis(series, "phi", self._shape[0])
        self._exposure_times = self._axis(series, "exposure_times", self._shape[0])
        self._chunk_shape = data.chunks
        self._data = ChunkedDataset(self.path, IMAGE_SERIES + "/data")
        self._image_numbers = (
            self._axis(series, "image_numbers", self._shape[0]).astype(int)
            if "image_numbers" in series
            else np.arange(1, self._shape[0] + 1)
        )

    def _error(self, problem):
        return UserError(f"{self.path}: {problem}")

    def _series(self):
        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r")
            except FileNotFoundError:
                raise self._error("no such file") from None
            except OSError as error:
                raise self._error(f"not a readable HDF5 file ({error})") from None
        series = self._file.get(IMAGE_SERIES)
        if not isinstance(series, h5py.Group) or "data" not in series:
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

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def close(self):
        """Close the file (it reopens on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._data.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def n_frames(self):
        return self._shape[0]

    @property
    def panel_shapes(self):
        return [tuple(self._shape[1:])]

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
        return np.ones(self._shape[1:], dtype=bool)

    def _check_panel(self, panel):
        if panel != 0:
            raise ValueError(f"{self.path} has one panel, not panel {panel}")

    @property
    def codec_name(self):
        """How the chunks are decoded, e.g. 'shuffle+deflate' (see hdf5_chunks)."""
        return self._data.codec_name

    def read(self, chunk, out=None):
        self._check_panel(chunk.panel)
        frames, rows, columns = (
            slice(*axis.indices(n)[:2])
            for axis, n in zip((chunk.frames, chunk.rows, chunk.columns), self._shape)
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
            data = self._data.read(frames, rows, columns, out=out, valid=valid)
        except (OSError, ValueError) as error:
            raise self._error(
                f"cannot read frames {chunk.frames.start}-{chunk.frames.stop - 1} ({error})"
            ) from None
        exclude_non_finite(data, valid, self.path)  # +Inf passed data >= 0
        return data, valid
