"""import_data: a sweep's images copied into a chunked, compressed data.nxs.

Optional in the diffuse chain (every later step also reads the `.expt`'s own
images), it pays off when the images are read several times or to look at
them in NeXpy. The file format is `dials_diffuse.io.image_series`.
"""

import dataclasses
import logging

import numpy as np
from libtbx.phil import parse

from dials_diffuse.io.image_series import default_chunks, write_image_series

logger = logging.getLogger(__name__)

#: The parameters of import_data (dials.diffuse.import_data and process include them).
phil_scope = parse(
    """
chunks = None
  .type = ints(size=3, value_min=1)
  .help = "HDF5 chunk shape frames,rows,columns. Default: 10 frames of"
          "256 x 256 pixel tiles (frames_per_chunk frames)."
compression = *gzip bslz4
  .type = choice
  .help = "gzip (with the shuffle filter) opens in every HDF5 reader (NeXpy,"
          "h5py and mdx2 without plugins); worker threads compress it. bslz4"
          "(bitshuffle/LZ4, as Eiger detectors write) needs the HDF5 filter"
          "plugin ('import hdf5plugin' in Python, HDF5_PLUGIN_PATH for other"
          "readers), is written by HDF5's filter in one thread and reads no"
          "faster than gzip here (both are decoded in C++)."
compression_level = 2
  .type = int(value_min=1, value_max=9, allow_none=False)
  .help = "gzip level (libdeflate's levels; the file is standard gzip). 2 is"
          "the fastest on counting data (faster than 1 and 10-30% smaller with"
          "libdeflate 1.14); higher levels compress a little more, slower."
"""
)


@dataclasses.dataclass
class ImportDataResult:
    """What `do_import_data` copied: frames, masked pixel-frames, the chunk shape."""

    frames: int
    masked_pixel_frames: int
    chunks: tuple

    def summary(self):
        """The key results for a program's JSON summary."""
        return {
            "frames": self.frames,
            "masked_pixel_frames": self.masked_pixel_frames,
            "chunks": list(self.chunks),
        }


def do_import_data(sweep, path, params, pmap, frame_range=None, frames_per_chunk=10):
    """Copy the sweep's images into a new data.nxs at `path`, chunk by chunk.

    Parameters
    ----------
    sweep : Sweep
    path : Path
        Where to write (the caller chooses the name; a program gives a
        temporary one that it renames when complete).
    params : PHIL extract with the parameters of `phil_scope`
    pmap : ParallelMap
        Reads and compresses chunks in parallel.
    frame_range : (int, int), optional
        0-based half-open frames of the sweep's source; default all.
    frames_per_chunk : int
        Frames per HDF5 chunk when `params.chunks` is None.

    Returns
    -------
    ImportDataResult
    """
    frame_range = frame_range or (0, sweep.source.n_frames)
    n_frames = frame_range[1] - frame_range[0]
    shapes = sweep.source.panel_shapes
    largest = tuple(int(n) for n in np.max(shapes, axis=0))  # cut to each panel
    chunks = params.chunks or default_chunks(n_frames, largest, frames_per_chunk)
    logger.info(
        "Copying %d frames of %s pixels in chunks of %s",
        n_frames,
        " + ".join(f"{rows} x {columns}" for rows, columns in shapes),
        "x".join(map(str, chunks)),
    )
    summary = write_image_series(
        path,
        sweep.source,
        sweep.phi(np.arange(sweep.source.n_frames)),
        chunks=chunks,
        frame_range=frame_range,
        compression_level=params.compression_level,
        compression=params.compression,
        pmap=pmap,
    )
    return ImportDataResult(summary["frames"], summary["masked_pixel_frames"], chunks)
