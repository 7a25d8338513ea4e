"""SACLASource reads DataConvert files by tag, with metadata and dark shots."""

import h5py
import numpy as np
import pytest

from dials_diffuse.images.sacla import SACLASource, is_sacla_file
from dials_diffuse.util.errors import DataError


def test_metadata(sacla_file):
    with SACLASource(sacla_file.path) as source:
        assert source.n_frames == sacla_file.n_shots
        np.testing.assert_array_equal(source.tags, sacla_file.tags)
        assert source.photon_energy_ev == pytest.approx(sacla_file.energy_ev)
        assert source.wavelength == pytest.approx(12398.4198 / 8610.0, rel=1e-6)
        assert source.pixel_size_mm == pytest.approx((0.05, 0.05))
        assert source.distance_mm == pytest.approx(50.0)
        assert source.beam_centre_px == pytest.approx(sacla_file.beam_centre)
        assert source.panel_shapes == [sacla_file.shape]
        expected_dark = np.arange(sacla_file.n_shots) < sacla_file.n_dark
        np.testing.assert_array_equal(source.dark, expected_dark)


def test_shots_match_the_file(sacla_file):
    with SACLASource(sacla_file.path) as source, h5py.File(sacla_file.path) as f:
        group = f["run_178884/detector_2d_assembled_1"]
        data, valid = source.read_shots(3, 6)
        for i in range(3):
            tag = sacla_file.tags[3 + i]
            np.testing.assert_array_equal(
                data[i], group[f"tag_{tag}/detector_data"][()]
            )
        assert valid.all()


def test_tags_in_acquisition_order_not_name_order(tmp_path):
    """tag_100 sorts before tag_98 by name; the tag list gives the real order."""
    path = tmp_path / "order.h5"
    with h5py.File(path, "w") as f:
        f["file_info/run_number_list"] = [5]
        run = f.create_group("run_5")
        run["event_info/tag_number_list"] = [98, 100, 102]
        run["run_info/sacla_config/photon_energy_in_eV"] = 10000.0
        d = run.create_group("detector_2d_assembled_1")
        d["detector_info/pixel_size_in_micro_meter"] = [50.0, 50.0]
        for value, tag in enumerate([98, 100, 102]):
            d[f"tag_{tag}/detector_data"] = np.full((4, 5), value, np.float32)
        d["tag_100/detector_status"] = np.eye(4, 5, dtype=np.int32)
    with SACLASource(path) as source:
        np.testing.assert_array_equal(source.tags, [98, 100, 102])
        data, valid = source.read_shots(0, 3)
        np.testing.assert_array_equal(data[:, 0, 0], [0, 1, 2])
        assert not source.dark.any()
        assert source.distance_mm is None and source.beam_centre_px is None
        np.testing.assert_array_equal(valid[1], np.eye(4, 5) == 0)
        assert valid[0].all() and valid[2].all()


def test_not_sacla(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros(3)
    assert not is_sacla_file(path)
    with pytest.raises(DataError, match="not a SACLA DataConvert file"):
        SACLASource(path)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    assert not is_sacla_file(text)
    with pytest.raises(DataError, match="text.h5"):
        SACLASource(text)


def test_missing_energy_is_a_user_error(tmp_path):
    path = tmp_path / "incomplete.h5"
    with h5py.File(path, "w") as f:
        f["file_info/run_number_list"] = [5]
        d = f.create_group("run_5/detector_2d_assembled_1")
        d["tag_1/detector_data"] = np.zeros((4, 5), np.float32)
    with pytest.raises(DataError, match="incomplete SACLA metadata"):
        SACLASource(path)


def test_image_source_chunks(sacla_file):
    """The ImageSource interface: chunks of frames x rows x columns."""
    with SACLASource(sacla_file.path) as source:
        chunks = list(source.chunks(frames=5, rows=100))
        assert len(chunks) == 3 * 3  # 12 shots in 5s, 300 rows in 100s
        data, valid = source.read(chunks[4])
        assert data.shape == (5, 100, 320) and valid.all()
        full, _ = source.read_shots(5, 10)
        np.testing.assert_array_equal(data, full[:, 100:200])
        assert source.static_mask().shape == sacla_file.shape
