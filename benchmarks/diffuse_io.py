"""The read/write path of the diffuse chain: data.nxs and mask.nxs, before and after.

Reads a data.nxs and mask.nxs made by the diffuse chain (e.g. by
benchmarks/diffuse_vs_mdx2.py; they are not modified) in chunks of whole
frames and prints, best of --repeats runs:

1. read throughput (pixel-frames/s) into reused buffers, at 1 and 2
   threads, of each file through
   - h5py (HDF5's own filters, serial behind h5py's lock),
   - the zlib path (before): raw chunks inflated by Python's zlib, placed
     by the C++ place_chunk, then `data >= 0` as a new array,
   - the libdeflate path (now): ChunkedDataset.read, one C++ place_chunks
     call per block (libdeflate, SSE2 unshuffle, validity mask fused);
   for data.nxs the validity mask (data >= 0) is part of each read;
2. write throughput of the same blocks compressed into whole HDF5 chunks
   (data: shuffle + deflate, int32; mask: deflate, uint8), at one thread:
   h5py (HDF5's filters), numpy shuffle + zlib (before), libdeflate at
   levels 1 and 2 (now for data.nxs) and, for the mask, the runs coder
   of deflate_chunks(runs=True) (now for mask.nxs), with the compressed size;
3. one integrate pass at one thread split into reading data.nxs (with the
   validity mask), reading mask.nxs, per-frame geometry, kernel, merge, and
   the in-process rate of read + mask + kernel.

Usage:

    .venv/bin/python benchmarks/diffuse_io.py WORKDIR/ours [--bslz4]
        # WORKDIR/ours holds refined.expt, data.nxs, mask.nxs
"""

import argparse
import concurrent.futures
import functools
import os
import tempfile
import time
import zlib
from pathlib import Path

import h5py
import numpy as np

from dials_diffuse import _kernels
from dials_diffuse.algorithms.diffuse.integrate import merge_partials
from dials_diffuse.images.hdf5_chunks import (
    CODEC_SHUFFLE_DEFLATE,
    ChunkedDataset,
    deflate_chunks,
    read_raw_chunks,
)
from dials_diffuse.images.source import read_reusing, thread_buffer
from dials_diffuse.io.image_series import IMAGE_SERIES, compression_options
from dials_diffuse.io.mask_file import GROUP as MASK_GROUP
from dials_diffuse.io.mask_file import MaskFile
from dials_diffuse.util.inputs import load_inputs, load_sweep

DATASETS = {"data.nxs": IMAGE_SERIES + "/data", "mask.nxs": MASK_GROUP + "/mask"}


def bslz4_copy(path, directory):
    """A copy of data.nxs with the image series compressed by bitshuffle/LZ4."""
    target = Path(directory) / "data_bslz4.nxs"
    with h5py.File(path, "r") as source, h5py.File(target, "w") as copy:
        data = source[IMAGE_SERIES + "/data"]
        out = copy.create_dataset(
            IMAGE_SERIES + "/data",
            shape=data.shape,
            dtype=data.dtype,
            chunks=data.chunks,
            **compression_options("bslz4"),
        )
        for first in range(0, data.shape[0], data.chunks[0]):
            out[first : first + data.chunks[0]] = data[first : first + data.chunks[0]]
    return target


