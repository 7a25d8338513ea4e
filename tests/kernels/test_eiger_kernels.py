"""Eiger kernels against the pure-Python/numpy references and HDF5's own filters."""

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from dials_diffuse import _kernels
from tests.eiger_files import REAL_SETS, real_data_files, write_data_file
from tests.kernels import eiger_reference as reference

CODECS = {"bslz4": 2, "lz4": 1, "none": 0}


def raw_chunks(path):
    with h5py.File(path, "r") as handle:
        dataset = handle["/entry/data/data"]
        chunks = [
            dataset.id.read_direct_chunk((i, 0, 0))[1] for i in range(len(dataset))
        ]
        return chunks, dataset[()]


def codec_of(name):
    return 1 if name.endswith("lz4") and "bslz4" not in name else 2


@pytest.mark.parametrize("name", sorted(REAL_SETS))
def test_real_chunks_decode_like_hdf5_and_the_reference(dectris_testfiles, name):
    path = real_data_files(dectris_testfiles, name)[0]
    chunks, frames = raw_chunks(path)
    codec = codec_of(name)
    out = np.empty(frames.shape[1:], frames.dtype)
    for chunk, frame in zip(chunks, frames):
        _kernels.decompress_chunk(chunk, codec, out)
        assert np.array_equal(out, frame)
    # The slow reference on the first frame only.
    ours = reference.decode_chunk(chunks[0], codec, frames.dtype, frames[0].size)
    assert np.array_equal(ours.reshape(frames[0].shape), frames[0])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
def test_odd_sizes_and_partial_blocks(tmp_path, dtype, compression):
    # 3 x 1501 elements: several bitshuffle blocks, a partial last block and
    # 1501 * 3 % 8 = 7 trailing elements stored plain.
    rng = np.random.default_rng(7)
    frames = rng.integers(0, np.iinfo(dtype).max, (3, 3, 1501), endpoint=True).astype(
        dtype
    )
    frames[1, :, :700] = 5  # long runs: overlapping LZ4 matches
    path = tmp_path / "odd.h5"
    write_data_file(path, frames, compression=compression)
    chunks, stored = raw_chunks(path)
    assert np.array_equal(stored, frames)
    for chunk, frame in zip(chunks, frames):
        out = np.empty_like(frame)
        _kernels.decompress_chunk(chunk, CODECS[compression], out)
        assert np.array_equal(out, frame)
        ref = reference.decode_chunk(chunk, CODECS[compression], dtype, frame.size)
        assert np.array_equal(ref.reshape(frame.shape), frame)


@pytest.mark.parametrize(
    "name", ["eiger1_bslz4", "eiger2_bslz4_uint8", "eiger2_bslz4_uint32"]
)
def test_fused_statistics_match_numpy(dectris_testfiles, name):
    chunks, frames = raw_chunks(real_data_files(dectris_testfiles, name)[0])
    rng = np.random.default_rng(0)
    valid = rng.random(frames.shape[1:]) > 0.1
    invalid_from = float(np.iinfo(frames.dtype).max)
    for low, high in [(0, 1e12), (2, 5), (3, 3), (100, 200)]:
        ours = _kernels.compressed_frame_statistics(
            chunks,
            2,
            frames.dtype,
            frames[0].size,
            low,
            high,
            valid.ravel(),
            invalid_from,
        )
        truth = reference.frame_statistics(frames, low, high, valid, invalid_from)
        for a, b in zip(ours, truth):
            np.testing.assert_array_equal(a, b)
        decoded = _kernels.frame_statistics(frames, low, high, valid, invalid_from)
        for a, b in zip(decoded, truth):
            np.testing.assert_array_equal(a, b)


def test_overloads_and_gaps_counted_not_summed(dectris_testfiles):
    chunks, frames = raw_chunks(real_data_files(dectris_testfiles, "eiger1_lz4")[0])
    sums, used, maxima, invalid = _kernels.compressed_frame_statistics(
        chunks, 1, frames.dtype, frames[0].size, 0, 1e12, None, 65535.0
    )
    # The README's truth: 38164 pixels per frame hold 65535 (gaps/masked).
    assert list(invalid) == [38164, 38164]
    assert list(used) == [frames[0].size - 38164] * 2
    assert np.all(maxima < 65535)


