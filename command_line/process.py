"""dials.diffuse.process: the whole diffuse chain in one command."""

import contextlib
import html
import io
import json
import logging
import sys
from pathlib import Path

from dials_diffuse.algorithms.diffuse.sweep import sweep_phil
from dials_diffuse.command_line import correct as correct_step
from dials_diffuse.command_line import find_peaks as find_peaks_step
from dials_diffuse.command_line import import_data as import_data_step
from dials_diffuse.command_line import integrate as integrate_step
from dials_diffuse.command_line import map as map_step
from dials_diffuse.command_line import mask_peaks as mask_peaks_step
from dials_diffuse.command_line import merge as merge_step
from dials_diffuse.command_line import scale as scale_step
from dials_diffuse.io.html_report import report_section, write_html_report
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.inputs import EXPERIMENT_SUFFIXES
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.process")

STEPS = {
    "import_data": import_data_step,
    "find_peaks": find_peaks_step,
    "mask_peaks": mask_peaks_step,
    "integrate": integrate_step,
    "correct": correct_step,
    "scale": scale_step,
    "merge": merge_step,
    "map": map_step,
}

help_message = """
Run the diffuse chain on a refined sweep: import_data (optional), find_peaks,
mask_peaks, integrate, correct, scale (optional), merge and map, each as its own program with
its own log (dials.diffuse.<step>.log) and outputs under their default names.
Every step's parameters are available as <step>.<parameter>;
image_range, frames_per_chunk, nproc and dask.scheduler apply to every step.
The parameters each step ran with are written to dials.diffuse.process.<step>.phil.

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
    + "\n".join(f"{name} {{\n{module.step_phil}\n}}" for name, module in STEPS.items())
)


def step_phil_text(working, name):
    """The working parameters of one step's scope, as PHIL without the scope name."""
    (scope,) = working.get(name).objects
    return "".join(obj.as_str() for obj in scope.objects)


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
    working = program.master_phil.format(python_object=params)
    common = [f"frames_per_chunk={params.frames_per_chunk}"]
    if params.image_range:
        common.append("image_range={},{}".format(*params.image_range))
    parallel = list(common)
    if params.nproc:
        parallel.append(f"nproc={params.nproc}")
    if params.dask.scheduler:
        parallel.append(f"dask.scheduler={params.dask.scheduler}")
    steps = []
    data = []
    if params.copy_images:
        steps.append(("import_data", [expt], parallel))
        data = [str(params.import_data.output.data)]
    steps += [
        ("find_peaks", [expt, *data], parallel),
        ("mask_peaks", [expt, *data, str(params.find_peaks.output.peaks)], parallel),
        (
            "integrate",
            [expt, *data],
            [*parallel, f"mask={params.mask_peaks.output.mask}"],
        ),
        ("correct", [expt, str(params.integrate.output.table)], []),
    ]
    corrected = str(params.correct.output.table)
    scales = []
    if params.run_scale:
        steps.append(("scale", [corrected], []))
        scales = [str(params.scale.output.model)]
    steps += [
        ("merge", [corrected, *scales], []),
        ("map", [str(params.merge.output.table), expt], []),
    ]
    summaries = [
        run_step(name, files, extra, working, run) for name, files, extra in steps
    ]
    logger.info(
        "\nThe diffuse chain finished: %s", ", ".join(name for name, _, _ in steps)
    )
    if params.output.report:
        with run.write(params.output.report, "HTML report") as path:
            write_process_report(path, expt, summaries)


def write_process_report(path, expt, summaries):
    """The HTML report of the chain: per step its command, results, time and plots."""
    sections = [
        report_section(
            title=summary["program"],
            command=" ".join([summary["program"], *summary["command_line"]]),
            results=summary["results"],
            images=[
                Path(output)
                for output in summary["outputs"].values()
                if str(output).lower().endswith(".png")
            ],
            seconds=summary["timings"].get("total"),
        )
        for summary in summaries
    ]
    write_html_report(
        path,
        "dials.diffuse.process report",
        sections,
        preamble=f"<p>Experiment: <code>{html.escape(expt)}</code></p>",
    )


@contextlib.contextmanager
def _without_console_output():
    """Detach this program's terminal handlers while a step prints its own."""
    detached = []
    for name in ("dials_diffuse", "dials", "dxtbx"):
        named = logging.getLogger(name)
        for handler in list(named.handlers):
            if type(handler) is logging.StreamHandler:
                named.removeHandler(handler)
                detached.append((named, handler))
    try:
        yield
    finally:
        for named, handler in detached:
            named.addHandler(handler)


def run_step(name, files, extra, working, run):
    """Run one step's program with its parameters from the process scope.

    The step writes its JSON summary (dials.diffuse.<step>.json); its
    results and outputs go into this program's results. Returns the summary.
    """
    phil_path = Path(f"dials.diffuse.process.{name}.phil")
    phil_path.write_text(step_phil_text(working, name))
    summary_path = Path(f"dials.diffuse.{name}.json")
    args = [*files, str(phil_path), *extra, f"output.json={summary_path}"]
    logger.info("\n=== %s: dials.diffuse.%s %s", name, name, " ".join(args))
    step_errors = io.StringIO()  # the step's one-line error becomes ours
    with (
        run.timer(name),
        _without_console_output(),
        contextlib.redirect_stderr(step_errors),
    ):
        code = STEPS[name].program.run(args)
    if code != 0:
        run.results[name] = {"exit_code": code}
        error = step_errors.getvalue().strip().splitlines()
        reason = error[-1].split(": error: ", 1)[-1] if error else f"exit code {code}"
        raise UserError(f"step {name} failed: {reason}")
    summary = json.loads(summary_path.read_text())
    run.results[name] = {
        "exit_code": code,
        "outputs": summary["outputs"],
        **summary["results"],
    }
    return summary


program = Program(
    name="process",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
)


def run(args=None):
    """Entry point: run the program, return its exit code."""
    return program.run(args)


if __name__ == "__main__":
    sys.exit(run())
