"""Histogram kernel vs numpy.histogram and flex.histogram on PILATUS-sized frames.

Prints pixels/s for each, best of several repeats, and checks equal counts.
"""

import time

import numpy as np
from dials.array_family import flex

from dials_diffuse import _kernels


def best_time(function, repeats=5):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    rng = np.random.default_rng(0)
    frames = rng.poisson(3.0, size=(10, 1679, 1475)).astype(np.int32)
    mask = rng.random(frames.shape) > 0.05
    low, high, bins = 0, 12000, 12000
    n = frames.size

    ours = _kernels.histogram(frames, low, high, bins, mask=mask)[0]
    reference = np.histogram(frames[mask], bins=bins, range=(low, high))[0]
    assert np.array_equal(ours, reference)
    flex_data = flex.double(frames[mask].astype(float))

    rows = [
        (
            "dials_diffuse kernel",
            best_time(lambda: _kernels.histogram(frames, low, high, bins, mask=mask)),
        ),
        (
            "numpy.histogram",
            best_time(
                lambda: np.histogram(frames[mask], bins=bins, range=(low, high)), 3
            ),
        ),
        (
            "flex.histogram",
            best_time(
                lambda: flex.histogram(
                    flex_data, data_min=low, data_max=high, n_slots=bins
                ),
                3,
            ),
        ),
    ]
    print(f"{'method':24s} {'time (s)':>10s} {'Mpixel/s':>10s} {'vs kernel':>10s}")
    for name, seconds in rows:
        print(
            f"{name:24s} {seconds:10.3f} {n / seconds / 1e6:10.1f} {seconds / rows[0][1]:10.1f}x"
        )


if __name__ == "__main__":
    main()
