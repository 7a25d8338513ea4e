"""The diffuse kernels against pure-numpy references on random geometry."""

import numpy as np
import pytest

from dials_diffuse import _kernels


def random_geometry(rng, frames=3, rows=23, columns=31):
    """Random s1 on the Ewald sphere (x, y, z planes), s0, and per-frame hkl matrices."""
    wavelength = rng.uniform(0.6, 1.5)
    # A slightly different s0 per frame (a scan-varying beam).
    s0 = np.array([0.0, 0.0, -1.0 / wavelength]) + rng.normal(
        scale=1e-3, size=(frames, 3)
    )
    direction = rng.normal(size=(rows, columns, 3))
    direction[..., 2] = -np.abs(direction[..., 2]) - 0.5
    s1 = direction / np.linalg.norm(direction, axis=-1, keepdims=True) / wavelength
    # Real-space cell vectors of a few Angstrom: hkl = M (s1 - s0).
    matrices = rng.normal(scale=6.0, size=(frames, 3, 3))
    return planes(s1), s0, np.ascontiguousarray(matrices)


def planes(s1):
    """s1 (rows, columns, 3) as the kernels take it: (3, rows, columns) planes."""
    return np.ascontiguousarray(np.moveaxis(s1, -1, 0))


def reference_hkl(s1, s0, matrices):
    s1 = np.moveaxis(s1, 0, -1)  # planes back to (rows, columns, 3)
    """hkl (frames, rows, columns, 3) by numpy."""
    return np.einsum("fij,frcj->frci", matrices, s1[None] - s0[:, None, None])


def reference_integrate(data, valid, exclude, hkl, subdivide, phi, seconds):
    use = valid & ~exclude
    frame, row, column = np.nonzero(use)
    index = np.floor(hkl[frame, row, column] * subdivide + 0.5).astype(np.int64)
    keys, inverse = np.unique(index, axis=0, return_inverse=True)
    inverse = inverse.ravel()

    def total(values):
        return np.bincount(inverse, weights=values, minlength=len(keys))

    return {
        tuple(key): (
            total(data[frame, row, column].astype(float))[i],
            np.bincount(inverse, minlength=len(keys))[i],
            total(seconds[frame])[i],
            total(phi[frame])[i],
            total(row.astype(float))[i],
            total(column.astype(float))[i],
        )
        for i, key in enumerate(keys)
    }


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float64])
@pytest.mark.parametrize("subdivide", [(1, 1, 1), (2, 3, 1), (4, 4, 4)])
def test_integrate_voxels_matches_numpy(dtype, subdivide):
    rng = np.random.default_rng(7)
    s1, s0, matrices = random_geometry(rng)
    shape = (matrices.shape[0],) + s1.shape[1:]
    data = rng.integers(0, 50, size=shape).astype(dtype)
    valid = rng.random(shape) > 0.1
    exclude = rng.random(shape) > 0.8
    phi = rng.uniform(0, 360, size=shape[0])
    seconds = rng.uniform(0.1, 1.0, size=shape[0])
    subdivide = np.asarray(subdivide, dtype=float)
    result = _kernels.integrate_voxels(
        data, s1, s0, matrices, subdivide, phi, seconds, valid=valid, exclude=exclude
    )
    expected = reference_integrate(
        data,
        valid,
        exclude,
        reference_hkl(s1, s0, matrices),
        subdivide,
        phi,
        seconds,
    )
    assert len(result["pixels"]) == len(expected)
    for i, key in enumerate(map(tuple, result["index"])):
        counts, pixels, secs, phi_sum, iy_sum, ix_sum = expected[key]
        assert result["pixels"][i] == pixels
        assert result["counts"][i] == pytest.approx(counts)
        assert result["seconds"][i] == pytest.approx(secs)
        assert result["phi_sum"][i] == pytest.approx(phi_sum)
        assert result["iy_sum"][i] == pytest.approx(iy_sum)
        assert result["ix_sum"][i] == pytest.approx(ix_sum)


