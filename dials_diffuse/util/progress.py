"""Progress bars for long work: tqdm on a terminal, silent otherwise."""

import sys

from tqdm import tqdm


def progress(iterable=None, total=None, desc=None, unit="it", unit_scale=False):
    """Wrap `iterable` in a tqdm progress bar shown only when stderr is a terminal.

    Pipelines and CI logs see nothing; people at a terminal see rate and ETA.
    """
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        disable=not sys.stderr.isatty(),
        leave=False,
        dynamic_ncols=True,
    )
