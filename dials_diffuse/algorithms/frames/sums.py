"""Per-frame sums of the pixels within [low, high], streamed in parallel.

Two sources of frames: a DECTRIS Eiger master file through the fast path
(`EigerMasterSource`: raw chunks decoded and summed in one C++ pass, GIL
released), or any number of dxtbx image sets, sweeps and stills
(`ShotReader`: frames read by dxtbx, summed per panel in C++).
Frames are cut into batches; a `ParallelMap` (threads, or Dask) runs the
batches, and results come back in order, so memory holds only the batches
in flight.
"""

import dataclasses
import functools

import numpy as np

from dials_diffuse import _kernels
from dials_diffuse.images.eiger import CODEC_DEFLATE, EigerMasterSource
from dials_diffuse.images.source import frame_range
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.progress import progress


@dataclasses.dataclass
class FrameSums:
    """Per-frame statistics of the used pixels (valid and within [low, high]).

    Attributes
    ----------
    image_numbers : ndarray of int
        1-based image numbers (DIALS `image_range` numbering).
    sums : ndarray of float
        Sum of the used pixel values of each frame, in counts.
    used : ndarray of int
        Number of used pixels.
    maxima : ndarray of float
        Largest used value (counts), NaN when no pixel was used.
    invalid : ndarray of int
        Pixels valid in the static mask but flagged by their value (gap
        marker 2^N-1 or above the saturation value): overloads per frame.
    imagesets, experiments : ndarray of int, optional
        0-based imageset (input series) and experiment of each frame, when
        the frames come from several image sets (sweeps or stills).
    panels : pandas.DataFrame, optional
        One row per frame and panel (multi-panel detectors): experiment,
        imageset, image, panel, sum, pixels_used, max, invalid.
    """

    image_numbers: np.ndarray
    sums: np.ndarray
    used: np.ndarray
    maxima: np.ndarray
    invalid: np.ndarray
    imagesets: np.ndarray = None
    experiments: np.ndarray = None
    panels: object = None

    @property
    def means(self):
        """Mean used pixel value per frame (counts/pixel), NaN if none used."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.used > 0, self.sums / np.maximum(self.used, 1), np.nan)

    @classmethod
    def concatenate(cls, parts):
        """The frames of several Eiger series, one after the other, with the
        series (imageset and experiment) of each frame; one part as it is."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            image_numbers=np.concatenate([p.image_numbers for p in parts]),
            sums=np.concatenate([p.sums for p in parts]),
            used=np.concatenate([p.used for p in parts]),
            maxima=np.concatenate([p.maxima for p in parts]),
            invalid=np.concatenate([p.invalid for p in parts]),
            imagesets=np.concatenate(
                [np.full(p.sums.size, i) for i, p in enumerate(parts)]
            ),
            experiments=np.concatenate(
                [np.full(p.sums.size, i) for i, p in enumerate(parts)]
            ),
        )

    def to_frame(self):
        """The series as a pandas DataFrame, one row per frame."""
        import pandas as pd

        columns = {}
        if self.imagesets is not None:
            columns = {"experiment": self.experiments, "imageset": self.imagesets}
        return pd.DataFrame(
            {
                **columns,
                "image": self.image_numbers,
                "sum": self.sums,
                "pixels_used": self.used,
                "mean": self.means,
                "max": self.maxima,
                "invalid": self.invalid,
            }
        )


def _eiger_valid_bits(source, mask):
    """The valid pixels of an Eiger source (and `mask`) as packed bits.

    numpy.packbits(bitorder="little") of the flattened mask: what the C++
    kernels take (8 times smaller than a byte mask), computed once per series.
    """
    valid = source.static_mask() if mask is None else source.static_mask() & mask
    return np.packbits(valid.ravel(), bitorder="little")


def _sum_eiger_batch(item):
    """Sums of frames [start, stop) of an Eiger source (module level: Dask pickles it)."""
    source, start, stop, low, high, valid_bits = item
    rows, columns = source.panel_shapes[0]
    n_pixels = rows * columns
    parts = []
    for codec, first, payload in source.raw_frames(start, stop, reuse_buffer=True):
        if codec is None or codec == CODEC_DEFLATE:
            # Decoded here (libdeflate) or by h5py: sum the decoded frames.
            frames = (
                np.ascontiguousarray(payload)
                if codec is None
                else np.stack(
                    [
                        source.decode_into(
                            codec, raw, np.empty((rows, columns), source.dtype), f
                        )
                        for f, raw in enumerate(payload, start=first)
                    ]
                )
            )
            flat_valid = np.unpackbits(valid_bits, count=n_pixels, bitorder="little")
            parts.append(
                _kernels.frame_statistics(
                    frames, low, high, flat_valid, source.invalid_from
                )
            )
            continue
        try:
            parts.append(
                _kernels.compressed_frame_statistics(
                    payload,
                    codec,
                    source.dtype,
                    n_pixels,
                    low,
                    high,
                    invalid_from=source.invalid_from,
                    mask_bits=valid_bits,
                )
            )
        except ValueError as error:
            raise DataError(
                f"{source.path}: images {first + 1}-{first + len(payload)}: "
                f"corrupt data ({error})"
            ) from error
    return tuple(np.concatenate(column) for column in zip(*parts))


PANEL_COLUMNS = [
    "experiment",
    "imageset",
    "image",
    "panel",
    "sum",
    "pixels_used",
    "max",
    "invalid",
]


