"""Read frames of a dxtbx imageset as numpy arrays, with the DIALS mask.

Errors while reading (a truncated or corrupt image file) become a
`UserError` naming the file and frame.
"""

import numpy as np

from dials_diffuse.util.errors import UserError


def frame_file(imageset, index):
    """The file that holds frame `index` (0-based within the imageset)."""
    try:
        return imageset.get_path(index)
    except Exception:
        return "<unknown file>"


def read_frame(imageset, index):
    """Raw pixel data and validity mask of every panel of one frame.

    Parameters
    ----------
    imageset : dxtbx ImageSet or ImageSequence
    index : int
        0-based index within the imageset.

    Returns
    -------
    data : list of ndarray
        One (ny, nx) array per panel, in the detector's own dtype (int32 for
        most counting detectors, float64 where dxtbx gives doubles).
    mask : list of ndarray of bool
        True where the pixel is valid: the format's static mask (gaps, bad
        pixels), any external mask, and the panel's trusted range.
    """
    try:
        raw = imageset.get_raw_data(index)
        mask = imageset.get_mask(index)
    except Exception as error:
        message = str(error).strip().splitlines()
        reason = message[-1] if message else type(error).__name__
        raise UserError(
            f"{frame_file(imageset, index)}: cannot read image {index + 1} ({reason})"
        ) from error
    if not isinstance(raw, tuple):
        raw = (raw,)
    data = [np.ascontiguousarray(panel.as_numpy_array()) for panel in raw]
    valid = [np.ascontiguousarray(panel.as_numpy_array(), dtype=bool) for panel in mask]
    return data, valid
