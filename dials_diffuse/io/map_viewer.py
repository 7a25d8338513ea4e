"""A self-contained interactive map viewer: one HTML page, Plotly offline.

The page holds plotly.js once and every layer's grid as float32 (base64),
reduced to block means of an odd number of voxels along each axis (centred
on the 0 plane) where a layer has more than `max_voxels` points, so that
the page stays a few MB (plotly.js itself is about 3.5 MB).
It shows a section of the chosen layer perpendicular to the chosen axis at
any level (a slider), in linear or logarithmic colour (signed layers --
anisotropic map, 3D-DeltaPDF -- in a symmetric logarithm about 0). It opens
in any browser without NeXpy or a server; an address ending in
``#layer=3&axis=2&level=10&colour=log`` opens that view.

The data block is ``<script type="application/json" id="map-data">``: a list
of layers, each with ``name``, ``axis_names``, ``units``, ``axes`` (three
lists), ``shape``, ``signed``, ``limits`` (colour range) and ``data`` (the
base64 of the float32 little-endian C-order grid, NaN where unmeasured);
`read_viewer_layers` reads it back.
"""

import base64
import html
import json
import re

import numpy as np

MAX_VOXELS = 400_000

# The name of the viewer page among a program's outputs (its JSON summary).
VIEWER_OUTPUT = "map viewer (HTML)"


