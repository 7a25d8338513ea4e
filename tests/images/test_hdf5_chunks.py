"""Raw-chunk reading of HDF5 datasets: identical to h5py for every layout.

The truth is h5py itself (HDF5's own filters): for every filter, dtype,
chunk shape (with edge chunks), unwritten chunk and block asked for, the
fast path must give the same array. `place_chunk` is checked against a
pure-numpy reference of the shuffle filter.
"""

import concurrent.futures
import os
import threading
import zlib

import h5py
import hdf5plugin
import numpy as np
import pytest

from dials_diffuse import _kernels
from dials_diffuse.images.hdf5_chunks import (
    CODEC_BITSHUFFLE_LZ4,
    CODEC_DEFLATE,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SHUFFLE_DEFLATE,
    ChunkedDataset,
)
from dials_diffuse.images.source import Chunk, read_reusing
from dials_diffuse.io.image_series import NexusDataSource
from dials_diffuse.util.errors import DataError

SHAPE = (13, 37, 29)  # no chunk shape below divides it: edge chunks everywhere

FILTERS = {
    "none": ({}, CODEC_NONE),
    "gzip": ({"compression": "gzip", "compression_opts": 1}, CODEC_DEFLATE),
    "shuffle+gzip": (
        {"compression": "gzip", "shuffle": True},
        CODEC_SHUFFLE_DEFLATE,
    ),
    "shuffle+gzip1": (
        {"compression": "gzip", "compression_opts": 1, "shuffle": True},
        CODEC_SHUFFLE_DEFLATE,
    ),
    "shuffle+gzip9": (
        {"compression": "gzip", "compression_opts": 9, "shuffle": True},
        CODEC_SHUFFLE_DEFLATE,
    ),
    "bslz4": (hdf5plugin.Bitshuffle(cname="lz4"), CODEC_BITSHUFFLE_LZ4),
    "lz4": (hdf5plugin.LZ4(), CODEC_LZ4),
}


def random_data(dtype, rng):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        data = rng.normal(100, 50, SHAPE).astype(dtype)
        data[rng.random(SHAPE) < 0.05] = np.nan
        return data
    info = np.iinfo(dtype)
    low = max(info.min, -1000)
    return rng.integers(low, min(info.max, 100000), SHAPE, endpoint=True).astype(dtype)


def write(path, data, chunks, options, fillvalue=None, skip=None):
    """A dataset `data` (with chunk `skip` never written) at /d of a new file."""
    kwargs = dict(options)  # hdf5plugin filters are mappings too
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset(
            "d",
            shape=data.shape,
            dtype=data.dtype,
            chunks=chunks,
            fillvalue=fillvalue,
            **kwargs,
        )
        if skip is None:
            dataset[...] = data
        else:
            for f in range(0, data.shape[0], chunks[0]):
                for r in range(0, data.shape[1], chunks[1]):
                    for c in range(0, data.shape[2], chunks[2]):
                        if (f, r, c) == skip:
                            continue
                        block = np.s_[
                            f : f + chunks[0], r : r + chunks[1], c : c + chunks[2]
                        ]
                        dataset[block] = data[block]
    return path


def blocks(rng, n=12):
    """Random blocks (slices) inside SHAPE, plus the whole dataset and a corner."""
    result = [
        tuple(slice(0, n) for n in SHAPE),
        (slice(12, 13), slice(36, 37), slice(28, 29)),
    ]
    for _ in range(n):
        bounds = [sorted(rng.choice(size + 1, 2, replace=False)) for size in SHAPE]
        result.append(tuple(slice(int(a), int(b)) for a, b in bounds))
    return result


LAYOUTS = [
    (name, dtype)
    for name in sorted(FILTERS)
    for dtype in ["uint8", "uint16", "int32", "uint32", "float32", "float64"]
] + [("shuffle+gzip", "float16"), ("gzip", "uint64")]  # valid computed by numpy


