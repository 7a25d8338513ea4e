"""DIALS mask files: what DIALS writes reads back; a crafted pickle never runs."""

import os
import pickle

import numpy as np
import pytest
from scitbx.array_family import flex

from dials_diffuse.io.dials_mask import read_dials_mask, write_dials_mask
from dials_diffuse.util.errors import DataError


class RunsCode:
    """A pickle payload that would create a file when loaded by pickle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_masks_as_dials_writes_them_read_back(tmp_path):
    first = np.zeros((5, 7), dtype=bool)
    first[1:3, 4] = True
    second = np.ones((5, 7), dtype=bool)
    write_dials_mask(tmp_path / "two.mask", [first, second])
    back = read_dials_mask(tmp_path / "two.mask")
    assert [m.shape for m in back] == [(5, 7), (5, 7)]
    np.testing.assert_array_equal(back[0], first)
    np.testing.assert_array_equal(back[1], second)
    # dials.generate_mask (3.12): pickle.dump(tuple of flex.bool) at the default
    # protocol; xia2 and current DIALS: HIGHEST_PROTOCOL; also protocol 2 and a
    # bare flex.bool.
    panel = flex.bool(flex.grid(5, 7), False)
    panel[(1, 4)] = True
    for protocol in (2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
        for content in ((panel,), [panel], panel):
            path = tmp_path / f"p{protocol}.mask"
            path.write_bytes(pickle.dumps(content, protocol))
            (mask,) = read_dials_mask(path)
            assert mask.shape == (5, 7) and mask.sum() == 1 and mask[1, 4]


def test_a_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.mask"
    crafted.write_bytes(pickle.dumps((RunsCode(marker),)))
    # The payload does run under plain pickle (the test can fail).
    pickle.loads(crafted.read_bytes())
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DataError, match=r"crafted\.mask: refused.*posix\.system"):
        read_dials_mask(crafted)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, problem",
    [
        (pickle.dumps(("not a mask",)), "not a DIALS mask"),
        (pickle.dumps(()), "holds no panel"),
        (b"junk", "not a readable DIALS mask"),
        (pickle.dumps((flex.bool(flex.grid(2, 3, 4), True),)), "3 dimensions"),
        (pickle.dumps((flex.int(flex.grid(2, 3), 1),)), "refused"),
    ],
)
def test_other_content_is_a_one_line_error(tmp_path, content, problem):
    path = tmp_path / "bad.mask"
    path.write_bytes(content)
    with pytest.raises(DataError, match=problem) as error:
        read_dials_mask(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
