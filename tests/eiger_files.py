"""Eiger test files: master files for the real DECTRIS data, synthetic series.

The real DECTRIS sets in ../shared/data come without master files; these
helpers write one beside the test's temporary directory that links to the
real data files (never copied, never modified).
"""

from pathlib import Path

import numpy as np

from dials_diffuse.io.dectris import write_data_file, write_master_file

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


def real_data_files(shared_data, name):
    folder, stem = REAL_SETS[name]
    directory = Path(shared_data) / "dectris_eiger_testfiles" / folder
    return [directory / f"{stem}_data_{i:06d}.h5" for i in (1, 2)]


def real_master(directory, shared_data, name, **metadata):
    """Write `<name>_master.h5` in `directory` linking to a real DECTRIS set."""
    import h5py

    files = real_data_files(shared_data, name)
    with h5py.File(files[0], "r") as handle:
        shape = handle["/entry/data/data"].shape[1:]
    master = Path(directory) / f"{name}_master.h5"
    write_master_file(master, files, shape, **metadata)
    return master


def write_series(
    directory, frames, per_file, compression="bslz4", stem="series", **metadata
):
    """Write `frames` (frames, rows, columns) as a DECTRIS series; return the master."""
    directory = Path(directory)
    files = []
    for index, first in enumerate(range(0, len(frames), per_file), start=1):
        path = directory / f"{stem}_data_{index:06d}.h5"
        write_data_file(path, frames[first : first + per_file], first + 1, compression)
        files.append(path)
    master = directory / f"{stem}_master.h5"
    write_master_file(master, files, frames.shape[1:], **metadata)
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
