"""pixels_above (find_peaks' per-pixel pass) against numpy.flatnonzero."""

import numpy as np
import pytest

from dials_diffuse import _kernels

DTYPES = ["u1", "u2", "u4", "i1", "i2", "i4", "i8", "f4", "f8"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_equals_numpy_for_every_pixel_type(dtype):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 100, size=(3, 37, 41)).astype(dtype)
    if data.dtype.kind == "f":
        data[0, 0, :5] = np.nan
        data[1, 2, 3] = 20.5
    valid = rng.random(data.shape) > 0.2
    for threshold in (-1.0, 20.0, 20.25, 99.0, 1e9):
        expected = np.flatnonzero((data > threshold) & valid)
        got = _kernels.pixels_above(data, valid, threshold)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)
    # Equal to the threshold is not above it; no mask means every pixel.
    np.testing.assert_array_equal(
        _kernels.pixels_above(data, None, 50.0), np.flatnonzero(data > 50)
    )
    np.testing.assert_array_equal(
        _kernels.pixels_above(data, valid.view(np.uint8), 50.0),
        np.flatnonzero((data > 50) & valid),
    )


def test_empty_and_nothing_found():
    assert _kernels.pixels_above(np.zeros((0, 4, 4), np.int32), None, 0.0).size == 0
    assert _kernels.pixels_above(np.zeros((2, 4, 4), np.int32), None, 0.0).size == 0


def test_rejects_bad_input():
    data = np.zeros((2, 4, 4), np.int32)
    with pytest.raises(ValueError):
        _kernels.pixels_above(data[:, ::2], None, 1.0)  # not contiguous
    with pytest.raises(ValueError):
        _kernels.pixels_above(data, np.ones((2, 4, 3), bool), 1.0)  # mask shape
    with pytest.raises(ValueError):
        _kernels.pixels_above(data.astype(np.complex64), None, 1.0)  # dtype
