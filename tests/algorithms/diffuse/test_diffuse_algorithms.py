"""Peak model, merging of partial voxels, ASU mapping and corrections: known answers."""

import h5py
import numpy as np
import pandas as pd
import pytest

from dials_diffuse.algorithms.diffuse.correct import laue_rotations, map_to_asu
from dials_diffuse.algorithms.diffuse.integrate import merge_partials
from dials_diffuse.algorithms.diffuse.peaks import PeakModel, fit_peak_model
from dials_diffuse.util.errors import DataError


def test_peak_model_recovers_gaussian_and_rejects_outliers():
    rng = np.random.default_rng(5)
    centre = np.array([0.002, -0.004, 0.01])
    covariance = np.array(
        [[4e-4, 1e-4, 0.0], [1e-4, 9e-4, -2e-4], [0.0, -2e-4, 2.5e-3]]
    )
    inliers = rng.multivariate_normal(centre, covariance, size=20000)
    outliers = rng.uniform(-0.5, 0.5, size=(200, 3))
    offsets = np.concatenate([inliers, outliers])
    model, outlier = fit_peak_model(offsets, sigma_cutoff=4.0)
    np.testing.assert_allclose(model.centre, centre, atol=1e-3)
    # 4-sigma clipping truncates a 3-D Gaussian a little (about 1% variance).
    np.testing.assert_allclose(model.covariance, covariance, atol=6e-5)
    assert outlier[20000:].mean() > 0.95
    assert outlier[:20000].mean() < 0.01
    # Mahalanobis distance of centre + one sigma along h is 1.
    point = centre + np.array([np.sqrt(model.covariance[0, 0]), 0, 0])
    conditional = PeakModel(model.centre, np.diag(np.diag(model.covariance)))
    assert conditional.distance(point[None])[0] == pytest.approx(1.0, rel=0.02)


def test_peak_model_needs_enough_points():
    with pytest.raises(DataError, match="too few"):
        PeakModel.fit(np.zeros((2, 3)))
    with pytest.raises(DataError, match="degenerate"):
        PeakModel.fit(np.zeros((10, 3)))


def partial(index, pixels, counts, phi):
    index = np.asarray(index, dtype=np.int32).reshape(-1, 3)
    pixels = np.asarray(pixels, dtype=np.int64)
    return {
        "index": index,
        "pixels": pixels,
        "counts": np.asarray(counts, dtype=float),
        "seconds": pixels * 0.5,
        "phi_sum": pixels * np.asarray(phi, dtype=float),
        "iy_sum": pixels * 10.0,
        "ix_sum": pixels * 20.0,
    }


def test_merge_partials_sums_and_separates_observations():
    parts = [
        partial([[1, 2, 3], [0, 0, 1]], [10, 4], [100, 8], [0.2, 0.3]),
        partial([[1, 2, 3], [-2, 0, 1]], [6, 2], [60, 3], [0.9, 0.5]),
        # The same voxel 180 degrees later: a second observation, n = 180 / 1.
        partial([[1, 2, 3]], [5], [7], [180.2]),
    ]
    table = merge_partials(parts, (2, 1, 1), max_spread=1.0)
    frame = table.to_frame()
    assert list(frame.columns) == [
        "h",
        "k",
        "l",
        "n",
        "counts",
        "pixels",
        "seconds",
        "phi",
        "iy",
        "ix",
    ]
    rows = {(r.h, r.k, r.l, r.n): r for r in frame.itertuples(index=False)}
    first = rows[(0.5, 2.0, 3.0, 0)]
    assert first.counts == 160 and first.pixels == 16 and first.seconds == 8.0
    assert first.phi == pytest.approx((10 * 0.2 + 6 * 0.9) / 16)
    assert first.iy == pytest.approx(10.0) and first.ix == pytest.approx(20.0)
    assert rows[(0.5, 2.0, 3.0, 180)].counts == 7
    assert rows[(-1.0, 0.0, 1.0, 0)].counts == 3
    assert rows[(0.0, 0.0, 1.0, 0)].pixels == 4
    assert frame["counts"].sum() == 178
    # Sorted by h, k, l, n.
    keys = frame[["h", "k", "l", "n"]].to_records(index=False).tolist()
    assert keys == sorted(keys)


