"""Throughput and peak memory of polar_transform and angular_correlation vs shots.

Writes SACLA-layout files (512 x 512 float32 shots, a modulated ring) with
increasing numbers of shots and runs the two programs on each, in a fresh
process, reporting wall time, shots per second and peak resident memory.
Memory must not grow with the number of shots (shots are streamed).

    .venv/bin/python benchmarks/xfel_streaming.py [--shots 40 160] [--nproc 2]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def run_measured(command, cwd):
    """Run a command; return (wall seconds, peak RSS in MB)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{command[0]} failed: {process.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[40, 160])
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(REPOSITORY))
    from tests.xfel.conftest import write_sacla_file

    bin_dir = Path(sys.executable).parent
    print(
        f"{'program':22s} {'shots':>6s} {'wall s':>7s} {'shots/s':>8s} {'peak MB':>8s}"
    )
    with tempfile.TemporaryDirectory() as directory:
        for n in args.shots:
            path = Path(directory) / f"run_{n}.h5"
            write_sacla_file(
                path,
                shape=(512, 512),
                beam_centre=(250.3, 260.7),
                ring_radius=180.0,
                n_shots=n,
                n_dark=2,
            )
            polar = [
                str(bin_dir / "dials.diffuse.polar_transform"),
                str(path),
                "q_range=0.2,0.9",
                "nq=200",
                "nphi=720",
                "normalise=True",
                f"nproc={args.nproc}",
                "output.plot=None",
            ]
            wall, peak = run_measured(polar, directory)
            print(
                f"{'polar_transform':22s} {n:6d} {wall:7.2f} {n / wall:8.1f} {peak:8.0f}"
            )
            correlation = [
                str(bin_dir / "dials.diffuse.angular_correlation"),
                "polar.h5",
                f"nproc={args.nproc}",
                "output.plot=None",
            ]
            wall, peak = run_measured(correlation, directory)
            print(
                f"{'angular_correlation':22s} {n:6d} {wall:7.2f} {n / wall:8.1f} {peak:8.0f}"
            )


if __name__ == "__main__":
    sys.exit(main())
