"""Benchmark the diffuse chain against mdx2 1.0.5, step by step, on the same data.

Each step of both tools runs as its own process at one worker (mdx2
--nproc 1, ours nproc=1, or --ours-nproc threads in one process) on the
same refined.expt and images; the table
gives the wall time of the whole process, the pixel-frames per second of
that time, and the peak resident memory (from /usr/bin/time -v). Our
kernels alone (data already in memory) are timed too.

Usage (DIALS processing of the images is done first when no .expt is given):

    .venv/bin/python benchmarks/diffuse_vs_mdx2.py \\
        --mdx2 /work/mdx2-venv/bin --images ../shared/data/l_cysteine_sweep1

    .venv/bin/python benchmarks/diffuse_vs_mdx2.py --expt refined.expt --mdx2 ...

    # 10 x the 15 frames (cycled), so that start-up costs do not dominate
    # (add --ours-nproc 2 for two threads, --compression bslz4 for that data.nxs):
    .venv/bin/python benchmarks/diffuse_vs_mdx2.py --expt refined.expt \\
        --images ../shared/data/l_cysteine_sweep1 --repeat 10 --mdx2 ...

mdx2 1.0.5 is installed in its own venv (see DESIGN.md, "Reference tools").
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

# As in our programs (command_line/__init__.py): numpy's BLAS pool off.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(sys.executable).parent


def run_measured(command, workdir):
    """Run `command`; return (wall seconds, peak RSS in MB)."""
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
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return wall, int(rss.group(1)) / 1024 if rss else float("nan")


def dials_process(images, workdir):
    """refined.expt from the images by real DIALS (import, find_spots, index, refine)."""
    files = sorted(str(p) for p in Path(images).glob("*.cbf"))
    for command in (
        ["dials.import", *files],
        ["dials.find_spots", "imported.expt", "nproc=2"],
        ["dials.index", "imported.expt", "strong.refl", "space_group=P212121"],
        ["dials.refine", "indexed.expt", "indexed.refl"],
    ):
        subprocess.run(command, cwd=workdir, check=True, capture_output=True)
    return workdir / "refined.expt"


def repeated_sweep(images, refined_expt, repeat, workdir):
    """A sweep `repeat` times longer: the images cycled, the refined crystal.

    The frames are the real images again and again (symlinks), imported by
    dials.import as one continuous scan with the original start and width,
    and given the refined crystal (scan-static): the geometry of the later
    frames does not match their pixels, which does not matter for timing.
    """
    from dxtbx.model.experiment_list import ExperimentListFactory

    files = sorted(Path(images).glob("*.cbf"))
    reference = ExperimentListFactory.from_json_file(
        str(refined_expt), check_format=False
    )[0]
    start, width = reference.scan.get_oscillation()
    linked = workdir / "repeated_images"
    linked.mkdir(exist_ok=True)
    for number in range(repeat * len(files)):
        target = linked / f"frame_{number + 1:05d}.cbf"
        if not target.exists():
            target.symlink_to(files[number % len(files)].resolve())
    subprocess.run(
        [
            "dials.import",
            f"template={linked}/frame_#####.cbf",
            f"geometry.scan.oscillation={start},{width}",
            "output.experiments=repeated.expt",
        ],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    experiments = ExperimentListFactory.from_json_file(
        str(workdir / "repeated.expt"), check_format=False
    )
    crystal = reference.crystal
    crystal.reset_scan_points()
    experiments[0].crystal = crystal
    experiments.as_file(str(workdir / "repeated.expt"))
    return workdir / "repeated.expt"


def kernel_rates(expt, data_file, repeats=3):
    """Pixel-frames/s of the integrate and mask kernels alone (one thread)."""
    import h5py

    from dials_diffuse import _kernels
    from dials_diffuse.algorithms.diffuse.mask import allowed_lattice_points
    from dials_diffuse.util.inputs import load_inputs, load_sweep

    sweep = load_sweep(load_inputs([str(expt)]), data_file)
    with h5py.File(data_file, "r") as handle:
        data = handle["entry/image_series/data"][()]
    frames = np.arange(data.shape[0])
    valid = data >= 0
    s1, s0, matrices = sweep.s1_planes, sweep.s0(frames), sweep.matrices(frames)
    phi = np.ascontiguousarray(sweep.phi(frames))
    seconds = np.ones(len(frames))
    allowed, origin = allowed_lattice_points(sweep.experiment.crystal, 2.0)
    rates = {}
    for name, call in (
        (
            "integrate kernel",
            lambda: _kernels.integrate_voxels(
                data, s1, s0, matrices, np.ones(3), phi, seconds, valid=valid
            ),
        ),
        (
            "mask kernel",
            lambda: _kernels.mask_peak_ellipsoids(
                s1, s0, matrices, np.zeros(3), np.eye(3) * 100, 3.0, allowed, origin
            ),
        ),
    ):
        best = min(_timed(call) for _ in range(repeats))
        rates[name] = data.size / best
    return rates


MDX2_STEADY = """
import sys, time, numpy as np
from mdx2.io import loadobj, nxload
MI = loadobj("geometry.nxs", "miller_index")
Symm = loadobj("geometry.nxs", "symmetry")
IS = loadobj("data.nxs", "image_series")
GP = loadobj("peaks.nxs", "peak_model")
mask = nxload("mask.nxs").entry.mask.signal
slices = list(IS.chunk_slice_iterator())
start = time.perf_counter()
for sl in slices:
    tab = IS[sl].index(MI, mask=mask[sl].nxdata)
    tab.ndiv = (2, 2, 2)
    tab.bin(count_name="pixels")
