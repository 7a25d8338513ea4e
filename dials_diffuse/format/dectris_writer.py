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

COMPRESSION = {
    "bslz4": lambda: hdf5plugin.Bitshuffle(cname="lz4"),
    "lz4": lambda: hdf5plugin.LZ4(),
}


def _write_data_file(path, frames, first_image, shape, dtype, compression):
    """Append frames to a new data file; returns the number written."""
    with h5py.File(path, "w") as f:
        data = f.create_dataset(
            "/entry/data/data",
            shape=(0, *shape),
            maxshape=(None, *shape),
            chunks=(1, *shape),
            dtype=dtype,
            **COMPRESSION[compression](),
        )
        f["/entry"].attrs["NX_class"] = "NXentry"
        f["/entry/data"].attrs["NX_class"] = "NXdata"
        n = 0
        for frame in frames:
            data.resize(n + 1, axis=0)
            data[n] = frame
            n += 1
        data.attrs["image_nr_low"] = np.int32(first_image)
        data.attrs["image_nr_high"] = np.int32(first_image + n - 1)
    return n


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
    compression : "bslz4" or "lz4"
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
    frames = iter(frames)
    links = []
    written = 0
    while written < n_frames:
        count = min(frames_per_file, n_frames - written)
        name = f"{prefix}_data_{len(links) + 1:06d}.h5"
        batch = (next(frames) for _ in range(count))
        _write_data_file(
            directory / name, batch, written + 1, shape, dtype, compression
        )
        links.append(name)
        written += count

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
