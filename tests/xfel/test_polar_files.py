"""polar.h5: chunks compressed in worker threads read back exactly through HDF5."""

import h5py
import numpy as np
import pytest

from dials_diffuse.io.polar_files import (
    PolarFileWriter,
    compress_polar_images,
    open_polar_file,
)
from dials_diffuse.util.errors import DataError


def test_precompressed_chunks_read_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    polar = rng.normal(1.0, 0.2, (5, 7, 12)).astype(np.float32)
    valid = rng.random((5, 7, 12)) > 0.1
    q = np.linspace(0.1, 0.7, 7)
    geometry = {"wavelength": 1.0, "method": "bilinear"}
    path = tmp_path / "polar.h5"
    tags, dark = np.arange(100, 105), np.array([1, 0, 0, 0, 0], bool)
    with PolarFileWriter(path, q, 12, tags, geometry, False) as writer:
        writer.write(0, polar[:2], valid[:2])  # compressed by HDF5
        writer.write(2, polar[2:], valid[2:], compress_polar_images(polar[2:]))
        writer.finish(dark, np.arange(5.0), np.full(5, 1.1))
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["entry/polar/data"][()], polar)
        assert f["entry/polar/data"].compression == "gzip"
        assert f["entry/polar/data"].shuffle
    opened = open_polar_file(path)
    image, ok = opened.read(3)
    np.testing.assert_array_equal(image, polar[3])
    np.testing.assert_array_equal(ok, valid[3])
    np.testing.assert_array_equal(opened.tags, tags)
    np.testing.assert_array_equal(opened.dark, dark)
    assert opened.phi[3] == pytest.approx(90.0)
    opened.close()


def test_not_a_polar_file(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["entry/x"] = 1
    with pytest.raises(DataError, match="not a polar file"):
        open_polar_file(path)