def test_merge_partials_matches_pandas_groupby():
    rng = np.random.default_rng(9)
    parts = []
    for _ in range(5):
        n = 400
        parts.append(
            partial(
                rng.integers(-3, 4, size=(n, 3)),
                rng.integers(1, 20, size=n),
                rng.integers(0, 100, size=n),
                rng.uniform(0, 3, size=n),
            )
        )
    table = merge_partials(parts, (1, 1, 1), max_spread=1.0)
    # mdx2's procedure in pandas.
    rows = pd.DataFrame(
        {
            "h": np.concatenate([p["index"][:, 0] for p in parts]),
            "k": np.concatenate([p["index"][:, 1] for p in parts]),
            "l": np.concatenate([p["index"][:, 2] for p in parts]),
            "counts": np.concatenate([p["counts"] for p in parts]),
            "pixels": np.concatenate([p["pixels"] for p in parts]),
            "phi": np.concatenate([p["phi_sum"] for p in parts]),
        }
    )
    rows["tmp"] = rows.phi / rows.pixels
    rows["n"] = np.floor(
        (rows.tmp - rows.groupby(["h", "k", "l"]).tmp.transform("min")) / 1.0
    ).astype(int)
    expected = rows.groupby(["h", "k", "l", "n"])[["counts", "pixels"]].sum()
    got = table.to_frame().set_index(["h", "k", "l", "n"])
    got.index = got.index.set_levels(
        [level.astype(int) for level in got.index.levels[:3]] + [got.index.levels[3]]
    )
    np.testing.assert_array_equal(
        got["counts"].to_numpy(), expected["counts"].to_numpy()
    )
    np.testing.assert_array_equal(
        got["pixels"].to_numpy(), expected["pixels"].to_numpy()
    )


def test_merge_partials_rejects_nothing_and_bad_spread():
    with pytest.raises(DataError, match="no unmasked pixel"):
        merge_partials([partial(np.zeros((0, 3)), [], [], [])], (1, 1, 1), 1.0)
    with pytest.raises(DataError, match="max_spread"):
        merge_partials([partial([[0, 0, 0]], [1], [1], [0])], (1, 1, 1), 0.0)


def test_map_to_asu_matches_cctbx_and_ops_map_back():
    from cctbx import crystal, miller, sgtbx
    from cctbx.array_family import flex

    rng = np.random.default_rng(4)
    group = sgtbx.space_group_info("P 43 21 2").group()
    hkl = rng.integers(-6, 7, size=(500, 3)).astype(float)
    asu, op = map_to_asu(hkl, (1, 1, 1), group)
    symmetry = crystal.symmetry(space_group=group.build_derived_laue_group())
    expected = (
        miller.set(
            symmetry,
            flex.miller_index([tuple(int(v) for v in row) for row in hkl]),
            anomalous_flag=False,
        )
        .map_to_asu()
        .indices()
    )
    np.testing.assert_array_equal(asu, np.array(expected, dtype=float))
    rotations = laue_rotations(group)
    assert len(rotations) == 16
    for row, image, number in zip(hkl, asu, op):
        np.testing.assert_array_equal(row @ rotations[number], image)


def test_map_to_asu_subdivided_grid():
    from cctbx import sgtbx

    group = sgtbx.space_group_info("P 21 21 21").group()
    hkl = np.array([[-0.5, 1.5, -2.0], [0.5, -1.0, 0.25]])
    asu, op = map_to_asu(hkl, (2, 2, 4), group)
    np.testing.assert_array_equal(asu, [[0.5, 1.5, 2.0], [0.5, 1.0, 0.25]])
    assert op.dtype == np.int32
    tetragonal = sgtbx.space_group_info("P 4").group()
    with pytest.raises(DataError, match="subdivide"):
        map_to_asu(np.array([[0.5, 1.0, 0.0], [1.0, 0.5, 0.0]]), (2, 1, 1), tetragonal)


def test_merge_weighted_means_outliers_and_halves():
    from dials_diffuse.algorithms.diffuse.merge import (
        cc_half,
        merge_observations,
        random_halves,
    )

    observations = pd.DataFrame(
        {
            "h": [0, 0, 0, 1, 1, 2],
            "k": [0, 0, 0, 0, 0, 0],
            "l": [1, 1, 1, 0, 0, 0],
            "intensity": [10.0, 20.0, 1000.0, 5.0, 7.0, 3.0],
            "intensity_error": [1.0, 2.0, 1.0, 1.0, 1.0, 0.0],
            "s": [0.1, 0.1, 0.1, 0.2, 0.2, 0.3],
        }
    )
    merged = merge_observations(observations, split=None)
    # The zero-error observation is unusable; weights 1, 1/4, 1.
    first = merged[(merged.h == 0) & (merged.l == 1)].iloc[0]
    assert first.intensity == pytest.approx((10 + 20 / 4 + 1000) / 2.25)
    assert first.intensity_error == pytest.approx(1 / np.sqrt(2.25))
    assert first["count"] == 3
    assert len(merged) == 2
    clipped = merge_observations(observations, outlier=3.0)
    first = clipped[(clipped.h == 0) & (clipped.l == 1)].iloc[0]
    assert first.intensity == pytest.approx((10 + 20 / 4) / 1.25)
    assert first["count"] == 2 and clipped.attrs["rejected_outliers"] == 1
    # Random halves: every group split as evenly as possible.
    rng = np.random.default_rng(0)
    group = rng.integers(0, 50, size=2000)
    first_half = random_halves(group, rng)
    in_first = np.bincount(group, weights=first_half, minlength=50)
    sizes = np.bincount(group, minlength=50)
    assert np.all(np.abs(2 * in_first - sizes) <= 1)
    # Two halves of noisy copies of one signal: CC1/2 from the noise level.
    signal = rng.normal(size=5000)
    rows = pd.DataFrame(
        {
            "h": np.repeat(np.arange(5000), 4),
            "k": 0,
            "l": 0,
            "intensity": np.repeat(signal, 4) + rng.normal(scale=1.0, size=20000),
            "intensity_error": 1.0,
            "s": np.repeat(np.linspace(0.1, 0.5, 5000), 4),
        }
    )
    overall, shells = cc_half(merge_observations(rows, split="random_half"), 5)
    # Each half averages 2 observations: CC1/2 = 1 / (1 + 0.5) = 0.67.
    assert overall == pytest.approx(2 / 3, abs=0.03)
    assert len(shells) == 5 and shells["voxels"].sum() == 5000


