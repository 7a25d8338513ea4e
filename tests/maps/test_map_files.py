"""Maps read from every format: voxel tables, NeXus maps (ours, mdx2's), MTZ, CCP4."""

import h5py
import numpy as np
import pandas as pd
import pytest

from dials_diffuse.algorithms.diffuse.maps import (
    default_limits,
    grid_from_table,
    write_map_ccp4,
    write_map_nexus,
)
from dials_diffuse.io.map_files import read_map, write_map_layers
from dials_diffuse.io.tables import Table, write_tables
from dials_diffuse.util.errors import DataError

CELL = (34.0, 41.0, 52.0, 90.0, 90.0, 90.0)


@pytest.fixture(scope="module")
def asu_table():
    """An asymmetric-unit voxel table of P212121 (h, k, l >= 0), subdivide 2, split halves."""
    rng = np.random.default_rng(0)
    hkl = np.stack(np.meshgrid(*[np.arange(0, 7) / 2] * 3, indexing="ij"), -1)
    hkl = hkl.reshape(-1, 3)
    frame = pd.DataFrame(
        {
            "h": hkl[:, 0],
            "k": hkl[:, 1],
            "l": hkl[:, 2],
            "intensity": rng.uniform(1, 10, len(hkl)),
            "intensity_error": rng.uniform(0.1, 1, len(hkl)),
            "intensity_1": rng.uniform(1, 10, len(hkl)),
            "intensity_2": rng.uniform(1, 10, len(hkl)),
        }
    )
    return frame


def _expected(frame, column="intensity"):
    from cctbx import sgtbx

    group = sgtbx.space_group_info("P 21 21 21").group()
    limits = default_limits(frame[["h", "k", "l"]].to_numpy(), group)
    return grid_from_table(frame, column, (2, 2, 2), group, limits)


def test_merged_table_is_expanded_with_errors_and_halves(asu_table, tmp_path):
    path = tmp_path / "merged.nxs"
    attrs = {"subdivide": np.array([2, 2, 2]), "space_group": "P 21 21 21"}
    write_tables(path, [Table.from_frame("hkl_table", asu_table, attrs)])
    recmap = read_map(path, unit_cell=CELL)
    axes, expected = _expected(asu_table)
    assert recmap.shape == (13, 13, 13)
    assert np.array_equal(recmap.values, expected, equal_nan=True)
    assert set(recmap.layers) == {
        "intensity",
        "intensity_error",
        "intensity_1",
        "intensity_2",
    }
    # (-1.5, 2, -0.5) takes the value of the asymmetric-unit voxel (1.5, 2, 0.5).
    index = tuple(
        int(np.flatnonzero(np.isclose(a, v))[0]) for a, v in zip(axes, (-1.5, 2, -0.5))
    )
    row = asu_table[(asu_table.h == 1.5) & (asu_table.k == 2) & (asu_table.l == 0.5)]
    assert recmap.layers["intensity_2"][index] == pytest.approx(
        row["intensity_2"].item()
    )
    assert recmap.space_group == "P 21 21 21" and recmap.unit_cell == CELL


def test_map_nexus_ccp4_and_analysis_round_trip(asu_table, tmp_path):
    axes, grid = _expected(asu_table)
    write_map_nexus(
        tmp_path / "map.nxs", axes, grid, "intensity", {"subdivide": [2, 2, 2]}
    )
    write_map_ccp4(tmp_path / "map.ccp4", axes, grid, [2, 2, 2], "test")
    from_nexus = read_map(tmp_path / "map.nxs")
    assert np.allclose(from_nexus.values, grid, equal_nan=True, rtol=1e-6)
    assert all(np.allclose(a, b) for a, b in zip(from_nexus.axes, axes))
    from_ccp4 = read_map(tmp_path / "map.ccp4", unit_cell=CELL)
    assert from_ccp4.subdivide.tolist() == [2, 2, 2]
    assert all(np.allclose(a, b) for a, b in zip(from_ccp4.axes, axes))
    # CCP4 has no NaN: dials.diffuse.map writes the mean for empty voxels.
    filled = np.where(np.isfinite(grid), grid, np.nanmean(grid))
    assert np.allclose(from_ccp4.values, filled, rtol=1e-6)
    # Our own analysis file: its intensity group, with cell and space group.
    from_nexus.unit_cell, from_nexus.space_group = CELL, "P 21 21 21"
    from_nexus.layers["anisotropic"] = grid - 1
    write_map_layers(
        tmp_path / "analysis.nxs",
        from_nexus,
        ["intensity", "anisotropic"],
        "anisotropic",
    )
    again = read_map(tmp_path / "analysis.nxs")
    assert np.allclose(again.values, grid, equal_nan=True, rtol=1e-6)
    assert again.unit_cell == CELL and again.space_group == "P 21 21 21"
    assert np.allclose(
        read_map(tmp_path / "analysis.nxs", column="anisotropic").values,
        grid - 1,
        equal_nan=True,
        rtol=1e-6,
    )


