"""Benchmark dials.diffuse's scaling-model refinement against mdx2 1.0.5's.

Both refine the same b(phi) (and, with --detector, d(ix, iy)) from the same
simulated redundant table (voxels seen `--per-voxel` times at random phi,
ix, iy; a known b(phi) = 1 + 0.3 sin(phi / 5) and d), with mdx2's defaults
and mdx2's stage order, each in its own process. The table gives the wall
time of the refinement alone (data loading excluded), the peak resident
memory of the process (from /usr/bin/time -v) and how well each recovers
the known b (rms relative deviation, up to one constant).

Usage:

    .venv/bin/python benchmarks/scale_vs_mdx2.py --mdx2 /work/mdx2-venv/bin
    .venv/bin/python benchmarks/scale_vs_mdx2.py --observations 4000000 --detector \\
        --mdx2 /work/mdx2-venv/bin
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def true_b(phi):
    return 1 + 0.3 * np.sin(phi / 5.0)


def true_d(ix, iy):
    return 1 + 0.2 * (ix / 1475 - 0.5) + 0.1 * np.cos(np.pi * iy / 1679)


def simulate(path, observations, per_voxel, seed=0):
    """A redundant table (PILATUS-2M-sized ix/iy, 90 degrees) saved as .npz."""
    rng = np.random.default_rng(seed)
    n_voxels = observations // per_voxel
    n = n_voxels * per_voxel
    truth = rng.gamma(2.0, 50.0, size=n_voxels)
    voxel = np.repeat(np.arange(n_voxels), per_voxel)
    phi = rng.uniform(0, 90, n)
    ix, iy = rng.uniform(0, 1475, n), rng.uniform(0, 1679, n)
    s = np.repeat(rng.uniform(0.05, 0.6, n_voxels), per_voxel)
    expected = truth[voxel] * true_b(phi) * true_d(ix, iy)
    sigma = np.sqrt(expected) + 1.0
    np.savez(
        path,
        h=(voxel % 1000).astype(np.float64),
        k=(voxel // 1000).astype(np.float64),
        l=np.zeros(n),
        voxel=voxel,
        phi=phi,
        ix=ix,
        iy=iy,
        s=s,
        intensity=expected + rng.normal(size=n) * sigma,
        intensity_error=sigma,
    )


def worker_ours(data, detector):
    import pandas as pd

    from dials_diffuse.algorithms.diffuse.scale import (
        DetectorSettings,
        ScalingSettings,
        refine_scale_model,
    )

    frame = pd.DataFrame({key: data[key] for key in data.files if key != "voxel"})
    settings = {"scaling": ScalingSettings()}
    if detector:
        settings["detector"] = DetectorSettings()
    start = time.perf_counter()
    (model,), _ = refine_scale_model(frame, settings)
    seconds = time.perf_counter() - start
    return seconds, model.terms["scaling"].at(frame)


def worker_mdx2(data, detector):
    from loguru import logger
    from mdx2.command_line.scale import (
        DetectorModelParameters,
        ScalingModelParameters,
        mask_outliers,
        refine_detector_model,
        refine_scaling_model,
    )
    from mdx2.scaling import BatchModelRefiner, ScaledData

    logger.remove()
    start = time.perf_counter()
    scaled = ScaledData(
        data["intensity"],
        data["intensity_error"],
        data["voxel"],
        phi=data["phi"],
        s=data["s"],
        ix=data["ix"],
        iy=data["iy"],
        batch=np.zeros(len(data["phi"]), dtype=int),
    )
    scaled.mask_singletons()
    refiner = BatchModelRefiner(scaled)
    refiner.add_scaling_models(dphi=1.0)
    if detector:
        refiner.add_detector_model(nix=200, niy=200)
    refine_scaling_model(refiner, ScalingModelParameters())
    mask_outliers(refiner, ScalingModelParameters().outlier)
    if detector:
        refine_detector_model(refiner, DetectorModelParameters())
        mask_outliers(refiner, DetectorModelParameters().outlier)
    seconds = time.perf_counter() - start
    return seconds, np.asarray(refiner.b, dtype=np.float64)


def worker(tool, data_path, out_path, detector):
    data = np.load(data_path)
    seconds, b = (worker_ours if tool == "ours" else worker_mdx2)(data, detector)
    truth = true_b(data["phi"])
    ratio = b / truth
    Path(out_path).write_text(
        json.dumps({"seconds": seconds, "b_rms": float(np.std(ratio) / np.mean(ratio))})
    )


def run_measured(command):
    """Run `command`; return peak RSS in MB (from /usr/bin/time -v)."""
    result = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return int(rss.group(1)) / 1024 if rss else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--per-voxel", type=int, default=8)
    parser.add_argument("--detector", action="store_true", help="also refine d(ix, iy)")
    parser.add_argument("--mdx2", help="bin directory of mdx2 1.0.5's venv")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.detector)
        return
    pythons = {"ours": sys.executable}
    if args.mdx2:
        pythons["mdx2"] = str(Path(args.mdx2) / "python")
    terms = "b, d" if args.detector else "b"
    print(
        f"{args.observations} observations, {args.per_voxel} per voxel, terms {terms}"
    )
    print(f"{'tool':6} {'refine (s)':>11} {'peak RSS (MB)':>14} {'b rms dev':>10}")
    with tempfile.TemporaryDirectory() as workdir:
        data = Path(workdir) / "table.npz"
        simulate(data, args.observations, args.per_voxel)
        rows = {}
        for tool, python in pythons.items():
            out = Path(workdir) / f"{tool}.json"
            command = [python, __file__, "--worker", tool, str(data), str(out)]
            rss = run_measured(command + (["--detector"] if args.detector else []))
            rows[tool] = json.loads(out.read_text())
            print(
                f"{tool:6} {rows[tool]['seconds']:11.2f} {rss:14.0f} "
                f"{rows[tool]['b_rms']:10.4f}"
            )
        if "mdx2" in rows:
            print(f"speed-up: {rows['mdx2']['seconds'] / rows['ours']['seconds']:.2f}x")


if __name__ == "__main__":
    main()
