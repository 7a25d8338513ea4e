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

A multi-panel detector's mask has one such NXdata stack per panel, with the
same datasets, under ``/entry/mask/panel_00``, ``panel_01``, ... (panel
numbers as DIALS numbers them; each panel's own rows and columns). The group
``/entry/mask`` is then an NXcollection with the attributes (meaning,
sigma_cutoff, bragg) and ``panels``; its default plot is panel 0.

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


def _panel_group(panel, n_panels):
    """Where one panel's stack lives: /entry/mask, or /entry/mask/panel_NN."""
    return GROUP if n_panels == 1 else f"{GROUP}/panel_{panel:02d}"


class MaskWriter:
    """A new mask.nxs at `path`, filled chunk by chunk (a context manager).

    Parameters
    ----------
    path : path
    phi : ndarray
        Rotation angle (degrees) at the centre of every frame.
    image_numbers : ndarray of int
        DIALS image number of every frame.
    shapes : list of (int, int)
        Rows and columns of each panel's frame.
    hot_pixels : list of ndarray of bool (rows, columns), one per panel
    attrs : dict
        sigma_cutoff, bragg: how the mask was made.
    frames_per_chunk : int
        Frames per HDF5 chunk (the chunk shapes are `chunk_shapes`).
    """

    def __init__(
        self, path, phi, image_numbers, shapes, hot_pixels, attrs, frames_per_chunk
    ):
        n_frames = len(phi)
        n_panels = len(shapes)
        self.chunk_shapes = [
            (min(frames_per_chunk, n_frames), min(256, rows), min(256, columns))
            for rows, columns in shapes
        ]
        self._handle = open_nexus_for_writing(path)
        meaning = "1 = pixel excluded (peak, hot pixel or detector mask)"
        if n_panels > 1:
            top = self._handle.create_group(GROUP)
            top.attrs["NX_class"] = "NXcollection"
            top.attrs["meaning"] = meaning
            top.attrs["panels"] = n_panels
            for key, value in attrs.items():
                top.attrs[key] = value
        self._datasets = []
        for panel, (rows, columns) in enumerate(shapes):
            name = _panel_group(panel, n_panels)[len("entry/") :]
            group = create_stack(
                self._handle, name, "mask", phi, (rows, columns), image_numbers
            )
            if n_panels == 1:
                group.attrs["meaning"] = meaning
                for key, value in attrs.items():
                    group.attrs[key] = value
            group.create_dataset(
                "hot_pixels",
                data=np.asarray(hot_pixels[panel]).astype(np.uint8),
                compression="gzip",
            )
            self._datasets.append(
                group.create_dataset(
                    "mask",
                    shape=(n_frames, rows, columns),
                    dtype=np.uint8,
                    chunks=self.chunk_shapes[panel],
                    compression="gzip",
                    compression_opts=1,
                    shuffle=False,
                )
            )
        if n_panels > 1:
            self._handle["entry"].attrs["default"] = "mask"
            self._handle[GROUP].attrs["default"] = "panel_00"

    def store(self, start, stored, panel=0):
        """Store a panel's compressed chunks [((0, row, column), bytes)] of frames from `start`."""
        dataset = self._datasets[panel]
        for (_, row, column), raw in stored:
            dataset.id.write_direct_chunk((start, row, column), raw)

    def close(self):
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class MaskFile:
    """Read a mask.nxs chunk by chunk, by 1-based image number and panel."""

    def __init__(self, path):
        self.path = str(path)
        try:
            with h5py.File(self.path, "r") as handle:
                n_panels = int(handle[GROUP].attrs.get("panels", 1))
                groups = [_panel_group(panel, n_panels) for panel in range(n_panels)]
                self.shapes = [handle[group]["mask"].shape for group in groups]
                self.image_numbers = handle[groups[0]]["image_numbers"][()]
        except (OSError, KeyError) as error:
            raise DataError(
                f"{path}: not a dials-diffuse mask (no readable /{GROUP}/mask)"
            ) from error
        self.shape = self.shapes[0]
        self._data = [ChunkedDataset(self.path, group + "/mask") for group in groups]

    def __reduce__(self):
        return pickled_by_path(MaskFile, self.path)

    def check_covers(self, images, shapes):
        """DataError unless the mask has every image in `images` and these panel shapes.

        `shapes`: the (rows, columns) of each panel (or of the one panel).
        """
        if len(shapes) and np.ndim(shapes[0]) == 0:
            shapes = [shapes]
        if len(shapes) != len(self.shapes):
            raise DataError(
                f"{self.path}: the mask has {len(self.shapes)} panel(s), the "
                f"detector {len(shapes)}"
            )
        for mask_shape, shape in zip(self.shapes, shapes):
            if tuple(mask_shape[1:]) != tuple(shape):
                raise DataError(
                    f"{self.path}: mask frames are {mask_shape[1:]}, the images "
                    f"{tuple(shape)}"
                )
        missing = np.setdiff1d(images, self.image_numbers)
        if missing.size:
            raise DataError(
                f"{self.path}: has no mask for image(s) {', '.join(map(str, missing[:10]))}"
            )

    def read(self, images, out=None, panel=0):
        """Mask (len(images), rows, columns) uint8 of consecutive 1-based images of a panel.

        Chunks are decoded outside h5py (threads read in parallel); `out`, a
        C-contiguous uint8 array of that shape, is filled and returned.
        """
        start = int(np.searchsorted(self.image_numbers, images[0]))
        shape = self.shapes[panel]
        try:
            return self._data[panel].read(
                slice(start, start + len(images)),
                slice(0, shape[1]),
                slice(0, shape[2]),
                out=out,
            )
        except (OSError, ValueError) as error:
            raise DataError(
                f"{self.path}: cannot read the mask of images {images[0]}-{images[-1]} "
                f"({error})"
            ) from None
