"""Intensity linearity across a transmission series.

The same crystal measured at several beam transmissions (attenuations) gives
the same reflections with intensities that should scale with the
transmission. Matching each reflection of every experiment to the same
reflection in a reference experiment (same Miller index and the same side
of the Ewald sphere, `entering`; the nearest predicted position when a
reflection occurs more than once), the ratio I / I_reference should equal
T / T_reference. Its mean and median per experiment, a straight-line fit of
ratio against relative transmission (ideal: slope 1, intercept 0, R^2 1),
and the ratio per bin of reference intensity (where a non-linear detector
shows: bright reflections saturate, weak ones do not) measure linearity.
"""

import dataclasses
import logging
import math
import re

import numpy as np
import pandas as pd
from libtbx.phil import parse

from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)

# A transmission in a file or directory name: "..._0.064transmission..." or
# "...transmission_0.064...".
DEFAULT_FILENAME_PATTERN = (
    r"(?P<value>\d+(?:\.\d*)?|\.\d+)[_-]?transmission"
    r"|transmission[_-]?(?P<after>\d+(?:\.\d*)?|\.\d+)"
)

INTENSITY_FLAGS = {"prf": "integrated_prf", "sum": "integrated_sum"}

#: The parameters of intensity_linearity (its program includes them).
phil_scope = parse(
    f"""
reference = None
  .type = int(value_min=0)
  .help = "Experiment (0-based) whose intensities the others are divided by."
          "Default: the one with the highest transmission, else the last."
intensity = *prf sum
  .type = choice
  .help = "Profile-fitted (prf) or summation (sum) intensities."
min_i_over_sigma = 3
  .type = float(allow_none=False)
  .help = "Use only reflections with I/sigma(I) at least this, in both experiments."
match {{
  max_separation = None
    .type = float(value_min=0)
    .help = "Also require the predicted positions (xyzcal.px) of a pair to be"
            "within this distance, in pixels (one image counts as one pixel)."
            "None: match on Miller index and entering alone."
}}
transmission {{
  values = None
    .type = floats(value_min=0)
    .help = "Transmission of each experiment, in experiment order (fractions"
            "or percentages: only ratios matter). Overrides the beam models and"
            "file names."
  filename_pattern = "{DEFAULT_FILENAME_PATTERN}"
    .type = str
    .help = "Regular expression finding the transmission in an image path:"
            "group 'value' or 'after', else the first group."
}}
bins = 8
  .type = int(value_min=1, allow_none=False)
  .help = "Number of bins of reference intensity (logarithmic) for the"
          "deviation from linearity."
"""
)


def reflection_frame(table, intensity="prf", min_i_over_sigma=3.0):
    """Integrated reflections with a significant intensity, as a DataFrame.

    Parameters
    ----------
    table : flex.reflection_table
        Integrated reflections (`miller_index`, `entering`, `id`,
        `xyzcal.px`, `intensity.<intensity>.value/variance`, flags).
    intensity : {'prf', 'sum'}
        Profile-fitted or summation intensities.
    min_i_over_sigma : float
        Keep reflections with I / sigma(I) at least this.

    Returns
    -------
    DataFrame
        Columns id, h, k, l, entering, x, y, z (predicted position: px, px,
        image number from 0), intensity, sigma, one row per reflection.
    """
    value_column = f"intensity.{intensity}.value"
    variance_column = f"intensity.{intensity}.variance"
    needed = [
        "miller_index",
        "entering",
        "id",
        "xyzcal.px",
        value_column,
        variance_column,
    ]
    missing = [column for column in needed if column not in table]
    if missing:
        raise DataError(
            f"the reflections lack column(s) {', '.join(missing)}: "
            "use integrated reflections (integrated.refl)"
        )
    flag = getattr(table.flags, INTENSITY_FLAGS[intensity])
    table = table.select(table.get_flags(flag))
    hkl = table["miller_index"].as_vec3_double().as_numpy_array().astype(np.int64)
    xyz = table["xyzcal.px"].as_numpy_array()
    value = table[value_column].as_numpy_array()
    variance = table[variance_column].as_numpy_array()
    frame = pd.DataFrame(
        {
            "id": table["id"].as_numpy_array(),
            "h": hkl[:, 0],
            "k": hkl[:, 1],
            "l": hkl[:, 2],
            "entering": table["entering"].as_numpy_array(),
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": xyz[:, 2],
            "intensity": value,
            "sigma": np.sqrt(np.where(variance > 0, variance, np.nan)),
        }
    )
    significant = frame["sigma"].notna() & (
        frame["intensity"] >= min_i_over_sigma * frame["sigma"]
    )
    return frame[significant & (frame["id"] >= 0)].reset_index(drop=True)


