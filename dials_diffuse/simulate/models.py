"""dxtbx models for the simulated experiments, built in code.

The simulator is the independent "truth" path: it builds its own dxtbx
Beam, Detector, Goniometer, Scan and Crystal and evaluates the geometry with
its own vectorised numpy formulas (`pixel_s1`, `rotated_hkl`), written
directly from the dxtbx conventions and checked against the models' own
methods in the tests:

- pixel centres at (i + 0.5) px; lab coordinate of a pixel centre
  ``origin + fast * (x + 0.5) * px_fast + slow * (y + 0.5) * px_slow`` (mm);
- ``s0 = -direction / wavelength`` (Å⁻¹), ``s1 = |s0| * unit(lab)``;
- ``rlp = F⁻¹ R(axis, -phi) S⁻¹ (s1 - s0)``, ``hkl = A⁻¹ rlp`` with ``A = U B``.
"""

import math
from dataclasses import dataclass

import numpy as np
from dxtbx.model import (
    BeamFactory,
    Crystal,
    DetectorFactory,
    GoniometerFactory,
    Scan,
)
from scitbx.array_family import flex


@dataclass(frozen=True)
class DetectorLayout:
    """A single-panel pixel detector perpendicular to the beam.

    Attributes
    ----------
    nx, ny : int
        Pixels along fast (x) and slow (y).
    pixel_mm : float
        Pixel size (mm), square.
    distance_mm : float
        Sample to detector distance along the beam (mm).
    beam_px : tuple of float
        Beam centre (fast, slow) in pixels (pixel centres at i + 0.5).
    thickness_mm : float
        Silicon sensor thickness (mm).
    saturation : int
        The NXmx ``saturation_value`` (dxtbx's trusted maximum). The detector
        records true counts at or above it as ``saturation + 1`` (see
        `record_overloads`).
    """

    nx: int
    ny: int
    pixel_mm: float
    distance_mm: float
    beam_px: tuple
    thickness_mm: float = 0.45
    saturation: int = 60000


def record_overloads(counts, saturation):
    """Recorded values of true `counts`: those >= `saturation` become `saturation + 1`.

    The overload value ``saturation + 1`` piles up at the top of the pixel
    histogram, and the value ``saturation`` itself never occurs, so that
    dxtbx's trusted range ``(.., saturation)`` means the same under both of
    its rules (exclusive, low < v < high, up to dxtbx 3.11; inclusive since
    3.12): every recorded count below `saturation` trusted, the overloads not.
    """
    return np.where(counts >= saturation, saturation + 1, counts)


def silicon_mu_per_mm(wavelength):
    """Linear attenuation coefficient of silicon (mm⁻¹) at `wavelength` (Å).

    The same cctbx table dxtbx uses for the detector model (``mu`` there).
    """
    from cctbx.eltbx import attenuation_coefficient

    table = attenuation_coefficient.get_table("Si")
    return table.mu_at_angstrom(wavelength) / 10.0


def make_beam(wavelength, polarization_fraction=0.999):
    """A monochromatic beam along -z, polarised in the horizontal (x) plane."""
    return BeamFactory.make_polarized_beam(
        sample_to_source=(0.0, 0.0, 1.0),
        wavelength=wavelength,
        polarization=(0.0, 1.0, 0.0),
        polarization_fraction=polarization_fraction,
    )


def make_detector(layout, wavelength):
    """The dxtbx detector for `layout`: fast +x, slow -y, normal along the beam.

    Uses the simple (no parallax) pixel-to-mm strategy: the forward model puts
    all signal at the pixel centre.
    """
    origin = (
        -layout.beam_px[0] * layout.pixel_mm,
        layout.beam_px[1] * layout.pixel_mm,
        -layout.distance_mm,
    )
    return DetectorFactory.make_detector(
        "SENSOR_PAD",
        (1.0, 0.0, 0.0),
        (0.0, -1.0, 0.0),
        origin,
        (layout.pixel_mm, layout.pixel_mm),
        (layout.nx, layout.ny),
        (-1.0, float(layout.saturation)),
        name="/entry/instrument/detector/module",
        thickness=layout.thickness_mm,
        material="Si",
        mu=silicon_mu_per_mm(wavelength),
    )