@pytest.mark.parametrize(("name", "dtype"), LAYOUTS)
@pytest.mark.parametrize("chunks", [(1, 37, 29), (4, 8, 16), (5, 37, 7), (13, 37, 29)])
def test_blocks_identical_to_h5py(tmp_path, name, dtype, chunks):
    options, codec = FILTERS[name]
    rng = np.random.default_rng(zlib.crc32(repr((name, dtype, chunks)).encode()))
    data = random_data(dtype, rng)
    path = write(tmp_path / "d.h5", data, chunks, options)
    reader = ChunkedDataset(path, "d")
    assert reader.codec == codec
    with h5py.File(path, "r") as handle:
        for block in blocks(rng):
            expected = handle["d"][block]
            valid = np.empty(expected.shape, dtype=bool)
            np.testing.assert_array_equal(reader.read(*block, valid=valid), expected)
            np.testing.assert_array_equal(valid, expected >= 0)  # NaN: False


def test_unwritten_chunks_read_as_fill_value(tmp_path):
    rng = np.random.default_rng(1)
    data = random_data("int32", rng)
    path = write(
        tmp_path / "d.h5",
        data,
        (4, 8, 16),
        FILTERS["shuffle+gzip"][0],
        fillvalue=-1,
        skip=(4, 8, 16),
    )
    reader = ChunkedDataset(path, "d")
    with h5py.File(path, "r") as handle:
        expected = handle["d"][()]
    assert (expected[4:8, 8:16, 16:29] == -1).all()  # the skipped chunk
    valid = np.empty(SHAPE, dtype=bool)
    np.testing.assert_array_equal(
        reader.read(*(slice(0, n) for n in SHAPE), valid=valid), expected
    )
    np.testing.assert_array_equal(valid, expected >= 0)
    np.testing.assert_array_equal(
        reader.read(slice(3, 9), slice(5, 20), slice(10, 29)),
        expected[3:9, 5:20, 10:29],
    )


def test_other_filters_fall_back_to_h5py(tmp_path):
    rng = np.random.default_rng(2)
    data = random_data("int32", rng)
    path = write(tmp_path / "d.h5", data, (4, 8, 16), {"scaleoffset": 0})
    reader = ChunkedDataset(path, "d")
    assert reader.codec is None
    block = (slice(1, 10), slice(3, 30), slice(0, 29))
    valid = np.empty(data[block].shape, dtype=bool)
    np.testing.assert_array_equal(reader.read(*block, valid=valid), data[block])
    np.testing.assert_array_equal(valid, data[block] >= 0)


def test_chunk_stored_with_filter_skipped_falls_back_to_h5py(tmp_path):
    """A chunk whose filter mask says 'not compressed' is decoded by HDF5."""
    data = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset(
            "d", shape=SHAPE, dtype=np.int32, chunks=SHAPE, compression="gzip"
        )
        dataset.id.write_direct_chunk((0, 0, 0), data.tobytes(), filter_mask=1)
    reader = ChunkedDataset(path, "d")
    np.testing.assert_array_equal(reader.read(*(slice(0, n) for n in SHAPE)), data)


def test_out_is_filled_and_returned_and_checked(tmp_path):
    data = random_data("int32", np.random.default_rng(3))
    path = write(tmp_path / "d.h5", data, (4, 8, 16), FILTERS["shuffle+gzip"][0])
    reader = ChunkedDataset(path, "d")
    block = (slice(2, 6), slice(0, 37), slice(0, 29))
    out = np.full((4, 37, 29), 7, dtype=np.int32)
    assert reader.read(*block, out=out) is out
    np.testing.assert_array_equal(out, data[block])
    with pytest.raises(ValueError, match="shape"):
        reader.read(*block, out=np.empty((4, 37, 28), dtype=np.int32))
    with pytest.raises(ValueError, match="valid has shape"):
        reader.read(*block, valid=np.empty((4, 37, 29), dtype=np.uint8))


