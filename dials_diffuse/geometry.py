"""Vectorised per-pixel geometry from dxtbx models.

dxtbx conventions throughout: pixel centres at (i + 0.5) in pixel
coordinates, s0 = -direction / wavelength, the rotation at angle phi is
R = S . R(axis_datum, phi) . F, and fractional Miller indices are
hkl = A^-1 . F^-1 . R(axis_datum, -phi) . S^-1 . (s1 - s0).

Units: lab coordinates in mm, wave vectors in inverse Angstrom, angles in
degrees unless a name says radians.
"""

import numpy as np


def _as_array(flex_or_tuple, shape):
    return np.asarray(flex_or_tuple, dtype=np.float64).reshape(shape)


def lab_coordinates(panel, x, y):
    """Lab coordinates (mm) of pixel positions (x, y) in DIALS pixel coordinates.

    Parameters
    ----------
    panel : dxtbx Panel
    x, y : ndarray
        Fast and slow pixel coordinates (pixel centres at index + 0.5).

    Returns
    -------
    ndarray, shape x.shape + (3,), float64
        Through the panel's own `pixel_to_millimeter` (parallax included when
        the panel's strategy applies it) and `get_lab_coord`.
    """
    from dials.array_family import flex

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    pixel = flex.vec2_double(flex.double(x.ravel()), flex.double(y.ravel()))
    lab = panel.get_lab_coord(panel.pixel_to_millimeter(pixel))
    return lab.as_numpy_array().reshape(x.shape + (3,))


def pixel_lab_coordinates(panel):
    """Lab coordinates (mm) of every pixel centre, shape (rows, columns, 3)."""
    n_columns, n_rows = panel.get_image_size()
    x, y = np.meshgrid(
        np.arange(n_columns, dtype=np.float64) + 0.5,
        np.arange(n_rows, dtype=np.float64) + 0.5,
    )
    return lab_coordinates(panel, x, y)


def pixel_s1(panel, beam, lab=None):
    """Diffracted wave vector s1 of every pixel centre, in inverse Angstrom.

    Parameters
    ----------
    lab : ndarray (..., 3), optional
        Lab coordinates (mm) to use instead of every pixel centre.

    Returns
    -------
    ndarray, shape (rows, columns, 3) (or lab's), float64
        s1 along the ray from the sample to the pixel, |s1| = 1/wavelength.
    """
    lab = pixel_lab_coordinates(panel) if lab is None else lab
    distance = np.linalg.norm(lab, axis=-1, keepdims=True)
    return lab / (distance * beam.get_wavelength())


def rotation_angle_deg(scan, z):
    """Rotation angle (degrees) at array index `z` (frame i spans z in [i, i+1]).

    `z` counts from the scan's first array index (image_range[0] - 1), as
    dxtbx's `Scan.get_angle_from_array_index`.
    """
    start, width = scan.get_oscillation()
    first = scan.get_array_range()[0]
    return start + (np.asarray(z, dtype=np.float64) - first) * width


def polarization_factor(s1, beam):
    """Polarization factor P of each s1 (dimensionless, 0..1).

    P = p (1 - (e1 . u)^2) + (1 - p) (1 - (e2 . u)^2), u the unit vector along
    s1, e1 = unit_s0 x n, e2 = e1 x unit_s0, n the polarization normal and p
    the polarization fraction (mdx2's and DIALS's definition).
    """
    unit_s0 = np.asarray(beam.get_unit_s0(), dtype=np.float64)
    normal = np.asarray(beam.get_polarization_normal(), dtype=np.float64)
    fraction = beam.get_polarization_fraction()
    e1 = np.cross(unit_s0, normal)
    e2 = np.cross(e1, unit_s0)
    u = s1 / np.linalg.norm(s1, axis=-1, keepdims=True)
    cos1 = u @ e1
    cos2 = u @ e2
    return fraction * (1.0 - cos1**2) + (1.0 - fraction) * (1.0 - cos2**2)


def _obliquity(panel, lab=None):
    """(lab coordinates mm, distance mm, cosine of the incidence angle) per pixel."""
    lab = pixel_lab_coordinates(panel) if lab is None else lab
    distance = np.linalg.norm(lab, axis=-1)
    normal = np.asarray(panel.get_normal(), dtype=np.float64)
    cos_incidence = np.abs(lab @ normal) / distance
    return lab, distance, cos_incidence


def solid_angle(panel, beam, lab=None):
    """Solid angle (steradian) of every pixel seen from the sample.

    pixel area x cos(incidence) / distance^2 (mm / mm^2), as mdx2. `lab`
    (..., 3, mm) evaluates at other positions than the pixel centres; `beam`
    is unused but kept for a uniform signature of the corrections.
    """
    _, distance, cos_incidence = _obliquity(panel, lab)
    width, height = panel.get_pixel_size()
    return width * height * cos_incidence / distance**2


