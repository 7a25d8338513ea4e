"""dials.diffuse.process: the whole diffuse chain in one command."""

import contextlib
import copy
import html
import logging
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from libtbx import Auto

from dials_diffuse.algorithms.diffuse.correct import do_correct
from dials_diffuse.algorithms.diffuse.crystals import (
    check_crystals,
    check_indexing,
    check_indexing_phil,
    refuse_inconsistent_indexing,
)
from dials_diffuse.algorithms.diffuse.import_data import do_import_data
from dials_diffuse.algorithms.diffuse.integrate import do_integrate
from dials_diffuse.algorithms.diffuse.maps import do_map
from dials_diffuse.algorithms.diffuse.mask import do_mask_peaks
from dials_diffuse.algorithms.diffuse.merge import do_merge
from dials_diffuse.algorithms.diffuse.peaks import do_find_peaks
from dials_diffuse.algorithms.diffuse.scale import do_scale
from dials_diffuse.algorithms.diffuse.sweep import (
    check_sweep_experiment,
    sweep_from_experiment,
    sweep_phil,
)
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
from dials_diffuse.io.map_files import read_map_as_given
from dials_diffuse.io.map_viewer import VIEWER_OUTPUT, viewer_link
from dials_diffuse.io.mask_file import MaskFile
from dials_diffuse.io.plots import prefetch_matplotlib
from dials_diffuse.util.errors import DataError, UserError
from dials_diffuse.util.inputs import EXPERIMENT_SUFFIXES, readable_experiments
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import _LOGGERS, Program, RunContext

logger = logging.getLogger("dials_diffuse.command_line.process")

#: The steps of the chain, in order: each sweep's, then the joint ones; each
#: one's parameters are <step>.*.
SWEEP_STEPS = ("import_data", "find_peaks", "mask_peaks", "integrate", "correct")
JOINT_STEPS = ("scale", "merge", "map", "analyse_map")
STEPS = SWEEP_STEPS + JOINT_STEPS

#: The chain's parameters that the steps reading images share.
SWEEP_PARAMETERS = ("image_range", "frames_per_chunk", "nproc", "dask")

help_message = """
Run the diffuse chain on one or more refined sweeps: import_data (optional),
find_peaks, mask_peaks, integrate and correct for each sweep, then scale
(optional), merge, map and analyse_map (map statistics, isotropic and
anisotropic parts, 3D-DeltaPDF and the interactive map viewer, linked from the
report) of all sweeps together, one after the other in
this process, each writing its outputs under their default names (as the
programs dials.diffuse.<step> do) and its part of the log also to
dials.diffuse.<step>.log. Every step's parameters are available as
<step>.<parameter>; image_range, frames_per_chunk, nproc and dask.scheduler
apply to every step. For each step, output.json and the HTML report hold the
command that runs it alone with the same parameters, its key results, time
and plots.

Several sweeps (a multi-experiment .expt, or several .expt files; different
crystals of one space group, each in its own cell and orientation): each
sweep's steps write into a folder sweep_1/, sweep_2/, ... (in the order of
the experiments) under the same names, with the sweep's experiment as
sweep_<i>/experiment.expt; the sweeps are scaled together (each its own
b, c and a, a shared d: scale_1.nxs, scale_2.nxs, ...) and merged into one
merged.nxs and map. Each sweep's steps use all nproc workers on its chunks;
with parallel_sweeps=2 or more (Auto: 2 on a Dask cluster or with nproc >= 4,
else 1), that many sweeps run at the same time and share those workers, so
that the serial work of one (about a third of its CPU time) overlaps the
chunk work of another; their lines start with the sweep's folder, each
step's log holds only its sweep's lines. When the lattice has higher
symmetry than the point group (e.g. P 21 21 21 with a = b), the sweeps may
be indexed differently: the log and the report say so, and each sweep's
voxels are compared with the first sweep's under each indexing
(check_indexing); a sweep that clearly agrees better reindexed stops the
run before merging, with the dials.reindex command that fixes it.

Examples:

  dials.diffuse.process refined.expt find_peaks.count_threshold=20

  dials.diffuse.process refined.expt find_peaks.count_threshold=100 \\
      mask_peaks.sigma_cutoff=2 integrate.subdivide=3,3,3 nproc=8

  dials.diffuse.process refined.expt copy_images=False \\
      find_peaks.count_threshold=20 map.limits=-10,10,-10,10,0,0

  dials.diffuse.process sweep1.expt sweep2.expt find_peaks.count_threshold=20
"""


