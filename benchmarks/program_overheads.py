"""Whole-process wall time, peak memory and import time of the diffuse programs.

What a user waits for is the whole process: Python start-up and imports,
loading the experiment, per-pixel geometry, the chunked work, merging,
writing the outputs, the plot, the log and output.json. This script runs
each diffuse program several times as its own process under
/usr/bin/time -v (in a scratch copy of the inputs, never writing into the
given directory) and prints the best wall time and its peak resident memory,
then the time to import each program's module in a fresh interpreter
(best of several), so that fixed costs can be compared before and after a
change.

Usage (a directory made by diffuse_vs_mdx2.py, with refined.expt, data.nxs,
peaks.nxs, mask.nxs and integrated.nxs):

    .venv/bin/python benchmarks/program_overheads.py WORKDIR/ours [--runs 3]

    # before/after: an older commit installed elsewhere, runs interleaved
    git archive OLD | tar -x -C /tmp/old && (cd /tmp/old && ./install.sh)
    .venv/bin/python benchmarks/program_overheads.py WORKDIR/ours \\
        --baseline /tmp/old/.venv/bin --runs 5

Machine load matters on shared machines: the load average is printed.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(sys.executable).parent

INPUTS = ("refined.expt", "data.nxs", "peaks.nxs", "mask.nxs", "integrated.nxs")

STEPS = {
    "import_data": ["refined.expt", "compression=gzip", "output.data=new_data.nxs"],
    "find_peaks": [
        "refined.expt",
        "data.nxs",
        "count_threshold=20",
        "nproc=1",
        "output.peaks=new_peaks.nxs",
        "output.reflections=new_peaks.refl",
    ],
    "mask_peaks": [
        "refined.expt",
        "data.nxs",
        "peaks.nxs",
        "sigma_cutoff=3",
        "nproc=1",
        "output.mask=new_mask.nxs",
    ],
    "integrate": [
        "refined.expt",
        "data.nxs",
        "mask=mask.nxs",
        "subdivide=2,2,2",
        "nproc=1",
        "output.table=new_integrated.nxs",
    ],
    "correct": ["refined.expt", "integrated.nxs", "output.table=new_corrected.nxs"],
}


def run_measured(command, workdir):
    """Run `command` under /usr/bin/time -v; return (wall s, peak RSS MB, CPU s).

    CPU is user + system time of the process: less disturbed than wall time
    by other jobs on a shared machine.
    """
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", *command],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    cpu = sum(
        float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", result.stderr).group(1))
        for kind in ("User", "System")
    )
    return wall, int(rss.group(1)) / 1024, cpu


def import_seconds(python, module, runs, workdir):
    """Best wall time (s) of `python -c 'import module'` minus a bare interpreter."""

    def best(code):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([str(python), "-c", code], check=True, cwd=workdir)
            times.append(time.perf_counter() - start)
        return min(times)

    return best(f"import {module}") - best("pass")


def summary(runs):
    """(best wall s, peak MB of that run, best CPU s) of a list of runs."""
    wall, rss, _ = min(runs)
    return wall, rss, min(run[2] for run in runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="inputs (see the docstring)")
    parser.add_argument("--runs", type=int, default=3, help="runs per program")
    parser.add_argument(
        "--steps", nargs="*", default=list(STEPS), help="programs to run"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="the bin/ directory of another installation (e.g. an older "
        "commit's .venv/bin): its runs alternate with ours, same inputs",
    )
    args = parser.parse_args()
    installations = {"ours": HERE}
    if args.baseline:
        installations["baseline"] = args.baseline.resolve()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="program_overheads_") as scratch:
        for name in INPUTS:
            shutil.copy2(args.directory / name, scratch)
        header = f"{'program':<12} {'install':<9} {'best wall s':>11} {'peak MB':>8}"
        print(f"{header} {'best CPU s':>10}  all runs, wall (s)")
        for step in args.steps:
            runs = {name: [] for name in installations}
            for _ in range(args.runs):  # alternate: load changes hit both alike
                for name, bin_dir in installations.items():
                    command = [str(bin_dir / f"dials.diffuse.{step}"), *STEPS[step]]
                    runs[name].append(run_measured(command, scratch))
            for name in installations:
                wall, rss, cpu = summary(runs[name])
                walls = " ".join(f"{run[0]:.2f}" for run in runs[name])
                print(
                    f"{step:<12} {name:<9} {wall:11.2f} {rss:8.0f} {cpu:10.2f}  {walls}"
                )
        print()
        print(f"{'import of (s)':<40} " + " ".join(f"{n:>8}" for n in installations))
        for step in args.steps:
            module = f"dials_diffuse.command_line.{step}"
            seconds = [
                import_seconds(bin_dir / "python", module, args.runs, scratch)
                for bin_dir in installations.values()
            ]
            print(f"{module:<40} " + " ".join(f"{t:8.2f}" for t in seconds))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
