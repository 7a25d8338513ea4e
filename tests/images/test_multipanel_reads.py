"""A multi-panel imageset's frames are read once each, not once per panel."""

import numpy as np
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.images import imageset as imageset_module
from dials_diffuse.images.imageset import ImagesetSource


def test_chunks_go_frame_block_by_block():
    class Source(ImagesetSource):
        def __init__(self):
            pass

        n_frames = 25
        panel_shapes = [(3, 4), (5, 4)]

    chunks = list(Source().chunks(frames=10))
    assert [(c.panel, c.frames.start) for c in chunks] == [
        (0, 0),
        (1, 0),
        (0, 10),
        (1, 10),
        (0, 20),
        (1, 20),
    ]


def test_each_frame_read_once(simulated_modules, monkeypatch):
    imageset = ExperimentListFactory.from_json_file(
        str(simulated_modules["truth_expt"])
    )[0].imageset
    source = ImagesetSource(imageset)
    calls = []
    original = imageset_module.read_frame

    def counting(imageset, index, static_masks=None):
        calls.append(index)
        return original(imageset, index, static_masks)

    monkeypatch.setattr(imageset_module, "read_frame", counting)
    sums = np.zeros((source.n_frames, len(source.panel_shapes)))
    for chunk in source.chunks(frames=10):
        data, valid = source.read(chunk)
        sums[chunk.frames, chunk.panel] = np.where(valid, data, 0).sum(axis=(1, 2))
    assert sorted(calls) == list(range(source.n_frames))
    # The same values as dxtbx's own frames and masks.
    for index in (0, source.n_frames - 1):
        raw = imageset.get_raw_data(index)
        masks = imageset.get_mask(index)
        expected = [
            np.where(m.as_numpy_array(), r.as_numpy_array(), 0).sum()
            for r, m in zip(raw, masks)
        ]
        np.testing.assert_array_equal(sums[index], expected)


def test_binning_every_panel_reads_each_frame_once(simulated_modules, monkeypatch):
    """bin_image_series's one pass over all panels: one read per frame, and each
    panel's blocks as binning that panel alone."""
    from dials_diffuse.algorithms.diffuse.background import (
        bin_image_series,
        bin_panels,
    )

    imageset = ExperimentListFactory.from_json_file(
        str(simulated_modules["truth_expt"])
    )[0].imageset
    source = ImagesetSource(imageset)
    alone = [
        bin_image_series(source, (10, 16, 16), source.angles_deg, panel=panel)
        for panel in (0, 5)
    ]
    calls = []
    original = imageset_module.read_frame

    def counting(imageset, index, static_masks=None):
        calls.append(index)
        return original(imageset, index, static_masks)

    monkeypatch.setattr(imageset_module, "read_frame", counting)
    fresh = ImagesetSource(imageset)
    together = bin_panels(fresh, (10, 16, 16), fresh.angles_deg)
    assert sorted(calls) == list(range(fresh.n_frames))
    assert len(together) == 8
    for panel, background in zip((0, 5), alone):
        np.testing.assert_array_equal(together[panel].rate, background.rate)
        np.testing.assert_array_equal(together[panel].phi, background.phi)
