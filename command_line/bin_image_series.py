"""dials.diffuse.bin_image_series: a binned background count rate for correct."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.diffuse.background import bin_image_series
from dials_diffuse.algorithms.diffuse.sweep import nexus_input, readable_imageset
from dials_diffuse.images.imageset import ImagesetSource
from dials_diffuse.images.source import frame_range
from dials_diffuse.io.background_file import write_background
from dials_diffuse.io.image_series import NexusDataSource
from dials_diffuse.io.mask_file import MaskFile
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.bin_image_series")

help_message = """
Bin a series of images into coarse blocks of frames x rows x columns and
record each block's mean count rate per pixel (counts/s), as mdx2's
bin_image_series: the background that correct subtracts (background=).
Typically the images are a background measurement (the same geometry
without the crystal); the sweep itself with its peak mask also works.
Images come from a data.nxs, an .expt or image files; no crystal is needed.

Output: background.nxs (/entry/binned_image_series: rate on the block
centres phi (degrees), iy, ix).

Examples:

  dials.diffuse.bin_image_series background.expt bins=10,20,20

  dials.diffuse.bin_image_series data.nxs mask=mask.nxs bins=1,20,20
  dials.diffuse.correct refined.expt integrated.nxs background=background.nxs
"""

# The step's own parameters.
step_phil = phil_scope = """
bins = 10,20,20
  .type = ints(size=3, value_min=1)
  .help = "Frames, rows and columns per block."
image_range = None
  .type = ints(size=2, value_min=1)
  .help = "First and last image to bin, inclusive, numbered as DIALS numbers"
          "the sequence's images. Default: all."
mask = None
  .type = path
  .help = "A mask.nxs (1 = excluded) whose pixels are left out, e.g. the peaks."
output {
  background = background.nxs
    .type = path
    .help = "The binned background count rate."
}
"""


def main(params, inputs, run):
    data_file = nexus_input(inputs, "image_series")
    if data_file is not None:
        source = NexusDataSource(data_file)
    elif len(inputs.experiments) == 1:
        source = ImagesetSource(readable_imageset(inputs, inputs.experiments[0]))
    else:
        raise UserError("give the images: a data.nxs, one .expt or image files")
    if len(source.panel_shapes) != 1:
        raise UserError("only single-panel detectors are supported")
    numbers = source.image_numbers
    frames = frame_range(numbers, params.image_range)
    mask_file = MaskFile(params.mask) if params.mask else None
    if mask_file is not None:
        mask_file.check_covers(numbers[slice(*frames)], source.panel_shapes[0])
    with run.timer("bin_image_series"):
        background = bin_image_series(
            source, params.bins, source.angles_deg, mask_file, frames
        )
    logger.info(
        "Background on %d x %d x %d blocks: %.4g to %.4g counts/s per pixel",
        *background.rate.shape,
        float(np.min(background.rate)),
        float(np.max(background.rate)),
    )
    run.results["shape"] = list(background.rate.shape)
    with run.write(params.output.background, "binned background") as path:
        write_background(path, background)


program = Program(
    name="bin_image_series", phil=phil_scope, help=help_message, main=main
)


def run(args=None):
    """Entry point: run the program, return its exit code."""
    return program.run(args)


if __name__ == "__main__":
    sys.exit(run())
