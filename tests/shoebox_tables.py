"""Synthetic reflection tables with real `flex.shoebox` data, for known-truth tests.

Each shoebox is filled from numpy: a foreground block in the middle (mask
Valid|Foreground) whose values come from one distribution, background around
it (Valid|Background) from another, and optionally some invalid pixels
(mask Background only). The values we put in are returned, so that a test
knows the exact histogram.
"""

import numpy as np

from dials_diffuse.util.compat import allocate_shoebox, set_shoebox_mask

VALID, BACKGROUND, FOREGROUND = 1, 2, 4


def make_shoebox(panel, bbox, data, mask):
    """A DIALS Shoebox with `data` (float) and `mask` (int) of shape (z, y, x).

    The mask is stored in the type the installed DIALS uses (int before 3.29,
    one byte since).
    """
    from dials.array_family import flex
    from dials.model.data import Shoebox

    shoebox = Shoebox(panel, bbox)
    allocate_shoebox(shoebox)
    values = flex.float(np.ascontiguousarray(data, dtype=np.float32).ravel())
    values.reshape(shoebox.data.accessor())
    shoebox.data = values
    set_shoebox_mask(shoebox, mask)
    return shoebox


def shoebox_table(foreground, background, ids, invalid_fraction=0.0, seed=0):
    """A reflection table with one 5 x 7 x 7 shoebox per row.

    Parameters
    ----------
    foreground, background : list of ndarray
        Per row: 3*3*3 = 27 foreground values and 5*7*7 - 27 = 218 background values.
    ids : sequence of int
        Experiment id of each row.
    invalid_fraction : float
        Fraction of background pixels marked invalid (mask without Valid).

    Returns
    -------
    table : flex.reflection_table
        Columns shoebox, bbox, panel, id, miller_index, flags (indexed).
    truth : dict
        Per row lists of the valid foreground, valid background and invalid values.
    """
    from dials.array_family import flex

    rng = np.random.default_rng(seed)
    shape = (5, 7, 7)
    core = np.zeros(shape, dtype=bool)
    core[1:4, 2:5, 2:5] = True
    shoeboxes = flex.shoebox()
    truth = {"foreground": [], "background": [], "invalid": []}
    for row, (fg, bg) in enumerate(zip(foreground, background)):
        data = np.empty(shape, dtype=np.float32)
        data[core] = fg
        data[~core] = bg
        mask = np.where(core, VALID | FOREGROUND, VALID | BACKGROUND).astype(np.int32)
        invalid = (~core) & (rng.random(shape) < invalid_fraction)
        mask[invalid] = BACKGROUND
        x0, y0, z0 = 10 * row, 20, row % 3
        bbox = (x0, x0 + 7, y0, y0 + 7, z0, z0 + 5)
        shoeboxes.append(make_shoebox(0, bbox, data, mask))
        truth["foreground"].append(data[core])
        truth["background"].append(data[~core & ~invalid])
        truth["invalid"].append(data[invalid])
    table = flex.reflection_table()
    table["shoebox"] = shoeboxes
    table["bbox"] = shoeboxes.bounding_boxes()
    table["panel"] = flex.size_t(len(ids), 0)
    table["id"] = flex.int(list(ids))
    table["miller_index"] = flex.miller_index([(i, 0, 0) for i in range(len(ids))])
    table.set_flags(flex.bool(len(ids), True), table.flags.indexed)
    return table, truth


def notched_table(n=600, experiments=3, seed=21):
    """Poisson(25) foregrounds, Poisson(3) backgrounds, `n` rows spread over
    `experiments`; experiment 1 has a notch at 23 (its counts moved to 24).

    Returns the table, the truth of `shoebox_table` and the id of each row.
    """
    rng = np.random.default_rng(seed)
    ids = [i % experiments for i in range(n)]
    foreground = []
    for i in range(n):
        values = rng.poisson(25, 27)
        if ids[i] == 1:
            values[values == 23] += 1
        foreground.append(values)
    background = [rng.poisson(3, 218) for _ in range(n)]
    table, truth = shoebox_table(foreground, background, ids, invalid_fraction=0.05)
    return table, truth, np.array(ids)
