"""Eiger frame sums: ours against h5py + numpy, our plain decode and the bitshuffle package.

Writes a bitshuffle/LZ4 series with the simulator's DECTRIS writer
(`dials_diffuse.simulate.eiger_files`; two data files): EIGER2 16M frames
(4362 x 4148 uint16, 8 x 4 modules with 38 px and 12 px gaps) by default, or
1M frames (1062 x 1028, `--detector 1m`), Poisson counts of mean 0.37 (the
mean of the data the Sum-Eiger-Frames tool summed), module gaps at 65535 and
in the pixel mask. Then measures on the same chunks, at 1 and 2 threads:

- h5py + numpy: `dataset[i]` per frame (HDF5 decodes through hdf5plugin),
  then the thresholded, masked sum in numpy (what the 2018 Eiger summing tool
  did, without ALBULA; 1 thread);
- bitshuffle: the `bitshuffle` package's `decompress_lz4` on raw chunks
  already in memory (decompression alone);
- ours, decode only: `decompress_chunk` (LZ4 + un-transpose) into a reused
  buffer, chunks in memory: what every reader of decoded frames pays;
- ours, kernel: `compressed_frame_statistics` on chunks in memory (LZ4 +
  bit-plane sums, never un-transposed);
- ours, `sum_frames`: the whole path of `dials.diffuse.frame_statistics`
  (raw chunk reads from the files + the kernel).

low=0, high=4500, invalid from 65535 (the gap marker). The rounds are
interleaved (every method once per round, so load changes hit all alike)
and medians reported: frames/s and G pixels/s per thread from wall time,
and G pixels per CPU-second (process CPU time; less disturbed by other jobs
on a shared machine), each against the Sum-Eiger-Frames tool's 2.8 G
pixels/s per thread.
Beside the figures: the compression ratio, the machine's memory bandwidth
(a numpy copy of 512 MB), the load average, which bit-plane kernels the CPU
runs, and the peak memory growth of `sum_frames`. Usage:

    .venv/bin/python benchmarks/bench_eiger_frame_sums.py \
        [--detector 16m|1m] [--frames 30] [--directory DIR] [--rounds 5]
"""

import os

# bitshuffle's wheel may decode one chunk with several OpenMP threads: pin it
# to one, so "threads" means the same for every method.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from dials_diffuse import _kernels  # noqa: E402
from dials_diffuse.algorithms.frames.sums import sum_frames  # noqa: E402
from dials_diffuse.images.eiger import CODEC_BITSHUFFLE_LZ4, EigerMasterSource  # noqa: E402
from dials_diffuse.simulate import models  # noqa: E402
from dials_diffuse.simulate.eiger_files import GAP_BIT, write_eiger_dataset  # noqa: E402
from dials_diffuse.util.parallel import ParallelMap  # noqa: E402

# (modules along slow, along fast, module rows, module columns, gap rows, gap columns)
DETECTORS = {"16m": (8, 4, 512, 1028, 38, 12), "1m": (2, 1, 512, 1028, 38, 0)}
MEAN_COUNTS = 0.37
LOW, HIGH, GAP_VALUE = 0, 4500, 65535
ALBULA_TOOL_RATE = 2.8e9  # pixels/s per thread of the Sum-Eiger-Frames tool


def gap_mask(detector):
    """True on the module gaps of an EIGER-like detector (ny, nx)."""
    rows, columns, module_rows, module_columns, gap_rows, gap_columns = DETECTORS[
        detector
    ]
    ny = rows * module_rows + (rows - 1) * gap_rows
    nx = columns * module_columns + (columns - 1) * gap_columns
    gap = np.zeros((ny, nx), bool)
    for r in range(1, rows):
        start = r * module_rows + (r - 1) * gap_rows
        gap[start : start + gap_rows] = True
    for c in range(1, columns):
        start = c * module_columns + (c - 1) * gap_columns
        gap[:, start : start + gap_columns] = True
    return gap


