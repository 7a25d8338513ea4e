"""Write files atomically: to a temporary name beside the target, then rename.

A crash or Ctrl-C while writing never leaves a half-written file under the
final name, and never replaces a complete file with a partial one. The
temporary is ``.<name>.<pid>.<random>.partial`` in the target's directory:
the process id lets the next run of a program remove the temporaries that a
killed run left (`remove_stale_temporaries`), and never those of a run still
writing.
"""

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path

SUFFIX = ".partial"


def temporary_name(final):
    """A temporary name beside `final`: ``.<name>.<pid>.<random>.partial``."""
    final = Path(final)
    return final.with_name(
        f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{SUFFIX}"
    )


def _create_temporary(final):
    """Create an empty temporary beside `final`, with the permissions of a new file.

    ``os.open`` with mode 0o666 lets the kernel apply the umask, so the file
    gets the usual permissions without reading (or changing) the
    process-wide umask, which is not thread-safe.
    """
    while True:
        temporary = temporary_name(final)
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(descriptor)
        return temporary


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's directory; rename it on success.

    Parameters
    ----------
    path : str or Path
        The final file name. Its directory must exist.

    Yields
    ------
    Path
        Where to write (an empty file exists there). Removed if the block
        raises.
    """
    final = Path(path)
    directory = final.parent if str(final.parent) else Path(".")
    if not directory.is_dir():
        from dials_diffuse.util.errors import DataError

        raise DataError(f"{final}: output directory {directory} does not exist")
    temporary = _create_temporary(final)
    try:
        yield temporary
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _process_is_running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path):
    """Remove the temporaries of output `path` left by runs that were killed.

    Those of processes still running on this machine (another run writing
    the same name right now) and of this process are kept. Returns the
    removed paths.
    """
    final = Path(path)
    directory = final.parent if str(final.parent) else Path(".")
    removed = []
    try:
        candidates = list(directory.glob(f".{final.name}.*{SUFFIX}"))
    except OSError:
        return removed
    prefix = f".{final.name}."
    for candidate in candidates:
        fields = candidate.name[len(prefix) : -len(SUFFIX)].split(".")
        pid = int(fields[0]) if len(fields) == 2 and fields[0].isdigit() else None
        if pid is not None and (pid == os.getpid() or _process_is_running(pid)):
            continue
        with contextlib.suppress(OSError):
            if candidate.is_dir():  # a dataset directory (simulate)
                shutil.rmtree(candidate)
            else:
                candidate.unlink()
            removed.append(candidate)
    return removed


#: errno values of a failed write: the file system, not the program.
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large",
    errno.EIO: "input/output error",
}
#: The same, as HDF5 reports them inside its messages.
_WRITE_TEXTS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
    "File too large": errno.EFBIG,
}


def write_failure(error):
    """The reason a write failed because of the file system, or None."""
    number = getattr(error, "errno", None)
    if number in WRITE_ERRNOS:
        return WRITE_ERRNOS[number]
    text = str(error)
    for phrase, number in _WRITE_TEXTS.items():
        if phrase in text:
            return WRITE_ERRNOS[number]
    return None
