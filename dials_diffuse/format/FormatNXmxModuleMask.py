"""dxtbx Format class for NXmx files whose pixel mask is cut into narrow modules.

An NXmx file of a multi-module detector (JUNGFRAU, EIGER with modules as
separate panels, the simulator's ``rotation.modules=4,2``) stores one 2-D
``pixel_mask`` over the whole frame and one ``NXdetector_module`` per panel
(``data_origin``/``data_size``: the panel's rows and columns of the frame).
dxtbx 3.11 (DIALS 3.12) gives each module's slice of that mask to flumpy as a
numpy view; a module narrower than the frame is a non-contiguous view, which
flumpy refuses ("numpy array is non-c-contiguous"), so ``dials.import``
fails on the file. dxtbx 3.12 and later copy each slice first (dxtbx
PR #538) and read such files themselves.

This class is registered as a child of dxtbx's `FormatNXmx` (setup.py) and
claims exactly the files that fail: only where the installed dxtbx has the
fault (`dials_diffuse.util.compat.nexus_module_masks_fail`), and only files
whose 2-D pixel mask has a module narrower than the frame. Everything is
`FormatNXmx`'s own reading; the one difference is that the detector's pixel
mask hands out contiguous copies of its slices, so every panel gets its part
of the mask (gaps, dead and hot pixels) as on current DIALS.
"""

import functools

import h5py
import numpy as np
from dxtbx.format.FormatNXmx import FormatNXmx

from dials_diffuse.util.compat import nexus_module_masks_fail


def _children(group, nx_class):
    """The subgroups of `group` whose NX_class is `nx_class`."""
    found = []
    for child in group.values():
        if not isinstance(child, h5py.Group):
            continue
        value = child.attrs.get("NX_class")
        if isinstance(value, bytes):
            value = value.decode()
        if value == nx_class:
            found.append(child)
    return found


def has_narrow_module_masks(handle):
    """Whether an NXmx file has a 2-D pixel mask and a module narrower than it.

    `handle` is the open h5py file. The first NXdetector of the first
    NXinstrument of the first NXentry is looked at, as `FormatNXmx` does.
    """
    for entry in _children(handle, "NXentry")[:1]:
        for instrument in _children(entry, "NXinstrument")[:1]:
            for detector in _children(instrument, "NXdetector")[:1]:
                mask = detector.get("pixel_mask")
                if not isinstance(mask, h5py.Dataset) or mask.ndim != 2:
                    return False
                for module in _children(detector, "NXdetector_module"):
                    size = np.ravel(module["data_size"][()])
                    if len(size) == 2 and size[1] < mask.shape[1] and size[0] > 1:
                        return True
    return False


class _ContiguousSlices(np.ndarray):
    """A numpy array whose slices are C-contiguous copies (as flumpy needs)."""

    def __getitem__(self, key):
        return np.ascontiguousarray(np.asarray(self)[key])


@functools.cache
def _with_contiguous_mask_slices(detector_class):
    """A subclass of dxtbx's NXdetector whose ``pixel_mask`` slices are contiguous.

    The mask is still read only when asked for (a cached property, as in
    dxtbx), so reading frames costs nothing more.
    """

    class NXdetectorModuleMask(detector_class):
        @functools.cached_property
        def pixel_mask(self):
            mask = detector_class.pixel_mask.func(self)
            return None if mask is None else mask.view(_ContiguousSlices)

    return NXdetectorModuleMask


class FormatNXmxModuleMask(FormatNXmx):
    """NXmx with a pixel mask over modules narrower than the frame, on dxtbx 3.11."""

    @staticmethod
    def understand(image_file):
        if not nexus_module_masks_fail():
            return False
        with h5py.File(image_file, "r") as handle:
            return has_narrow_module_masks(handle)

    def _get_nxmx(self, fh):
        nxmx = super()._get_nxmx(fh)
        for entry in nxmx.entries[:1]:
            for instrument in entry.instruments[:1]:
                for detector in instrument.detectors[:1]:
                    detector.__class__ = _with_contiguous_mask_slices(type(detector))
        return nxmx
