"""A simulated SACLA run in the DataConvert HDF5 layout, with known truth.

The layout follows what SACLA's DataConvert writes (``-reconstr``) and what
dxtbx's ``FormatHDF5Sacla`` reads:

- ``/file_info/run_number_list`` = [run];
- ``/run_<run>/event_info/tag_number_list`` (every tag, in order) and the
  photon energy per tag in ``/run_<run>/event_info/bl_3/oh_2/photon_energy_in_eV``;
- ``/run_<run>/run_info/sacla_config/photon_energy_in_eV`` (nominal);
- ``/run_<run>/detector_2d_assembled_1/detector_info/pixel_size_in_micro_meter``
  (fast, slow), ``detector_name``, ``distance_in_mm``;
- ``/run_<run>/detector_2d_assembled_1/tag_<tag>/detector_data`` (ny, nx)
  float32, one image per tag.

Shots: the first ``dark_shots`` tags are dark (offset and read noise only);
every later shot shows a powder ring of known radius around a known,
off-centre beam, plus a speckle band whose angular pattern is exactly
``n``-fold symmetric (harmonics ``n, 2n, 3n`` of the azimuth, random phases
and amplitudes per shot), on a smooth background; photon counts are Poisson,
times ``adu_per_photon``, plus the offset and Gaussian read noise.

``mask.npy`` beside it: (ny, nx) int8, 1 = valid, 0 = masked (panel gaps,
the beam stop and its arm, a few dead pixels); masked pixels read 0.

Azimuth convention: ``phi = atan2(y - cy, x - cx)`` with x the fast (column)
and y the slow (row) pixel coordinate, pixel centres at i + 0.5.

``truth.h5`` root attributes: ``kind = "sacla"``, ``seed``, ``run``,
``beam_centre_px`` (x, y; pixel centres at i + 0.5, i.e. array index + 0.5),
``ring_radius_px``, ``ring_width_px``, ``ring_q`` (Å⁻¹),
``ring_two_theta_deg``, ``speckle_radius_px``, ``speckle_q`` (Å⁻¹),
``symmetry_order`` n, ``wavelength`` (Å), ``distance_mm``, ``pixel_mm``,
``adu_per_photon``, ``offset_adu``, ``read_noise_adu``; datasets
``/tags`` (all tags), ``/dark`` (bool per tag), ``/speckle_phase`` (rad,
per shot), ``/speckle_amplitudes`` (shots, 3).
"""

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from dials_diffuse.io.atomic import atomic_path
from dials_diffuse.simulate.output import dataset_directory
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.progress import progress

HC_EV_ANGSTROM = 12398.419843320026  # h c in eV Å


@dataclass(frozen=True)
class SaclaSetup:
    """A SACLA run; lengths in px unless named, intensities in photons/pixel."""

    nx: int
    ny: int
    shots: int
    dark_shots: int
    run: int = 178884
    first_tag: int = 166762140
    tag_step: int = 2
    pixel_um: float = 50.0
    distance_mm: float = 100.0
    photon_energy_ev: float = 10000.0
    energy_jitter_ev: float = 5.0
    beam_offset_px: tuple = (7.3, -5.1)
    ring_radius_fraction: float = 0.33
    ring_width_px: float = 2.0
    ring_photons: float = 40.0
    speckle_radius_fraction: float = 0.2
    speckle_width_px: float = 6.0
    speckle_photons: float = 8.0
    symmetry_order: int = 6
    background_photons: float = 1.0
    adu_per_photon: float = 10.0
    offset_adu: float = 5.0
    read_noise_adu: float = 3.0
    panel_gap_px: int = 4
    beamstop_radius_px: float = 6.0

    @property
    def beam_centre(self):
        """(x, y) of the beam in pixels (pixel centres at i + 0.5)."""
        return (
            self.nx / 2 + self.beam_offset_px[0],
            self.ny / 2 + self.beam_offset_px[1],
        )

    @property
    def ring_radius_px(self):
        return self.ring_radius_fraction * min(self.nx, self.ny)

    @property
    def speckle_radius_px(self):
        return self.speckle_radius_fraction * min(self.nx, self.ny)

    @property
    def wavelength(self):
        return HC_EV_ANGSTROM / self.photon_energy_ev


