"""One image_range rule (DIALS's): image numbers of the sequence, inclusive.

The real sweep here is images 6-15 of the L-cysteine set imported as one
sequence, so its image numbers start at 6: image_range=8,10 is its 3rd to 5th
frames (files l-cyst_01_00008..10.cbf), in every program that takes it.
"""

import numpy as np
import pandas as pd
import pytest
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.algorithms.pixels.histograms import histogram_imageset
from dials_diffuse.images.imageset import ImagesetSource, image_numbers
from dials_diffuse.images.source import frame_range
from dials_diffuse.util.errors import DataError


def test_frame_range_counts_image_numbers_not_positions():
    numbers = np.arange(11, 21)
    assert frame_range(numbers) == (0, 10)
    assert frame_range(numbers, (11, 15)) == (0, 5)
    assert frame_range(numbers, (20, 20)) == (9, 10)
    for outside in ((1, 5), (10, 12), (15, 21), (16, 15)):
        with pytest.raises(DataError, match="outside the images 11-20"):
            frame_range(numbers, outside)
    # Stills numbered by file position, with a hole: a number not present is
    # refused, not rounded to a neighbour.
    with pytest.raises(DataError, match="outside"):
        frame_range(np.array([1, 2, 5, 6]), (3, 5))
    assert frame_range(np.array([1, 2, 5, 6]), (2, 5)) == (1, 3)


@pytest.fixture(scope="module")
def late_sweep(l_cysteine):
    """Images 6-15 of the real sweep as one sequence (image numbers 6-15)."""
    files = sorted(l_cysteine.glob("*.cbf"))[5:]
    experiments = ExperimentListFactory.from_filenames([str(f) for f in files])
    assert len(experiments) == 1
    return files, experiments


def test_the_sweep_is_numbered_from_6(late_sweep):
    _, experiments = late_sweep
    imageset = experiments[0].imageset
    assert experiments[0].scan.get_image_range() == (6, 15)
    np.testing.assert_array_equal(image_numbers(imageset), np.arange(6, 16))
    np.testing.assert_array_equal(
        ImagesetSource(imageset).image_numbers, np.arange(6, 16)
    )


def files_reference(files, low, high):
    """Histogram and sums of these files, each read alone by dxtbx."""
    counts, sums = np.zeros(high - low, dtype=np.int64), []
    for path in files:
        imageset = ExperimentListFactory.from_filenames([str(path)])[0].imageset
        data = imageset.get_raw_data(0)[0].as_numpy_array()
        valid = imageset.get_mask(0)[0].as_numpy_array()
        counts += np.histogram(data[valid], bins=high - low, range=(low, high))[0]
        use = valid & (data >= low) & (data <= high)
        sums.append(int(data[use].sum()))
    return counts, sums


def test_histogram_and_frame_sums_take_the_same_images(late_sweep, in_tmp_path):
    from dials_diffuse.command_line import frame_statistics

    files, experiments = late_sweep
    wanted = [f for f in files if f.name.endswith(("08.cbf", "09.cbf", "10.cbf"))]
    assert len(wanted) == 3
    counts, sums = files_reference(wanted, 0, 50)
    histogram = histogram_imageset(
        experiments[0].imageset, low=0, high=50, bins=50, image_range=(8, 10)
    )
    np.testing.assert_array_equal(histogram.to_frame(trim=False)["panel_0"], counts)
    experiments.as_file("late.expt")
    code = frame_statistics.run(
        ["late.expt", "image_range=8,10", "high=50"]
        + ["output.html=None", "output.plot=None"]
    )
    assert code == 0
    table = pd.read_csv("frame_statistics.csv")
    np.testing.assert_array_equal(table["image"], [8, 9, 10])
    np.testing.assert_array_equal(table["sum"], sums)
    with pytest.raises(DataError, match="outside the images 6-15"):
        histogram_imageset(experiments[0].imageset, image_range=(1, 3))
