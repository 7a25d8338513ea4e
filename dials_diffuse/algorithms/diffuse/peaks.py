"""Find peak pixels above a count threshold and fit a global Gaussian peak model.

As mdx2's find_peaks: every usable pixel of every frame with counts above
`count_threshold` is a peak pixel; its fractional Miller index gives the
offset from the nearest lattice point, dhkl = hkl - round(hkl). A single 3-D
Gaussian in dhkl (mean and covariance, in reciprocal lattice units) is fitted
to all offsets, the points beyond `sigma_cutoff` (Mahalanobis distance) are
rejected as outliers (hot pixels, ice, zingers, satellites) and the model is
refitted once to the rest (mdx2 does the same single clipping round).
"""

import dataclasses
import functools
import logging

import numpy as np
from libtbx.phil import parse

from dials_diffuse import _kernels
from dials_diffuse.images.source import read_reusing
from dials_diffuse.io.tables import Table
from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)

#: The parameters of find_peaks (dials.diffuse.find_peaks and process include them).
phil_scope = parse(
    """
count_threshold = None
  .type = float
  .help = "Pixels with counts above this value are peak pixels (required)."
sigma_cutoff = 3.0
  .type = float(value_min=0, allow_none=False)
  .help = "Outlier rejection in the peak-model fit: peak pixels farther"
          "than this many standard deviations (Mahalanobis distance) from the"
          "model's centre are outliers."
"""
)


@dataclasses.dataclass
class PeakModel:
    """A Gaussian peak shape in Miller-index offsets (reciprocal lattice units).

    Attributes
    ----------
    centre : ndarray (3,)
        Mean offset (dh, dk, dl) of peak pixels from their lattice point.
    covariance : ndarray (3, 3)
        Covariance of the offsets.
    """

    centre: np.ndarray
    covariance: np.ndarray

    @functools.cached_property
    def whitening(self):
        """W with |W (d - centre)|^2 = Mahalanobis distance squared (inverse Cholesky factor).

        Computed once: the mask kernel asks for it every chunk, and each
        LAPACK call wakes OpenBLAS's spinning thread pool.
        """
        return np.ascontiguousarray(np.linalg.inv(np.linalg.cholesky(self.covariance)))

    def distance(self, offsets):
        """Mahalanobis distance (in sigmas) of offsets (n, 3) from the centre."""
        whitened = (np.asarray(offsets) - self.centre) @ self.whitening.T
        return np.sqrt(np.sum(whitened**2, axis=-1))

    def semi_axes(self):
        """Standard deviations along the principal axes (r.l.u.) and the axes (columns)."""
        values, vectors = np.linalg.eigh(self.covariance)
        return np.sqrt(np.maximum(values, 0.0)), vectors

    @classmethod
    def fit(cls, offsets):
        """Maximum-likelihood Gaussian (mean, covariance with 1/n) of offsets (n, 3)."""
        offsets = np.asarray(offsets, dtype=np.float64)
        if len(offsets) < 4:
            raise DataError(
                f"only {len(offsets)} peak pixels: too few to fit a peak model "
                "(lower count_threshold)"
            )
        centre = offsets.mean(axis=0)
        deviations = offsets - centre
        covariance = deviations.T @ deviations / len(offsets)
        if np.linalg.matrix_rank(covariance) < 3:
            raise DataError(
                "the peak pixels' Miller-index offsets are degenerate (a flat "
                "peak model): lower count_threshold or check the geometry"
            )
        return cls(centre, covariance)

    def to_table(self, sigma_cutoff, n_fitted, n_outliers):
        """The model as a table (group `peak_model`): rows are the h, k, l axes."""
        return Table(
            "peak_model",
            {
                "centre": self.centre,
                "covariance_h": self.covariance[:, 0],
                "covariance_k": self.covariance[:, 1],
                "covariance_l": self.covariance[:, 2],
            },
            {
                "sigma_cutoff": sigma_cutoff,
                "fitted_pixels": n_fitted,
                "outlier_pixels": n_outliers,
            },
        )

    @classmethod
    def from_table(cls, table):
        covariance = np.stack(
            [table["covariance_h"], table["covariance_k"], table["covariance_l"]],
            axis=1,
        )
        return cls(np.asarray(table["centre"], dtype=np.float64), covariance)


