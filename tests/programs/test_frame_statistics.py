"""dials.diffuse.frame_statistics end to end: files, truth, bad input, config.yaml, Redis."""

import json
import os
import re
import shutil
import socket
import subprocess
import time

import h5py
import numpy as np
import pandas as pd
import pytest

from dials_diffuse.command_line import frame_statistics
from tests.eiger_files import drifting_series, real_master, write_series
from tests.helpers import console_script

OUTPUTS = (
    "frame_statistics.csv",
    "frame_statistics_summary.csv",
    "frame_statistics.html",
    "frame_statistics.png",
)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A drifting synthetic series in two data files, with its frames."""
    directory = tmp_path_factory.mktemp("series")
    frames, _ = drifting_series(n_frames=60, shape=(32, 24))
    frames[:, 3, 4] = 65535  # a gap value in every frame
    master = write_series(directory, frames, 25, stem="drift", bit_depth=16)
    return master, frames


def numpy_sums(frames, low, high):
    use = (frames >= low) & (frames <= high) & (frames < 65535)
    return np.where(use, frames, 0).sum(axis=(1, 2)).astype(float)


def test_outputs_against_truth(in_tmp_path, series):
    master, frames = series
    code = frame_statistics.run(
        [
            str(master),
            "low=2",
            "high=60",
            "image_range=10,40",
            "output.json=s.json",
            "nproc=2",
        ]
    )
    assert code == 0
    for name in OUTPUTS:
        assert (in_tmp_path / name).stat().st_size > 0
    table = pd.read_csv("frame_statistics.csv")
    assert list(table["image"]) == list(range(10, 41))
    np.testing.assert_array_equal(table["sum"], numpy_sums(frames[9:40], 2, 60))
    assert list(table["invalid"]) == [1] * 31
    np.testing.assert_allclose(table["detrended"].mean(), table["sum"].mean())
    stats = pd.read_csv("frame_statistics_summary.csv", index_col=0)
    assert stats.loc["count", "raw"] == 31
    assert stats.loc["mean", "raw"] == pytest.approx(table["sum"].mean())
    raw_cv = table["sum"].std() / table["sum"].mean() * 100
    assert stats.loc["CV%", "raw"] == pytest.approx(raw_cv)
    summary = json.loads((in_tmp_path / "s.json").read_text())
    assert summary["results"]["frames"] == 31
    assert summary["results"]["statistics"]["raw"]["CV%"] == pytest.approx(raw_cv)
    html = (in_tmp_path / "frame_statistics.html").read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html  # plotly.js embedded
    # Five SVG line traces (plus one in plotly's template): no WebGL needed.
    assert len(re.findall(r'"type":\s*"scatter"', html)) >= 5
    assert (in_tmp_path / "frame_statistics.png").read_bytes()[
        :8
    ] == b"\x89PNG\r\n\x1a\n"
    log = (in_tmp_path / "dials.diffuse.frame_statistics.log").read_text()
    assert "CV%" in log and "frames/s" in log


def test_dask_local_gives_the_same_sums(in_tmp_path, series):
    master, frames = series
    code = frame_statistics.run(
        [
            str(master),
            "dask.scheduler=local",
            "nproc=2",
            "output.html=None",
            "output.plot=None",
        ]
    )
    assert code == 0
    table = pd.read_csv("frame_statistics.csv")
    np.testing.assert_array_equal(table["sum"], numpy_sums(frames, 0, np.inf))


def test_real_bitshuffle_and_lz4_identical_sums(in_tmp_path, dectris_testfiles):
    sums = {}
    for name in ("eiger2_bslz4", "eiger2_lz4", "eiger2_bslz4_uint32"):
        master = real_master(in_tmp_path, dectris_testfiles, name)
        code = frame_statistics.run(
            [
                str(master),
                f"output.series={name}.csv",
                "output.html=None",
                "output.plot=None",
            ]
        )
        assert code == 0
        sums[name] = pd.read_csv(f"{name}.csv")["sum"].to_numpy()
    assert np.array_equal(sums["eiger2_bslz4"], sums["eiger2_lz4"])
    with h5py.File(
        dectris_testfiles / "datasets_eiger2/"
        "eiger2_simread7_2datafiles_4images_bslz4_uint32_data_000002.h5"
    ) as f:
        truth = f["/entry/data/data"][()].sum(axis=(1, 2))
    assert np.array_equal(sums["eiger2_bslz4_uint32"][2:], truth)


def test_images_through_dxtbx(in_tmp_path, l_cysteine):
    from dxtbx.model.experiment_list import ExperimentListFactory

    files = sorted(l_cysteine.glob("*.cbf"))[:3]
    code = frame_statistics.run(
        [str(f) for f in files] + ["high=50", "output.html=None", "output.plot=None"]
    )
    assert code == 0
    imageset = ExperimentListFactory.from_filenames([str(f) for f in files])[0].imageset
    truth = []
    for index in range(3):
        data = imageset.get_raw_data(index)[0].as_numpy_array()
        valid = imageset.get_mask(index)[0].as_numpy_array()
        use = valid & (data >= 0) & (data <= 50)
        truth.append(data[use].sum())
    table = pd.read_csv("frame_statistics.csv")
    np.testing.assert_array_equal(table["sum"], truth)


def test_summing_tool_config_yaml(in_tmp_path, series):
    master, frames = series
    out = in_tmp_path / "out"
    out.mkdir()
    (in_tmp_path / "config.yaml").write_text(
        f"""
