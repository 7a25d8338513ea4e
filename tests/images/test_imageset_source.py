"""ImagesetSource: any dxtbx imageset streamed as chunks, against dxtbx itself."""

import shutil

import numpy as np
import pytest
from dials.array_family import flex
from dxtbx.format.image import ImageBool
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.images.imageset import ImagesetSource
from dials_diffuse.images.source import Chunk
from dials_diffuse.util.errors import DataError


def load_sweep(directory, n=None):
    files = sorted(directory.glob("*.cbf"))[:n]
    return ExperimentListFactory.from_filenames([str(f) for f in files])[0].imageset


@pytest.fixture(scope="module")
def cysteine(l_cysteine):
    return load_sweep(l_cysteine)


def test_metadata_from_scan(cysteine):
    source = ImagesetSource(cysteine)
    scan = cysteine.get_scan()
    assert source.n_frames == 15
    assert source.panel_shapes == [(1679, 1475)]
    assert source.dtype == np.int32
    np.testing.assert_array_equal(source.image_numbers, np.arange(1, 16))
    np.testing.assert_allclose(source.exposure_times, scan.get_exposure_times())
    start, width = scan.get_oscillation()
    np.testing.assert_allclose(source.angles_deg, start + (np.arange(15) + 0.5) * width)
    assert width == pytest.approx(0.1)


def test_chunks_reassemble_dxtbx_frames_and_masks(cysteine):
    """Any chunk shape reproduces get_raw_data and get_mask (incl. trusted range)."""
    source = ImagesetSource(cysteine)
    frames = (3, 6)
    data = np.zeros((3, 1679, 1475), dtype=np.int32)
    valid = np.zeros((3, 1679, 1475), dtype=bool)
    for chunk in source.chunks(frames=2, rows=700, columns=600, frame_range=frames):
        block, mask = source.read(chunk)
        assert block.shape == mask.shape == chunk.shape
        where = (
            slice(chunk.frames.start - 3, chunk.frames.stop - 3),
            chunk.rows,
            chunk.columns,
        )
        data[where] = block
        valid[where] = mask
    for i, index in enumerate(range(*frames)):
        np.testing.assert_array_equal(
            data[i], cysteine.get_raw_data(index)[0].as_numpy_array()
        )
        np.testing.assert_array_equal(
            valid[i], cysteine.get_mask(index)[0].as_numpy_array()
        )


def test_static_mask_is_dials_mask_without_trusted_range(cysteine):
    """get_mask(i) == static mask & dxtbx's trusted-range test, and gaps are static."""
    source = ImagesetSource(cysteine)
    static = source.static_mask(0)
    panel = cysteine.get_detector()[0]
    data, valid = source.read(Chunk(0, slice(0, 1), slice(0, 1679), slice(0, 1475)))
    # The installed dxtbx's own rule (exclusive before dxtbx 3.12, inclusive since).
    trusted = panel.get_trusted_range_mask(flex.int(data[0])).as_numpy_array()
    np.testing.assert_array_equal(valid[0], static & trusted)
    # The frame has pixels at the trusted range's lower end (-1 in the gaps,
    # PILATUS's trusted minimum -1 or 0), so the test tells the rules apart.
    low, _ = panel.get_trusted_range()
    assert (data[0] == low).any() or (data[0] == low + 1).any()
    # PILATUS 2M: 195-pixel modules separated by 17-pixel gaps.
    assert not static[195:212].any()
    assert static[:195, :487].all()
    assert (~static).sum() > 100_000


def test_external_mask_is_used(l_cysteine):
    imageset = load_sweep(l_cysteine, 2)
    mask = flex.bool(flex.grid(1679, 1475), True)
    mask[100 * 1475 + 200] = False
    imageset.external_lookup.mask.data = ImageBool(mask)
    source = ImagesetSource(imageset)
    assert not source.static_mask(0)[100, 200]
    _, valid = source.read(Chunk(0, slice(1, 2), slice(99, 102), slice(199, 202)))
    assert not valid[0, 1, 1] and valid[0, 0, 0]


def test_unreadable_image_is_a_user_error(l_cysteine, tmp_path):
    for path in sorted(l_cysteine.glob("*.cbf"))[:2]:
        shutil.copy(path, tmp_path)
    imageset = load_sweep(tmp_path)
    broken = tmp_path / "l-cyst_01_00002.cbf"
    broken.write_bytes(broken.read_bytes()[:5000])  # header intact, data cut
    source = ImagesetSource(imageset)
    source.read(Chunk(0, slice(0, 1), slice(0, 10), slice(0, 10)))
    with pytest.raises(DataError, match="l-cyst_01_00002.cbf: cannot read image 2"):
        source.read(Chunk(0, slice(1, 2), slice(0, 10), slice(0, 10)))


def test_stills_imageset(tmp_path):
    """Stills (no scan): NaN angles and exposure times, 1-based image numbers."""
    from dials_diffuse.simulate.eiger_files import write_dectris_files

    rng = np.random.default_rng(0)
    images = [rng.poisson(3, (40, 50)).astype(np.uint16) for _ in range(3)]
    images[1][5, 7] = 65535  # gap/overload marker
    master = write_dectris_files(
        tmp_path,
        "stills",
        iter(images),
        n_frames=3,
        shape=(40, 50),
        omega_increment=None,
        countrate_cutoff=60000,
    )
    experiments = ExperimentListFactory.from_filenames([str(master)])
    imageset = experiments.imagesets()[0]
    source = ImagesetSource(imageset)
    assert source.n_frames == len(imageset)
    assert np.isnan(source.angles_deg).all() and np.isnan(source.exposure_times).all()
    np.testing.assert_array_equal(
        source.image_numbers, np.asarray(imageset.indices()) + 1
    )
    first = imageset.indices()[0]
    data, valid = source.read(Chunk(0, slice(0, 1), slice(0, 40), slice(0, 50)))
    np.testing.assert_array_equal(data[0], images[first].astype(np.int32))
    np.testing.assert_array_equal(valid[0], images[first] < 60000)
