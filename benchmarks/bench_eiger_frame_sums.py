"""Eiger frame sums: our fused C++ path against h5py + numpy and the decompression bound.

Writes a synthetic bitshuffle/LZ4 series in the DECTRIS layout (default 300
frames of 1062 x 1028 uint16, Poisson background with module gaps, two data
files), then measures on the same chunks:

- h5py + numpy: `dataset[i]` per frame (HDF5 decodes through hdf5plugin),
  then the thresholded, masked sum in numpy (what the 2018 Eiger summing tool did, without
  ALBULA);
- bitshuffle: the `bitshuffle` package's `decompress_lz4` on raw chunks
  already in memory (pure decompression, the bound in DESIGN.md), 1 and 2
  threads;
- our decode-only kernel (`decompress_chunk` into a reused buffer);
- ours end to end: `sum_frames` on the master file (raw chunk reads from the
  file + fused decode-and-sum), 1 and 2 threads.

Prints frames/s, GB/s of decoded pixels, and the ratio to the bound:
bitshuffle's decompression alone with the same number of threads (100% =
as fast as decompressing the chunks, with the reading and summing free). Usage:

    .venv/bin/python benchmarks/bench_eiger_frame_sums.py [frames] [directory]
"""

import os

# bitshuffle's wheel may decode one chunk with several OpenMP threads: pin it
# to one, so "threads" means the same for every method.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from dials_diffuse import _kernels
from dials_diffuse.algorithms.frames.sums import sum_frames
from dials_diffuse.images.eiger import CODEC_BITSHUFFLE_LZ4, EigerMasterSource
from dials_diffuse.simulate.eiger_files import write_dectris_files
from dials_diffuse.util.parallel import ParallelMap

SHAPE = (1062, 1028)
LOW, HIGH = 0, 4500


def make_series(directory, n_frames, files=2):
    """Write the synthetic series; return the master file path."""
    rng = np.random.default_rng(1)
    mask = np.zeros(SHAPE, np.uint32)
    mask[:, 513:515] = 1  # a vertical module gap
    mask[514:551, :] = 1  # a horizontal one

    def frames():
        for _ in range(n_frames):
            frame = rng.poisson(2.0, SHAPE).astype(np.uint16)
            frame[mask != 0] = 65535
            yield frame

    return write_dectris_files(
        directory,
        "bench",
        frames(),
        n_frames=n_frames,
        shape=SHAPE,
        frames_per_file=-(-n_frames // files),
        pixel_mask=mask,
    )


PEAK_MEMORY = """
import sys
from dials_diffuse.algorithms.frames.sums import sum_frames
from dials_diffuse.images.eiger import EigerMasterSource
from dials_diffuse.util.parallel import ParallelMap

def status(key):  # kB; VmHWM is this process's peak (ru_maxrss survives exec)
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

source = EigerMasterSource(sys.argv[1])
before = status("VmRSS:")
with ParallelMap(nproc=2) as pmap:
    sum_frames(source, image_range=(1, int(sys.argv[2])), pmap=pmap)
print((status("VmHWM:") - before) / 1024)
"""


def peak_memory_mb(master, frames):
    """Growth of the peak RSS (MB) while summing the first `frames` frames."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, str(master), str(frames)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip())


def h5py_numpy(master, valid, n):
    with h5py.File(master, "r") as handle:
        names = sorted(handle["/entry/data"])
        datasets = [handle[f"/entry/data/{name}"] for name in names]
        sums = []
        for dataset in datasets:
            for i in range(dataset.shape[0]):
                frame = dataset[i]
                use = valid & (frame >= LOW) & (frame <= HIGH) & (frame < 65535)
                sums.append(frame[use].sum(dtype=np.int64))
    return np.array(sums[:n], dtype=float)


def methods(source, master, chunks, valid, n):
    """(name, threads, function) for every measured method."""
    found = [("h5py + numpy, per frame", 1, lambda: h5py_numpy(master, valid, n))]
    try:
        import bitshuffle
    except ImportError:
        bitshuffle = None
        print("bitshuffle is not installed (pip install bitshuffle): no bound")

    def bitshuffle_decode(chunk):
        array = np.frombuffer(chunk, np.uint8, offset=12)
        return bitshuffle.decompress_lz4(array, SHAPE, np.dtype(np.uint16), 4096)

    buffers = {}

    def our_decode(chunk):
        key = threading.get_ident()
        if key not in buffers:
            buffers[key] = np.empty(SHAPE, np.uint16)
        return _kernels.decompress_chunk(chunk, CODEC_BITSHUFFLE_LZ4, buffers[key])

    def pooled(function, threads):
        def run():
            with ThreadPoolExecutor(threads) as pool:
                for _ in pool.map(function, chunks):
                    pass  # results dropped as they come: memory stays flat

        return run

    def ours(threads):
        def run():
            with ParallelMap(nproc=threads) as pmap:
                return sum_frames(source, low=LOW, high=HIGH, pmap=pmap).sums

        return run

    for threads in (1, 2):
        if bitshuffle is not None:
            found.append(
                (
                    "bitshuffle.decompress_lz4 (bound)",
                    threads,
                    pooled(bitshuffle_decode, threads),
                )
            )
        found.append(
            ("ours: decompress_chunk only", threads, pooled(our_decode, threads))
        )
        found.append(("ours: sum_frames (read+decode+sum)", threads, ours(threads)))
    return found


def main():
    n_frames = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    directory = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    master = directory / "bench_master.h5"
    if not master.exists():
        print(f"writing {n_frames} frames to {directory} ...", flush=True)
        master = make_series(directory, n_frames)
    source = EigerMasterSource(master)
    n = source.n_frames
    valid = source.static_mask()
    frame_bytes = valid.size * 2
    chunks = [c for _, _, payload in source.raw_frames(0, n) for c in payload]
    compressed = sum(len(c) for c in chunks)
    print(
        f"{n} frames of {SHAPE[0]} x {SHAPE[1]} uint16, bitshuffle/LZ4, "
        f"compression ratio {n * frame_bytes / compressed:.1f}; best of {rounds} "
        "interleaved rounds"
    )
    table = methods(source, master, chunks, valid, n)
    reference = h5py_numpy(master, valid, n)
    assert np.array_equal(table[-1][2](), reference), "sums differ from numpy"
    # Interleave the rounds so every method sees the same machine load.
    times = [float("inf")] * len(table)
    for _ in range(rounds):
        for index, (_, _, function) in enumerate(table):
            start = time.perf_counter()
            function()
            times[index] = min(times[index], time.perf_counter() - start)

    # The bound: bitshuffle's decompression alone, at the same thread count.
    bound = {
        threads: t
        for (name, threads, _), t in zip(table, times)
        if name.startswith("bitshuffle")
    }
    print(
        f"{'method':38s} {'threads':>7s} {'time (s)':>9s} {'frames/s':>9s} "
        f"{'GB/s':>6s} {'vs bound':>9s}"
    )
    for (name, threads, _), seconds in zip(table, times):
        ratio = f"{bound[threads] / seconds:8.0%}" if threads in bound else "      n/a"
        print(
            f"{name:38s} {threads:7d} {seconds:9.3f} {n / seconds:9.1f} "
            f"{n * frame_bytes / seconds / 1e9:6.2f} {ratio:>9s}"
        )
    print("sums identical to h5py + numpy: yes")
    for frames in (n // 3, n):
        print(
            f"peak memory growth while summing {frames} frames (2 threads): "
            f"{peak_memory_mb(master, frames):.1f} MB"
        )


if __name__ == "__main__":
    main()
