"""The program runner shared by every `dials.diffuse.*` command.

A program declares its PHIL scope (every parameter with `.help`), a help text
with examples, and one function ``main(params, inputs, run)`` that does the
work. The runner gives every program the same behaviour:

- ``-h`` help with examples, ``-c`` the full parameter tree with help text,
  ``-v`` more output (and tracebacks), ``--version``;
- positional files recognised by kind (`.expt`, `.refl`, our `.nxs`, `.phil`,
  image files dxtbx reads), then ``key=value`` parameters; an unknown
  parameter is a usage error that suggests near matches;
- logging to the terminal and to ``dials.diffuse.<name>.log``, starting with
  the DIALS and package versions and the parameters that differ from the
  defaults;
- ``output.json=`` for pipelines: inputs, outputs, parameters, key results
  and timings;
- output planning before any work (`dials_diffuse.util.outputs`): every
  output is checked against the inputs, the files they refer to and the
  other outputs, and its directory, before the log file is opened;
- one error boundary: data and user errors, and failures below the program
  (file system errors such as a full disk or a read-only directory, HDF5
  errors, dxtbx/cctbx assertions) end as one line naming the file and the
  problem, exit code 1 (2 for a command line that cannot be understood), no
  traceback unless ``-v``; the JSON summary is still written (a summary that
  cannot be written makes the exit code non-zero);
- ``run(args, return_results=True)`` for a script or pipeline in one
  process (as DIALS's programs): the run's key results instead of the exit
  code, a failure raised instead of returned;
- outputs written atomically, inputs never touched; secrets (parameters
  named ``password``, ``secret`` or ``token``) never appear in the log, the
  parameters it lists or the summary.
"""

import atexit
import contextlib
import difflib
import json
import logging
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path

from libtbx.phil import parse
from libtbx.utils import Sorry

import dials_diffuse
from dials_diffuse.images.source import take_non_finite_counts
from dials_diffuse.io.atomic import atomic_path, write_failure
from dials_diffuse.util import parallel
from dials_diffuse.util.errors import DataError, UsageError, UserError
from dials_diffuse.util.inputs import Inputs, load_inputs
from dials_diffuse.util.outputs import OutputPlan, path_parameters, referenced_files

logger = logging.getLogger("dials_diffuse")

# Loggers whose messages go to the terminal and the log file.
_LOGGERS = ("dials_diffuse", "dials", "dxtbx")


def _common_output_phil(name):
    return parse(
        f"""
output {{
  log = dials.diffuse.{name}.log
    .type = path
    .help = "The log file: everything printed, plus debug detail with -v."
  json = None
    .type = path
    .help = "A machine-readable summary for pipelines: inputs, outputs,"
            "parameters, key results and timings. None: not written."
}}
"""
    )


def build_master_phil(name, phil, parallel_work=False):
    """The program's PHIL scope with the runner's common parameters added.

    The common `output.log` and `output.json` join the program's own
    `output` scope; `nproc` and `dask.scheduler` are added for programs that
    run chunked work in parallel.
    """
    text = phil if isinstance(phil, str) else phil.as_str(attributes_level=3)
    master = parse(text, process_includes=True)
    common_output = _common_output_phil(name).objects[0]
    own_output = [obj for obj in master.objects if obj.name == "output"]
    if own_output:
        for obj in common_output.objects:
            own_output[0].adopt(obj)
    else:
        master.adopt(common_output)
    if parallel_work:
        for obj in parallel.phil_scope.objects:
            master.adopt(obj)
    return master


def definition_paths(scope):
    """Full dotted paths of every parameter definition in a PHIL scope."""
    paths = []
    for obj in scope.objects:
        if obj.is_definition:
            paths.append(obj.full_path())
        else:
            paths.extend(definition_paths(obj))
    return paths


#: Parameter names whose values are never logged or summarised.
SECRET_NAMES = ("password", "secret", "token")
REDACTED = "<redacted>"


def is_secret(name):
    """True for a parameter (dotted path or leaf) whose value must not be shown."""
    leaf = str(name).split(".")[-1].lower()
    return any(word in leaf for word in SECRET_NAMES)


