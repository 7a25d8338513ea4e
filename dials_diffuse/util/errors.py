"""Errors that the program runner reports as one line, without a traceback.

`UserError` is for bad input (a missing, corrupt or truncated file, a value
that makes no sense, an empty selection): exit code 1. `UsageError` is for a
command line that cannot be understood (an unknown parameter, a malformed
argument): exit code 2. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: reported as one line, exit code 1."""

    exit_code = 1


class UsageError(UserError):
    """A command line that cannot be understood: one line, exit code 2."""

    exit_code = 2
