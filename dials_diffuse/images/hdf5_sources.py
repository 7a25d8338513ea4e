"""Which files hold the frames of an HDF5 master file, and can they all be read?

An NXmx or DECTRIS master file holds no frames itself: `/entry/data` links to
data files (external links `data_000001`, ...) or maps them into one virtual
dataset (VDS). HDF5 reads the frames of a virtual dataset whose source file
is missing, truncated or too short as the dataset's fill value (zeros),
without an error, so a deleted or half-copied data file would silently give
all-zero images. This module is the one image-read check of dials-diffuse:

- `frame_files(master)` maps every frame to the file that holds it, with the
  reason it cannot be read where it cannot (file missing, not a readable
  HDF5 file, dataset missing, fewer frames than mapped). It opens each data
  file once (cached per master file and modification time).
- `check_frames(master, first, stop)` raises a `DataError`
  ``"<file>: image N cannot be read: <reason>"`` for the first frame of
  [first, stop) that cannot be read in full, and checks on every call that
  the data files still exist (a cheap ``os.stat``).
- `referenced_files(path)` lists every data file a master file refers to
  (the runner refuses to write outputs over them).

Every image read goes through it: dxtbx imagesets in
`dials_diffuse.images.imageset.read_frame`, the DECTRIS/NXmx chunk decoder
in `dials_diffuse.images.eiger` (also behind dxtbx imagesets,
`imageset.chunk_decoder`).
"""

import dataclasses
import functools
import os
from pathlib import Path

from dials_diffuse.util.errors import DataError

#: Frame numbers beyond any series (a link whose frame count is unknown).
UNBOUNDED = 2**62


@dataclasses.dataclass(frozen=True)
class FrameFile:
    """Frames [first, stop) of the series (0-based) are held by `path`.

    `problem` is None when the frames can be read, else why not.
    """

    first: int
    stop: int
    path: str
    problem: object = None


def open_hdf5(path, swmr=False):
    """An image file (master or data file) open for reading.

    HDF5 refuses to open a file already open in the process with other SWMR
    flags ("SWMR read access flag not the same"): dxtbx's NXmx formats keep
    their files open in SWMR read mode (``swmr=True``), its Eiger classes
    and our readers in the plain one. The file is opened in the mode asked
    for, or in the other where it is already open that way.
    """
    import h5py

    try:
        return h5py.File(path, "r", swmr=swmr)
    except OSError as error:
        if "SWMR" not in str(error):
            raise
        return h5py.File(path, "r", swmr=not swmr)


def is_hdf5(path):
    """True when `path` starts with the HDF5 signature (cheap, no HDF5 call)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _stat_key(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


def frame_files(path):
    """Every frame of the master file `path`, mapped to its data file.

    Returns
    -------
    tuple of FrameFile
        Sorted by first frame; empty when the file holds no linked or
        virtual frame data (frames stored in the file itself are read, and
        checked, by HDF5).
    """
    key = _stat_key(path)
    if key is None:
        return ()
    return _frame_files(key)


@functools.lru_cache(maxsize=64)
def _frame_files(key):
    import h5py

    path = key[0]
    try:
        with open_hdf5(path) as handle:
            data = handle.get("/entry/data")
            if not isinstance(data, h5py.Group):
                return ()
            return tuple(sorted(_map_group(path, data), key=lambda f: f.first))
    except OSError:
        return ()


def _map_group(master, data):
    """FrameFiles of `/entry/data`: its virtual datasets, else its external links."""
    import h5py

    virtual, linked = [], []
    next_first = 0
    for name in sorted(data):
        link = data.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            target = _resolve(master, link.filename)
            problem, n_frames, low = _linked_dataset(target, link.path)
            first = low if low is not None else next_first
            stop = first + n_frames if n_frames is not None else UNBOUNDED
            linked.append(FrameFile(first, stop, target, problem))
            next_first = stop
        elif isinstance(link, h5py.HardLink):
            dataset = data.get(name)
            if isinstance(dataset, h5py.Dataset) and dataset.is_virtual:
                virtual.extend(_virtual_sources(master, dataset))
    # A virtual dataset maps frames exactly: prefer it where there is one.
    return virtual or linked


def _resolve(master, name):
    """A data file name as a link or VDS gives it, resolved as HDF5 does."""
    if name in ("", "."):
        return os.path.abspath(master)
    if os.path.isabs(name):
        return name
    beside = os.path.join(os.path.dirname(os.path.abspath(master)), name)
    if os.path.exists(beside) or not os.path.exists(name):
        return beside
    return os.path.abspath(name)


def _linked_dataset(path, dataset_path, needed=None):
    """(problem, frames, first frame from image_nr_low) of a linked dataset."""
    import h5py

    if not os.path.exists(path):
        return "the data file does not exist", None, None
    try:
        with open_hdf5(path) as handle:
            dataset = handle.get(dataset_path)
            if not isinstance(dataset, h5py.Dataset):
                return f"the data file has no dataset {dataset_path}", None, None
            if dataset.ndim != 3:
                return f"{dataset_path} is not a stack of frames", None, None
            n_frames = dataset.shape[0]
            low = dataset.attrs.get("image_nr_low")
            low = int(low) - 1 if low is not None else None
            if needed is not None and n_frames < needed:
                return (
                    f"the data file holds {n_frames} frames, {needed} are mapped",
                    n_frames,
                    low,
                )
            return None, n_frames, low
    except OSError as error:
        return f"not a readable HDF5 file ({_short(error)})", None, None


def _virtual_sources(master, dataset):
    """FrameFiles of a virtual dataset's sources (frames = the first axis)."""
    import h5py

    result = []
    base = os.path.dirname(os.path.abspath(master))
    for source in dataset.virtual_sources():
        try:
            (v0, *_), (v1, *_) = source.vspace.get_select_bounds()
        except (ValueError, RuntimeError):
            v0, v1 = 0, dataset.shape[0] - 1
        if source.src_space.get_select_type() == h5py.h5s.SEL_ALL:
            s0, s1 = 0, v1 - v0
        else:
            try:
                (s0, *_), (s1, *_) = source.src_space.get_select_bounds()
            except (ValueError, RuntimeError):
                s0, s1 = 0, v1 - v0
        name = source.file_name
        path = (
            os.path.abspath(master)
            if name == "."
            else (name if os.path.isabs(name) else os.path.join(base, name))
        )
        problem, n_frames, _ = _linked_dataset(path, source.dset_name, s1 + 1)
        if problem is not None and n_frames is not None and n_frames > s0:
            # The file holds the first frames only: those are fine.
            readable = n_frames - s0
            result.append(FrameFile(v0, v0 + readable, path))
            result.append(FrameFile(v0 + readable, v1 + 1, path, problem))
        else:
            result.append(FrameFile(v0, v1 + 1, path, problem))
    return result


def check_frames(path, first, stop):
    """Raise a DataError naming the file if a frame of [first, stop) cannot be read.

    Parameters
    ----------
    path : str or Path
        The master file (any HDF5 file: one without linked frames passes).
    first, stop : int
        0-based half-open range of frames of the master's series.
    """
    for held in frame_files(path):
        if held.stop <= first or held.first >= stop:
            continue
        problem = held.problem
        if problem is None and not os.path.exists(held.path):
            problem = "the data file does not exist"
        if problem is not None:
            image = max(first, held.first) + 1
            raise DataError(f"{held.path}: image {image} cannot be read: {problem}")


def referenced_files(path):
    """Every data file the HDF5 file `path` links to or maps (Paths)."""
    return [Path(held.path) for held in frame_files(path)]


def _short(error):
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