def match_to_reference(reference, other, max_separation=None):
    """Pairs of the same reflection in `other` and `reference`.

    Reflections match on Miller index and `entering`. Where a key occurs more
    than once (e.g. a sweep over 360 degrees, split reflections), each
    reflection pairs with its nearest partner in predicted position, and
    each is used at most once. With `max_separation` (px; the image number
    counts as one px), pairs farther apart are dropped, as DIALS's
    `reflection_table.match` does with observed positions.

    Returns
    -------
    DataFrame
        h, k, l, entering, reference_intensity, reference_sigma, intensity,
        sigma, separation (px), ratio = intensity / reference_intensity.
    """
    keys = ["h", "k", "l", "entering"]
    merged = reference.merge(other, on=keys, suffixes=("_reference", ""))
    merged["separation"] = np.sqrt(
        (merged["x"] - merged["x_reference"]) ** 2
        + (merged["y"] - merged["y_reference"]) ** 2
        + (merged["z"] - merged["z_reference"]) ** 2
    )
    if max_separation is not None:
        merged = merged[merged["separation"] <= max_separation]
    # Nearest first; then each reflection of either table used once.
    merged = merged.sort_values("separation", kind="stable")
    merged = merged.drop_duplicates(["index_reference"]).drop_duplicates(["index"])
    merged = merged.sort_values("index_reference").reset_index(drop=True)
    pairs = pd.DataFrame(
        {
            "h": merged["h"],
            "k": merged["k"],
            "l": merged["l"],
            "entering": merged["entering"],
            "reference_intensity": merged["intensity_reference"],
            "reference_sigma": merged["sigma_reference"],
            "intensity": merged["intensity"],
            "sigma": merged["sigma"],
            "separation": merged["separation"],
        }
    )
    pairs["ratio"] = pairs["intensity"] / pairs["reference_intensity"]
    return pairs


def transmission_from_name(path, pattern=DEFAULT_FILENAME_PATTERN):
    """The transmission written in a file path (the last match), or None.

    The number is the named group 'value' or 'after' that matched, else the
    pattern's first group.
    """
    try:
        matches = list(re.finditer(pattern, str(path), flags=re.IGNORECASE))
    except re.error as error:
        raise DataError(f"transmission.filename_pattern: {error}") from error
    if not matches:
        return None
    match = matches[-1]
    named = [text for text in match.groupdict().values() if text is not None]
    if named:
        return float(named[0])
    if match.re.groups == 0:
        raise DataError("transmission.filename_pattern needs a group around the number")
    return float(match.group(1))


def experiment_transmissions(
    experiments, values=None, pattern=DEFAULT_FILENAME_PATTERN
):
    """The transmission of every experiment, and where it came from.

    In order of preference: `values` given by the user (one per experiment);
    the beam models, when they record a transmission other than the default
    1 for some experiment; the image file names (e.g. `*_0.064transmission*`).

    Returns
    -------
    transmissions : ndarray of float or None
        None when no source gives a value for every experiment.
    source : str
        'parameter', 'beam', 'file names' or 'unknown'.
    """
    n = len(experiments)
    if values:
        if len(values) != n:
            raise DataError(
                f"transmission.values has {len(values)} values for {n} experiments"
            )
        return np.asarray(values, dtype=float), "parameter"
    beams = [experiment.beam for experiment in experiments]
    if all(beam is not None for beam in beams):
        from_beam = np.array([beam.get_transmission() for beam in beams], dtype=float)
        if np.any(from_beam != 1.0):
            return from_beam, "beam"
    from_names = []
    for experiment in experiments:
        paths = experiment.imageset.paths() if experiment.imageset else []
        found = transmission_from_name(paths[0], pattern) if paths else None
        from_names.append(found)
    if all(value is not None for value in from_names):
        return np.array(from_names, dtype=float), "file names"
    return None, "unknown"