def test_map_expands_by_symmetry_and_writes_ccp4(tmp_path):
    from cctbx import sgtbx
    from iotbx import mrcfile

    from dials_diffuse.algorithms.diffuse.maps import (
        grid_from_table,
        write_map_ccp4,
        write_map_nexus,
    )

    group = sgtbx.space_group_info("P 21 21 21").group()
    # Asymmetric-unit voxels (h, k, l >= 0) on a half-integer grid.
    values = {(0.5, 1.0, 1.5): 7.0, (1.0, 0.0, 0.5): 3.0, (0.0, 0.0, 0.0): 1.0}
    table = pd.DataFrame(
        [(*hkl, v) for hkl, v in values.items()],
        columns=["h", "k", "l", "intensity"],
    )
    axes, grid = grid_from_table(
        table, "intensity", (2, 2, 2), group, (-1, 1, -1, 1, -1.5, 1.5)
    )
    assert grid.shape == (5, 5, 7)

    def at(h, k, l):  # noqa: E741 - Miller index names
        return grid[
            int(round((h + 1) * 2)), int(round((k + 1) * 2)), int(round((l + 1.5) * 2))
        ]

    for signs in [(1, 1, 1), (-1, 1, 1), (1, -1, -1), (-1, -1, -1)]:
        assert at(0.5 * signs[0], 1.0 * signs[1], 1.5 * signs[2]) == 7.0
        assert at(1.0 * signs[0], 0.0, 0.5 * signs[2]) == 3.0
    assert at(0, 0, 0) == 1.0
    assert np.isnan(at(0.5, 0.5, 0.5))
    assert np.count_nonzero(np.isfinite(grid)) == 8 + 4 + 1
    direct = grid_from_table(
        table, "intensity", (2, 2, 2), group, (-1, 1, -1, 1, -1.5, 1.5), symmetry=False
    )[1]
    assert np.count_nonzero(np.isfinite(direct)) == 3
    write_map_nexus(tmp_path / "map.nxs", axes, grid, "intensity")
    with h5py.File(tmp_path / "map.nxs", "r") as handle:
        np.testing.assert_array_equal(
            handle["entry/intensity/intensity"][()], grid.astype(np.float32)
        )
        np.testing.assert_array_equal(handle["entry/intensity/l"][()], axes[2])
    write_map_ccp4(tmp_path / "map.ccp4", axes, grid, (2, 2, 2), "test")
    reader = mrcfile.map_reader(file_name=str(tmp_path / "map.ccp4"))
    assert tuple(reader.data.all()) == (5, 5, 7)
    data = reader.data.as_numpy_array()
    assert data.max() == pytest.approx(7.0)


def test_phi_scale_recovers_a_known_scale():
    from dials_diffuse.algorithms.diffuse.scale import refine_phi_scale

    rng = np.random.default_rng(12)
    n_voxels, per_voxel = 3000, 6
    truth = rng.gamma(2.0, 50.0, size=n_voxels)
    phi = rng.uniform(0, 30, size=n_voxels * per_voxel)

    def true_scale(angle):
        return 1 + 0.3 * np.sin(angle / 5.0)

    expected = np.repeat(truth, per_voxel) * true_scale(phi)
    sigma = 0.02 * expected + 0.5
    observations = pd.DataFrame(
        {
            "h": np.repeat(np.arange(n_voxels), per_voxel),
            "k": 0,
            "l": 0,
            "phi": phi,
            "intensity": expected + rng.normal(size=expected.size) * sigma,
            "intensity_error": sigma,
        }
    )
    model, history = refine_phi_scale(observations, phi_step=1.0, smoothness=0.1)
    grid = np.linspace(1, 29, 50)
    reference = true_scale(grid) / np.mean(true_scale(phi))
    np.testing.assert_allclose(model(grid), reference, rtol=0.02)
    assert history[-1] < 1.2 and history[-1] <= history[0]


