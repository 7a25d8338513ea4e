"""EigerMasterSource on real DECTRIS files and on files written with known content."""

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from dials_diffuse.images.eiger import EigerMasterSource, is_eiger_master
from dials_diffuse.images.source import Chunk
from dials_diffuse.util.errors import DataError
from tests.eiger_files import (
    link_master,
    real_data_files,
    real_master,
    write_data_file,
    write_series,
)


def h5py_frames(paths):
    frames = []
    for path in paths:
        with h5py.File(path, "r") as handle:
            frames.append(handle["/entry/data/data"][()])
    return np.concatenate(frames)


def read_all(source):
    return source.read(
        Chunk(0, slice(0, source.n_frames), slice(0, None), slice(0, None))
    )


@pytest.mark.parametrize(
    "name", ["eiger1_bslz4", "eiger1_lz4", "eiger2_bslz4_uint8", "eiger2_bslz4_uint32"]
)
def test_real_sets_read_like_hdf5(tmp_path, dectris_testfiles, name):
    master = real_master(tmp_path, dectris_testfiles, name)
    assert is_eiger_master(master)
    source = EigerMasterSource(master)
    truth = h5py_frames(real_data_files(dectris_testfiles, name))
    assert source.n_frames == 4 and source.panel_shapes == [truth.shape[1:]]
    assert source.dtype == truth.dtype
    data, valid = read_all(source)
    assert np.array_equal(data, truth)
    # Gap/bad pixels hold 2^N-1 and are invalid; nothing else is.
    assert np.array_equal(valid, truth < np.iinfo(truth.dtype).max)


def test_bitshuffle_and_lz4_sets_across_the_file_boundary(tmp_path, dectris_testfiles):
    a = EigerMasterSource(real_master(tmp_path, dectris_testfiles, "eiger1_bslz4"))
    b = EigerMasterSource(real_master(tmp_path, dectris_testfiles, "eiger1_lz4"))
    assert a.codecs == ["bitshuffle/LZ4"] and b.codecs == ["LZ4"]
    # Frames 2-3 (0-based 1..2) come from two different data files.
    chunk = Chunk(0, slice(1, 3), slice(100, 300), slice(50, 1030))
    for source, name in ((a, "eiger1_bslz4"), (b, "eiger1_lz4")):
        data, valid = source.read(chunk)
        truth = h5py_frames(real_data_files(dectris_testfiles, name))[1:3, 100:300, 50:]
        assert np.array_equal(data, truth)
    # The two acquisitions are not pixel-identical (a few hundred of 1.1 M
    # pixels per frame differ), but the gaps agree and the frame sums match.
    data_a, valid_a = read_all(a)
    data_b, valid_b = read_all(b)
    assert np.array_equal(valid_a, valid_b)
    assert list((~valid_a).sum(axis=(1, 2))) == [38164] * 4  # README: 65535 pixels
    sums_a = np.where(valid_a, data_a, 0).sum(axis=(1, 2))
    sums_b = np.where(valid_b, data_b, 0).sum(axis=(1, 2))
    assert np.array_equal(sums_a, sums_b)


def test_real_master_with_pixel_mask(dectris_testfiles):
    master = dectris_testfiles / "dataset_artificial_small_001/test_master.h5"
    source = EigerMasterSource(master)
    with h5py.File(master, "r") as handle:
        pixel_mask = handle["/entry/instrument/detector/detectorSpecific/pixel_mask"][
            ()
        ]
        truth = handle["/entry/data/data_000001"][()]
    assert source.n_frames == 5 and source.panel_shapes == [(13, 11)]
    assert np.array_equal(source.static_mask(), pixel_mask == 0)
    data, valid = read_all(source)
    assert np.array_equal(data, truth)
    assert np.array_equal(valid, np.broadcast_to(pixel_mask == 0, truth.shape))


def test_saturation_and_bit_depth_mark_invalid(tmp_path):
    frames = np.array([[[0, 10, 100, 4095, 4000, 3000]]], np.uint16)
    master = write_series(
        tmp_path, frames, 1, saturation_value=3500, bit_depth=12, count_time=0.1
    )
    source = EigerMasterSource(master)
    assert source.invalid_from == 3501
    _, valid = read_all(source)
    assert valid.tolist() == [[[True, True, True, False, False, True]]]
    assert np.allclose(source.exposure_times, 0.1)


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_other_codecs(tmp_path, compression):
    frames = np.random.default_rng(2).integers(0, 1000, (5, 20, 30)).astype(np.uint32)
    source = EigerMasterSource(write_series(tmp_path, frames, 2, compression))
    assert np.array_equal(read_all(source)[0], frames)


def test_h5py_fallback_for_other_chunking(tmp_path):
    frames = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5)
    path = tmp_path / "tiled_data_000001.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("/entry/data/data", data=frames, chunks=(2, 3, 5))
    master = tmp_path / "tiled_master.h5"
    link_master(master, [path], frames.shape[1:])
    source = EigerMasterSource(master)
    assert source.codecs == ["HDF5 filters (h5py)"]
    assert np.array_equal(read_all(source)[0], frames)