def _sum_shots_batch(reader, batch, low, high, mask):
    """Per-panel sums of a batch of shots (read through dxtbx): rows of
    PANEL_COLUMNS."""
    rows = []
    for shot in batch:
        data, valid = reader.read(shot)
        for panel, (values, panel_valid) in enumerate(zip(data, valid)):
            if mask is not None:
                panel_valid = panel_valid & mask[panel]
            total, used, largest, bad = _kernels.frame_statistics(
                values[np.newaxis], low, high, np.ascontiguousarray(panel_valid)
            )
            rows.append(
                (
                    shot.experiment,
                    shot.imageset,
                    shot.image,
                    panel,
                    float(total[0]),
                    int(used[0]),
                    float(largest[0]),
                    int(bad[0]),
                )
            )
    return rows


BATCH_BYTES = 64 * 2**20


def default_batch_frames(source):
    """Frames per batch: about BATCH_BYTES of decoded pixels, 1 to 64 frames.

    Memory holds about 2 x workers batches (compressed, on the fast path), so
    this bounds it for any frame size (a 16M Eiger frame is 1 frame/batch).
    """
    if isinstance(source, EigerMasterSource):
        rows, columns = source.panel_shapes[0]
        frame_bytes = rows * columns * source.dtype.itemsize
    else:
        frame_bytes = sum(4 * r * c for r, c in source.panel_shapes)
    return int(min(64, max(1, BATCH_BYTES // max(frame_bytes, 1))))


def to_the_end(image_range, numbers):
    """`image_range` with a last image of 0 (the 2018 Eiger summing tool's
    `end: 0`) meaning the last image of the series: the largest of the image
    numbers of every series (`numbers`, one sequence per series)."""
    if image_range is not None and image_range[1] == 0:
        return (image_range[0], max(int(n[-1]) for n in numbers if len(n)))
    return image_range


def sum_frames(
    source,
    image_range=None,
    low=0.0,
    high=np.inf,
    mask=None,
    pmap=None,
    batch_frames=None,
):
    """Per-frame sums of the valid pixels within [low, high].

    Parameters
    ----------
    source : EigerMasterSource or dials_diffuse.images.shots.ShotReader
        An Eiger master file (fast path), or any number of image sets
        (sweeps and stills) read through dxtbx: every image is one frame.
    image_range : (int, int), optional
        First and last image number, inclusive, as DIALS numbers them (the
        sequence's image numbers; a master file's and stills' from 1; in
        every image set: `ShotReader.shots`); a last image of 0 means the
        last image. Default: all.
    low, high : float
        Pixels with low <= value <= high (counts) are used; others excluded.
    mask : ndarray of bool, or list of them (one per panel), optional
        Extra validity mask (True = use), combined with the detector's.
    pmap : ParallelMap, optional
        Runs batches in parallel; default: one thread.
    batch_frames : int, optional
        Frames per batch (per task). Default: about BATCH_BYTES of decoded
        pixels per batch (1 to 64 frames). A progress bar in frames/s shows
        on a terminal.

    Returns
    -------
    FrameSums
        Through dxtbx: with the imageset and experiment of each frame, and
        per-panel rows for a multi-panel detector.
    """
    if high < low:
        raise DataError(f"high={high} is below low={low}")
    batch_frames = batch_frames or default_batch_frames(source)
    if not isinstance(source, EigerMasterSource):
        return _sum_shots(source, image_range, low, high, mask, pmap, batch_frames)
    if isinstance(mask, (list, tuple)):
        mask = mask[0]
    numbers = source.image_numbers
    valid = _eiger_valid_bits(source, mask)  # once, not per batch
    start, stop = frame_range(numbers, to_the_end(image_range, [numbers]))
    items = [
        (source, b, min(b + batch_frames, stop), float(low), float(high), valid)
        for b in range(start, stop, batch_frames)
    ]
    results = (
        map(_sum_eiger_batch, items) if pmap is None else pmap(_sum_eiger_batch, items)
    )
    parts = []
    with progress(total=stop - start, desc="Summing frames", unit="frame") as bar:
        for result in results:
            parts.append(result)
            bar.update(len(result[0]))
    sums, used, maxima, invalid = (np.concatenate(c) for c in zip(*parts))
    return FrameSums(numbers[start:stop], sums, used, maxima, invalid)


def _sum_shots(reader, image_range, low, high, mask, pmap, batch_frames):
    """`sum_frames` of the image sets of a ShotReader (see there)."""
    import pandas as pd

    from dials_diffuse.images.shots import map_shots

    numbers = [s.image_numbers for s in reader.sources]
    shots = reader.shots(to_the_end(image_range, numbers))
    work = functools.partial(
        _sum_shots_batch, low=float(low), high=float(high), mask=mask
    )
    rows = []
    n_panels = len(reader.panel_shapes)
    with progress(total=len(shots), desc="Summing frames", unit="frame") as bar:
        for batch_rows in map_shots(work, reader, shots, pmap, batch_frames):
            rows.extend(batch_rows)
            bar.update(len(batch_rows) // n_panels)
    panels = pd.DataFrame(rows, columns=PANEL_COLUMNS)
    frames = panels.groupby(np.arange(len(panels)) // n_panels)
    maxima = frames["max"].max().to_numpy()  # NaN only where every panel is
    return FrameSums(
        image_numbers=np.array([s.image for s in shots]),
        sums=frames["sum"].sum().to_numpy(),
        used=frames["pixels_used"].sum().to_numpy(),
        maxima=maxima,
        invalid=frames["invalid"].sum().to_numpy(),
        imagesets=np.array([s.imageset for s in shots]),
        experiments=np.array([s.experiment for s in shots]),
        panels=panels if n_panels > 1 else None,
    )
