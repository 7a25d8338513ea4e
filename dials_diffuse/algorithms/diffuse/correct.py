"""Corrections of the integrated voxels: count rate to intensity, asymmetric unit.

mdx2's definitions (with DIALS's pixel-centre convention):

- count rate = counts / seconds, error = sqrt(counts) / seconds (counts/s;
  sqrt(1) / seconds for a voxel without counts, where mdx2 gives 0);
- intensity = count rate / (solid angle x air attenuation x detector
  efficiency x polarization), each factor switchable, evaluated at the
  voxel's mean pixel position;
- rs_volume = pixels x d3s / V*: the reciprocal-space volume swept, in units
  of the reciprocal cell volume V* (d3s = inverse Lorentz x solid angle x
  frame width / wavelength^3 at the mean pixel position);
- s = |B h| (inverse Angstrom), from the crystal's B matrix;
- (h, k, l) mapped to the asymmetric unit of the Laue group (cctbx's
  reciprocal-space ASU), `op` the index of the Laue-group operator
  (cctbx's order of the space group's Laue group) that does it;
- with ``lorentz=True`` intensities are multiplied by rs_volume;
- with a binned background (`background.BinnedBackground`), its count rate
  at the voxel's mean (phi, iy, ix) is subtracted from the count rate first.
"""

import dataclasses
import logging

import numpy as np
from libtbx.phil import parse

from dials_diffuse import geometry
from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)

#: The parameters of correct (dials.diffuse.correct and process include them).
phil_scope = parse(
    """
attenuation = True
  .type = bool
  .help = "Correct for absorption in the air between sample and detector."
efficiency = True
  .type = bool
  .help = "Correct for the sensor's absorption efficiency (oblique incidence)."
polarization = True
  .type = bool
  .help = "Correct for the polarization of the beam."
lorentz = False
  .type = bool
  .help = "Multiply intensities by rs_volume (the Lorentz correction for"
          "integrated Bragg intensities)."
p1 = False
  .type = bool
  .help = "Map to the asymmetric unit with Friedel symmetry only (P-1)"
          "instead of the crystal's Laue group."
"""
)

#: The columns of an integrated table that correct needs.
INTEGRATED_COLUMNS = (
    "h",
    "k",
    "l",
    "n",
    "counts",
    "pixels",
    "seconds",
    "iy",
    "ix",
    "phi",
)


def correction_factors(experiment, iy, ix, which, panels=None):
    """Correction factors at mean pixel positions (exact, not interpolated).

    Parameters
    ----------
    experiment : dxtbx Experiment
    iy, ix : ndarray
        0-based pixel indices within the panel (fractional means); the
        position used is index + 0.5 in DIALS pixel coordinates (the pixel
        centre).
    which : iterable of str
        Any of "solid_angle", "attenuation", "efficiency", "polarization",
        "d3s".
    panels : ndarray of int, optional
        The panel of each position; default panel 0 for all.

    Returns
    -------
    dict of name -> ndarray
    """
    if panels is None:
        return _panel_correction_factors(experiment, 0, iy, ix, which)
    panels = np.asarray(panels)
    iy, ix = np.asarray(iy), np.asarray(ix)
    factors = {name: np.empty(len(panels)) for name in which}
    for number in np.unique(panels):
        rows = panels == number
        for name, values in _panel_correction_factors(
            experiment, int(number), iy[rows], ix[rows], which
        ).items():
            factors[name][rows] = values
    return factors


def _panel_correction_factors(experiment, number, iy, ix, which):
    """`correction_factors` of positions on one panel."""
    panel, beam = experiment.detector[number], experiment.beam
    lab = geometry.lab_coordinates(
        panel, np.asarray(ix, np.float64) + 0.5, np.asarray(iy, np.float64) + 0.5
    )
    makers = {
        "solid_angle": lambda: geometry.solid_angle(panel, beam, lab),
        "attenuation": lambda: geometry.air_attenuation(panel, beam, lab),
        "efficiency": lambda: geometry.detector_efficiency(panel, beam, lab),
        "polarization": lambda: geometry.polarization_factor(
            geometry.pixel_s1(panel, beam, lab), beam
        ),
        "d3s": lambda: geometry.d3s_volume(
            panel, beam, experiment.goniometer, experiment.scan, lab
        ),
    }
    return {name: makers[name]() for name in which}


def laue_rotations(space_group):
    """Rotation matrices (n, 3, 3) of the space group's Laue group, in `op` order.

    An index h (row vector) maps to h . R; the order is cctbx's for the tidy
    Laue group (``crystal.symmetry(space_group=laue).space_group().all_ops()``).
    """
    from cctbx import crystal

    laue = crystal.symmetry(
        space_group=space_group.build_derived_laue_group()
    ).space_group()
    return np.array(
        [np.reshape(operator.r().as_double(), (3, 3)) for operator in laue.all_ops()]
    )


