"""Errors that the program runner reports as one line, without a traceback.

`DataError` is what library code (algorithms, readers, writers) raises for
data it cannot use: a missing, corrupt or truncated file, non-finite values,
a model the data cannot determine, an empty selection. Its message names the
file where there is one. `UserError` is the program layer's: bad input or
parameters as the user gave them (exit code 1). `UsageError` is for a command
line that cannot be understood (an unknown parameter, a malformed argument):
exit code 2. The runner reports all three as one line; anything else is a bug
and keeps its traceback.
"""


class DataError(Exception):
    """Data that cannot be used (raised by library code): one line, exit code 1."""

    exit_code = 1


class UserError(DataError):
    """Bad input or parameters as given on the command line: one line, exit code 1."""

    exit_code = 1


class UsageError(UserError):
    """A command line that cannot be understood: one line, exit code 2."""

    exit_code = 2