def redact_arguments(args):
    """Command-line arguments with the values of secret parameters replaced."""
    return [
        f"{arg.split('=', 1)[0]}={REDACTED}"
        if "=" in arg and is_secret(arg.split("=", 1)[0])
        else arg
        for arg in args
    ]


def redact_phil_text(text):
    """PHIL text with the values of secret parameters replaced."""
    pattern = re.compile(
        r"^(\s*)([A-Za-z0-9_.]*(?:" + "|".join(SECRET_NAMES) + r")[A-Za-z0-9_]*)"
        r"(\s*=\s*)(.*)$",
        re.IGNORECASE | re.MULTILINE,
    )
    return pattern.sub(
        lambda m: (
            m.group(0)
            if m.group(4).strip() in ("None", "")
            else f"{m.group(1)}{m.group(2)}{m.group(3)}{REDACTED}"
        ),
        text,
    )


def phil_to_dict(scope):
    """A working PHIL scope as nested dictionaries of Python values (for JSON).

    Secret parameters (see `is_secret`) that are set appear as "<redacted>".
    """
    result = {}
    for obj in scope.objects:
        if obj.is_definition:
            value = obj.extract()
            if value is not None and is_secret(obj.name):
                value = REDACTED
            result[obj.name] = value
        else:
            result[obj.name] = phil_to_dict(obj)
    return result


