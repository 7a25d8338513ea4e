"""Header values a Format class had to make up: warned about once, at import.

When a file lacks the distance, beam centre or wavelength, our Format
classes build the models with a placeholder and say so. The warning belongs
to the moment the models are made from the file: ``dials.import`` (or any
``ExperimentListFactory.from_filenames``), where dxtbx asks the Format for
its models. Loading an ``.expt`` takes the models from the ``.expt`` and
warns about nothing (dxtbx builds its image sets through
``ExperimentListDict._imageset_from_imageset_data`` then, asking the Format
for models of stills that it replaces at once). Inside
``dials.import``, which may replace the values from its own parameters
(``distance=``, ``fast_slow_beam_centre=``, ``wavelength=``) after reading
the file, the warning waits until the import has finished and names only
the values still at their placeholder; elsewhere (a script calling
``ExperimentListFactory.from_filenames``) it is given at once.
"""

import atexit
import dataclasses
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

#: Placeholders waiting for the end of dials.import.
_pending = []


@dataclasses.dataclass
class Placeholder:
    """One made-up header value.

    Attributes
    ----------
    path : str
        The image file.
    what : str
        What the file lacks, as the user knows it ("detector_distance").
    value : str
        The placeholder used, with units ("100.0 mm").
    parameter : str
        The dials.import parameter that sets the true value.
    still_in_use : callable
        Returns True while the model still holds the placeholder.
    """

    path: str
    what: str
    value: str
    parameter: str
    still_in_use: object

    def message(self):
        return (
            f"{Path(self.path).name}: no {self.what} in the file; using {self.value} "
            f"(set the true value with dials.import {self.parameter}=)"
        )


def _inside_dials_import():
    """True in a dials.import process (its console script, or python -m)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return "dials.command_line.dials_import" in sys.modules or (
        spec is not None and spec.name == "dials.command_line.dials_import"
    )


def _report_pending():
    seen = set()
    for placeholder in _pending:
        key = (placeholder.path, placeholder.what)
        if key in seen or not placeholder.still_in_use():
            continue
        seen.add(key)
        logger.warning(placeholder.message())
    _pending.clear()


def _loading_an_expt():
    """True while dxtbx builds image sets from an .expt (its models win)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_imageset_from_imageset_data":
            return True
        frame = frame.f_back
    return False


def report(placeholders):
    """Warn about `placeholders` (see the module docstring for when)."""
    if not placeholders or _loading_an_expt():
        return
    if _inside_dials_import():
        if not _pending:
            atexit.register(_report_pending)
        _pending.extend(placeholders)
        return
    for placeholder in placeholders:
        logger.warning(placeholder.message())
