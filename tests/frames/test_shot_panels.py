"""Per-shot, per-panel sums and histograms of several image sets, against
numpy: a stand-in reader of a 3-panel detector with known pixels."""

import numpy as np
import pytest

from dials_diffuse.algorithms.frames.sums import sum_frames
from dials_diffuse.algorithms.pixels.histograms import histogram_shots
from dials_diffuse.images.shots import Shot
from dials_diffuse.util.parallel import ParallelMap

SHAPES = [(6, 5), (6, 5), (4, 7)]


class _Source:
    def __init__(self, numbers):
        self.image_numbers = np.asarray(numbers)


class _Panel:
    def get_trusted_range(self):
        return (-1, 60)


class FakeReader:
    """Two image sets (3 and 2 images, numbered from 4 and 1) of a 3-panel
    detector: what ShotReader offers, with pixels from a seeded generator."""

    panel_shapes = SHAPES

    def __init__(self):
        self.sources = [_Source([4, 5, 6]), _Source([1, 2])]
        self.detector = [_Panel() for _ in SHAPES]
        rng = np.random.default_rng(7)
        self.frames = {}
        for s, source in enumerate(self.sources):
            for i in range(len(source.image_numbers)):
                data = [
                    rng.integers(-3, 70, shape).astype(np.int32) for shape in SHAPES
                ]
                valid = [rng.random(shape) > 0.1 for shape in SHAPES]
                self.frames[(s, i)] = (data, valid)

    def shots(self, image_range=None):
        shots = []
        for s, source in enumerate(self.sources):
            for i, image in enumerate(source.image_numbers):
                if image_range is None or image_range[0] <= image <= image_range[1]:
                    shots.append(Shot(s, 10 * s, i, int(image)))
        return shots

    def read(self, shot):
        return self.frames[(shot.imageset, shot.index)]


@pytest.mark.parametrize("nproc", [None, 2])
def test_per_panel_sums_and_histograms(nproc):
    reader = FakeReader()
    pmap = ParallelMap(nproc) if nproc else None
    try:
        sums = sum_frames(reader, low=0, high=50, pmap=pmap, batch_frames=2)
        shots = reader.shots()
        histogram, per_shot = histogram_shots(
            reader, shots, low=0, high=50, bins=50, pmap=pmap, batch_size=2
        )
    finally:
        if pmap:
            pmap.close()
    assert sums.image_numbers.tolist() == [4, 5, 6, 1, 2]
    assert sums.imagesets.tolist() == [0, 0, 0, 1, 1]
    assert sums.experiments.tolist() == [0, 0, 0, 10, 10]
    panels = sums.panels
    assert len(panels) == 5 * 3 and len(per_shot) == 5 * 3
    expected_counts = np.zeros((3, 50), dtype=np.int64)
    for k, shot in enumerate(shots):
        data, valid = reader.read(shot)
        frame_sum = 0.0
        for p in range(3):
            used = valid[p] & (data[p] >= 0) & (data[p] <= 50)
            row = panels.iloc[3 * k + p]
            assert (row.imageset, row.image, row.panel) == (
                shot.imageset,
                shot.image,
                p,
            )
            assert row["sum"] == data[p][used].sum()
            assert row["pixels_used"] == used.sum()
            frame_sum += data[p][used].sum()
            hist_row = per_shot.iloc[3 * k + p]
            assert hist_row["pixels"] == used.sum()
            assert hist_row["masked"] == (~valid[p]).sum()
            assert hist_row["underflow"] == (valid[p] & (data[p] < 0)).sum()
            assert hist_row["overflow"] == (valid[p] & (data[p] > 50)).sum()
            assert hist_row["max"] == data[p][used].max()
            expected_counts[p] += np.histogram(data[p][used], 50, (0, 50))[0]
        assert sums.sums[k] == frame_sum
    np.testing.assert_array_equal(histogram.counts, expected_counts)
    assert histogram.labels == ["panel_0", "panel_1", "panel_2"]
