"""Write image series in the DECTRIS Eiger file layout: a master file and data files.

The layout the detectors' file writer produces and `EigerMasterSource` (and
DIALS) read: `<name>_master.h5` with the detector metadata
(`/entry/instrument/detector`, `detectorSpecific/pixel_mask`, saturation
value, bit depth) and external links `/entry/data/data_00000N` to
`<name>_data_00000N.h5`, whose `/entry/data/data` (frames, rows, columns),
one chunk per frame, carries `image_nr_low`/`image_nr_high`.
Used to make test and benchmark series, and to give real data files a
master file.
"""

import os
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

COMPRESSIONS = ("bslz4", "lz4", "gzip", "none")


def _filter_options(compression):
    if compression == "bslz4":
        return dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    if compression == "lz4":
        return dict(hdf5plugin.LZ4())
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    if compression == "none":
        return {}
    raise ValueError(f"compression {compression!r}: one of {', '.join(COMPRESSIONS)}")


def write_data_file(path, frames, first_image=1, compression="bslz4"):
    """Write frames (an iterable of (rows, columns) arrays, or a 3-D array).

    Parameters
    ----------
    path : str or Path
    frames : ndarray (frames, rows, columns) or iterable of 2-D arrays
        Written one chunk per frame (never all in memory for an iterable).
    first_image : int
        1-based image number of the first frame (`image_nr_low`).
    compression : str
        'bslz4' (bitshuffle + LZ4, filter 32008), 'lz4' (32004), 'gzip', 'none'.

    Returns
    -------
    int
        Number of frames written.
    """
    frames = iter(frames)
    first = np.asarray(next(frames))
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset(
            "/entry/data/data",
            shape=(1, *first.shape),
            maxshape=(None, *first.shape),
            dtype=first.dtype,
            chunks=(1, *first.shape),
            **_filter_options(compression),
        )
        dataset[0] = first
        n = 1
        for frame in frames:
            dataset.resize(n + 1, axis=0)
            dataset[n] = frame
            n += 1
        dataset.attrs["image_nr_low"] = np.int32(first_image)
        dataset.attrs["image_nr_high"] = np.int32(first_image + n - 1)
    return n


def write_master_file(
    path,
    data_files,
    frame_shape,
    pixel_mask=None,
    saturation_value=None,
    bit_depth=None,
    count_time=None,
    pixel_size=0.075,
):
    """Write a master file linking to existing data files.

    Parameters
    ----------
    path : str or Path
        The master file to write.
    data_files : list of str or Path
        Data files in order; linked as data_000001, ... (relative to the
        master's directory when inside it, else absolute).
    frame_shape : (int, int)
        (rows, columns) of a frame, for the pixel mask.
    pixel_mask : ndarray of uint32, optional
        DECTRIS pixel mask: nonzero = invalid (1 gap, 2 dead, 4 cold, 8 hot,
        16 noisy). Default: all valid.
    saturation_value : int, optional
        Counts above it are overloads.
    bit_depth : int, optional
        `bit_depth_image`; 2^bit_depth - 1 marks gaps and bad pixels.
    count_time : float, optional
        Exposure time per frame, in seconds.
    pixel_size : float
        Pixel size in mm (written in metres, as NeXus wants).
    """
    path = Path(path)
    with h5py.File(path, "w") as handle:
        data = handle.create_group("/entry/data")
        for index, data_file in enumerate(data_files, start=1):
            data_file = Path(data_file)
            try:
                target = os.path.relpath(data_file, path.parent)
                if target.startswith(".."):
                    target = str(data_file.resolve())
            except ValueError:
                target = str(data_file.resolve())
            data[f"data_{index:06d}"] = h5py.ExternalLink(target, "/entry/data/data")
        detector = handle.create_group("/entry/instrument/detector")
        specific = detector.create_group("detectorSpecific")
        mask = np.zeros(frame_shape, np.uint32) if pixel_mask is None else pixel_mask
        specific.create_dataset(
            "pixel_mask", data=np.asarray(mask, np.uint32), compression="gzip"
        )
        if saturation_value is not None:
            specific["saturation_value"] = np.int32(saturation_value)
        if bit_depth is not None:
            specific["bit_depth_image"] = np.int32(bit_depth)
        if count_time is not None:
            detector["count_time"] = np.float64(count_time)
        detector["x_pixel_size"] = np.float32(pixel_size / 1000.0)
        detector["y_pixel_size"] = np.float32(pixel_size / 1000.0)
        handle["/entry/data"].attrs["NX_class"] = "NXdata"
        handle["/entry"].attrs["NX_class"] = "NXentry"
