"""Benchmark: streaming a bitshuffle/LZ4 Eiger series frame by frame.

Writes an EIGER 1M series (1065 x 1030 uint16, Poisson counts, module gaps
at 65535) in the DECTRIS filewriter layout, then streams every frame and
sums the pixels within [1, 60000) with:

- ``h5py per frame``: ``dataset[i]`` per frame (a new array each time) and a
  numpy thresholded sum: the plain-h5py baseline;
- ``dxtbx imageset``: ``imageset.get_raw_data(i)`` through our
  FormatEigerFilewriter (what every DIALS program does), numpy sum;
- ``ImagesetSource``: the same through ``dials_diffuse.images.ImagesetSource``
  chunks (one frame per chunk, mask included), with ``ParallelMap``;
- ``fast HDF5 path``: ``dials_diffuse.images.eiger.EigerMasterSource``
  (raw chunks decoded in C++), when present.

Prints frames/s and GB/s of uncompressed pixels, and the peak-RSS growth
(memory must not grow with the number of frames).

    .venv/bin/python benchmarks/stream_images.py [n_frames] [nproc]
"""

import resource
import sys
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np

from dials_diffuse.images.imageset import ImagesetSource
from dials_diffuse.simulate.eiger_files import write_dectris_files
from dials_diffuse.util.parallel import ParallelMap

SHAPE = (1065, 1030)
LOW, HIGH = 1, 60000


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.poisson(2.0, SHAPE).astype(np.uint16)
    base[514:551] = 65535
    for i in range(n):
        yield np.roll(base, i, axis=1)


def thresholded_sum(data):
    return int(data[(data >= LOW) & (data < HIGH)].sum(dtype=np.int64))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def h5py_per_frame(master, n):
    with h5py.File(master) as f:
        links = sorted(k for k in f["entry/data"] if k.startswith("data_"))
        total = 0
        for name in links:
            dataset = f["entry/data"][name]
            for i in range(dataset.shape[0]):
                total += thresholded_sum(dataset[i])
    return total


def dxtbx_imageset(master, n):
    from dxtbx.model.experiment_list import ExperimentListFactory

    imageset = ExperimentListFactory.from_filenames([str(master)])[0].imageset
    return sum(
        thresholded_sum(imageset.get_raw_data(i)[0].as_numpy_array()) for i in range(n)
    )


def imageset_source(master, n, nproc):
    from dxtbx.model.experiment_list import ExperimentListFactory

    source = ImagesetSource(
        ExperimentListFactory.from_filenames([str(master)])[0].imageset
    )

    def work(chunk):
        data, valid = source.read(chunk)
        return int(data[valid & (data >= LOW)].sum(dtype=np.int64))

    with ParallelMap(nproc=nproc) as pmap:
        return sum(pmap(work, source.chunks(frames=1)))


def fast_path(master, n, nproc):
    """The fast HDF5 path (EigerMasterSource: raw chunks decoded in C++)."""
    from dials_diffuse.images.eiger import EigerMasterSource

    source = EigerMasterSource(master)

    def work(chunk):
        data, valid = source.read(chunk)
        return int(data[valid & (data >= LOW)].sum(dtype=np.int64))

    with ParallelMap(nproc=nproc) as pmap:
        return sum(pmap(work, source.chunks(frames=1)))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    nproc = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    gigabytes = n * SHAPE[0] * SHAPE[1] * 2 / 1e9
    with tempfile.TemporaryDirectory() as directory:
        master = write_dectris_files(
            Path(directory),
            "bench",
            frames(n),
            n_frames=n,
            shape=SHAPE,
            frames_per_file=100,
            countrate_cutoff=HIGH,
        )
        size = sum(p.stat().st_size for p in Path(directory).glob("*.h5")) / 1e6
        print(
            f"{n} frames {SHAPE[0]} x {SHAPE[1]} uint16, bitshuffle/LZ4 "
            f"({size:.0f} MB on disk, {gigabytes:.2f} GB uncompressed), nproc={nproc}"
        )
        print(f"{'method':<28}{'s':>8}{'frames/s':>10}{'GB/s':>8}{'RSS +MB':>9}")
        runs = [
            ("h5py per frame", lambda: h5py_per_frame(master, n)),
            ("dxtbx imageset", lambda: dxtbx_imageset(master, n)),
            (
                f"ImagesetSource nproc={nproc}",
                lambda: imageset_source(master, n, nproc),
            ),
            (f"fast HDF5 path nproc={nproc}", lambda: fast_path(master, n, nproc)),
        ]
        results = {}
        for name, run in runs:
            before = peak_rss_mb()
            start = time.perf_counter()
            try:
                results[name] = run()
            except ImportError as error:
                print(f"{name:<28}  not available ({error})")
                continue
            seconds = time.perf_counter() - start
            print(
                f"{name:<28}{seconds:8.2f}{n / seconds:10.1f}{gigabytes / seconds:8.2f}"
                f"{peak_rss_mb() - before:9.0f}"
            )
        # Every method must have seen the same pixels.
        sums = set(results.values())
        print("sums agree" if len(sums) == 1 else f"SUMS DIFFER: {results}")


if __name__ == "__main__":
    main()
