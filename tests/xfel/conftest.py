"""SACLA-layout still shots with known truth, written by the tests themselves.

`write_sacla_file` writes a small DataConvert-style file
(`/run_N/detector_2d_assembled_1/tag_T/detector_data`): a powder ring of
known radius around a known off-centre beam, an n-fold angular modulation
whose phase changes from shot to shot (so difference correlations peak at
multiples of 360/n degrees), a flat background, Poisson noise, dark
(shutter-closed) shots first, and optionally a vertical gap of dead pixels.
"""

import dataclasses

import h5py
import numpy as np
import pytest

RUN = 178884
FIRST_TAG = 166762140


@dataclasses.dataclass
class SaclaTruth:
    """What a written file contains (pixel units: px, 0-based, centres at i+0.5)."""

    path: object
    shape: tuple  # (slow, fast) pixels
    beam_centre: tuple  # (fast, slow) px
    ring_radius: float  # px
    ring_width: float  # px, Gaussian sigma
    symmetry: int  # n-fold angular modulation
    n_shots: int
    n_dark: int
    tags: np.ndarray
    pixel_size_mm: float
    distance_mm: float
    energy_ev: float
    gap_columns: slice  # dead columns (value 0), masked
    mask: np.ndarray  # True = valid pixel

    @property
    def wavelength(self):
        """Wavelength in Å."""
        return 12398.419843320026 / self.energy_ev


def ring_image(shape, centre, radius, width, symmetry, phase, amplitude, background):
    """Expected counts of one shot (no noise): a modulated Gaussian ring on a flat background."""
    slow, fast = np.indices(shape, dtype=np.float64)
    dx = fast + 0.5 - centre[0]
    dy = slow + 0.5 - centre[1]
    r = np.hypot(dx, dy)
    phi = np.arctan2(dy, dx)
    modulation = 1.0 + 0.5 * np.cos(symmetry * (phi - phase))
    ring = amplitude * np.exp(-0.5 * ((r - radius) / width) ** 2) * modulation
    return background + ring


def spot_image(shape, fast, slow, peak=3000.0, sigma=1.0):
    """A Gaussian spot centred at (fast, slow) px."""
    rows, columns = np.indices(shape, dtype=np.float64)
    r2 = (columns + 0.5 - fast) ** 2 + (rows + 0.5 - slow) ** 2
    return peak * np.exp(-0.5 * r2 / sigma**2)


def write_sacla_file(
    path,
    shape=(300, 320),
    beam_centre=(163.3, 141.7),
    ring_radius=100.0,
    ring_width=1.5,
    symmetry=6,
    n_shots=12,
    n_dark=2,
    amplitude=400.0,
    background=20.0,
    gap=True,
    geometry_in_file=True,
    pixel_size_mm=0.05,
    distance_mm=50.0,
    energy_ev=8610.0,
    spots=(),
    seed=7,
):
    """Write a SACLA DataConvert-layout file; return its SaclaTruth.

    `spots` adds Gaussian Bragg-like spots (sigma 1 px, 3000 counts peak) at
    the given (fast, slow) px positions to every light shot.
    """
    rng = np.random.default_rng(seed)
    tags = FIRST_TAG + 2 * np.arange(n_shots)
    mask = np.ones(shape, dtype=bool)
    gap_columns = slice(150, 156)
    if gap:
        mask[:, gap_columns] = False
    with h5py.File(path, "w") as f:
        f["file_info/run_number_list"] = np.array([RUN])
        run = f.create_group(f"run_{RUN}")
        run["event_info/tag_number_list"] = tags
        shutter = np.ones(n_shots, dtype=np.int32)
        shutter[:n_dark] = 0
        run["event_info/xfel_bl_3_shutter_1_open_valid/status"] = shutter
        run["run_info/sacla_config/photon_energy_in_eV"] = energy_ev
        detector = run.create_group("detector_2d_assembled_1")
        info = detector.create_group("detector_info")
        info["pixel_size_in_micro_meter"] = np.array(
            [pixel_size_mm * 1000, pixel_size_mm * 1000]
        )
        if geometry_in_file:
            info["distance_in_mm"] = distance_mm
            info["beam_center_in_pixel"] = np.array(beam_centre)
        for i, tag in enumerate(tags):
            if i < n_dark:
                expected = np.full(shape, 0.5)
            else:
                expected = ring_image(
                    shape,
                    beam_centre,
                    ring_radius,
                    ring_width,
                    symmetry,
                    rng.uniform(0, 2 * np.pi),
                    amplitude * rng.uniform(0.8, 1.2),
                    background,
                )
                for fast, slow in spots:
                    expected = expected + spot_image(shape, fast, slow)
            image = rng.poisson(expected).astype(np.float32)
            image[~mask] = 0
            group = detector.create_group(f"tag_{tag}")
            group.create_dataset("detector_data", data=image)
            group["detector_status"] = 0
    return SaclaTruth(
        path=path,
        shape=shape,
        beam_centre=beam_centre,
        ring_radius=ring_radius,
        ring_width=ring_width,
        symmetry=symmetry,
        n_shots=n_shots,
        n_dark=n_dark,
        tags=tags,
        pixel_size_mm=pixel_size_mm,
        distance_mm=distance_mm,
        energy_ev=energy_ev,
        gap_columns=gap_columns,
        mask=mask,
    )


@pytest.fixture(scope="session")
def sacla_file(tmp_path_factory):
    """A SACLA file with geometry in the file, a gap and a mask (session cached)."""
    directory = tmp_path_factory.mktemp("sacla")
    truth = write_sacla_file(directory / "run_178884.h5")
    np.save(directory / "mask.npy", truth.mask.astype(np.uint8))
    truth.mask_path = directory / "mask.npy"
    return truth