class RunContext:
    """What a program's main function gets besides parameters and inputs.

    It writes outputs atomically (and refuses to overwrite an input), records
    key results and timings for the summary, and knows the verbosity.
    """

    def __init__(self, program_name, inputs, verbosity=0, plan=None):
        self.program_name = program_name
        self.inputs = inputs
        self.verbosity = verbosity
        self.plan = plan if plan is not None else OutputPlan()
        self.outputs = {}
        self.results = {}
        self.timings = {}

    def plan_outputs(self, outputs, folders=()):
        """Check outputs whose names the program derives, before writing any.

        Parameters
        ----------
        outputs : dict
            {description: path}, e.g. {"pairs of experiment 2": "pair2.dat"}.
            A derived name that is an output parameter's value is refused
            (unless described by that parameter's full name, e.g.
            "output.model"); one planned by an earlier call is accepted.
            Each is checked as the runner checks the output parameters
            (`dials_diffuse.util.outputs.OutputPlan.add`); a refusal is a
            UserError naming the file.
        folders : sequence of paths
            Folders the program makes itself before writing into them (e.g.
            process's sweep_<i>/): outputs there are not refused for a
            missing folder.
        """
        for folder in folders:
            self.plan.will_make(folder)
        derived = self.plan.derived
        for what, path in outputs.items():
            planned_as = self.plan.key_of(path)
            if planned_as is None or planned_as not in derived:
                # New, or an output parameter's value: a clash unless the same key.
                self.plan.add(what, path)
                derived.add(what)

    @contextlib.contextmanager
    def write(self, path, what):
        """Yield a temporary path to write `what` to; rename to `path` on success.

        Parameters
        ----------
        path : str or Path
            Final name of the output file.
        what : str
            A short description ("histogram table"), used in the log and as
            the key of this output in the JSON summary.
        """
        path = Path(path)
        if self.inputs.is_input(path):
            raise UserError(f"{path}: refusing to overwrite an input file")
        if not self.plan.is_planned(path):  # a name the program derived late
            self.plan.add(what, path)
        try:
            with atomic_path(path) as temporary:
                yield temporary
        except OSError as error:
            reason = write_failure(error)
            if reason is None:
                raise
            raise DataError(f"{path}: cannot write the {what}: {reason}") from error
        self.outputs[what] = str(path)
        logger.info("Wrote %s to %s", what, path)

    @contextlib.contextmanager
    def timer(self, step):
        """Time a step; the wall-clock seconds go into the summary."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + (
                time.perf_counter() - start
            )


class Program:
    """A dials.diffuse program: PHIL scope, help text and the function doing the work.

    Parameters
    ----------
    name : str
        The program is installed as ``dials.diffuse.<name>``.
    phil : str
        The PHIL scope, every parameter with `.help`. `output.log`,
        `output.json` (and `nproc`, `dask.scheduler` when `parallel_work`) are
        added by the runner.
    help : str
        Description and examples, printed by ``-h``.
    main : callable
        ``main(params, inputs, run)``: `params` the extracted PHIL, `inputs`
        an `Inputs`, `run` a `RunContext`.
    parallel_work : bool
        The program runs chunked work that `nproc`/`dask.scheduler` control.
    reads_images : bool or callable
        Experiments given must come with readable images; a callable gets
        the positional file names and decides (e.g. not when reflection
        files are given).
    claim_file : callable, optional
        ``claim_file(path) -> bool``: positional files it claims are not
        imported through dxtbx but listed in ``inputs.claimed`` for the
        program to open itself (e.g. Eiger master files for a fast path).
    expand_args : callable, optional
        ``expand_args(args) -> args``: the command line with arguments that
        stand for others replaced, before anything else (e.g. a config file
        of an older tool); a DataError it raises is reported as one line.
    """

    def __init__(
        self,
        name,
        phil,
        help,
        main,
        parallel_work=False,
        reads_images=False,
        claim_file=None,
        expand_args=None,
    ):
        self.name = name
        self.claim_file = claim_file
        self.expand_args = expand_args
        self.full_name = f"dials.diffuse.{name}"
        self.help = help
        self.main = main
        self.reads_images = reads_images
        self.master_phil = build_master_phil(name, phil, parallel_work)

    # -- the command line ---------------------------------------------------

    def usage(self):
        return f"usage: {self.full_name} [options] [files] [parameter=value ...]"

    def _split_arguments(self, args):
        """Split argv into flags, positional files and PHIL assignments."""
        flags, files, assignments = [], [], []
        for arg in args:
            if arg.startswith("-") and not os.path.exists(arg):
                flags.append(arg)
            elif "=" in arg and not os.path.exists(arg):
                assignments.append(arg)
            else:
                files.append(arg)
        return flags, files, assignments

    def _interpret_phil(self, assignments, phil_files):
        interpreter = self.master_phil.command_line_argument_interpreter(home_scope="")
        sources = []
        for path in phil_files:
            try:
                sources.append(parse(file_name=str(path)))
            except Exception as error:
                raise UserError(f"{path}: not a valid PHIL file ({error})") from error
        for arg in assignments:
            try:
                sources.append(interpreter.process(arg=arg))
            except Sorry as error:
                raise self._usage_error_for(arg, error) from error
        try:
            working = self.master_phil.fetch(sources=sources)
            params = working.extract()
        except (Sorry, RuntimeError, ValueError) as error:
            message = str(error).strip().splitlines()[0]
            message = message.replace(" (command line argument, line 1)", "")
            # A value outside its allowed range is understood but unusable
            # (exit 1); anything else (not a number, not one of the choices,
            # the wrong number of values) cannot be understood (exit 2).
            if "allowed value" in message:
                raise UserError(f"bad parameter value: {message}") from error
            number = re.match(r'Error interpreting (\S+)="(.*)" as a numeric', message)
            if number:
                message = f"{number.group(1)}={number.group(2)} is not a number"
            raise UsageError(f"bad parameter value: {message}") from error
        return working, params

    def _usage_error_for(self, arg, error):
        key = arg.split("=", 1)[0].strip()
        paths = definition_paths(self.master_phil)
        leaves = {path.split(".")[-1]: path for path in paths}
        close = difflib.get_close_matches(key, paths, n=3, cutoff=0.6)
        close += [
            leaves[leaf]
            for leaf in difflib.get_close_matches(
                key.split(".")[-1], leaves, n=3, cutoff=0.6
            )
            if leaves[leaf] not in close
        ]
        message = str(error).strip().splitlines()[0]
        if "Ambiguous" in message:
            matches = [p for p in paths if p.endswith("." + key) or p == key]
            return UsageError(
                f"ambiguous parameter '{key}': say one of {', '.join(matches)}"
            )
        if "nknown" in message or "definition" in message:
            hint = f" (did you mean {' or '.join(close[:3])}?)" if close else ""
            return UsageError(
                f"unknown parameter '{key}'{hint}; {self.full_name} -c lists them all"
            )
        return UsageError(f"cannot understand '{arg}': {message}")

    def _print_help(self, attributes_level=None):
        print(self.usage())
        print()
        print(self.help.strip())
        print()
        print("Options: -h help, -c show all parameters with help, -v verbose (repeat")
        print("for more), --version. Parameters are key=value or a .phil file.")
        if attributes_level is not None:
            print()
            print("Parameters:")
            print(self.master_phil.as_str(attributes_level=attributes_level))

    # -- running ----------------------------------------------------------

    def run(self, args=None, return_results=False):
        """Run the program on `args` (default sys.argv[1:]); return the exit code.

        With `return_results` (for use in a script or a pipeline in one
        process, as DIALS's ``run(args, return_results=True)``): return the
        run's key results (`RunContext.results`, the "results" of the JSON
        summary; None for -h, -c and --version) and raise a failure (the
        exception itself, after the same one-line report, log and summary)
        instead of returning its exit code.
        """
        args = list(sys.argv[1:] if args is None else args)
        if self.expand_args is not None:
            try:
                args = self.expand_args(args)
            except DataError as error:
                print(f"{self.full_name}: error: {error}", file=sys.stderr)
                if return_results:
                    raise
                return error.exit_code
        flags, files, assignments = self._split_arguments(args)
        verbosity = 0
        for flag in flags:
            if flag in ("-h", "--help"):
                self._print_help()
                return None if return_results else 0
            if flag in ("-c", "--show-config"):
                self._print_help(attributes_level=2)
                return None if return_results else 0
            if flag == "--version":
                print(f"{self.full_name} (dials-diffuse {dials_diffuse.__version__})")
                return None if return_results else 0
            if flag.startswith("-v") and set(flag[1:]) == {"v"}:
                verbosity += len(flag) - 1
            else:
                print(f"{self.full_name}: unknown option {flag}", file=sys.stderr)
                print(self.usage(), file=sys.stderr)
                if return_results:
                    raise UsageError(f"unknown option {flag}")
                return UsageError.exit_code

        start = time.perf_counter()
        state = _RunState()
        logs = _RunLogging(verbosity)
        try:
            try:
                phil_files = [f for f in files if f.endswith(".phil")]
                data_files = [f for f in files if not f.endswith(".phil")]
                state.working, state.params = self._interpret_phil(
                    assignments, phil_files
                )
                logs.buffer()
                claimed = [
                    f for f in data_files if self.claim_file and self.claim_file(f)
                ]
                unclaimed = [f for f in data_files if f not in claimed]
                reads_images = (
                    self.reads_images(unclaimed)
                    if callable(self.reads_images)
                    else self.reads_images
                )
                state.plan = self._protect(state.working, phil_files, data_files)
                inputs = load_inputs(unclaimed, reads_images=reads_images)
                inputs.add_claimed(claimed)
                for path, description in referenced_files(inputs).items():
                    state.plan.protect(path, description)
                self._plan_outputs(state)
                logs.open(state.params.output.log)
                self._log_header(args, state.working)
                logs.replay()
                logs.raise_failure()  # a log that cannot be written: stop now
                state.run = RunContext(self.name, inputs, verbosity, state.plan)
                take_non_finite_counts()
                self.main(state.params, inputs, state.run)
                _report_non_finite(state.run)
                logs.raise_failure()
            except BaseException as error:
                one_line = as_one_line(error)
                if one_line is None:  # a bug: keep its traceback
                    raise
                code = self._fail(one_line, error, verbosity, state, args, start, logs)
                if return_results:
                    raise
                return code
            summary_error = self._write_summary(state, args, start, None)
            logger.info("Total time: %.1f s", time.perf_counter() - start)
            if return_results:
                if summary_error:
                    raise summary_error
                return state.run.results
            return _exit_code(summary_error.exit_code if summary_error else 0)
        finally:
            logs.close()

    def _fail(self, one_line, error, verbosity, state, args, start, logs):
        """Report a failure as one line (traceback with -v); return the exit code."""
        if verbosity:
            if logs.opened:
                logger.error("Traceback (shown with -v):", exc_info=error)
            else:
                traceback.print_exception(type(error), error, error.__traceback__)
        message = f"{self.full_name}: error: {one_line}"
        print(message, file=sys.stderr)
        logs.record_error(message)
        if write_failure(error.__cause__ or error) and "h5py" in sys.modules:
            _keep_failed_hdf5_write(error)
        summary_error = self._write_summary(state, args, start, one_line)
        code = summary_error.exit_code if summary_error else 0
        return _exit_code(max(one_line.exit_code, code))

    def _protect(self, working, phil_files, data_files):
        """An OutputPlan protecting the positional, .phil and parameter input files."""
        plan = OutputPlan()
        for path in data_files:
            plan.protect(path)
        for path in phil_files:
            plan.protect(path, "a parameter file")
        _, parameter_inputs = path_parameters(working)
        for key, path in parameter_inputs.items():
            plan.protect(path, f"the file given as {key}")
        return plan

    def _plan_outputs(self, state):
        """Check every output parameter (see `dials_diffuse.util.outputs`)."""
        outputs, _ = path_parameters(state.working)
        # The log and the summary first: a refusal of another output can
        # still be recorded in the summary.
        for key in ("output.json", "output.log"):
            if key in outputs:
                state.plan.add(key, outputs.pop(key))
                state.summary_planned |= key == "output.json"
        for key, path in outputs.items():
            try:
                state.plan.add(key, path)
            except UserError:
                if state.plan.outputs.get("output.json") == state.plan.identity(path):
                    state.summary_refused = True  # it would be over another output
                raise

    def _log_header(self, args, working):
        logger.info("%s (dials-diffuse %s)", self.full_name, dials_diffuse.__version__)
        logger.info("%s, Python %s", _dials_version(), platform.python_version())
        logger.info(
            "Command line: %s %s", self.full_name, " ".join(redact_arguments(args))
        )
        diff = self.master_phil.fetch_diff(source=working).as_str().strip()
        if diff:
            logger.info(
                "The following parameters have been modified:\n%s\n",
                redact_phil_text(diff),
            )

    def _write_summary(self, state, args, start, error):
        """Write output.json if asked for; return None, or the DataError (already
        printed) if it cannot be written."""
        params, run = state.params, state.run
        if params is None or not params.output.json or state.summary_refused:
            return None
        if not state.summary_planned:  # the run failed before planning it
            try:
                state.plan.add("output.json", params.output.json)
            except DataError:
                return None  # refused (over an input, say): already reported
            state.summary_planned = True
        summary = {
            "program": self.full_name,
            "version": dials_diffuse.__version__,
            "dials_version": _dials_version(),
            "command_line": redact_arguments(args),
            "inputs": run.inputs.describe() if run else [],
            "outputs": run.outputs if run else {},
            "parameters": phil_to_dict(state.working),
            "results": run.results if run else {},
            "timings": {
                **(run.timings if run else {}),
                "total": time.perf_counter() - start,
            },
            "exit_code": error.exit_code if error else 0,
            "error": str(error) if error else None,
        }
        try:
            with atomic_path(params.output.json) as temporary:
                temporary.write_text(
                    json.dumps(summary, indent=2, default=_json_default)
                )
        except (OSError, DataError) as write_error:
            reason = write_failure(write_error) or _short(write_error)
            failure = DataError(
                f"{params.output.json}: cannot write the JSON summary: {reason}"
            )
            print(f"{self.full_name}: error: {failure}", file=sys.stderr)
            return failure
        if error is None:
            logger.info("Wrote JSON summary to %s", params.output.json)
        return None


def _report_non_finite(run):
    """Log the non-finite pixel values the run excluded (the pixel policy), per file."""
    counts = take_non_finite_counts()
    for name, count in counts.items():
        logger.warning(
            "%s: %d non-finite pixel value(s) (NaN or Inf) excluded like masked pixels",
            name,
            count,
        )
    if counts:
        run.results["non_finite_pixels"] = counts


class _RunState:
    """What a run has got so far (for the summary of a run that failed early)."""

    def __init__(self):
        self.params = None
        self.working = None
        self.run = None
        self.plan = OutputPlan()
        self.summary_planned = False
        self.summary_refused = False


# -- the error boundary --------------------------------------------------------

#: Messages of C++ assertions and errors raised through Boost.Python.
_LIBRARY_ASSERTION = re.compile(
    r"ASSERT|Internal Error|(dxtbx|scitbx|cctbx|boost)[ _.:]|HDF5|h5py", re.IGNORECASE
)
_PACKAGE_DIRECTORIES = None


def _short(error):
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def _package_directories():
    """The directories of dials_diffuse and its programs (with a trailing /)."""
    global _PACKAGE_DIRECTORIES
    if _PACKAGE_DIRECTORIES is None:
        import dials_diffuse.command_line

        _PACKAGE_DIRECTORIES = tuple(
            os.path.dirname(os.path.abspath(module.__file__)) + os.sep
            for module in (dials_diffuse, dials_diffuse.command_line)
        )
    return _PACKAGE_DIRECTORIES


#: Packages whose RuntimeError/AssertionError is a failure below a program
#: (bad data or parameters reaching them), not a bug of ours.
LIBRARIES = ("dxtbx", "cctbx", "scitbx", "iotbx", "libtbx", "dials", "h5py")


def _raised_in_a_library(error):
    """True when the innermost frame of `error`'s traceback is in one of LIBRARIES."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    parts = Path(os.path.abspath(frames[-1].filename)).parts
    return any(library in parts for library in LIBRARIES)


