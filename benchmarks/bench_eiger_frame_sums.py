"""Eiger frame sums: our fused C++ path against h5py + numpy and the decompression bound.

Writes a synthetic bitshuffle/LZ4 series in the DECTRIS layout (default 300
frames of 1062 x 1028 uint16, Poisson background with module gaps, two data
files), then measures on the same chunks:

- h5py + numpy: `dataset[i]` per frame (HDF5 decodes through hdf5plugin),
  then the thresholded, masked sum in numpy (what the seed tool did, without
  ALBULA);
- bitshuffle: the `bitshuffle` package's `decompress_lz4` on raw chunks
  already in memory (pure decompression, the bound in DESIGN.md), 1 and 2
  threads;
- our decode-only kernel (`decompress_chunk` into a reused buffer);
- ours end to end: `sum_frames` on the master file (raw chunk reads from the
  file + fused decode-and-sum), 1 and 2 threads.

Prints frames/s, GB/s of decoded pixels, and the ratio to the 2-thread
bitshuffle bound. Usage:

    .venv/bin/python benchmarks/bench_eiger_frame_sums.py [frames] [directory]
"""

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from dials_diffuse import _kernels
from dials_diffuse.algorithms.frames.sums import sum_frames
from dials_diffuse.images.eiger import CODEC_BITSHUFFLE_LZ4, EigerMasterSource
from dials_diffuse.io.dectris import write_data_file, write_master_file
from dials_diffuse.util.parallel import ParallelMap

SHAPE = (1062, 1028)
LOW, HIGH = 0, 4500


def make_series(directory, n_frames, files=2):
    """Write the synthetic series; return the master file path."""
    rng = np.random.default_rng(1)
    mask = np.zeros(SHAPE, np.uint32)
    mask[:, 513:515] = 1  # a vertical module gap
    mask[514:551, :] = 1  # a horizontal one
    data_files = []
    per_file = -(-n_frames // files)
    for index in range(files):
        first = index * per_file
        count = min(per_file, n_frames - first)

        def frames(count=count):
            for _ in range(count):
                frame = rng.poisson(2.0, SHAPE).astype(np.uint16)
                frame[mask != 0] = 65535
                yield frame

        path = Path(directory) / f"bench_data_{index + 1:06d}.h5"
        write_data_file(path, frames(), first_image=first + 1, compression="bslz4")
        data_files.append(path)
    master = Path(directory) / "bench_master.h5"
    write_master_file(master, data_files, SHAPE, pixel_mask=mask, bit_depth=16)
    return master


def best(function, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def h5py_numpy(master, valid, n):
    with h5py.File(master, "r") as handle:
        datasets = [
            handle[f"/entry/data/{name}"] for name in sorted(handle["/entry/data"])
        ]
        sums = []
        for dataset in datasets:
            for i in range(dataset.shape[0]):
                frame = dataset[i]
                use = valid & (frame >= LOW) & (frame <= HIGH) & (frame < 65535)
                sums.append(frame[use].sum(dtype=np.int64))
    return np.array(sums[:n], dtype=float)


def main():
    n_frames = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    directory = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    master = directory / "bench_master.h5"
    if not master.exists():
        print(f"writing {n_frames} frames to {directory} ...", flush=True)
        master = make_series(directory, n_frames)
    source = EigerMasterSource(master)
    n = source.n_frames
    valid = source.static_mask()
    frame_bytes = valid.size * 2
    chunks = [payload for _, _, payload in source.raw_frames(0, n)]
    chunks = [c for block in chunks for c in block]
    compressed = sum(len(c) for c in chunks)
    print(
        f"{n} frames of {SHAPE[0]} x {SHAPE[1]} uint16, bitshuffle/LZ4, "
        f"compression ratio {n * frame_bytes / compressed:.1f}"
    )

    rows = []
    seconds, reference = best(lambda: h5py_numpy(master, valid, n), 1)
    rows.append(("h5py + numpy, per frame", 1, seconds))

    try:
        import bitshuffle
    except ImportError:
        bitshuffle = None
    if bitshuffle is not None:

        def bitshuffle_decode(chunk):
            array = np.frombuffer(chunk, np.uint8, offset=12)
            return bitshuffle.decompress_lz4(array, SHAPE, np.dtype(np.uint16), 4096)

        for threads in (1, 2):
            with ThreadPoolExecutor(threads) as pool:
                seconds, _ = best(
                    lambda pool=pool: list(pool.map(bitshuffle_decode, chunks))
                )
            rows.append(("bitshuffle.decompress_lz4 (bound)", threads, seconds))

    buffers = {}

    def our_decode(chunk):
        import threading

        key = threading.get_ident()
        if key not in buffers:
            buffers[key] = np.empty(SHAPE, np.uint16)
        return _kernels.decompress_chunk(chunk, CODEC_BITSHUFFLE_LZ4, buffers[key])

    for threads in (1, 2):
        with ThreadPoolExecutor(threads) as pool:
            seconds, _ = best(lambda pool=pool: list(pool.map(our_decode, chunks)))
        rows.append(("ours: decompress_chunk only", threads, seconds))

    for threads in (1, 2):
        with ParallelMap(nproc=threads) as pmap:
            seconds, result = best(
                lambda pmap=pmap: sum_frames(source, low=LOW, high=HIGH, pmap=pmap)
            )
        assert np.array_equal(result.sums, reference), "sums differ from numpy"
        rows.append(("ours: sum_frames (read+decode+sum)", threads, seconds))

    bound = [r for r in rows if r[0].startswith("bitshuffle") and r[1] == 2]
    bound_seconds = bound[0][2] if bound else None
    print(
        f"{'method':38s} {'threads':>7s} {'time (s)':>9s} {'frames/s':>9s} "
        f"{'GB/s':>6s} {'vs bound':>9s}"
    )
    for name, threads, seconds in rows:
        ratio = f"{bound_seconds / seconds:8.0%}" if bound_seconds else "      n/a"
        print(
            f"{name:38s} {threads:7d} {seconds:9.3f} {n / seconds:9.1f} "
            f"{n * frame_bytes / seconds / 1e9:6.2f} {ratio:>9s}"
        )
    print("sums identical to h5py + numpy: yes")


if __name__ == "__main__":
    main()
