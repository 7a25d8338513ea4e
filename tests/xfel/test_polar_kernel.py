"""The C++ polar resampling kernel against pure-numpy references."""

import numpy as np
import pytest
from scipy import ndimage

from dials_diffuse import _kernels
from dials_diffuse.algorithms.xfel.polar import (
    map_from_pixel_coordinates,
    pixel_polar_map,
)

SHAPE = (40, 50)  # slow, fast


@pytest.fixture
def frames_and_mask():
    rng = np.random.default_rng(3)
    frames = rng.normal(100, 20, size=(3,) + SHAPE)
    valid = rng.random((3,) + SHAPE) > 0.05
    return frames, valid


def _coordinates(rng, n=400):
    fast = rng.uniform(-2, SHAPE[1] + 2, n)
    slow = rng.uniform(-2, SHAPE[0] + 2, n)
    return fast.reshape(20, 20), slow.reshape(20, 20)


def reference_nearest(frame, valid, fast, slow, shape=SHAPE):
    out = np.zeros(fast.size)
    ok = np.zeros(fast.size, dtype=bool)
    for k, (x, y) in enumerate(zip(fast.ravel(), slow.ravel())):
        i, j = int(np.floor(x)), int(np.floor(y))
        if 0 <= i < shape[1] and 0 <= j < shape[0] and valid[j, i]:
            out[k], ok[k] = frame[j, i], True
    return out.reshape(fast.shape), ok.reshape(fast.shape)


def reference_bilinear(frame, valid, fast, slow, shape=SHAPE):
    # Values from scipy (array coordinates = pixel coordinates - 0.5).
    values = ndimage.map_coordinates(
        frame, [slow.ravel() - 0.5, fast.ravel() - 0.5], order=1, mode="nearest"
    )
    ok = np.zeros(fast.size, dtype=bool)
    for k, (x, y) in enumerate(zip(fast.ravel() - 0.5, slow.ravel() - 0.5)):
        i0, j0 = int(np.floor(x)), int(np.floor(y))
        tx, ty = x - i0, y - j0
        corners = [
            (i0, j0, (1 - tx) * (1 - ty)),
            (i0 + 1, j0, tx * (1 - ty)),
            (i0, j0 + 1, (1 - tx) * ty),
            (i0 + 1, j0 + 1, tx * ty),
        ]
        ok[k] = all(
            w == 0 or (0 <= i < shape[1] and 0 <= j < shape[0] and valid[j, i])
            for i, j, w in corners
        )
    return values.reshape(fast.shape), ok.reshape(fast.shape)


@pytest.mark.parametrize(
    "method,reference",
    [("nearest", reference_nearest), ("bilinear", reference_bilinear)],
)
def test_kernel_matches_numpy_reference(frames_and_mask, method, reference):
    frames, valid = frames_and_mask
    fast, slow = _coordinates(np.random.default_rng(11))
    polar_map = map_from_pixel_coordinates(fast, slow, 0, [SHAPE], method)
    out, out_valid = polar_map.apply(frames, valid)
    assert out.shape == (3, 20, 20) and out.dtype == np.float32
    for f in range(3):
        expected, expected_valid = reference(frames[f], valid[f], fast, slow)
        np.testing.assert_array_equal(out_valid[f], expected_valid)
        np.testing.assert_allclose(
            out[f][expected_valid], expected[expected_valid], rtol=1e-5
        )
        assert np.all(out[f][~expected_valid] == 0)
    assert 0.3 < out_valid.mean() < 0.95


def test_integer_frames_and_no_mask():
    frames = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape((1,) + SHAPE)
    fast, slow = np.array([[10.5, 20.0]]), np.array([[5.5, 7.25]])
    nearest = map_from_pixel_coordinates(fast, slow, 0, [SHAPE], "nearest")
    out, ok = nearest.apply(frames)
    assert ok.all()
    assert out[0, 0].tolist() == [5 * 50 + 10, 7 * 50 + 20]
    bilinear = map_from_pixel_coordinates(fast, slow, 0, [SHAPE], "bilinear")
    out, ok = bilinear.apply(frames.astype(np.int32))
    # Linear data: bilinear interpolation is exact at any point.
    assert out[0, 0] == pytest.approx([5 * 50 + 10, 6.75 * 50 + 19.5])


def test_pixel_polar_map_samples_a_circle():
    centre, radius = (25.3, 19.8), 12.0
    slow, fast = np.indices(SHAPE) + 0.5
    image = (fast - centre[0]) ** 2 + (slow - centre[1]) ** 2  # r^2, quadratic
    polar_map = pixel_polar_map(centre, [radius], 64, SHAPE, "bilinear")
    out, ok = polar_map.apply(image[None])
    assert ok.all()
    # Bilinear overestimates a convex function by at most a quarter pixel^2.
    np.testing.assert_allclose(out[0, 0], radius**2, atol=0.51)


