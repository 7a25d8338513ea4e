"""The isotropic and anisotropic components of a map.

As LUNUS (``anisolt``) and mdx2's map statistics: the isotropic component is
the mean of the measured voxels in shells of |s| = 1/d, interpolated
linearly in |s| between the shells' mean |s| (constant beyond the first and
last shell); the anisotropic map is the map minus that isotropic component
at each voxel's |s|. Optionally the highest and lowest `trim` fraction of
each shell is left out of its mean (mdx2 trims, LUNUS does not).
"""

import numpy as np
import pandas as pd

from dials_diffuse.util.errors import DataError


def isotropic_profile(values, s, shells, trim=0.0):
    """Mean of the measured values per shell of |s|.

    Parameters
    ----------
    values, s : ndarrays of the same shape
        Map values (NaN: not measured) and |s| (inverse Angstrom).
    shells : Shells
    trim : float
        Fraction (0 to 0.5) of the lowest and of the highest values of each
        shell left out of its mean.

    Returns
    -------
    DataFrame
        One row per shell: s_low, s_high (inverse Angstrom), s_mean (mean |s|
        of the measured voxels), d_mean (Angstrom, 1/s_mean), voxels
        (measured), mean (isotropic intensity).
    """
    if not 0 <= trim < 0.5:
        raise DataError(f"trim {trim} must be at least 0 and below 0.5")
    values = np.ravel(values)
    s = np.ravel(s)
    number = shells.index(s)
    use = np.isfinite(values) & (number >= 0)
    rows = []
    order = np.argsort(number[use], kind="stable")
    grouped_values = values[use][order]
    grouped_s = s[use][order]
    bounds = np.searchsorted(number[use][order], np.arange(shells.count + 1))
    for shell in range(shells.count):
        part = grouped_values[bounds[shell] : bounds[shell + 1]]
        part_s = grouped_s[bounds[shell] : bounds[shell + 1]]
        if trim and len(part):
            cut = int(round(trim * len(part)))
            keep = np.argsort(part)[cut : len(part) - cut]
            part, part_s = part[keep], part_s[keep]
        mean = float(part.mean()) if len(part) else np.nan
        s_mean = float(part_s.mean()) if len(part) else np.nan
        rows.append(
            (
                shells.edges[shell],
                shells.edges[shell + 1],
                s_mean,
                np.inf if s_mean == 0 else 1.0 / s_mean,
                len(part),
                mean,
            )
        )
    return pd.DataFrame(
        rows, columns=["s_low", "s_high", "s_mean", "d_mean", "voxels", "mean"]
    )


def isotropic_grid(profile, s, min_voxels=1):
    """The isotropic component at every |s|: the profile interpolated linearly.

    Shells with fewer than `min_voxels` measured voxels are skipped; beyond
    the first and last usable shell the value is that shell's mean.
    """
    usable = (profile["voxels"] >= min_voxels) & np.isfinite(profile["mean"])
    if not usable.any():
        raise DataError("no resolution shell has measured voxels")
    return np.interp(
        s,
        profile.loc[usable, "s_mean"].to_numpy(),
        profile.loc[usable, "mean"].to_numpy(),
    )
