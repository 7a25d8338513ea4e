"""The bit-plane frame sums and the LZ4 decoder against numpy references.

`compressed_frame_statistics` sums bitshuffle blocks from their bit planes
(never un-transposed) with one of three word kernels (AVX-512 VPOPCNTQ,
popcnt, plain C++): every one must equal the plain decode + numpy sums, for
every pixel type, thresholds cutting through every bit plane, saturated and
gap pixels, masks given as bytes or bits, and partial blocks and words.
Chunks come from the LZ4/bitshuffle libraries (through HDF5) and from the
reference encoder of eiger_reference.
"""

import io

import h5py
import numpy as np
import pytest

from dials_diffuse import _kernels
from dials_diffuse.format.dectris_writer import COMPRESSION
from tests.kernels import eiger_reference as reference

CODECS = {"bslz4": 2, "lz4": 1, "none": 0}
DTYPES = [np.uint8, np.uint16, np.uint32]


def library_chunks(frames, compression="bslz4"):
    """Raw chunks of `frames` as HDF5 and the LZ4/bitshuffle libraries write them."""
    with h5py.File(io.BytesIO(), "w") as handle:
        dataset = handle.create_dataset(
            "data",
            data=frames,
            chunks=(1, *frames.shape[1:]),
            **COMPRESSION[compression](),
        )
        return [dataset.id.read_direct_chunk((i, 0, 0))[1] for i in range(len(frames))]


def wide_values(rng, dtype, shape):
    """Values of every bit length 0..N (so that every bit plane is populated),
    with saturated (all-ones) pixels."""
    bits = 8 * np.dtype(dtype).itemsize
    lengths = rng.integers(0, bits + 1, shape)
    top = (np.uint64(1) << lengths.astype(np.uint64)) - np.uint64(1)
    values = (rng.random(shape) * (top.astype(float) + 1)).astype(np.uint64)
    values = np.minimum(values, top).astype(dtype)
    values[rng.random(shape) < 0.01] = np.iinfo(dtype).max
    return values


def assert_statistics_equal(ours, expected):
    for got, want in zip(ours, expected):
        np.testing.assert_array_equal(got, want)


def check(chunks, frames, codec, low, high, valid, invalid_from):
    """Every word kernel and mask form equals numpy on the decoded frames."""
    expected = reference.frame_statistics(frames, low, high, valid, invalid_from)
    n_pixels = frames[0].size
    masks = [{"mask": None}] if valid is None else []
    if valid is not None:
        masks.append({"mask": valid.ravel()})
        bits = np.packbits(valid.ravel(), bitorder="little")
        masks.append({"mask_bits": bits})
    for level in (0, 1, 2):
        for mask in masks:
            ours = _kernels.compressed_frame_statistics(
                chunks,
                codec,
                frames.dtype,
                n_pixels,
                low,
                high,
                invalid_from=invalid_from,
                word_kernels=level,
                **mask,
            )
            assert_statistics_equal(ours, expected)


def plane_thresholds(dtype):
    """(low, high, invalid_from) cutting through every bit plane of dtype."""
    bits = 8 * np.dtype(dtype).itemsize
    top = float(np.iinfo(dtype).max)
    cases = [(0, np.inf, np.inf), (0, np.inf, top), (0, 0, top), (1, top, np.nan)]
    for b in range(bits):
        edge = float(2**b)
        cases += [
            (0, edge - 1, top),
            (0, edge, np.inf),
            (edge, top, edge + 1),
            (edge - 1, 2 * edge - 1, top),
            (0, top, edge),
        ]
    return cases


@pytest.mark.parametrize("dtype", DTYPES)
def test_thresholds_through_every_bit_plane(dtype):
    # 2 frames of 37 x 523: several bitshuffle blocks, a partial last block
    # whose planes end in a partial 64-bit word, and 19351 % 8 = 7 pixels
    # stored plain at the end of each chunk.
    rng = np.random.default_rng(5)
    frames = wide_values(rng, dtype, (2, 37, 523))
    valid = rng.random(frames.shape[1:]) > 0.05
    valid[:, 100:112] = False  # a gap
    frames[:, :, 100:112] = np.iinfo(dtype).max
    chunks = library_chunks(frames)
    for low, high, invalid_from in plane_thresholds(dtype):
        check(chunks, frames, 2, low, high, valid, invalid_from)
    check(chunks, frames, 2, 0, np.inf, None, np.inf)
    check(chunks, frames, 2, 3, 1e6, np.zeros_like(valid), np.inf)  # nothing valid
    check(chunks, frames, 2, 0, np.inf, valid, 0)  # everything invalid


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("encoder", ["library", "reference"])
def test_randomised_frames_every_codec(dtype, encoder):
    rng = np.random.default_rng(11 + np.dtype(dtype).itemsize)
    top = float(np.iinfo(dtype).max)
    for trial in range(6):
        shape = (
            int(rng.integers(1, 4)),
            int(rng.integers(1, 40)),
            int(rng.integers(1, 300)),
        )
        mean = float(rng.choice([0.0, 0.37, 3.0, 200.0]))
        frames = rng.poisson(mean, shape).astype(dtype)
        if trial % 2:
            frames = wide_values(rng, dtype, shape)
        valid = None if trial == 0 else rng.random(shape[1:]) > rng.random()
        for compression, codec in CODECS.items():
            block = int(rng.choice([64, 128, 8192]))
            chunks = (
                library_chunks(frames, compression)
                if encoder == "library"
                else [reference.encode_chunk(f.ravel(), codec, block) for f in frames]
            )
            low = float(rng.choice([0, 1, rng.integers(0, 2**8)]))
            high = float(rng.choice([top, np.inf, rng.integers(0, 2**10)]))
            invalid_from = float(rng.choice([np.inf, top, rng.integers(1, 2**12)]))
            check(chunks, frames, codec, low, high, valid, invalid_from)


