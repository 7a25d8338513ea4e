"""Reflection files the installed DIALS cannot read get a message saying why."""

import h5py
import numpy as np
import pytest

from dials_diffuse.command_line import pixel_histogram
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.inputs import load_reflections


def test_hdf5_reflection_file_is_named_as_such(in_tmp_path, capsys):
    # An HDF5 file where a .refl is expected (DIALS's HDF5 reflection files,
    # dials/dials#2677, hold columns as datasets of a group per table; this
    # one is not a complete table, so no DIALS reads it): the message says
    # what the file is and what to do.
    with h5py.File("strong.refl", "w") as handle:
        group = handle.create_group("dials/processing/group_0")
        group["xyzobs.px.value"] = np.zeros((3, 3))
        group.attrs["num_reflections"] = 3
    with pytest.raises(UserError) as error:
        load_reflections("strong.refl")
    assert "HDF5 format of newer DIALS" in str(error.value)
    assert "as_msgpack_file" in str(error.value)
    assert pixel_histogram.run(["strong.refl"]) == 1
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1
    assert "error: strong.refl: a reflection file in the HDF5" in message[0]
    assert "load key" not in message[0]


def test_other_unreadable_reflection_files_keep_the_reason(in_tmp_path, capsys):
    with open("junk.refl", "wb") as handle:
        handle.write(b"Hjunk" * 20)
    assert pixel_histogram.run(["junk.refl"]) == 1
    message = capsys.readouterr().err.strip()
    assert "error: junk.refl: not a readable reflection file" in message
