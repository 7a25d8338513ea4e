"""Eiger test files: master files for the real DECTRIS data, synthetic series.

The real DECTRIS sets (the `dectris_testfiles` fixture) come without master files;
`real_master` writes one in the test's temporary directory that links to the
real data files (never copied, never modified). Synthetic series are written
by the package's one DECTRIS writer (`dials_diffuse.simulate.eiger_files`).
"""

import os
from pathlib import Path

import h5py
import numpy as np

from dials_diffuse.simulate.eiger_files import COMPRESSION, write_dectris_files

REAL_SETS = {
    "eiger1_bslz4": ("datasets_eiger1", "eiger1_testmode10_2datafiles_4images_bslz4"),
    "eiger1_lz4": ("datasets_eiger1", "eiger1_testmode10_2datafiles_4images_lz4"),
    "eiger2_bslz4": ("datasets_eiger2", "eiger2_simread7_2datafiles_4images_bslz4"),
    "eiger2_bslz4_uint8": (
        "datasets_eiger2",
        "eiger2_simread7_2datafiles_4images_bslz4_uint8",
    ),
    "eiger2_bslz4_uint32": (
        "datasets_eiger2",
        "eiger2_simread7_2datafiles_4images_bslz4_uint32",
    ),
    "eiger2_lz4": ("datasets_eiger2", "eiger2_simread7_2datafiles_4images_lz4"),
}


def real_data_files(dectris_testfiles, name):
    """The two data files of a real DECTRIS set (`dectris_testfiles`: its folder)."""
    folder, stem = REAL_SETS[name]
    directory = Path(dectris_testfiles) / folder
    return [directory / f"{stem}_data_{i:06d}.h5" for i in (1, 2)]


def link_master(master, data_files, frame_shape):
    """Write a bare master file whose data_00000N link to existing data files."""
    master = Path(master)
    with h5py.File(master, "w") as handle:
        for index, data_file in enumerate(data_files, start=1):
            target = os.path.relpath(Path(data_file).resolve(), master.parent.resolve())
            if target.startswith(".."):
                target = str(Path(data_file).resolve())
            handle[f"/entry/data/data_{index:06d}"] = h5py.ExternalLink(
                target, "/entry/data/data"
            )
        handle["/entry/instrument/detector/detectorSpecific/pixel_mask"] = np.zeros(
            frame_shape, np.uint32
        )
    return master


def real_master(directory, dectris_testfiles, name):
    """Write `<name>_master.h5` in `directory` linking to a real DECTRIS set."""
    files = real_data_files(dectris_testfiles, name)
    with h5py.File(files[0], "r") as handle:
        shape = handle["/entry/data/data"].shape[1:]
    return link_master(Path(directory) / f"{name}_master.h5", files, shape)


def write_data_file(path, frames, first_image=1, compression="bslz4"):
    """One data file: frames (frames, rows, columns), one chunk per frame."""
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset(
            "/entry/data/data",
            data=frames,
            chunks=(1, *frames.shape[1:]),
            **COMPRESSION[compression](),
        )
        dataset.attrs["image_nr_low"] = np.int32(first_image)
        dataset.attrs["image_nr_high"] = np.int32(first_image + len(frames) - 1)
    return path


def write_series(
    directory,
    frames,
    per_file,
    compression="bslz4",
    stem="series",
    pixel_mask=None,
    saturation_value=None,
    bit_depth=None,
    count_time=0.1,
):
    """Write `frames` (frames, rows, columns) as a DECTRIS series; return the master."""
    master = write_dectris_files(
        directory,
        stem,
        iter(frames),
        n_frames=len(frames),
        shape=frames.shape[1:],
        dtype=frames.dtype,
        frames_per_file=per_file,
        compression=compression,
        count_time=count_time,
        countrate_cutoff=saturation_value,
        pixel_mask=pixel_mask,
    )
    if bit_depth is not None:
        with h5py.File(master, "r+") as handle:
            specific = "/entry/instrument/detector/detectorSpecific"
            handle[f"{specific}/bit_depth_image"] = np.int32(bit_depth)
    return master


def drifting_series(
    n_frames=120, shape=(48, 40), level=20.0, drift=0.1, cv=0.02, seed=3
):
    """Frames whose expected sums drift linearly with known relative scatter.

    Frame t has Poisson pixels of mean level * (1 + drift * t / (n-1)) * (1 + cv * z_t),
    z_t standard normal: a linear drift of `drift` (relative, over the series)
    and a frame-to-frame coefficient of variation `cv` around it.

    Returns
    -------
    frames : ndarray of uint16
    scale : ndarray of float
        The per-frame multiplier (the truth the statistics recover).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames)
    scale = (1 + drift * t / (n_frames - 1)) * (1 + cv * rng.standard_normal(n_frames))
    frames = rng.poisson(level * scale[:, None, None], (n_frames, *shape)).astype(
        np.uint16
    )
    return frames, scale
