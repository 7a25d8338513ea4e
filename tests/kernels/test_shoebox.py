"""The shoebox kernels against a pure-numpy reference on hand-built blobs."""

import numpy as np
import pytest

from dials_diffuse import _kernels


def record(panel, bbox, data, mask, flag):
    """The bytes of one shoebox as DIALS serialises it (flag 1: int32 mask, 2: uint8)."""
    head = np.array([panel], "<u4").tobytes() + np.array(bbox, "<i4").tobytes()
    if flag == 0:
        return head + b"\x00"
    mask_type = "<i4" if flag == 1 else "u1"
    return (
        head
        + bytes([flag])
        + np.asarray(data, "<f4").tobytes()
        + np.asarray(mask, mask_type).tobytes()
        + np.zeros(len(data), "<f4").tobytes()
    )


@pytest.fixture
def boxes():
    rng = np.random.default_rng(3)
    made = []
    for i in range(40):
        nx, ny, nz = rng.integers(1, 6, size=3)
        n = nx * ny * nz
        data = rng.integers(-3, 60, size=n).astype(np.float32)
        data[rng.random(n) < 0.05] += 0.5  # a few non-integers
        mask = rng.choice([0, 1, 3, 5, 21], size=n)
        made.append((i % 3, (0, nx, 0, ny, 0, nz), data, mask, 1 + i % 2))
    no_data = (0, (0, 2, 0, 2, 0, 1), np.zeros(0, np.float32), np.zeros(0, int), 0)
    made.insert(7, no_data)
    blob = np.frombuffer(b"".join(record(*b) for b in made), dtype=np.uint8)
    return made, blob


def test_layout_finds_every_record(boxes):
    made, blob = boxes
    panel, bbox, offset, pixels, mask_bytes = _kernels.shoebox_layout(blob, len(made))
    np.testing.assert_array_equal(panel, [b[0] for b in made])
    np.testing.assert_array_equal(bbox, [b[1] for b in made])
    np.testing.assert_array_equal(pixels, [len(b[2]) for b in made])
    np.testing.assert_array_equal(mask_bytes, [{0: 0, 1: 4, 2: 1}[b[4]] for b in made])
    assert offset[7] == -1
    for (_, _, data, _, flag), at, n in zip(made, offset, pixels):
        if flag:
            values = np.frombuffer(blob[at : at + 4 * n].tobytes(), "<f4")
            np.testing.assert_array_equal(values, data)


@pytest.mark.parametrize("required", [0, 1, 5])
def test_histogram_equals_numpy(boxes, required):
    made, blob = boxes
    _, _, offset, pixels, mask_bytes = _kernels.shoebox_layout(blob, len(made))
    group = np.array([b[0] for b in made], dtype=np.int32)
    low, high, bins = -2.0, 50.0, 52
    counts = np.zeros((3, bins), dtype=np.int64)
    tally = np.zeros((3, 4), dtype=np.int64)
    _kernels.shoebox_histogram(
        blob, offset, pixels, mask_bytes, group, required, low, high, counts, tally
    )
    for g in range(3):
        values = [b[2][(b[3] & required) == required] for b in made if b[0] == g]
        excluded = sum(
            int(((b[3] & required) != required).sum()) for b in made if b[0] == g
        )
        values = np.concatenate(values)
        expected = np.histogram(values, bins=bins, range=(low, high))[0]
        np.testing.assert_array_equal(counts[g], expected)
        assert tally[g, 0] == (values < low).sum()
        assert tally[g, 1] == (values > high).sum()
        assert tally[g, 3] == excluded
    selected, lowest, highest, integer = _kernels.shoebox_value_range(
        blob, offset, pixels, mask_bytes, required
    )
    every = np.concatenate([b[2][(b[3] & required) == required] for b in made])
    assert (selected, lowest, highest) == (every.size, every.min(), every.max())
    assert integer == bool(np.all(every == np.floor(every)))


def test_truncated_or_padded_blob_is_a_value_error(boxes):
    made, blob = boxes
    with pytest.raises(ValueError, match="end inside record"):
        _kernels.shoebox_layout(blob[:-10], len(made))
    with pytest.raises(ValueError, match="bytes more than"):
        _kernels.shoebox_layout(blob, len(made) - 1)
    bad = blob.copy()
    bad[28] = 7  # the data flag of the first record
    with pytest.raises(ValueError, match="unknown data flag"):
        _kernels.shoebox_layout(bad, len(made))


def test_wrong_arrays_are_value_errors(boxes):
    made, blob = boxes
    _, _, offset, pixels, mask_bytes = _kernels.shoebox_layout(blob, len(made))
    group = np.zeros(len(made), dtype=np.int32)
    counts = np.zeros((1, 10), dtype=np.int64)
    tally = np.zeros((1, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="group"):
        _kernels.shoebox_histogram(
            blob, offset, pixels, mask_bytes, group + 1, 0, 0, 10, counts, tally
        )
    with pytest.raises(ValueError, match="outside the blob"):
        _kernels.shoebox_histogram(
            blob[:100], offset, pixels, mask_bytes, group, 0, 0, 10, counts, tally
        )
    with pytest.raises(ValueError, match="int64"):
        _kernels.shoebox_histogram(
            blob,
            offset.astype(np.int32),
            pixels,
            mask_bytes,
            group,
            0,
            0,
            10,
            counts,
            tally,
        )
    with pytest.raises(ValueError, match="low < high"):
        _kernels.shoebox_histogram(
            blob, offset, pixels, mask_bytes, group, 0, 10, 10, counts, tally
        )
