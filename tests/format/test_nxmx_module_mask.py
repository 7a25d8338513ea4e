"""A multi-module NXmx file keeps its pixel mask, from dials.import to our chain.

The simulated sweep on 4 x 2 modules has one 2-D ``pixel_mask`` over the
frame (gap rows bit 0, 20 dead pixels bit 1) and modules narrower than the
frame. dxtbx 3.11 (DIALS 3.12) fails on it ("numpy array is
non-c-contiguous"); our `FormatNXmxModuleMask` reads it there, dxtbx 3.12+
reads it itself. Either way every panel must get its tile of the mask.
"""

import subprocess

import h5py
import numpy as np
import pytest
from dxtbx.format.FormatNXmx import FormatNXmx
from dxtbx.format.Registry import get_format_class_for_file
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.format.FormatNXmxModuleMask import FormatNXmxModuleMask
from dials_diffuse.images.imageset import ImagesetSource
from dials_diffuse.util.compat import nexus_module_masks_fail


def _tiles_and_mask(paths):
    with h5py.File(paths["truth"], "r") as handle:
        tiles = handle["modules/tiles"][()]
        dead = handle["mask/dead"][()]
    with h5py.File(paths["master"], "r") as handle:
        pixel_mask = handle["entry/instrument/detector/pixel_mask"][()]
    return tiles, dead, pixel_mask


def _window(tile):
    row, column, rows, columns = tile
    return slice(row, row + rows), slice(column, column + columns)


@pytest.fixture(scope="module")
def imported(simulated_modules, tmp_path_factory):
    """dials.import of the multi-module master, as a user runs it."""
    workdir = tmp_path_factory.mktemp("import_modules")
    result = subprocess.run(
        ["dials.import", str(simulated_modules["master"])],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir / "imported.expt"


def test_dxtbx_own_class_fails_exactly_where_the_probe_says(simulated_modules):
    """The compat probe is dxtbx's behaviour on a real multi-module file."""
    tiles, _, pixel_mask = _tiles_and_mask(simulated_modules)
    master = str(simulated_modules["master"])
    if nexus_module_masks_fail():
        with pytest.raises(ValueError, match="contiguous"):
            FormatNXmx(master)
        assert FormatNXmxModuleMask.understand(master)
    else:
        masks = FormatNXmx(master).get_static_mask()
        for tile, mask in zip(tiles, masks):
            assert np.array_equal(mask.as_numpy_array(), pixel_mask[_window(tile)] == 0)
        assert not FormatNXmxModuleMask.understand(master)


def test_every_panel_gets_its_tile_of_the_pixel_mask(simulated_modules, imported):
    tiles, dead, pixel_mask = _tiles_and_mask(simulated_modules)
    assert dead.sum() == 20 and np.all(pixel_mask[dead] == 2)
    experiments = ExperimentListFactory.from_json_file(str(imported))
    imageset = experiments[0].imageset
    assert len(imageset.get_detector()) == len(tiles) == 8
    instance = imageset.get_format_class().get_instance(
        str(simulated_modules["master"])
    )
    masks = instance.get_static_mask()
    assert masks is not None and len(masks) == 8
    source = ImagesetSource(imageset)
    for panel, (tile, mask) in enumerate(zip(tiles, masks)):
        expected = pixel_mask[_window(tile)] == 0
        assert np.array_equal(mask.as_numpy_array(), expected)
        # The chain's view: the format's mask (and untrusted regions, none here).
        assert np.array_equal(source.static_mask(panel), expected)
    # Every dead pixel lies in some module (the gap rows lie between modules).
    assert sum((~mask.as_numpy_array()).sum() for mask in masks) == 20


def test_single_module_and_full_width_files_stay_with_dxtbx(simulated_rotation):
    """Only files dxtbx 3.11 fails on are ours: one module is FormatNXmx's."""
    master = str(simulated_rotation["master"])
    assert get_format_class_for_file(master) is FormatNXmx
    assert not FormatNXmxModuleMask.understand(master)


def test_dead_pixels_are_masked_in_the_chain(simulated_modules, tmp_path):
    """import_data stores every dead pixel of every panel as masked in every frame.

    From the truth .expt (the imported panels and the crystal): the diffuse
    chain needs a crystal, which a bare dials.import has not.
    """
    from dials_diffuse.command_line import import_data as import_program

    tiles, dead, _ = _tiles_and_mask(simulated_modules)
    output = tmp_path / "data.nxs"
    assert (
        import_program.run(
            [str(simulated_modules["truth_expt"]), f"output.data={output}"]
        )
        == 0
    )
    with h5py.File(output, "r") as handle:
        group = handle["entry/image_series"]
        for panel, tile in enumerate(tiles):
            stack = group[f"panel_{panel:02d}/data"][()]
            panel_dead = dead[_window(tile)]
            # Dead pixels read 0 in the files: unmasked they would be stored as 0.
            assert np.all(stack[:, panel_dead] == -1)
            assert np.mean(stack[:, ~panel_dead] == -1) < 0.01
