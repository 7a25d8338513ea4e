"""dials.diffuse.process: the whole diffuse chain in one command."""

import contextlib
import html
import logging
import sys
import time
from pathlib import Path

from dials_diffuse.algorithms.diffuse.correct import do_correct
from dials_diffuse.algorithms.diffuse.import_data import do_import_data
from dials_diffuse.algorithms.diffuse.integrate import do_integrate
from dials_diffuse.algorithms.diffuse.maps import do_map
from dials_diffuse.algorithms.diffuse.mask import do_mask_peaks
from dials_diffuse.algorithms.diffuse.merge import do_merge
from dials_diffuse.algorithms.diffuse.peaks import do_find_peaks
from dials_diffuse.algorithms.diffuse.scale import do_scale
from dials_diffuse.algorithms.diffuse.sweep import load_sweep, sweep_phil
from dials_diffuse.command_line import analyse_map as analyse_map_program
from dials_diffuse.command_line import correct as correct_program
from dials_diffuse.command_line import find_peaks as find_peaks_program
from dials_diffuse.command_line import integrate as integrate_program
from dials_diffuse.command_line import map as map_program
from dials_diffuse.command_line import mask_peaks as mask_peaks_program
from dials_diffuse.command_line import merge as merge_program
from dials_diffuse.command_line import scale as scale_program
from dials_diffuse.io.background_file import read_background
from dials_diffuse.io.html_report import report_section, write_html_report
from dials_diffuse.io.map_viewer import VIEWER_OUTPUT, viewer_link
from dials_diffuse.io.mask_file import MaskFile
from dials_diffuse.io.plots import prefetch_matplotlib
from dials_diffuse.util.errors import DataError, UserError
from dials_diffuse.util.inputs import EXPERIMENT_SUFFIXES
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import _LOGGERS, Program, RunContext

logger = logging.getLogger("dials_diffuse.command_line.process")

#: The steps of the chain, in order; each one's parameters are <step>.*.
STEPS = (
    "import_data",
    "find_peaks",
    "mask_peaks",
    "integrate",
    "correct",
    "scale",
    "merge",
    "map",
    "analyse_map",
)

#: The chain's parameters that the steps reading images share.
SWEEP_PARAMETERS = ("image_range", "frames_per_chunk", "nproc", "dask")

help_message = """
Run the diffuse chain on a refined sweep: import_data (optional), find_peaks,
mask_peaks, integrate, correct, scale (optional), merge, map and analyse_map
(map statistics, isotropic/anisotropic parts, 3D-DeltaPDF and the interactive
map viewer, linked from the report), one after the other in this process, each writing its outputs under their default names
(as the programs dials.diffuse.<step> do) and its part of the log also to
dials.diffuse.<step>.log. Every step's parameters are available as
<step>.<parameter>; image_range, frames_per_chunk, nproc and dask.scheduler
apply to every step. For each step, output.json and the HTML report hold the
command that runs it alone with the same parameters, its key results, time
and plots.

Examples:

  dials.diffuse.process refined.expt find_peaks.count_threshold=20

  dials.diffuse.process refined.expt find_peaks.count_threshold=100 \\
      mask_peaks.sigma_cutoff=2 integrate.subdivide=3,3,3 nproc=8

  dials.diffuse.process refined.expt copy_images=False \\
      find_peaks.count_threshold=20 map.limits=-10,10,-10,10,0,0
"""


phil_scope = (
    sweep_phil
    + """
copy_images = True
  .type = bool
  .help = "Run import_data first: copy the images to data.nxs (faster when"
          "three steps read them); False reads the .expt's images in every step."
run_scale = True
  .type = bool
  .help = "Refine the scaling model (scale.*: b(phi) by default) and apply it"
          "in merge; False merges the"
          "corrected intensities as they are."
output {
  report = dials.diffuse.process.html
    .type = path
    .help = "A self-contained HTML page: every step's command, key results,"
            "timing and plots. None: no report."
}
"""
    + "\n".join(
        f"{name} {{\n  include scope dials_diffuse.command_line.{name}.step_phil\n}}"
        for name in STEPS
    )
)


