"""The forward model of a rotation experiment: what each pixel expects to count.

Everything here is a rate or an expectation; noise is added by the caller.
For a pixel with diffracted-beam vector s1 at rotation angle phi, with
fractional Miller index ``hkl = A⁻¹ F⁻¹ R(axis, -phi) S⁻¹ (s1 - s0)`` and
``|s| = |s1 - s0|`` (Å⁻¹, = 1/d):

``rate = [bragg(hkl) + diffuse(hkl, |s|) + background] * C``   (counts/s)

- ``bragg``: the structure-factor-like intensity ``I(h0)`` of the nearest
  lattice point ``h0 = round(hkl)`` times a reciprocal-space Gaussian
  ``exp(-|Δq|² / 2σ²)``, ``Δq = A (hkl - h0)`` (Å⁻¹), with
  ``σ² = σ0² + (|s| η)²`` (``σ0`` the spot size, ``η`` the mosaic spread in
  radians), averaged over sub-steps of each frame's rotation;
- ``diffuse``: a smooth, analytic function of fractional hkl and |s|:
  halos ``a_halo exp(κ (cos 2πh + cos 2πk + cos 2πl - 3)) exp(-B_halo |s|²/2)``
  around every lattice point, plus a liquid ring
  ``a_ring exp(-(|s| - s_ring)² / 2 w_ring²)``;
- ``background``: a flat rate per pixel;
- ``C = P Ω E T_air``, the physical corrections, applied as a detector sees
  them (``correction_factors``).

Units: rates in counts/s per pixel at the detector centre (where C ≈ 1),
|s| and σ in Å⁻¹, angles in radians unless the name says degrees.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np

from dials_diffuse.simulate.models import pixel_lab_mm, reciprocal_to_hkl_matrix


@dataclass(frozen=True)
class DiffuseModel:
    """Parameters of the analytic diffuse signal (rates in counts/s).

    Attributes
    ----------
    halo_amplitude : float
        Peak rate of a halo at a lattice point (counts/s, before corrections).
    halo_kappa : float
        Sharpness κ of the halos: near a lattice point the halo is a Gaussian
        of width ``1 / (2π sqrt(κ))`` r.l.u.
    halo_b_factor : float
        Fall-off of the halos with resolution, ``exp(-B |s|²/2)`` (Å²).
    ring_amplitude : float
        Peak rate of the liquid ring (counts/s).
    ring_s : float
        Ring position |s| = 1/d (Å⁻¹).
    ring_width : float
        Gaussian width of the ring in |s| (Å⁻¹).
    halo_weights : (float, float, float)
        Weights of the halos' periodic terms along h, k and l. Unequal
        weights make the map anisotropic beyond the lattice's own symmetry,
        so that an indexing ambiguity (e.g. h <-> k when a = b) can be told
        from the diffuse signal; equal weights give the same map whatever
        the indexing.
    """

    halo_amplitude: float = 20.0
    halo_kappa: float = 2.0
    halo_b_factor: float = 20.0
    ring_amplitude: float = 15.0
    ring_s: float = 1.0 / 3.7
    ring_width: float = 0.02
    halo_weights: tuple = (1.0, 1.0, 1.0)

    def __call__(self, hkl, s):
        """Diffuse rate (counts/s) at fractional `hkl` (..., 3) and |s| (Å⁻¹)."""
        weights = np.asarray(self.halo_weights, dtype=np.float64)
        periodic = (np.cos(2.0 * np.pi * hkl) * weights).sum(axis=-1) - weights.sum()
        halos = (
            self.halo_amplitude
            * np.exp(self.halo_kappa * periodic)
            * np.exp(-0.5 * self.halo_b_factor * s * s)
        )
        ring = self.ring_amplitude * np.exp(
            -0.5 * ((s - self.ring_s) / self.ring_width) ** 2
        )
        return halos + ring

    def as_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class BraggModel:
    """Peak shape of the Bragg reflections.

    Attributes
    ----------
    spot_sigma : float
        Reciprocal-space Gaussian width σ0 from beam divergence and crystal
        size (Å⁻¹).
    mosaicity_deg : float
        Mosaic spread η (degrees, Gaussian sigma), widening with |s|.
    """

    spot_sigma: float = 0.0015
    mosaicity_deg: float = 0.1

    def as_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Corrections:
    """Constants of the physical corrections (see `correction_factors`).

    Attributes
    ----------
    air_mu_per_mm : float
        Linear attenuation coefficient of air (mm⁻¹); about 3e-4 at 1 Å.
    """

    air_mu_per_mm: float = 3.0e-4

    def as_dict(self):
        return asdict(self)


def correction_factors(panel, beam, constants):
    """The corrections a detector pixel applies to scattered intensity.

    Returns a dict of (ny, nx) arrays, dimensionless, and their product
    ``total = polarization * solid_angle * efficiency * air``:

    - polarization (Kahn et al. 1982): ``P = f (1 - (ŝ·e)²) + (1 - f)(1 - (ŝ·n)²)``
      with ŝ the unit scattered direction, n the beam's polarization normal,
      e = n × beam direction the electric-vector direction, f the
      polarization fraction;
    - solid_angle, relative to a pixel normal to the beam at the panel
      distance D: ``Ω = cos α D² / r²``, ``cos α = |ŝ·normal|``, r the
      distance to the pixel centre (mm) (= cos³ α for a flat panel);
    - efficiency of a sensor of thickness t and attenuation μ (dxtbx panel
      values): ``E = (1 - exp(-μ t / cos α)) / (1 - exp(-μ t))``, relative to
      normal incidence;
    - air: ``T = exp(-μ_air (r - D))``, the extra air absorption relative to
      the detector centre.
    """
    lab = pixel_lab_mm(panel)
    r = np.linalg.norm(lab, axis=-1)
    unit = lab / r[..., None]
    normal = np.array(panel.get_normal())
    cos_alpha = np.abs(unit @ normal)
    distance = panel.get_distance()

    n = np.array(beam.get_polarization_normal())
    direction = np.array(beam.get_sample_to_source_direction())
    e = np.cross(n, direction)
    f = beam.get_polarization_fraction()
    polarization = f * (1.0 - (unit @ e) ** 2) + (1.0 - f) * (1.0 - (unit @ n) ** 2)

    solid_angle = cos_alpha * distance**2 / r**2

    mu_t = panel.get_mu() * panel.get_thickness()
    efficiency = (1.0 - np.exp(-mu_t / cos_alpha)) / (1.0 - math.exp(-mu_t))

    air = np.exp(-constants.air_mu_per_mm * (r - distance))
    return {
        "polarization": polarization,
        "solid_angle": solid_angle,
        "efficiency": efficiency,
        "air": air,
        "total": polarization * solid_angle * efficiency * air,
    }


class IntensityLookup:
    """Bragg intensities I(hkl) in a dense 3-D array for fast lookup.

    Parameters
    ----------
    indices : ndarray of int, (n, 3)
        Every Miller index with an intensity (all symmetry mates).
    intensities : ndarray of float, (n,)
        Intensities (counts/s at the peak centre, before corrections).
    """

    def __init__(self, indices, intensities):
        self.hmax = np.abs(indices).max(axis=0) + 1
        shape = tuple(2 * self.hmax + 1)
        self.table = np.zeros(shape, dtype=np.float64)
        shifted = indices + self.hmax
        self.table[shifted[:, 0], shifted[:, 1], shifted[:, 2]] = intensities

    def __call__(self, h0):
        """I at integer indices `h0` (..., 3); zero outside the table."""
        shifted = h0 + self.hmax
        inside = np.all((shifted >= 0) & (shifted < 2 * self.hmax + 1), axis=-1)
        clipped = np.where(inside[..., None], shifted, 0)
        values = self.table[clipped[..., 0], clipped[..., 1], clipped[..., 2]]
        return np.where(inside, values, 0.0)


def rotation_frame_rates(
    s1,
    s0,
    crystal,
    goniometer,
    phi_start_deg,
    phi_width_deg,
    substeps,
    bragg_model,
    intensities,
    diffuse,
    background,
):
    """Expected rates (counts/s, before corrections) on one rotation frame.

    Parameters
    ----------
    s1 : ndarray (ny, nx, 3)
        Diffracted-beam vectors of the pixel centres (Å⁻¹).
    s0 : ndarray (3,)
        Incident beam vector (Å⁻¹).
    crystal, goniometer : dxtbx models
    phi_start_deg, phi_width_deg : float
        The frame's rotation range (degrees).
    substeps : int
        Rotation sub-steps averaged over the frame (at their centres).
    bragg_model : BraggModel
    intensities : IntensityLookup
    diffuse : DiffuseModel
    background : float
        Flat background rate (counts/s).

    Returns
    -------
    dict of (ny, nx) arrays: ``bragg``, ``diffuse`` and ``background`` rates,
    Bragg and diffuse averaged over the sub-steps.
    """
    q = s1 - s0
    s = np.linalg.norm(q, axis=-1)
    A = np.array(crystal.get_A()).reshape(3, 3)
    eta = math.radians(bragg_model.mosaicity_deg)
    two_sigma_sq = 2.0 * (bragg_model.spot_sigma**2 + (s * eta) ** 2)
    bragg = np.zeros(s.shape)
    diffuse_rate = np.zeros(s.shape)
    for step in range(substeps):
        phi = phi_start_deg + phi_width_deg * (step + 0.5) / substeps
        M = reciprocal_to_hkl_matrix(crystal, goniometer, math.radians(phi))
        hkl = q @ M.T
        h0 = np.rint(hkl).astype(np.int64)
        dq = (hkl - h0) @ A.T
        bragg += intensities(h0) * np.exp(-(dq * dq).sum(axis=-1) / two_sigma_sq)
        diffuse_rate += diffuse(hkl, s)
    return {
        "bragg": bragg / substeps,
        "diffuse": diffuse_rate / substeps,
        "background": np.full(s.shape, float(background)),
    }
