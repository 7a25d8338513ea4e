"""Synthetic datasets with known ground truth, in the formats real detectors write.

Each ``simulate_<kind>(directory, size="test", seed=0, ...)`` writes one
dataset and its ``truth.h5`` into a new directory and returns the paths (a
dict). The datasets are deterministic for a seed; "test" sizes take seconds,
"demo" sizes are what the demo uses. The truth files are documented in each
kind's module.
"""

from dials_diffuse.simulate.eiger_series import simulate_eiger_series
from dials_diffuse.simulate.rotation import simulate_rotation
from dials_diffuse.simulate.sacla import simulate_sacla
from dials_diffuse.simulate.transmission_series import simulate_transmission_series

__all__ = [
    "simulate_eiger_series",
    "simulate_rotation",
    "simulate_sacla",
    "simulate_transmission_series",
]
