"""frame_statistics on a series of many data files: bounded open files, flat memory."""

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from tests.eiger_files import write_series

N_FILES = 600
LIMIT = 256  # descriptors: far fewer than the data files


@pytest.fixture(scope="session")
def many_files_series(tmp_path_factory):
    """600 data files of one 8 x 6 frame each, frame i filled with i."""
    directory = tmp_path_factory.mktemp("many_files")
    frames = np.broadcast_to(
        np.arange(N_FILES, dtype=np.uint16)[:, None, None], (N_FILES, 8, 6)
    ).copy()
    return write_series(directory, frames, per_file=1, stem="many"), frames


def test_many_data_files_under_a_low_open_file_limit(many_files_series, tmp_path):
    master, frames = many_files_series
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT}))
        from dials_diffuse.command_line import frame_statistics
        from dials_diffuse.images.eiger import MAX_OPEN_DATA_FILES, EigerMasterSource

        source = EigerMasterSource({str(master)!r})
        assert source.n_frames == {N_FILES}
        assert len(source._files) <= MAX_OPEN_DATA_FILES
        source.close()
        sys.exit(frame_statistics.run([{str(master)!r}, "nproc=2",
            "output.html=None", "output.plot=None"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    series = pd.read_csv(tmp_path / "frame_statistics.csv")
    np.testing.assert_array_equal(series["sum"], frames.sum(axis=(1, 2)))


def test_reading_every_frame_keeps_few_files_open(many_files_series):
    """At most MAX_OPEN_DATA_FILES files (and their HDF5 caches) open: memory stays flat."""
    from dials_diffuse.images.eiger import MAX_OPEN_DATA_FILES, EigerMasterSource
    from dials_diffuse.images.source import Chunk

    master, frames = many_files_series
    source = EigerMasterSource(master)
    try:
        for first in range(0, N_FILES, 50):
            chunk = Chunk(0, slice(first, first + 50), slice(0, 8), slice(0, 6))
            data, _ = source.read(chunk)
            np.testing.assert_array_equal(data, frames[first : first + 50])
            assert len(source._files) <= MAX_OPEN_DATA_FILES
    finally:
        source.close()
