"""Per-frame sums of the pixels within [low, high], streamed in parallel.

Two sources of frames: a DECTRIS Eiger master file through the fast path
(`EigerMasterSource`: raw chunks decoded and summed in one C++ pass, GIL
released), or any dxtbx imageset (frames read by dxtbx, summed in C++).
Frames are cut into batches; a `ParallelMap` (threads, or Dask) runs the
batches, and results come back in order, so memory holds only the batches
in flight.
"""

import dataclasses

import numpy as np

from dials_diffuse import _kernels
from dials_diffuse.images.eiger import CODEC_DEFLATE, EigerMasterSource
from dials_diffuse.images.imageset import image_numbers, read_frame
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
    """

    image_numbers: np.ndarray
    sums: np.ndarray
    used: np.ndarray
    maxima: np.ndarray
    invalid: np.ndarray

    @property
    def means(self):
        """Mean used pixel value per frame (counts/pixel), NaN if none used."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.used > 0, self.sums / np.maximum(self.used, 1), np.nan)

    def to_frame(self):
        """The series as a pandas DataFrame, one row per frame."""
        import pandas as pd

        return pd.DataFrame(
            {
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


def _sum_imageset_batch(item):
    """Sums of frames [start, stop) of a dxtbx imageset, over every panel."""
    imageset, start, stop, low, high, mask = item
    n = stop - start
    sums, used = np.zeros(n), np.zeros(n, dtype=np.int64)
    maxima, invalid = np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    for i, index in enumerate(range(start, stop)):
        data, valid = read_frame(imageset, index)
        for panel, (values, panel_valid) in enumerate(zip(data, valid)):
            if mask is not None:
                panel_valid = panel_valid & mask[panel]
            s, u, m, bad = _kernels.frame_statistics(
                values[np.newaxis], low, high, np.ascontiguousarray(panel_valid)
            )
            sums[i] += s[0]
            used[i] += u[0]
            invalid[i] += bad[0]
            if not np.isnan(m[0]):
                maxima[i] = m[0] if np.isnan(maxima[i]) else max(maxima[i], m[0])
    return sums, used, maxima, invalid


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
        frame_bytes = sum(
            4 * p.get_image_size()[0] * p.get_image_size()[1]
            for p in source.get_detector()
        )
    return int(min(64, max(1, BATCH_BYTES // max(frame_bytes, 1))))


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
    source : EigerMasterSource or dxtbx ImageSet/ImageSequence
    image_range : (int, int), optional
        First and last image number, inclusive, as DIALS numbers them (the
        sequence's image numbers; a master file's from 1); a last image of 0
        means the last image. Default: all.
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
    """
    if high < low:
        raise DataError(f"high={high} is below low={low}")
    if isinstance(source, EigerMasterSource):
        numbers, work = source.image_numbers, _sum_eiger_batch
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        valid = _eiger_valid_bits(source, mask)  # once, not per batch
    else:
        numbers, work, valid = image_numbers(source), _sum_imageset_batch, mask
    if image_range is not None and image_range[1] == 0:
        image_range = (image_range[0], numbers[-1])
    start, stop = frame_range(numbers, image_range)
    batch_frames = batch_frames or default_batch_frames(source)
    items = [
        (source, b, min(b + batch_frames, stop), float(low), float(high), valid)
        for b in range(start, stop, batch_frames)
    ]
    if pmap is None:
        results = map(work, items)
    else:
        results = pmap(work, items)
    parts = []
    with progress(total=stop - start, desc="Summing frames", unit="frame") as bar:
        for result in results:
            parts.append(result)
            bar.update(len(result[0]))
    sums, used, maxima, invalid = (np.concatenate(c) for c in zip(*parts))
    return FrameSums(numbers[start:stop], sums, used, maxima, invalid)