def test_eiger_like_frame_with_module_gaps():
    # Poisson 0.37 counts, gap rows and columns at 2^16 - 1 and masked, a few
    # hot pixels above `high`, low=0 high=4500: the benchmark's case, smaller.
    rng = np.random.default_rng(2)
    frames = rng.poisson(0.37, (3, 300, 260)).astype(np.uint16)
    valid = np.ones(frames.shape[1:], bool)
    valid[140:150, :] = valid[:, 120:126] = False
    frames[:, ~valid] = 65535
    frames[:, 7, 9] = 5000
    frames[1, 8, 9] = 65534
    chunks = library_chunks(frames)
    check(chunks, frames, 2, 0, 4500, valid, 65535)
    check(chunks, frames, 2, 0, 4500, None, 65535)  # gaps counted invalid
    plain = np.empty_like(frames[0])
    for chunk, frame in zip(chunks, frames):
        _kernels.decompress_chunk(chunk, 2, plain)
        assert np.array_equal(plain, frame)


def random_sequences(rng, n):
    """LZ4 sequences of every kind the fast paths distinguish."""
    sequences, size = [], 0
    for _ in range(n):
        literals = rng.bytes(int(rng.choice([0, 1, 5, 14, 15, 16, 40, 300])))
        size += len(literals)
        if size == 0:
            literals, size = b"\x07", 1
        offset = int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 100, 5000]))
        offset = min(offset, size)
        length = int(rng.choice([4, 5, 8, 15, 16, 17, 18, 19, 33, 300]))
        sequences.append((literals, offset, length))
        size += length
    return sequences


def lz4_chunk(block):
    """A one-block LZ4 (filter 32004) chunk around an encoded block."""
    data = reference.lz4_decode_block(block, None)
    header = len(data).to_bytes(8, "big") + len(data).to_bytes(4, "big")
    return header + len(block).to_bytes(4, "big") + block, data


def test_lz4_decoder_matches_the_reference_on_every_kind_of_sequence():
    rng = np.random.default_rng(3)
    for _ in range(300):
        tail = rng.bytes(int(rng.choice([0, 1, 3, 20])))
        block = reference.lz4_block_from_sequences(
            random_sequences(rng, int(rng.integers(1, 12))), tail
        )
        chunk, data = lz4_chunk(block)
        if len(data) == len(block):
            continue  # the filter would read it as a block stored as it is
        out = np.empty(len(data), np.uint8)
        _kernels.decompress_chunk(chunk, 1, out)
        assert out.tobytes() == data
        # Truncated or corrupted: an error, never a crash or a wrong size.
        cut = int(rng.integers(1, len(block)))
        bad = chunk[:16] + block[:cut]
        with pytest.raises(ValueError):
            _kernels.decompress_chunk(
                bad[:12] + cut.to_bytes(4, "big") + bad[16:], 1, out
            )


def test_mask_arguments_are_checked():
    chunks = library_chunks(np.zeros((1, 4, 5), np.uint16))
    with pytest.raises(ValueError, match="not both"):
        _kernels.compressed_frame_statistics(
            chunks,
            2,
            np.dtype(np.uint16),
            20,
            0,
            1,
            mask=np.ones(20, bool),
            mask_bits=np.zeros(3, np.uint8),
        )
    with pytest.raises(ValueError, match="mask_bits has 2 entries, not 3"):
        _kernels.compressed_frame_statistics(
            chunks, 2, np.dtype(np.uint16), 20, 0, 1, mask_bits=np.zeros(2, np.uint8)
        )
    assert _kernels.plane_kernel_level() in (0, 1, 2)
