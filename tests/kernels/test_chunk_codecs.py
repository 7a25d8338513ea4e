"""The C++ HDF5 chunk codecs (cpp/codecs.h, cpp/chunks.h) against zlib and numpy references.

Reading: `place_chunks` decodes zlib streams made by Python's zlib (the
same library HDF5's gzip filter uses) at several levels, undoes a numpy
shuffle and places the chunks: compared with numpy placement of the known
chunk, and its validity mask with numpy's `>= 0`. Writing: `deflate_tiles`
streams decoded by Python's zlib give back the numpy-shuffled, zero-padded
tiles of the block.
"""

import zlib

import numpy as np
import pytest

from dials_diffuse import _kernels

NONE, DEFLATE, SHUFFLE_DEFLATE = 0, 3, 4


def shuffle_reference(values):
    """HDF5's shuffle filter in numpy: byte planes of the elements."""
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(values.size, -1)
    return np.ascontiguousarray(raw.T).tobytes()


def random_values(dtype, shape, rng):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        values = rng.normal(0, 100, shape).astype(dtype)
        values.flat[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, -1]
        return values
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -5000), min(info.max, 5000), shape).astype(dtype)


def encode(chunk, codec, level):
    raw = shuffle_reference(chunk) if codec == SHUFFLE_DEFLATE else chunk.tobytes()
    return raw if codec == NONE else zlib.compress(raw, level)


def place_reference(chunks, origins, out, valid):
    """numpy placement of whole chunks; valid = out >= 0 where placed."""
    for chunk, origin in zip(chunks, origins):
        for z, y, x in np.ndindex(chunk.shape):
            p = (z + origin[0], y + origin[1], x + origin[2])
            if all(0 <= q < n for q, n in zip(p, out.shape)):
                out[p] = chunk[z, y, x]
                valid[p] = chunk[z, y, x] >= 0


DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("codec", [NONE, DEFLATE, SHUFFLE_DEFLATE])
@pytest.mark.parametrize("level", [1, 6, 9])
def test_place_chunks_matches_numpy(dtype, codec, level):
    rng = np.random.default_rng(zlib.crc32(repr((dtype, codec, level)).encode()))
    chunk_shape = (3, 5, 37)  # 37 columns: SIMD blocks of 16 plus a tail
    origins = [(0, 0, 0), (-1, 2, -3), (2, -4, 5), (1, 1, 40), (-3, 0, 0), (9, 0, 0)]
    chunks = [random_values(dtype, chunk_shape, rng) for _ in origins]
    out = np.full((4, 6, 80), 99, dtype=dtype)
    valid = np.zeros(out.shape, dtype=bool)
    expected, expected_valid = out.copy(), valid.copy()
    place_reference(chunks, origins, expected, expected_valid)
    stored = [encode(chunk, codec, level) for chunk in chunks]
    assert _kernels.place_chunks(stored, origins, chunk_shape, out, codec, valid) is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(valid, expected_valid)
    again = np.full_like(out, 99)
    _kernels.place_chunks(stored, origins, chunk_shape, again, codec)  # no valid
    np.testing.assert_array_equal(again, expected)