phil_scope = (
    sweep_phil
    + check_indexing_phil
    + """
copy_images = True
  .type = bool
  .help = "Run import_data first: copy the images to data.nxs (faster when"
          "three steps read them); False reads the .expt's images in every step."
parallel_sweeps = Auto
  .type = int(value_min=1)
  .help = "How many sweeps go through import_data ... correct at the same"
          "time, each in its own thread, their chunk work sharing the nproc"
          "workers (or the Dask cluster): one sweep's serial work (reading"
          "the experiment, find_peaks' peak model, correct, writing: about a"
          "third of its CPU time) overlaps another's chunk work. One sweep"
          "reads its images at a time (dxtbx). Auto: 2 on a Dask cluster or"
          "with nproc >= 4; 1 with fewer threads, where the chunk work"
          "already fills the cores (2 sweeps of 600 frames at nproc=2, shared"
          "machine: 35 and 51 s one after the other, 37 and 59 s two at once)."
          "1: one after the other, at most one sweep's images in flight."
          "Lines of sweeps run at once start with the sweep's folder; each"
          "step's log has only its own sweep's lines."
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
    if not experiment_files or inputs.nexus or inputs.reflections:
        raise UserError("give one or more refined .expt files (and nothing else)")
    if params.find_peaks.count_threshold is None:
        raise UserError(
            "find_peaks.count_threshold is required, e.g. find_peaks.count_threshold=20"
        )
    if len(inputs.experiments) == 0:
        raise UserError(f"{experiment_files[0]}: holds no experiment")
    sweeps = SweepOutputs(params, inputs.experiments, experiment_files)
    run.plan_outputs(sweeps.planned(), folders=sweeps.folders)
    for number, experiment in enumerate(inputs.experiments):
        try:
            check_sweep_experiment(experiment)
        except DataError as error:
            raise UserError(f"{sweeps.names[number]}: {error}") from error
    crystals = check_crystals(inputs.experiments, sweeps.names)
    run.results["crystals"] = crystals
    prefetch_matplotlib()
    chain = Chain(params, run)
    with parallel_map_from_params(params) as pmap:
        corrected = run_sweeps(params, inputs, sweeps, chain, pmap)
        if params.check_indexing:
            check_sweeps_indexing(params, crystals, corrected, sweeps)
        run_joint(params, corrected, sweeps, chain)
    logger.info("\nThe diffuse chain finished: %s", ", ".join(chain.done))
    if params.output.report:
        with run.write(params.output.report, "HTML report") as path:
            write_html_report(
                path,
                "dials.diffuse.process report",
                chain.sections,
                preamble=report_preamble(experiment_files, sweeps, crystals)
                + viewer_links(run.outputs),
            )


class SweepOutputs:
    """Where each sweep's steps write, and the parameters that say so.

    One sweep keeps every step's own output names (data.nxs, peaks.nxs, ...
    in the working folder). Several sweeps each get a folder sweep_<i>/
    (1-based, in the order of the experiments) holding their experiment
    (experiment.expt, so that each step's command runs alone), the outputs
    of import_data ... correct under the same names and their step logs;
    scale, merge and map write the joint results in the working folder
    (scale_1.nxs, scale_2.nxs, ... one model per sweep).
    """

    def __init__(self, params, experiments, experiment_files):
        self.params = params
        self.experiments = experiments
        count = len(experiments)
        self.folders = (
            [Path(".")]
            if count == 1
            else [Path(f"sweep_{n}") for n in range(1, count + 1)]
        )
        self.labels = [None] if count == 1 else [f.name for f in self.folders]
        sources = _experiment_sources(experiments, experiment_files)
        self.names = [
            f"sweep {n} ({source})" if count > 1 else str(source)
            for n, source in enumerate(sources, start=1)
        ]
        self.experiment_files = (
            [str(experiment_files[0])]
            if count == 1
            else [str(folder / "experiment.expt") for folder in self.folders]
        )
        self.steps = [
            {name: _outputs_in(getattr(params, name), folder) for name in SWEEP_STEPS}
            for folder in self.folders
        ]

    def __len__(self):
        return len(self.folders)

    def sweep_steps(self):
        """The steps each sweep goes through (import_data only with copy_images)."""
        return [n for n in SWEEP_STEPS if n != "import_data" or self.params.copy_images]

    def joint_steps(self):
        """The steps on all sweeps together (scale only with run_scale)."""
        return [n for n in JOINT_STEPS if n != "scale" or self.params.run_scale]

    def model_files(self):
        """The scaling models, one per sweep (scale_1.nxs, ... for several)."""
        return [
            str(path)
            for path in scale_program.model_paths(
                self.params.scale.output.model, len(self)
            )
        ]

    def planned(self):
        """{description: path} of every file the chain will write, before any work."""
        outputs = {}
        for number, folder in enumerate(self.folders):
            label = f"{self.labels[number]} " if self.labels[number] else ""
            if self.labels[number]:
                outputs[f"{label}experiment"] = self.experiment_files[number]
            for name in self.sweep_steps():
                for key, path in _output_paths(self.steps[number][name]).items():
                    outputs[f"{label}{name}.output.{key}"] = path
                outputs[f"{label}{name} log"] = str(
                    folder / f"dials.diffuse.{name}.log"
                )
        for name in self.joint_steps():
            for key, path in _output_paths(getattr(self.params, name)).items():
                if name == "scale" and key == "model":
                    for number, model in enumerate(self.model_files(), start=1):
                        suffix = f" {number}" if len(self) > 1 else ""
                        outputs[f"scale.output.model{suffix}"] = model
                else:
                    outputs[f"{name}.output.{key}"] = path
            outputs[f"{name} log"] = f"dials.diffuse.{name}.log"
        if self.params.output.report:
            outputs["output.report"] = str(self.params.output.report)
        return outputs


def _experiment_sources(experiments, experiment_files):
    """The file each experiment came from (the .expt files in command-line order)."""
    from dials_diffuse.util.inputs import load_experiments

    if len(experiment_files) == 1:
        return [experiment_files[0]] * len(experiments)
    sources = []
    for path in experiment_files:
        sources += [path] * len(load_experiments(path, check_format=False))
    return sources


def _output_paths(step):
    """{parameter: path} of a step's `output` scope, the ones that are set."""
    return {
        key: str(value)
        for key, value in vars(step.output).items()
        if not key.startswith("_") and value is not None
    }


def _outputs_in(step, folder):
    """A copy of a step's parameters with every output path inside `folder`."""
    step = copy.deepcopy(step)
    if folder != Path("."):
        for key, value in _output_paths(step).items():
            setattr(step.output, key, str(folder / value))
    return step


def sweeps_at_once(params, count, workers):
    """How many sweeps run at the same time (`parallel_sweeps`, Auto resolved).

    Auto: 2 on a Dask cluster (the chunk work runs on the workers, the
    serial parts of each sweep here) or with 4 workers or more (a sweep's
    serial parts leave all but one idle); else 1: with 2 threads the chunk
    work of one sweep already fills the cores (measured, see the help).
    """
    if params.parallel_sweeps not in (None, Auto):
        return min(params.parallel_sweeps, count)
    if params.dask.scheduler or workers >= 4:
        return min(2, count)
    return 1


def run_sweeps(params, inputs, sweeps, chain, pmap):
    """import_data ... correct of every sweep; return their corrected Tables.

    `sweeps_at_once` of them at a time, each in a thread of its own: their
    chunk work goes to the same `pmap` (never more than its workers), the
    serial parts of one overlap the chunk work of another. Each sweep's step
    logs take only its own thread's lines; every line a sweep's thread logs
    starts with its folder. The first sweep that fails (in sweep order)
    stops the run, once the other sweeps have finished the step they are in
    (as does Ctrl-C).
    """
    count = len(sweeps)
    # The experiments with their images, loaded once (format classes open
    # every image file): not again by each sweep, nor by two threads at once.
    readable = readable_experiments(inputs)
    at_once = sweeps_at_once(params, count, pmap.workers)
    if at_once > 1 and not params.copy_images:
        logger.info(
            "\ncopy_images=False: one sweep at a time (every step reads the "
            "images through dxtbx, which reads one file of a format at a time)"
        )
        at_once = 1
    if at_once > 1 and _shared_image_files(readable):
        logger.info(
            "\nThe sweeps share image files: one sweep at a time (HDF5 files "
            "are not opened by two sweeps at once)"
        )
        at_once = 1
    if at_once == 1:
        return [
            run_sweep(params, sweeps, number, chain, pmap, readable[number].imageset)
            for number in range(count)
        ]
    logger.info(
        "\n%d sweeps, %d at a time (parallel_sweeps), sharing %d workers",
        count,
        at_once,
        pmap.workers,
    )

    def in_thread(number):
        chain.local.label = sweeps.labels[number]
        try:
            imageset = readable[number].imageset
            return run_sweep(params, sweeps, number, chain, pmap, imageset)
        finally:
            chain.local.label = None

    chain.concurrent = True
    try:
        with _labelled_records(chain.local), ThreadPoolExecutor(at_once) as pool:
            futures = [pool.submit(in_thread, number) for number in range(count)]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except KeyboardInterrupt:
                _stop(chain, futures)
                raise
            if any(future.exception() for future in done):
                _stop(chain, futures)
            wait(futures)
    finally:
        chain.concurrent = False
    for future in futures:
        error = None if future.cancelled() else future.exception()
        if error is not None and not isinstance(error, _Stopped):
            raise error
    return [future.result() for future in futures]


class _Stopped(Exception):
    """A sweep stopped before its next step because another one failed."""


def _stop(chain, futures):
    """Sweeps not started are not started; the others stop after their current step."""
    chain.stopping.set()
    for future in futures:
        future.cancel()


@contextlib.contextmanager
def _labelled_records(local):
    """Lines logged by a sweep's thread start with its folder ("sweep_2: ...").

    So that the interleaved lines of sweeps run at once stay readable on the
    terminal and in the log; each step's header (=== sweep_2/...) already
    names its sweep. Lines of other threads are left as they are.
    """
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        label = getattr(local, "label", None)
        if label and isinstance(record.msg, str):
            body = record.msg.lstrip("\n")
            if not body.startswith(("=== ", "### ")):
                newlines = record.msg[: len(record.msg) - len(body)]
                record.msg = f"{newlines}{label}: {body}"
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def _shared_image_files(experiments):
    """True if two experiments read the same image file."""
    seen = set()
    for experiment in experiments:
        paths = {str(Path(p).resolve()) for p in experiment.imageset.paths()}
        if paths & seen:
            return True
        seen |= paths
    return False


def run_sweep(params, sweeps, number, chain, pmap, imageset):
    """import_data ... correct of one sweep; return its corrected Table.

    Every step uses all `nproc` workers on the chunks of this sweep (shared
    with the other sweeps run at the same time, `run_sweeps`); `imageset`
    is the sweep's, able to read its images.
    """
    experiment = sweeps.experiments[number]
    folder, label = sweeps.folders[number], sweeps.labels[number]
    steps = sweeps.steps[number]
    expt = sweeps.experiment_files[number]
    chunking = {"frames_per_chunk": params.frames_per_chunk}
    if label:
        from dxtbx.model.experiment_list import ExperimentList

        _make_folder(folder)
        logger.info("\n### %s: %s", label, sweeps.names[number])
        with chain.run.write(expt, f"{label} experiment") as path:
            ExperimentList([experiment]).as_json(str(path))

    def step(name, files, sweep=False):
        return chain.step(name, files, sweep=sweep, label=label, params=steps[name])

    data = []
    if params.copy_images:
        import_data = steps["import_data"]
        # dxtbx keeps one open image file per format class (Format.get_instance):
        # two sweeps reading their images through it at once would close each
        # other's file. One sweep imports at a time; the others go on.
        with chain.image_reading, step("import_data", [expt], sweep=True) as run:
            sweep = sweep_from_experiment(experiment, imageset=imageset)
            with run.write(import_data.output.data, "image series") as path:
                result = do_import_data(
                    sweep,
                    path,
                    import_data,
                    pmap,
                    sweep.frame_range(params.image_range),
                    **chunking,
                )
            run.results.update(result.summary())
        data = [str(import_data.output.data)]
        sweep = sweep_from_experiment(experiment, data_file=import_data.output.data)
    else:
        sweep = sweep_from_experiment(experiment, imageset=imageset)
    frame_range = sweep.frame_range(params.image_range)

    find_peaks = steps["find_peaks"]
    with step("find_peaks", [expt, *data], sweep=True) as run:
        peaks = do_find_peaks(sweep, find_peaks, pmap, frame_range, **chunking)
        find_peaks_program.write_outputs(peaks, experiment, find_peaks, run)

    mask_peaks = steps["mask_peaks"]
    with step(
        "mask_peaks", [expt, *data, str(find_peaks.output.peaks)], sweep=True
    ) as run:
        with run.write(mask_peaks.output.mask, "mask") as path:
            result = do_mask_peaks(
                sweep,
                peaks.peaks,
                peaks.model,
                path,
                mask_peaks,
                pmap,
                frame_range,
                **chunking,
            )
        mask_peaks_program.write_outputs(result, mask_peaks, run)

    integrate = steps["integrate"]
    mask = mask_peaks.output.mask
    with step("integrate", [expt, *data, f"mask={mask}"], sweep=True) as run:
        integrated = do_integrate(
            sweep, integrate, pmap, MaskFile(mask), frame_range, **chunking
        )
        integrate_program.write_outputs(integrated, integrate, run)

    correct = steps["correct"]
    with step("correct", [expt, str(integrate.output.table)]) as run:
        corrected = do_correct(
            integrated.table,
            experiment,
            correct,
            background=read_background(correct.background)
            if correct.background
            else None,
            name=str(integrate.output.table),
        )
        correct_program.write_outputs(corrected, correct, run)
    return corrected.table


def check_sweeps_indexing(params, crystals, corrected, sweeps):
    """Stop before the joint steps if a sweep is indexed unlike the first.

    Only where `check_crystals` found alternative indexings. The figures go
    to the log and to ``crystals.indexing_check`` of the results.
    """
    ambiguity = crystals.get("reindexing")
    if not ambiguity or len(corrected) < 2:
        return
    checks = check_indexing(
        corrected,
        sweeps.names,
        ambiguity["operators"],
        params.integrate.subdivide,
        sweeps.experiments[0].crystal.get_space_group(),
    )
    crystals["indexing_check"] = {
        check.sweep: {"best": check.best, "scores": check.scores} for check in checks
    }
    refuse_inconsistent_indexing(
        checks, dict(zip(sweeps.names, sweeps.experiment_files))
    )


def run_joint(params, corrected, sweeps, chain):
    """scale (optional), merge and map of every sweep's corrected table together."""
    tables = [str(steps["correct"].output.table) for steps in sweeps.steps]
    models = None
    model_files = []
    if params.run_scale:
        step = params.scale
        with chain.step("scale", tables) as run:
            scaled = do_scale([table.to_frame() for table in corrected], step, tables)
            scale_program.write_outputs(scaled, step, run, tables)
        models = scaled.models
        model_files = sweeps.model_files()

    step = params.merge
    with chain.step("merge", [*tables, *model_files]) as run:
        merged = do_merge(
            corrected, step, models, names=tables, model_names=model_files
        )
        merge_program.write_outputs(merged, step, run)

    step = params.map
    expt = sweeps.experiment_files[0]
    with chain.step("map", [str(params.merge.output.table), expt]) as run:
        result = do_map(
            merged.tables()[0],
            sweeps.experiments[0].crystal.get_space_group(),
            step,
            name=str(params.merge.output.table),
        )
        map_program.write_outputs(result, step, run)

    step = params.analyse_map
    merged_file = str(params.merge.output.table)
    with chain.step("analyse_map", [merged_file, expt]) as run:
        recmap = read_map_as_given(
            merged_file, step.input, sweeps.experiments[0].crystal
        )
        # Punching by the peak ellipsoid takes the first sweep's peak model.
        peaks = str(sweeps.steps[0]["find_peaks"].output.peaks)
        analyse_map_program.analyse_and_write(recmap, step, peaks, run)


def viewer_links(outputs):
    """A link to analyse_map's interactive map viewer, if it was written (HTML)."""
    viewer = outputs.get(VIEWER_OUTPUT)
    return viewer_link(viewer) if viewer else ""


def report_preamble(experiment_files, sweeps, crystals):
    """The report's opening: the experiments, the sweeps and any indexing ambiguity."""
    files = ", ".join(f"<code>{html.escape(str(p))}</code>" for p in experiment_files)
    parts = [f"<p>Experiments: {files}</p>"]
    if len(sweeps) > 1:
        items = "".join(
            f"<li><code>{html.escape(str(folder))}/</code>: {html.escape(name)}</li>"
            for folder, name in zip(sweeps.folders, sweeps.names)
        )
        parts.append(
            f"<p>{len(sweeps)} sweeps, each through import_data ... correct in its "
            f"folder, then scaled, merged and mapped together:</p><ul>{items}</ul>"
        )
    ambiguity = crystals.get("reindexing")
    if ambiguity:
        parts.append(
            '<p class="failed">Indexing ambiguity: the lattice has the symmetry '
            f"{html.escape(ambiguity['lattice_group'])}, higher than the point "
            f"group {html.escape(ambiguity['point_group'])}; the sweeps may be "
            "indexed differently (related by "
            f"{html.escape(' or '.join(ambiguity['operators']))}). The merged map "
            "is only right if every sweep is indexed alike (dials.cosym).</p>"
        )
    for sweep, check in crystals.get("indexing_check", {}).items():
        scores = ", ".join(
            f"{op}: CC {cc:.3f} ({n} voxels)" for op, cc, n in check["scores"]
        )
        parts.append(
            f"<p>{html.escape(sweep)} against the first sweep, anisotropic voxel "
            f"intensities per indexing: {html.escape(scores)}.</p>"
        )
    return "".join(parts)


def _make_folder(folder):
    try:
        folder.mkdir(exist_ok=True)
    except OSError as error:
        raise UserError(
            f"{folder}: cannot make the folder ({error.strerror})"
        ) from error


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
        #: The sweep a thread runs (``label``), with sweeps run at once.
        self.local = threading.local()
        #: True while sweeps run at once: a step's log takes only its thread's lines.
        self.concurrent = False
        self._lock = threading.Lock()
        self._order = []
        #: Held while a sweep reads its images through dxtbx (`run_sweep`).
        self.image_reading = threading.Lock()
        #: Set when a sweep run at once fails: the others start no new step.
        self.stopping = threading.Event()

    def command(self, name, files, sweep, params=None):
        """The command line that runs the step alone with the same parameters.

        The files, the chain's parameters that differ from the defaults
        (`SWEEP_PARAMETERS` for the steps that read images), and the step's
        own that differ, without the `<step>.` prefix. With `params` (a
        sweep's copy of the step's parameters), its output names replace
        the chain's.
        """
        diff = program.master_phil.fetch_diff(source=self.working)
        shared = SWEEP_PARAMETERS if sweep else ()
        arguments = list(files)
        for scope in [*shared, name]:
            for definition in _definitions(diff.get(scope)):
                key = definition.full_path()
                if scope == name:
                    key = key.split(".", 1)[1]
                    if params is not None and key.startswith("output."):
                        continue
                arguments.append(f"{key}={_value(definition.extract())}")
        if params is not None:
            default = getattr(self.defaults, name).output
            for key, value in vars(params.output).items():
                if not key.startswith("_") and value != getattr(default, key):
                    arguments.append(f"output.{key}={_value(value)}")
        return " ".join([f"dials.diffuse.{name}", *arguments])

    @contextlib.contextmanager
    def step(self, name, files, sweep=False, label=None, params=None):
        """Run one step: its header and log lines also into dials.diffuse.<step>.log.

        With a `label` (the sweep's folder, when there are several sweeps)
        the step's log goes into that folder, and its results, outputs and
        time are recorded under "<label>/<step>"; `params` are the sweep's
        copy of the step's parameters (`SweepOutputs`).
        """
        if self.stopping.is_set():
            raise _Stopped(name)
        command = self.command(name, files, sweep, params)
        key = f"{label}/{name}" if label else name
        folder = Path(label) if label else Path(".")
        run = RunContext(name, self.run.inputs, self.run.verbosity, self.run.plan)
        start = time.perf_counter()
        thread = threading.get_ident() if self.concurrent else None
        log = folder / f"dials.diffuse.{name}.log"
        with _logging_to(log, self.run.verbosity, thread):
            logger.info("\n=== %s: %s", key, command)
            try:
                yield run
            except DataError as error:
                self.run.results[key] = {"command": command, "error": str(error)}
                raise UserError(f"step {key} failed: {error}") from error
        seconds = time.perf_counter() - start
        with self._lock:
            self._record(key, label, name, command, run, seconds)

    def _record(self, key, label, name, command, run, seconds):
        """A finished step's time, outputs, results and report section, in order.

        Sweeps run at once finish their steps in any order: the sections and
        the list of steps done are kept in sweep order, then step order.
        """
        self.run.timings[key] = seconds
        prefix = f"{label} " if label else ""
        self.run.outputs.update(
            {f"{prefix}{what}": path for what, path in run.outputs.items()}
        )
        self.run.results[key] = {
            "command": command,
            "outputs": run.outputs,
            **run.results,
        }
        # Sweep steps by sweep number; the joint ones (no label) after them.
        sweep = int(label.rsplit("_", 1)[1]) if label else float("inf")
        order = (sweep, STEPS.index(name))
        place = sum(1 for other in self._order if other <= order)
        self._order.insert(place, order)
        self.done.insert(place, key)
        self.sections.insert(
            place,
            report_section(
                title=f"dials.diffuse.{name}" + (f" ({label})" if label else ""),
                command=command,
                results=run.results,
                images=[
                    Path(output)
                    for output in run.outputs.values()
                    if str(output).lower().endswith(".png")
                ],
                seconds=seconds,
            ),
        )


def _value(value):
    """A parameter's value as typed on a command line (lists comma-separated)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return ",".join(_word(v) for v in values)


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
def _logging_to(path, verbosity, thread=None):
    """Copy the log (ours, DIALS's, dxtbx's) to `path` while the block runs.

    With `thread` (an ident), only the lines that thread logs: another sweep
    running at the same time logs to its own files.
    """
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setLevel(logging.DEBUG if verbosity else logging.INFO)
    handler.setFormatter(logging.Formatter("%(message)s"))
    if thread is not None:
        handler.addFilter(lambda record: record.thread == thread)
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
