"""Write files atomically: to a temporary name beside the target, then rename.

A crash or Ctrl-C while writing never leaves a half-written file under the
final name, and never replaces a complete file with a partial one.
"""

import contextlib
import os
import tempfile
from pathlib import Path


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
        Where to write. Removed if the block raises.
    """
    final = Path(path)
    directory = final.parent if str(final.parent) else Path(".")
    if not directory.is_dir():
        from dials_diffuse.util.errors import UserError

        raise UserError(f"{final}: output directory {directory} does not exist")
    fd, temporary = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=".partial", dir=directory
    )
    os.close(fd)
    temporary = Path(temporary)
    # mkstemp creates the file readable by the owner only: give the final
    # file the permissions any new file gets (0666 minus the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        yield temporary
        # mkstemp makes the file private (0600): give it the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Open a temporary file for writing; rename it to `path` when closed cleanly."""
    with atomic_path(path) as temporary, open(temporary, mode, **kwargs) as handle:
        yield handle
