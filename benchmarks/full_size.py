"""The diffuse chain at full size: several long sweeps of a 1 M-pixel detector.

A simulated data set of realistic size (by default 4 sweeps x 1800 frames of
0.1° on an EIGER2 1M-sized detector of 1028 x 1062 px: 7.9 G
pixel-frames; the sweeps are one
P 21 21 21 crystal in four orientations, with overall scales 1.0, 1.2, 0.9
and 1.1) goes through ``dials.diffuse.process`` end to end:

- ``1 sweep, 450 frames``, ``1 sweep, 1800 frames`` and ``4 sweeps`` with
  ``nproc=2`` threads, to show that memory stays flat in frames and sweeps;
- ``4 sweeps`` on a Dask LocalCluster of 2 worker processes
  (``dask.scheduler=local``);
- mdx2 1.0.5 on sweep 1 (``--nproc 2``), each of its steps a process timed
  with ``/usr/bin/time -v``.

For our runs the table gives, per step, the wall time and the peak resident
memory: of the program's process and, for Dask, of the largest worker
process. A sampler reads /proc every 0.2 s for the whole process tree; a step
starts when its log file (``dials.diffuse.<step>.log``, one per sweep and
step) appears. The simulation itself is timed too. Every figure is printed
and saved in ``WORKDIR/full_size.json``.

    .venv/bin/python benchmarks/full_size.py --workdir /work/bench/full \\
        --mdx2 /work/mdx2-venv/bin

About 4 GB of images, 4 GB of data.nxs and 2 GB of mdx2 files land in the
work directory. ``--frames 40 --sweeps 2`` makes a quick trial. The detector
has the EIGER2 1M shape because mdx2 1.0.5 accepts only detectors of dxtbx's
PILATUS/EIGER module database (its module gap is taken from there; the
simulated gap rows lie elsewhere, which costs mdx2 nothing).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from diffuse_vs_mdx2 import run_measured  # (wall s, peak RSS MB) of a command

HERE = Path(sys.executable).parent
SCALES = (1.0, 1.2, 0.9, 1.1)
SAMPLE_S = 0.2


def simulate(workdir, sweeps, frames, shape):
    """Simulate the sweeps (kept if already there); return their truth.expt paths."""
    from dials_diffuse.simulate import simulate_rotation

    expts = []
    for index in range(sweeps):
        directory = workdir / f"images_{index + 1}"
        expt = directory / "truth.expt"
        if not expt.exists():
            start = time.perf_counter()
            simulate_rotation(
                directory,
                size="demo",
                seed=7,
                sweep=index,
                nx=shape[0],
                ny=shape[1],
                frames=frames,
                width_deg=0.1,
                orientation_seed=101 + index,
                scale=SCALES[index % len(SCALES)],
            )
            print(
                f"simulated sweep {index + 1}: {frames} frames of {shape[0]} x {shape[1]} "
                f"in {time.perf_counter() - start:.0f} s",
                flush=True,
            )
        expts.append(expt)
    return expts


def _tree(pid):
    """The pids of `pid` and all its descendants."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _rss_mb(pid):
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def watch(command, cwd):
    """Run `command` in `cwd`, sampling memory; return (steps, total wall s).

    steps: list of dicts (step, start s, wall s, main MB, worker MB), in the
    order the steps' log files appeared.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    log = open(cwd / "terminal.txt", "w")
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    samples, seen, marks = [], set(), []

    def sample():
        while child.poll() is None:
            now = time.perf_counter() - start
            pids = _tree(child.pid)
            main = max(_rss_mb(pid) for pid in pids[:1])
            workers = [_rss_mb(pid) for pid in pids[1:]]
            samples.append((now, main, max(workers, default=0.0)))
            for path in cwd.glob("**/dials.diffuse.*.log"):
                name = path.relative_to(cwd).as_posix()
                if name not in seen and not name.endswith("process.log"):
                    seen.add(name)
                    marks.append((now, name))
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = child.wait()
    wall = time.perf_counter() - start
    sampler.join()
    log.close()
    if code != 0:
        tail = (cwd / "terminal.txt").read_text()[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{tail}")
    steps = []
    for number, (begin, name) in enumerate(marks):
        end = marks[number + 1][0] if number + 1 < len(marks) else wall
        inside = [s for s in samples if begin <= s[0] <= end] or [samples[-1]]
        label = name.replace("dials.diffuse.", "").replace(".log", "")
        steps.append(
            {
                "step": label,
                "start_s": round(begin, 1),
                "wall_s": round(end - begin, 1),
                "main_mb": round(max(s[1] for s in inside)),
                "worker_mb": round(max(s[2] for s in inside)),
            }
        )
    before = [s for s in samples if not marks or s[0] < marks[0][0]]
    if before:
        steps.insert(
            0,
            {
                "step": "(start-up, planning)",
                "start_s": 0.0,
                "wall_s": round(marks[0][0] if marks else wall, 1),
                "main_mb": round(max(s[1] for s in before)),
                "worker_mb": round(max(s[2] for s in before)),
            },
        )
    return steps, wall


def run_mdx2(mdx2, expt, cwd, threshold, subdivide):
    """mdx2 1.0.5's chain on one sweep, step by step: [(step, wall s, MB)]."""
    cwd.mkdir(parents=True, exist_ok=True)
    tool = lambda name: str(mdx2 / f"mdx2.{name}")  # noqa: E731
    sub = [str(n) for n in subdivide]
    steps = [
        ("import_geometry", [tool("import_geometry"), str(expt)]),
        ("import_data", [tool("import_data"), str(expt), "--nproc", "2"]),
        (
            "find_peaks",
            [tool("find_peaks"), "geometry.nxs", "data.nxs"]
            + ["--count_threshold", str(threshold), "--nproc", "2"],
        ),
        (
            "mask_peaks",
            [tool("mask_peaks"), "geometry.nxs", "data.nxs", "peaks.nxs"]
            + ["--sigma_cutoff", "3", "--nproc", "2"],
        ),
        (
            "integrate",
            [tool("integrate"), "geometry.nxs", "data.nxs", "--mask", "mask.nxs"]
            + ["--subdivide", *sub, "--nproc", "2"],
        ),
        (
            "correct",
            [tool("correct"), "geometry.nxs", "integrated.nxs", "--nproc", "2"],
        ),
        ("scale", [tool("scale"), "corrected.nxs", "--nproc", "2"]),
        (
            "merge",
            [tool("merge"), "corrected.nxs", "--scale", "scales.nxs", "--nproc", "2"],
        ),
    ]
    figures = []
    for name, command in steps:
        wall, rss = run_measured(command, cwd)
        figures.append({"step": name, "wall_s": round(wall, 1), "peak_mb": round(rss)})
        print(f"  mdx2 {name:<16} {wall:8.1f} s {rss:8.0f} MB", flush=True)
    return figures


