"""NexusDataSource: our data.nxs layout, written here with h5py as import_data does."""

import pickle

import h5py
import numpy as np
import pytest

from dials_diffuse import __version__
from dials_diffuse.images.source import Chunk
from dials_diffuse.io.image_series import NexusDataSource
from dials_diffuse.util.errors import DataError


def write_data_nxs(path, data, phi, exposure_times):
    """The documented layout (dials.diffuse.import_data writes the same)."""
    with h5py.File(path, "w") as f:
        f.attrs["creator"] = f"dials-diffuse {__version__}"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        series = entry.create_group("image_series")
        series.attrs.update(NX_class="NXdata", signal="data", axes=["phi", "iy", "ix"])
        series.create_dataset(
            "data", data=data, chunks=(1,) + data.shape[1:], compression="gzip"
        )
        series.create_dataset("phi", data=phi).attrs["units"] = "degree"
        series.create_dataset("iy", data=np.arange(data.shape[1]))
        series.create_dataset("ix", data=np.arange(data.shape[2]))
        series.create_dataset("exposure_times", data=exposure_times).attrs["units"] = (
            "s"
        )


@pytest.fixture
def data_nxs(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.poisson(5, size=(7, 40, 30)).astype(np.int32)
    data[:, 10:12, :] = -1  # a masked gap
    data[4, 20, 20] = -1  # a pixel masked in one frame
    phi = 10 + 0.1 * (np.arange(7) + 0.5)
    times = np.full(7, 0.05)
    path = tmp_path / "data.nxs"
    write_data_nxs(path, data, phi, times)
    return path, data, phi, times


def test_reads_layout(data_nxs):
    path, data, phi, times = data_nxs
    source = NexusDataSource(path)
    assert source.n_frames == 7
    assert source.panel_shapes == [(40, 30)]
    assert source.dtype == np.int32
    np.testing.assert_array_equal(source.image_numbers, np.arange(1, 8))
    np.testing.assert_allclose(source.angles_deg, phi)
    np.testing.assert_allclose(source.exposure_times, times)
    assert source.static_mask().all()


def test_chunks_of_any_shape_reassemble(data_nxs):
    path, data, _, _ = data_nxs
    source = NexusDataSource(path)
    out = np.full(data.shape, -99, dtype=np.int32)
    valid = np.zeros(data.shape, dtype=bool)
    for chunk in source.chunks(frames=3, rows=15, columns=7):
        block, mask = source.read(chunk)
        out[chunk.frames, chunk.rows, chunk.columns] = block
        valid[chunk.frames, chunk.rows, chunk.columns] = mask
    np.testing.assert_array_equal(out, data)
    np.testing.assert_array_equal(valid, data != -1)
    assert not valid[4, 20, 20] and valid[3, 20, 20]


def test_pickles_by_path_for_dask(data_nxs):
    path, data, _, _ = data_nxs
    source = NexusDataSource(path)
    chunk = Chunk(0, slice(2, 4), slice(5, 9), slice(0, 30))
    source.read(chunk)
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy.read(chunk)[0], data[2:4, 5:9])


def test_bad_files_are_user_errors(tmp_path, data_nxs):
    with pytest.raises(DataError, match="missing.nxs: no such file"):
        NexusDataSource(tmp_path / "missing.nxs")
    text = tmp_path / "text.nxs"
    text.write_text("not hdf5")
    with pytest.raises(DataError, match="text.nxs: not a readable HDF5 file"):
        NexusDataSource(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["entry/data/data"] = np.zeros((2, 3, 3))
    with pytest.raises(DataError, match="other.h5: no /entry/image_series/data"):
        NexusDataSource(other)
    short = tmp_path / "short.nxs"
    write_data_nxs(short, np.zeros((3, 4, 4), np.int32), np.zeros(2), np.ones(3))
    with pytest.raises(
        DataError, match=r"short.nxs: /entry/image_series/phi has shape \(2,\)"
    ):
        NexusDataSource(short)


def test_truncated_file_is_a_user_error(data_nxs, tmp_path):
    path, _, _, _ = data_nxs
    cut = tmp_path / "cut.nxs"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.nxs"):
        source = NexusDataSource(cut)
        for chunk in source.chunks():
            source.read(chunk)


def test_optional_image_numbers_and_chunk_shape(tmp_path):
    path = tmp_path / "data.nxs"
    write_data_nxs(path, np.zeros((3, 4, 5), np.int32), np.arange(3.0), np.ones(3))
    with h5py.File(path, "a") as f:
        f["entry/image_series/image_numbers"] = [11, 12, 13]
    source = NexusDataSource(path)
    np.testing.assert_array_equal(source.image_numbers, [11, 12, 13])
    assert source.chunk_shape == (1, 4, 5)