def fit_peak_model(offsets, sigma_cutoff=3.0):
    """Fit, reject offsets beyond `sigma_cutoff`, refit (mdx2's procedure).

    Returns
    -------
    model : PeakModel
    outlier : ndarray of bool
        True for the offsets rejected.
    """
    first = PeakModel.fit(offsets)
    outlier = first.distance(offsets) > sigma_cutoff
    return PeakModel.fit(np.asarray(offsets)[~outlier]), outlier


def peak_pixels_in_chunk(sweep, chunk, count_threshold):
    """Usable pixels above `count_threshold` in a chunk, with their Miller indices.

    Returns
    -------
    dict of 1-D arrays
        frame (0-based in the source), panel (multi-panel detectors only),
        iy, ix (0-based pixel indices within the panel), counts, h, k, l
        (fractional).
    """
    data, valid = read_reusing(sweep.source, chunk)
    flat = _kernels.pixels_above(
        np.ascontiguousarray(data), np.ascontiguousarray(valid), float(count_threshold)
    )
    counts = data.reshape(-1)[flat]
    frame, row, column = np.unravel_index(flat, data.shape)
    row = row + chunk.rows.start
    column = column + chunk.columns.start
    frame = frame + chunk.frames.start
    frames = np.arange(chunk.frames.start, chunk.frames.stop)
    matrices = sweep.matrices(frames)
    delta = (
        sweep.s1_at(row, column, chunk.panel)
        - sweep.s0(frames)[frame - chunk.frames.start]
    )
    hkl = np.einsum("nij,nj->ni", matrices[frame - chunk.frames.start], delta)
    panel = {}
    if sweep.n_panels > 1:
        panel = {"panel": np.full(len(flat), chunk.panel, dtype=np.int32)}
    return {
        "frame": frame.astype(np.int32),
        **panel,
        "iy": row.astype(np.int32),
        "ix": column.astype(np.int32),
        "counts": counts.astype(np.float64),
        "h": hkl[:, 0],
        "k": hkl[:, 1],
        "l": hkl[:, 2],
    }


def find_peaks(sweep, count_threshold, pmap, frames_per_chunk=10, frame_range=None):
    """All peak pixels of a sweep as a Table (`peaks`), streamed over chunks.

    Columns: frame, image (1-based), phi (degrees), panel (multi-panel
    detectors only), iy, ix (within the panel), counts, h, k, l.
    """
    chunks = sweep.chunks(frames_per_chunk, frame_range)
    parts = list(
        sweep.map_chunks(
            pmap,
            lambda s, c: peak_pixels_in_chunk(s, c, count_threshold),
            chunks,
            desc="find_peaks",
        )
    )
    columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    frame = columns["frame"]
    ordered = {
        "frame": frame,
        "image": sweep.source.image_numbers[frame].astype(np.int32),
        "phi": sweep.phi(frame) if frame.size else np.zeros(0),
    }
    ordered.update({k: v for k, v in columns.items() if k != "frame"})
    return Table("peaks", ordered, {"count_threshold": float(count_threshold)})


def peaks_to_reflections(peaks, experiment, outlier):
    """The peak pixels as a DIALS reflection table (for dials.image_viewer).

    One reflection per peak pixel: xyzobs.px.value at the pixel centre
    (ix + 0.5, iy + 0.5, image - 0.5), a one-pixel bbox, the nearest Miller
    index, counts as intensity.sum.value, and `is_outlier` from the model fit.
    """
    from dials.array_family import flex
    from dxtbx.model.experiment_list import ExperimentList

    n = len(peaks)
    table = flex.reflection_table()
    x = peaks["ix"].astype(np.float64) + 0.5
    y = peaks["iy"].astype(np.float64) + 0.5
    z = peaks["image"].astype(np.float64) - 0.5
    table["xyzobs.px.value"] = flex.vec3_double(
        flex.double(x), flex.double(y), flex.double(z)
    )
    table["xyzobs.px.variance"] = flex.vec3_double(n, (1 / 12, 1 / 12, 1 / 12))
    ix = peaks["ix"].astype(np.int32)
    iy = peaks["iy"].astype(np.int32)
    image = peaks["image"].astype(np.int32)
    table["bbox"] = flex.int6(
        flex.int(ix),
        flex.int(ix + 1),
        flex.int(iy),
        flex.int(iy + 1),
        flex.int(image - 1),
        flex.int(image),
    )
    rounded = np.round(np.stack([peaks["h"], peaks["k"], peaks["l"]], axis=1))
    table["miller_index"] = flex.miller_index(
        flex.int(rounded[:, 0].astype(np.int32)),
        flex.int(rounded[:, 1].astype(np.int32)),
        flex.int(rounded[:, 2].astype(np.int32)),
    )
    table["intensity.sum.value"] = flex.double(peaks["counts"])
    if "panel" in peaks.columns:
        table["panel"] = flex.size_t(peaks["panel"].astype(np.uint64))
    else:
        table["panel"] = flex.size_t(n, 0)
    table["id"] = flex.int(n, 0)
    table["is_outlier"] = flex.bool(np.asarray(outlier, dtype=bool))
    table.set_flags(flex.bool(n, True), table.flags.strong)
    identifiers = ExperimentList([experiment]).identifiers()
    if identifiers and identifiers[0]:
        table.experiment_identifiers()[0] = identifiers[0]
    return table


