"""Maps with a known diffuse signal for the map-analysis tests.

The signal is the simulator's analytic diffuse model (dials_diffuse.simulate
.scattering.DiffuseModel: halos around the lattice points and a liquid ring
in |s|) plus a flat background, on a small grid (2 points per r.l.u. to
|s| = 0.3 1/Angstrom in the simulator's P212121 cell), with Gaussian noise
of a known standard deviation proportional to sqrt(intensity), like counts.
"""

import numpy as np
import pytest

from dials_diffuse.algorithms.maps.grid import ReciprocalMap
from dials_diffuse.simulate.scattering import DiffuseModel

CELL = (34.0, 41.0, 52.0, 90.0, 90.0, 90.0)
SPACE_GROUP = "P 21 21 21"
SUBDIVIDE = 2
S_MAX = 0.3
BACKGROUND = 10.0
NOISE = 0.3  # sigma = NOISE * sqrt(intensity)


class KnownMap:
    """A noisy map and its noiseless parts (ring, halos, background)."""

    def __init__(self, seed=0):
        model = DiffuseModel(halo_kappa=0.5)
        half = [int(S_MAX * length * SUBDIVIDE) + 1 for length in CELL[:3]]
        axes = [np.arange(-n, n + 1) / SUBDIVIDE for n in half]
        empty = np.zeros([len(a) for a in axes])
        self.map = ReciprocalMap(
            axes, {"intensity": empty}, [SUBDIVIDE] * 3, CELL, SPACE_GROUP
        )
        self.s = self.map.s()
        hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        inside = self.s <= S_MAX
        self.ring = np.where(
            inside,
            model.ring_amplitude
            * np.exp(-0.5 * ((self.s - model.ring_s) / model.ring_width) ** 2),
            np.nan,
        )
        self.model = model
        self.total = np.where(inside, model(hkl, self.s) + BACKGROUND, np.nan)
        self.halos = self.total - self.ring - BACKGROUND
        self.sigma = NOISE * np.sqrt(np.nan_to_num(self.total))
        rng = np.random.default_rng(seed)
        self.noise = rng.normal(size=self.total.shape) * self.sigma
        self.map.layers["intensity"] = self.total + self.noise


@pytest.fixture(scope="module")
def known_map():
    return KnownMap()
