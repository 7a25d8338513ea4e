"""Ring-fit beam centre: time and error against the truth, by image size.

Poisson images of a 6-fold modulated ring (radius 0.32 x size, sigma 2 px)
around an off-centre beam, with a 10-px dead column band; the search starts
at the image centre without a radius guess.

    .venv/bin/python benchmarks/ring_fit.py
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dials_diffuse.algorithms.xfel.rings import find_ring_centre  # noqa: E402
from tests.xfel.conftest import ring_image  # noqa: E402


def main():
    print(
        f"{'image px':>10s} {'seconds':>8s} {'centre error px':>16s} {'radius error px':>16s}"
    )
    for size in (512, 1200, 2399):
        centre = (size / 2 + 11.3, size / 2 - 7.8)
        radius = 0.32 * size
        expected = ring_image((size, size), centre, radius, 2.0, 6, 0.3, 300.0, 20.0)
        image = np.random.default_rng(0).poisson(expected).astype(np.float32)
        valid = np.ones(image.shape, dtype=bool)
        valid[:, size // 2 - 5 : size // 2 + 5] = False
        start = time.perf_counter()
        fit = find_ring_centre(image, valid)
        seconds = time.perf_counter() - start
        error = np.hypot(fit.centre[0] - centre[0], fit.centre[1] - centre[1])
        print(
            f"{size:>5d}x{size:<4d} {seconds:8.2f} {error:16.4f} "
            f"{abs(fit.radius - radius):16.4f}"
        )


if __name__ == "__main__":
    sys.exit(main())