SIZES = {
    "test": SaclaSetup(nx=192, ny=160, shots=24, dark_shots=4),
    "demo": SaclaSetup(nx=512, ny=512, shots=80, dark_shots=16, panel_gap_px=8),
}


def sacla_setup(size="test", **overrides):
    """The `SaclaSetup` of a size preset, with fields replaced by `overrides`."""
    if size not in SIZES:
        raise DataError(f"unknown size '{size}': choose one of {', '.join(SIZES)}")
    return replace(SIZES[size], **overrides)


def q_at_radius(setup, radius_px):
    """Momentum transfer q = 4π sin θ / λ (Å⁻¹) at `radius_px` from the beam."""
    two_theta = math.atan(radius_px * setup.pixel_um / 1000.0 / setup.distance_mm)
    return 4.0 * math.pi * math.sin(two_theta / 2.0) / setup.wavelength


def polar_coordinates(setup):
    """Radius (px) and azimuth (rad) of every pixel centre about the beam."""
    y, x = np.mgrid[0 : setup.ny, 0 : setup.nx] + 0.5
    cx, cy = setup.beam_centre
    return np.hypot(x - cx, y - cy), np.arctan2(y - cy, x - cx)


def sacla_mask(setup, rng):
    """1 = valid, 0 = masked: a cross of panel gaps, the beam stop and arm, dead pixels."""
    mask = np.ones((setup.ny, setup.nx), dtype=np.int8)
    gap = setup.panel_gap_px
    row, col = setup.ny // 2 + 11, setup.nx // 2 - 13
    mask[row : row + gap, :] = 0
    mask[:, col : col + gap] = 0
    radius, phi = polar_coordinates(setup)
    mask[radius < setup.beamstop_radius_px] = 0
    cx, cy = setup.beam_centre
    y, x = np.mgrid[0 : setup.ny, 0 : setup.nx] + 0.5
    arm = (np.abs(y - cy) < setup.beamstop_radius_px / 3) & (x > cx)
    mask[arm] = 0
    dead = rng.choice(mask.size, size=max(3, mask.size // 5000), replace=False)
    mask.ravel()[dead] = 0
    return mask


def expected_photons(setup, radius, phi, phase, amplitudes, ring_scale):
    """Expected photons per pixel of a light shot.

    ``background + ring + speckle``: the ring a Gaussian in radius, the
    speckle band a Gaussian in radius times ``1 + Σ_m a_m cos(m n (phi - phase))``
    (m = 1, 2, 3), which is exactly n-fold symmetric.
    """
    ring = (
        ring_scale
        * setup.ring_photons
        * np.exp(-0.5 * ((radius - setup.ring_radius_px) / setup.ring_width_px) ** 2)
    )
    angular = 1.0 + sum(
        a * np.cos((m + 1) * setup.symmetry_order * (phi - phase))
        for m, a in enumerate(amplitudes)
    )
    band = np.exp(
        -0.5 * ((radius - setup.speckle_radius_px) / setup.speckle_width_px) ** 2
    )
    background = setup.background_photons * np.exp(-radius / max(setup.nx, setup.ny))
    return background + ring + setup.speckle_photons * band * angular


def simulate_sacla(directory, size="test", seed=0, **overrides):
    """Simulate a SACLA DataConvert run with a ring, n-fold speckle and dark shots.

    Parameters
    ----------
    directory : str or Path
        Created; must not exist or be empty.
    size : {"test", "demo"}
        "test": 24 shots (4 dark) of 192 x 160 px; "demo": 80 shots (16
        dark) of 512 x 512 px.
    seed : int
        Seeds phases, amplitudes, energies, dead pixels and noise.
    **overrides
        Fields of `SaclaSetup` to change.

    Returns
    -------
    dict
        ``data`` (the HDF5 file), ``mask``, ``truth``, ``directory`` paths.
    """
    setup = sacla_setup(size, **overrides)
    if not 0 <= setup.dark_shots < setup.shots:
        raise DataError(
            f"dark_shots ({setup.dark_shots}) must be fewer than the shots "
            f"({setup.shots})"
        )
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    mask = sacla_mask(setup, rng)
    light = setup.shots - setup.dark_shots
    phases = rng.uniform(0.0, 2.0 * math.pi / setup.symmetry_order, size=light)
    amplitudes = rng.uniform(0.2, 0.6, size=(light, 3)) / np.array([1.0, 1.5, 2.0])
    ring_scales = rng.uniform(0.8, 1.2, size=light)
    tags = setup.first_tag + setup.tag_step * np.arange(setup.shots)
    energies = setup.photon_energy_ev + setup.energy_jitter_ev * rng.standard_normal(
        setup.shots
    )
    radius, phi = polar_coordinates(setup)
    directory = Path(directory)
    name = f"run_{setup.run}.h5"
    with dataset_directory(directory) as work:
        with h5py.File(work / name, "w") as handle:
            handle.create_dataset("file_info/run_number_list", data=[setup.run])
            run = handle.create_group(f"run_{setup.run}")
            run.create_dataset("event_info/tag_number_list", data=tags)
            run.create_dataset(
                "event_info/bl_3/oh_2/photon_energy_in_eV", data=energies
            )
            run.create_dataset(
                "run_info/sacla_config/photon_energy_in_eV", data=setup.photon_energy_ev
            )
            detector = run.create_group("detector_2d_assembled_1")
            info = detector.create_group("detector_info")
            info.create_dataset(
                "pixel_size_in_micro_meter", data=[setup.pixel_um, setup.pixel_um]
            )
            info.create_dataset("distance_in_mm", data=setup.distance_mm)
            info.create_dataset("detector_name", data=np.bytes_("MPCCD-8-simulated"))
            for index in progress(
                range(setup.shots), desc="simulating sacla", unit="shot"
            ):
                shot_rng = np.random.default_rng([seed, 3, index])
                if index < setup.dark_shots:
                    photons = np.zeros((setup.ny, setup.nx))
                else:
                    light_index = index - setup.dark_shots
                    photons = shot_rng.poisson(
                        expected_photons(
                            setup,
                            radius,
                            phi,
                            phases[light_index],
                            amplitudes[light_index],
                            ring_scales[light_index],
                        )
                    )
                image = (
                    setup.adu_per_photon * photons
                    + setup.offset_adu
                    + setup.read_noise_adu * shot_rng.standard_normal(photons.shape)
                )
                image[mask == 0] = 0.0
                detector.create_dataset(
                    f"tag_{tags[index]}/detector_data",
                    data=image.astype(np.float32),
                    compression="gzip",
                    compression_opts=1,
                )
        with atomic_path(work / "mask.npy") as temporary:
            with open(temporary, "wb") as stream:
                np.save(stream, mask)
        with h5py.File(work / "truth.h5", "w") as handle:
            ring_two_theta = math.degrees(
                math.atan(
                    setup.ring_radius_px * setup.pixel_um / 1000.0 / setup.distance_mm
                )
            )
            handle.attrs.update(
                {
                    "kind": "sacla",
                    "seed": seed,
                    "description": __doc__,
                    "run": setup.run,
                    "beam_centre_px": np.array(setup.beam_centre),
                    "ring_radius_px": setup.ring_radius_px,
                    "ring_width_px": setup.ring_width_px,
                    "ring_q": q_at_radius(setup, setup.ring_radius_px),
                    "ring_two_theta_deg": ring_two_theta,
                    "speckle_radius_px": setup.speckle_radius_px,
                    "speckle_q": q_at_radius(setup, setup.speckle_radius_px),
                    "symmetry_order": setup.symmetry_order,
                    "wavelength": setup.wavelength,
                    "distance_mm": setup.distance_mm,
                    "pixel_mm": setup.pixel_um / 1000.0,
                    "adu_per_photon": setup.adu_per_photon,
                    "offset_adu": setup.offset_adu,
                    "read_noise_adu": setup.read_noise_adu,
                    "setup": str(asdict(setup)),
                }
            )
            handle.create_dataset("tags", data=tags)
            handle.create_dataset(
                "dark", data=np.arange(setup.shots) < setup.dark_shots
            )
            handle.create_dataset("speckle_phase", data=phases)
            handle.create_dataset("speckle_amplitudes", data=amplitudes)
            handle.create_dataset("ring_scale", data=ring_scales)
    return {
        "data": directory / name,
        "mask": directory / "mask.npy",
        "truth": directory / "truth.h5",
        "directory": directory,
    }
