"""dials.diffuse.bin_image_series: a binned background count rate for correct."""

import logging
import sys

from dials_diffuse.algorithms.diffuse.background import do_bin_image_series
from dials_diffuse.images.imageset import ImagesetSource
from dials_diffuse.images.source import frame_range
from dials_diffuse.io.background_file import write_background
from dials_diffuse.io.image_series import NexusDataSource
from dials_diffuse.io.mask_file import MaskFile
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.inputs import nexus_input, readable_imageset
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

phil_scope = """
include scope dials_diffuse.algorithms.diffuse.background.phil_scope
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
    numbers = source.image_numbers
    with run.timer("bin_image_series"):
        background = do_bin_image_series(
            source,
            params,
            MaskFile(params.mask) if params.mask else None,
            frame_range(numbers, params.image_range),
        )
    if isinstance(background, list):  # one per panel
        run.results["shape"] = [list(panel.rate.shape) for panel in background]
    else:
        run.results["shape"] = list(background.rate.shape)
    with run.write(params.output.background, "binned background") as path:
        write_background(path, background)


program = Program(
    name="bin_image_series", phil=phil_scope, help=help_message, main=main
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