integrate = time.perf_counter() - start
start = time.perf_counter()
for sl in slices:
    dense = MI.regrid(IS.phi[sl[0]], IS.iy[sl[1]], IS.ix[sl[2]])
    H, K, L = np.round(dense.h), np.round(dense.k), np.round(dense.l)
    Symm.is_reflection(H, K, L) & GP.mask(dense.h - H, dense.k - K, dense.l - L, sigma_cutoff=3)
mask_time = time.perf_counter() - start
print(integrate, mask_time)
"""


def steady_rates(ours_dir, nproc=1, repeats=2):
    """Our pixel-frames/s of integrate and mask_peaks inside one process, setup excluded.

    Reads data.nxs (and the mask) chunk by chunk as the programs do, after
    the one-off per-pixel geometry (s1), at `nproc` threads; the mask is
    computed, not compressed or written (as in MDX2_STEADY). Best of
    `repeats` passes.
    """
    from dials_diffuse.algorithms.diffuse.integrate import integrate
    from dials_diffuse.algorithms.diffuse.mask import PeakMasker
    from dials_diffuse.algorithms.diffuse.peaks import PeakModel
    from dials_diffuse.images.source import thread_buffer
    from dials_diffuse.io.mask_file import MaskFile
    from dials_diffuse.io.tables import load_table
    from dials_diffuse.util.inputs import load_inputs, load_sweep
    from dials_diffuse.util.parallel import ParallelMap

    sweep = load_sweep(
        load_inputs([str(ours_dir / "refined.expt")]), ours_dir / "data.nxs"
    )
    sweep.s1_planes  # noqa: B018 - the one-off geometry, outside the timing
    pixel_frames = int(np.prod(sweep.shape))
    model = PeakModel.from_table(load_table(ours_dir / "peaks.nxs", "peak_model"))
    masker = PeakMasker(sweep, model, 3.0)
    chunks = sweep.chunks(10)
    mask_file = MaskFile(ours_dir / "mask.nxs")

    def mask_chunk(sweep, chunk):  # as mask_peaks computes it (a reused buffer)
        return masker(sweep, chunk, out=thread_buffer(chunk.shape, np.uint8, "mask"))

    def mask_all():
        for _ in sweep.map_chunks(pmap, mask_chunk, chunks, "mask"):
            pass

    with ParallelMap(nproc=nproc) as pmap:
        return {
            "integrate": pixel_frames
            / min(
                _wall(lambda: integrate(sweep, pmap, (2, 2, 2), 1.0, mask_file))
                for _ in range(repeats)
            ),
            "mask_peaks": pixel_frames / min(_wall(mask_all) for _ in range(repeats)),
        }


def mdx2_steady_rates(mdx2_dir, mdx2_python, pixel_frames):
    """mdx2's pixel-frames/s of integrate and mask_peaks in one process (MDX2_STEADY)."""
    result = subprocess.run(
        [str(mdx2_python), "-c", MDX2_STEADY],
        cwd=mdx2_dir,
        capture_output=True,
        text=True,
        check=True,
    )
    mdx2_integrate, mdx2_mask = map(float, result.stdout.split()[-2:])
    return {
        "integrate": pixel_frames / mdx2_integrate,
        "mask_peaks": pixel_frames / mdx2_mask,
    }


