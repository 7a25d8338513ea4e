"""A PNG preview of a simulated dataset beside its truth: look before you process.

- rotation: the middle frame (log scale) and the measured frame sums against
  the truth's expected sums;
- transmission_series: the histogram of pixel values of every sweep, with
  the true notch and saturation marked;
- sacla: a dark shot and the mean light shot with the true ring and beam
  centre drawn on it;
- eiger_series: measured frame sums against the truth's expected sums.

Frames are read one at a time, so memory does not grow with the dataset.
"""

import h5py
import numpy as np

from dials_diffuse.io.plots import new_figure, save_png


def _frame_sums(master, valid):
    """Sum of the `valid` pixels of every frame of an Eiger master file."""
    with h5py.File(master, "r") as handle:
        links = sorted(k for k in handle["/entry/data"] if k.startswith("data_0"))
        sums = []
        for link in links:
            dataset = handle[f"/entry/data/{link}"]
            for index in range(dataset.shape[0]):
                sums.append(dataset[index][valid].astype(np.float64).sum())
    return np.array(sums)


def _plot_sums(axes, measured, expected, title):
    frames = np.arange(1, len(measured) + 1)
    axes.plot(frames, measured, ".", label="measured")
    axes.plot(frames, expected, "-", label="truth: expected")
    axes.set_xlabel("image number")
    axes.set_ylabel("sum of valid pixels (counts)")
    axes.set_title(title)
    axes.legend()


def preview_rotation(paths, png):
    with h5py.File(paths["truth"], "r") as truth:
        gap = truth["mask/gap"][()]
        expected = truth["frames/expected_total"][()]
    with h5py.File(paths["master"], "r") as handle:
        data = handle["/entry/data/data"]
        middle = data[data.shape[0] // 2].astype(float)
    middle[gap] = np.nan
    figure, _ = new_figure(12, 5)
    figure.clear()
    left, right = figure.subplots(1, 2)
    image = left.imshow(np.log10(1 + middle), cmap="gray_r")
    figure.colorbar(image, ax=left, label="log10(1 + counts)")
    left.set_title(f"image {len(expected) // 2 + 1} (module gap blank)")
    _plot_sums(right, _frame_sums(paths["master"], ~gap), expected, "frame sums")
    save_png(figure, png)


def preview_transmission_series(paths, png):
    with h5py.File(paths["truth"], "r") as truth:
        low, high = truth.attrs["notch_low"], truth.attrs["notch_high"]
        saturation = int(truth.attrs["saturation"])
    top = saturation + 1  # the overload value, where the pile-up is
    figure, axes = new_figure(10, 5)
    for sweep in paths["sweeps"]:
        counts = np.zeros(top + 1, dtype=np.int64)
        with h5py.File(sweep["master"], "r") as handle:
            data = handle["/entry/data/data"]
            for index in range(data.shape[0]):
                frame = data[index]
                counts += np.bincount(frame[frame <= top], minlength=top + 1)
        occupied = np.flatnonzero(counts)
        axes.step(
            occupied,
            counts[occupied],
            where="mid",
            label=f"T = {sweep['transmission']:g}",
        )
    axes.axvspan(low, high, color="red", alpha=0.2, label=f"true notch [{low}, {high})")
    axes.axvline(saturation, color="black", ls="--", label=f"saturation {saturation}")
    axes.set_xscale("symlog", linthresh=10)
    axes.set_xlim(left=0)
    axes.set_yscale("log")
    axes.set_xlabel("pixel value (counts)")
    axes.set_ylabel("pixels")
    axes.set_title("pixel histogram of each sweep")
    axes.legend()
    save_png(figure, png)


def preview_sacla(paths, png):
    with h5py.File(paths["truth"], "r") as truth:
        attrs = dict(truth.attrs)
        dark = truth["dark"][()]
        tags = truth["tags"][()]
    with h5py.File(paths["data"], "r") as handle:
        group = handle[f"run_{attrs['run']}/detector_2d_assembled_1"]
        first_dark = (
            group[f"tag_{tags[np.argmax(dark)]}/detector_data"][()]
            if dark.any()
            else None
        )
        light = np.zeros_like(
            group[f"tag_{tags[0]}/detector_data"][()], dtype=np.float64
        )
        for tag in tags[~dark]:
            light += group[f"tag_{tag}/detector_data"][()]
        light /= max(1, (~dark).sum())
    figure, _ = new_figure(12, 5)
    figure.clear()
    left, right = figure.subplots(1, 2)
    if first_dark is not None:
        left.imshow(first_dark, cmap="gray")
        left.set_title("a dark shot")
    right.imshow(light, cmap="magma")
    cx, cy = attrs["beam_centre_px"]
    # imshow puts pixel i's centre at i: the true centre (i + 0.5 convention) is at c - 0.5.
    right.plot([cx - 0.5], [cy - 0.5], "c+", markersize=12)
    angle = np.linspace(0, 2 * np.pi, 200)
    radius = attrs["ring_radius_px"]
    right.plot(
        cx - 0.5 + radius * np.cos(angle), cy - 0.5 + radius * np.sin(angle), "c:", lw=1
    )
    right.set_title(
        f"mean light shot, truth: ring r = {radius:.1f} px\n"
        f"(q = {attrs['ring_q']:.4f} 1/Å), {attrs['symmetry_order']}-fold speckle"
    )
    save_png(figure, png)


def preview_eiger_series(paths, png):
    with h5py.File(paths["truth"], "r") as truth:
        valid = ~(truth["mask/gap"][()] | truth["mask/saturated"][()])
        expected = truth["frames/expected_sum"][()]
        cv = truth.attrs["expected_cv_percent"]
    figure, axes = new_figure(10, 5)
    _plot_sums(
        axes,
        _frame_sums(paths["master"], valid),
        expected,
        f"frame sums (true CV {cv:.2f}%)",
    )
    save_png(figure, png)


PREVIEWS = {
    "rotation": preview_rotation,
    "transmission_series": preview_transmission_series,
    "sacla": preview_sacla,
    "eiger_series": preview_eiger_series,
}


def write_preview(kind, paths, png):
    """Write the preview PNG of a dataset of `kind` (paths from simulate_<kind>)."""
    PREVIEWS[kind](paths, png)