def detector_geometry(rng, frames=4, rows=37, columns=301):
    """s1 of a flat detector (smooth along rows) and slowly rotating matrices.

    Neighbouring pixels share voxels, so the kernel's runs of equal voxels
    (and their column sums) are exercised, unlike with random directions.
    """
    wavelength = 1.0
    ix, iy = np.meshgrid(np.arange(columns) + 0.5, np.arange(rows) + 0.5)
    lab = np.stack(
        [(ix - 150) * 0.172, (iy - 20) * 0.172, np.full(ix.shape, -200.0)], -1
    )
    s1 = lab / np.linalg.norm(lab, axis=-1, keepdims=True) / wavelength
    s0 = np.tile([0.0, 0.0, -1.0 / wavelength], (frames, 1))
    cell = rng.normal(scale=8.0, size=(3, 3))
    angles = np.radians(0.1 * np.arange(frames))
    rotations = np.array(
        [
            [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
            for a in angles
        ]
    )
    matrices = np.einsum("ij,fjk->fik", cell, rotations)
    return planes(s1), s0, np.ascontiguousarray(matrices)


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_integrate_voxels_runs_on_a_flat_detector(dtype):
    rng = np.random.default_rng(5)
    s1, s0, matrices = detector_geometry(rng)
    shape = (matrices.shape[0],) + s1.shape[1:]
    data = rng.integers(0, 1000, size=shape).astype(dtype)
    valid = np.ones(shape, dtype=bool)
    valid[:, :, 100:110] = False  # a module gap
    valid[:, 5:8, :] = False  # a gap between module rows (rows skipped whole)
    exclude = np.zeros(shape, dtype=bool)
    exclude[:, 10:14, 200:230] = True  # a peak
    exclude |= rng.random(shape) > 0.97
    phi = 0.1 * np.arange(shape[0])
    seconds = np.full(shape[0], 0.5)
    subdivide = np.array([2.0, 3.0, 4.0])
    result = _kernels.integrate_voxels(
        data, s1, s0, matrices, subdivide, phi, seconds, valid=valid, exclude=exclude
    )
    expected = reference_integrate(
        data, valid, exclude, reference_hkl(s1, s0, matrices), subdivide, phi, seconds
    )
    pixels_per_voxel = (valid & ~exclude).sum() / len(expected)
    assert pixels_per_voxel > 20  # long runs of one voxel along a row
    assert len(result["pixels"]) == len(expected)
    for i, key in enumerate(map(tuple, result["index"])):
        counts, pixels, secs, phi_sum, iy_sum, ix_sum = expected[key]
        assert result["pixels"][i] == pixels
        assert result["counts"][i] == counts
        assert result["seconds"][i] == pytest.approx(secs)
        assert result["phi_sum"][i] == pytest.approx(phi_sum)
        assert result["iy_sum"][i] == iy_sum
        assert result["ix_sum"][i] == ix_sum


def test_integrate_voxels_offsets_and_no_masks():
    rng = np.random.default_rng(3)
    s1, s0, matrices = random_geometry(rng, frames=2)
    data = rng.integers(0, 9, size=(2,) + s1.shape[1:]).astype(np.int32)
    result = _kernels.integrate_voxels(
        data,
        s1,
        s0,
        matrices,
        np.ones(3),
        np.zeros(2),
        np.ones(2),
        row0=100.0,
        column0=5.0,
    )
    assert result["counts"].sum() == data.sum()
    assert result["pixels"].sum() == data.size
    rows = np.arange(s1.shape[1]) + 100.0
    columns = np.arange(s1.shape[2]) + 5.0
    assert result["iy_sum"].sum() == pytest.approx(2 * s1.shape[2] * rows.sum())
    assert result["ix_sum"].sum() == pytest.approx(2 * s1.shape[1] * columns.sum())


def test_integrate_voxels_rejects_bad_input():
    rng = np.random.default_rng(1)
    s1, s0, matrices = random_geometry(rng, frames=2)
    data = np.zeros((2,) + s1.shape[1:], dtype=np.int32)
    args = (np.ones(3), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="s1"):
        _kernels.integrate_voxels(data, s1[:, :-1].copy(), s0, matrices, *args)
    with pytest.raises(ValueError, match="matrices"):
        _kernels.integrate_voxels(data, s1, s0, matrices[:1].copy(), *args)
    with pytest.raises(ValueError, match="s0"):
        _kernels.integrate_voxels(data, s1, s0[0].copy(), matrices, *args)
    with pytest.raises(ValueError, match="float64"):
        _kernels.integrate_voxels(data, s1.astype(np.float32), s0, matrices, *args)
    with pytest.raises(ValueError, match="contiguous"):
        _kernels.integrate_voxels(data[:, ::2], s1, s0, matrices, *args)
    with pytest.raises(ValueError, match="valid"):
        _kernels.integrate_voxels(
            data, s1, s0, matrices, *args, valid=np.ones(data.shape, dtype=np.int32)
        )
    with pytest.raises(ValueError, match="subdivide"):
        _kernels.integrate_voxels(data, s1, s0, matrices, np.zeros(3), *args[1:])
    with pytest.raises(ValueError, match="Miller index out of range"):
        _kernels.integrate_voxels(data, s1, s0, matrices * 1e9, *args)


def reference_mask(s1, s0, matrices, centre, whitening, cutoff, allowed, origin):
    hkl = reference_hkl(s1, s0, matrices)
    nearest = np.floor(hkl + 0.5)
    offset = hkl - nearest - centre
    distance2 = np.sum((offset @ whitening.T) ** 2, axis=-1)
    cell = nearest.astype(np.int64) - origin
    inside_table = np.all((cell >= 0) & (cell < np.array(allowed.shape)), axis=-1)
    cell = np.where(inside_table[..., None], cell, 0)
    is_allowed = allowed[cell[..., 0], cell[..., 1], cell[..., 2]] & inside_table
    return (is_allowed & (distance2 < cutoff**2)).astype(np.uint8)


def test_mask_peak_ellipsoids_matches_numpy():
    rng = np.random.default_rng(11)
    s1, s0, matrices = random_geometry(rng, frames=4, rows=40, columns=50)
    hkl = reference_hkl(s1, s0, matrices)
    low = np.floor(hkl.reshape(-1, 3).min(axis=0)).astype(np.int64) + 2
    high = np.ceil(hkl.reshape(-1, 3).max(axis=0)).astype(np.int64) - 2
    # A table that does not cover every lattice point reached, half allowed.
    allowed = (rng.random(tuple(high - low + 1)) > 0.5).astype(np.uint8)
    centre = np.array([0.01, -0.02, 0.03])
    covariance = np.array(
        [[0.01, 0.002, 0.0], [0.002, 0.02, 0.001], [0.0, 0.001, 0.015]]
    )
    whitening = np.ascontiguousarray(np.linalg.inv(np.linalg.cholesky(covariance)))
    mask = _kernels.mask_peak_ellipsoids(
        s1, s0, matrices, centre, whitening, 2.0, allowed, low
    )
    expected = reference_mask(
        s1, s0, matrices, centre, whitening, 2.0, allowed.astype(bool), low
    )
    assert mask.dtype == np.uint8
    assert 0.01 < expected.mean() < 0.9
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("invert", [False, True])
def test_mask_peak_ellipsoids_invalid_invert_and_out(invert):
    rng = np.random.default_rng(13)
    s1, s0, matrices = detector_geometry(rng, frames=3)
    allowed = np.ones((41, 41, 41), dtype=np.uint8)
    allowed[::2] = 0  # h odd only
    origin = np.array([-20, -20, -20], dtype=np.int64)
    whitening = np.eye(3) * 8.0
    invalid = rng.random(s1.shape[1:]) > 0.9
    out = np.full((3,) + s1.shape[1:], 7, dtype=np.uint8)
    mask = _kernels.mask_peak_ellipsoids(
        s1,
        s0,
        matrices,
        np.zeros(3),
        whitening,
        2.5,
        allowed,
        origin,
        invalid=invalid,
        invert=invert,
        out=out,
    )
    peaks = reference_mask(
        s1, s0, matrices, np.zeros(3), whitening, 2.5, allowed.astype(bool), origin
    )
    assert 0.01 < peaks.mean() < 0.5
    expected = (peaks ^ invert) | invalid[None]
    assert mask is out
    np.testing.assert_array_equal(mask, expected)


def test_mask_peak_ellipsoids_rejects_bad_input():
    rng = np.random.default_rng(2)
    s1, s0, matrices = random_geometry(rng, frames=1)
    allowed = np.ones((3, 3, 3), dtype=np.uint8)
    origin = np.array([-1, -1, -1], dtype=np.int64)
    good = (np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="cutoff"):
        _kernels.mask_peak_ellipsoids(s1, s0, matrices, *good, 0.0, allowed, origin)
    with pytest.raises(ValueError, match="origin"):
        _kernels.mask_peak_ellipsoids(
            s1, s0, matrices, *good, 1.0, allowed, origin.astype(np.int32)
        )
    with pytest.raises(ValueError, match="allowed"):
        _kernels.mask_peak_ellipsoids(
            s1, s0, matrices, *good, 1.0, np.ones((3, 3)), origin
        )
    with pytest.raises(ValueError, match="invalid"):
        _kernels.mask_peak_ellipsoids(
            s1, s0, matrices, *good, 1.0, allowed, origin, invalid=np.ones((2, 2), bool)
        )
    with pytest.raises(ValueError, match="out"):
        _kernels.mask_peak_ellipsoids(
            s1,
            s0,
            matrices,
            *good,
            1.0,
            allowed,
            origin,
            out=np.zeros((1, 2, 2), np.uint8),
        )
