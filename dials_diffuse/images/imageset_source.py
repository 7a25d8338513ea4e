"""An ImageSource over a dxtbx imageset (any format DIALS reads).

Frames are read through the imageset's Format class, one at a time, with
the DIALS mask (static format mask, external mask, trusted range). Reading
is serialised with a lock (dxtbx readers are not thread-safe); the work done
on the pixels afterwards runs in parallel.
"""

import threading

import numpy as np

from dials_diffuse.images.imageset import read_frame
from dials_diffuse.images.source import ImageSource


class ImagesetSource(ImageSource):
    """Frames of a dxtbx imageset (a sweep), numbered 0.. within it.

    Parameters
    ----------
    imageset : dxtbx ImageSet or ImageSequence
    """

    def __init__(self, imageset):
        self.imageset = imageset
        self._lock = threading.Lock()
        self._first = None

    def __getstate__(self):
        return {"imageset": self.imageset}

    def __setstate__(self, state):
        self.__init__(state["imageset"])

    def _first_frame(self):
        if self._first is None:
            with self._lock:
                self._first = read_frame(self.imageset, 0)
        return self._first

    @property
    def n_frames(self):
        return len(self.imageset)

    @property
    def panel_shapes(self):
        return [
            tuple(reversed(panel.get_image_size()))
            for panel in self.imageset.get_detector()
        ]

    @property
    def dtype(self):
        return self._first_frame()[0][0].dtype

    @property
    def image_numbers(self):
        scan = self.imageset.get_scan()
        if scan is None:
            return np.arange(1, self.n_frames + 1)
        first = scan.get_image_range()[0]
        return np.arange(first, first + self.n_frames)

    @property
    def exposure_times(self):
        scan = self.imageset.get_scan()
        if scan is None:
            return np.full(self.n_frames, np.nan)
        return np.asarray(scan.get_exposure_times(), dtype=np.float64)

    def static_mask(self, panel=0):
        """The DIALS mask of the first frame (format mask, external mask, gaps)."""
        return self._first_frame()[1][panel].copy()

    def read(self, chunk):
        data = np.empty(chunk.shape, dtype=self.dtype)
        valid = np.empty(chunk.shape, dtype=bool)
        for i, frame in enumerate(range(chunk.frames.start, chunk.frames.stop)):
            with self._lock:
                pixels, mask = read_frame(self.imageset, frame)
            data[i] = pixels[chunk.panel][chunk.rows, chunk.columns]
            valid[i] = mask[chunk.panel][chunk.rows, chunk.columns]
        return data, valid
