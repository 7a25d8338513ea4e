"""Programs run in one process: ``run(args, return_results=True)``.

The results returned are those the same run writes to its JSON summary; a
failure is raised instead of returned as an exit code.
"""

import json

import pytest

from dials_diffuse.command_line import find_peaks, frame_statistics
from dials_diffuse.util.errors import DataError, UsageError, UserError
from dials_diffuse.util.program import _json_default


def as_json(results):
    """The results as the JSON summary holds them (numpy values as lists...)."""
    return json.loads(json.dumps(results, default=_json_default))


def test_diffuse_step_returns_its_summary_results(in_tmp_path, simulated_rotation):
    expt = str(simulated_rotation["truth_expt"])
    results = find_peaks.run(
        [expt, "count_threshold=30", "output.json=find_peaks.json"],
        return_results=True,
    )
    summary = json.loads((in_tmp_path / "find_peaks.json").read_text())
    assert summary["exit_code"] == 0
    assert results and as_json(results) == summary["results"]
    assert (in_tmp_path / "peaks.nxs").exists()


def test_frame_statistics_returns_its_summary_results(
    in_tmp_path, simulated_eiger_series
):
    master = str(simulated_eiger_series["master"])
    results = frame_statistics.run(
        [master, "image_range=1,0", "output.json=frames.json"], return_results=True
    )
    summary = json.loads((in_tmp_path / "frames.json").read_text())
    assert as_json(results) == summary["results"]
    assert results["frames"] == 300 and results["last_image"] == 300


def test_failures_are_raised_not_returned(in_tmp_path, simulated_rotation, capsys):
    expt = str(simulated_rotation["truth_expt"])
    with pytest.raises(UserError, match="missing.expt: no such file"):
        find_peaks.run(["missing.expt", "output.json=failed.json"], True)
    summary = json.loads((in_tmp_path / "failed.json").read_text())
    assert summary["exit_code"] == 1 and "no such file" in summary["error"]
    with pytest.raises(UsageError, match="unknown parameter 'count_treshold'"):
        find_peaks.run([expt, "count_treshold=30"], return_results=True)
    with pytest.raises(UsageError, match="unknown option --frobnicate"):
        find_peaks.run([expt, "--frobnicate"], return_results=True)
    with pytest.raises(DataError, match="not a readable YAML file"):
        (in_tmp_path / "broken.yaml").write_text("in: [unclosed")
        frame_statistics.run(["broken.yaml"], return_results=True)
    # As from the command line: one line each, no traceback.
    assert "Traceback" not in capsys.readouterr().err
    # Without return_results, the exit code as before.
    assert find_peaks.run(["missing.expt"]) == 1
    assert find_peaks.run(["-h"]) == 0
    assert find_peaks.run(["-h"], return_results=True) is None