in:
  master: {master}
  start: 4        # first frame, 0-based
  end:   0        # 0: to the last frame
filter:
  low: 1
  high: 45
out:
  file: True
  path: {out}/
  plot: False
  redis: False
  prefix: summed_eiger_frames
  expire: 1
sys_settings:
  albula_path: /nowhere/
  redis_ip: 127.0.0.1
  threads: 2
"""
    )
    assert frame_statistics.run(["config.yaml"]) == 0
    stem = master.name
    table = pd.read_csv(out / f"{stem}.series.csv")
    assert list(table["image"]) == list(range(5, 61))
    np.testing.assert_array_equal(table["sum"], numpy_sums(frames[4:], 1, 45))
    assert (out / f"{stem}.csv").exists()
    assert not (out / f"{stem}.html").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["high=1", "low=5"], "high=1.0 is below low=5.0"),
        (["image_range=1,99"], "outside the images 1-60"),
        (["mask=absent.pickle"], "absent.pickle"),
    ],
)
def test_bad_parameters(in_tmp_path, series, capsys, args, message):
    master, _ = series
    assert frame_statistics.run([str(master), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not any((in_tmp_path / name).exists() for name in OUTPUTS)


def test_corrupt_and_missing_data_files(in_tmp_path, capsys):
    frames = np.random.default_rng(5).integers(0, 9, (4, 30, 30)).astype(np.uint16)
    master = write_series(in_tmp_path, frames, 2, stem="bad")
    before = (in_tmp_path / "bad_data_000002.h5").read_bytes()
    with h5py.File(in_tmp_path / "bad_data_000002.h5", "r+") as handle:
        dataset = handle["/entry/data/data"]
        raw = dataset.id.read_direct_chunk((1, 0, 0))[1]
        dataset.id.write_direct_chunk((1, 0, 0), raw[:20])
    corrupted = (in_tmp_path / "bad_data_000002.h5").read_bytes()
    assert frame_statistics.run([str(master)]) == 1
    err = capsys.readouterr().err
    assert "bad_master.h5" in err and "images 3-4" in err and "corrupt" in err
    assert (in_tmp_path / "bad_data_000002.h5").read_bytes() == corrupted != before
    assert not any((in_tmp_path / name).exists() for name in OUTPUTS)
    (in_tmp_path / "bad_data_000002.h5").unlink()
    assert frame_statistics.run([str(master)]) == 1
    assert "cannot open its data file bad_data_000002.h5" in capsys.readouterr().err


def test_bad_config_files(in_tmp_path, capsys):
    (in_tmp_path / "broken.yaml").write_text("in: [unclosed")
    assert frame_statistics.run(["broken.yaml"]) == 1
    assert "broken.yaml: not a readable YAML file" in capsys.readouterr().err
    (in_tmp_path / "other.yaml").write_text("colour: blue\n")
    assert frame_statistics.run(["other.yaml"]) == 1
    assert "other.yaml: not a frame-summing config" in capsys.readouterr().err


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip(
            "redis-server is not installed (./install.sh test installs Debian's)"
        )
    port = free_port()
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--requirepass",
            "s3cret",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password="s3cret", db=2)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    try:
        yield client, port
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def test_redis_key_value_and_expiry(in_tmp_path, series, redis_server):
    client, port = redis_server
    master, frames = series
    code = frame_statistics.run(
        [
            str(master),
            "redis.enabled=True",
            f"redis.port={port}",
            "redis.db=2",
            "redis.password=s3cret",
            "redis.prefix=test_sums",
            "redis.expire_days=2",
            "output.html=None",
            "output.plot=None",
        ]
    )
    assert code == 0
    key = f"test_sums:{os.path.abspath(master)}"  # unique per data set
    value = json.loads(client.get(key))
    assert value["sum"] == numpy_sums(frames, 0, np.inf).tolist()
    assert value["image"] == list(range(1, 61))
    assert value["statistics"]["raw"]["count"] == 60
    ttl = client.ttl(key)
    assert 2 * 86400 - 60 < ttl <= 2 * 86400


def test_redis_password_never_shown(
    in_tmp_path, series, redis_server, capsys, monkeypatch
):
    """On the command line or from the environment, the password stays secret."""
    client, port = redis_server
    master, _ = series
    common = [
        str(master),
        "redis.enabled=True",
        f"redis.port={port}",
        "redis.db=2",
        "output.html=None",
        "output.plot=None",
        "output.json=summary.json",
    ]
    assert frame_statistics.run([*common, "redis.password=s3cret", "redis.key=k1"]) == 0
    texts = [(in_tmp_path / "dials.diffuse.frame_statistics.log").read_text()]
    summary = json.loads((in_tmp_path / "summary.json").read_text())
    assert summary["parameters"]["redis"]["password"] == "<redacted>"
    assert "redis.password=<redacted>" in summary["command_line"]
    texts.append(json.dumps(summary))
    monkeypatch.setenv("DIALS_DIFFUSE_REDIS_PASSWORD", "s3cret")
    assert frame_statistics.run([*common, "redis.key=k2"]) == 0
    assert client.get("k1") == client.get("k2") is not None  # settable keys
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    for text in texts:
        assert "s3cret" not in text
    monkeypatch.delenv("DIALS_DIFFUSE_REDIS_PASSWORD")
    assert frame_statistics.run([*common, "redis.key=k3"]) == 1  # no password


def test_unreachable_redis_keeps_the_files(in_tmp_path, series, capsys):
    master, _ = series
    code = frame_statistics.run(
        [str(master), "redis.enabled=True", f"redis.port={free_port()}"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "could not post to Redis" in err and "results are in the files" in err
    assert len(err.strip().splitlines()) == 1
    for name in OUTPUTS:
        assert (in_tmp_path / name).exists()


def test_console_script_help():
    result = subprocess.run(
        [console_script("dials.diffuse.frame_statistics"), "-h"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "config.yaml" in result.stdout


def test_dials_mask_file_excludes_pixels(in_tmp_path, series):
    import pickle

    from dials.array_family import flex

    master, frames = series
    keep = np.ones(frames.shape[1:], bool)
    keep[:10, :] = False
    panel = flex.bool(keep.ravel().tolist())
    panel.reshape(flex.grid(*keep.shape))
    with open("pixels.mask", "wb") as handle:
        pickle.dump((panel,), handle)
    code = frame_statistics.run(
        [str(master), "mask=pixels.mask", "output.html=None", "output.plot=None"]
    )
    assert code == 0
    table = pd.read_csv("frame_statistics.csv")
    use = keep & (frames < 65535)
    np.testing.assert_array_equal(
        table["sum"], np.where(use, frames, 0).sum(axis=(1, 2))
    )
    np.testing.assert_array_equal(table["pixels_used"], use.sum(axis=(1, 2)))

    wrong = flex.bool(flex.grid(5, 5), True)
    with open("wrong.mask", "wb") as handle:
        pickle.dump((wrong,), handle)
    assert frame_statistics.run([str(master), "mask=wrong.mask"]) == 1


def test_a_crafted_mask_is_refused_without_running(in_tmp_path, series, capsys):
    import pickle

    from tests.io.test_dials_mask import RunsCode

    master, _ = series
    marker = in_tmp_path / "ran"
    with open("crafted.mask", "wb") as handle:
        pickle.dump((RunsCode(marker),), handle)
    code = frame_statistics.run([str(master), "mask=crafted.mask"])
    assert code == 1 and not marker.exists()
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and "crafted.mask: refused" in message[0]


def test_simulated_series_recovers_truth(in_tmp_path, simulated_eiger_series):
    """The simulator's eiger_series: sums, overloads, drift and CV against its truth."""
    truth_file = simulated_eiger_series["truth"]
    with h5py.File(truth_file, "r") as handle:
        attrs = dict(handle.attrs)
        expected = handle["frames/expected_sum"][()]
        gap, saturated = handle["mask/gap"][()], handle["mask/saturated"][()]
    code = frame_statistics.run(
        [str(simulated_eiger_series["master"]), "output.json=s.json", "nproc=2"]
    )
    assert code == 0
    table = pd.read_csv("frame_statistics.csv")
    assert len(table) == expected.size
    # Poisson noise around the expected sums (5 sigma).
    assert np.all(np.abs(table["sum"] - expected) < 5 * np.sqrt(expected))
    # Gap pixels come from pixel_mask; saturated ones are flagged per frame.
    assert np.all(table["pixels_used"] == (~(gap | saturated)).sum())
    assert np.all(table["invalid"] == saturated.sum())
    # Drift: the linear trend's slope per frame, relative to its start.
    slope = np.polyfit(np.arange(len(table)), table["trend"], 1)[0]
    relative = slope / table["trend"].iloc[0]
    assert relative == pytest.approx(attrs["drift_per_frame"], rel=0.15)
    # CV of the detrended sums: the truth's beam fluctuation plus Poisson noise.
    summary = json.loads((in_tmp_path / "s.json").read_text())["results"]
    cv = summary["statistics"]["detrended"]["CV%"]
    assert cv == pytest.approx(attrs["expected_cv_percent"], rel=0.12)