class _Frames:
    """A minimal ImageSource over arrays (frames, rows, columns)."""

    def __init__(self, data, valid, seconds):
        from dials_diffuse.images.source import ImageSource, output_buffer

        class Source(ImageSource):
            n_frames = data.shape[0]
            panel_shapes = [data.shape[1:]]
            dtype = data.dtype
            exposure_times = np.full(data.shape[0], seconds)

            def static_mask(self, panel=0):
                return valid[0]

            def read(self, chunk, out=None):
                index = (chunk.frames, chunk.rows, chunk.columns)
                out = output_buffer(chunk.shape, self.dtype, out)
                out[...] = data[index]
                return out, valid[index]

        self.source = Source()


def test_binned_background_of_a_known_rate_field(tmp_path):
    from dials_diffuse.algorithms.diffuse.background import (
        bin_image_series,
    )
    from dials_diffuse.io.background_file import read_background, write_background

    frames, rows, columns = 6, 40, 60
    f, r, c = np.meshgrid(
        np.arange(frames), np.arange(rows), np.arange(columns), indexing="ij"
    )
    # counts per pixel = rate x 0.5 s, the rate linear in frame, row, column.
    rate = 10.0 + 0.5 * f + 0.1 * r + 0.05 * c
    data = rate * 0.5
    valid = np.ones(data.shape, dtype=bool)
    valid[:, 10:20, :] = False  # a masked band: the blocks there are empty
    data[~valid] = 1e6  # never used
    phi = np.arange(frames) * 0.2 + 0.1
    source = _Frames(data, valid, 0.5).source
    background = bin_image_series(source, (2, 10, 20), phi)
    assert background.rate.shape == (3, 4, 3)
    np.testing.assert_allclose(background.iy, [4.5, 14.5, 24.5, 34.5])
    np.testing.assert_allclose(background.phi, [0.2, 0.6, 1.0])
    # Interpolated rate equals the linear field wherever blocks are valid.
    points = (
        np.array([0.3, 0.5, 0.9]),
        np.array([25.0, 30.0, 33.0]),
        np.array([20.0, 30.0, 39.5]),
    )
    frame_of_phi = (points[0] - 0.1) / 0.2
    expected = 10.0 + 0.5 * frame_of_phi + 0.1 * points[1] + 0.05 * points[2]
    np.testing.assert_allclose(background(*points), expected, rtol=1e-12)
    # The empty band takes its nearest valid block's value (no NaN).
    assert np.all(np.isfinite(background.rate))
    write_background(tmp_path / "background.nxs", background)
    again = read_background(tmp_path / "background.nxs")
    np.testing.assert_array_equal(again.rate, background.rate)


@pytest.mark.parametrize(
    "symbol, cell",
    [
        ("P 21 21 21", (5.4, 8.1, 12.0, 90, 90, 90)),
        ("C 2 2 21", (20.0, 30.0, 40.0, 90, 90, 90)),
        ("I 41 2 2", (30.0, 30.0, 40.0, 90, 90, 90)),
    ],
)
def test_allowed_lattice_points_with_and_without_screw_absences(symbol, cell):
    """Default: every absence is left unmasked; centring_only: only centring's."""
    from cctbx import sgtbx, uctbx
    from dxtbx.model import Crystal

    from dials_diffuse.algorithms.diffuse.mask import allowed_lattice_points

    unit_cell = uctbx.unit_cell(cell)
    real = np.array(unit_cell.orthogonalization_matrix()).reshape(3, 3).T
    crystal = Crystal(*real, space_group=sgtbx.space_group_info(symbol).group())
    strict, origin = allowed_lattice_points(crystal, 0.3)
    lattice, same_origin = allowed_lattice_points(crystal, 0.3, centring_only=True)
    assert np.array_equal(origin, same_origin)

    def at(table, hkl):
        return bool(table[tuple(np.asarray(hkl) - origin)])

    # 00l with l odd: a screw absence (21 or 41 along c), a lattice point.
    assert not at(strict, (0, 0, 1)) and at(lattice, (0, 0, 2))
    centring = {"P": None, "C": (1, 0, 2), "I": (1, 0, 2)}[symbol[0]]
    assert at(lattice, (0, 0, 1)) == (symbol[0] != "I")  # I: h+k+l odd
    if centring is not None:
        # Centring absences are not lattice points: never allowed.
        assert not at(strict, centring) and not at(lattice, centring)
    # Everything allowed by the space group is allowed by its lattice.
    assert np.all(lattice >= strict)
    if symbol[0] == "P":
        assert lattice.all()
