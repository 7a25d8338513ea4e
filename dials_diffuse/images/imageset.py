"""Read frames of a dxtbx imageset as numpy arrays, with the DIALS mask.

`read_frame` reads one whole frame; `ImagesetSource` streams any dxtbx
imageset as an `ImageSource`. Every frame of an HDF5 (NXmx, Eiger) file is
first checked to be readable in full (`dials_diffuse.images.hdf5_sources`:
HDF5 would read a missing or truncated data file as zeros). Errors while
reading (a missing, truncated or corrupt image file) become a `DataError`
``"<file>: image N cannot be read: <reason>"``.
"""

import collections
import functools
import threading

import dxtbx.model  # noqa: F401  (its converters unpickle an imageset's models: Dask workers)
import numpy as np
from dxtbx import flumpy

from dials_diffuse.geometry import rotation_angle_deg
from dials_diffuse.images.hdf5_sources import check_frames, is_hdf5
from dials_diffuse.images.source import (
    ImageSource,
    exclude_non_finite,
    output_buffer,
)
from dials_diffuse.util.compat import within_trusted_range
from dials_diffuse.util.errors import DataError


def frame_file(imageset, index):
    """The file that holds frame `index` (0-based within the imageset)."""
    try:
        return imageset.get_path(index)
    except Exception:
        return "<unknown file>"


@functools.lru_cache(maxsize=256)
def _is_hdf5(path):
    return is_hdf5(path)


def check_frame(imageset, index):
    """Raise a DataError if frame `index` of an HDF5 imageset cannot be read in full.

    The frame's number in its file is the imageset's index of it (an image
    range of an NXmx sweep starts inside the file).
    """
    path = frame_file(imageset, index)
    if not _is_hdf5(path):
        return
    try:
        in_file = int(imageset.indices()[index])
    except (AttributeError, IndexError, RuntimeError):
        in_file = index
    check_frames(path, in_file, in_file + 1)


def read_frame(imageset, index, static_masks=None):
    """Raw pixel data and validity mask of every panel of one frame.

    Parameters
    ----------
    imageset : dxtbx ImageSet or ImageSequence
    index : int
        0-based index within the imageset.
    static_masks : list of ndarray of bool, optional
        The imageset's static mask per panel (``ImagesetSource.static_mask``).
        When given (and the imageset has no dynamic, goniometer-shadow mask),
        the mask is this and the trusted range, as ``imageset.get_mask`` does,
        without dxtbx reading the image a second time.

    Returns
    -------
    data : list of ndarray
        One (ny, nx) array per panel, in the detector's own dtype (int32 for
        most counting detectors, float64 where dxtbx gives doubles).
    mask : list of ndarray of bool
        True where the pixel is valid: the format's static mask (gaps, bad
        pixels), any external mask, and the panel's trusted range.
    """
    check_frame(imageset, index)
    try:
        raw = imageset.get_raw_data(index)
        if not isinstance(raw, tuple):
            raw = (raw,)
        # Views of dxtbx's arrays (no copy); each keeps its flex array alive.
        data = [np.ascontiguousarray(flumpy.to_numpy(panel)) for panel in raw]
        if static_masks is None or imageset.has_dynamic_mask():
            mask = [panel.as_numpy_array() for panel in imageset.get_mask(index)]
        else:
            detector = imageset.get_detector()
            mask = []
            for static, panel, values in zip(static_masks, detector, data):
                valid = within_trusted_range(panel, values)
                valid &= static
                mask.append(valid)
    except Exception as error:
        message = str(error).strip().splitlines()
        reason = message[-1] if message else type(error).__name__
        raise DataError(
            f"{frame_file(imageset, index)}: image {index + 1} cannot be read: {reason}"
        ) from error
    valid = [np.ascontiguousarray(panel, dtype=bool) for panel in mask]
    for values, panel_valid in zip(data, valid):
        exclude_non_finite(values, panel_valid, frame_file(imageset, index))
    return data, valid


def _external_mask(imageset, panel):
    """The imageset's external (user) mask of one panel, or None."""
    mask = imageset.external_lookup.mask.data
    if mask.empty():
        return None
    return mask.tile(panel).data().as_numpy_array().astype(bool)


def _format_static_mask(imageset, panel):
    """The format class's static mask (gaps, bad pixels) of one panel, or None."""
    try:
        data = imageset.data()
        if data.has_single_file_reader():
            path = data.get_master_path()
        else:
            path = imageset.get_path(0)
        instance = imageset.get_format_class().get_instance(path, **imageset.params())
        masks = instance.get_static_mask()
    except Exception as error:
        raise DataError(
            f"{frame_file(imageset, 0)}: cannot read the detector mask ({error})"
        ) from error
    if masks is None:
        return None
    return np.asarray(masks[panel].as_numpy_array(), dtype=bool)