def best_seconds(function, items, threads, repeats):
    """Best wall time of `function` over all items, in `threads` threads."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        if threads == 1:
            for item in items:
                function(item)
        else:
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                list(pool.map(function, items))
        best = min(best, time.perf_counter() - start)
    return best


class Readers:
    """The three ways of reading blocks of whole frames of one dataset."""

    def __init__(self, path, name, frames_per_chunk):
        self.path = str(path)
        self.reader = ChunkedDataset(path, name)
        self.dataset = h5py.File(path, "r")[name]
        self.descriptor = os.open(path, os.O_RDONLY)
        self.with_valid = self.dataset.dtype != np.uint8  # data, not mask
        n_frames, self.rows, self.columns = self.dataset.shape
        self.blocks = [
            slice(f, min(f + frames_per_chunk, n_frames))
            for f in range(0, n_frames, frames_per_chunk)
        ]
        self.pixel_frames = int(np.prod(self.dataset.shape))

    def _buffer(self, frames):
        shape = (frames.stop - frames.start, self.rows, self.columns)
        return thread_buffer(shape, self.dataset.dtype, "bench")

    def h5py(self, frames):
        out = self._buffer(frames)
        self.dataset.read_direct(out, np.s_[frames])
        return (out, out >= 0) if self.with_valid else out

    def zlib(self, frames):
        """The path before libdeflate: zlib.decompress + place_chunk, new valid."""
        out = self._buffer(frames)
        chunks = self.reader.chunks
        coords = [
            (frames.start, r, c)
            for r in range(0, self.rows, chunks[1])
            for c in range(0, self.columns, chunks[2])
        ]
        shuffled = self.reader.codec == CODEC_SHUFFLE_DEFLATE
        nbytes = int(np.prod(chunks)) * out.itemsize
        for coord, raw in zip(
            coords, read_raw_chunks(self.dataset, self.descriptor, coords)
        ):
            decoded = zlib.decompress(raw, bufsize=nbytes)
            _kernels.place_chunk(
                decoded, chunks, out, (0, coord[1], coord[2]), shuffled
            )
        return (out, out >= 0) if self.with_valid else out

    def libdeflate(self, frames):
        out = self._buffer(frames)
        valid = (
            thread_buffer(out.shape, bool, "bench_valid") if self.with_valid else None
        )
        everything = (slice(0, self.rows), slice(0, self.columns))
        return self.reader.read(frames, *everything, out=out, valid=valid), valid


def read_table(files, frames_per_chunk, repeats):
    rows = []
    for path in files:
        name = "data.nxs" if "data" in path.name else "mask.nxs"
        readers = Readers(path, DATASETS[name], frames_per_chunk)
        methods = [("h5py (HDF5 filters)", readers.h5py)]
        if readers.reader.codec in (3, 4):  # deflate: the zlib path applies
            methods.append(("zlib + place_chunk (before)", readers.zlib))
        methods.append(("libdeflate place_chunks (now)", readers.libdeflate))
        for threads in (1, 2):
            for label, method in methods:
                seconds = best_seconds(method, readers.blocks, threads, repeats)
                codec = readers.reader.codec_name
                rows.append(
                    (path.name, codec, label, threads, readers.pixel_frames / seconds)
                )
    print(
        f"{'file':<16} {'codec':<16} {'reader':<30} {'threads':>7} {'M pixel-frames/s':>17}"
    )
    for file, codec, label, threads, value in rows:
        print(f"{file:<16} {codec:<16} {label:<30} {threads:>7} {value / 1e6:17.0f}")


def zlib_tiles(block, chunk_shape, level, shuffle):
    """Whole chunks by numpy (shuffle) and Python's zlib: the writer before libdeflate."""
    stored = []
    for row in range(0, block.shape[1], chunk_shape[1]):
        for column in range(0, block.shape[2], chunk_shape[2]):
            tile = np.zeros(chunk_shape, dtype=block.dtype)
            part = block[
                :, row : row + chunk_shape[1], column : column + chunk_shape[2]
            ]
            tile[: part.shape[0], : part.shape[1], : part.shape[2]] = part
            if shuffle:
                tile = np.ascontiguousarray(
                    tile.view(np.uint8).reshape(-1, tile.itemsize).T
                )
            stored.append(zlib.compress(tile, level))
    return stored


def libdeflate_tiles(block, chunk_shape, level, shuffle, runs=False):
    """Whole chunks by deflate_chunks (C++: libdeflate, or the mask deflater)."""
    return [raw for _, raw in deflate_chunks(block, chunk_shape, level, shuffle, runs)]


def h5py_write(source, path):
    """Seconds spent writing `source` block by block through HDF5's filters, bytes."""
    spent = 0.0
    with h5py.File(path, "w") as target:
        copy = target.create_dataset(
            "d",
            shape=source.shape,
            dtype=source.dtype,
            chunks=source.chunks,
            compression="gzip",
            compression_opts=1,
            shuffle=source.shuffle,
        )
        for first in range(0, source.shape[0], source.chunks[0]):
            block = source[first : first + source.chunks[0]]
            start = time.perf_counter()
            copy[first : first + len(block)] = block
            copy.id.flush()
            spent += time.perf_counter() - start
    return spent, os.path.getsize(path)


