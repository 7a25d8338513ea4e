"""Polar resampling: map building and per-shot resampling, single- and
multi-panel, against pyFAI.

Cases (the same frames for every method of a case):

- ``1M``: a PILATUS 1M-sized panel (981 x 1043 px of 0.172 mm, 200 mm,
  1 Å), int32 Poisson frames with two rings, onto 500 q x 360 phi (the
  figure of issue 15) and onto the program's default grid (about one
  sample per pixel: 500 x 3140);
- ``64 panels``: a tiled CSPAD-like detector (dials_diffuse.simulate.tiled:
  8 x 8 panels of 256 x 256 px, 0.11 mm, 100 mm; 4.2 M pixels), float32
  frames with a validity mask (as polar_transform reads shots), onto
  1000 q x 6280 phi (about one sample per pixel).

For each: the map building time (nearest, bilinear, bilinear with
oversample=3), and the resampling time per shot of our C++ kernel (one
thread, one shot per call, as the program's worker threads do), per output
sample and per detector pixel. pyFAI's ``integrate2d_ng`` (CSR engine, no
pixel splitting, one OpenMP thread; PyPI release in its own venv, given
with --pyfai-python) runs on the 1M frames onto the same 500 x 360 grid,
and on a flat 2048 x 2048 frame onto the 64-panel grid (as a proxy for its
cost on 4 M pixels: a tiled pyFAI detector needs its own corner arrays).

The machine is shared: rounds interleave every method (ours, then the pyFAI
process), and the table gives the median over rounds, with the load average
before and after.

    .venv/bin/python benchmarks/polar_resampling.py --pyfai-python /tmp/pyfai/bin/python
"""

import argparse
import json
import os
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
TILED = {"tiles": 8, "panel_shape": (256, 256), "pixel_mm": 0.11, "gap_px": 4}
TILED_DISTANCE = 100.0
TILED_GRID = (1000, 6280)


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


def tiled_q_range():
    """q from the hole to the middle of the detector's edge."""
    half = TILED["tiles"] / 2 * (TILED["panel_shape"][1] + TILED["gap_px"])
    r_mm = 0.98 * half * TILED["pixel_mm"]
    two_theta = np.arctan(r_mm / TILED_DISTANCE)
    return 0.05, 4 * np.pi * np.sin(two_theta / 2) / WAVELENGTH


