"""The peak mask: Bragg-peak ellipsoids, peak pixels, hot pixels, detector mask.

A pixel of a frame is masked (excluded from the diffuse signal) when

- its offset from the nearest reciprocal-lattice point allowed by the space
  group (every systematic absence, from cctbx, not only centring) lies inside
  the peak model's ellipsoid at `sigma_cutoff` (Mahalanobis distance); with
  ``mask_absent`` also at points absent by screw axes and glide planes (only
  centring absences, which are not lattice points, are left: mdx2's rule,
  which masks every lattice point of a primitive group), or
- it was a peak pixel (above the count threshold) in that frame (as mdx2),
  or a hot pixel (a peak-model outlier in at least a fraction of the frames,
  masked in every frame), or
- the detector mask excludes it (gaps, bad pixels).

With ``bragg=True`` the ellipsoid part is inverted: only pixels inside an
ellipsoid are kept (the Bragg peaks); hot pixels and the detector mask still
apply (a hot pixel inside a Bragg ellipsoid would bias its intensity), the
frame-by-frame peak pixels do not (they are the Bragg peaks).

The mask is written as mask.nxs (`dials_diffuse.io.mask_file`, mdx2's
convention: 1 = excluded, the opposite of a DIALS validity mask).
"""

import dataclasses
import logging

import numpy as np
from libtbx.phil import parse

from dials_diffuse import _kernels
from dials_diffuse.images.hdf5_chunks import deflate_chunks
from dials_diffuse.images.source import thread_buffer
from dials_diffuse.io.mask_file import MaskWriter

logger = logging.getLogger(__name__)

#: The parameters of mask_peaks (dials.diffuse.mask_peaks and process include them).
phil_scope = parse(
    """
sigma_cutoff = 3.0
  .type = float(value_min=0, allow_none=False)
  .help = "Size of the masked ellipsoid around each lattice point, in"
          "standard deviations of the peak model (Mahalanobis distance)."
bragg = False
  .type = bool
  .help = "Invert the ellipsoid mask: keep only the Bragg peaks (peak and hot"
          "pixels are then not added; the detector mask still applies)."
mask_absent = False
  .type = bool
  .help = "Also mask the ellipsoids at lattice points that screw axes or glide"
          "planes make systematically absent (only lattice-centring absences"
          "stay unmasked), as mdx2 does: it masks every lattice point of a"
          "primitive group. Default: absent points keep their diffuse signal."
hot_pixels {
  min_fraction = 0.5
    .type = float(value_min=0, value_max=1, allow_none=False)
    .help = "A pixel that is a peak-model outlier (above count_threshold far"
            "from any lattice point) in at least this fraction of the frames"
            "(and at least 2) is hot and masked in every frame."
}
"""
)


def allowed_lattice_points(crystal, s_max, centring_only=False):
    """Lattice points that are not systematically absent, over every reachable hkl.

    Parameters
    ----------
    crystal : dxtbx Crystal
    s_max : float
        Largest |s1 - s0| of any pixel (inverse Angstrom): |h| <= a |s|.
    centring_only : bool
        Only the lattice centring's absences count (h + k odd for C, ...):
        points absent by screw axes or glide planes are allowed too.

    Returns
    -------
    allowed : ndarray uint8 (nh, nk, nl)
    origin : ndarray int64 (3,)
        hkl of allowed[0, 0, 0].
    """
    from cctbx.array_family import flex

    cell = crystal.get_unit_cell().parameters()[:3]
    limits = [int(np.ceil(length * s_max)) + 1 for length in cell]
    axes = [np.arange(-n, n + 1) for n in limits]
    grid = np.meshgrid(*axes, indexing="ij")
    indices = flex.miller_index(*(flex.int(g.ravel().astype(np.int32)) for g in grid))
    space_group = crystal.get_space_group()
    if centring_only:
        from cctbx import sgtbx

        lattice = sgtbx.space_group()
        for translation in space_group.ltr():
            lattice.expand_ltr(translation)
        space_group = lattice
    absent = space_group.is_sys_absent(indices).as_numpy_array()
    allowed = (~absent).reshape(grid[0].shape).astype(np.uint8)
    origin = np.array([-n for n in limits], dtype=np.int64)
    return np.ascontiguousarray(allowed), origin