def as_one_line(error):
    """The DataError to report for `error`, or None for a bug (keep the traceback).

    - DataError (and UserError, UsageError): as they are;
    - Ctrl-C: "interrupted";
    - OSError (the file system, HDF5 through h5py): the file and the reason;
    - MemoryError: out of memory;
    - RuntimeError/AssertionError raised below dials-diffuse (dxtbx, cctbx,
      HDF5 through Boost.Python or h5py): the library's message.
    """
    if isinstance(error, DataError):
        return error
    if isinstance(error, KeyboardInterrupt):
        return UserError("interrupted")
    if isinstance(error, MemoryError):
        return DataError(
            "out of memory: use fewer worker threads (nproc) or smaller chunks"
        )
    if isinstance(error, OSError):
        reason = write_failure(error) or error.strerror or _short(error)
        name = error.filename or getattr(error, "filename2", None)
        return DataError(f"{name}: {reason}" if name else reason)
    if isinstance(error, (RuntimeError, AssertionError)) and (
        _raised_in_a_library(error) or _LIBRARY_ASSERTION.search(str(error))
    ):
        return DataError(_short(error) or type(error).__name__)
    return None


# HDF5 1.10 crashes (a segmentation fault in H5F__close_cb) when Python frees
# an h5py file whose close failed because the disk was full. The failed
# write's exception holds the file through its traceback: it is kept here,
# never freed, and a program run from the command line ends with os._exit
# (its log and outputs flushed) instead of the interpreter's final cleanup.
_FAILED_HDF5_WRITES = []
_LAST_EXIT_CODE = [0]


