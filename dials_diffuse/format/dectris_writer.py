"""Write image series in the DECTRIS filewriter layout (master + data files).

The layout is what an EIGER's SIMPLON filewriter produces: data files
``<prefix>_data_NNNNNN.h5`` holding ``/entry/data/data`` (frames x rows x
columns, chunked one frame per chunk, bitshuffle/LZ4 or LZ4 compressed, with
``image_nr_low``/``image_nr_high`` attributes, 1-based), and a master file
``<prefix>_master.h5`` whose ``/entry/data/data_NNNNNN`` are external links to
them, with the flat detector header (no NeXus geometry). Header values left
as None are not written, to make the bare files real detectors sometimes
write. Frames are streamed: memory holds one frame at a time.
"""

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from dials_diffuse.util.progress import progress

COMPRESSION = {
    "bslz4": lambda: hdf5plugin.Bitshuffle(cname="lz4"),
    "lz4": lambda: hdf5plugin.LZ4(),
    "gzip": lambda: {"compression": "gzip", "compression_opts": 4},
    "none": lambda: {},
}


def data_file_name(prefix, number):
    """``<prefix>_data_NNNNNN.h5`` for data file `number` (1-based)."""
    return f"{prefix}_data_{number:06d}.h5"


def write_data_files(
    directory,
    prefix,
    frames,
    *,
    n_frames,
    shape,
    dtype=np.uint16,
    frames_per_file=100,
    compression="bslz4",
    desc="Writing frames",
):
    """Stream `frames` (2-D arrays) into DECTRIS data files; return their names.

    Each file holds at most `frames_per_file` frames in ``/entry/data/data``,
    chunked one frame per chunk, with ``image_nr_low``/``image_nr_high``
    (1-based image numbers, inclusive). Memory holds one frame at a time.
    """
    directory = Path(directory)
    frames = iter(frames)
    names = []
    bar = progress(total=n_frames, desc=desc, unit="frame")
    for number, first in enumerate(range(0, n_frames, frames_per_file), start=1):
        count = min(frames_per_file, n_frames - first)
        name = data_file_name(prefix, number)
        with h5py.File(directory / name, "w") as handle:
            entry = handle.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            group = entry.create_group("data")
            group.attrs["NX_class"] = "NXdata"
            data = group.create_dataset(
                "data",
                shape=(count, *shape),
                chunks=(1, *shape),
                dtype=dtype,
                **COMPRESSION[compression](),
            )
            data.attrs["image_nr_low"] = np.int32(first + 1)
            data.attrs["image_nr_high"] = np.int32(first + count)
            for index in range(count):
                data[index] = next(frames)
                bar.update(1)
        names.append(name)
    bar.close()
    return names


def write_dectris_files(
    directory,
    prefix,
    frames,
    *,
    n_frames,
    shape,
    dtype=np.uint16,
    frames_per_file=100,
    compression="bslz4",
    x_pixel_size=75e-6,
    y_pixel_size=75e-6,
    detector_distance=0.2,
    beam_center=None,
    wavelength=1.0,
    photon_energy=None,
    sensor_material="Si",
    sensor_thickness=450e-6,
    count_time=0.1,
    countrate_cutoff=None,
    pixel_mask=None,
    omega_start=0.0,
    omega_increment=0.1,
    description="Dectris EIGER 1M",
):
    """Write a DECTRIS filewriter series; returns the master file's path.

    Parameters
    ----------
    directory : path
    prefix : str
        Files are ``<prefix>_master.h5`` and ``<prefix>_data_NNNNNN.h5``.
    frames : iterable of ndarray (rows, columns)
        The images, streamed.
    n_frames : int
        How many frames ``frames`` yields.
    shape : (rows, columns)
    dtype : uint8, uint16 or uint32
    frames_per_file : int
    compression : "bslz4", "lz4", "gzip" or "none"
    x_pixel_size, y_pixel_size : float, m
    detector_distance : float, m
    beam_center : (x, y) in pixels; default the detector centre
    wavelength : float, Å (``incident_wavelength``)
    photon_energy : float, eV (``detectorSpecific/photon_energy``)
    sensor_material : str; sensor_thickness : float, m
    count_time : float, s
    countrate_cutoff : int (``countrate_correction_count_cutoff``)
    pixel_mask : ndarray of uint32 (rows, columns), nonzero = bad
    omega_start, omega_increment : float, degrees; increment 0 means stills
    description : str

    Any header value given as None is left out of the master file.
    """
    directory = Path(directory)
    links = write_data_files(
        directory,
        prefix,
        frames,
        n_frames=n_frames,
        shape=shape,
        dtype=dtype,
        frames_per_file=frames_per_file,
        compression=compression,
    )

    master = directory / f"{prefix}_master.h5"
    if beam_center is None:
        beam_center = (shape[1] / 2, shape[0] / 2)
    header = {
        "instrument/detector/description": description,
        "instrument/detector/x_pixel_size": x_pixel_size,
        "instrument/detector/y_pixel_size": y_pixel_size,
        "instrument/detector/detector_distance": detector_distance,
        "instrument/detector/beam_center_x": beam_center[0],
        "instrument/detector/beam_center_y": beam_center[1],
        "instrument/detector/sensor_material": sensor_material,
        "instrument/detector/sensor_thickness": sensor_thickness,
        "instrument/detector/count_time": count_time,
        "instrument/detector/frame_time": count_time,
        "instrument/beam/incident_wavelength": wavelength,
        "instrument/detector/detectorSpecific/photon_energy": photon_energy,
        "instrument/detector/detectorSpecific/countrate_correction_count_cutoff": (
            countrate_cutoff
        ),
        "instrument/detector/detectorSpecific/nimages": n_frames,
        "instrument/detector/detectorSpecific/ntrigger": 1,
        "instrument/detector/detectorSpecific/x_pixels_in_detector": shape[1],
        "instrument/detector/detectorSpecific/y_pixels_in_detector": shape[0],
    }
    if omega_increment is not None:
        header["sample/goniometer/omega"] = omega_start + omega_increment * np.arange(
            n_frames
        )
        header["sample/goniometer/omega_increment"] = omega_increment
        header["sample/goniometer/omega_range_average"] = omega_increment
    with h5py.File(master, "w") as f:
        entry = f.create_group("entry")
        for path, value in header.items():
            if value is not None:
                entry[path] = value
        if pixel_mask is not None:
            entry.create_dataset(
                "instrument/detector/detectorSpecific/pixel_mask",
                data=np.asarray(pixel_mask, dtype=np.uint32),
                compression="gzip",
            )
        for number, name in enumerate(links, start=1):
            entry[f"data/data_{number:06d}"] = h5py.ExternalLink(
                name, "/entry/data/data"
            )
    return master
