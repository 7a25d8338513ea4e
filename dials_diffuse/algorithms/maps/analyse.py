"""Analyse a merged map: symmetry average, isotropic/anisotropic parts, shell statistics.

`do_analyse_map` takes a `ReciprocalMap` (from ``merged.nxs`` of merge or
``map.nxs`` of map, read by `dials_diffuse.io.map_files.read_map`) and

1. averages it over the Laue group (`symmetry.average`), keeping the spread
   of the symmetry mates as an error estimate;
2. splits it into the isotropic component (mean per shell of |s|,
   interpolated) and the anisotropic map (map minus isotropic), as LUNUS;
3. tabulates statistics per resolution shell: completeness of the grid,
   mean, standard deviation and rms anisotropic signal, the merged error,
   I/sigma and the anisotropic signal over the error (when the map has
   errors; mdx2 plots the same two rms values), the symmetry spread, and CC1/2 of the
   split halves (when the map has them, i.e. a merged.nxs of a split merge),
   of the total and of the anisotropic signal (the halves minus the same
   isotropic component, as mdx2's map statistics).

Shells have equal width in |s| = 1/d (inverse Angstrom); the completeness of
a shell is its measured grid points over all grid points of the map's box in
that shell (shells beyond the sphere inscribed in the box are cut by it).
"""

import dataclasses

import numpy as np
import pandas as pd
from libtbx.phil import parse

from dials_diffuse.algorithms.maps.grid import Shells
from dials_diffuse.algorithms.maps.isotropic import isotropic_grid, isotropic_profile
from dials_diffuse.algorithms.maps.symmetry import symmetry_average
from dials_diffuse.util.errors import DataError

phil_str = """
symmetry {
  average = True
    .type = bool
    .help = "Average every voxel with its Laue-symmetry mates (needs the space"
            "group: from the table, the .expt or space_group=). The mates'"
            "standard deviation is kept as an error estimate (symmetry_spread)."
}
shells {
  width = 0.01
    .type = float(value_min=0)
    .help = "Width of the resolution shells in |s| = 1/d (inverse Angstrom)."
}
isotropic {
  trim = 0.0
    .type = float(value_min=0, value_max=0.49)
    .help = "Fraction of the lowest and of the highest voxels of each shell left"
            "out of its mean (robust against Bragg residue; mdx2 uses 0.1)."
  min_voxels = 10
    .type = int(value_min=1)
    .help = "Shells with fewer measured voxels are not used for the isotropic"
            "component (it is interpolated over them)."
}
"""

phil_scope = parse(phil_str)


def pearson(x, y, minimum=3):
    """Pearson correlation over the points finite in both (NaN with fewer than `minimum`)."""
    x = np.ravel(x)
    y = np.ravel(y)
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < minimum:
        return np.nan
    dx = x[both] - x[both].mean()
    dy = y[both] - y[both].mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else np.nan


@dataclasses.dataclass
class MapAnalysis:
    """What `do_analyse_map` found.

    Attributes
    ----------
    map : ReciprocalMap
        Layers: ``intensity`` (symmetry-averaged if asked), ``isotropic``,
        ``anisotropic``, and where available ``intensity_error``,
        ``symmetry_spread``, ``symmetry_mates``, ``intensity_1``/``_2``.
    profile : DataFrame
        The isotropic component per shell (`isotropic_profile`).
    statistics : DataFrame
        Statistics per shell (see the module).
    summary : dict
        Overall numbers (JSON-ready).
    """

    map: object
    profile: pd.DataFrame
    statistics: pd.DataFrame
    summary: dict