def hot_pixels(peaks, shape, n_frames, min_fraction, panel=None):
    """Pixels that are peak-model outliers in at least `min_fraction` of the frames.

    A hot pixel is above the threshold in frame after frame while the
    lattice rotates past it, so its Miller-index offsets are mostly outliers
    of the peak model; a Bragg peak that stays on a pixel for many frames
    (near the rotation axis) is not. At least 2 frames are required.

    Parameters
    ----------
    peaks : Table
        Peak pixels with columns iy, ix and outlier (from find_peaks), and
        panel for a multi-panel detector.
    shape : (int, int)
        Panel (rows, columns).
    n_frames : int
        Frames searched for peaks.
    min_fraction : float
    panel : int, optional
        Only the peak pixels of this panel (those with this `panel` value).

    Returns
    -------
    ndarray bool (rows, columns)
    """
    outlier = np.asarray(peaks["outlier"], dtype=bool)
    if panel is not None and "panel" in peaks.columns:
        outlier = outlier & (np.asarray(peaks["panel"]) == panel)
    times = np.zeros(shape, dtype=np.int64)
    np.add.at(times, (peaks["iy"][outlier], peaks["ix"][outlier]), 1)
    return times >= max(2, int(np.ceil(min_fraction * n_frames)))


def panel_hot_pixels(peaks, panel_shapes, n_frames, min_fraction):
    """`hot_pixels` of every panel: a list of bool arrays (rows, columns)."""
    return [
        hot_pixels(peaks, shape, n_frames, min_fraction, panel=panel)
        for panel, shape in enumerate(panel_shapes)
    ]


