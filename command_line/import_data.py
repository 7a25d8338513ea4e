"""dials.diffuse.import_data: copy a sweep's images into a chunked NeXus file."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.diffuse.sweep import load_sweep, sweep_phil
from dials_diffuse.io.image_series import default_chunks, write_image_series
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.import_data")

help_message = """
Copy the images of a refined sweep into data.nxs: one chunked, compressed
NeXus dataset /entry/image_series/data (frames x rows x columns, int32,
masked pixels -1) with the rotation angle phi (degrees, frame centres), the
pixel axes iy/ix and the exposure times, and NXdata attributes so that
NeXpy shows it (mdx2's image_series layout). Every later step of the chain
also reads the .expt's own images, so this copy is optional: it pays off
when the images are read several times (find_peaks, mask_peaks, integrate)
or to look at the data in NeXpy.

Pixels that DIALS masks (module gaps, bad pixels, values outside the
trusted range) are stored as -1.

Examples:

  dials.diffuse.import_data refined.expt

  dials.diffuse.import_data refined.expt chunks=10,256,256 image_range=1,50

  # bitshuffle/LZ4 as Eiger detectors write it (other readers need the
  # hdf5plugin filters to open it); two worker threads
  dials.diffuse.import_data refined.expt compression=bslz4 nproc=2

  # in Python (the seed's NeXpy/nexusformat cells work on the file too)
  import h5py; frames = h5py.File("data.nxs")["/entry/image_series/data"]
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = """
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
  .type = int(value_min=1, value_max=9)
  .help = "gzip level (libdeflate's levels; the file is standard gzip). 2 is"
          "the fastest on counting data (faster than 1 and 10-30% smaller with"
          "libdeflate 1.14); higher levels compress a little more, slower."
output {
  data = data.nxs
    .type = path
    .help = "The image series file."
}
"""
phil_scope = sweep_phil + step_phil


def main(params, inputs, run):
    sweep = load_sweep(inputs)
    frame_range = sweep.frame_range(params.image_range)
    n_frames = frame_range[1] - frame_range[0]
    chunks = params.chunks or default_chunks(
        n_frames, sweep.source.panel_shapes[0], params.frames_per_chunk
    )
    frames = np.arange(sweep.source.n_frames)
    logger.info(
        "Copying %d frames of %d x %d pixels in chunks of %s",
        n_frames,
        *sweep.source.panel_shapes[0],
        "x".join(map(str, chunks)),
    )
    with (
        run.timer("import_data"),
        run.write(params.output.data, "image series") as path,
        parallel_map_from_params(params) as pmap,
    ):
        summary = write_image_series(
            path,
            sweep.source,
            sweep.phi(frames),
            chunks=chunks,
            frame_range=frame_range,
            compression_level=params.compression_level,
            compression=params.compression,
            pmap=pmap,
        )
    run.results.update(summary)
    run.results["chunks"] = list(chunks)


program = Program(
    name="import_data",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
    reads_images=True,
)


def run(args=None):
    """Entry point: run the program, return its exit code."""
    return program.run(args)


if __name__ == "__main__":
    sys.exit(run())
