"""The DIALS and dxtbx APIs that differ between DIALS 3.12 and current DIALS.

Supported: DIALS 3.12 (Debian 12: DIALS 3.12.1 with dxtbx 3.11.2) to DIALS
3.30 (dxtbx 3.29, numpy 2). Where the two differ, one function here asks the
installed DIALS/dxtbx which behaviour it has (by feature, never by version
number) and the rest of the package calls that function; no other code
branches on the DIALS version.

- Shoebox allocation: DIALS 3.29 (PR #3148) replaced ``Shoebox.allocate()``
  and ``is_allocated()`` by ``allocate_data()`` + ``allocate_background()``
  and ``is_data_allocated()``, on single shoeboxes and on ``flex.shoebox``.
- Shoebox mask type: DIALS 3.29 (PR #3119) keeps mask codes as one byte
  (``flex.uint8``) instead of ``flex.int``.
- Trusted range: dxtbx 3.12 (PR #536) made ``Panel.trusted_range`` inclusive
  (low <= v <= high); dxtbx 3.11 and earlier mask with low < v < high.
- NXmx pixel mask of several modules: dxtbx 3.11 cuts the 2-D ``pixel_mask``
  into one non-contiguous numpy view per module and hands it to flumpy,
  which refuses it ("numpy array is non-c-contiguous") for every module
  narrower than the mask, so ``dials.import`` fails on such files; dxtbx 3.12
  (PR #538) copies each slice first. `nexus_module_masks_fail` asks;
  `dials_diffuse.format.FormatNXmxModuleMask` reads those files.

Other changes since DIALS 3.12 need nothing here: ``dials.index`` on several
sweeps needs ``joint_indexing=True`` given explicitly since DIALS 3.27
(PR #3051), which 3.12 accepts too; shoeboxes with one-byte masks are
serialised with a record flag of 2 instead of 1, which the shoebox kernels
read either way (``cpp/shoebox.h``).
"""

import functools

import numpy as np


def allocate_shoebox(shoebox):
    """Allocate the data, mask and background arrays of a DIALS `Shoebox`.

    Sized from its bounding box, filled with zeros; all three are needed
    before a reflection table holding the shoebox can be written.
    """
    if hasattr(shoebox, "allocate_data"):  # DIALS >= 3.29
        shoebox.allocate_data()
        shoebox.allocate_background()
    else:
        shoebox.allocate()


def shoebox_has_data(shoebox):
    """Whether a DIALS `Shoebox` holds pixel data (data and mask allocated)."""
    if hasattr(shoebox, "is_data_allocated"):  # DIALS >= 3.29
        return bool(shoebox.is_data_allocated())
    return bool(shoebox.is_allocated())


def shoeboxes_with_data(shoeboxes):
    """numpy bool array: which shoeboxes of a `flex.shoebox` column hold data."""
    if hasattr(shoeboxes, "is_data_allocated"):  # DIALS >= 3.29
        allocated = shoeboxes.is_data_allocated()
    else:
        allocated = shoeboxes.is_allocated()
    return allocated.as_numpy_array().astype(bool)


def set_shoebox_mask(shoebox, codes):
    """Set a shoebox's mask from an integer array of DIALS MaskCode bits.

    `codes` has the shoebox's data shape (z, y, x); it is stored in the mask
    type the installed DIALS uses (``flex.int`` before 3.29, ``flex.uint8``
    since). Raises ValueError for a code outside 0-255.
    """
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() > 255):
        raise ValueError("shoebox mask codes must be within 0-255")
    mask_type = type(shoebox.mask)
    dtype = mask_type().as_numpy_array().dtype
    mask = mask_type(np.ascontiguousarray(codes, dtype=dtype).ravel())
    mask.reshape(shoebox.data.accessor())
    shoebox.mask = mask


@functools.cache
def trusted_range_is_inclusive():
    """Whether the installed dxtbx trusts values equal to the range's ends.

    dxtbx 3.11 and earlier treat ``trusted_range`` as exclusive
    (low < v < high), dxtbx 3.12 and later as inclusive (low <= v <= high).
    Asked of dxtbx itself, with a one-pixel panel.
    """
    from dxtbx.model import Panel
    from scitbx.array_family import flex

    panel = Panel()
    panel.set_image_size((1, 1))
    panel.set_trusted_range((0, 10))
    return bool(panel.get_trusted_range_mask(flex.int(flex.grid(1, 1), 0))[0])


def within_trusted_range(panel, values):
    """numpy bool array: `values` inside the panel's trusted range, as dxtbx decides."""
    low, high = panel.get_trusted_range()
    inclusive = trusted_range_is_inclusive()
    valid = (np.greater_equal if inclusive else np.greater)(values, low)
    valid &= (np.less_equal if inclusive else np.less)(values, high)
    return valid


def trusted_range_between(low, high):
    """The dxtbx trusted range that trusts exactly the integers low < v < high.

    For integer pixel data with markers at `low` and `high` (e.g. -1 for a
    masked pixel, the count cutoff for an overload), on either rule.
    """
    return (low + 1, high - 1) if trusted_range_is_inclusive() else (low, high)


@functools.cache
def nexus_module_masks_fail():
    """Whether the installed dxtbx fails on an NXmx pixel mask cut into modules.

    dxtbx 3.11 (DIALS 3.12) passes each module's slice of the 2-D
    ``pixel_mask`` to flumpy as a non-contiguous view, which flumpy refuses
    for a module narrower than the mask; dxtbx 3.12 and later copy the slice.
    Asked of ``dxtbx.nexus.get_static_mask`` itself, with a 2 x 2 mask cut
    into two 2 x 1 modules.
    """
    from types import SimpleNamespace

    import dxtbx.nexus

    module = SimpleNamespace(data_origin=(0, 0), data_size=(2, 1))
    detector = SimpleNamespace(
        pixel_mask=np.zeros((2, 2), dtype=np.int32),
        modules=[module, SimpleNamespace(data_origin=(0, 1), data_size=(2, 1))],
    )
    try:
        dxtbx.nexus.get_static_mask(detector)
    except ValueError:
        return True
    return False