@dataclasses.dataclass
class FindPeaksResult:
    """What `do_find_peaks` found.

    Attributes
    ----------
    peaks : Table
        `peaks`: frame, image, phi, panel (multi-panel detectors), iy, ix,
        counts, h, k, l and outlier (1 for the pixels the model fit rejected).
    model : PeakModel
    offsets : ndarray (n, 3)
        Each peak pixel's Miller-index offset from the nearest lattice point.
    sigma_cutoff : float
        The fit's outlier cutoff (standard deviations).
    """

    peaks: Table
    model: PeakModel
    offsets: np.ndarray
    sigma_cutoff: float

    @property
    def outlier(self):
        """Peak pixels the model fit rejected (bool, n)."""
        return self.peaks["outlier"].astype(bool)

    def model_table(self):
        """The model as a table (`peak_model`), with the fit's counts."""
        n_outliers = int(self.outlier.sum())
        return self.model.to_table(
            self.sigma_cutoff, len(self.peaks) - n_outliers, n_outliers
        )

    def summary(self):
        """The key results for a program's JSON summary."""
        return {
            "peak_pixels": len(self.peaks),
            "outliers": int(self.outlier.sum()),
            "model_centre": self.model.centre,
            "model_covariance": self.model.covariance,
            "model_sigmas": self.model.semi_axes()[0],
        }


def do_find_peaks(sweep, params, pmap, frame_range=None, frames_per_chunk=10):
    """Peak pixels above the count threshold and the Gaussian peak model fitted to them.

    Parameters
    ----------
    sweep : Sweep
    params : PHIL extract with the parameters of `phil_scope`
        count_threshold (counts, required) and sigma_cutoff.
    pmap : ParallelMap
        Runs the chunks.
    frame_range : (int, int), optional
        0-based half-open frames of the sweep's source; default all.
    frames_per_chunk : int

    Returns
    -------
    FindPeaksResult
    """
    if params.count_threshold is None:
        raise DataError("count_threshold is required, e.g. count_threshold=20")
    frame_range = frame_range or (0, sweep.source.n_frames)
    peaks = find_peaks(
        sweep,
        params.count_threshold,
        pmap,
        frames_per_chunk=frames_per_chunk,
        frame_range=frame_range,
    )
    logger.info(
        "Found %d peak pixels above %g counts in %d frames",
        len(peaks),
        params.count_threshold,
        frame_range[1] - frame_range[0],
    )
    if len(peaks) == 0:
        raise DataError(
            f"no pixel above count_threshold={params.count_threshold:g}: lower it"
        )
    hkl = np.stack([peaks["h"], peaks["k"], peaks["l"]], axis=1)
    offsets = hkl - np.round(hkl)
    model, outlier = fit_peak_model(offsets, params.sigma_cutoff)
    peaks.columns["outlier"] = outlier.astype(np.uint8)
    logger.info(
        "Peak model from %d pixels (%d outliers beyond %g sigma): centre %s r.l.u.",
        len(peaks) - int(outlier.sum()),
        int(outlier.sum()),
        params.sigma_cutoff,
        np.array2string(model.centre, precision=4),
    )
    logger.info(
        "Standard deviations along the principal axes: %s r.l.u.",
        np.array2string(model.semi_axes()[0], precision=4),
    )
    return FindPeaksResult(peaks, model, offsets, params.sigma_cutoff)
