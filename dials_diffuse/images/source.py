"""The ImageSource interface: a stack of frames read chunk by chunk.

Every image reader of dials-diffuse (any dxtbx imageset, the fast HDF5 path
for NXmx/Eiger files, SACLA DataConvert files, our own data.nxs) implements
this interface, so algorithms never care where pixels come from. A *chunk* is
always a block of frames x rows x columns of one panel.

Conventions
-----------
- Frames are numbered 0 .. n_frames-1 within the source; `image_numbers`
  gives the 1-based DIALS image number of each (as in `image_range`).
- `read` returns raw values in the detector's dtype, with a validity mask:
  True where the pixel is usable (the DIALS convention). Gap, bad-pixel and
  overload values are marked invalid in the mask, never used as numbers.
- Memory is bounded by the chunk asked for: sources never load whole data
  sets.
"""

import abc
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Where a chunk lies: a panel and a block of frames x rows x columns."""

    panel: int
    frames: slice
    rows: slice
    columns: slice

    @property
    def shape(self):
        return (
            self.frames.stop - self.frames.start,
            self.rows.stop - self.rows.start,
            self.columns.stop - self.columns.start,
        )


class ImageSource(abc.ABC):
    """A stack of frames with per-frame metadata and a static mask."""

    @property
    @abc.abstractmethod
    def n_frames(self):
        """Number of frames."""

    @property
    @abc.abstractmethod
    def panel_shapes(self):
        """(rows, columns) of each panel."""

    @property
    @abc.abstractmethod
    def dtype(self):
        """numpy dtype of the raw pixel values."""

    @property
    def image_numbers(self):
        """1-based DIALS image number of each frame (ndarray of int)."""
        return np.arange(1, self.n_frames + 1)

    @property
    def exposure_times(self):
        """Exposure time of each frame in seconds (ndarray), NaN where unknown."""
        return np.full(self.n_frames, np.nan)

    @property
    def angles_deg(self):
        """Rotation angle (degrees) at the centre of each frame (ndarray), NaN for stills."""
        return np.full(self.n_frames, np.nan)

    @abc.abstractmethod
    def static_mask(self, panel=0):
        """Validity mask (rows, columns) of bool valid for every frame: gaps, bad pixels."""

    @abc.abstractmethod
    def read(self, chunk):
        """Read one chunk.

        Returns
        -------
        data : ndarray, shape chunk.shape, dtype self.dtype
        valid : ndarray of bool, shape chunk.shape
            The static mask and per-frame invalid values (overloads, gap
            markers) combined.
        """

    def chunks(self, frames=1, rows=None, columns=None, panels=None, frame_range=None):
        """Iterate Chunk descriptors covering the data in C order.

        Parameters
        ----------
        frames, rows, columns : int
            Chunk size; rows/columns default to the whole panel.
        panels : list of int, optional
            Default all panels.
        frame_range : (int, int), optional
            0-based half-open range of frames; default all.
        """
        first, stop = frame_range if frame_range else (0, self.n_frames)
        panels = range(len(self.panel_shapes)) if panels is None else panels
        for panel in panels:
            n_rows, n_columns = self.panel_shapes[panel]
            row_step = rows or n_rows
            column_step = columns or n_columns
            for f in range(first, stop, frames):
                for r in range(0, n_rows, row_step):
                    for c in range(0, n_columns, column_step):
                        yield Chunk(
                            panel,
                            slice(f, min(f + frames, stop)),
                            slice(r, min(r + row_step, n_rows)),
                            slice(c, min(c + column_step, n_columns)),
                        )