def make_goniometer():
    """A single-axis goniometer rotating about +x (dxtbx frame)."""
    return GoniometerFactory.make_goniometer(
        (1.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )


def make_scan(frames, start_deg, width_deg, exposure_s):
    """A rotation scan: 1-based images 1..frames, `width_deg` per frame."""
    return Scan(
        (1, frames),
        (start_deg, width_deg),
        flex.double(frames, exposure_s),
        flex.double_range(0, frames) * exposure_s,
        batch_offset=0,
        deg=True,
    )


def make_crystal(unit_cell, space_group, orientation_seed):
    """A crystal with cell `unit_cell` (Å, degrees) in a random orientation.

    Parameters
    ----------
    unit_cell : tuple of 6 float
        a, b, c (Å), alpha, beta, gamma (degrees).
    space_group : str
        Space group symbol, e.g. "P 21 21 21".
    orientation_seed : int
        Seeds the random orientation U (uniform on rotations).
    """
    from cctbx import sgtbx, uctbx

    cell = uctbx.unit_cell(unit_cell)
    B = np.array(cell.fractionalization_matrix()).reshape(3, 3).T
    U = random_rotation(np.random.default_rng(orientation_seed))
    A = U @ B
    real_space = np.linalg.inv(A)  # rows are a, b, c (Å)
    crystal = Crystal(
        tuple(real_space[0]),
        tuple(real_space[1]),
        tuple(real_space[2]),
        space_group=sgtbx.space_group_info(space_group).group(),
    )
    return crystal


def random_rotation(rng):
    """A rotation matrix drawn uniformly (random unit quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def pixel_lab_mm(panel):
    """Lab coordinates (mm) of every pixel centre, shape (ny, nx, 3)."""
    nx, ny = panel.get_image_size()
    px_fast, px_slow = panel.get_pixel_size()
    origin = np.array(panel.get_origin())
    fast = np.array(panel.get_fast_axis())
    slow = np.array(panel.get_slow_axis())
    x = (np.arange(nx) + 0.5) * px_fast
    y = (np.arange(ny) + 0.5) * px_slow
    return (
        origin[None, None, :]
        + x[None, :, None] * fast[None, None, :]
        + y[:, None, None] * slow[None, None, :]
    )


def pixel_s1(panel, beam):
    """Diffracted-beam vectors s1 (Å⁻¹) of every pixel centre, shape (ny, nx, 3)."""
    lab = pixel_lab_mm(panel)
    return lab / np.linalg.norm(lab, axis=-1, keepdims=True) / beam.get_wavelength()


def rotation_matrix(axis, angle_rad):
    """Rodrigues rotation matrix for a right-handed rotation about `axis`."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    K = np.array(
        [[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]
    )
    return np.eye(3) + math.sin(angle_rad) * K + (1 - math.cos(angle_rad)) * K @ K


def reciprocal_to_hkl_matrix(crystal, goniometer, phi_rad):
    """Matrix M with hkl = M (s1 - s0) at rotation angle `phi_rad` (radians).

    ``M = A⁻¹ F⁻¹ R(axis, -phi) S⁻¹`` (dxtbx: F fixed rotation, S setting
    rotation, A = U B of the crystal).
    """
    A = np.array(crystal.get_A()).reshape(3, 3)
    F = np.array(goniometer.get_fixed_rotation()).reshape(3, 3)
    S = np.array(goniometer.get_setting_rotation()).reshape(3, 3)
    R = rotation_matrix(goniometer.get_rotation_axis_datum(), -phi_rad)
    return np.linalg.inv(A) @ np.linalg.inv(F) @ R @ np.linalg.inv(S)
