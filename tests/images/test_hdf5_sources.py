"""The image-read check: which data file holds each frame of a master, readable or not."""

import h5py
import numpy as np
import pytest

from dials_diffuse.images.hdf5_sources import (
    check_frames,
    frame_files,
    open_hdf5,
    referenced_files,
)
from dials_diffuse.util.errors import DataError


def _data_file(path, frames):
    with h5py.File(path, "w") as handle:
        handle["entry/data/data"] = np.zeros((frames, 4, 5), dtype=np.uint16)


def _vds_master(path, sources):
    """A master whose /entry/data/data maps (file, frames) blocks in order."""
    total = sum(frames for _, frames in sources)
    layout = h5py.VirtualLayout(shape=(total, 4, 5), dtype=np.uint16)
    first = 0
    for name, frames in sources:
        layout[first : first + frames] = h5py.VirtualSource(
            name, "/entry/data/data", shape=(frames, 4, 5), dtype=np.uint16
        )
        first += frames
    with h5py.File(path, "w") as handle:
        handle.create_group("entry/data").create_virtual_dataset(
            "data", layout, fillvalue=0
        )


def test_virtual_dataset_sources_missing_short_and_fine(tmp_path):
    _data_file(tmp_path / "a.h5", 3)
    _data_file(tmp_path / "b.h5", 2)  # 3 frames are mapped
    _vds_master(tmp_path / "master.h5", [("a.h5", 3), ("b.h5", 3), ("c.h5", 4)])
    held = frame_files(tmp_path / "master.h5")
    assert [(f.first, f.stop, f.problem is None) for f in held] == [
        (0, 3, True),
        (3, 5, True),
        (5, 6, False),
        (6, 10, False),
    ]
    check_frames(tmp_path / "master.h5", 0, 5)  # readable in full
    with pytest.raises(DataError, match=r"b.h5: image 6 cannot be read: .*2 frames"):
        check_frames(tmp_path / "master.h5", 4, 6)
    with pytest.raises(
        DataError, match="c.h5: image 7 cannot be read: .*does not exist"
    ):
        check_frames(tmp_path / "master.h5", 6, 7)
    assert {p.name for p in referenced_files(tmp_path / "master.h5")} == {
        "a.h5",
        "b.h5",
        "c.h5",
    }


def test_a_data_file_deleted_after_the_first_check(tmp_path):
    _data_file(tmp_path / "a.h5", 2)
    _vds_master(tmp_path / "master.h5", [("a.h5", 2)])
    check_frames(tmp_path / "master.h5", 0, 2)
    (tmp_path / "a.h5").unlink()
    with pytest.raises(DataError, match="a.h5: image 1 cannot be read"):
        check_frames(tmp_path / "master.h5", 0, 1)


def test_external_links_truncated_file(tmp_path):
    _data_file(tmp_path / "d1.h5", 2)
    _data_file(tmp_path / "d2.h5", 2)
    data = (tmp_path / "d2.h5").read_bytes()
    (tmp_path / "d2.h5").write_bytes(data[: len(data) // 2])
    with h5py.File(tmp_path / "master.h5", "w") as handle:
        group = handle.create_group("entry/data")
        group["data_000001"] = h5py.ExternalLink("d1.h5", "/entry/data/data")
        group["data_000002"] = h5py.ExternalLink("d2.h5", "/entry/data/data")
    check_frames(tmp_path / "master.h5", 0, 2)
    with pytest.raises(
        DataError, match="d2.h5: image 3 cannot be read: not a readable"
    ):
        check_frames(tmp_path / "master.h5", 2, 3)


def test_files_without_linked_frames_pass(tmp_path):
    _data_file(tmp_path / "plain.h5", 2)
    assert frame_files(tmp_path / "plain.h5") == ()
    check_frames(tmp_path / "plain.h5", 0, 2)
    assert frame_files(tmp_path / "absent.h5") == ()


@pytest.mark.parametrize("held_in_swmr", [True, False])
@pytest.mark.parametrize("asked_swmr", [True, False])
def test_a_file_held_open_in_either_swmr_mode_opens(tmp_path, held_in_swmr, asked_swmr):
    """dxtbx's NXmx format holds its files in SWMR read mode, other readers not.
    HDF5 refuses a file held in the plain mode to a SWMR reader; open_hdf5
    opens it in either case."""
    path = tmp_path / "data.h5"
    _data_file(path, 3)
    with h5py.File(path, "r", swmr=held_in_swmr):
        if asked_swmr and not held_in_swmr:
            with pytest.raises(OSError, match="SWMR"):
                h5py.File(path, "r", swmr=True)
        with open_hdf5(path, swmr=asked_swmr) as handle:
            assert handle["entry/data/data"].shape == (3, 4, 5)
