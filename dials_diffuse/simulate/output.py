"""Write a simulated dataset into a directory as a whole, or not at all."""

import contextlib
import os
import shutil
from pathlib import Path

from dials_diffuse.io.atomic import (
    remove_stale_temporaries,
    temporary_name,
    write_failure,
)
from dials_diffuse.util.errors import DataError


@contextlib.contextmanager
def dataset_directory(directory):
    """Yield a temporary directory that becomes `directory` on success.

    The dataset is built beside `directory` and renamed into place at the
    end, so a crash or Ctrl-C never leaves half a dataset under the final
    name. `directory` may not exist yet, or be empty; a non-empty directory
    is refused (nothing is overwritten).
    """
    final = Path(directory)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise DataError(
            f"{final}: already exists and is not an empty directory "
            "(choose another output.directory)"
        )
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(f"{final}: parent directory {parent} does not exist")
    remove_stale_temporaries(final)
    while True:
        temporary = temporary_name(final)
        try:
            temporary.mkdir()
            break
        except FileExistsError:
            continue
    try:
        yield temporary
        if final.exists():
            final.rmdir()
        os.replace(temporary, final)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        reason = write_failure(error)
        if reason is None:
            raise
        raise DataError(f"{final}: cannot write the dataset: {reason}") from error
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
