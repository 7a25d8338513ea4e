"""The histogram kernel against numpy.histogram, bin for bin."""

import threading

import numpy as np
import pytest

from dials_diffuse import _kernels

DTYPES = ["u1", "u2", "u4", "i1", "i2", "i4", "i8", "f4", "f8"]


def reference(data, low, high, bins, mask=None):
    """numpy's histogram of the valid values, plus the tallies the kernel reports."""
    values = data.astype(np.float64).ravel()
    valid = np.ones(values.shape, bool) if mask is None else mask.ravel().astype(bool)
    kept = values[valid]
    finite = kept[~np.isnan(kept)]
    counts, _ = np.histogram(finite, bins=bins, range=(low, high))
    return (
        counts,
        int((finite < low).sum()),
        int((finite > high).sum()),
        int(np.isnan(kept).sum()),
        int((~valid).sum()),
    )


def random_data(dtype, shape, rng):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        low, high = max(info.min, -300), min(info.max, 300)
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    return rng.normal(50, 80, size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_mask", [False, True])
def test_counts_equal_numpy(dtype, with_mask):
    rng = np.random.default_rng(42)
    data = random_data(dtype, (37, 53), rng)
    mask = rng.random(data.shape) > 0.2 if with_mask else None
    for low, high, bins in [(0, 100, 100), (-10.5, 200.25, 37), (0, 255, 1)]:
        counts, under, over, nan, masked = _kernels.histogram(
            data, low, high, bins, mask=mask
        )
        expected = reference(data, low, high, bins, mask)
        np.testing.assert_array_equal(counts, expected[0])
        assert (under, over, nan, masked) == expected[1:]
        if mask is None:
            assert counts.sum() + under + over == data.size


def test_edge_values_go_where_numpy_puts_them():
    # Values exactly on every edge, on low and on high (the last bin is closed).
    # The range avoids 0: just below 0 is a denormal, which some libraries
    # loaded in the same process flush to zero.
    low, high, bins = 1.0, 2.0, 10
    edges = np.linspace(low, high, bins + 1)
    data = np.concatenate(
        [edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)]
    )
    counts, under, over, nan, masked = _kernels.histogram(data, low, high, bins)
    expected = reference(data, low, high, bins)
    np.testing.assert_array_equal(counts, expected[0])
    assert (under, over) == (1, 1)
    # The last bin [1.9, 2.0] holds 1.9, the value above it, the value below
    # 2.0 and 2.0 itself.
    assert counts[-1] == 4


def test_exact_integer_bins_for_counts():
    data = np.array([0, 1, 1, 2, 5, 5, 5, 9], dtype=np.int32)
    counts, under, over, _, _ = _kernels.histogram(data, 0, 10, 10)
    np.testing.assert_array_equal(counts, [1, 2, 1, 0, 0, 3, 0, 0, 0, 1])
    assert under == over == 0


def test_nan_counted_separately():
    data = np.array([np.nan, 1.0, np.nan, 2.0, -5.0, 50.0])
    counts, under, over, nan, masked = _kernels.histogram(data, 0, 10, 5)
    assert (counts.sum(), under, over, nan, masked) == (2, 1, 1, 2, 0)


def test_accumulates_in_place():
    rng = np.random.default_rng(1)
    total = np.zeros(20, dtype=np.int64)
    chunks = [rng.integers(0, 20, 1000).astype(np.uint16) for _ in range(3)]
    for chunk in chunks:
        returned = _kernels.histogram(chunk, 0, 20, 20, counts=total)[0]
        assert returned is total
    expected, _ = np.histogram(np.concatenate(chunks), bins=20, range=(0, 20))
    np.testing.assert_array_equal(total, expected)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: _kernels.histogram(np.zeros(4, "c16"), 0, 1, 1), "unsupported dtype"),
        (lambda: _kernels.histogram(np.zeros((4, 4))[:, ::2], 0, 1, 1), "C-contiguous"),
        (
            lambda: _kernels.histogram(np.zeros(4), 0, 1, 1, mask=np.ones(5, bool)),
            "same shape",
        ),
        (
            lambda: _kernels.histogram(np.zeros(4), 0, 1, 1, mask=np.ones(4, "f8")),
            "mask must have dtype",
        ),
        (lambda: _kernels.histogram(np.zeros(4), 1, 1, 1), "low < high"),
        (lambda: _kernels.histogram(np.zeros(4), 0, np.nan, 1), "low < high"),
        (lambda: _kernels.histogram(np.zeros(4), 0, 1, 0), "bins"),
        (
            lambda: _kernels.histogram(np.zeros(4), 0, 1, 3, counts=np.zeros(2, "i8")),
            "counts must be",
        ),
        (
            lambda: _kernels.histogram(np.zeros(4), 0, 1, 3, counts=np.zeros(3, "f8")),
            "counts must be",
        ),
        (lambda: _kernels.histogram(np.zeros(4, ">u2"), 0, 1, 3), "unsupported dtype"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_releases_the_gil():
    # While one thread runs the kernel on a large array, this thread keeps
    # running Python: possible only if the kernel released the GIL.
    data = np.ones(60_000_000, dtype=np.uint16)
    ticks = 0
    done = threading.Event()

    def work():
        _kernels.histogram(data, 0, 10, 10)
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    while not done.is_set():
        ticks += 1
    thread.join()
    assert ticks > 1000
