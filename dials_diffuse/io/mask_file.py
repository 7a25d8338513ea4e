"""Our mask file mask.nxs: the peak mask of every frame, written and read.

mdx2's convention, 1 = excluded (the opposite of a DIALS validity mask); an
image stack of data.nxs's layout (`dials_diffuse.io.image_series.create_stack`)::

    /entry/mask          NXdata; signal = "mask", axes = ["phi", "iy", "ix"];
                         attrs meaning, sigma_cutoff, bragg
      mask               (frames, rows, columns) uint8, 1 = excluded; chunked
                         (frames_per_chunk x 256 x 256), gzip
      phi, iy, ix        rotation angle (degrees) per frame, pixel indices
      image_numbers      DIALS image number of each frame
      hot_pixels         (rows, columns) uint8, 1 = hot pixel

`MaskWriter` stores chunks that workers compressed already (standard gzip,
`dials_diffuse.images.hdf5_chunks.deflate_chunks`); `MaskFile` reads the
mask by image number, decoding chunks outside h5py (threads in parallel).
"""

import h5py
import numpy as np

from dials_diffuse.images.hdf5_chunks import ChunkedDataset
from dials_diffuse.io.image_series import create_stack
from dials_diffuse.io.tables import open_nexus_for_writing
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.parallel import pickled_by_path

GROUP = "entry/mask"


class MaskWriter:
    """A new mask.nxs at `path`, filled chunk by chunk (a context manager).

    Parameters
    ----------
    path : path
    phi : ndarray
        Rotation angle (degrees) at the centre of every frame.
    image_numbers : ndarray of int
        DIALS image number of every frame.
    shape : (int, int)
        Rows and columns of a frame.
    hot_pixels : ndarray of bool (rows, columns)
    attrs : dict
        sigma_cutoff, bragg: how the mask was made.
    frames_per_chunk : int
        Frames per HDF5 chunk (the chunk shape is `chunk_shape`).
    """

    def __init__(
        self, path, phi, image_numbers, shape, hot_pixels, attrs, frames_per_chunk
    ):
        n_frames = len(phi)
        rows, columns = shape
        self.chunk_shape = (
            min(frames_per_chunk, n_frames),
            min(256, rows),
            min(256, columns),
        )
        self._handle = open_nexus_for_writing(path)
        group = create_stack(self._handle, "mask", "mask", phi, shape, image_numbers)
        group.attrs["meaning"] = "1 = pixel excluded (peak, hot pixel or detector mask)"
        for key, value in attrs.items():
            group.attrs[key] = value
        group.create_dataset(
            "hot_pixels",
            data=np.asarray(hot_pixels).astype(np.uint8),
            compression="gzip",
        )
        self._dataset = group.create_dataset(
            "mask",
            shape=(n_frames, rows, columns),
            dtype=np.uint8,
            chunks=self.chunk_shape,
            compression="gzip",
            compression_opts=1,
            shuffle=False,
        )

    def store(self, start, stored):
        """Store compressed chunks [((0, row, column), bytes)] of frames from `start`."""
        for (_, row, column), raw in stored:
            self._dataset.id.write_direct_chunk((start, row, column), raw)

    def close(self):
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class MaskFile:
    """Read a mask.nxs chunk by chunk, by 1-based image number."""

    def __init__(self, path):
        self.path = str(path)
        try:
            with h5py.File(self.path, "r") as handle:
                group = handle[GROUP]
                self.shape = group["mask"].shape
                self.image_numbers = group["image_numbers"][()]
        except (OSError, KeyError) as error:
            raise DataError(
                f"{path}: not a dials-diffuse mask (no readable /{GROUP}/mask)"
            ) from error
        self._data = ChunkedDataset(self.path, GROUP + "/mask")

    def __reduce__(self):
        return pickled_by_path(MaskFile, self.path)

    def check_covers(self, images, shape):
        """DataError unless the mask has every image in `images` and this frame shape."""
        if tuple(self.shape[1:]) != tuple(shape):
            raise DataError(
                f"{self.path}: mask frames are {self.shape[1:]}, the images {tuple(shape)}"
            )
        missing = np.setdiff1d(images, self.image_numbers)
        if missing.size:
            raise DataError(
                f"{self.path}: has no mask for image(s) {', '.join(map(str, missing[:10]))}"
            )

    def read(self, images, out=None):
        """Mask (len(images), rows, columns) uint8 of consecutive 1-based images.

        Chunks are decoded outside h5py (threads read in parallel); `out`, a
        C-contiguous uint8 array of that shape, is filled and returned.
        """
        start = int(np.searchsorted(self.image_numbers, images[0]))
        try:
            return self._data.read(
                slice(start, start + len(images)),
                slice(0, self.shape[1]),
                slice(0, self.shape[2]),
                out=out,
            )
        except (OSError, ValueError) as error:
            raise DataError(
                f"{self.path}: cannot read the mask of images {images[0]}-{images[-1]} "
                f"({error})"
            ) from None
