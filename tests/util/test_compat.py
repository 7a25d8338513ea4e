"""dials_diffuse.util.compat on whichever DIALS/dxtbx is installed.

Each test checks the behaviour the package relies on, against the installed
DIALS or dxtbx itself, so the same assertions hold on DIALS 3.12 and 3.30.
"""

import msgpack
import numpy as np
import pytest
from dials.array_family import flex
from dials.model.data import Shoebox
from dxtbx.model import Panel

from dials_diffuse import _kernels
from dials_diffuse.util import compat

BBOX = (10, 14, 20, 23, 0, 2)  # x0, x1, y0, y1, z0, z1: 2 x 3 x 4 pixels
SHAPE = (2, 3, 4)


def test_allocate_shoebox_makes_data_mask_and_background():
    shoebox = Shoebox(0, BBOX)
    assert not compat.shoebox_has_data(shoebox)
    compat.allocate_shoebox(shoebox)
    assert compat.shoebox_has_data(shoebox)
    for array in (shoebox.data, shoebox.mask, shoebox.background):
        assert array.all() == SHAPE
        assert not array.as_numpy_array().any()
    assert shoebox.is_consistent()  # what DIALS asserts before writing a table


def test_shoeboxes_with_data_per_row():
    column = flex.shoebox(3)
    for i in range(3):
        column[i] = Shoebox(0, BBOX)
    compat.allocate_shoebox(column[1])
    allocated = compat.shoeboxes_with_data(column)
    assert allocated.dtype == bool
    assert allocated.tolist() == [False, True, False]


def test_set_shoebox_mask_round_trips_through_a_reflection_table():
    """The codes survive DIALS's own serialisation, read by our kernel."""
    shoebox = Shoebox(0, BBOX)
    compat.allocate_shoebox(shoebox)
    codes = np.arange(24, dtype=np.int64).reshape(SHAPE) % 8
    compat.set_shoebox_mask(shoebox, codes)
    np.testing.assert_array_equal(shoebox.mask.as_numpy_array(), codes)
    table = flex.reflection_table()
    table["shoebox"] = flex.shoebox([shoebox])
    document = msgpack.unpackb(table.as_msgpack(), raw=False, strict_map_key=False)
    _, (_, blob) = document[2]["data"]["shoebox"]
    blob = np.frombuffer(blob, dtype=np.uint8)
    _, _, offset, pixels, mask_bytes = _kernels.shoebox_layout(blob, 1)
    assert pixels[0] == 24
    # The mask follows the float32 data: one int32 (DIALS < 3.29) or one byte each.
    start = int(offset[0]) + 24 * 4
    dtype = {4: "<i4", 1: "u1"}[int(mask_bytes[0])]
    stored = np.frombuffer(blob[start : start + 24 * int(mask_bytes[0])], dtype=dtype)
    np.testing.assert_array_equal(stored, codes.ravel())


def test_set_shoebox_mask_rejects_codes_out_of_a_byte():
    shoebox = Shoebox(0, BBOX)
    compat.allocate_shoebox(shoebox)
    with pytest.raises(ValueError, match="0-255"):
        compat.set_shoebox_mask(shoebox, np.full(SHAPE, 256))


def _dxtbx_mask(panel, values):
    data = flex.int(np.asarray(values, dtype=np.int32))
    data.reshape(flex.grid(1, len(values)))
    return panel.get_trusted_range_mask(data).as_numpy_array().ravel()


def _panel(low, high, n):
    panel = Panel()
    panel.set_image_size((n, 1))
    panel.set_trusted_range((low, high))
    return panel


def test_within_trusted_range_is_dxtbx_rule():
    values = np.arange(-3, 13)
    panel = _panel(0, 10, values.size)
    expected = _dxtbx_mask(panel, values)
    np.testing.assert_array_equal(compat.within_trusted_range(panel, values), expected)
    # The rule the probe reports is the one dxtbx applies at the ends.
    assert expected[values == 0][0] == expected[values == 10][0]
    assert expected[values == 0][0] == compat.trusted_range_is_inclusive()
    assert expected[(values > 0) & (values < 10)].all()
    assert not expected[(values < 0) | (values > 10)].any()


def test_trusted_range_between_trusts_exactly_the_open_interval():
    low, high = compat.trusted_range_between(-1, 100)
    values = np.arange(-3, 104)
    panel = _panel(low, high, values.size)
    expected = (values > -1) & (values < 100)
    np.testing.assert_array_equal(_dxtbx_mask(panel, values), expected)
    np.testing.assert_array_equal(compat.within_trusted_range(panel, values), expected)
