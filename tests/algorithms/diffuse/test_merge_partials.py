"""merge_partials against a pandas groupby reference, every column, both code paths."""

import numpy as np
import pandas as pd
import pytest

from dials_diffuse.algorithms.diffuse.integrate import merge_partials


def random_partials(seed, chunks=12, rows=3000):
    """Chunks in phi order (0.4 degrees each), random voxels; some seen 90 degrees later."""
    rng = np.random.default_rng(seed)
    parts = []
    for chunk in range(chunks):
        pixels = rng.integers(1, 40, rows)
        phi = 0.4 * chunk + rng.uniform(0, 0.4, rows)
        later = rng.random(rows) < 0.1
        phi[later] += 90.0
        parts.append(
            {
                "index": rng.integers(-6, 7, (rows, 3)).astype(np.int32),
                "pixels": pixels.astype(np.int64),
                "counts": rng.integers(0, 500, rows).astype(np.float64),
                "seconds": pixels * rng.uniform(0.05, 0.2),
                "phi_sum": pixels * phi,
                "iy_sum": pixels * rng.uniform(0, 1000, rows),
                "ix_sum": pixels * rng.uniform(0, 1000, rows),
            }
        )
    return parts


def reference(parts, subdivide, max_spread):
    """mdx2's procedure, written directly in pandas."""
    frame = pd.concat(
        [
            pd.DataFrame(
                {
                    "h": p["index"][:, 0],
                    "k": p["index"][:, 1],
                    "l": p["index"][:, 2],
                    **{key: p[key] for key in p if key != "index"},
                }
            )
            for p in parts
        ],
        ignore_index=True,
    )
    mean_phi = frame.phi_sum / frame.pixels
    first = mean_phi.groupby([frame.h, frame.k, frame.l]).transform("min")
    frame["n"] = np.floor((mean_phi - first) / max_spread).astype(int)
    sums = frame.groupby(["h", "k", "l", "n"]).sum().reset_index()
    return pd.DataFrame(
        {
            "h": sums.h / subdivide[0],
            "k": sums.k / subdivide[1],
            "l": sums.l / subdivide[2],
            "n": sums.n,
            "counts": sums.counts,
            "pixels": sums.pixels,
            "seconds": sums.seconds,
            "phi": sums.phi_sum / sums.pixels,
            "iy": sums.iy_sum / sums.pixels,
            "ix": sums.ix_sum / sums.pixels,
        }
    )


@pytest.mark.parametrize("shuffle_chunks", [False, True])
def test_every_column_equals_pandas(shuffle_chunks):
    parts = random_partials(seed=3)
    if shuffle_chunks:  # chunks out of phi order (e.g. Dask results re-ordered)
        parts = [parts[i] for i in np.random.default_rng(4).permutation(len(parts))]
    subdivide = (2, 3, 1)
    table = merge_partials(parts, subdivide, max_spread=1.0)
    expected = reference(parts, subdivide, 1.0)
    assert len(table) == len(expected)
    assert (expected.n > 0).sum() > 100  # the second observations are there
    got = table.to_frame()
    for name in ("h", "k", "l", "n", "counts", "pixels"):
        np.testing.assert_array_equal(got[name], expected[name].astype(got[name].dtype))
    for name in ("seconds", "phi", "iy", "ix"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6)
    assert table["counts"].dtype == np.int64 and table["pixels"].dtype == np.int64


def test_float_counts_kept_when_not_integer():
    parts = random_partials(seed=5, chunks=3, rows=200)
    for p in parts:
        p["counts"] = p["counts"] + 0.25
    table = merge_partials(parts, (1, 1, 1), 1.0, integer_counts=False)
    assert table["counts"].dtype == np.float64
    assert table["counts"].sum() == pytest.approx(sum(p["counts"].sum() for p in parts))