def main(params, inputs, run):
    experiment_files = [
        path for path in inputs.files if path.suffix.lower() in EXPERIMENT_SUFFIXES
    ]
    if len(experiment_files) != 1 or inputs.nexus or inputs.reflections:
        raise UserError("give exactly one refined .expt (and nothing else)")
    expt = str(experiment_files[0])
    if params.find_peaks.count_threshold is None:
        raise UserError(
            "find_peaks.count_threshold is required, e.g. find_peaks.count_threshold=20"
        )
    prefetch_matplotlib()
    chain = Chain(params, run)
    with parallel_map_from_params(params) as pmap:
        run_chain(params, inputs, expt, chain, pmap)
    logger.info("\nThe diffuse chain finished: %s", ", ".join(chain.done))
    if params.output.report:
        with run.write(params.output.report, "HTML report") as path:
            write_html_report(
                path,
                "dials.diffuse.process report",
                chain.sections,
                preamble=f"<p>Experiment: <code>{html.escape(expt)}</code></p>"
                + viewer_links(run.outputs),
            )


def viewer_links(outputs):
    """A link to analyse_map's interactive map viewer, if it was written (HTML)."""
    viewer = outputs.get(VIEWER_OUTPUT)
    return viewer_link(viewer) if viewer else ""


def run_chain(params, inputs, expt, chain, pmap):
    """Every step in turn, on the objects the previous steps made."""
    chunking = {"frames_per_chunk": params.frames_per_chunk}
    sweep = load_sweep(inputs)
    data = []
    if params.copy_images:
        step = params.import_data
        with chain.step("import_data", [expt], sweep=True) as run:
            with run.write(step.output.data, "image series") as path:
                result = do_import_data(
                    sweep,
                    path,
                    step,
                    pmap,
                    sweep.frame_range(params.image_range),
                    **chunking,
                )
            run.results.update(result.summary())
        data = [str(step.output.data)]
        sweep = load_sweep(inputs, step.output.data)
    frame_range = sweep.frame_range(params.image_range)

    step = params.find_peaks
    with chain.step("find_peaks", [expt, *data], sweep=True) as run:
        peaks = do_find_peaks(sweep, step, pmap, frame_range, **chunking)
        find_peaks_program.write_outputs(peaks, sweep.experiment, step, run)

    step = params.mask_peaks
    with chain.step(
        "mask_peaks", [expt, *data, str(params.find_peaks.output.peaks)], sweep=True
    ) as run:
        with run.write(step.output.mask, "mask") as path:
            result = do_mask_peaks(
                sweep,
                peaks.peaks,
                peaks.model,
                path,
                step,
                pmap,
                frame_range,
                **chunking,
            )
        mask_peaks_program.write_outputs(result, step, run)

    step = params.integrate
    mask = params.mask_peaks.output.mask
    with chain.step("integrate", [expt, *data, f"mask={mask}"], sweep=True) as run:
        integrated = do_integrate(
            sweep, step, pmap, MaskFile(mask), frame_range, **chunking
        )
        integrate_program.write_outputs(integrated, step, run)

    step = params.correct
    with chain.step("correct", [expt, str(params.integrate.output.table)]) as run:
        corrected = do_correct(
            integrated.table,
            sweep.experiment,
            step,
            background=read_background(step.background) if step.background else None,
            name=str(params.integrate.output.table),
        )
        correct_program.write_outputs(corrected, step, run)

    tables = [str(params.correct.output.table)]
    models = None
    model_files = []
    if params.run_scale:
        step = params.scale
        with chain.step("scale", tables) as run:
            scaled = do_scale([corrected.table.to_frame()], step, names=tables)
            scale_program.write_outputs(scaled, step, run, tables)
        models = scaled.models
        model_files = [str(step.output.model)]

    step = params.merge
    with chain.step("merge", [*tables, *model_files]) as run:
        merged = do_merge(
            [corrected.table], step, models, names=tables, model_names=model_files
        )
        merge_program.write_outputs(merged, step, run)

    step = params.map
    with chain.step("map", [str(params.merge.output.table), expt]) as run:
        result = do_map(
            merged.tables()[0],
            sweep.experiment.crystal.get_space_group(),
            step,
            name=str(params.merge.output.table),
        )
        map_program.write_outputs(result, step, run)

    step = params.analyse_map
    merged_file = str(params.merge.output.table)
    with chain.step("analyse_map", [merged_file, expt]) as run:
        recmap = analyse_map_program.load_map(
            step, sweep.experiment.crystal, merged_file
        )
        analyse_map_program.analyse_and_write(
            recmap, step, str(params.find_peaks.output.peaks), run
        )


