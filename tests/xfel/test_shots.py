"""Shots: selection by index and tag, dark shots, masks from files."""

import pickle

import numpy as np
import pytest
from dials.array_family import flex
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.algorithms.xfel.shots import Shots, load_mask_file
from dials_diffuse.util.errors import DataError


@pytest.fixture(scope="module")
def shots(sacla_file):
    loaded = Shots(ExperimentListFactory.from_filenames([str(sacla_file.path)]))
    yield loaded
    loaded.close()


def test_tags_dark_and_selection(shots, sacla_file):
    np.testing.assert_array_equal(shots.tags, sacla_file.tags)
    assert shots.dark.sum() == sacla_file.n_dark
    assert shots.select() == list(range(sacla_file.n_dark, sacla_file.n_shots))
    assert shots.select(include_dark=True) == list(range(sacla_file.n_shots))
    assert shots.select(shots=[5, 1, 3]) == [3, 5]  # dark shot 1 left out
    assert shots.select(tags=[int(sacla_file.tags[4])]) == [4]
    with pytest.raises(DataError, match="shot 99 does not exist"):
        shots.select(shots=[99])
    with pytest.raises(DataError, match="tag 1 is not among"):
        shots.select(tags=[1])
    with pytest.raises(DataError, match="no shots selected"):
        shots.select(shots=[0, 1])


def test_blocks_stream_the_shots(shots, sacla_file):
    blocks = list(shots.blocks(range(5), size=2))
    assert [b[0] for b in blocks] == [[0, 1], [2, 3], [4]]
    data, valid = shots.read(3)
    np.testing.assert_array_equal(blocks[1][1][1], data)
    assert data.shape == (sacla_file.shape[0] * sacla_file.shape[1],)


def test_mask_files(tmp_path, sacla_file):
    shape = sacla_file.shape
    mask = np.ones(shape, dtype=bool)
    mask[3:5, 7] = False
    np.save(tmp_path / "mask.npy", mask.astype(np.int8))
    with open(tmp_path / "mask.pickle", "wb") as handle:
        pickle.dump((flex.bool(mask),), handle)
    for name in ("mask.npy", "mask.pickle"):
        (loaded,) = load_mask_file(tmp_path / name, [shape])
        np.testing.assert_array_equal(loaded, mask)
    with pytest.raises(DataError, match="does not match the detector"):
        load_mask_file(tmp_path / "mask.npy", [(5, 5)])
    (tmp_path / "junk.pickle").write_text("junk")
    with pytest.raises(DataError, match="junk.pickle: not a readable DIALS mask"):
        load_mask_file(tmp_path / "junk.pickle", [shape])
    experiments = ExperimentListFactory.from_filenames([str(sacla_file.path)])
    masked = Shots(experiments, external_mask=[mask])
    _, valid = masked.read(4)
    np.testing.assert_array_equal(valid.reshape(shape), mask)
    masked.close()


def test_geometry_overrides(sacla_file):
    from dials_diffuse.algorithms.xfel.shots import override_geometry

    experiments = ExperimentListFactory.from_filenames([str(sacla_file.path)])
    updated = override_geometry(
        experiments, distance=61.5, wavelength=1.1, beam_centre=(150.25, 140.5)
    )
    for experiment in updated:
        panel, beam = experiment.detector[0], experiment.beam
        assert panel.get_distance() == pytest.approx(61.5)
        assert beam.get_wavelength() == pytest.approx(1.1)
        assert panel.get_beam_centre_px(beam.get_s0()) == pytest.approx((150.25, 140.5))
    # The input is untouched.
    assert experiments[0].detector[0].get_distance() == pytest.approx(50.0)
    assert override_geometry(experiments) is experiments
