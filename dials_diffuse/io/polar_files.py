"""polar.h5: polar (q, phi) images of still shots, written shot block by block.

Layout (NeXus, opens in h5py and NeXpy)::

    /                      creator = "dials-diffuse <version>"
    /entry                 NXentry, default = "polar"
    /entry/polar           NXdata, signal "data", axes shot, q, phi
        data   (shots, n_q, n_phi) float32   polar images (normalised when
                                              attribute normalised = 1)
        mask   (shots, n_q, n_phi) uint8     1 = valid sample (DIALS sense)
        q      (n_q,)  Å⁻¹                    |q| of each row
        phi    (n_phi,) degrees               azimuth of each column
        tag    (shots,) int64                 SACLA tag (or image number)
        dark   (shots,) uint8                 1 = dark (no X-rays) shot
        mean_intensity (shots,)               mean valid raw pixel value
        wavelength     (shots,) Å             of each shot
    /entry/geometry        beam_centre_px (fast, slow), wavelength (Å),
                           distance (mm), pixel_size (mm, fast, slow), method,
                           oversample
"""

import dataclasses

import h5py
import numpy as np

import dials_diffuse
from dials_diffuse.images.hdf5_chunks import deflate_chunks
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.parallel import pickled_by_path

CREATOR = f"dials-diffuse {dials_diffuse.__version__}"
DEFLATE_LEVEL = 1


def compress_polar_images(polar):
    """Each polar image (float32) as the bytes of its stored HDF5 chunk.

    The `data` dataset stores one chunk per shot through the shuffle and
    deflate filters; doing that work here (C++ shuffle and libdeflate, GIL
    released) lets worker threads compress shots in parallel, and the writer
    only copies bytes (`PolarFileWriter.write(..., compressed=)`).
    """
    chunks = []
    for image in np.asarray(polar, dtype=np.float32):
        ((_, stored),) = deflate_chunks(
            np.ascontiguousarray(image[None]),
            (1, *image.shape),
            DEFLATE_LEVEL,
            shuffle=True,
        )
        chunks.append(stored)
    return chunks


class PolarFileWriter:
    """Create polar.h5 at `path` and fill it block by block (use as a context manager)."""

    def __init__(self, path, q, nphi, tags, geometry, normalised):
        n_shots = len(tags)
        shape = (n_shots, len(q), nphi)
        self._file = h5py.File(path, "w")
        f = self._file
        f.attrs["creator"] = CREATOR
        f.attrs["NX_class"] = "NXroot"
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "polar"
        polar = entry.create_group("polar")
        polar.attrs["NX_class"] = "NXdata"
        polar.attrs["signal"] = "data"
        polar.attrs["axes"] = np.array(["shot", "q", "phi"], dtype=h5py.string_dtype())
        chunks = (1, len(q), nphi)
        self.data = polar.create_dataset(
            "data",
            shape,
            dtype=np.float32,
            chunks=chunks,
            compression="gzip",
            compression_opts=DEFLATE_LEVEL,
            shuffle=True,
        )
        self.data.attrs["normalised"] = int(bool(normalised))
        self.mask = polar.create_dataset(
            "mask",
            shape,
            dtype=np.uint8,
            chunks=chunks,
            compression="gzip",
            compression_opts=1,
        )
        polar["shot"] = np.arange(n_shots)
        polar["q"] = np.asarray(q, dtype=np.float64)
        polar["q"].attrs["units"] = "1/angstrom"
        polar["phi"] = np.degrees(2 * np.pi * np.arange(nphi) / nphi)
        polar["phi"].attrs["units"] = "degrees"
        polar["tag"] = np.asarray(tags, dtype=np.int64)
        self._polar = polar
        geometry_group = entry.create_group("geometry")
        geometry_group.attrs["NX_class"] = "NXcollection"
        for key, value in geometry.items():
            geometry_group[key] = value

    def write(self, first, polar, valid, compressed=None):
        """Write shots first .. first+len(polar)-1.

        `compressed`, from `compress_polar_images(polar)`, skips compressing
        here (it was done in parallel).
        """
        stop = first + polar.shape[0]
        if compressed is None:
            self.data[first:stop] = polar
        else:
            for k, chunk in enumerate(compressed):
                self.data.id.write_direct_chunk((first + k, 0, 0), chunk)
        self.mask[first:stop] = valid.astype(np.uint8)

    def finish(self, dark, mean_intensity, wavelengths):
        """Write the per-shot records known once every shot is done."""
        self._polar["dark"] = np.asarray(dark, dtype=np.uint8)
        self._polar["mean_intensity"] = np.asarray(mean_intensity, dtype=np.float64)
        self._polar["wavelength"] = np.asarray(wavelengths, dtype=np.float64)
        self._polar["wavelength"].attrs["units"] = "angstrom"

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclasses.dataclass
class PolarFile:
    """An open polar.h5: datasets are read lazily, shot by shot.

    Attributes
    ----------
    data, mask : h5py.Dataset (shots, n_q, n_phi)
    q : ndarray (Å⁻¹), phi : ndarray (degrees), tags : ndarray, dark : bool ndarray
    normalised : bool
    shape : (shots, n_q, n_phi)

    Calling it (or `read`) reads one shot; it pickles as its absolute path
    and reopens the file where it is unpickled (Dask workers,
    `pickled_by_path`).
    """

    path: str
    handle: object
    data: object
    mask: object
    q: np.ndarray
    phi: np.ndarray
    tags: np.ndarray
    dark: np.ndarray
    normalised: bool
    shape: tuple

    def read(self, index):
        """Polar image (float64) and validity (bool) of shot `index`."""
        return self.data[index].astype(np.float64), self.mask[index] != 0

    __call__ = read

    def __reduce__(self):
        return pickled_by_path(open_polar_file, self.path)

    def close(self):
        if self.handle is not None:
            self.handle.close()


def open_polar_file(path):
    """Open a polar.h5 written by dials.diffuse.polar_transform (DataError if not)."""
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path}: not a readable HDF5 file ({error})") from error
    try:
        group = handle["entry/polar"]
        result = PolarFile(
            path=str(path),
            handle=handle,
            data=group["data"],
            mask=group["mask"],
            q=group["q"][()],
            phi=group["phi"][()],
            tags=group["tag"][()],
            dark=group["dark"][()].astype(bool),
            normalised=bool(group["data"].attrs.get("normalised", 0)),
            shape=tuple(group["data"].shape),
        )
    except (KeyError, OSError) as error:
        handle.close()
        raise DataError(
            f"{path}: not a polar file from dials.diffuse.polar_transform "
            f"(missing {error})"
        ) from error
    if result.data.ndim != 3 or result.data.shape != result.mask.shape:
        handle.close()
        raise DataError(f"{path}: polar data and mask have different shapes")
    return result