def do_analyse_map(recmap, params):
    """Symmetry average, isotropic/anisotropic split and shell statistics of a map.

    Parameters
    ----------
    recmap : ReciprocalMap
        With a unit cell (and a space group for the symmetry average).
    params : extracted `phil_scope`

    Returns
    -------
    MapAnalysis
    """
    s = recmap.s()
    layers = dict(recmap.layers)
    if params.symmetry.average:
        halves = [name for name in ("intensity_1", "intensity_2") if name in layers]
        averages = symmetry_average(recmap, [recmap.signal, *halves])
        mean, spread, mates = averages[recmap.signal]
        layers[recmap.signal] = mean
        layers["symmetry_spread"] = spread
        layers["symmetry_mates"] = mates.astype(np.float32)
        for half in halves:
            layers[half] = averages[half][0]
    values = layers[recmap.signal]
    if not np.isfinite(values).any():
        raise DataError(f"{recmap.source}: the map has no measured voxel")
    measured_s = s[np.isfinite(values)]
    shells = Shells.of_width(params.shells.width, float(measured_s.max()))
    profile = isotropic_profile(values, s, shells, params.isotropic.trim)
    isotropic = isotropic_grid(profile, s, params.isotropic.min_voxels)
    layers["isotropic"] = isotropic
    layers["anisotropic"] = values - isotropic
    analysed = recmap.with_layers(layers, recmap.signal)
    statistics = shell_statistics(analysed, s, shells)
    summary = overall_summary(analysed, profile)
    return MapAnalysis(analysed, profile, statistics, summary)


def _rms(values):
    values = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(values * values))) if values.size else np.nan


def shell_statistics(recmap, s, shells):
    """Per shell of |s|: completeness, mean, sigma, I/sigma, spread, CC1/2 (see module)."""
    layers = recmap.layers
    number = shells.index(s.ravel())
    flat = {name: values.ravel() for name, values in layers.items()}
    values = flat[recmap.signal]
    rows = []
    for shell in range(shells.count):
        inside = number == shell
        part = values[inside]
        measured = np.isfinite(part)
        row = {
            "s_low": shells.edges[shell],
            "s_high": shells.edges[shell + 1],
            "d_low": 1.0 / shells.edges[shell] if shell else np.inf,
            "d_high": 1.0 / shells.edges[shell + 1],
            "grid_points": int(inside.sum()),
            "measured": int(measured.sum()),
            "completeness": float(measured.mean()) if inside.any() else np.nan,
            "mean": float(part[measured].mean()) if measured.any() else np.nan,
            "sigma": float(part[measured].std()) if measured.sum() > 1 else np.nan,
            "anisotropic_rms": _rms(flat["anisotropic"][inside]),
        }
        if "intensity_error" in flat:
            row["rms_error"] = _rms(
                np.where(measured, flat["intensity_error"][inside], np.nan)
            )
            row["i_over_sigma"] = row["mean"] / row["rms_error"]
            row["anisotropic_over_sigma"] = row["anisotropic_rms"] / row["rms_error"]
        if "symmetry_spread" in flat:
            row["symmetry_spread"] = _rms(flat["symmetry_spread"][inside])
        if "intensity_1" in flat and "intensity_2" in flat:
            first, second = flat["intensity_1"][inside], flat["intensity_2"][inside]
            isotropic = flat["isotropic"][inside]
            row["cc_half"] = pearson(first, second)
            row["cc_half_anisotropic"] = pearson(first - isotropic, second - isotropic)
        rows.append(row)
    return pd.DataFrame(rows)


def overall_summary(recmap, profile):
    """Overall numbers of an analysed map (JSON-ready)."""
    layers = recmap.layers
    values = layers[recmap.signal]
    measured = np.isfinite(values)
    summary = {
        "grid_shape": list(recmap.shape),
        "measured_fraction": float(measured.mean()),
        "mean": float(values[measured].mean()),
        "anisotropic_rms": _rms(layers["anisotropic"]),
        "isotropic_fraction_of_variance": float(
            1.0 - np.nanvar(layers["anisotropic"]) / np.nanvar(values)
        )
        if np.nanvar(values) > 0
        else np.nan,
        "shells": len(profile),
    }
    if "intensity_1" in layers and "intensity_2" in layers:
        isotropic = layers["isotropic"]
        summary["cc_half"] = pearson(layers["intensity_1"], layers["intensity_2"])
        summary["cc_half_anisotropic"] = pearson(
            layers["intensity_1"] - isotropic, layers["intensity_2"] - isotropic
        )
    if "symmetry_spread" in layers:
        summary["symmetry_spread_rms"] = _rms(layers["symmetry_spread"])
    return summary