class Chain:
    """The steps run so far: their report sections, results, outputs and times.

    Each step gets its own RunContext (outputs written atomically, never
    over an input); its outputs, results and time join this program's
    summary under the step's name.
    """

    def __init__(self, params, run):
        self.params = params
        self.run = run
        self.working = program.master_phil.format(python_object=params)
        self.defaults = program.master_phil.extract()
        self.sections = []
        self.done = []

    def command(self, name, files, sweep):
        """The command line that runs the step alone with the same parameters.

        The files, the chain's parameters that differ from the defaults
        (`SWEEP_PARAMETERS` for the steps that read images), and the step's
        own that differ, without the `<step>.` prefix.
        """
        diff = program.master_phil.fetch_diff(source=self.working)
        shared = SWEEP_PARAMETERS if sweep else ()
        arguments = list(files)
        for scope in [*shared, name]:
            for definition in _definitions(diff.get(scope)):
                value = definition.extract()
                values = value if isinstance(value, (list, tuple)) else [value]
                key = definition.full_path()
                if scope == name:
                    key = key.split(".", 1)[1]
                arguments.append(f"{key}={','.join(_word(v) for v in values)}")
        return " ".join([f"dials.diffuse.{name}", *arguments])

    @contextlib.contextmanager
    def step(self, name, files, sweep=False):
        """Run one step: its header and log lines also into dials.diffuse.<step>.log."""
        command = self.command(name, files, sweep)
        run = RunContext(name, self.run.inputs, self.run.verbosity)
        start = time.perf_counter()
        with _logging_to(f"dials.diffuse.{name}.log", self.run.verbosity):
            logger.info("\n=== %s: %s", name, command)
            try:
                yield run
            except DataError as error:
                self.run.results[name] = {"command": command, "error": str(error)}
                raise UserError(f"step {name} failed: {error}") from error
        seconds = time.perf_counter() - start
        self.run.timings[name] = seconds
        self.run.outputs.update(run.outputs)
        self.run.results[name] = {
            "command": command,
            "outputs": run.outputs,
            **run.results,
        }
        self.sections.append(
            report_section(
                title=f"dials.diffuse.{name}",
                command=command,
                results=run.results,
                images=[
                    Path(output)
                    for output in run.outputs.values()
                    if str(output).lower().endswith(".png")
                ],
                seconds=seconds,
            )
        )
        self.done.append(name)


def _word(value):
    """A parameter value as typed on a command line (20 rather than 20.0)."""
    return format(value, ".12g") if isinstance(value, float) else str(value)


def _definitions(scope):
    """Every parameter definition under a PHIL scope."""
    for obj in scope.objects:
        if obj.is_definition:
            yield obj
        else:
            yield from _definitions(obj)


@contextlib.contextmanager
def _logging_to(path, verbosity):
    """Copy the log (ours, DIALS's, dxtbx's) to `path` while the block runs."""
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setLevel(logging.DEBUG if verbosity else logging.INFO)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in _LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        yield
    finally:
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()


program = Program(
    name="process",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
