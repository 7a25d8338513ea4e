"""The program runner: help, parameters, errors, logging, JSON summary, atomic outputs."""

import json

import pytest

from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

PHIL = """
scale = 2.0
  .type = float(value_min=0)
  .help = "Factor to multiply by."
repeat = 1
  .type = int(value_min=1)
  .help = "How many lines to write."
fail = False
  .type = bool
  .help = "Fail after writing half the output (to test atomic writes)."
output {
  text = doubled.txt
    .type = path
    .help = "Where the result goes."
}
"""


def double(params, inputs, run):
    with run.write(params.output.text, "result") as path:
        with open(path, "w") as handle:
            for _ in range(params.repeat):
                handle.write(f"{params.scale * 2}\n")
            if params.fail:
                handle.flush()
                raise UserError("asked to fail")
    run.results["value"] = params.scale * 2


program = Program(
    name="double",
    phil=PHIL,
    help="Double a number.\n\nExample:\n  dials.diffuse.double scale=3",
    main=double,
    parallel_work=True,
)


def test_runs_writes_log_output_and_json(in_tmp_path, capsys):
    assert program.run(["scale=3", "output.json=summary.json"]) == 0
    assert (in_tmp_path / "doubled.txt").read_text() == "6.0\n"
    log = (in_tmp_path / "dials.diffuse.double.log").read_text()
    assert "dials-diffuse" in log and "DIALS" in log
    assert "scale = 3" in log  # the non-default parameters
    summary = json.loads((in_tmp_path / "summary.json").read_text())
    assert summary["results"] == {"value": 6.0}
    assert summary["outputs"] == {"result": "doubled.txt"}
    assert summary["parameters"]["scale"] == 3.0
    assert summary["parameters"]["nproc"] == "Auto"
    assert summary["exit_code"] == 0
    assert summary["timings"]["total"] > 0


def test_help_and_config(capsys):
    assert program.run(["-h"]) == 0
    out = capsys.readouterr().out
    assert "Double a number" in out and "Example" in out
    assert program.run(["-c"]) == 0
    out = capsys.readouterr().out
    for text in (
        "Factor to multiply by",
        "output.json",
        "A machine-readable",
        "nproc",
        "dask",
    ):
        assert text.split(".")[-1] in out


def test_unknown_parameter_suggests_near_matches(in_tmp_path, capsys):
    assert program.run(["scael=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown parameter 'scael'" in err and "did you mean scale" in err
    assert not (in_tmp_path / "doubled.txt").exists()


def test_bad_value_is_a_usage_or_user_error(in_tmp_path, capsys):
    assert program.run(["repeat=abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    assert program.run(["scale=-1"]) == 1


def test_unknown_option_is_a_usage_error(capsys):
    assert program.run(["--frobnicate"]) == 2


def test_missing_input_file_one_line(in_tmp_path, capsys):
    assert program.run(["nonexistent.expt"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "dials.diffuse.double: error: nonexistent.expt: no such file"


def test_no_traceback_without_v_but_with_v(in_tmp_path, capsys):
    assert program.run(["fail=True"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert program.run(["fail=True", "-v"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" in captured.out


def test_failure_leaves_no_partial_output(in_tmp_path):
    (in_tmp_path / "doubled.txt").write_text("previous complete result\n")
    assert program.run(["fail=True", "repeat=1000"]) == 1
    assert (in_tmp_path / "doubled.txt").read_text() == "previous complete result\n"
    assert [p.name for p in in_tmp_path.iterdir() if "partial" in p.name] == []


def test_failure_summary_records_the_error(in_tmp_path):
    assert program.run(["fail=True", "output.json=s.json"]) == 1
    summary = json.loads((in_tmp_path / "s.json").read_text())
    assert summary["exit_code"] == 1 and summary["error"] == "asked to fail"


def test_never_overwrites_an_input(in_tmp_path, dials_centroid, capsys):
    expt = in_tmp_path / "indexed.expt"
    expt.write_bytes((dials_centroid / "indexed.expt").read_bytes())
    before = expt.read_bytes()
    assert program.run([str(expt), f"output.text={expt}"]) == 1
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert expt.read_bytes() == before


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("corrupt.expt", b"{ this is not json", "not a readable experiment list"),
        ("corrupt.refl", b"\x00\x01garbage", "not a readable reflection file"),
        ("empty.cbf", b"", "file is empty"),
        (
            "noise.img",
            b"random bytes that no format understands",
            "not an image format",
        ),
    ],
)
def test_corrupt_inputs_one_line(in_tmp_path, capsys, name, content, message):
    (in_tmp_path / name).write_bytes(content)
    assert program.run([name]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert name in err and message in err


def test_reads_images_may_depend_on_the_files(in_tmp_path, dials_centroid):
    """An experiment list without its images loads when the callable says so."""
    seen = []

    def reads_images(files):
        seen.append(list(files))
        return not any(name.endswith(".refl") for name in files)

    def count(params, inputs, run):
        run.results["experiments"] = len(inputs.experiments)

    counting = Program(
        name="count",
        phil=PHIL,
        help="Count.\n\nExample:\n  dials.diffuse.count x.expt",
        main=count,
        reads_images=reads_images,
    )
    data = dials_centroid
    expt, refl = str(data / "indexed.expt"), str(data / "indexed.refl")
    assert counting.run([expt, refl, "output.json=a.json"]) == 0
    assert json.loads((in_tmp_path / "a.json").read_text())["results"] == {
        "experiments": 1
    }
    assert counting.run([expt]) == 1  # its images are not there
    assert seen == [[expt, refl], [expt]]


def test_nproc_auto_means_every_core():
    from libtbx import Auto

    from dials_diffuse.util.parallel import resolve_nproc

    assert resolve_nproc(Auto) == resolve_nproc(None) >= 1
    assert resolve_nproc(3) == 3