def downsample(axes, values, max_voxels=MAX_VOXELS):
    """Block means over f x f x f voxels (f odd, the smallest that fits), centred on 0.

    The kept points are every f-th one through the 0 plane; each takes the
    mean of the measured voxels within f // 2 of it along every axis (a
    plain stride would alias: at f = subdivide it would show only the Bragg
    positions of a diffuse map).

    Returns
    -------
    axes : list of three arrays
    values : ndarray
    step : int
    """
    step = 1
    while np.prod([-(-len(a) // step) for a in axes]) > max_voxels:
        step += 2
    values = np.asarray(values, dtype=np.float64)
    if step == 1:
        return [np.asarray(a) for a in axes], values, 1
    from scipy.ndimage import uniform_filter

    measured = np.isfinite(values)
    sums = uniform_filter(np.where(measured, values, 0.0), step, mode="constant")
    counts = uniform_filter(measured.astype(np.float64), step, mode="constant")
    picks = []
    for axis in axes:
        zero = int(np.argmin(np.abs(axis)))
        picks.append(np.arange(zero % step, len(axis), step))
    sums, counts = sums[np.ix_(*picks)], counts[np.ix_(*picks)]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 1e-9, sums / counts, np.nan)
    return [np.asarray(a)[p] for a, p in zip(axes, picks)], means, step


def colour_limits(values, signed):
    """Colour range: 1st-99th percentile, or +-99th percentile of |value| if signed."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return [0.0, 1.0]
    if signed:
        high = float(np.percentile(np.abs(finite), 99)) or 1.0
        return [-high, high]
    low, high = (float(v) for v in np.percentile(finite, [1, 99]))
    return [low, high if high > low else low + 1.0]


def viewer_layer(
    name,
    axes,
    values,
    axis_names=("h", "k", "l"),
    units="r.l.u.",
    signed=False,
    max_voxels=MAX_VOXELS,
):
    """One layer of the viewer's data block (downsampled, float32 base64)."""
    axes, values, step = downsample(axes, values, max_voxels)
    data = np.ascontiguousarray(values, dtype="<f4")
    return {
        "name": name,
        "axis_names": list(axis_names),
        "units": units,
        "axes": [np.asarray(a, dtype=float).round(6).tolist() for a in axes],
        "shape": list(data.shape),
        "signed": bool(signed),
        "step": step,
        "limits": colour_limits(data, signed),
        "data": base64.b64encode(data.tobytes()).decode("ascii"),
    }


def read_viewer_layers(page):
    """The layers of a viewer page (its text): dicts with ``values`` decoded."""
    match = re.search(
        r'<script type="application/json" id="map-data">(.*?)</script>', page, re.S
    )
    if match is None:
        raise ValueError("not a map viewer page: no map-data block")
    layers = json.loads(match.group(1))
    for layer in layers:
        raw = base64.b64decode(layer["data"])
        layer["values"] = np.frombuffer(raw, dtype="<f4").reshape(layer["shape"])
    return layers


_STYLE = """
body { font-family: sans-serif; margin: 1em; color: #222; }
#controls { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: center; }
#controls label { white-space: nowrap; }
#level { width: 22em; }
#plot { width: 100%; max-width: 60em; height: 42em; }
"""

_SCRIPT = """
(function () {
  var layers = JSON.parse(document.getElementById("map-data").textContent);
  layers.forEach(function (layer) {
    var raw = atob(layer.data);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    layer.values = new Float32Array(bytes.buffer);
  });
  var layerSelect = document.getElementById("layer");
  var axisSelect = document.getElementById("axis");
  var level = document.getElementById("level");
  var levelText = document.getElementById("level-text");
  var colour = document.getElementById("colour");
  layers.forEach(function (layer, i) {
    var option = document.createElement("option");
    option.value = i; option.textContent = layer.name;
    layerSelect.appendChild(option);
  });
  function current() { return layers[+layerSelect.value]; }
  function setAxes(axis) {
    var layer = current();
    var chosen = axis !== undefined ? axis : +axisSelect.value || 0;
    axisSelect.innerHTML = "";
    layer.axis_names.forEach(function (name, i) {
      var option = document.createElement("option");
      option.value = i; option.textContent = name;
      axisSelect.appendChild(option);
    });
    axisSelect.value = chosen;
    setLevel(true);
  }
  function setLevel(centre) {
    var layer = current(), axis = +axisSelect.value, values = layer.axes[axis];
    level.max = values.length - 1;
    if (centre) {
      var best = 0;
      for (var i = 0; i < values.length; i++)
        if (Math.abs(values[i]) < Math.abs(values[best])) best = i;
      level.value = best;
    }
    draw();
  }
  function transform(v, layer, log) {
    if (!isFinite(v)) return null;
    if (!log) return v;
    if (layer.signed) {
      var c = Math.max(Math.abs(layer.limits[1]) / 100, 1e-30);
      return (v < 0 ? -1 : 1) * Math.log10(1 + Math.abs(v) / c);
    }
    return v > 0 ? Math.log10(v) : null;
  }
  function draw() {
    var layer = current(), axis = +axisSelect.value, index = +level.value;
    var log = colour.value === "log", n = layer.shape;
    var others = [0, 1, 2].filter(function (a) { return a !== axis; });
    var xa = others[0], ya = others[1], z = [], raw = [];
    var stride = [n[1] * n[2], n[2], 1];
    for (var j = 0; j < n[ya]; j++) {
      var row = [], rawRow = [];
      for (var i = 0; i < n[xa]; i++) {
        var value = layer.values[index * stride[axis] + i * stride[xa] + j * stride[ya]];
        row.push(transform(value, layer, log));
        rawRow.push(isFinite(value) ? Number(value.toPrecision(5)) : "not measured");
      }
      z.push(row);
      raw.push(rawRow);
    }
    var lim = [transform(layer.limits[0], layer, log), transform(layer.limits[1], layer, log)];
    if (log && !layer.signed && lim[0] === null) lim[0] = lim[1] - 3;
    var unit = layer.units ? " (" + layer.units + ")" : "";
    levelText.textContent = layer.axis_names[axis] + " = " +
      Number(layer.axes[axis][index].toPrecision(4)) + unit;
    Plotly.react("plot", [{
      type: "heatmap", z: z, x: layer.axes[xa], y: layer.axes[ya], customdata: raw,
      hovertemplate: layer.axis_names[xa] + " %{x}, " + layer.axis_names[ya] +
        " %{y}: %{customdata}<extra></extra>",
      zmin: lim[0], zmax: lim[1], zsmooth: false,
      colorscale: layer.signed ? "RdBu" : "Viridis",
      colorbar: {title: {text: log ? "log" : "linear"}}
    }], {
      title: {text: layer.name + ": " + levelText.textContent},
      xaxis: {title: {text: layer.axis_names[xa] + unit}},
      yaxis: {title: {text: layer.axis_names[ya] + unit}, scaleanchor: "x"},
      margin: {t: 50}
    }, {responsive: true});
  }
  layerSelect.onchange = function () { setAxes(); };
  axisSelect.onchange = function () { setLevel(true); };
  level.oninput = draw;
  colour.onchange = draw;
  // The starting view from the address: #layer=2&axis=0&level=5&colour=log
  var start = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
    var parts = pair.split("=");
    if (parts.length === 2) start[parts[0]] = parts[1];
  });
  if (start.layer !== undefined && layers[+start.layer]) layerSelect.value = +start.layer;
  if (start.colour === "log") colour.value = "log";
  setAxes(Math.min(Math.max(+start.axis || 0, 0), 2));
  if (start.level !== undefined) { level.value = +start.level; draw(); }
})();
"""


def write_map_viewer(path, layers, title):
    """Write the viewer page.

    Parameters
    ----------
    path : str or Path
    layers : list of dict
        From `viewer_layer`, in the order of the layer menu.
    title : str
    """
    from plotly.offline import get_plotlyjs

    data = json.dumps(layers, separators=(",", ":")).replace("</", "<\\/")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>{html.escape(title)}</h1>
<div id="controls">
<label>Layer <select id="layer"></select></label>
<label>Section perpendicular to <select id="axis"></select></label>
<label>Level <input type="range" id="level" min="0" max="0" step="1" value="0"></label>
<span id="level-text"></span>
<label>Colour <select id="colour"><option value="linear">linear</option>
<option value="log">log</option></select></label>
</div>
<div id="plot"></div>
<script type="application/json" id="map-data">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)


def viewer_link(path):
    """HTML of a link to a viewer page, for reports (e.g. dials.diffuse.process)."""
    name = html.escape(str(path))
    return (
        f'<p><a href="{name}">Open the interactive map viewer</a> ({name}): '
        "sections along h, k, l of the map, its isotropic and anisotropic parts "
        "and the 3D-DeltaPDF.</p>"
    )
