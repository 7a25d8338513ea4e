"""Merged maps as MTZ and CSV, read back by independent readers (gemmi, pandas)."""

import numpy as np
import pandas as pd
import pytest
from cctbx import sgtbx

from dials_diffuse.algorithms.diffuse.supercell import (
    expand_to_p1,
    supercell_indices,
    supercell_symmetry,
)
from dials_diffuse.io.hkl_csv import read_hkl_csv, write_hkl_csv
from dials_diffuse.io.mtz import read_mtz, write_mtz
from dials_diffuse.util.errors import DataError

gemmi = pytest.importorskip("gemmi")

CELL = (34.0, 41.0, 52.0, 90.0, 90.0, 90.0)


def merged_table(subdivide, space_group, n=400, seed=0):
    """Asymmetric-unit voxels (cctbx's ASU of the Laue group) with random values."""
    from dials_diffuse.algorithms.diffuse.correct import map_to_asu

    rng = np.random.default_rng(seed)
    grid = rng.integers(-12, 13, size=(n, 3)) / np.asarray(subdivide, float)
    asu, _ = map_to_asu(grid, subdivide, space_group)
    asu = np.unique(asu, axis=0)
    frame = pd.DataFrame(
        {
            "h": asu[:, 0].astype(np.float32),
            "k": asu[:, 1].astype(np.float32),
            "l": asu[:, 2].astype(np.float32),
            "intensity": rng.normal(100, 30, len(asu)),
            "intensity_error": rng.uniform(1, 5, len(asu)),
            "count": rng.integers(1, 40, len(asu)).astype(np.int32),
            "s": rng.uniform(0.05, 0.5, len(asu)),
        }
    )
    frame.loc[3, "intensity"] = np.nan  # a voxel without a usable observation
    return frame


def test_mtz_read_by_gemmi_on_the_supercell(tmp_path):
    space_group = sgtbx.space_group_info("P 21 21 21").group()
    subdivide = (2, 3, 4)
    merged = merged_table(subdivide, space_group)
    written = write_mtz(
        tmp_path / "merged.mtz", merged, CELL, space_group, subdivide, 0.9
    )
    assert written["space_group"] == "P 2 2 2" and not written["expanded"]
    mtz = gemmi.read_mtz_file(str(tmp_path / "merged.mtz"))
    # The supercell: a 2, b 3, c 4; no screw axes (no absences at H = 1).
    assert mtz.cell.parameters == pytest.approx((68.0, 123.0, 208.0, 90, 90, 90))
    assert mtz.spacegroup.hm == "P 2 2 2"
    assert mtz.column_labels() == ["H", "K", "L", "I", "SIGI", "COUNT"]
    assert [c.type for c in mtz.columns] == ["H", "H", "H", "J", "Q", "I"]
    assert mtz.datasets[-1].wavelength == pytest.approx(0.9)
    data = pd.DataFrame(np.array(mtz, copy=False), columns=mtz.column_labels())
    expected = merged.dropna(subset=["intensity"])
    assert len(data) == len(expected) == written["reflections"]
    # Every voxel's integer index is n x its fractional one, its values kept.
    got = data.set_index(["H", "K", "L"]).sort_index()
    index = pd.MultiIndex.from_arrays(
        [(expected[c] * n).round().astype(int) for c, n in zip("hkl", subdivide)],
        names=["H", "K", "L"],
    )
    want = expected.set_index(index).sort_index()
    np.testing.assert_array_equal(got.index.to_numpy(), want.index.to_numpy())
    np.testing.assert_allclose(got["I"], want["intensity"], rtol=1e-6)
    np.testing.assert_allclose(got["SIGI"], want["intensity_error"], rtol=1e-6)
    np.testing.assert_array_equal(got["COUNT"], want["count"])
    # The resolution is the same on both descriptions: d(H) = d(h).
    row = expected.iloc[10]
    hkl = [int(round(row[c] * n)) for c, n in zip("hkl", subdivide)]
    true_s = np.sqrt(sum((row[c] / a) ** 2 for c, a in zip("hkl", CELL[:3])))
    assert mtz.cell.calculate_d(hkl) == pytest.approx(1 / true_s)
    # Our own reader gives the same table.
    ours = read_mtz(tmp_path / "merged.mtz")
    assert ours.attrs["space_group"] == "P 2 2 2"
    np.testing.assert_allclose(
        ours.sort_values(["H", "K", "L"])["I"], got["I"], rtol=1e-6
    )