def write_table(files, repeats, scratch):
    """Compress every block of each file's dataset: best seconds and bytes stored."""
    print(
        f"\n{'file':<16} {'writer (one thread)':<30} {'M pixel-frames/s':>17} {'MB stored':>10}"
    )
    for path in files:
        name = "data.nxs" if "data" in path.name else "mask.nxs"
        source = h5py.File(path, "r")[DATASETS[name]]
        options = {"chunk_shape": source.chunks, "shuffle": bool(source.shuffle)}
        writers = {
            "numpy + zlib level 1 (before)": functools.partial(
                zlib_tiles, level=1, **options
            ),
            "libdeflate level 1": functools.partial(
                libdeflate_tiles, level=1, **options
            ),
            "libdeflate level 2": functools.partial(
                libdeflate_tiles, level=2, **options
            ),
        }
        if name == "mask.nxs":
            writers["mask deflater, runs (now)"] = functools.partial(
                libdeflate_tiles, level=1, runs=True, **options
            )
        else:
            writers["libdeflate level 2 (now)"] = writers.pop("libdeflate level 2")
        results = {"h5py (HDF5 filters, level 1)": (np.inf, 0)}
        for _ in range(repeats):
            seconds, size = h5py_write(source, Path(scratch) / "written.h5")
            results["h5py (HDF5 filters, level 1)"] = (
                min(seconds, results["h5py (HDF5 filters, level 1)"][0]),
                size,
            )
        for label in writers:
            results[label] = (np.inf, 0)
        for _ in range(repeats):
            spent = dict.fromkeys(writers, 0.0)
            sizes = dict.fromkeys(writers, 0)
            for first in range(0, source.shape[0], source.chunks[0]):
                block = source[first : first + source.chunks[0]]
                for label, writer in writers.items():
                    start = time.perf_counter()
                    stored = writer(block)
                    spent[label] += time.perf_counter() - start
                    sizes[label] += sum(map(len, stored))
            for label in writers:
                results[label] = (min(results[label][0], spent[label]), sizes[label])
        pixel_frames = int(np.prod(source.shape))
        for label, (seconds, size) in results.items():
            print(
                f"{path.name:<16} {label:<30} {pixel_frames / seconds / 1e6:17.0f}"
                f" {size / 1e6:10.1f}"
            )


def integrate_breakdown(directory, frames_per_chunk):
    """Seconds per step of integrate at one thread (mask.nxs, subdivide 2,2,2)."""
    sweep = load_sweep(
        load_inputs([str(directory / "refined.expt")]), directory / "data.nxs"
    )
    mask_file = MaskFile(directory / "mask.nxs")
    steps = ["read data.nxs", "read mask.nxs", "frame geometry", "kernel"]
    times = dict.fromkeys(["s1 (once)", *steps, "merge"], 0.0)
    start = time.perf_counter()
    sweep.s1_planes  # noqa: B018
    times["s1 (once)"] = time.perf_counter() - start
    seconds = sweep.source.exposure_times
    partials = []
    for chunk in sweep.chunks(frames_per_chunk):
        frames = np.arange(chunk.frames.start, chunk.frames.stop)
        t0 = time.perf_counter()
        data, valid = read_reusing(sweep.source, chunk)
        t1 = time.perf_counter()
        exclude = mask_file.read(
            sweep.source.image_numbers[frames],
            out=thread_buffer(chunk.shape, np.uint8, "mask"),
        )
        t2 = time.perf_counter()
        s0, matrices, phi = sweep.s0(frames), sweep.matrices(frames), sweep.phi(frames)
        t3 = time.perf_counter()
        partials.append(
            _kernels.integrate_voxels(
                data,
                sweep.s1_planes,
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
        for name, (a, b) in zip(steps, [(t0, t1), (t1, t2), (t2, t3), (t3, t4)]):
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
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument(
        "--bslz4",
        action="store_true",
        help="also read a bitshuffle/LZ4 copy of data.nxs",
    )
    args = parser.parse_args()
    directory = args.directory.resolve()
    print(f"load average (1, 5, 15 min): {os.getloadavg()}, {os.cpu_count()} CPUs\n")
    files = [directory / "data.nxs", directory / "mask.nxs"]
    with tempfile.TemporaryDirectory() as scratch:
        read_files = files + ([bslz4_copy(files[0], scratch)] if args.bslz4 else [])
        read_table(read_files, args.frames_per_chunk, args.repeats)
        write_table(files, args.repeats, scratch)
    best = None
    for _ in range(args.repeats):
        pixel_frames, times = integrate_breakdown(directory, args.frames_per_chunk)
        if best is None or sum(times.values()) < sum(best.values()):
            best = times
    total = sum(best.values())
    print(
        f"\nintegrate at one thread, {pixel_frames / 1e6:.0f} M pixel-frames: {total:.2f} s"
    )
    for name, seconds in best.items():
        print(f"  {name:<16} {seconds:6.2f} s {100 * seconds / total:5.1f}%")
    loop = best["read data.nxs"] + best["read mask.nxs"] + best["kernel"]
    print(f"  read + mask + kernel: {pixel_frames / loop / 1e6:.0f} M pixel-frames/s")


if __name__ == "__main__":
    main()