def test_threads_share_one_reader(tmp_path):
    data = random_data("int32", np.random.default_rng(4))
    path = write(tmp_path / "d.h5", data, (2, 8, 8), FILTERS["shuffle+gzip"][0])
    reader = ChunkedDataset(path, "d")
    frames = [slice(f, min(f + 2, SHAPE[0])) for f in range(0, SHAPE[0], 2)] * 4
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda f: reader.read(f, slice(0, 37), slice(0, 29)), frames)
        )
    for f, result in zip(frames, results):
        np.testing.assert_array_equal(result, data[f])


def shuffle_reference(values):
    """HDF5's shuffle filter in numpy: byte planes of the elements."""
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(values.size, -1)
    return np.ascontiguousarray(raw.T).tobytes()


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "float32", "float64"])
def test_place_chunk_matches_numpy(dtype):
    rng = np.random.default_rng(5)
    chunk_shape = (3, 5, 7)
    chunk = rng.integers(-100, 100, chunk_shape).astype(dtype)
    for origin in [(0, 0, 0), (-1, 2, -3), (2, -4, 5), (1, 1, 1), (-3, 0, 0)]:
        for shuffled in (False, True):
            out = np.full((4, 6, 9), 99, dtype=dtype)
            raw = shuffle_reference(chunk) if shuffled else chunk.tobytes()
            _kernels.place_chunk(raw, chunk_shape, out, origin, shuffled)
            expected = np.full((4, 6, 9), 99, dtype=dtype)
            for z, y, x in np.ndindex(chunk_shape):
                p = (z + origin[0], y + origin[1], x + origin[2])
                if all(0 <= q < n for q, n in zip(p, expected.shape)):
                    expected[p] = chunk[z, y, x]
            np.testing.assert_array_equal(out, expected)


def test_place_chunk_rejects_bad_arguments():
    out = np.zeros((2, 3, 4), dtype=np.int32)
    with pytest.raises(ValueError, match="bytes"):
        _kernels.place_chunk(b"\0" * 10, (2, 3, 4), out, (0, 0, 0))
    with pytest.raises(ValueError, match="C-contiguous"):
        _kernels.place_chunk(
            b"\0" * 96, (2, 3, 4), np.zeros((2, 3, 8), np.int32)[..., ::2], (0, 0, 0)
        )
    with pytest.raises(ValueError, match="3-d"):
        _kernels.place_chunk(
            b"\0" * 96, (2, 3, 4), np.zeros((6, 4), np.int32), (0, 0, 0)
        )


def test_nexus_source_marks_negative_and_nan_invalid(tmp_path):
    """valid = data >= 0, also into the reused buffers of read_reusing."""
    rng = np.random.default_rng(10)
    data = rng.normal(10, 5, SHAPE).astype(np.float32)
    data[rng.random(SHAPE) < 0.1] = -1
    data[rng.random(SHAPE) < 0.1] = np.nan
    source = NexusDataSource(write_data_nxs(tmp_path / "data.nxs", data, (4, 8, 16)))
    chunks = list(source.chunks(frames=4))
    for chunk in chunks:
        expected = data[chunk.frames]
        pixels, valid = source.read(chunk)
        np.testing.assert_array_equal(pixels, expected)
        np.testing.assert_array_equal(valid, expected >= 0)
        reused, reused_valid = read_reusing(source, chunk)
        np.testing.assert_array_equal(reused, expected)
        np.testing.assert_array_equal(reused_valid, expected >= 0)
    # A new array without out, this thread's buffer with it.
    assert source.read(chunks[0])[1] is not source.read(chunks[0])[1]
    assert read_reusing(source, chunks[0])[1] is read_reusing(source, chunks[1])[1]


def write_data_nxs(path, data, chunks):
    with h5py.File(path, "w") as handle:
        series = handle.create_group("entry/image_series")
        series.create_dataset(
            "data", data=data, chunks=chunks, compression="gzip", shuffle=True
        )
        n = data.shape[0]
        series.create_dataset("phi", data=np.arange(n) * 0.1 + 0.05)
        series.create_dataset("exposure_times", data=np.full(n, 0.1))
    return path