def write_series(directory, detector, n_frames):
    """Write the series with the simulator's DECTRIS writer; return the master."""
    gap = gap_mask(detector)
    ny, nx = gap.shape

    def frames():
        for i in range(n_frames):
            frame = np.random.default_rng([7, i]).poisson(MEAN_COUNTS, gap.shape)
            frame = frame.astype(np.uint16)
            frame[gap] = GAP_VALUE
            yield frame

    layout = models.DetectorLayout(
        nx=nx, ny=ny, pixel_mm=0.075, distance_mm=200.0, beam_px=(nx / 2, ny / 2)
    )
    return write_eiger_dataset(
        directory,
        "bench",
        frames(),
        n_frames,
        (ny, nx),
        per_file=-(-n_frames // 2),
        beam=models.make_beam(1.0),
        detector=models.make_detector(layout, 1.0),
        pixel_mask=np.where(gap, GAP_BIT, 0).astype(np.uint32),
        exposure_s=0.01,
        geometry="flat",
    )


def copy_bandwidth(megabytes=512, repeats=5):
    """Bytes copied per second by numpy (the best of `repeats`), GB/s."""
    a = np.ones(megabytes * 2**20, np.uint8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - start)
    return a.nbytes / best / 1e9


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


def h5py_numpy(master, valid):
    """Thresholded, masked sums of every frame through h5py and numpy."""
    sums = []
    with h5py.File(master, "r") as handle:
        names = sorted(n for n in handle["/entry/data"] if n.startswith("data_"))
        for name in names:
            dataset = handle[f"/entry/data/{name}"]
            for i in range(dataset.shape[0]):
                frame = dataset[i]
                use = valid & (frame >= LOW) & (frame <= HIGH) & (frame < GAP_VALUE)
                sums.append(frame[use].sum(dtype=np.int64))
    return np.array(sums, dtype=float)


def methods(source, master, chunks, valid):
    """(name, threads, function) for every measured method."""
    shape = valid.shape
    n_pixels = valid.size
    bits = np.packbits(valid.ravel(), bitorder="little")
    found = [("h5py + numpy", 1, lambda: h5py_numpy(master, valid))]
    try:
        import bitshuffle
    except ImportError:
        bitshuffle = None
        print("bitshuffle is not installed (pip install bitshuffle): not measured")

    def bitshuffle_decode(chunk):
        array = np.frombuffer(chunk, np.uint8, offset=12)
        return bitshuffle.decompress_lz4(array, shape, np.dtype(np.uint16), 4096)

    buffers = {}

    def our_decode(chunk):
        key = threading.get_ident()
        if key not in buffers:
            buffers[key] = np.empty(shape, np.uint16)
        return _kernels.decompress_chunk(chunk, CODEC_BITSHUFFLE_LZ4, buffers[key])

    def our_kernel(chunk):
        return _kernels.compressed_frame_statistics(
            [chunk],
            CODEC_BITSHUFFLE_LZ4,
            np.dtype(np.uint16),
            n_pixels,
            LOW,
            HIGH,
            invalid_from=GAP_VALUE,
            mask_bits=bits,
        )

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
                    "bitshuffle.decompress_lz4",
                    threads,
                    pooled(bitshuffle_decode, threads),
                )
            )
        found.append(("ours: decompress_chunk", threads, pooled(our_decode, threads)))
        found.append(
            ("ours: compressed_frame_statistics", threads, pooled(our_kernel, threads))
        )
        found.append(("ours: sum_frames (files)", threads, ours(threads)))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detector", choices=sorted(DETECTORS), default="16m")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--directory", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    directory = args.directory or Path(tempfile.mkdtemp())
    master = directory / "bench_master.h5"
    if not master.exists():
        print(f"writing {args.frames} frames to {directory} ...", flush=True)
        master = write_series(directory, args.detector, args.frames)
    source = EigerMasterSource(master)
    n = source.n_frames
    valid = source.static_mask()
    ny, nx = valid.shape
    chunks = [c for _, _, payload in source.raw_frames(0, n) for c in payload]
    compressed = sum(len(c) for c in chunks)
    bandwidth = copy_bandwidth()
    print(
        f"{n} frames of {ny} x {nx} uint16 ({valid.size / 1e6:.1f} M pixels, "
        f"{(~valid).mean():.1%} in module gaps), bitshuffle/LZ4, compression ratio "
        f"{n * valid.size * 2 / compressed:.2f}; low={LOW} high={HIGH}\n"
        f"memory bandwidth (numpy copy of 512 MB): {bandwidth:.1f} GB/s; bit-plane "
        f"kernels: {['plain C++', 'popcnt', 'AVX-512 VPOPCNTQ'][_kernels.plane_kernel_level()]}"
        f"; median of {args.rounds} interleaved rounds"
    )
    table = methods(source, master, chunks, valid)
    reference = h5py_numpy(master, valid)
    ours = sum_frames(source, low=LOW, high=HIGH)
    assert np.array_equal(ours.sums, reference), "sums differ from numpy"
    load_before = os.getloadavg()
    walls = [[] for _ in table]
    cpus = [[] for _ in table]
    for _ in range(args.rounds):
        for index, (_, _, function) in enumerate(table):
            cpu, wall = time.process_time(), time.perf_counter()
            function()
            walls[index].append(time.perf_counter() - wall)
            cpus[index].append(time.process_time() - cpu)
    load_after = os.getloadavg()
    pixels = n * valid.size
    print(
        f"{'method':34s} {'threads':>7s} {'frames/s':>9s} {'G px/s/thread':>14s} "
        f"{'G px/CPU-s':>11s} {'wall/2.8':>9s} {'CPU/2.8':>8s}"
    )
    for (name, threads, _), wall, cpu in zip(table, walls, cpus):
        wall, cpu = float(np.median(wall)), float(np.median(cpu))
        per_thread = pixels / wall / threads
        print(
            f"{name:34s} {threads:7d} {n / wall:9.1f} {per_thread / 1e9:14.2f} "
            f"{pixels / cpu / 1e9:11.2f} {per_thread / ALBULA_TOOL_RATE:9.0%} "
            f"{pixels / cpu / ALBULA_TOOL_RATE:8.0%}"
        )
    print(
        "sums identical to h5py + numpy: yes; load average (1 min) "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
        f"{os.cpu_count()} CPUs"
    )
    for frames in (max(1, n // 3), n):
        print(
            f"peak memory growth while summing {frames} frames (2 threads): "
            f"{peak_memory_mb(master, frames):.1f} MB"
        )


if __name__ == "__main__":
    main()
