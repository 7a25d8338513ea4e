"""ParallelMap: threads and a Dask LocalCluster give the same results, in order."""

import threading
import time

import numpy as np
import pytest

from dials_diffuse import _kernels
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.parallel import ParallelMap, resolve_nproc


def histogram_of_chunk(seed):
    """A picklable unit of chunked work: histogram of a seeded random chunk."""
    rng = np.random.default_rng(seed)
    chunk = rng.poisson(5.0, size=(4, 64, 64)).astype(np.uint16)
    return _kernels.histogram(chunk, 0, 30, 30)[0]


def expected_histograms(seeds):
    return [histogram_of_chunk(seed) for seed in seeds]


def test_threads_preserve_order_and_values():
    seeds = list(range(12))
    with ParallelMap(nproc=2) as pmap:
        results = list(pmap(histogram_of_chunk, seeds))
    for got, expected in zip(results, expected_histograms(seeds)):
        np.testing.assert_array_equal(got, expected)


def test_in_flight_is_bounded():
    running = []
    lock = threading.Lock()
    high_water = [0]

    def work(item):
        with lock:
            running.append(item)
            high_water[0] = max(high_water[0], len(running))
        time.sleep(0.01)
        return item

    with ParallelMap(nproc=2) as pmap:
        consumed = []
        for value in pmap(work, range(20), in_flight=3):
            with lock:
                running.remove(value)
            consumed.append(value)
    assert consumed == list(range(20))
    assert high_water[0] <= 3


def test_dask_local_cluster_gives_the_same_results():
    pytest.importorskip("distributed")
    seeds = list(range(8))
    with ParallelMap(nproc=2, scheduler="local") as pmap:
        assert pmap.workers == 2
        results = list(pmap(histogram_of_chunk, seeds))
    for got, expected in zip(results, expected_histograms(seeds)):
        np.testing.assert_array_equal(got, expected)


class CountedPickles:
    """A callable holding a big table (as mask_peaks' masker holds the peak
    pixels), counting how often this process pickles it."""

    pickled = 0

    def __init__(self):
        self.table = np.arange(1_000_000)

    def __getstate__(self):
        type(self).pickled += 1
        return self.__dict__

    def __call__(self, item):
        return int(self.table[item])


def test_dask_sends_the_function_to_each_worker_once():
    """Not once per item: mask_peaks sent its peak-pixel table with every chunk."""
    pytest.importorskip("distributed")
    CountedPickles.pickled = 0
    work = CountedPickles()
    with ParallelMap(nproc=2, scheduler="local") as pmap:
        assert list(pmap(work, range(30))) == list(range(30))
    assert 1 <= CountedPickles.pickled <= 2


def test_unreachable_scheduler_is_a_user_error():
    pytest.importorskip("distributed")
    with pytest.raises(UserError, match="cannot reach the Dask scheduler"):
        ParallelMap(nproc=1, scheduler="tcp://127.0.0.1:1")


def test_auto_nproc_is_the_core_count():
    assert resolve_nproc(None) >= 1
    assert resolve_nproc(3) == 3