def test_mdx2_style_nexus_map(tmp_path):
    # mdx2's map.nxs: NXdata with signal "data" and axes h, k, l (no subdivide).
    axes = [np.arange(-4, 5) / 4, np.arange(-2, 3) / 2, np.arange(0, 3) / 1]
    data = np.arange(9 * 5 * 3, dtype=float).reshape(9, 5, 3)
    with h5py.File(tmp_path / "mdx2.nxs", "w") as handle:
        group = handle.create_group("entry/intensity")
        group.attrs.update(
            {"NX_class": "NXdata", "signal": "data", "axes": ["h", "k", "l"]}
        )
        group["data"] = data
        for name, axis in zip("hkl", axes):
            group[name] = axis
    recmap = read_map(tmp_path / "mdx2.nxs", unit_cell=CELL)
    assert recmap.subdivide.tolist() == [4, 2, 1]
    assert np.array_equal(recmap.values, data)


def test_mtz_in_mdx2_convention(asu_table, tmp_path):
    # mdx2's to_mtz: indices times subdivide, the cell times subdivide.
    from cctbx import crystal, miller
    from cctbx.array_family import flex

    supercell = tuple(v * 2 for v in CELL[:3]) + CELL[3:]
    symmetry = crystal.symmetry(unit_cell=supercell, space_group_symbol="P 21 21 21")
    indices = flex.miller_index(
        [
            tuple(int(round(2 * v)) for v in row)
            for row in asu_table[["h", "k", "l"]].to_numpy()
        ]
    )
    array = miller.array(
        miller.set(symmetry, indices, anomalous_flag=False),
        data=flex.double(asu_table["intensity"].to_numpy()),
        sigmas=flex.double(asu_table["intensity_error"].to_numpy()),
    ).set_observation_type_xray_intensity()
    array.as_mtz_dataset(column_root_label="IMEAN").mtz_object().write(
        str(tmp_path / "map.mtz")
    )
    recmap = read_map(tmp_path / "map.mtz", column="IMEAN", unit_cell=CELL)
    axes, expected = _expected(asu_table)
    assert recmap.subdivide.tolist() == [2, 2, 2]
    assert np.allclose(recmap.values, expected, equal_nan=True)
    assert np.allclose(
        recmap.layers["intensity_error"],
        _expected(asu_table, "intensity_error")[1],
        equal_nan=True,
    )
    assert recmap.unit_cell == pytest.approx(CELL)
    with pytest.raises(DataError, match="whole multiple"):
        read_map(tmp_path / "map.mtz", unit_cell=(30, 41, 52, 90, 90, 90))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a map", "not a readable HDF5 file"),
        (None, "neither a voxel table"),
    ],
)
def test_unreadable_inputs_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken.nxs"
    if content is None:
        with h5py.File(path, "w") as handle:
            handle["entry/other"] = np.zeros(3)
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        read_map(path)
    assert "broken.nxs" in str(error.value)
    with pytest.raises(DataError, match="not a readable MTZ"):
        (tmp_path / "broken.mtz").write_bytes(b"xx")
        read_map(tmp_path / "broken.mtz")
    with pytest.raises(DataError, match="not a readable CCP4"):
        (tmp_path / "broken.ccp4").write_bytes(b"xx")
        read_map(tmp_path / "broken.ccp4")
