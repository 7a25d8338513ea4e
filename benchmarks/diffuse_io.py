"""Where the time of integrate goes: reading data.nxs and mask.nxs, the kernel, the rest.

Reads a data.nxs (and mask.nxs) made by the diffuse chain, e.g. by
benchmarks/diffuse_vs_mdx2.py, in chunks of whole frames and prints

1. read throughput (pixel-frames/s) of the image series through h5py (HDF5's
   filters, serial), through our raw-chunk path into new arrays, and into
   reused buffers, at 1 and 2 threads; for the gzip file and a bitshuffle/LZ4
   copy of it (made here);
2. a breakdown of one integrate pass at one thread: read data.nxs (with the
   validity mask), read mask.nxs, per-frame geometry, kernel, merge.

Usage:

    .venv/bin/python benchmarks/diffuse_io.py WORKDIR/ours
        # WORKDIR/ours holds refined.expt, data.nxs, mask.nxs
"""

import argparse
import concurrent.futures
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from dials_diffuse import _kernels
from dials_diffuse.algorithms.diffuse.integrate import merge_partials
from dials_diffuse.algorithms.diffuse.mask import MaskFile
from dials_diffuse.algorithms.diffuse.sweep import load_sweep
from dials_diffuse.images.nexus_data import IMAGE_SERIES, NexusDataSource
from dials_diffuse.images.source import read_reusing
from dials_diffuse.io.image_series import compression_options
from dials_diffuse.util.inputs import load_inputs


def bslz4_copy(path, directory):
    """A copy of data.nxs with the image series compressed by bitshuffle/LZ4."""
    target = Path(directory) / "data_bslz4.nxs"
    with h5py.File(path, "r") as source, h5py.File(target, "w") as copy:
        source.copy(source["entry"], copy, "entry", without_attrs=False)
        del copy[IMAGE_SERIES + "/data"]
        data = source[IMAGE_SERIES + "/data"]
        out = copy[IMAGE_SERIES].create_dataset(
            "data",
            shape=data.shape,
            dtype=data.dtype,
            chunks=data.chunks,
            **compression_options("bslz4"),
        )
        for first in range(0, data.shape[0], data.chunks[0]):
            out[first : first + data.chunks[0]] = data[first : first + data.chunks[0]]
    return target


def rate(function, items, threads, pixel_frames):
    start = time.perf_counter()
    if threads == 1:
        for item in items:
            function(item)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(function, items))
    return pixel_frames / (time.perf_counter() - start)


def read_rates(path, frames_per_chunk):
    source = NexusDataSource(path)
    chunks = list(source.chunks(frames=frames_per_chunk))
    pixel_frames = source.n_frames * np.prod(source.panel_shapes[0])
    dataset = h5py.File(path, "r")[IMAGE_SERIES + "/data"]

    def h5py_read(chunk):
        return dataset[chunk.frames]

    rows = {}
    for threads in (1, 2):
        rows[("h5py (HDF5 filters)", threads)] = rate(
            h5py_read, chunks, threads, pixel_frames
        )
        rows[("raw chunks, new arrays", threads)] = rate(
            source.read, chunks, threads, pixel_frames
        )
        rows[("raw chunks, reused buffers", threads)] = rate(
            lambda chunk: read_reusing(source, chunk), chunks, threads, pixel_frames
        )
    return source.codec_name, rows


def integrate_breakdown(directory, frames_per_chunk):
    """Seconds per step of integrate at one thread (mask.nxs, subdivide 2,2,2)."""
    sweep = load_sweep(
        load_inputs([str(directory / "refined.expt")]), directory / "data.nxs"
    )
    mask_file = MaskFile(directory / "mask.nxs")
    times = dict.fromkeys(
        [
            "s1 (once)",
            "read data.nxs",
            "read mask.nxs",
            "frame geometry",
            "kernel",
            "merge",
        ],
        0.0,
    )
    start = time.perf_counter()
    sweep.s1  # noqa: B018
    times["s1 (once)"] = time.perf_counter() - start
    seconds = sweep.source.exposure_times
    partials = []
    for chunk in sweep.chunks(frames_per_chunk):
        frames = np.arange(chunk.frames.start, chunk.frames.stop)
        t0 = time.perf_counter()
        data, valid = read_reusing(sweep.source, chunk)
        t1 = time.perf_counter()
        exclude = mask_file.read(sweep.source.image_numbers[frames])
        t2 = time.perf_counter()
        s0, matrices, phi = sweep.s0(frames), sweep.matrices(frames), sweep.phi(frames)
        t3 = time.perf_counter()
        partials.append(
            _kernels.integrate_voxels(
                data,
                sweep.s1,
                s0,
                matrices,
                np.full(3, 2.0),
                np.ascontiguousarray(phi),
                np.ascontiguousarray(seconds[frames]),
                valid=valid,
                exclude=exclude,
            )
        )
        t4 = time.perf_counter()
        for name, (a, b) in zip(
            ["read data.nxs", "read mask.nxs", "frame geometry", "kernel"],
            [(t0, t1), (t1, t2), (t2, t3), (t3, t4)],
        ):
            times[name] += b - a
    start = time.perf_counter()
    merge_partials(partials, (2, 2, 2), 1.0)
    times["merge"] = time.perf_counter() - start
    return int(np.prod(sweep.shape)), times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "directory", type=Path, help="holds refined.expt, data.nxs, mask.nxs"
    )
    parser.add_argument("--frames-per-chunk", type=int, default=10)
    args = parser.parse_args()
    directory = args.directory.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        files = [directory / "data.nxs", bslz4_copy(directory / "data.nxs", scratch)]
        print(
            f"{'data.nxs codec':<18} {'reader':<28} {'threads':>7} {'M pixel-frames/s':>17}"
        )
        for path in files:
            codec, rows = read_rates(path, args.frames_per_chunk)
            for (reader, threads), value in rows.items():
                print(f"{codec:<18} {reader:<28} {threads:>7} {value / 1e6:17.0f}")
    pixel_frames, times = integrate_breakdown(directory, args.frames_per_chunk)
    total = sum(times.values())
    print()
    print(
        f"integrate at one thread, {pixel_frames / 1e6:.0f} M pixel-frames: {total:.2f} s"
    )
    for name, seconds in times.items():
        print(f"  {name:<16} {seconds:6.2f} s {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    main()
