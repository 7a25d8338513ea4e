"""Synthetic datasets with known ground truth, in the formats real detectors write.

Each ``simulate_<kind>(directory, size="test", seed=0)`` writes one dataset
and its ``truth.h5`` into a new directory and returns the paths. The
datasets are deterministic for a seed.
"""

from dials_diffuse.simulate.rotation import simulate_rotation

__all__ = ["simulate_rotation"]
