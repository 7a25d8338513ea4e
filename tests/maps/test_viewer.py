"""The map viewer page: valid HTML, its data equal to the map, rendered by a browser."""

import html.parser
import shutil
import subprocess

import numpy as np
import pytest

from dials_diffuse.io.map_viewer import (
    downsample,
    read_viewer_layers,
    viewer_layer,
    write_map_viewer,
)

VOID = {"meta", "input", "br", "img", "link", "hr"}


class _Checker(html.parser.HTMLParser):
    """Checks that every element is closed in order; counts script elements."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.scripts, self.ids = [], [], 0, set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(value for name, value in attrs if name == "id")
        if tag == "script":
            self.scripts += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


@pytest.fixture(scope="module")
def page(known_map, tmp_path_factory):
    path = tmp_path_factory.mktemp("viewer") / "viewer.html"
    recmap = known_map.map
    anisotropic = recmap.values - np.nanmean(recmap.values)
    layers = [
        viewer_layer("intensity", recmap.axes, recmap.values),
        viewer_layer(
            "anisotropic", recmap.axes, anisotropic, signed=True, max_voxels=20000
        ),
    ]
    write_map_viewer(path, layers, "test <map>")
    return path


def test_page_is_well_formed_and_self_contained(page):
    text = page.read_text()
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert {"layer", "axis", "level", "colour", "plot", "map-data"} <= checker.ids
    # plotly.js once, no external resource; the title escaped.
    assert text.count("plotly.js v") == 1
    assert "src=" not in text and "http://" not in text.split("map-data")[1]
    assert "test &lt;map&gt;" in text
    assert page.stat().st_size < 20e6


def test_page_data_equal_the_map(page, known_map):
    layers = read_viewer_layers(page.read_text())
    assert [layer["name"] for layer in layers] == ["intensity", "anisotropic"]
    full = layers[0]
    assert full["step"] == 1
    assert np.array_equal(
        full["values"], known_map.map.values.astype(np.float32), equal_nan=True
    )
    assert np.allclose(full["axes"][1], known_map.map.axes[1])
    small = layers[1]
    assert small["step"] == 3 and np.prod(small["shape"]) <= 20000
    # Every 3rd point through 0, the mean of the measured voxels around it.
    for axis in small["axes"]:
        assert 0.0 in axis
        assert np.allclose(np.diff(axis), 1.5)
    values = known_map.map.values - np.nanmean(known_map.map.values)
    axes = known_map.map.axes
    for point in [(0, 0, 0), (4.5, -3, 1.5), (-9, 10.5, -12)]:
        index = [list(np.round(a, 6)).index(v) for a, v in zip(small["axes"], point)]
        window = tuple(
            slice(
                max(int(np.argmin(np.abs(a - v))) - 1, 0),
                int(np.argmin(np.abs(a - v))) + 2,
            )
            for a, v in zip(axes, point)
        )
        expected = (
            np.nanmean(values[window]) if np.isfinite(values[window]).any() else np.nan
        )
        assert np.allclose(
            small["values"][tuple(index)], expected, rtol=1e-5, equal_nan=True
        )
    assert small["signed"] and small["limits"][0] == -small["limits"][1]


def test_downsample_keeps_the_origin_plane():
    axes = [np.arange(-7, 12) / 2.0] * 3
    values = np.random.default_rng(0).random([19] * 3)
    small_axes, small, step = downsample(axes, values, max_voxels=1000)
    assert step == 3 and small.shape == (6, 6, 6)  # -3 to 4.5 by 1.5
    assert all(0.0 in a for a in small_axes)


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (apt-get install chromium)",
)
@pytest.mark.parametrize("layer", [None, 1])
def test_headless_browser_renders_a_section(page, tmp_path, layer):
    from matplotlib.image import imread

    view = ""
    if layer is not None:
        # The anisotropic layer, log colour, the section l = 1.5 (off-centre).
        level = read_viewer_layers(page.read_text())[layer]["axes"][2].index(1.5)
        view = f"#layer={layer}&axis=2&level={level}&colour=log"
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,900",
            "--virtual-time-budget=5000",
            f"--screenshot={shot}",
            page.as_uri() + view,
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file(), result.stderr.decode()[-2000:]
    image = imread(shot)[..., :3]
    plot = image[200:700, 100:800]
    # The heatmap fills the plot area with many colours (a blank page is white).
    colours = np.unique((plot * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    coloured = np.mean(np.abs(plot - 1.0).sum(axis=-1) > 0.15)
    assert len(colours) > 50 and coloured > 0.2
    red = plot[..., 0] - plot[..., 2] > 0.3
    blue = plot[..., 2] - plot[..., 0] > 0.3
    if layer is not None:  # the signed layer on a diverging scale: both signs
        assert red.mean() > 0.02 and blue.mean() > 0.02