def image_numbers(imageset):
    """DIALS image number of every image of an imageset (ndarray of int).

    A sequence's numbers are its scan's image range (they need not start at
    1); images without a scan (stills) are numbered by their position in the
    file list, from 1.
    """
    scan = imageset.get_scan() if hasattr(imageset, "get_scan") else None
    if scan is not None:
        first, last = scan.get_image_range()
        return np.arange(first, last + 1)
    return np.asarray(imageset.indices(), dtype=int) + 1


class ImagesetSource(ImageSource):
    """Any dxtbx imageset (every format DIALS reads) as an ImageSource.

    Frames are the imageset's images in order; per-frame rotation angles and
    exposure times come from its scan (NaN for stills). The static mask is
    the DIALS one without the per-frame trusted-range test: the format's
    mask (module gaps, bad pixels), the untrusted rectangles of the detector
    model and any external mask (``dials.import mask=``). ``read`` adds the
    trusted-range test of each frame (overloads, gap markers), exactly as
    ``imageset.get_mask(index)``.

    dxtbx reads whole images (every panel), so a chunk smaller than a frame
    costs one frame read; the frames last read are kept so that row/column
    chunks of one frame, and on a multi-panel detector the other panels'
    chunks of the same frames (`ImageSource.chunks` goes frame block by
    frame block), read each frame once: the last frame, or the frames of
    the last two chunks on a multi-panel detector. dxtbx reads are
    serialised (format classes are not all thread-safe); the caller's
    per-chunk work still runs in parallel.
    """

    def __init__(self, imageset):
        self.imageset = imageset
        self._lock = threading.Lock()
        self._frames = collections.OrderedDict()
        self._capacity = 1
        self._dtype = None
        self._static = None

    def __getstate__(self):
        # The lock and the frame cache stay in this process (Dask pickles sources).
        return {"imageset": self.imageset}

    def __setstate__(self, state):
        self.__init__(state["imageset"])

    @property
    def n_frames(self):
        return len(self.imageset)

    @property
    def panel_shapes(self):
        return [
            tuple(panel.get_image_size()[::-1])
            for panel in self.imageset.get_detector()
        ]

    @property
    def dtype(self):
        if self._dtype is None:
            data, _ = self.frame(0)
            self._dtype = data[0].dtype
        return self._dtype

    @property
    def scan(self):
        """The imageset's scan, or None for stills."""
        scan = self.imageset.get_scan() if hasattr(self.imageset, "get_scan") else None
        return scan if scan is not None and scan.get_oscillation()[1] != 0 else None

    @property
    def image_numbers(self):
        return image_numbers(self.imageset)

    @property
    def exposure_times(self):
        scan = self.imageset.get_scan() if hasattr(self.imageset, "get_scan") else None
        if scan is None:
            return super().exposure_times
        times = scan.get_exposure_times().as_numpy_array()
        return (
            times if len(times) == self.n_frames else np.full(self.n_frames, times[0])
        )

    @property
    def angles_deg(self):
        scan = self.scan
        if scan is None:
            return super().angles_deg
        first = scan.get_array_range()[0]
        return rotation_angle_deg(scan, first + np.arange(self.n_frames) + 0.5)

    def static_mask(self, panel=0):
        model = self.imageset.get_detector()[panel]
        valid = model.get_untrusted_rectangle_mask().as_numpy_array().astype(bool)
        for extra in (
            _format_static_mask(self.imageset, panel),
            _external_mask(self.imageset, panel),
        ):
            if extra is not None:
                valid &= extra
        return valid

    def _static_masks(self):
        if self._static is None:
            n_panels = len(self.imageset.get_detector())
            self._static = [self.static_mask(panel) for panel in range(n_panels)]
        return self._static

    def frame(self, index):
        """(data, valid) of every panel of frame `index` (0-based), as
        `read_frame`; reads are serialised, the frames last read are kept."""
        with self._lock:
            cached = self._frames.get(index)
            if cached is None:
                cached = read_frame(self.imageset, index, self._static_masks())
                self._frames[index] = cached
                while len(self._frames) > self._capacity:
                    self._frames.popitem(last=False)
            else:
                self._frames.move_to_end(index)
            return cached

    def read(self, chunk, out=None):
        if len(self._static_masks()) > 1:
            # Keep two chunks' frames: the other panels read them next.
            n_frames = chunk.frames.stop - chunk.frames.start
            with self._lock:
                self._capacity = max(self._capacity, 2 * n_frames)
        data = output_buffer(chunk.shape, self.dtype, out)
        valid = np.empty(chunk.shape, dtype=bool)
        for i, index in enumerate(range(chunk.frames.start, chunk.frames.stop)):
            frame, mask = self.frame(index)
            data[i] = frame[chunk.panel][chunk.rows, chunk.columns]
            valid[i] = mask[chunk.panel][chunk.rows, chunk.columns]
        return data, valid
