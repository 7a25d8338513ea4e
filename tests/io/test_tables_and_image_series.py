"""NeXus tables and data.nxs: round trips, layout, and errors naming the file."""

import h5py
import numpy as np
import pytest

from dials_diffuse.images.source import ImageSource, output_buffer
from dials_diffuse.io.image_series import NexusDataSource, write_image_series
from dials_diffuse.io.tables import Table, load_table, table_names, write_tables
from dials_diffuse.util.errors import DataError


def test_table_round_trip_to_pandas(tmp_path):
    columns = {
        "h": np.array([0.0, 0.5, -1.0], dtype=np.float32),
        "n": np.array([0, 1, 0], dtype=np.int32),
        "counts": np.array([3, 4, 5], dtype=np.int64),
    }
    path = tmp_path / "t.nxs"
    write_tables(
        path, [Table("hkl_table", columns, {"subdivide": np.array([2, 1, 1])})]
    )
    with h5py.File(path, "r") as handle:
        assert handle.attrs["creator"].startswith("dials-diffuse")
        assert handle["entry/hkl_table"].attrs["NX_class"] == "NXdata"
    table = load_table(path)
    assert table_names(path) == ["hkl_table"]
    frame = table.to_frame()
    assert list(frame.columns) == ["h", "n", "counts"]
    np.testing.assert_array_equal(frame["counts"], [3, 4, 5])
    assert frame["h"].dtype == np.float32
    np.testing.assert_array_equal(table.attrs["subdivide"], [2, 1, 1])
    assert len(table) == 3


def test_table_errors_name_the_file(tmp_path):
    path = tmp_path / "t.nxs"
    write_tables(path, [Table("peaks", {"a": np.arange(3)})])
    with pytest.raises(DataError, match="t.nxs: has no table /entry/hkl_table"):
        load_table(path)
    junk = tmp_path / "junk.nxs"
    junk.write_text("not hdf5")
    with pytest.raises(DataError, match="junk.nxs: not a readable HDF5 file"):
        load_table(junk)
    with pytest.raises(ValueError, match="differ in length"):
        Table("x", {"a": np.arange(3), "b": np.arange(2)})


class ArraySource(ImageSource):
    """An in-memory image source with a known mask."""

    def __init__(self, data, valid):
        self.data, self.valid = data, valid

    n_frames = property(lambda self: self.data.shape[0])
    panel_shapes = property(lambda self: [self.data.shape[1:]])
    dtype = property(lambda self: self.data.dtype)
    exposure_times = property(lambda self: np.full(self.data.shape[0], 0.1))

    @property
    def image_numbers(self):
        return np.arange(5, 5 + self.data.shape[0])

    def static_mask(self, panel=0):
        return self.valid[0]

    def read(self, chunk, out=None):
        index = (chunk.frames, chunk.rows, chunk.columns)
        out = output_buffer(chunk.shape, self.dtype, out)
        out[...] = self.data[index]
        return out, self.valid[index]


def test_image_series_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=(7, 30, 40)).astype(np.uint16)
    valid = rng.random(data.shape) > 0.05
    source = ArraySource(data, valid)
    path = tmp_path / "data.nxs"
    phi = np.arange(7) * 0.1 + 0.05
    summary = write_image_series(
        path, source, phi, chunks=(3, 16, 16), frame_range=(1, 6)
    )
    assert summary["frames"] == 5
    assert summary["masked_pixel_frames"] == int((~valid[1:6]).sum())
    with h5py.File(path, "r") as handle:
        group = handle["entry/image_series"]
        assert group.attrs["signal"] == "data"
        assert list(group.attrs["axes"]) == ["phi", "iy", "ix"]
        assert group["data"].chunks == (3, 16, 16)
        assert group["data"].compression == "gzip"
        assert group["data"].dtype == np.int32
        np.testing.assert_allclose(group["phi"][()], phi[1:6])
    back = NexusDataSource(path)
    assert back.n_frames == 5 and back.panel_shapes == [(30, 40)]
    np.testing.assert_array_equal(back.image_numbers, [6, 7, 8, 9, 10])
    np.testing.assert_allclose(back.exposure_times, 0.1)
    chunk = next(back.chunks(frames=5))
    pixels, ok = back.read(chunk)
    np.testing.assert_array_equal(ok, valid[1:6])
    np.testing.assert_array_equal(pixels[ok], data[1:6][valid[1:6]])
    assert np.all(pixels[~ok] == -1)


@pytest.mark.parametrize("compression", ["gzip", "bslz4"])
@pytest.mark.parametrize("nproc", [1, 3])
def test_image_series_written_by_workers_reads_back_in_h5py(
    tmp_path, compression, nproc
):
    """Chunks compressed in worker threads: h5py (HDF5's own filters) reads the pixels."""
    import hdf5plugin  # noqa: F401  (bslz4 filter for h5py)

    from dials_diffuse.util.parallel import ParallelMap

    rng = np.random.default_rng(nproc)
    data = np.abs(rng.normal(50, 30, size=(23, 37, 70)))  # counts: >= 0
    valid = rng.random(data.shape) > 0.05
    data[~valid & (rng.random(data.shape) < 0.5)] = np.nan
    expected = np.where(valid, data, -1).astype(np.float32)[2:21]
    path = tmp_path / "data.nxs"
    with ParallelMap(nproc=nproc) as pmap:
        summary = write_image_series(
            path,
            ArraySource(data, valid),
            np.arange(23) * 0.1,
            chunks=(4, 16, 32),
            frame_range=(2, 21),
            compression=compression,
            pmap=pmap,
        )
    assert summary["masked_pixel_frames"] == int((~valid[2:21]).sum())
    with h5py.File(path, "r") as handle:
        stored = handle["entry/image_series/data"]
        assert stored.dtype == np.float32 and stored.chunks == (4, 16, 32)
        if compression == "gzip":  # standard filters: no plugin needed
            assert stored.compression == "gzip" and stored.shuffle
        np.testing.assert_array_equal(stored[()], expected)
    pixels, ok = NexusDataSource(path).read(next(NexusDataSource(path).chunks(19)))
    np.testing.assert_array_equal(pixels, expected)
    np.testing.assert_array_equal(ok, valid[2:21])


def test_image_series_reader_names_bad_file(tmp_path):
    path = tmp_path / "other.nxs"
    write_tables(path, [Table("peaks", {"a": np.arange(3)})])
    with pytest.raises(DataError, match="other.nxs: no /entry/image_series/data"):
        NexusDataSource(path)