def print_run(label, steps, wall):
    print(f"\n{label}: {wall:.0f} s in all", flush=True)
    print(
        f"  {'step':<28} {'start s':>8} {'wall s':>8} {'main MB':>8} {'worker MB':>10}"
    )
    for s in steps:
        print(
            f"  {s['step']:<28} {s['start_s']:8.1f} {s['wall_s']:8.1f} "
            f"{s['main_mb']:8d} {s['worker_mb']:10d}",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--sweeps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=1800)
    parser.add_argument("--shape", default="1028,1062", help="detector px (fast, slow)")
    parser.add_argument("--count-threshold", type=float, default=20)
    parser.add_argument("--subdivide", default="2,2,2")
    parser.add_argument("--mdx2", type=Path, help="mdx2 1.0.5 venv bin/ (optional)")
    parser.add_argument(
        "--runs",
        default="short,one,all,dask,mdx2",
        help="which runs, comma-separated: short (1 sweep, a quarter of the "
        "frames), one (1 sweep), all (every sweep), dask (every sweep, "
        "LocalCluster), mdx2 (sweep 1)",
    )
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    shape = [int(n) for n in args.shape.split(",")]
    expts = simulate(workdir, args.sweeps, args.frames, shape)
    pixel_frames = args.sweeps * args.frames * shape[0] * shape[1]
    print(
        f"{args.sweeps} sweeps x {args.frames} frames of {shape[0]} x {shape[1]} px: "
        f"{pixel_frames / 1e9:.2f} G pixel-frames (simulation {time.perf_counter() - start:.0f} s "
        "or earlier)",
        flush=True,
    )
    results_file = workdir / "full_size.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    common = [
        f"find_peaks.count_threshold={args.count_threshold:g}",
        f"integrate.subdivide={args.subdivide}",
        "nproc=2",
    ]
    process = str(HERE / "dials.diffuse.process")
    runs = {
        "short": (
            [str(expts[0]), f"image_range=1,{args.frames // 4}"],
            "1 sweep, quarter",
        ),
        "one": ([str(expts[0])], "1 sweep"),
        "all": ([str(e) for e in expts], f"{args.sweeps} sweeps, threads"),
        "dask": (
            [str(e) for e in expts] + ["dask.scheduler=local"],
            f"{args.sweeps} sweeps, Dask LocalCluster",
        ),
    }
    for name in args.runs.split(","):
        if name == "mdx2":
            if args.mdx2 is None:
                continue
            print("\nmdx2 1.0.5 on sweep 1 (--nproc 2):", flush=True)
            results["mdx2"] = run_mdx2(
                args.mdx2,
                expts[0],
                workdir / "run_mdx2",
                f"{args.count_threshold:g}",
                args.subdivide.split(","),
            )
        else:
            arguments, label = runs[name]
            cwd = workdir / f"run_{name}"
            if cwd.exists():
                subprocess.run(["rm", "-rf", str(cwd)], check=True)
            load = os.getloadavg()[0]
            steps, wall = watch([process, *arguments, *common], cwd)
            print_run(f"{label} (load before {load:.1f})", steps, wall)
            results[name] = {"label": label, "wall_s": round(wall, 1), "steps": steps}
        results_file.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