def map_to_asu(hkl, subdivide, space_group):
    """Map fractional (h, k, l) on the voxel grid to the Laue group's ASU.

    Parameters
    ----------
    hkl : ndarray (n, 3)
        Voxel centres, multiples of 1/subdivide.
    subdivide : (int, int, int)
    space_group : cctbx sgtbx.space_group

    Returns
    -------
    asu : ndarray (n, 3) float
    op : ndarray (n,) int32
        Index into `laue_rotations(space_group)` of the rotation R with
        asu = hkl . R (the first one, when several do).
    """
    from cctbx import crystal, miller
    from cctbx.array_family import flex

    scale = int(np.lcm.reduce(np.asarray(subdivide, dtype=np.int64)))
    integer = np.rint(np.asarray(hkl, dtype=np.float64) * scale).astype(np.int64)
    if np.any(np.abs(integer) > 2**31 - 1):
        raise DataError("Miller indices too large to map to the asymmetric unit")
    symmetry = crystal.symmetry(space_group=space_group.build_derived_laue_group())
    indices = flex.miller_index(
        flex.int(integer[:, 0].astype(np.int32)),
        flex.int(integer[:, 1].astype(np.int32)),
        flex.int(integer[:, 2].astype(np.int32)),
    )
    asu = (
        miller.set(symmetry, indices, anomalous_flag=False)
        .map_to_asu()
        .indices()
        .as_vec3_double()
        .as_numpy_array()
        .astype(np.int64)
    )
    op = np.full(len(integer), -1, dtype=np.int32)
    for number, rotation in enumerate(laue_rotations(space_group)):
        mapped = np.rint(integer @ rotation).astype(np.int64)
        hit = (op < 0) & np.all(mapped == asu, axis=1)
        op[hit] = number
    off_grid = np.any(
        (asu * np.asarray(subdivide, dtype=np.int64)) % scale != 0, axis=1
    )
    if np.any(op < 0) or np.any(off_grid):
        raise DataError(
            "subdivide is not compatible with the Laue group (a symmetry operator "
            "moves voxel centres off the grid): use equal subdivide along "
            "symmetry-related axes"
        )
    return asu / scale, op


def observations_per_voxel(table):
    """Number of rows (observations) of each distinct (h, k, l) of a table.

    The redundancy of a corrected table's asymmetric-unit voxels, in no
    particular order; the same counts as pandas'
    ``table.to_frame().groupby(["h", "k", "l"]).size()``.
    """
    h, k, l = (np.asarray(table[name]) for name in ("h", "k", "l"))  # noqa: E741
    order = np.lexsort((l, k, h))
    hkl = np.stack([h[order], k[order], l[order]], axis=1)
    new_voxel = np.ones(len(order), dtype=bool)
    new_voxel[1:] = np.any(hkl[1:] != hkl[:-1], axis=1)
    starts = np.flatnonzero(new_voxel)
    return np.diff(np.append(starts, len(order)))