def _exit_code(code):
    _LAST_EXIT_CODE[0] = code
    return code


def _run_from_the_command_line():
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    name = os.path.basename(script)
    return name.startswith("dials.diffuse.") or script.startswith(
        _package_directories()
    )


def _keep_failed_hdf5_write(error):
    if not _FAILED_HDF5_WRITES and _run_from_the_command_line():
        atexit.register(_exit_without_freeing)
    _FAILED_HDF5_WRITES.append(error)


def _exit_without_freeing():
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_LAST_EXIT_CODE[0])


# -- logging -------------------------------------------------------------------


def _json_default(value):
    """JSON for numpy scalars/arrays and paths in summaries."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _dials_version():
    try:
        from dials.util.version import dials_version

        return dials_version()
    except ImportError:  # pragma: no cover - DIALS is a hard requirement
        return "DIALS (unknown version)"


class _TerminalFormatter(logging.Formatter):
    """Plain messages for the terminal; warnings and errors say so."""

    def format(self, record):
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.capitalize()}: {message}"
        return message


class _BufferHandler(logging.Handler):
    """Keeps records until the log file may be opened (after output planning)."""

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


class _LogFileHandler(logging.FileHandler):
    """The log file; a failed write (full disk) is recorded, not printed.

    logging's default prints a traceback to stderr for every failed record;
    here the first failure is kept (the runner reports it as one line) and
    the file gets nothing more.
    """

    def __init__(self, path):
        super().__init__(path, mode="w", encoding="utf-8")
        self.error = None

    def handleError(self, record):
        if self.error is None:
            self.error = sys.exc_info()[1]
        self.setLevel(logging.CRITICAL + 1)

    def flush(self):
        try:
            super().flush()
        except OSError as error:
            if self.error is None:
                self.error = error


class _RunLogging:
    """Our, DIALS's and dxtbx's log to stdout and the log file, for one run.

    Records are buffered from `buffer()` until `open()` (the log file is an
    output, opened only once output planning has accepted it), then replayed.
    `close()` restores the loggers as they were, so that a program run inside
    a longer process (a script, a test session) leaves them unchanged.
    """

    def __init__(self, verbosity):
        self.level = logging.DEBUG if verbosity else logging.INFO
        self.handlers = []
        self.saved = {}
        self.buffered = None
        self.opened = False
        self.logfile = None

    def _attach(self, handler):
        for name in _LOGGERS:
            named = logging.getLogger(name)
            if name not in self.saved:
                self.saved[name] = (named.level, named.propagate)
            named.setLevel(self.level)
            named.propagate = False
            named.addHandler(handler)
        self.handlers.append(handler)

    def _detach(self, handler):
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        self.handlers.remove(handler)
        with contextlib.suppress(OSError):  # a full disk: reported by failure()
            handler.close()

    def buffer(self):
        self.buffered = _BufferHandler()
        self._attach(self.buffered)

    def open(self, logfile):
        if self.buffered is not None:  # kept for replay()
            self._detach(self.buffered)
        console = logging.StreamHandler(sys.stdout)
        console.setLevel(self.level)
        console.setFormatter(_TerminalFormatter("%(message)s"))
        self._attach(console)
        if logfile:
            try:
                file_handler = _LogFileHandler(logfile)
            except OSError as error:
                reason = write_failure(error) or error.strerror
                raise UserError(
                    f"{logfile}: cannot write the log file ({reason})"
                ) from error
            file_handler.setLevel(self.level)
            file_handler.setFormatter(logging.Formatter("%(message)s"))
            self._attach(file_handler)
            self.logfile = logfile
        self.opened = True

    def replay(self):
        """Send the records kept before the log file was opened to the handlers."""
        if self.buffered is None:
            return
        records = self.buffered.records
        self.buffered = None
        for record in records:
            for handler in self.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)

    def record_error(self, message):
        """Write the run's one-line error to the log file (the terminal has it)."""
        for handler in self.handlers:
            if isinstance(handler, _LogFileHandler):
                handler.handle(
                    logging.LogRecord(
                        "dials_diffuse.error", logging.ERROR, "", 0, message, None, None
                    )
                )

    def raise_failure(self):
        """Raise a DataError if the log file could not be written (a full disk)."""
        for handler in self.handlers:
            if isinstance(handler, _LogFileHandler):
                handler.flush()
                if handler.error is not None:
                    reason = write_failure(handler.error) or _short(handler.error)
                    raise DataError(
                        f"{self.logfile}: cannot write the log file ({reason})"
                    )

    def close(self):
        for handler in list(self.handlers):
            self._detach(handler)
        for name, (level, propagate) in self.saved.items():
            named = logging.getLogger(name)
            named.setLevel(level)
            named.propagate = propagate
        self.saved = {}


__all__ = ["Inputs", "Program", "RunContext", "UserError", "UsageError"]