def test_place_chunks_rejects_corrupt_chunks():
    chunk = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4)
    good = zlib.compress(chunk.tobytes())
    out = np.zeros((2, 3, 4), dtype=np.int32)
    cases = [
        (good[: len(good) // 2], "corrupt or truncated"),
        (b"\x78\x01" + b"\xff" * 40, "corrupt or truncated"),
        (zlib.compress(chunk.tobytes()[:-4]), "decodes to 92 bytes, not 96"),
        (zlib.compress(chunk.tobytes() + b"\0" * 8), "more than 96 bytes"),
    ]
    for stored, message in cases:
        with pytest.raises(ValueError, match=message):
            _kernels.place_chunks([good, stored], [(0, 0, 0)] * 2, (2, 3, 4), out, 3)
    with pytest.raises(ValueError, match="96"):
        _kernels.place_chunks([b"\0" * 95], [(0, 0, 0)], (2, 3, 4), out, NONE)
    with pytest.raises(ValueError, match="same length"):
        _kernels.place_chunks([good], [], (2, 3, 4), out, DEFLATE)
    with pytest.raises(ValueError, match="codec"):
        _kernels.place_chunks([good], [(0, 0, 0)], (2, 3, 4), out, 7)
    with pytest.raises(ValueError, match="same shape"):
        _kernels.place_chunks(
            [good], [(0, 0, 0)], (2, 3, 4), out, DEFLATE, np.zeros((2, 3, 5), bool)
        )
    with pytest.raises(ValueError, match="C-contiguous"):
        _kernels.place_chunks(
            [good], [(0, 0, 0)], (2, 3, 4), np.zeros((2, 3, 8), np.int32)[..., ::2], 3
        )


def test_inflate_matches_zlib():
    rng = np.random.default_rng(1)
    data = rng.poisson(2, 100_000).astype(np.int32)
    for level in (0, 1, 6, 9):
        out = np.empty_like(data)
        assert _kernels.inflate(zlib.compress(data.tobytes(), level), out) is out
        np.testing.assert_array_equal(out, data)
    with pytest.raises(ValueError, match="not 400000"):
        _kernels.inflate(zlib.compress(data[:-1].tobytes()), np.empty_like(data))


def tiles_reference(block, chunk_shape, shuffle):
    """Zero-padded whole chunks of `block`, rows then columns, shuffled if asked."""
    tiles = []
    for row in range(0, block.shape[1], chunk_shape[1]):
        for column in range(0, block.shape[2], chunk_shape[2]):
            tile = np.zeros(chunk_shape, dtype=block.dtype)
            part = block[
                :, row : row + chunk_shape[1], column : column + chunk_shape[2]
            ]
            tile[: part.shape[0], : part.shape[1], : part.shape[2]] = part
            tiles.append(shuffle_reference(tile) if shuffle else tile.tobytes())
    return tiles


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("level", [1, 2, 6, 12, "runs"])
def test_deflate_tiles_decode_with_zlib(dtype, shuffle, level):
    rng = np.random.default_rng(zlib.crc32(repr((dtype, shuffle, level)).encode()))
    chunk_shape = (4, 16, 40)
    runs = level == "runs"
    for frames in (4, 1):  # a whole chunk of frames and a last, partial one
        block = random_values(dtype, (frames, 37, 90), rng)
        stored = _kernels.deflate_tiles(
            block, chunk_shape, 1 if runs else level, shuffle, runs
        )
        expected = tiles_reference(block, chunk_shape, shuffle)
        assert len(stored) == len(expected) == 9
        for raw, tile in zip(stored, expected):
            assert zlib.decompress(raw) == tile


def masks(rng):
    """Masks of every kind: empty, full, noise, runs, blobs repeated row to row."""
    shape = (3, 70, 300)  # rows of 300 bytes: longer than one match (258)
    yield np.zeros(shape, np.uint8)
    yield np.ones(shape, np.uint8)
    yield (rng.random(shape) < 0.01).astype(np.uint8)
    yield rng.integers(0, 256, shape).astype(np.uint8)
    lengths = rng.integers(1, 700, 400)
    yield np.repeat(rng.integers(0, 2, 400), lengths)[: np.prod(shape)].reshape(shape)
    iy, ix = np.mgrid[:70, :300]
    blobs = np.zeros(shape, np.uint8)
    for z in range(3):  # ellipses that move from frame to frame
        for cy, cx in rng.uniform(0, 300, (20, 2)):
            blobs[z][((iy - cy / 4) / 6) ** 2 + ((ix - cx - 5 * z) / 9) ** 2 < 1] = 1
    yield blobs


def test_mask_deflater_decodes_with_zlib_and_compresses_masks():
    """runs=True: zlib gives back every mask; masks shrink, noise grows <= 1/8."""
    rng = np.random.default_rng(11)
    chunk_shape = (3, 70, 300)
    for mask in masks(rng):
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
        (stored,) = _kernels.deflate_tiles(mask, chunk_shape, runs=True)
        assert zlib.decompress(stored) == mask.tobytes()
        assert len(stored) <= mask.nbytes * 9 / 8 + 16
        if len(np.unique(mask)) <= 2 and mask.mean() < 0.5:  # a mask, not noise
            assert len(stored) < len(zlib.compress(mask.tobytes(), 1)) * 1.5
    blobs = mask
    (stored,) = _kernels.deflate_tiles(blobs, chunk_shape, runs=True)
    assert len(stored) < blobs.nbytes / 20
    # 63000 zeros by hand: 3 header bits, a literal (8 bits), 244 matches of
    # 258 (13 bits each) and one of 47 (15 bits), end of block (7 bits):
    # 3205 bits = 401 bytes, with the zlib header (2) and checksum (4).
    (stored,) = _kernels.deflate_tiles(
        np.zeros(chunk_shape, np.uint8), chunk_shape, runs=True
    )
    assert len(stored) == 407


def test_deflate_tiles_rejects_bad_arguments():
    block = np.zeros((3, 8, 8), dtype=np.int32)
    with pytest.raises(ValueError, match="3 frames, a chunk 2"):
        _kernels.deflate_tiles(block, (2, 8, 8))
    with pytest.raises(ValueError, match="level"):
        _kernels.deflate_tiles(block, (4, 8, 8), 13)
    with pytest.raises(ValueError, match="3-d"):
        _kernels.deflate_tiles(block[0], (4, 8, 8))
    with pytest.raises(ValueError, match="positive"):
        _kernels.deflate_tiles(block, (4, 0, 8))