def test_tetragonal_point_group_and_p1_expansion(tmp_path):
    """P 41 21 2: P 4 2 2 with equal subdivide in a and b; P 1 (expanded) if not."""
    space_group = sgtbx.space_group_info("P 41 21 2").group()
    cell = (40.0, 40.0, 60.0, 90.0, 90.0, 90.0)
    merged = merged_table((2, 2, 2), space_group).dropna()
    written = write_mtz(tmp_path / "a.mtz", merged, cell, space_group, (2, 2, 2))
    assert written["space_group"] == "P 4 2 2"
    assert gemmi.read_mtz_file(str(tmp_path / "a.mtz")).spacegroup.hm == "P 4 2 2"
    # subdivide 2,4,2: the 4-fold would take K = 4k to H = 2k, off the grid.
    symmetry, expand = supercell_symmetry(cell, space_group, (2, 4, 2))
    assert expand and str(symmetry.space_group_info()) == "P 1"
    written = write_mtz(tmp_path / "b.mtz", merged, cell, space_group, (2, 4, 2))
    assert written["expanded"] and written["space_group"] == "P 1"
    mtz = gemmi.read_mtz_file(str(tmp_path / "b.mtz"))
    assert mtz.spacegroup.hm == "P 1"
    # Each voxel's proper mates (4 2 2: 8) up to Friedel pairs, special
    # positions once: gemmi sees the map whole.
    mates, rows = expand_to_p1(merged[["h", "k", "l"]].to_numpy(float), space_group)
    assert len(merged) < mtz.nreflections == len(mates) <= 8 * len(merged)
    data = np.array(mtz, copy=False)
    lookup = {tuple(np.rint(r[:3]).astype(int)): r[3] for r in data}
    for mate, row in zip(mates[:50], rows[:50]):
        key = tuple(np.rint(mate * [2, 4, 2]).astype(int))
        friend = tuple(-v for v in key)
        value = lookup.get(key, lookup.get(friend))
        assert value == pytest.approx(merged["intensity"].iloc[row], rel=1e-6)


def test_csv_read_by_pandas(tmp_path):
    space_group = sgtbx.space_group_info("P 21 21 21").group()
    merged = merged_table((2, 2, 2), space_group)
    rows = write_hkl_csv(tmp_path / "merged.csv", merged, (2, 2, 2))
    table = pd.read_csv(tmp_path / "merged.csv")
    expected = merged.dropna(subset=["intensity"])
    assert rows == len(table) == len(expected)
    assert list(table.columns) == [
        "h", "k", "l", "H", "K", "L", "intensity", "intensity_error", "count", "s",
    ]  # fmt: skip
    np.testing.assert_allclose(table["h"], expected["h"])
    np.testing.assert_array_equal(table["H"], np.rint(expected["h"] * 2))
    np.testing.assert_allclose(table["intensity"], expected["intensity"], rtol=1e-7)
    np.testing.assert_array_equal(table["count"], expected["count"])
    assert read_hkl_csv(tmp_path / "merged.csv").equals(table)


def test_bad_tables_and_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="off the 1/subdivide grid"):
        supercell_indices(np.array([[0.5, 0.25, 0.0]]), (2, 2, 2), "x.nxs")
    (tmp_path / "not.mtz").write_text("hello")
    with pytest.raises(DataError, match="not.mtz: not an MTZ file"):
        read_mtz(tmp_path / "not.mtz")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="other.csv: no h, k, l"):
        read_hkl_csv(tmp_path / "other.csv")
