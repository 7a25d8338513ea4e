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
- user errors as one line and exit code 1, usage errors exit code 2, no
  traceback unless ``-v``; outputs written atomically, inputs never touched.
"""

import contextlib
import difflib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from libtbx.phil import parse
from libtbx.utils import Sorry

import dials_diffuse
from dials_diffuse.io.atomic import atomic_path
from dials_diffuse.util import parallel
from dials_diffuse.util.errors import DataError, UsageError, UserError
from dials_diffuse.util.inputs import Inputs, load_inputs

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


def phil_to_dict(scope):
    """A working PHIL scope as nested dictionaries of Python values (for JSON)."""
    result = {}
    for obj in scope.objects:
        if obj.is_definition:
            result[obj.name] = obj.extract()
        else:
            result[obj.name] = phil_to_dict(obj)
    return result


class RunContext:
    """What a program's main function gets besides parameters and inputs.

    It writes outputs atomically (and refuses to overwrite an input), records
    key results and timings for the summary, and knows the verbosity.
    """

    def __init__(self, program_name, inputs, verbosity=0):
        self.program_name = program_name
        self.inputs = inputs
        self.verbosity = verbosity
        self.outputs = {}
        self.results = {}
        self.timings = {}

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
        with atomic_path(path) as temporary:
            yield temporary
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
    ):
        self.name = name
        self.claim_file = claim_file
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
            raise UserError(f"bad parameter value: {message}") from error
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

    def run(self, args=None):
        """Run the program on `args` (default sys.argv[1:]); return the exit code."""
        args = list(sys.argv[1:] if args is None else args)
        flags, files, assignments = self._split_arguments(args)
        verbosity = 0
        for flag in flags:
            if flag in ("-h", "--help"):
                self._print_help()
                return 0
            if flag in ("-c", "--show-config"):
                self._print_help(attributes_level=2)
                return 0
            if flag == "--version":
                print(f"{self.full_name} (dials-diffuse {dials_diffuse.__version__})")
                return 0
            if flag.startswith("-v") and set(flag[1:]) == {"v"}:
                verbosity += len(flag) - 1
            else:
                print(f"{self.full_name}: unknown option {flag}", file=sys.stderr)
                print(self.usage(), file=sys.stderr)
                return UsageError.exit_code

        start = time.perf_counter()
        params = None
        working = None
        run = None
        handlers = []
        try:
            phil_files = [f for f in files if f.endswith(".phil")]
            data_files = [f for f in files if not f.endswith(".phil")]
            working, params = self._interpret_phil(assignments, phil_files)
            handlers = _configure_logging(params.output.log, verbosity)
            self._log_header(args, working)
            claimed = [f for f in data_files if self.claim_file and self.claim_file(f)]
            unclaimed = [f for f in data_files if f not in claimed]
            reads_images = (
                self.reads_images(unclaimed)
                if callable(self.reads_images)
                else self.reads_images
            )
            inputs = load_inputs(unclaimed, reads_images=reads_images)
            inputs.add_claimed(claimed)
            inputs.protect(params.output.log)
            run = RunContext(self.name, inputs, verbosity)
            self.main(params, inputs, run)
        except (DataError, KeyboardInterrupt) as error:
            if isinstance(error, KeyboardInterrupt):
                error = UserError("interrupted")
            if verbosity:
                logger.exception("Traceback (shown with -v):")
            message = f"{self.full_name}: error: {error}"
            print(message, file=sys.stderr)
            logging.getLogger("dials_diffuse.error").debug(message)
            self._write_summary(params, working, run, args, start, error)
            return error.exit_code
        else:
            self._write_summary(params, working, run, args, start, None)
            logger.info("Total time: %.1f s", time.perf_counter() - start)
            return 0
        finally:
            # Also after an unexpected exception: a handler left behind would
            # write to a closed stream in a later run in the same process.
            _remove_logging(handlers)

    def _log_header(self, args, working):
        logger.info("%s (dials-diffuse %s)", self.full_name, dials_diffuse.__version__)
        logger.info("%s, Python %s", _dials_version(), platform.python_version())
        logger.info("Command line: %s %s", self.full_name, " ".join(args))
        diff = self.master_phil.fetch_diff(source=working).as_str().strip()
        if diff:
            logger.info("The following parameters have been modified:\n%s\n", diff)

    def _write_summary(self, params, working, run, args, start, error):
        if params is None or not params.output.json:
            return
        summary = {
            "program": self.full_name,
            "version": dials_diffuse.__version__,
            "dials_version": _dials_version(),
            "command_line": args,
            "inputs": run.inputs.describe() if run else [],
            "outputs": run.outputs if run else {},
            "parameters": phil_to_dict(working),
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
        except (OSError, UserError) as write_error:
            print(
                f"{self.full_name}: error: cannot write {params.output.json}: {write_error}",
                file=sys.stderr,
            )
            return
        if error is None:
            logger.info("Wrote JSON summary to %s", params.output.json)


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


def _configure_logging(logfile, verbosity):
    """Send our, DIALS's and dxtbx's log to stdout and `logfile`; return the handlers."""
    level = logging.DEBUG if verbosity else logging.INFO
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(level)
    console.setFormatter(_TerminalFormatter("%(message)s"))
    handlers = [console]
    if logfile:
        try:
            file_handler = logging.FileHandler(logfile, mode="w", encoding="utf-8")
        except OSError as error:
            raise UserError(
                f"{logfile}: cannot write the log file ({error.strerror})"
            ) from error
        file_handler.setLevel(logging.DEBUG if verbosity else logging.INFO)
        file_handler.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(file_handler)
    for name in _LOGGERS:
        named = logging.getLogger(name)
        # Restored by _remove_logging, so that a program run inside a longer
        # process (a script, a test session) leaves its loggers as they were.
        _SAVED_LOGGER_STATE.setdefault(name, (named.level, named.propagate))
        named.setLevel(level)
        named.propagate = False
        for handler in handlers:
            named.addHandler(handler)
    return handlers


_SAVED_LOGGER_STATE = {}


def _remove_logging(handlers):
    for name in _LOGGERS:
        named = logging.getLogger(name)
        for handler in handlers:
            named.removeHandler(handler)
        if name in _SAVED_LOGGER_STATE:
            level, named.propagate = _SAVED_LOGGER_STATE.pop(name)
            named.setLevel(level)
    for handler in handlers:
        handler.close()


__all__ = ["Inputs", "Program", "RunContext", "UserError", "UsageError"]