def fit_line(x, y):
    """Least-squares y = slope * x + intercept; returns (slope, intercept, R^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    r_squared = 1.0 - (residual**2).sum() / total if total > 0 else math.nan
    return float(slope), float(intercept), float(r_squared)


@dataclasses.dataclass
class LinearityResult:
    """What `intensity_linearity` found.

    Attributes
    ----------
    reference : int
        Experiment number of the reference.
    transmission_source : str
        Where the transmissions came from ('unknown' if nowhere).
    experiments : DataFrame
        One row per experiment: experiment, transmission,
        relative_transmission (T / T_reference), reflections, matched,
        mean_ratio, mean_ratio_error (standard error), median_ratio,
        deviation (median ratio / relative transmission - 1).
    pairs : dict of int -> DataFrame
        Matched pairs per experiment (see `match_to_reference`).
    fit : dict or None
        slope, intercept, r_squared of mean ratio against relative
        transmission over the experiments other than the reference.
    bins : DataFrame
        Per experiment and bin of reference intensity: bin_low, bin_high,
        pairs, median_ratio, deviation from the expected ratio.
    """

    reference: int
    transmission_source: str
    experiments: pd.DataFrame
    pairs: dict
    fit: dict
    bins: pd.DataFrame

    def to_frame(self):
        """The per-experiment table."""
        return self.experiments

    def summary(self):
        """The key results for a program's JSON summary."""
        return {
            "reference": self.reference,
            "transmission_source": self.transmission_source,
            "experiments": self.experiments.to_dict(orient="records"),
            "fit": self.fit,
        }

    def log(self):
        """The per-experiment table and the fit, in the log."""
        logger.info(
            "Reference: experiment %d; transmissions from %s",
            self.reference,
            self.transmission_source,
        )
        logger.info(
            "%4s %12s %9s %8s %8s %11s %12s %10s",
            "expt",
            "transmission",
            "relative",
            "refl",
            "matched",
            "mean ratio",
            "median ratio",
            "deviation",
        )
        for row in self.experiments.itertuples():
            logger.info(
                "%4d %12.5g %9.5g %8d %8d %11.5f %12.5f %+10.4f",
                row.experiment,
                row.transmission,
                row.relative_transmission,
                row.reflections,
                row.matched,
                row.mean_ratio,
                row.median_ratio,
                row.deviation,
            )
        if self.fit:
            logger.info(
                "Fit of mean ratio against relative transmission: slope %.5f, "
                "intercept %+.5f, R^2 %.6f (linear: 1, 0, 1)",
                self.fit["slope"],
                self.fit["intercept"],
                self.fit["r_squared"],
            )
        else:
            logger.info(
                "No fit: it needs transmissions and two experiments besides the reference"
            )


def _deviation_bins(pairs, expected, n_bins, edges):
    rows = []
    index = np.digitize(pairs["reference_intensity"], edges[1:-1])
    for b in range(n_bins):
        ratios = pairs["ratio"][index == b]
        median = float(np.median(ratios)) if len(ratios) else math.nan
        rows.append(
            {
                "bin_low": edges[b],
                "bin_high": edges[b + 1],
                "pairs": int(len(ratios)),
                "median_ratio": median,
                "deviation": median / expected - 1.0 if expected else math.nan,
            }
        )
    return rows