def single_panel():
    from dxtbx.model import DetectorFactory

    return DetectorFactory.simple(
        "PAD",
        DISTANCE_MM,
        (SHAPE[1] / 2 * PIXEL_MM, SHAPE[0] / 2 * PIXEL_MM),
        "+x",
        "-y",
        (PIXEL_MM, PIXEL_MM),
        (SHAPE[1], SHAPE[0]),
        (-1, 1e6),
    )


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def build_cases(n_frames):
    """Every (case, method): its map (timed) and frames."""
    from dxtbx.model import Beam

    from dials_diffuse.algorithms.xfel.polar import q_polar_map
    from dials_diffuse.simulate.tiled import tiled_detector

    beam = Beam((0.0, 0.0, 1.0), WAVELENGTH)
    one = single_panel()
    frames = make_frames(n_frames)
    tiled = tiled_detector(distance_mm=TILED_DISTANCE, **TILED)
    rng = np.random.default_rng(1)
    tiled_pixels = sum(p.get_image_size()[0] * p.get_image_size()[1] for p in tiled)
    tiled_frames = rng.poisson(50.0, (max(2, n_frames // 3), tiled_pixels)).astype(
        np.float32
    )
    tiled_valid = rng.random(tiled_frames.shape) > 0.01
    grids = [
        ("1M 500x360", one, np.linspace(*q_range(), N_Q), N_PHI, frames, None),
        ("1M 500x3140", one, np.linspace(*q_range(), 500), 3140, frames, None),
        (
            "64 panels 1000x6280",
            tiled,
            np.linspace(*tiled_q_range(), TILED_GRID[0]),
            TILED_GRID[1],
            tiled_frames,
            tiled_valid,
        ),
    ]
    cases = []
    for name, detector, q, nphi, data, valid in grids:
        for method, oversample in (("nearest", 1), ("bilinear", 1), ("bilinear", 3)):
            seconds, polar_map = timed(
                lambda d=detector, q=q, n=nphi, m=method, o=oversample: q_polar_map(
                    d, beam, q, n, m, o
                )
            )
            label = f"{name} {method}" + (f" x{oversample}" if oversample > 1 else "")
            cases.append(
                {
                    "name": label,
                    "map": polar_map,
                    "frames": data,
                    "valid": valid,
                    "build": seconds,
                    "pixels": data[0].size,
                    "bins": int(np.prod(polar_map.shape)),
                    "times": [],
                }
            )
    return cases


def resample_round(case):
    """Seconds per shot, one shot per call (a fresh frame each time)."""
    polar_map, frames, valid = case["map"], case["frames"], case["valid"]
    start = time.perf_counter()
    for i in range(len(frames)):
        polar_map.apply(frames[i : i + 1], None if valid is None else valid[i : i + 1])
    return (time.perf_counter() - start) / len(frames)


PYFAI_CODE = r"""
import json, sys, time
import numpy as np
import pyFAI
from pyFAI.integrator.azimuthal import AzimuthalIntegrator
frames = np.load(sys.argv[1])
q_min, q_max, n_q, n_phi, pixel_m, dist_m, wavelength_m = map(float, sys.argv[2:9])
shape = frames.shape[1:]
ai = AzimuthalIntegrator(dist=dist_m, poni1=shape[0] / 2 * pixel_m,
                         poni2=shape[1] / 2 * pixel_m, pixel1=pixel_m,
                         pixel2=pixel_m, wavelength=wavelength_m)
kwargs = dict(npt_rad=int(n_q), npt_azim=int(n_phi), unit="q_A^-1",
              method=("no", "csr", "cython"), radial_range=(q_min, q_max))
start = time.perf_counter()
ai.integrate2d_ng(frames[0], **kwargs)
setup = time.perf_counter() - start
start = time.perf_counter()
for frame in frames:
    ai.integrate2d_ng(frame, **kwargs)
print(json.dumps({"version": pyFAI.version, "setup": setup,
                  "per_frame": (time.perf_counter() - start) / len(frames)}))
"""


def pyfai_round(python, path, q, n_q, n_phi, pixel_mm, distance_mm):
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    output = subprocess.run(
        [
            python,
            "-c",
            PYFAI_CODE,
            str(path),
            str(q[0]),
            str(q[1]),
            str(n_q),
            str(n_phi),
            str(pixel_mm / 1000),
            str(distance_mm / 1000),
            str(WAVELENGTH * 1e-10),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pyfai-python", help="python with pyFAI from PyPI")
    args = parser.parse_args()
    load_before = os.getloadavg()
    cases = build_cases(args.frames)
    pyfai_cases = []
    with tempfile.TemporaryDirectory() as directory:
        if args.pyfai_python:
            one = Path(directory) / "one.npy"
            np.save(one, make_frames(args.frames))
            flat = Path(directory) / "flat.npy"
            rng = np.random.default_rng(2)
            np.save(flat, rng.poisson(50.0, (4, 2048, 2048)).astype(np.float32))
            pyfai_cases = [
                ("pyFAI 1M 500x360", (one, q_range(), N_Q, N_PHI, PIXEL_MM, 200.0)),
                (
                    "pyFAI 4M flat 1000x6280",
                    (flat, tiled_q_range(), *TILED_GRID, TILED["pixel_mm"], 100.0),
                ),
            ]
        pyfai_times = {name: [] for name, _ in pyfai_cases}
        pyfai_info = {}
        for _ in range(args.rounds):
            for case in cases:
                case["times"].append(resample_round(case))
            for name, spec in pyfai_cases:
                result = pyfai_round(args.pyfai_python, *spec)
                pyfai_times[name].append(result["per_frame"])
                pyfai_info[name] = result
    load_after = os.getloadavg()
    print(
        f"load average (1, 5, 15 min) before {load_before[0]:.1f} {load_before[1]:.1f} "
        f"{load_before[2]:.1f}, after {load_after[0]:.1f} {load_after[1]:.1f} "
        f"{load_after[2]:.1f}; {os.cpu_count()} cores; medians of {args.rounds} "
        "interleaved rounds"
    )
    header = (
        f"{'case':34s} {'build s':>8s} {'ms/shot':>8s} {'ns/sample':>10s} "
        f"{'ns/pixel':>9s} {'vs pyFAI':>9s}"
    )
    print(header)
    reference = {
        "1M 500x360": np.median(pyfai_times.get("pyFAI 1M 500x360", [np.nan])),
        "64 panels 1000x6280": np.median(
            pyfai_times.get("pyFAI 4M flat 1000x6280", [np.nan])
        ),
    }
    for case in cases:
        per_shot = float(np.median(case["times"]))
        ref = next(
            (v for k, v in reference.items() if case["name"].startswith(k)), None
        )
        ratio = (
            f"{ref / per_shot:8.1f}x" if ref is not None and np.isfinite(ref) else ""
        )
        print(
            f"{case['name']:34s} {case['build']:8.3f} {1000 * per_shot:8.2f} "
            f"{1e9 * per_shot / case['bins']:10.2f} "
            f"{1e9 * per_shot / case['pixels']:9.3f} {ratio:>9s}"
        )
    for name, times in pyfai_times.items():
        info = pyfai_info[name]
        print(
            f"{name + ' ' + info['version']:34s} {info['setup']:8.3f} "
            f"{1000 * np.median(times):8.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