def test_virtual_dataset(tmp_path):
    frames = np.random.default_rng(3).integers(0, 100, (6, 8, 9)).astype(np.uint16)
    files = []
    for index, first in enumerate((0, 3), start=1):
        path = tmp_path / f"v_data_{index:06d}.h5"
        write_data_file(path, frames[first : first + 3], first + 1)
        files.append(path)
    layout = h5py.VirtualLayout(shape=frames.shape, dtype=frames.dtype)
    for index, path in enumerate(files):
        layout[3 * index : 3 * index + 3] = h5py.VirtualSource(
            path.name, "/entry/data/data", shape=(3, 8, 9)
        )
    master = tmp_path / "v_master.h5"
    with h5py.File(master, "w") as handle:
        handle.create_virtual_dataset("/entry/data/data", layout)
    source = EigerMasterSource(master)
    # Mapped onto the source files: read as raw bitshuffle/LZ4 chunks.
    assert source.codecs == ["bitshuffle/LZ4"] and len(source.blocks) == 2
    assert np.array_equal(read_all(source)[0], frames)


def test_pickles_by_path(tmp_path, dectris_testfiles):
    import pickle

    source = EigerMasterSource(real_master(tmp_path, dectris_testfiles, "eiger2_lz4"))
    copy = pickle.loads(pickle.dumps(source))
    assert np.array_equal(read_all(copy)[0], read_all(source)[0])


def test_missing_data_file_is_a_user_error(tmp_path):
    frames = np.zeros((4, 5, 5), np.uint16)
    master = write_series(tmp_path, frames, 2)
    (tmp_path / "series_data_000002.h5").unlink()
    with pytest.raises(DataError, match="series_master.h5.*data_000002"):
        EigerMasterSource(master)


def test_missing_frames_between_files(tmp_path):
    frames = np.zeros((2, 5, 5), np.uint16)
    first = tmp_path / "g_data_000001.h5"
    second = tmp_path / "g_data_000002.h5"
    write_data_file(first, frames, first_image=1)
    write_data_file(second, frames, first_image=5)
    master = tmp_path / "g_master.h5"
    link_master(master, [first, second], (5, 5))
    with pytest.raises(DataError, match="images 3 to 4 are missing"):
        EigerMasterSource(master)


def test_not_a_master_file(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = 1
    assert not is_eiger_master(path)
    assert not is_eiger_master(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    assert not is_eiger_master(tmp_path / "text.h5")
    with pytest.raises(DataError, match="text.h5"):
        EigerMasterSource(tmp_path / "text.h5")


def test_corrupt_chunk_names_file_and_image(tmp_path):
    frames = np.random.default_rng(4).integers(0, 9, (2, 40, 40)).astype(np.uint16)
    master = write_series(tmp_path, frames, 2)
    data_file = tmp_path / "series_data_000001.h5"
    with h5py.File(data_file, "r+") as handle:
        dataset = handle["/entry/data/data"]
        _, raw = dataset.id.read_direct_chunk((1, 0, 0))
        dataset.id.write_direct_chunk((1, 0, 0), raw[:-40])
    source = EigerMasterSource(master)
    with pytest.raises(DataError, match="image 2 is corrupt"):
        read_all(source)


def test_read_direct_chunk_fallback(tmp_path, dectris_testfiles, monkeypatch):
    """Without os.pread (Windows) chunks come through h5py's read_direct_chunk."""
    import os

    source = EigerMasterSource(real_master(tmp_path, dectris_testfiles, "eiger2_bslz4"))
    expected = read_all(source)[0]
    monkeypatch.delattr(os, "pread")
    assert np.array_equal(read_all(source)[0], expected)
    assert np.array_equal(
        expected, h5py_frames(real_data_files(dectris_testfiles, "eiger2_bslz4"))
    )


def test_reused_read_buffer_gives_the_stored_chunks_and_checks_truncation(tmp_path):
    frames = np.random.default_rng(6).poisson(2.0, (5, 30, 41)).astype(np.uint16)
    master = write_series(tmp_path, frames, 3)
    source = EigerMasterSource(master)
    for reuse in (False, True):  # the buffer is reused between the yields
        chunks = [
            bytes(chunk)
            for _, _, payload in source.raw_frames(1, 5, reuse_buffer=reuse)
            for chunk in payload
        ]
        stored = []
        for name, frames_in_file in (("000001", range(1, 3)), ("000002", range(2))):
            with h5py.File(tmp_path / f"series_data_{name}.h5", "r") as handle:
                dataset = handle["/entry/data/data"]
                stored += [
                    dataset.id.read_direct_chunk((i, 0, 0))[1] for i in frames_in_file
                ]
        assert chunks == stored
    data_file = tmp_path / "series_data_000002.h5"
    with h5py.File(data_file, "r") as handle:
        info = handle["/entry/data/data"].id.get_chunk_info_by_coord((1, 0, 0))
    with open(data_file, "r+b") as handle:
        handle.truncate(info.byte_offset + 5)
    with pytest.raises(
        DataError, match="series_data_000002.h5: image 4 cannot be read"
    ):
        next(EigerMasterSource(master).raw_frames(3, 5, reuse_buffer=True))
