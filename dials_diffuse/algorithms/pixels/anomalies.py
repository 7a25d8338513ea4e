"""Find notches and pile-ups in a histogram of pixel values.

A detector artefact shows in a pixel-value histogram as a bin (or a few)
far below its smooth neighbourhood, a *notch* (e.g. a JUNGFRAU gain switch
mis-calibrated), or as excess counts at the top end, a *pile-up* (pixels
stuck at the value where the buckets are full). Both are found the same
way: the count each bin would have is predicted from its neighbours (a
weighted quadratic fit of log counts over the bins within `half_window` on
either side, leaving out the bin and its immediate neighbours so that a
feature up to three bins wide does not predict itself), and the observed
count is compared with that expectation in Poisson terms,
z = (observed - expected) / sqrt(expected + variance of the prediction). A bin is anomalous when |z|
passes `significance` *and* the relative deviation passes `min_deviation`
(so that a tiny relative misfit in a bin of millions is not reported).
Wider features are found by repeating the test on the histogram re-binned by
2, 4, 8, ... (features already found at a finer scale are not repeated).
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
    # Bins beyond the ends are empty bins, observed as such.
    counts = np.pad(np.asarray(counts, dtype=float), half_window)
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
    # A tiny ridge keeps a window of empty bins solvable.
    normal += 1e-9 * np.eye(3)
    inverse = np.linalg.inv(normal)
    log_expected = np.einsum("nij,nj->ni", inverse, rhs)[:, 0]
    expected = np.exp(log_expected) - 1.0
    # Propagate the variance of the fitted log (inverse[0, 0]) to counts.
    variance = (expected + 1.0) ** 2 * inverse[:, 0, 0]
    inside = slice(half_window, counts.size - half_window)
    return np.maximum(expected[inside], 0.0), variance[inside]


def _runs(flags):
    """(start, stop) of each run of consecutive True values."""
    padded = np.concatenate(([False], flags, [False])).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    return list(zip(changes[::2], changes[1::2]))


def find_anomalies(
    counts,
    edges,
    group="",
    significance=5.0,
    min_deviation=0.3,
    min_pixels=20,
    half_window=2,
    top_fraction=0.01,
    max_scale=64,
):
    """Notches and pile-ups in one histogram.

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
        Pixels it must miss or have in excess, |observed - expected| (so
        that a few stray pixels in a sparse tail are not reported).
    half_window : int
        Neighbours on each side used to predict a bin.
    top_fraction : float
        Pile-ups are excesses among the highest `top_fraction` of the pixels
        (the top end of the distribution); excess elsewhere is not reported.
    max_scale : int
        Largest re-binning factor tried (powers of two from 1).

    Returns
    -------
    list of Anomaly, ordered by pixel value.
    """
    counts = np.asarray(counts, dtype=np.int64)
    occupied = np.flatnonzero(counts)
    if occupied.size < 2 * half_window:
        return []
    first, last = occupied[0], occupied[-1] + 1
    counts = counts[first:last]
    edges = np.asarray(edges, dtype=float)[first : last + 1]
    total = counts.sum()
    cumulative = np.cumsum(counts)
    # Bins at or above this index hold the top `top_fraction` of pixels.
    top_start = int(np.searchsorted(cumulative, (1.0 - top_fraction) * total))

    found = []
    covered = np.zeros(counts.size, dtype=bool)
    scale = 1
    while scale <= max_scale and counts.size // scale >= 2 * half_window + 1:
        n_coarse = counts.size // scale
        coarse = counts[: n_coarse * scale].reshape(n_coarse, scale).sum(axis=1)
        expected, variance = expected_from_neighbours(coarse, half_window)
        # Poisson noise of the bin plus the uncertainty of its prediction.
        sigma = np.sqrt(np.maximum(expected, 1.0) + variance)
        z = (coarse - expected) / sigma
        deviation = coarse / np.maximum(expected, 1e-12) - 1.0
        large = np.abs(coarse - expected) >= min_pixels
        position = np.arange(n_coarse)
        interior = (position >= 2) & (position < n_coarse - 2)
        # Notches are looked for at the finest scale only: a coarse bin
        # cannot follow the steep fall of a pixel-value distribution.
        notch = (
            interior
            & large
            & (scale == 1)
            & (z <= -significance)
            & (deviation <= -min_deviation)
        )
        pile = (
            large
            & (z >= significance)
            & (deviation >= min_deviation)
            & ((position + 1) * scale > top_start)
        )
        for kind, flags in (("notch", notch), ("pile-up", pile)):
            for start, stop in _runs(flags):
                fine = slice(start * scale, stop * scale)
                if covered[fine].any():
                    continue
                covered[fine] = True
                observed = float(coarse[start:stop].sum())
                predicted = float(expected[start:stop].sum())
                spread = float(np.sqrt(max(predicted, 1.0) + variance[start:stop].sum()))
                found.append(
                    Anomaly(
                        kind=kind,
                        low=float(edges[fine.start]),
                        high=float(edges[fine.stop]),
                        observed=observed,
                        expected=predicted,
                        significance=(observed - predicted) / spread,
                        group=group,
                    )
                )
        scale *= 2
    return sorted(found, key=lambda a: a.low)


def find_histogram_anomalies(histogram, **options):
    """`find_anomalies` for every group of a PixelHistogram; options as there."""
    found = []
    for label, counts in zip(histogram.labels, histogram.counts):
        found.extend(find_anomalies(counts, histogram.edges, group=label, **options))
    return found
