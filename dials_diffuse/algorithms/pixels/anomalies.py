"""Find notches and pile-ups in a histogram of pixel values.

A detector artefact shows in a pixel-value histogram as bins far below their
smooth neighbourhood, a *notch* (a mis-calibrated gain switch: one level, or
a range of values recorded as the value above it), or as excess counts at
the top end, a *pile-up* (pixels stuck where the buckets are full). Each is
judged in Poisson terms, z = (observed - expected) / sqrt(expected +
variance of the expectation), and reported when |z| passes `significance`,
the relative deviation passes `min_deviation` and the absolute one
`min_pixels` (so that a small misfit in a bin of millions, or a few stray
pixels in a sparse tail, are not reported).

- Narrow notches (one or two bins): each bin predicted by a weighted
  quadratic fit of log counts to the two bins on either side; the deficit
  must also hold against a log-linear extrapolation from each side alone,
  so that a bin next to an excess (the counts a mis-calibrated level moved
  into its neighbour) is not taken for a notch.
- Wide notches (2 to `max_scale` bins): blocks of 2, 4, 8, ... bins against
  the mean level of as many bins on each side (the lower of the two), where
  the two sides differ by less than 3x (a gap in a distribution, not its
  edge); joined blocks are narrowed to the deepest sub-range.
- Pile-ups: only among the highest `top_fraction` of pixels, where the
  distribution is a falling tail; each bin predicted from the bins 3 to 6
  away on either side, on the histogram re-binned by 1, 2, 4, ...
  `max_scale` (a bump several bins wide shows where it is narrow). It must
  also stand above the bins just below it (the end of a tail is not a
  pile-up), and its significance allows for pixels of one reflection having
  similar values (`cluster`).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Anomaly:
    """One notch or pile-up.

    Attributes
    ----------
    kind : {'notch', 'pile-up'}
    low, high : float
        Range of pixel values it spans (bin edges, in counts).
    observed, expected : float
        Pixels counted in that range, and predicted from the neighbourhood.
    significance : float
        Poisson significance (observed - expected) / sqrt(expected); negative
        for a notch.
    group : str
        The histogram group (experiment or panel) it was found in.
    """

    kind: str
    low: float
    high: float
    observed: float
    expected: float
    significance: float
    group: str = ""

    @property
    def ratio(self):
        """Observed over expected counts."""
        return self.observed / self.expected if self.expected > 0 else np.inf

    def describe(self):
        """One line for the log."""
        return (
            f"{self.group}: {self.kind} at pixel values {self.low:g} to {self.high:g}: "
            f"{self.observed:.0f} pixels where {self.expected:.1f} were expected "
            f"({self.ratio:.2f}x, {self.significance:+.1f} sigma)"
        )


def expected_from_neighbours(counts, half_window=2, gap=0):
    """Counts predicted for each bin from its neighbours, and their variance.

    A quadratic in log(count + 1) is fitted, weighted by count + 1 (the
    inverse Poisson variance of a log count), to the bins at distances
    gap+1 .. half_window on both sides; its value at the bin is the
    prediction. Bins outside the array count as empty.

    Returns
    -------
    expected, variance : ndarray of float
        Predicted count per bin, and the variance of that prediction from
        the neighbours' Poisson noise.
    """
    # Bins beyond the ends are empty bins, observed as such; padding by two
    # windows gives every bin kept a full window of observed bins.
    pad = 2 * half_window
    counts = np.pad(np.asarray(counts, dtype=float), pad)
    offsets = np.arange(-half_window, half_window + 1, dtype=float)
    keep = np.abs(offsets) > gap
    weight = counts + 1.0
    logs = np.log(counts + 1.0)

    def window_sum(values, power):
        kernel = np.where(keep, offsets**power, 0.0)[::-1]
        return np.convolve(values, kernel, mode="same")

    # The weighted normal equations of every bin's fit, as convolutions.
    moments = [window_sum(weight, power) for power in range(5)]
    normal = np.empty((counts.size, 3, 3))
    for i in range(3):
        for j in range(3):
            normal[:, i, j] = moments[i + j]
    rhs = np.stack([window_sum(weight * logs, power) for power in range(3)], axis=1)
    # A relative ridge keeps ill-conditioned windows solvable.
    normal += 1e-12 * np.trace(normal, axis1=1, axis2=2)[:, None, None] * np.eye(3)
    inverse = np.linalg.inv(normal)
    log_expected = np.einsum("nij,nj->ni", inverse, rhs)[:, 0]
    expected = np.exp(log_expected) - 1.0
    # Propagate the variance of the fitted log (inverse[0, 0]) to counts.
    variance = (expected + 1.0) ** 2 * inverse[:, 0, 0]
    inside = slice(pad, counts.size - pad)
    return np.maximum(expected[inside], 0.0), variance[inside]


def one_sided_predictions(counts):
    """Each bin's count extrapolated log-linearly from the two bins on its left,
    and from the two on its right (NaN-free; edges use empty bins beyond)."""
    logs = np.log(np.pad(np.asarray(counts, dtype=float), 2) + 1.0)
    left = 2.0 * logs[1:-3] - logs[:-4]
    right = 2.0 * logs[3:-1] - logs[4:]
    return np.exp(left) - 1.0, np.exp(right) - 1.0


def _runs(flags):
    """(start, stop) of each run of consecutive True values."""
    padded = np.concatenate(([False], flags, [False])).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    return list(zip(changes[::2], changes[1::2]))


def _poisson_test(counts, half_window, gap):
    """Prediction, its variance and the significance z for every bin."""
    expected, variance = expected_from_neighbours(counts, half_window, gap)
    sigma = np.sqrt(np.maximum(expected, 1.0) + variance)
    return expected, variance, (counts - expected) / sigma


def _anomaly(kind, counts, expected, variance, edges, start, stop, group):
    """One Anomaly for coarse bins start:stop whose edges are `edges`."""
    observed = float(counts[start:stop].sum())
    predicted = float(expected[start:stop].sum())
    spread = float(np.sqrt(max(predicted, 1.0) + variance[start:stop].sum()))
    return Anomaly(
        kind=kind,
        low=float(edges[0]),
        high=float(edges[-1]),
        observed=observed,
        expected=predicted,
        significance=(observed - predicted) / spread,
        group=group,
    )


@dataclasses.dataclass
class _Thresholds:
    significance: float
    min_deviation: float
    min_pixels: float

    def passes(self, observed, expected, z, sign):
        """Elementwise: a deficit (sign -1) or excess (+1) that counts."""
        relative = observed / np.maximum(expected, 1e-12) - 1.0
        return (
            (sign * z >= self.significance)
            & (sign * relative >= self.min_deviation)
            & (np.abs(observed - expected) >= self.min_pixels)
        )


def _side_levels(cumulative, start, stop, side):
    """Mean count per bin of the `side` bins left of `start` and right of `stop`."""
    left = (cumulative[start] - cumulative[start - side]) / side
    right = (cumulative[stop + side] - cumulative[stop]) / side
    return left, right


def _gap_test(cumulative, start, stop, side):
    """Observed and expected counts in bins start:stop, the variance and z.

    Expected: the width times the lower of the two side levels, so that the
    deficit is judged against the side it is least below.
    """
    width = stop - start
    observed = cumulative[stop] - cumulative[start]
    level = np.minimum(*_side_levels(cumulative, start, stop, side))
    expected = width * level
    variance = width**2 * level / side
    z = (observed - expected) / np.sqrt(np.maximum(expected, 1.0) + variance)
    return observed, expected, variance, z


def _wide_notches(counts, edges, group, thresholds, max_width, max_side_ratio=3.0):
    """Notches 2 .. max_width bins wide: gaps below the level on both sides.

    Every block of 2, 4, ... bins is compared with the mean of as many bins
    (at least 2) on each side, where those two levels differ by less than
    `max_side_ratio` (a gap in a smooth distribution, not the edge of one).
    The blocks that pass are joined; within each joined range the notch is
    the deepest sub-range (observed / expected lowest, judged against its
    own sides), the widest if several are as deep.
    """
    n = counts.size
    cumulative = np.concatenate([[0], np.cumsum(counts)])

    def gap_passes(start, stop, side):
        observed, expected, variance, z = _gap_test(cumulative, start, stop, side)
        left, right = _side_levels(cumulative, start, stop, side)
        smooth = np.maximum(left, right) <= max_side_ratio * np.maximum(
            np.minimum(left, right), 1.0
        )
        return thresholds.passes(observed, expected, z, -1) & smooth, z

    flagged = np.zeros(n, dtype=bool)
    width = 2
    while width <= max_width:
        starts = np.arange(width, n - 2 * width + 1)
        if starts.size:
            passing, _ = gap_passes(starts, starts + width, width)
            for block in starts[passing]:
                flagged[block : block + width] = True
        width *= 2
    found = []
    for first, last in _runs(flagged):
        # Every sub-range of 2 or more bins with room for its sides.
        start, stop = np.triu_indices(last - first + 1, k=2)
        start, stop = start + first, stop + first
        side = np.maximum(2, stop - start)
        inside = (start >= side) & (stop + side <= n)
        start, stop, side = start[inside], stop[inside], side[inside]
        if start.size == 0:
            continue
        passing, z = gap_passes(start, stop, side)
        if not passing.any():
            continue
        observed, expected, _, _ = _gap_test(cumulative, start, stop, side)
        depth = np.where(passing, 1.0 - observed / np.maximum(expected, 1e-12), -1.0)
        deepest = np.flatnonzero(depth >= depth.max() - 1e-9)
        # Widest first, then most significant.
        best = deepest[np.lexsort((z[deepest], -(stop - start)[deepest]))[0]]
        observed, expected, _, z = _gap_test(
            cumulative, start[best], stop[best], side[best]
        )
        found.append(
            Anomaly(
                kind="notch",
                low=float(edges[start[best]]),
                high=float(edges[stop[best]]),
                observed=float(observed),
                expected=float(expected),
                significance=float(z),
                group=group,
            )
        )
    return found


def _narrow_notches(counts, edges, group, thresholds):
    """Notches of one or two bins, from the two bins on either side."""
    expected, variance, z = _poisson_test(counts, half_window=2, gap=0)
    # Each side alone must see the deficit too, so that a bin next to an
    # excess (counts moved from a notch into its neighbour) is not a notch.
    left, right = one_sided_predictions(counts)
    lowest = np.minimum(expected, np.minimum(left, right))
    z_lowest = (counts - lowest) / np.sqrt(np.maximum(lowest, 1.0) + variance)
    notch = thresholds.passes(counts, expected, z, -1) & thresholds.passes(
        counts, lowest, z_lowest, -1
    )
    notch[:2] = notch[-2:] = False  # a notch needs neighbours on both sides
    # The lowest of the three predictions is the one least raised by an
    # excess beside the notch: report that (a conservative deficit).
    return [
        _anomaly(
            "notch",
            counts,
            lowest,
            variance,
            edges[start : stop + 1],
            start,
            stop,
            group,
        )
        for start, stop in _runs(notch)
    ]


def _pile_ups(counts, edges, group, thresholds, top_fraction, max_scale, cluster):
    """Excess counts among the highest `top_fraction` of pixels, at any scale."""
    cumulative = np.cumsum(counts)
    # Bins from here on hold the top `top_fraction` of the pixels.
    top_start = int(np.searchsorted(cumulative, (1.0 - top_fraction) * cumulative[-1]))
    covered = np.zeros(counts.size, dtype=bool)
    found = []
    scale = 1
    while scale <= max_scale and counts.size // scale >= 4:
        n_coarse = counts.size // scale
        coarse = counts[: n_coarse * scale].reshape(n_coarse, scale).sum(axis=1)
        expected, variance, z = _poisson_test(coarse, half_window=6, gap=2)
        # Pixels of one reflection come in groups of similar values: in a
        # sparse tail their counts scatter `cluster` times more than Poisson.
        z = z / np.sqrt(cluster)
        in_top = np.arange(n_coarse) * scale >= top_start
        # A pile-up stands above the values just below it, too: the end of a
        # falling tail (nothing beyond it) is not a pile-up.
        below = np.convolve(np.pad(coarse, (6, 0)), np.ones(4) / 4, mode="valid")[
            :n_coarse
        ]
        above_below = (coarse >= (1.0 + thresholds.min_deviation) * below) & (
            np.arange(n_coarse) >= 6
        )
        candidates = thresholds.passes(coarse, expected, z, +1) & in_top & above_below
        for start, stop in _runs(candidates):
            fine = slice(start * scale, stop * scale)
            if covered[fine].any():
                continue
            covered[fine] = True
            anomaly = _anomaly(
                "pile-up",
                coarse,
                expected,
                variance,
                edges[fine.start : fine.stop + 1 : scale],
                start,
                stop,
                group,
            )
            anomaly.significance /= np.sqrt(cluster)
            found.append(anomaly)
        scale *= 2
    return found


def find_anomalies(
    counts,
    edges,
    group="",
    significance=5.0,
    min_deviation=0.3,
    min_pixels=20,
    top_fraction=0.01,
    max_scale=64,
    cluster=10.0,
):
    """Notches and pile-ups in one histogram; see the module docstring.

    Parameters
    ----------
    counts : ndarray of int, shape (bins,)
    edges : ndarray of float, shape (bins + 1,)
        Bin edges in pixel value (counts).
    group : str
        Label copied into each Anomaly.
    significance : float
        Poisson significance |z| a feature must reach.
    min_deviation : float
        Relative deviation |observed/expected - 1| it must reach.
    min_pixels : float
        Pixels it must miss or have in excess, |observed - expected|.
    top_fraction : float
        Pile-ups are looked for among the highest `top_fraction` of pixels.
    max_scale : int
        Widest notch (bins) and largest re-binning factor tried for pile-ups
        (powers of two).
    cluster : float
        Over-dispersion of counts in the sparse top end (pixels of one
        reflection have similar values): a pile-up's significance is divided
        by its square root.

    Returns
    -------
    list of Anomaly, ordered by pixel value.
    """
    counts = np.asarray(counts, dtype=np.int64)
    occupied = np.flatnonzero(counts)
    if occupied.size < 5:
        return []
    first, last = occupied[0], occupied[-1] + 1
    counts = counts[first:last]
    edges = np.asarray(edges, dtype=float)[first : last + 1]
    thresholds = _Thresholds(significance, min_deviation, min_pixels)

    # Narrow notches are located more precisely: they take precedence.
    found = _narrow_notches(counts, edges, group, thresholds)
    for notch in _wide_notches(counts, edges, group, thresholds, max_scale):
        if not any(notch.low < a.high and a.low < notch.high for a in found):
            found.append(notch)
    found += _pile_ups(
        counts, edges, group, thresholds, top_fraction, max_scale, cluster
    )
    return sorted(found, key=lambda a: a.low)


def find_histogram_anomalies(histogram, **options):
    """`find_anomalies` for every group of a PixelHistogram, and for their sum.

    The sum over groups (group 'all', with several groups) has the most
    pixels, so it shows a feature common to every group most clearly.
    Options as for `find_anomalies`.
    """
    groups = list(zip(histogram.labels, histogram.counts))
    if len(groups) > 1:
        groups.append(("all", histogram.total))
    found = []
    for label, counts in groups:
        found.extend(find_anomalies(counts, histogram.edges, group=label, **options))
    return found
