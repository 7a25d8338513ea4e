"""The simulated SACLA run: layout, ring, symmetry and dark shots against the truth."""

import h5py
import numpy as np
import pytest


@pytest.fixture(scope="module")
def run(simulated_sacla):
    with h5py.File(simulated_sacla["truth"], "r") as handle:
        truth = {
            **dict(handle.attrs),
            "dark": handle["dark"][()],
            "tags": handle["tags"][()],
        }
    with h5py.File(simulated_sacla["data"], "r") as handle:
        group = handle[f"run_{truth['run']}"]
        tags = group["event_info/tag_number_list"][()]
        images = np.stack(
            [group[f"detector_2d_assembled_1/tag_{t}/detector_data"][()] for t in tags]
        )
        energies = group["event_info/bl_3/oh_2/photon_energy_in_eV"][()]
        pixel_um = group[
            "detector_2d_assembled_1/detector_info/pixel_size_in_micro_meter"
        ][()]
    mask = np.load(simulated_sacla["mask"])
    return truth, tags, images, energies, pixel_um, mask


def test_layout_understood_by_dxtbx(simulated_sacla, run):
    from dxtbx.format.FormatHDF5Sacla import FormatHDF5Sacla

    truth, tags, images, energies, pixel_um, mask = run
    assert FormatHDF5Sacla.understand(str(simulated_sacla["data"]))
    assert np.array_equal(tags, truth["tags"])
    assert len(energies) == len(tags)
    assert np.all(np.abs(energies - 10000) < 50)
    assert tuple(pixel_um) == (50.0, 50.0)
    assert images.dtype == np.float32
    assert mask.dtype == np.int8 and set(np.unique(mask)) == {0, 1}
    assert np.all(images[:, mask == 0] == 0)


def test_dark_shots(run):
    truth, _, images, _, _, mask = run
    dark = images[truth["dark"]][:, mask == 1]
    assert truth["dark"][: truth["dark"].sum()].all()  # dark shots come first
    assert dark.mean() == pytest.approx(truth["offset_adu"], abs=0.1)
    assert dark.std() == pytest.approx(truth["read_noise_adu"], rel=0.05)


def _circle_fit(x, y):
    """Algebraic (Kasa) least-squares circle through points: centre and radius."""
    design = np.column_stack([x, y, np.ones_like(x)])
    solution, *_ = np.linalg.lstsq(design, x**2 + y**2, rcond=None)
    cx, cy = solution[0] / 2, solution[1] / 2
    return cx, cy, np.sqrt(solution[2] + cx**2 + cy**2)


def test_ring_centre_and_radius_recoverable(run):
    """Fit a circle to the ring maxima found along rays from a rough centre."""
    truth, _, images, _, _, mask = run
    light = images[~truth["dark"]].mean(axis=0)
    ny, nx = light.shape
    rough = np.array([nx / 2, ny / 2])
    points = []
    for angle in np.linspace(0, 2 * np.pi, 90, endpoint=False):
        radii = np.arange(
            0.8 * truth["ring_radius_px"], 1.2 * truth["ring_radius_px"], 0.25
        )
        x = rough[0] + radii * np.cos(angle)
        y = rough[1] + radii * np.sin(angle)
        col, row = np.floor(x).astype(int), np.floor(y).astype(int)
        inside = (col >= 0) & (col < nx) & (row >= 0) & (row < ny)
        if not inside.all() or not mask[row, col].all():
            continue
        profile = light[row, col]
        best = np.argmax(profile)
        points.append((x[best], y[best]))
    points = np.array(points)
    assert len(points) > 40
    cx, cy, radius = _circle_fit(points[:, 0], points[:, 1])
    assert (cx, cy) == pytest.approx(tuple(truth["beam_centre_px"]), abs=0.6)
    assert radius == pytest.approx(truth["ring_radius_px"], abs=0.6)


def test_ring_q_from_geometry(run):
    truth = run[0]
    two_theta = np.arctan(
        truth["ring_radius_px"] * truth["pixel_mm"] / truth["distance_mm"]
    )
    q = 4 * np.pi * np.sin(two_theta / 2) / truth["wavelength"]
    assert truth["ring_q"] == pytest.approx(q)
    assert truth["ring_two_theta_deg"] == pytest.approx(np.degrees(two_theta))


def test_speckle_has_the_true_angular_symmetry(run):
    """The angular Fourier spectrum of each shot's speckle band: power only at k n."""
    truth, _, images, _, _, mask = run
    n = int(truth["symmetry_order"])
    ny, nx = images.shape[1:]
    y, x = np.mgrid[0:ny, 0:nx] + 0.5
    cx, cy = truth["beam_centre_px"]
    radius = np.hypot(x - cx, y - cy)
    phi = np.arctan2(y - cy, x - cx)
    band = (np.abs(radius - truth["speckle_radius_px"]) < 3) & (mask == 1)
    bins = np.floor((phi[band] + np.pi) / (2 * np.pi) * 72).astype(int) % 72
    for image in images[~truth["dark"]][:5]:
        profile = np.bincount(bins, weights=image[band], minlength=72) / np.bincount(
            bins, minlength=72
        )
        power = np.abs(np.fft.rfft(profile - profile.mean())) ** 2
        strongest = np.argsort(power[1:])[-3:] + 1
        assert all(k % n == 0 for k in strongest)