def test_fast_path_equals_dxtbx_path_on_nxmx(in_tmp_path, simulated_rotation):
    """An NXmx master (virtual dataset + links): our reader vs dxtbx's FormatNXmx."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    master = str(simulated_rotation["master"])
    ExperimentListFactory.from_filenames([master]).as_file("imported.expt")
    common = ["high=5000", "output.html=None", "output.plot=None"]
    assert frame_statistics.run([master, "output.series=fast.csv", *common]) == 0
    log = (in_tmp_path / "dials.diffuse.frame_statistics.log").read_text()
    assert "bitshuffle/LZ4" in log
    assert (
        frame_statistics.run(["imported.expt", "output.series=dxtbx.csv", *common]) == 0
    )
    log = (in_tmp_path / "dials.diffuse.frame_statistics.log").read_text()
    assert "through dxtbx" in log
    fast, slow = pd.read_csv("fast.csv"), pd.read_csv("dxtbx.csv")
    assert len(fast) == 30
    for column in ("sum", "pixels_used", "max"):
        np.testing.assert_array_equal(fast[column], slow[column])


def test_truncated_data_file(in_tmp_path, capsys):
    frames = np.random.default_rng(6).integers(0, 9, (4, 40, 40)).astype(np.uint16)
    master = write_series(in_tmp_path, frames, 2, stem="cut")
    data_file = in_tmp_path / "cut_data_000002.h5"
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    assert frame_statistics.run([str(master)]) == 1
    err = capsys.readouterr().err.strip()
    assert "cut_data_000002.h5" in err and len(err.splitlines()) == 1
    assert not any((in_tmp_path / name).exists() for name in OUTPUTS)


def test_reflection_file_is_named_in_the_error(in_tmp_path, dials_centroid, capsys):
    refl = dials_centroid / "indexed.refl"
    assert frame_statistics.run([str(refl)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{refl}: not images" in err
    assert not (in_tmp_path / "frame_statistics.csv").exists()