def detector_efficiency(panel, beam, lab=None):
    """Fraction of photons absorbed in the sensor: 1 - exp(-mu t / cos(incidence)).

    mu (1/mm) and thickness t (mm) from the panel model; a panel without a
    sensor description (mu or t zero) has efficiency 1.
    """
    _, _, cos_incidence = _obliquity(panel, lab)
    mu = panel.get_mu()
    thickness = panel.get_thickness()
    if mu <= 0 or thickness <= 0:
        return np.ones_like(cos_incidence)
    return 1.0 - np.exp(-mu * thickness / cos_incidence)


def air_attenuation_coefficient(wavelength):
    """Linear attenuation coefficient of air (1/mm) at `wavelength` (Angstrom).

    From cctbx's tabulated N, O and Ar coefficients and air's molar fractions
    (as mdx2).
    """
    from cctbx.eltbx import attenuation_coefficient

    fractions = {"N": 0.781, "O": 0.210, "Ar": 0.009}
    return sum(
        fraction
        * attenuation_coefficient.get_table(element).mu_at_angstrom(wavelength)
        / 10.0
        for element, fraction in fractions.items()
    )


def air_attenuation(panel, beam, lab=None):
    """Transmission through the air from sample to each pixel: exp(-mu_air d)."""
    _, distance, _ = _obliquity(panel, lab)
    return np.exp(-air_attenuation_coefficient(beam.get_wavelength()) * distance)


def inverse_lorentz(panel, beam, goniometer, lab=None):
    """|(unit_s0 x u) . m2| per pixel: the inverse Lorentz factor of rotation data."""
    lab = pixel_lab_coordinates(panel) if lab is None else lab
    u = lab / np.linalg.norm(lab, axis=-1, keepdims=True)
    unit_s0 = np.asarray(beam.get_unit_s0(), dtype=np.float64)
    axis = np.asarray(goniometer.get_rotation_axis(), dtype=np.float64)
    return np.abs(np.cross(unit_s0, u) @ axis)


def d3s_volume(panel, beam, goniometer, scan, lab=None):
    """Reciprocal-space volume (inverse Angstrom cubed) a pixel sweeps in one frame.

    inverse Lorentz x solid angle x frame width (radians) / wavelength^3.
    """
    width_rad = np.radians(scan.get_oscillation()[1])
    return (
        inverse_lorentz(panel, beam, goniometer, lab)
        * solid_angle(panel, beam, lab)
        * width_rad
        / beam.get_wavelength() ** 3
    )


def _rotation_about(axis, angle_deg):
    """Rotation matrices (n, 3, 3) about the unit vector `axis` by angles in degrees."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    angle = np.radians(np.atleast_1d(np.asarray(angle_deg, dtype=np.float64)))
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    cross = np.array(
        [[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]
    )
    return cos * np.eye(3) + sin * cross + (1 - cos) * np.outer(axis, axis)


def crystal_A_at(crystal, scan, z):
    """The crystal's A = UB matrix (n, 3, 3) at array indices `z`.

    Scan-static crystals give the same A everywhere; scan-varying ones are
    interpolated linearly between the scan points (scan point i sits at array
    index first + i, the start of frame i).
    """
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    n_points = crystal.num_scan_points
    if n_points == 0:
        A = np.asarray(crystal.get_A(), dtype=np.float64).reshape(3, 3)
        return np.broadcast_to(A, (z.size, 3, 3)).copy()
    points = np.array(
        [
            np.asarray(crystal.get_A_at_scan_point(i)).reshape(3, 3)
            for i in range(n_points)
        ]
    )
    position = np.clip(z - scan.get_array_range()[0], 0, n_points - 1)
    below = np.minimum(
        np.floor(position).astype(int), n_points - 2 if n_points > 1 else 0
    )
    fraction = (position - below)[:, None, None]
    above = np.minimum(below + 1, n_points - 1)
    return (1 - fraction) * points[below] + fraction * points[above]


def hkl_matrices(experiment, z):
    """Matrices M (n, 3, 3) with hkl = M . (s1 - s0) at array indices `z`.

    M = (S . R(axis_datum, phi(z)) . F . A(z))^-1, the dxtbx convention.
    """
    goniometer = experiment.goniometer
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    S = np.asarray(goniometer.get_setting_rotation(), dtype=np.float64).reshape(3, 3)
    F = np.asarray(goniometer.get_fixed_rotation(), dtype=np.float64).reshape(3, 3)
    rotation = _rotation_about(
        goniometer.get_rotation_axis_datum(), rotation_angle_deg(experiment.scan, z)
    )
    A = crystal_A_at(experiment.crystal, experiment.scan, z)
    return np.linalg.inv(S @ rotation @ F @ A)


def fractional_hkl(experiment, s1, z):
    """Fractional Miller indices of wave vectors `s1` (..., 3) at array indices `z` (...).

    `s1` in inverse Angstrom; `z` broadcast against s1's leading shape.
    """
    s1 = np.asarray(s1, dtype=np.float64)
    z = np.broadcast_to(np.asarray(z, dtype=np.float64), s1.shape[:-1])
    s0 = np.asarray(experiment.beam.get_s0(), dtype=np.float64)
    matrices = hkl_matrices(experiment, z.ravel())
    hkl = np.einsum("nij,nj->ni", matrices, (s1 - s0).reshape(-1, 3))
    return hkl.reshape(s1.shape)
