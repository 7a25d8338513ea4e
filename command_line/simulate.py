"""dials.diffuse.simulate: synthetic datasets with known ground truth."""

import logging
import sys
from pathlib import Path

from dials_diffuse.simulate import do_simulate
from dials_diffuse.simulate.preview import write_preview
from dials_diffuse.simulate.truth import truth_summary
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.simulate")

help_message = """
Write a realistic synthetic dataset, in the file formats real detectors
write, with a truth file beside it that says exactly what went in: for the
demo, for tests, and for checking any processing against known answers.
Datasets are deterministic for a given seed=.

kind=rotation (default): an Eiger NXmx rotation sweep (master + bitshuffle/LZ4
  data files) that dials.import reads: a P 21 21 21 crystal with
  Wilson-distributed Bragg intensities, an analytic diffuse signal (halos
  around lattice points and a liquid ring), background, polarization, solid
  angle, efficiency and air corrections, Poisson noise, hot pixels and a
  module gap. truth.h5 (models, Bragg intensities, the diffuse model on a
  voxel grid, hot pixels, corrections, expected frame sums) and truth.expt.
kind=transmission_series: sweeps of one crystal at several transmissions
  (sweep_1/ ... sweep_N/), recorded by a detector with a notch in its
  pixel values and pile-up at saturation.
kind=sacla: a SACLA DataConvert run (run_N.h5): dark shots, then shots with a
  powder ring around an off-centre beam and n-fold symmetric speckle, and
  mask.npy (1 = valid).
kind=eiger_series: a long DECTRIS-style Eiger series of small frames with a
  known mean, coefficient of variation and linear drift, gap and saturated
  pixels.

size=test makes data in seconds (the tests use it); size=demo makes the
larger sets the demo uses (a 512 x 512 px, 90-frame sweep for rotation).
Every dataset gets preview.png: the data drawn against its truth.

Examples:

  dials.diffuse.simulate kind=rotation

  dials.diffuse.simulate kind=rotation size=demo seed=3 output.directory=demo

  dials.diffuse.simulate kind=transmission_series \\
      transmission_series.transmissions=0.1,0.3,1 transmission_series.notch=500,520

  dials.diffuse.simulate kind=eiger_series frames=10000 eiger_series.cv=0.05

  dials.diffuse.simulate kind=sacla sacla.symmetry_order=4 output.json=sacla.json
"""

phil_scope = """
include scope dials_diffuse.simulate.phil_scope
output {
  directory = None
    .type = path
    .help = "Directory to create for the dataset (must not exist, or be"
            "empty). Default: simulated_<kind>."
  preview = preview.png
    .type = path
    .help = "A PNG preview of the data against its truth, written inside"
            "output.directory. None: no preview."
}
"""


def main(params, inputs, run):
    if inputs.files:
        raise UserError(
            f"{inputs.files[0]}: dials.diffuse.simulate takes no input files"
        )
    directory = params.output.directory or f"simulated_{params.kind}"
    preview = params.output.preview
    # A PNG name inside the dataset: never one of the dataset's own files.
    if preview and (
        Path(preview).name != str(preview) or Path(preview).suffix.lower() != ".png"
    ):
        raise UserError(
            f"{preview}: output.preview is a PNG file name inside output.directory"
        )
    logger.info(
        "Simulating %s (size=%s, seed=%d) into %s",
        params.kind,
        params.size,
        params.seed,
        directory,
    )
    with run.timer("simulate"):
        paths = do_simulate(directory, params)
    for what, path in _flatten(paths):
        run.outputs[what] = str(path)
        logger.info("Wrote %s: %s", what, path)
    if params.output.preview:
        with run.timer("preview"):
            with run.write(Path(directory) / params.output.preview, "preview") as png:
                write_preview(params.kind, paths, png)
    truth = truth_summary(paths["truth"])
    logger.info("Truth (%s):", paths["truth"])
    for key, value in truth.items():
        logger.info("  %s = %s", key, _short(value))
    run.results.update(
        {"kind": params.kind, "size": params.size, "seed": params.seed, "truth": truth}
    )


def _short(value):
    """A value for the log: floats with 6 significant digits."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return str(value)


def _flatten(paths, prefix=""):
    """(name, path) pairs of a nested result of the simulate_* functions."""
    for key, value in paths.items():
        name = f"{prefix}{key}"
        if isinstance(value, list):
            for index, item in enumerate(value, start=1):
                if isinstance(item, dict):
                    yield from _flatten(item, f"{name.rstrip('s')} {index} ")
                else:
                    yield f"{name} {index}", item
        elif key != "transmission":
            yield name, value


program = Program(name="simulate", phil=phil_scope, help=help_message, main=main)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