def intensity_linearity(
    table,
    experiments=None,
    reference=None,
    intensity="prf",
    min_i_over_sigma=3.0,
    transmissions=None,
    filename_pattern=DEFAULT_FILENAME_PATTERN,
    max_separation=None,
    n_bins=8,
):
    """Ratio of matched intensities to a reference experiment, against transmission.

    Parameters
    ----------
    table : flex.reflection_table
        Integrated reflections of every experiment (column `id`).
    experiments : ExperimentList, optional
        For transmissions from the beam models or image file names.
    reference : int, optional
        Reference experiment; default the one with the highest transmission
        (the last experiment when transmissions are unknown).
    intensity : {'prf', 'sum'}
    min_i_over_sigma : float
    transmissions : list of float, optional
        One per experiment; overrides the beam models and file names.
    filename_pattern : str
        Regular expression finding the transmission in a file path (group
        'value' or 'after', else the first group).
    max_separation : float, optional
        Drop pairs whose predicted positions differ by more (px).
    n_bins : int
        Bins of reference intensity (logarithmic) for the deviation table.

    Returns
    -------
    LinearityResult
    """
    frame = reflection_frame(table, intensity, min_i_over_sigma)
    frame["index"] = np.arange(len(frame))
    if experiments:
        n_experiments = len(experiments)
        values, source = experiment_transmissions(
            experiments, transmissions, filename_pattern
        )
    else:
        n_experiments = int(table["id"].as_numpy_array().max()) + 1
        values, source = None, "unknown"
        if transmissions:
            values, source = np.asarray(transmissions, dtype=float), "parameter"
    if values is not None and len(values) != n_experiments:
        raise DataError(f"{len(values)} transmissions for {n_experiments} experiments")
    if values is not None and np.any(values <= 0):
        raise DataError("transmissions must be positive")
    if reference is None:
        reference = int(np.argmax(values)) if values is not None else n_experiments - 1
    if not 0 <= reference < n_experiments:
        raise DataError(
            f"reference={reference}: there are experiments 0 to {n_experiments - 1}"
        )
    reference_rows = frame[frame["id"] == reference]
    if len(reference_rows) == 0:
        raise DataError(
            f"the reference experiment {reference} has no integrated reflection "
            f"with I/sigma >= {min_i_over_sigma:g}"
        )

    pairs = {}
    rows = []
    for number in range(n_experiments):
        rows_here = frame[frame["id"] == number]
        matched = match_to_reference(reference_rows, rows_here, max_separation)
        pairs[number] = matched
        relative = (
            values[number] / values[reference] if values is not None else math.nan
        )
        ratio = matched["ratio"].to_numpy()
        n = len(ratio)
        rows.append(
            {
                "experiment": number,
                "transmission": values[number] if values is not None else math.nan,
                "relative_transmission": relative,
                "reflections": int(len(rows_here)),
                "matched": n,
                "mean_ratio": float(ratio.mean()) if n else math.nan,
                "mean_ratio_error": float(ratio.std(ddof=1) / math.sqrt(n))
                if n > 1
                else math.nan,
                "median_ratio": float(np.median(ratio)) if n else math.nan,
            }
        )
    table_out = pd.DataFrame(rows)
    table_out["deviation"] = (
        table_out["median_ratio"] / table_out["relative_transmission"] - 1.0
    )

    fit = None
    others = table_out[
        (table_out["experiment"] != reference) & (table_out["matched"] > 0)
    ]
    if values is not None and len(others) >= 2:
        slope, intercept, r_squared = fit_line(
            others["relative_transmission"], others["mean_ratio"]
        )
        fit = {"slope": slope, "intercept": intercept, "r_squared": r_squared}

    everything = pd.concat([p["reference_intensity"] for p in pairs.values()])
    positive = everything[everything > 0]
    bin_rows = []
    if len(positive):
        edges = np.geomspace(positive.min(), positive.max() * (1 + 1e-9), n_bins + 1)
        for number, matched in pairs.items():
            if number == reference or len(matched) == 0:
                continue
            expected = table_out.loc[number, "relative_transmission"]
            if not np.isfinite(expected):
                expected = table_out.loc[number, "median_ratio"]
            for row in _deviation_bins(matched, expected, n_bins, edges):
                bin_rows.append({"experiment": number, **row})
    bins = pd.DataFrame(
        bin_rows,
        columns=[
            "experiment",
            "bin_low",
            "bin_high",
            "pairs",
            "median_ratio",
            "deviation",
        ],
    )
    return LinearityResult(reference, source, table_out, pairs, fit, bins)


def do_intensity_linearity(table, experiments, params):
    """Matched intensities against a reference experiment (dials.diffuse.intensity_linearity).

    Parameters
    ----------
    table : flex.reflection_table
        Integrated reflections of every experiment (column `id`).
    experiments : ExperimentList or None
        For transmissions from the beam models or image file names.
    params : PHIL extract with the parameters of `phil_scope`

    Returns
    -------
    LinearityResult
        Also written to the log (per-experiment table and fit).
    """
    result = intensity_linearity(
        table,
        experiments,
        reference=params.reference,
        intensity=params.intensity,
        min_i_over_sigma=params.min_i_over_sigma,
        transmissions=params.transmission.values,
        filename_pattern=params.transmission.filename_pattern,
        max_separation=params.match.max_separation,
        n_bins=params.bins,
    )
    result.log()
    return result
