"""dials.diffuse.import_data: copy a sweep's images into a chunked NeXus file."""

import logging
import sys

from dials_diffuse.algorithms.diffuse.import_data import do_import_data
from dials_diffuse.algorithms.diffuse.sweep import sweep_phil
from dials_diffuse.util.inputs import load_sweep
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

  # in Python (the NeXpy/nexusformat cells of mdx2's tutorial work on it too)
  import h5py; frames = h5py.File("data.nxs")["/entry/image_series/data"]
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = """
include scope dials_diffuse.algorithms.diffuse.import_data.phil_scope
output {
  data = data.nxs
    .type = path
    .help = "The image series file."
}
"""
phil_scope = sweep_phil + step_phil


def main(params, inputs, run):
    sweep = load_sweep(inputs)
    with (
        run.timer("import_data"),
        run.write(params.output.data, "image series") as path,
        parallel_map_from_params(params) as pmap,
    ):
        result = do_import_data(
            sweep,
            path,
            params,
            pmap,
            sweep.frame_range(params.image_range),
            frames_per_chunk=params.frames_per_chunk,
        )
    run.results.update(result.summary())


program = Program(
    name="import_data",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
    reads_images=True,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
