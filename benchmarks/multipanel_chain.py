"""The diffuse chain on 8 detector modules against the same frames as one panel.

The simulated rotation sweep (``--size demo``: 512 x 512 px, 90 frames) is
written twice from the same seed: as one flat panel and as 4 x 2 NXmx
modules (8 DIALS panels, the same pixels where they lie on the flat panel).
Each diffuse step (import_data, find_peaks, mask_peaks, integrate, correct,
scale with the detector term) runs on both, the two variants alternating
round by round. Each run is a fresh Python process that imports the program
first and then times only ``program.run(args)``: wall time and the process's
CPU time (all threads), so start-up and imports are left out and no cache
carries over between runs. Medians over the rounds and the ratio
multi-panel / single panel per step are printed (and saved in
``WORKDIR/multipanel_chain.json``).

    .venv/bin/python benchmarks/multipanel_chain.py --workdir /tmp/mp --rounds 3

The machine is shared: compare the two columns of one run (alternating
rounds), not the absolute times between runs.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DRIVER = """
import json, os, resource, sys, time
from dials_diffuse.command_line import {step} as program
start = time.perf_counter()
usage = resource.getrusage(resource.RUSAGE_SELF)
code = program.run(sys.argv[1:])
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{
    "code": code,
    "wall_s": time.perf_counter() - start,
    "cpu_s": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
}}))
"""


def steps(expt, threshold=30):
    """(label, program module, arguments) of each step, run in one directory.

    As dials.diffuse.process runs them: import_data reads the images (through
    dxtbx), the later steps data.nxs; find_peaks also once on the images.
    """
    return [
        ("import_data", "import_data", [expt]),
        (
            "find_peaks (images)",
            "find_peaks",
            [expt, f"count_threshold={threshold}", "output.peaks=peaks_images.nxs"],
        ),
        (
            "find_peaks",
            "find_peaks",
            [expt, "data.nxs", f"count_threshold={threshold}"],
        ),
        ("mask_peaks", "mask_peaks", [expt, "data.nxs", "peaks.nxs"]),
        ("integrate", "integrate", [expt, "data.nxs", "mask=mask.nxs"]),
        ("correct", "correct", [expt, "integrated.nxs"]),
        (
            "scale",
            "scale",
            ["corrected.nxs", "detector.enable=True", "validation.enable=False"],
        ),
    ]


def run_step(step, args, cwd):
    """Time one step in a new process; return its dict (code, wall_s, cpu_s)."""
    result = subprocess.run(
        [sys.executable, "-c", DRIVER.format(step=step), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        sys.exit(f"{step} failed in {cwd}:\n{result.stderr[-2000:]}")
    record = json.loads(lines[-1])
    if record["code"] != 0:
        sys.exit(f"{step} exited {record['code']} in {cwd}:\n{result.stderr[-2000:]}")
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--size", default="demo", choices=("test", "demo"))
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    from dials_diffuse.simulate import simulate_rotation

    workdir = options.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    variants = {"one panel": None, "8 modules": (4, 2)}
    expts = {}
    for name, modules in variants.items():
        directory = workdir / name.replace(" ", "_") / "images"
        if not (directory / "truth.expt").exists():
            directory.parent.mkdir(exist_ok=True)
            extra = {"modules": modules} if modules else {}
            simulate_rotation(directory, size=options.size, **extra)
        expts[name] = str(directory / "truth.expt")

    times = {name: {} for name in variants}
    for round_number in range(options.rounds):
        # Alternate which variant goes first, so load changes hit both alike.
        order = list(variants)[:: 1 if round_number % 2 == 0 else -1]
        for name in order:
            cwd = workdir / name.replace(" ", "_") / f"round_{round_number + 1}"
            cwd.mkdir(exist_ok=True)
            for label, step, args in steps(expts[name]):
                record = run_step(step, args, cwd)
                times[name].setdefault(label, []).append(record)
        print(f"round {round_number + 1} done, load {os.getloadavg()[0]:.1f}")

    def median(values):
        values = sorted(values)
        middle = len(values) // 2
        if len(values) % 2:
            return values[middle]
        return 0.5 * (values[middle - 1] + values[middle])

    rows = []
    print(
        f"\n{'step':20} {'one panel wall s':>17} {'8 modules wall s':>17} "
        f"{'ratio':>6} {'one panel CPU s':>16} {'8 modules CPU s':>16} {'ratio':>6}"
    )
    for step, _, _ in steps("x"):
        single = times["one panel"][step]
        multi = times["8 modules"][step]
        row = {
            "step": step,
            "single_wall_s": median([r["wall_s"] for r in single]),
            "multi_wall_s": median([r["wall_s"] for r in multi]),
            "single_cpu_s": median([r["cpu_s"] for r in single]),
            "multi_cpu_s": median([r["cpu_s"] for r in multi]),
        }
        rows.append(row)
        print(
            f"{step:20} {row['single_wall_s']:17.2f} {row['multi_wall_s']:17.2f} "
            f"{row['multi_wall_s'] / row['single_wall_s']:6.2f} "
            f"{row['single_cpu_s']:16.2f} {row['multi_cpu_s']:16.2f} "
            f"{row['multi_cpu_s'] / row['single_cpu_s']:6.2f}"
        )
    summary = {
        "size": options.size,
        "rounds": options.rounds,
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "steps": rows,
    }
    (workdir / "multipanel_chain.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