class PeakMasker:
    """Everything needed to compute the mask of any chunk of a sweep.

    Parameters
    ----------
    sweep : Sweep
    model : PeakModel
    sigma_cutoff : float
        Ellipsoid size in standard deviations of the peak model.
    peaks : Table or None
        Peak pixels (columns image, iy, ix, and panel for a multi-panel
        detector) to mask frame by frame.
    hot : list of ndarray bool (rows, columns), one per panel, or None
        (one array for a single-panel detector)
    bragg : bool
        Invert the ellipsoid mask (keep only Bragg peaks); hot pixels and the
        detector mask still apply, peak pixels are then not added.
    mask_absent : bool
        Also mask the ellipsoids at lattice points that screw axes or glide
        planes make systematically absent (mdx2's rule).
    """

    def __init__(
        self,
        sweep,
        model,
        sigma_cutoff,
        peaks=None,
        hot=None,
        bragg=False,
        mask_absent=False,
    ):
        self.model = model
        self.sigma_cutoff = float(sigma_cutoff)
        self.bragg = bool(bragg)
        self.mask_absent = bool(mask_absent)
        s0 = sweep.s0(np.arange(sweep.source.n_frames))
        # |s1 - s0|^2 = |s1|^2 + |s0|^2 - 2 s1.s0 <= max|s1|^2 + |s0|^2 - 2 min s1.s0:
        # an upper bound of |s| over each panel without a (rows, columns, 3)
        # temporary per frame (the lattice table only needs to be big enough).
        s_max = 0.0
        for panel in range(sweep.n_panels):
            x, y, z = sweep.panel_s1_planes(panel)
            s1_squared = float(np.max(x * x + y * y + z * z))
            s_max = max(
                s_max,
                *(
                    np.sqrt(
                        max(
                            0.0,
                            s1_squared
                            + s0[i] @ s0[i]
                            - 2 * np.min(s0[i, 0] * x + s0[i, 1] * y + s0[i, 2] * z),
                        )
                    )
                    for i in {0, len(s0) // 2, len(s0) - 1}
                ),
            )
        self.allowed, self.origin = allowed_lattice_points(
            sweep.experiment.crystal, s_max, centring_only=self.mask_absent
        )
        shapes = sweep.source.panel_shapes
        if isinstance(hot, np.ndarray):
            hot = [hot]  # the one panel's
        self.hot = [
            np.asarray(hot[panel], dtype=bool)
            if hot is not None
            else np.zeros(shape, dtype=bool)
            for panel, shape in enumerate(shapes)
        ]
        self.detector_invalid = [
            ~sweep.detector_mask(panel) for panel in range(len(shapes))
        ]
        self.invalid = [
            invalid | hot for invalid, hot in zip(self.detector_invalid, self.hot)
        ]
        self.peak_image = None
        if peaks is not None and not self.bragg and len(peaks):
            panel = (
                np.asarray(peaks["panel"])
                if "panel" in peaks.columns
                else np.zeros(len(peaks), dtype=np.int32)
            )
            order = np.lexsort((peaks["image"], panel))
            self.peak_panel = panel[order]
            self.peak_image = np.asarray(peaks["image"])[order]
            self.peak_iy = np.asarray(peaks["iy"])[order]
            self.peak_ix = np.asarray(peaks["ix"])[order]

    def __call__(self, sweep, chunk, out=None):
        """The mask of a chunk of whole frames of one panel: uint8, 1 = excluded.

        Ellipsoids (inverted with bragg), detector mask and hot pixels in one
        kernel pass, then the chunk's peak pixels. `out`, a C-contiguous
        uint8 array of the chunk's shape, is filled and returned if given.
        """
        frames = np.arange(chunk.frames.start, chunk.frames.stop)
        mask = _kernels.mask_peak_ellipsoids(
            sweep.panel_s1_planes(chunk.panel),
            sweep.s0(frames),
            sweep.matrices(frames),
            np.ascontiguousarray(self.model.centre, dtype=np.float64),
            self.model.whitening,
            self.sigma_cutoff,
            self.allowed,
            self.origin,
            invalid=self.invalid[chunk.panel],
            invert=self.bragg,
            out=out,
        )
        if self.peak_image is not None:
            images = sweep.source.image_numbers[frames]
            first, last = np.searchsorted(
                self.peak_panel, [chunk.panel, chunk.panel + 1]
            )
            low, high = first + np.searchsorted(
                self.peak_image[first:last], [images[0], images[-1] + 1]
            )
            frame = self.peak_image[low:high] - images[0]
            mask[frame, self.peak_iy[low:high], self.peak_ix[low:high]] = 1
        return mask


class CompressedMaskChunk:
    """A chunk's mask as stored HDF5 chunks, with its masked pixels per frame.

    Runs in the workers: the mask kernel, the per-frame counts and the
    gzip compression all happen in parallel; the writer only stores bytes.
    The chunks are coded as runs and repeats of the row above
    (`deflate_chunks(runs=True)`): standard gzip, several times faster than
    general deflate on masks and about as small.

    Parameters
    ----------
    masker : PeakMasker
    chunk_shapes : list of (int, int, int)
        The HDF5 chunk shape of each panel's mask dataset.
    """

    def __init__(self, masker, chunk_shapes):
        self.masker = masker
        self.chunk_shapes = [tuple(shape) for shape in chunk_shapes]

    def __call__(self, sweep, chunk):
        mask = self.masker(
            sweep, chunk, out=thread_buffer(chunk.shape, np.uint8, "mask")
        )
        masked = np.count_nonzero(mask.reshape(len(mask), -1), axis=1)
        return masked, deflate_chunks(mask, self.chunk_shapes[chunk.panel], runs=True)


def write_mask(path, sweep, masker, pmap, frames_per_chunk=10, frame_range=None):
    """Compute the mask chunk by chunk and stream it into a new mask.nxs at `path`.

    The work chunks are aligned with the dataset's HDF5 chunks
    (frames_per_chunk frames), so the workers compress whole HDF5 chunks;
    the file is `dials_diffuse.io.mask_file`'s.

    Returns
    -------
    dict
        masked_fraction (overall), masked_fraction_per_image (list), frames,
        and the overall fraction split by cause: detector_masked_fraction
        (the detector mask: gaps, bad pixels), hot_pixel_fraction (hot pixels
        not already in the detector mask) and bragg_masked_fraction (the
        rest: peak ellipsoids and peak pixels; with bragg=True, everything
        outside the ellipsoids).
    """
    first, stop = frame_range or (0, sweep.source.n_frames)
    n_frames = stop - first
    chunks = sweep.chunks(frames_per_chunk, (first, stop))
    masked = np.zeros(n_frames, dtype=np.int64)
    frames = np.arange(first, stop)
    shapes = sweep.source.panel_shapes
    with MaskWriter(
        path,
        sweep.phi(frames),
        sweep.source.image_numbers[frames],
        shapes,
        masker.hot,
        {"sigma_cutoff": masker.sigma_cutoff, "bragg": masker.bragg},
        frames_per_chunk,
    ) as writer:
        work = CompressedMaskChunk(masker, writer.chunk_shapes)
        for chunk, (count, stored) in zip(
            chunks, sweep.map_chunks(pmap, work, chunks, "mask_peaks")
        ):
            start = chunk.frames.start - first
            writer.store(start, stored, chunk.panel)
            masked[start : start + len(count)] += count
    pixels = sum(int(np.prod(shape)) for shape in shapes)
    per_frame = masked / pixels
    # The detector mask and hot pixels are masked in every frame: what is
    # left of each frame's fraction is the Bragg masking.
    detector = sum(int(d.sum()) for d in masker.detector_invalid) / pixels
    hot = (
        sum(int((h & ~d).sum()) for h, d in zip(masker.hot, masker.detector_invalid))
        / pixels
    )
    total = float(per_frame.mean())
    return {
        "frames": n_frames,
        "masked_fraction": total,
        "masked_fraction_per_image": per_frame.tolist(),
        "detector_masked_fraction": detector,
        "hot_pixel_fraction": hot,
        "bragg_masked_fraction": max(0.0, total - detector - hot),
    }


@dataclasses.dataclass
class MaskPeaksResult:
    """What `do_mask_peaks` masked.

    Attributes
    ----------
    image_numbers : ndarray
        The 1-based images of the mask.
    masked_fraction_per_image : list of float
    hot_pixels : int
        Pixels masked in every frame as hot.
    fractions : dict
        The overall masked fraction by cause (`write_mask`):
        detector_masked_fraction, hot_pixel_fraction, bragg_masked_fraction.
    """

    image_numbers: np.ndarray
    masked_fraction_per_image: list
    hot_pixels: int
    fractions: dict = dataclasses.field(default_factory=dict)

    def summary(self):
        """The key results for a program's JSON summary."""
        return {
            "frames": len(self.masked_fraction_per_image),
            "masked_fraction": float(np.mean(self.masked_fraction_per_image)),
            "masked_fraction_per_image": self.masked_fraction_per_image,
            "hot_pixels": self.hot_pixels,
            **self.fractions,
        }


def do_mask_peaks(
    sweep, peaks, model, path, params, pmap, frame_range=None, frames_per_chunk=10
):
    """Compute the peak mask of a sweep and stream it into a new mask.nxs at `path`.

    Parameters
    ----------
    sweep : Sweep
    peaks : Table
        The peak pixels of find_peaks (image, iy, ix, outlier).
    model : PeakModel
    path : Path
        Where to write the mask (the caller chooses the name; a program
        gives a temporary one that it renames when complete).
    params : PHIL extract with the parameters of `phil_scope`
    pmap : ParallelMap
    frame_range : (int, int), optional
        0-based half-open frames of the sweep's source; default all.
    frames_per_chunk : int

    Returns
    -------
    MaskPeaksResult
    """
    first, stop = frame_range or (0, sweep.source.n_frames)
    hot = panel_hot_pixels(
        peaks,
        sweep.source.panel_shapes,
        stop - first,
        params.hot_pixels.min_fraction,
    )
    n_hot = int(sum(panel.sum() for panel in hot))
    logger.info(
        "%d peak pixels, %d hot pixels; masking ellipsoids at %g sigma%s",
        len(peaks),
        n_hot,
        params.sigma_cutoff,
        " (inverted: Bragg peaks kept)" if params.bragg else "",
    )
    masker = PeakMasker(
        sweep,
        model,
        params.sigma_cutoff,
        peaks=peaks,
        hot=hot,
        bragg=params.bragg,
        mask_absent=params.mask_absent,
    )
    summary = write_mask(
        path,
        sweep,
        masker,
        pmap,
        frames_per_chunk=frames_per_chunk,
        frame_range=(first, stop),
    )
    logger.info(
        "Masked pixels: %.2f%% (detector mask and gaps %.2f%%, hot pixels %.3f%%, "
        "%s %.2f%%)",
        100 * summary["masked_fraction"],
        100 * summary["detector_masked_fraction"],
        100 * summary["hot_pixel_fraction"],
        "outside the Bragg peaks" if params.bragg else "Bragg peaks",
        100 * summary["bragg_masked_fraction"],
    )
    fractions = (
        "detector_masked_fraction",
        "hot_pixel_fraction",
        "bragg_masked_fraction",
    )
    return MaskPeaksResult(
        sweep.source.image_numbers[first:stop],
        summary["masked_fraction_per_image"],
        n_hot,
        {name: summary[name] for name in fractions},
    )