def test_corrupt_chunk_is_a_user_error_naming_the_file(tmp_path):
    data = random_data("int32", np.random.default_rng(6))
    path = write_data_nxs(tmp_path / "data.nxs", data, (4, 37, 29))
    with h5py.File(path, "r") as handle:
        info = handle["entry/image_series/data"].id.get_chunk_info_by_coord((4, 0, 0))
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset + 10)
        handle.write(b"\xff" * 64)
    source = NexusDataSource(path)
    np.testing.assert_array_equal(
        source.read(Chunk(0, slice(0, 4), slice(0, 37), slice(0, 29)))[0], data[:4]
    )
    with pytest.raises(DataError, match=r"data\.nxs: cannot read frames 4-7"):
        source.read(Chunk(0, slice(4, 8), slice(0, 37), slice(0, 29)))


def test_truncated_file_is_a_user_error(tmp_path):
    data = random_data("int32", np.random.default_rng(7))
    path = write_data_nxs(tmp_path / "data.nxs", data, (4, 37, 29))
    with h5py.File(path, "r") as handle:
        info = handle["entry/image_series/data"].id.get_chunk_info_by_coord((12, 0, 0))
    source = NexusDataSource(path)
    os.truncate(path, info.byte_offset + 5)
    with pytest.raises(DataError, match=r"data\.nxs: cannot read frames 12-12"):
        source.read(Chunk(0, slice(12, 13), slice(0, 37), slice(0, 29)))


def test_read_reusing_reuses_a_thread_buffer(tmp_path):
    data = random_data("int32", np.random.default_rng(8))
    source = NexusDataSource(write_data_nxs(tmp_path / "data.nxs", data, (4, 8, 16)))
    chunks = list(source.chunks(frames=4))
    first, _ = read_reusing(source, chunks[0])
    np.testing.assert_array_equal(first, data[:4])
    second, _ = read_reusing(source, chunks[1])
    assert second is first  # one buffer per thread and shape
    np.testing.assert_array_equal(second, data[4:8])
    other = []
    thread = threading.Thread(
        target=lambda: other.append(read_reusing(source, chunks[0])[0])
    )
    thread.start()
    thread.join()
    assert other[0] is not first
    np.testing.assert_array_equal(other[0], data[:4])


@pytest.mark.parametrize(
    ("dtype", "shuffle", "runs"),
    [("uint8", False, False), ("uint8", False, True), ("int32", True, False)],
)
def test_deflate_chunks_store_what_h5py_reads_back(tmp_path, dtype, shuffle, runs):
    """Worker-compressed chunks, edge chunks padded, read back by HDF5's own gzip."""
    from dials_diffuse.images.hdf5_chunks import deflate_chunks

    rng = np.random.default_rng(9)
    data = random_data(dtype, rng)
    chunk_shape = (4, 8, 16)
    path = tmp_path / "mask.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset(
            "m",
            shape=SHAPE,
            dtype=dtype,
            chunks=chunk_shape,
            compression="gzip",
            shuffle=shuffle,
        )
        for first in range(0, SHAPE[0], chunk_shape[0]):
            block = data[first : first + chunk_shape[0]]  # the last has 1 frame
            for (_, row, column), raw in deflate_chunks(
                block, chunk_shape, shuffle=shuffle, runs=runs
            ):
                dataset.id.write_direct_chunk((first, row, column), raw)
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(handle["m"][()], data)
    stored = [raw for _, raw in deflate_chunks(data[:4], chunk_shape, 1, shuffle, runs)]
    assert stored == _kernels.deflate_tiles(data[:4], chunk_shape, 1, shuffle, runs)
    with pytest.raises(ValueError, match="5 frames"):
        deflate_chunks(data[:5], chunk_shape)
