"""Throughput of integrate's merge of the chunks' partial voxel sums.

Integrate's kernel returns, per chunk of frames, the sums of every voxel the
chunk touches; `merge_partials` adds the partials of each voxel and splits
observations more than max_spread degrees apart. With fine subdivisions and
long sweeps that is millions of partials, merged after the chunked work
while the user waits. This script makes synthetic partials like the
kernel's (each voxel seen by a few consecutive chunks of 0.3 degrees, one in
ten again 180 degrees later, rows in hash order) and prints the merge's wall
and CPU time and the process's peak memory.

Usage:

    .venv/bin/python benchmarks/merge_partials.py [voxels] [--chunks 150]
"""

import argparse
import resource
import time

import numpy as np

from dials_diffuse.algorithms.diffuse.integrate import merge_partials


def synthetic_partials(n_voxels, chunks, per_voxel=3, seed=0):
    """Partials of `n_voxels` voxels, each in `per_voxel` consecutive chunks."""
    rng = np.random.default_rng(seed)
    index = rng.integers(-200, 200, size=(n_voxels, 3)).astype(np.int32)
    first_chunk = rng.integers(0, chunks - per_voxel, n_voxels)
    again = np.arange(n_voxels) % 10 == 0
    partials = []
    for chunk in range(chunks):
        seen = np.flatnonzero(
            (first_chunk <= chunk) & (chunk < first_chunk + per_voxel)
        )
        rng.shuffle(seen)
        pixels = rng.integers(1, 30, len(seen)).astype(np.int64)
        phi = chunk * 0.3 + rng.uniform(0, 0.3, len(seen))
        phi += 180.0 * (again[seen] & (chunk == first_chunk[seen] + per_voxel - 1))
        partials.append(
            {
                "index": np.ascontiguousarray(index[seen]),
                "pixels": pixels,
                "counts": rng.integers(0, 100, len(seen)).astype(np.float64),
                "seconds": pixels * 0.1,
                "phi_sum": pixels * phi,
                "iy_sum": pixels * 5.0,
                "ix_sum": pixels * 7.0,
            }
        )
    return partials


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("voxels", type=int, nargs="?", default=2_000_000)
    parser.add_argument("--chunks", type=int, default=150)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    partials = synthetic_partials(args.voxels, args.chunks)
    rows = sum(len(p["pixels"]) for p in partials)
    walls, cpus = [], []
    for _ in range(args.runs):
        wall, cpu = time.perf_counter(), time.process_time()
        table = merge_partials(partials, (2, 2, 2), 1.0)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{rows / 1e6:.1f} M partials -> {len(table) / 1e6:.2f} M voxel observations: "
        f"best {min(walls):.2f} s wall, {min(cpus):.2f} s CPU "
        f"({rows / min(walls) / 1e6:.1f} M partials/s); peak memory {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
