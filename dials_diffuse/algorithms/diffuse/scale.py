"""A smooth scale factor against rotation angle, refined from redundant voxels.

mdx2's scaling model in its simplest form (its b(phi) term): every
observation i of voxel v is I_i = b(phi_i) . I_v + noise, with b piecewise
linear between nodes every `phi_step` degrees. Refined by alternating
weighted least squares:

1. given b, I_v = sum(w_i I_i / b_i) / sum(w_i), w_i = b_i^2 / sigma_i^2;
2. given I_v, the node values minimise
   sum((I_i - b(phi_i) I_v)^2 / sigma_i^2) + smoothness * sum((b_j+1 - b_j)^2)
   (linear least squares, normal equations of size nodes x nodes);
3. b is normalised to a mean of 1 over the observations.

mdx2's other terms (offset against s, absorption and detector models) are
not refined here. Only voxels observed at least twice constrain the model.
"""

import dataclasses

import numpy as np

from dials_diffuse.io.tables import Table
from dials_diffuse.util.errors import UserError


@dataclasses.dataclass
class PhiScaleModel:
    """b(phi): piecewise linear between nodes (degrees), flat beyond the ends."""

    phi: np.ndarray
    scale: np.ndarray

    def weights(self, phi):
        """Interpolation matrix rows: (indices (n, 2), weights (n, 2))."""
        phi = np.asarray(phi, dtype=np.float64)
        if len(self.phi) == 1:
            zeros = np.zeros(len(phi), dtype=int)
            return np.stack([zeros, zeros], 1), np.stack(
                [np.ones(len(phi)), np.zeros(len(phi))], 1
            )
        position = np.clip(
            (phi - self.phi[0]) / (self.phi[1] - self.phi[0]), 0, len(self.phi) - 1
        )
        below = np.minimum(np.floor(position).astype(int), len(self.phi) - 2)
        fraction = position - below
        return np.stack([below, below + 1], 1), np.stack([1 - fraction, fraction], 1)

    def __call__(self, phi):
        index, weight = self.weights(phi)
        return np.sum(self.scale[index] * weight, axis=1)

    def to_table(self, attrs=None):
        return Table(
            "scaling_model", {"phi": self.phi, "scale": self.scale}, dict(attrs or {})
        )

    @classmethod
    def from_table(cls, table):
        return cls(np.asarray(table["phi"], float), np.asarray(table["scale"], float))


def _voxel_groups(observations):
    keys = observations[["h", "k", "l"]].to_numpy(np.float64)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    return group.ravel()


def refine_phi_scale(observations, phi_step=1.0, smoothness=1.0, cycles=10):
    """Refine b(phi) from a corrected table (pandas); return (model, history).

    Parameters
    ----------
    observations : DataFrame
        h, k, l, phi (degrees), intensity, intensity_error.
    phi_step : float
        Degrees between nodes.
    smoothness : float
        Weight of the squared differences of neighbouring nodes, relative to
        the data's chi-square per observation.
    cycles : int
        Alternations of merge and node refinement.

    Returns
    -------
    model : PhiScaleModel
    history : list of float
        Reduced chi-square after each cycle.
    """
    intensity = observations["intensity"].to_numpy(np.float64)
    sigma = observations["intensity_error"].to_numpy(np.float64)
    phi = observations["phi"].to_numpy(np.float64)
    usable = np.isfinite(intensity) & np.isfinite(sigma) & (sigma > 0)
    group = _voxel_groups(observations)
    multiplicity = np.bincount(group[usable])
    usable &= multiplicity[group] >= 2 if len(multiplicity) else usable
    if usable.sum() < 10:
        raise UserError(
            "fewer than 10 redundant observations: nothing to scale against"
        )
    intensity, sigma, phi, group = (
        intensity[usable],
        sigma[usable],
        phi[usable],
        group[usable],
    )
    n_groups = group.max() + 1
    first, last = phi.min(), phi.max()
    n_nodes = max(1, int(np.ceil((last - first) / phi_step)) + 1)
    nodes = first + phi_step * np.arange(n_nodes)
    model = PhiScaleModel(nodes, np.ones(n_nodes))
    index, weight = model.weights(phi)
    inverse_variance = 1.0 / sigma**2
    history = []
    difference = np.diff(np.eye(n_nodes), axis=0)
    penalty = smoothness * len(phi) / max(n_nodes, 1) * (difference.T @ difference)
    for _ in range(cycles):
        b = model(phi)
        w = b**2 * inverse_variance
        merged = np.bincount(group, weights=w * intensity / b, minlength=n_groups) / (
            np.bincount(group, weights=w, minlength=n_groups)
        )
        m = merged[group]
        # Normal equations of sum_i (I_i - m_i sum_j A_ij b_j)^2 / sigma_i^2,
        # A_ij the two interpolation weights of observation i.
        factor = inverse_variance * m * m
        normal = penalty * np.mean(factor)
        for a in range(2):
            for c in range(2):
                np.add.at(
                    normal,
                    (index[:, a], index[:, c]),
                    factor * weight[:, a] * weight[:, c],
                )
        rhs = np.zeros(n_nodes)
        for a in range(2):
            np.add.at(rhs, index[:, a], inverse_variance * m * intensity * weight[:, a])
        model = PhiScaleModel(nodes, np.linalg.solve(normal, rhs))
        model.scale /= np.mean(model(phi))
        residual = (intensity - model(phi) * m) / sigma
        history.append(float(np.mean(residual**2)))
    return model, history
