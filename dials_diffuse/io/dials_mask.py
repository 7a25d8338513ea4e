"""DIALS mask files (``mask.pickle``, ``pixels.mask``): read safely, and write.

``dials.generate_mask`` (DIALS 3.12 and current DIALS, ``dials.util.masking``)
writes a pickle of a tuple of ``flex.bool``, one per panel (rows, columns),
True where the pixel is used. A pickle can name any Python callable, so
loading an untrusted one with `pickle.load` can run code: `read_dials_mask`
unpickles with a restricted unpickler that builds only the types such a
file holds (``flex.bool``, its ``flex.grid`` and the byte-string helper
``_codecs.encode`` of protocol-2 pickles) and refuses anything else before
it is called.
"""

import io
import pickle

import numpy as np

from dials_diffuse.util.errors import DataError

#: (module, name) of every global a DIALS mask pickle may name.
ALLOWED_GLOBALS = {
    ("scitbx_array_family_flex_ext", "bool"),
    ("scitbx_array_family_flex_ext", "grid"),
    ("_codecs", "encode"),
}


class _Refused(Exception):
    pass


class _MaskUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ALLOWED_GLOBALS."""

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise _Refused(f"{module}.{name}")
        from scitbx.array_family import flex  # noqa: F401 (registers the types)

        return super().find_class(module, name)


def read_dials_mask(path):
    """The panels of a DIALS mask file as 2-D bool arrays (True = use the pixel).

    Accepts a tuple or list of flex.bool (what DIALS writes) or a single
    flex.bool.

    Raises
    ------
    DataError
        Naming the file, when it is unreadable, not a DIALS mask, or a pickle
        that asks for anything but flex.bool arrays (it is not run).
    """
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as error:
        raise DataError(f"{path}: cannot read the mask ({error.strerror})") from None
    try:
        loaded = _MaskUnpickler(io.BytesIO(content)).load()
    except _Refused as refused:
        raise DataError(
            f"{path}: refused: not a DIALS mask (the pickle asks for {refused}; "
            "only flex.bool panels are loaded)"
        ) from None
    except Exception as error:
        raise DataError(
            f"{path}: not a readable DIALS mask file ({type(error).__name__}: {error})"
        ) from None
    panels = loaded if isinstance(loaded, (tuple, list)) else (loaded,)
    masks = []
    for panel in panels:
        if type(panel).__name__ != "bool" or not hasattr(panel, "as_numpy_array"):
            raise DataError(
                f"{path}: not a DIALS mask (a tuple of flex.bool, one per panel)"
            )
        array = np.asarray(panel.as_numpy_array(), dtype=bool)
        if array.ndim != 2:
            raise DataError(
                f"{path}: mask panel of {array.ndim} dimensions, not (rows, columns)"
            )
        masks.append(array)
    if not masks:
        raise DataError(f"{path}: the DIALS mask holds no panel")
    return masks


def write_dials_mask(path, masks):
    """Write bool arrays (one per panel, True = use) as DIALS writes a mask file."""
    from scitbx.array_family import flex

    panels = tuple(flex.bool(np.ascontiguousarray(m, dtype=bool)) for m in masks)
    with open(path, "wb") as handle:
        pickle.dump(panels, handle, pickle.HIGHEST_PROTOCOL)