def correct(
    table,
    experiment,
    corrections=("attenuation", "efficiency", "polarization"),
    lorentz=False,
    p1=False,
    background=None,
):
    """The corrected table (`hkl_table`) from an integrated one.

    Parameters
    ----------
    table : Table
        From integrate: h, k, l, n, counts, pixels, seconds, phi, iy, ix
        (and panel, for a multi-panel detector).
    experiment : dxtbx Experiment
    corrections : iterable of str
        Factors divided out besides the solid angle: any of "attenuation",
        "efficiency", "polarization".
    lorentz : bool
        Multiply intensities by rs_volume.
    p1 : bool
        Map with Friedel symmetry only (P-1) instead of the Laue group.
    background : BinnedBackground or PanelBackgrounds, optional
        Count rate per pixel subtracted at each voxel's mean (phi, iy, ix)
        (on its panel).

    Returns
    -------
    Table `hkl_table`: h, k, l (ASU), op, n, panel (multi-panel detectors),
    phi, iy, ix, s, rs_volume, counts, pixels, seconds, intensity,
    intensity_error.
    """
    from cctbx import sgtbx

    from dials_diffuse.io.tables import Table

    seconds = np.asarray(table["seconds"], dtype=np.float64)
    if np.any(~(seconds > 0)):
        bad = int(np.count_nonzero(~(seconds > 0)))
        raise DataError(
            f"{bad} voxel(s) have zero exposure time: check the images' exposure "
            "times (dials.show) before integrating"
        )
    subdivide = np.asarray(table.attrs.get("subdivide", (1, 1, 1)), dtype=np.int64)
    hkl = np.stack([table["h"], table["k"], table["l"]], axis=1).astype(np.float64)
    crystal = experiment.crystal
    B = np.asarray(crystal.get_B(), dtype=np.float64).reshape(3, 3)
    s = np.linalg.norm(hkl @ B.T, axis=1)
    space_group = (
        sgtbx.space_group_info("P -1").group() if p1 else crystal.get_space_group()
    )
    asu, op = map_to_asu(hkl, subdivide, space_group)
    from dials_diffuse.algorithms.diffuse.background import PanelBackgrounds

    panels = table["panel"] if "panel" in table.columns else None
    if background is not None:
        n_background = (
            len(background) if isinstance(background, PanelBackgrounds) else 1
        )
        if n_background != len(experiment.detector):
            raise DataError(
                f"the background has {n_background} panel(s), the detector "
                f"{len(experiment.detector)}"
            )
    if panels is None and len(experiment.detector) != 1:
        raise DataError(
            f"the detector has {len(experiment.detector)} panels but the table "
            "has no panel column: integrate it again with this experiment"
        )
    factors = correction_factors(
        experiment,
        table["iy"],
        table["ix"],
        ("solid_angle", "d3s", *corrections),
        panels=panels,
    )
    counts = np.asarray(table["counts"], dtype=np.float64)
    count_rate = counts / seconds
    # Poisson error; a voxel without counts gets the error of one count, so
    # that inverse-variance weights stay finite (mdx2 gives it zero).
    count_rate_error = np.sqrt(np.maximum(counts, 1.0)) / seconds
    if background is not None:
        where = (table["phi"], table["iy"], table["ix"])
        if panels is not None:
            where = (*where, panels)
        count_rate = count_rate - background(*where)
    scale = factors["solid_angle"].copy()
    for name in corrections:
        scale *= factors[name]
    reciprocal_cell_volume = abs(np.linalg.det(B))
    rs_volume = np.asarray(table["pixels"]) * factors["d3s"] / reciprocal_cell_volume
    intensity = count_rate / scale
    intensity_error = count_rate_error / scale
    if lorentz:
        intensity = intensity * rs_volume
        intensity_error = intensity_error * rs_volume
    columns = {
        "h": asu[:, 0].astype(np.float32),
        "k": asu[:, 1].astype(np.float32),
        "l": asu[:, 2].astype(np.float32),
        "op": op,
        "n": np.asarray(table["n"], dtype=np.int32),
        **({} if panels is None else {"panel": np.asarray(panels, dtype=np.int32)}),
        "phi": table["phi"],
        "iy": table["iy"],
        "ix": table["ix"],
        "s": s.astype(np.float32),
        "rs_volume": rs_volume.astype(np.float32),
        "counts": table["counts"],
        "pixels": table["pixels"],
        "seconds": seconds,
        "intensity": intensity.astype(np.float32),
        "intensity_error": intensity_error.astype(np.float32),
    }
    attrs = dict(table.attrs)
    attrs["corrections"] = ",".join(["solid_angle", *corrections])
    attrs["lorentz"] = bool(lorentz)
    attrs["space_group"] = str(space_group.info())
    # The cell and wavelength go with the table (merge exports the map on the
    # supercell: dials_diffuse.io.mtz).
    attrs["unit_cell"] = tuple(crystal.get_unit_cell().parameters())
    attrs["wavelength"] = float(experiment.beam.get_wavelength())
    return Table("hkl_table", columns, attrs)


@dataclasses.dataclass
class CorrectResult:
    """What `do_correct` made: the corrected table and the corrections applied."""

    table: object
    corrections: list

    def summary(self):
        """The key results for a program's JSON summary."""
        return {"voxels": len(self.table), "corrections": self.corrections}


def do_correct(table, experiment, params, background=None, name="the table"):
    """Count rates to corrected intensities in the asymmetric unit (dials.diffuse.correct).

    Parameters
    ----------
    table : Table
        The integrated table of integrate (`INTEGRATED_COLUMNS`).
    experiment : dxtbx Experiment
        The refined experiment (a detector of one or more panels).
    params : PHIL extract with the parameters of `phil_scope`
    background : BinnedBackground, optional
        Count rate per pixel subtracted at each voxel's mean (phi, iy, ix).
    name : str
        The table's file name, for messages.

    Returns
    -------
    CorrectResult
    """
    missing = set(INTEGRATED_COLUMNS) - set(table.columns)
    if missing:
        raise DataError(
            f"{name}: not an integrated table (no {', '.join(sorted(missing))})"
        )
    corrections = [
        correction
        for correction in ("attenuation", "efficiency", "polarization")
        if getattr(params, correction)
    ]
    corrected = correct(
        table,
        experiment,
        corrections=corrections,
        lorentz=params.lorentz,
        p1=params.p1,
        background=background,
    )
    logger.info(
        "Corrected %d voxel observations (%s); %d asymmetric-unit voxels; "
        "median intensity %.4g",
        len(corrected),
        ", ".join(["solid angle", *corrections]),
        len(observations_per_voxel(corrected)),
        float(np.median(corrected["intensity"])),
    )
    return CorrectResult(corrected, ["solid_angle", *corrections])