@pytest.mark.parametrize("dtype", [np.int32, np.float64, np.uint16])
def test_frame_statistics_any_pixel_dtype(dtype):
    rng = np.random.default_rng(1)
    frames = rng.integers(-5, 50, (4, 30, 20)).astype(dtype)
    valid = rng.random(frames.shape[1:]) > 0.3
    ours = _kernels.frame_statistics(frames, 0, 40, valid)
    truth = reference.frame_statistics(frames, 0, 40, valid)
    for a, b in zip(ours, truth):
        np.testing.assert_array_equal(a, b)


def test_no_used_pixel_gives_nan_max():
    frames = np.zeros((2, 4, 4), np.uint16)
    sums, used, maxima, _ = _kernels.frame_statistics(frames, 1, 10)
    assert list(sums) == [0, 0] and list(used) == [0, 0]
    assert np.all(np.isnan(maxima))


def test_corrupt_chunks_raise_value_error(dectris_testfiles):
    chunks, frames = raw_chunks(real_data_files(dectris_testfiles, "eiger2_bslz4")[0])
    chunk = chunks[0]
    out = np.empty(frames.shape[1:], frames.dtype)
    bad = [
        chunk[: len(chunk) // 2],  # truncated
        chunk[:6],  # shorter than the header
        chunk[:12] + b"\xff" * (len(chunk) - 12),  # garbage blocks
        b"\x00" * 7 + b"\x01" + chunk[8:],  # header size wrong
        chunk + b"extra",  # trailing bytes
    ]
    for data in bad:
        with pytest.raises(ValueError):
            _kernels.decompress_chunk(data, 2, out)
        with pytest.raises(ValueError):
            _kernels.compressed_frame_statistics(
                [data], 2, frames.dtype, out.size, 0, 10
            )


def test_argument_checks():
    out = np.empty((4, 4), np.uint16)
    with pytest.raises(ValueError, match="codec"):
        _kernels.decompress_chunk(b"", 7, out)
    with pytest.raises(ValueError, match="uint8, uint16 or uint32"):
        _kernels.compressed_frame_statistics([b""], 0, np.dtype(np.int16), 16, 0, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _kernels.decompress_chunk(b"", 0, np.empty((4, 8), np.uint16)[:, ::2])
    with pytest.raises(ValueError, match="mask"):
        _kernels.frame_statistics(
            np.zeros((1, 4, 4), np.uint16), 0, 1, np.ones((3, 3), bool)
        )
    # Uncompressed chunk of the right size decodes as is, from bytes or from
    # a uint8 array (a memmap slice in the Eiger reader).
    data = np.arange(16, dtype=np.uint16)
    _kernels.decompress_chunk(data.tobytes(), 0, out)
    assert np.array_equal(out.ravel(), data)
    out[...] = 0
    _kernels.decompress_chunk(data.view(np.uint8), 0, out)
    assert np.array_equal(out.ravel(), data)
    with pytest.raises(ValueError, match="1-d contiguous uint8"):
        _kernels.decompress_chunk(np.zeros(64, np.uint8)[::2], 0, out)
    with pytest.raises(ValueError, match="1-d contiguous uint8"):
        _kernels.decompress_chunk("not bytes", 0, out)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize(
    "low, high, invalid_from",
    [
        (2.5, 4.7, np.inf),  # fractional thresholds
        (-10, 1e30, 200.5),  # beyond the type's range
        (0, 250, 250),  # invalid_from inside [low, high]
        (300, 100, 255),  # empty range
        (5, -1, 255),  # negative high
        (0, 255, 0),  # everything invalid
        (1e12, 2e12, 1e13),  # low above the type's maximum
    ],
)
def test_unsigned_threshold_edges(dtype, low, high, invalid_from):
    rng = np.random.default_rng(11)
    frames = rng.integers(0, 256, (3, 50, 70)).astype(dtype)
    frames[0, 0, :5] = np.iinfo(dtype).max
    valid = rng.random(frames.shape[1:]) > 0.2
    ours = _kernels.frame_statistics(frames, low, high, valid, invalid_from)
    truth = reference.frame_statistics(frames, low, high, valid, invalid_from)
    for a, b in zip(ours, truth):
        np.testing.assert_array_equal(a, b)
    chunks = [frame.tobytes() for frame in frames]
    fused = _kernels.compressed_frame_statistics(
        chunks, 0, frames.dtype, frames[0].size, low, high, valid.ravel(), invalid_from
    )
    for a, b in zip(fused, truth):
        np.testing.assert_array_equal(a, b)