def _wall(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _timed(call):
    """CPU seconds of `call` on this thread (robust to other processes' load)."""
    start = time.thread_time()
    call()
    return time.thread_time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expt", type=Path, help="refined.expt (with its images)")
    parser.add_argument("--images", type=Path, help="CBF images to process with DIALS")
    parser.add_argument("--mdx2", type=Path, required=True, help="mdx2 venv bin/")
    parser.add_argument("--count-threshold", type=float, default=20)
    parser.add_argument(
        "--ours-nproc",
        type=int,
        default=1,
        help="Threads for our programs (one process either way; mdx2 runs --nproc 1)",
    )
    parser.add_argument(
        "--compression",
        choices=["gzip", "bslz4"],
        default="gzip",
        help="Compression of our data.nxs (import_data compression=)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="Cycle the images this many times (needs --images) so that fixed "
        "start-up costs do not dominate",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="diffuse_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.expt is None:
        if args.images is None:
            parser.error("give --expt or --images")
        expt = dials_process(args.images.resolve(), workdir)
    else:
        expt = args.expt.resolve()
    if args.repeat > 1:
        if args.images is None:
            parser.error("--repeat needs --images")
        expt = repeated_sweep(args.images.resolve(), expt, args.repeat, workdir)
    ours_dir, mdx2_dir = workdir / "ours", workdir / "mdx2"
    for directory in (ours_dir, mdx2_dir):
        directory.mkdir(exist_ok=True)
        shutil.copy(expt, directory / "refined.expt")

    from dxtbx.model.experiment_list import ExperimentListFactory

    experiment = ExperimentListFactory.from_json_file(str(expt), check_format=False)[0]
    nx, ny = experiment.detector[0].get_image_size()
    pixel_frames = nx * ny * len(experiment.scan)
    threshold = f"{args.count_threshold:g}"

    ours = lambda name: str(HERE / f"dials.diffuse.{name}")  # noqa: E731
    mdx2 = lambda name: str(args.mdx2 / f"mdx2.{name}")  # noqa: E731
    run_measured([mdx2("import_geometry"), "refined.expt"], mdx2_dir)
    steps = [
        (
            "import_data",
            [ours("import_data"), "refined.expt", f"compression={args.compression}"],
            [mdx2("import_data"), "refined.expt", "--nproc", "1"],
        ),
        (
            "find_peaks",
            [
                ours("find_peaks"),
                "refined.expt",
                "data.nxs",
                f"count_threshold={threshold}",
                f"nproc={args.ours_nproc}",
            ],
            [
                mdx2("find_peaks"),
                "geometry.nxs",
                "data.nxs",
                "--count_threshold",
                threshold,
                "--nproc",
                "1",
            ],
        ),
        (
            "mask_peaks",
            [
                ours("mask_peaks"),
                "refined.expt",
                "data.nxs",
                "peaks.nxs",
                "sigma_cutoff=3",
                f"nproc={args.ours_nproc}",
            ],
            [
                mdx2("mask_peaks"),
                "geometry.nxs",
                "data.nxs",
                "peaks.nxs",
                "--sigma_cutoff",
                "3",
                "--nproc",
                "1",
            ],
        ),
        (
            "integrate",
            [
                ours("integrate"),
                "refined.expt",
                "data.nxs",
                "mask=mask.nxs",
                "subdivide=2,2,2",
                f"nproc={args.ours_nproc}",
            ],
            [
                mdx2("integrate"),
                "geometry.nxs",
                "data.nxs",
                "--mask",
                "mask.nxs",
                "--subdivide",
                "2",
                "2",
                "2",
                "--nproc",
                "1",
            ],
        ),
        (
            "correct",
            [ours("correct"), "refined.expt", "integrated.nxs"],
            [mdx2("correct"), "geometry.nxs", "integrated.nxs"],
        ),
    ]
    print(
        f"{pixel_frames / 1e6:.1f} M pixel-frames ({len(experiment.scan)} frames of {nx} x {ny})"
    )
    header = f"{'step':<12} {'ours s':>8} {'mdx2 s':>8} {'ours Mpx/s':>11} {'mdx2 Mpx/s':>11} {'speed-up':>9} {'ours MB':>8} {'mdx2 MB':>8}"
    print(header)
    print("-" * len(header))
    for name, our_command, their_command in steps:
        our_wall, our_rss = run_measured(our_command, ours_dir)
        their_wall, their_rss = run_measured(their_command, mdx2_dir)
        print(
            f"{name:<12} {our_wall:8.2f} {their_wall:8.2f} "
            f"{pixel_frames / our_wall / 1e6:11.1f} {pixel_frames / their_wall / 1e6:11.1f} "
            f"{their_wall / our_wall:8.1f}x {our_rss:8.0f} {their_rss:8.0f}"
        )
    print()
    print("Inside one process, setup excluded (reading data.nxs; mdx2 one worker):")
    theirs = mdx2_steady_rates(mdx2_dir, args.mdx2 / "python", pixel_frames)
    for nproc in sorted({1, args.ours_nproc}):
        for name, our_rate in steady_rates(ours_dir, nproc).items():
            their_rate = theirs[name]
            print(
                f"{name:<12} ours ({nproc} thread{'s' if nproc > 1 else ''}) "
                f"{our_rate / 1e6:7.1f} M pixel-frames/s, "
                f"mdx2 {their_rate / 1e6:6.1f} M pixel-frames/s: "
                f"{our_rate / their_rate:5.1f}x"
            )
    for name, rate in kernel_rates(
        ours_dir / "refined.expt", ours_dir / "data.nxs"
    ).items():
        print(
            f"{name:<24} {rate / 1e6:8.1f} M pixel-frames/s (one thread, data in memory)"
        )
    print(f"(work directory: {workdir})")


if __name__ == "__main__":
    main()
