"""The runner's log handlers are removed after every run, even an unexpected failure."""

import io
import logging
import sys

import pytest

from dials_diffuse.util.program import Program

PHIL = """
crash = False
  .type = bool
  .help = "Raise an unexpected exception (a bug, not a user error)."
"""

logger = logging.getLogger("dials_diffuse.test_program_logging")


def work(params, inputs, run):
    logger.info("working")
    if params.crash:
        raise RuntimeError("an unexpected bug")


program = Program(name="log_test", phil=PHIL, help="Log and maybe crash.", main=work)


def _handlers():
    """The handlers that write somewhere (DIALS adds NullHandlers on import)."""
    return {
        name: [
            handler
            for handler in logging.getLogger(name).handlers
            if not isinstance(handler, logging.NullHandler)
        ]
        for name in ("dials_diffuse", "dials", "dxtbx")
    }


def test_unexpected_exception_then_another_run_logs_cleanly(
    in_tmp_path, monkeypatch, capsys
):
    before = _handlers()
    # The first run's console is a stream that is closed after it, as a
    # captured stdout is closed at the end of a test or a notebook cell.
    first_stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", first_stdout)
    with pytest.raises(RuntimeError, match="an unexpected bug"):
        program.run(["crash=True"])
    assert "working" in first_stdout.getvalue()
    assert _handlers() == before
    first_stdout.close()

    monkeypatch.setattr(sys, "stdout", sys.__stdout__)
    capsys.readouterr()
    assert program.run(["crash=False"]) == 0
    captured = capsys.readouterr()
    assert "Logging error" not in captured.err
    assert "I/O operation on closed file" not in captured.err
    assert "working" in (in_tmp_path / "dials.diffuse.log_test.log").read_text()
    assert _handlers() == before
