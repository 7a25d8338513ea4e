"""Polar resampling throughput: our C++ sparse map vs a numpy gather vs pyFAI.

The same frames (PILATUS 1M size, 981 x 1043 px of 0.172 mm, 200 mm, 1 Å)
are resampled onto the same output grid (500 q rows x 360 phi) by

- our kernel (`PolarMap.apply`, C++, GIL released), nearest and bilinear,
  on one thread and on every core through `ParallelMap`;
- a numpy gather with the same map (``frame[indices]``, and the weighted
  four-pixel sum for bilinear);
- pyFAI's `integrate2d_ng` with the CSR engine (``("no", "csr", "cython")``,
  no pixel splitting), one OpenMP thread, run by the interpreter given with
  --pyfai-python (pyFAI from PyPI in its own venv: Debian's 0.21 is buggy).

Map/engine set-up is timed apart from the per-frame work. Run::

    .venv/bin/python benchmarks/polar_resampling.py --pyfai-python /work/pyfai-venv/bin/python
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (1043, 981)  # slow, fast
PIXEL_MM = 0.172
DISTANCE_MM = 200.0
WAVELENGTH = 1.0
N_Q, N_PHI = 500, 360


def make_frames(n, seed=0):
    """Poisson frames with two rings around the middle of the detector."""
    rng = np.random.default_rng(seed)
    slow, fast = np.indices(SHAPE)
    r = np.hypot(fast + 0.5 - SHAPE[1] / 2, slow + 0.5 - SHAPE[0] / 2)
    expected = 20 + 300 * np.exp(-0.5 * ((r - 250) / 2) ** 2)
    expected += 200 * np.exp(-0.5 * ((r - 400) / 2) ** 2)
    return rng.poisson(expected, size=(n,) + SHAPE).astype(np.int32)


def q_range():
    """0.05 Å⁻¹ to the q at the middle of the shortest detector edge."""
    r_mm = PIXEL_MM * min(SHAPE) / 2 * 0.98
    two_theta = np.arctan(r_mm / DISTANCE_MM)
    return 0.05, 4 * np.pi * np.sin(two_theta / 2) / WAVELENGTH


def best_of(function, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def ours(frames, nproc):
    from dxtbx.model import Beam, DetectorFactory

    from dials_diffuse.algorithms.xfel.polar import q_polar_map
    from dials_diffuse.util.parallel import ParallelMap

    detector = DetectorFactory.simple(
        "PAD",
        DISTANCE_MM,
        (SHAPE[1] / 2 * PIXEL_MM, SHAPE[0] / 2 * PIXEL_MM),
        "+x",
        "-y",
        (PIXEL_MM, PIXEL_MM),
        (SHAPE[1], SHAPE[0]),
        (-1, 1e6),
    )
    beam = Beam((0.0, 0.0, 1.0), WAVELENGTH)
    q = np.linspace(*q_range(), N_Q)
    rows = []
    n = len(frames)
    for method in ("nearest", "bilinear"):
        start = time.perf_counter()
        polar_map = q_polar_map(detector, beam, q, N_PHI, method)
        setup = time.perf_counter() - start
        single = best_of(lambda m=polar_map: [m.apply(f[None]) for f in frames])
        with ParallelMap(nproc=nproc) as pmap:
            threaded = best_of(
                lambda m=polar_map: list(pmap(lambda f: m.apply(f[None]), frames))
            )
        flat = frames.reshape(n, -1)
        index, weight = dense_map(polar_map, 1 if method == "nearest" else 4)

        def gather(index=index, weight=weight, flat=flat):
            for frame in flat:
                if index.shape[1] == 1:
                    frame[index[:, 0]].astype(np.float32)
                else:
                    (frame[index] * weight).sum(axis=1)

        numpy_time = best_of(gather)
        rows.append((f"ours C++ {method}, 1 thread", setup, single / n))
        rows.append((f"ours C++ {method}, {nproc} threads", setup, threaded / n))
        rows.append((f"numpy gather {method}", setup, numpy_time / n))
    return rows


def dense_map(polar_map, k):
    """The CSR map as (n_bins, k) pixel indices and weights, zero-padded."""
    counts = np.diff(polar_map.indptr)
    rows = np.repeat(np.arange(counts.size), counts)
    position = np.arange(rows.size) - polar_map.indptr[rows]
    index = np.zeros((counts.size, k), dtype=np.int32)
    weight = np.zeros((counts.size, k), dtype=np.float32)
    index[rows, position] = polar_map.indices
    weight[rows, position] = polar_map.weights
    return index, weight


PYFAI_CODE = r"""
import json, sys, time, os
import numpy as np
import pyFAI
from pyFAI.integrator.azimuthal import AzimuthalIntegrator
frames = np.load(sys.argv[1])
q_min, q_max, n_q, n_phi, pixel_m, dist_m, wavelength_m = map(float, sys.argv[2:9])
shape = frames.shape[1:]
ai = AzimuthalIntegrator(dist=dist_m, poni1=shape[0] / 2 * pixel_m,
                         poni2=shape[1] / 2 * pixel_m, pixel1=pixel_m,
                         pixel2=pixel_m, wavelength=wavelength_m)
method = ("no", "csr", "cython")
kwargs = dict(npt_rad=int(n_q), npt_azim=int(n_phi), unit="q_A^-1",
              method=method, radial_range=(q_min, q_max))
start = time.perf_counter()
ai.integrate2d_ng(frames[0], **kwargs)
setup = time.perf_counter() - start
best = 1e9
for _ in range(3):
    start = time.perf_counter()
    for frame in frames:
        ai.integrate2d_ng(frame, **kwargs)
    best = min(best, time.perf_counter() - start)
print(json.dumps({"version": pyFAI.version, "setup": setup,
                  "per_frame": best / len(frames)}))
"""


def pyfai(frames, python):
    q_min, q_max = q_range()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "frames.npy"
        np.save(path, frames)
        env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        output = subprocess.run(
            [
                python,
                "-c",
                PYFAI_CODE,
                str(path),
                str(q_min),
                str(q_max),
                str(N_Q),
                str(N_PHI),
                str(PIXEL_MM / 1000),
                str(DISTANCE_MM / 1000),
                str(WAVELENGTH * 1e-10),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return (
        f"pyFAI {result['version']} integrate2d_ng CSR, 1 thread",
        result["setup"],
        result["per_frame"],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--pyfai-python", help="python with pyFAI from PyPI")
    args = parser.parse_args()
    frames = make_frames(args.frames)
    print(
        f"{args.frames} frames {SHAPE[1]} x {SHAPE[0]} px -> {N_Q} q x {N_PHI} phi "
        f"(q {q_range()[0]:.3f}-{q_range()[1]:.3f} Å⁻¹)"
    )
    rows = ours(frames, args.nproc)
    if args.pyfai_python:
        rows.append(pyfai(frames, args.pyfai_python))
    reference = rows[-1][2] if args.pyfai_python else None
    print(
        f"{'method':44s} {'setup s':>8s} {'ms/frame':>9s} {'frames/s':>9s} {'vs pyFAI':>9s}"
    )
    for name, setup, per_frame in rows:
        ratio = f"{reference / per_frame:8.1f}x" if reference else ""
        print(
            f"{name:44s} {setup:8.3f} {1000 * per_frame:9.2f} {1 / per_frame:9.0f} {ratio:>9s}"
        )


if __name__ == "__main__":
    sys.exit(main())