def test_bad_input_raises_value_error():
    indptr = np.array([0, 1], np.int64)
    indices = np.array([1 * 50 + 1], np.int32)
    weights = np.ones(1, np.float32)
    frames = np.zeros((1,) + SHAPE)
    with pytest.raises(ValueError, match="C-contiguous"):
        _kernels.polar_resample(
            indptr, indices, weights, np.zeros((1, 50, 40)).transpose(0, 2, 1)
        )
    with pytest.raises(ValueError, match="outside the frame"):
        _kernels.polar_resample(indptr, np.array([10**6], np.int32), weights, frames)
    with pytest.raises(ValueError, match="int64"):
        _kernels.polar_resample(indptr.astype(np.int32), indices, weights, frames)
    with pytest.raises(ValueError, match="same shape"):
        _kernels.polar_resample(indptr, indices, weights, frames, np.ones((1, 3), bool))
    with pytest.raises(ValueError, match="unsupported dtype"):
        _kernels.polar_resample(indptr, indices, weights, frames.astype(np.complex64))
    # The compact layouts: every pixel an entry may touch must be in the
    # frame, every bin in the output.
    fractions = np.zeros((1, 2), np.float32)
    last = np.array([SHAPE[0] * SHAPE[1] - 1], np.int32)
    bin0 = np.zeros(1, np.int32)
    _kernels.polar_resample_compact(bin0, last, None, 1, 1, frames)
    with pytest.raises(ValueError, match="outside the frame"):
        _kernels.polar_resample_compact(bin0, last, fractions, SHAPE[1], 1, frames)
    with pytest.raises(ValueError, match="outside the frame"):
        _kernels.polar_resample_compact(
            bin0, np.array([-2], np.int32), None, 1, 1, frames
        )
    with pytest.raises(ValueError, match="outside the 1 bins"):
        _kernels.polar_resample_compact(bin0 + 1, last, None, 1, 1, frames)
    with pytest.raises(ValueError, match="int32"):
        _kernels.polar_resample_compact(bin0, last.astype(np.int64), None, 1, 1, frames)
    with pytest.raises(ValueError, match="shape"):
        _kernels.polar_resample_compact(
            bin0, last, np.zeros((2, 2), np.float32), 1, 1, frames
        )
    # A bin without an entry is invalid (0), not left unwritten.
    out, ok = _kernels.polar_resample_compact(bin0 + 1, last, None, 1, 3, frames + 7)
    assert out.tolist() == [[0, 7, 0]] and ok.tolist() == [[0, 1, 0]]


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
@pytest.mark.parametrize("shapes", [[SHAPE, (30, 50)], [SHAPE, (30, 45)]])
def test_multi_panel_maps_match_the_reference(method, shapes):
    """Two panels (equal widths: the compact layout; unequal: CSR): every
    sample as the single-panel reference computes it on its own panel."""
    rng = np.random.default_rng(5)
    frames = [rng.normal(100, 20, size=(2,) + s) for s in shapes]
    valid = [rng.random((2,) + s) > 0.05 for s in shapes]
    fast, slow = _coordinates(np.random.default_rng(12))
    panel = rng.integers(0, 2, size=fast.shape)
    polar_map = map_from_pixel_coordinates(fast, slow, panel, shapes, method)
    flat = np.concatenate([f.reshape(2, -1) for f in frames], axis=1)
    flat_valid = np.concatenate([v.reshape(2, -1) for v in valid], axis=1)
    out, out_valid = polar_map.apply(flat, flat_valid)
    reference = reference_nearest if method == "nearest" else reference_bilinear
    for f in range(2):
        for p, shape in enumerate(shapes):
            mine = panel == p
            expected, expected_valid = reference(
                frames[p][f], valid[p][f], fast, slow, shape
            )
            np.testing.assert_array_equal(out_valid[f][mine], expected_valid[mine])
            ok = mine & expected_valid
            np.testing.assert_allclose(out[f][ok], expected[ok], rtol=1e-5)
            assert np.all(out[f][mine & ~expected_valid] == 0)
    assert 0.3 < out_valid.mean() < 0.95


def test_samples_on_the_last_pixel_centres_are_valid():
    """Bilinear at the centre of the last column/row uses that pixel alone
    (its neighbours beyond the edge have zero weight), as does a masked
    neighbour of zero weight."""
    frame = np.arange(np.prod(SHAPE), dtype=np.float32).reshape((1,) + SHAPE)
    valid = np.ones((1,) + SHAPE, dtype=bool)
    valid[0, 10, 21] = False  # right of (20, 10), zero weight below
    fast = np.array([[SHAPE[1] - 0.5, 0.5, SHAPE[1] - 0.5, 20.5]])
    slow = np.array([[5.5, SHAPE[0] - 0.5, SHAPE[0] - 0.5, 10.5]])
    polar_map = map_from_pixel_coordinates(fast, slow, 0, [SHAPE], "bilinear")
    out, ok = polar_map.apply(frame, valid)
    assert ok.all()
    expected = [frame[0, int(y), int(x)] for x, y in zip(fast[0], slow[0])]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)
