"""The binned background file background.nxs, written and read.

Written by ``dials.diffuse.bin_image_series``, read by ``correct
background=`` (mdx2's binned image series)::

    /entry/binned_image_series   NXdata; signal = "rate", axes = ["phi", "iy", "ix"]
      rate                       (phi blocks, row blocks, column blocks) mean
                                 count rate, counts/s per pixel
      phi, iy, ix                block centres: mean rotation angle (degrees),
                                 mean 0-based row and column index

A multi-panel detector's background has one such NXdata group per panel,
``/entry/binned_image_series/panel_00``, ``panel_01``, ... (iy, ix within the
panel), under an NXcollection with the attribute ``panels``.
"""

import h5py
import numpy as np

from dials_diffuse.algorithms.diffuse.background import (
    BinnedBackground,
    PanelBackgrounds,
)
from dials_diffuse.io.tables import open_nexus_for_writing
from dials_diffuse.util.errors import DataError

GROUP = "entry/binned_image_series"


def _write_group(group, background):
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = "rate"
    group.attrs["axes"] = np.array(["phi", "iy", "ix"], dtype=h5py.string_dtype())
    for index, name in enumerate(("phi", "iy", "ix")):
        group.attrs[f"{name}_indices"] = index
        group.create_dataset(name, data=getattr(background, name))
    group.create_dataset("rate", data=background.rate)
    group["rate"].attrs["units"] = "counts/s per pixel"


def write_background(path, background):
    """Write a BinnedBackground (or PanelBackgrounds) as a new background.nxs at `path`."""
    with open_nexus_for_writing(path) as handle:
        handle.attrs["default"] = "entry"
        handle["entry"].attrs["default"] = "binned_image_series"
        group = handle.create_group(GROUP)
        if isinstance(background, PanelBackgrounds):
            group.attrs["NX_class"] = "NXcollection"
            group.attrs["panels"] = len(background)
            group.attrs["default"] = "panel_00"
            for number, panel in enumerate(background):
                _write_group(group.create_group(f"panel_{number:02d}"), panel)
        else:
            _write_group(group, background)


def read_background(path):
    """The BinnedBackground (PanelBackgrounds for several panels) of a background.nxs.

    Raises
    ------
    DataError
        Naming the file, when it is not one.
    """

    def binned(group):
        return BinnedBackground(
            *(group[name][()] for name in ("phi", "iy", "ix", "rate"))
        )

    try:
        with h5py.File(path, "r") as handle:
            group = handle[GROUP]
            if "panels" not in group.attrs:
                return binned(group)
            return PanelBackgrounds(
                binned(group[f"panel_{number:02d}"])
                for number in range(int(group.attrs["panels"]))
            )
    except (OSError, KeyError) as error:
        raise DataError(
            f"{path}: not a binned background (no /{GROUP}: {error})"
        ) from error
