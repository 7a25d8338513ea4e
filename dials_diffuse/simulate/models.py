"""dxtbx models for the simulated experiments, built in code.

The simulator is the independent "truth" path: it builds its own dxtbx
Beam, Detector, Goniometer, Scan and Crystal and evaluates the geometry with
its own vectorised numpy formulas (`pixel_lab_mm`, `pixel_s1`,
`reciprocal_to_hkl_matrix`), written directly from the dxtbx conventions and
checked against the models' own methods in the tests:

- pixel centres at (i + 0.5) px; the surface point whose rays a pixel
  records: ``origin + fast * x_mm + slow * y_mm`` with ``(x_mm, y_mm)`` the
  pixel centre ``((x + 0.5) px_fast, (y + 0.5) px_slow)`` moved back along
  the ray by the mean absorption depth of the sensor (parallax: a ray that
  enters the silicon at an angle is absorbed, on average, further out;
  dxtbx's ``ParallaxCorrectedPxMmStrategy``, which ``dials.import`` uses for
  the sensor our NXmx files declare);
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

    A silicon sensor `layout.thickness_mm` thick with dxtbx's parallax
    correction (``ParallaxCorrectedPxMmStrategy``), as ``dials.import`` makes
    it from the NXmx file we write (which declares the sensor): the forward
    model (`pixel_lab_mm`) applies the same parallax, so the data, the file
    and the truth agree.
    """
    from dxtbx.model import ParallaxCorrectedPxMmStrategy

    mu = silicon_mu_per_mm(wavelength)
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
        px_mm=ParallaxCorrectedPxMmStrategy(mu, layout.thickness_mm),
        material="Si",
        mu=mu,
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


def mean_absorption_depth(mu, thickness, cos_incidence):
    """Mean path (mm) of the absorbed photons in a sensor, along the ray.

    For attenuation `mu` (mm⁻¹), `thickness` t (mm) and incidence cosine c
    (to the panel normal): the mean of the path p over 0..t/c weighted by
    mu exp(-mu p), not normalised by the absorbed fraction (dxtbx's
    ``attenuation_length``): ``1/mu - (t/c + 1/mu) exp(-mu t / c)``.
    """
    path = thickness / cos_incidence
    return 1.0 / mu - (path + 1.0 / mu) * np.exp(-mu * path)


def pixel_lab_mm(panel):
    """Lab coordinates (mm) of the point each pixel's centre sees, (ny, nx, 3).

    The pixel centre on the panel, moved back towards the beam along its ray
    by the sensor's mean absorption depth when the panel has a sensor
    (thickness and mu > 0): photons that enter the sensor at an angle are
    absorbed, on average, that far along the ray, so a pixel records the rays
    that enter the surface closer to the beam (parallax). The same first-order
    correction as dxtbx's ``ParallaxCorrectedPxMmStrategy.to_millimeter``.
    """
    nx, ny = panel.get_image_size()
    px_fast, px_slow = panel.get_pixel_size()
    origin = np.array(panel.get_origin())
    fast = np.array(panel.get_fast_axis())
    slow = np.array(panel.get_slow_axis())
    x = np.broadcast_to((np.arange(nx) + 0.5) * px_fast, (ny, nx))
    y = np.broadcast_to(((np.arange(ny) + 0.5) * px_slow)[:, None], (ny, nx))

    def lab(x, y):
        return origin + x[..., None] * fast + y[..., None] * slow

    mu, thickness = panel.get_mu(), panel.get_thickness()
    if mu > 0 and thickness > 0:
        centre = lab(x, y)
        ray = centre / np.linalg.norm(centre, axis=-1, keepdims=True)
        normal = np.cross(fast, slow)
        normal = normal if origin @ normal > 0 else -normal
        depth = mean_absorption_depth(mu, thickness, ray @ normal)
        x = x - (ray @ fast) * depth
        y = y - (ray @ slow) * depth
    return lab(x, y)


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
