"""The binned background file background.nxs, written and read.

Written by ``dials.diffuse.bin_image_series``, read by ``correct
background=`` (mdx2's binned image series)::

    /entry/binned_image_series   NXdata; signal = "rate", axes = ["phi", "iy", "ix"]
      rate                       (phi blocks, row blocks, column blocks) mean
                                 count rate, counts/s per pixel
      phi, iy, ix                block centres: mean rotation angle (degrees),
                                 mean 0-based row and column index
"""

import h5py
import numpy as np

from dials_diffuse.algorithms.diffuse.background import BinnedBackground
from dials_diffuse.io.tables import open_nexus_for_writing
from dials_diffuse.util.errors import DataError

GROUP = "entry/binned_image_series"


def write_background(path, background):
    """Write a BinnedBackground as a new background.nxs at `path`."""
    with open_nexus_for_writing(path) as handle:
        handle.attrs["default"] = "entry"
        handle["entry"].attrs["default"] = "binned_image_series"
        group = handle.create_group(GROUP)
        group.attrs["NX_class"] = "NXdata"
        group.attrs["signal"] = "rate"
        group.attrs["axes"] = np.array(["phi", "iy", "ix"], dtype=h5py.string_dtype())
        for index, name in enumerate(("phi", "iy", "ix")):
            group.attrs[f"{name}_indices"] = index
            group.create_dataset(name, data=getattr(background, name))
        group.create_dataset("rate", data=background.rate)
        group["rate"].attrs["units"] = "counts/s per pixel"


def read_background(path):
    """The BinnedBackground of a background.nxs.

    Raises
    ------
    DataError
        Naming the file, when it is not one.
    """
    try:
        with h5py.File(path, "r") as handle:
            group = handle[GROUP]
            return BinnedBackground(
                *(group[name][()] for name in ("phi", "iy", "ix", "rate"))
            )
    except (OSError, KeyError) as error:
        raise DataError(
            f"{path}: not a binned background (no /{GROUP}: {error})"
        ) from error
