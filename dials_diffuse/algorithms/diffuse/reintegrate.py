"""Reintegrate: a map from the images with the corrections and the scaling model applied.

mdx2's ``mdx2.reintegrate``, for one or more sweeps at once: after scaling
on a coarse grid (many observations per voxel), the images are binned again
on any grid (usually finer), every chunk's partial voxel sums corrected and
scaled where they are measured, and the partials of all sweeps summed per
asymmetric-unit voxel. Per partial (the pixels of one voxel in one chunk of
frames, at their mean phi, iy, ix; the integrate kernel's output):

- scale = seconds x solid angle x (attenuation x efficiency x polarization,
  as switched) x a(ix, iy, phi) b(phi) d(ix, iy) of the sweep's model;
- background_counts = seconds x solid angle x (...) x a d c(s, phi), the
  counts the model's offset predicts;
- rs_volume = pixels x d3s / V* (as correct: reciprocal-space volume in
  units of the reciprocal cell volume).

Per voxel, summed over partials and sweeps: counts, background_counts,
scale, pixels, rs_volume, and the intensity (counts - background_counts) /
scale with error sqrt(max(counts, 1)) / scale (the maximum-likelihood
intensity of Poisson counts with these scales; merge's inverse-variance
mean of per-observation intensities estimates the same quantity). The model
is a function of (phi, s, ix, iy), not of the grid, so a model refined at
subdivide=2 applies at subdivide=8.
"""

import dataclasses
import logging

import numpy as np
import pandas as pd
from libtbx.phil import parse

from dials_diffuse.algorithms.diffuse import correct as correct_step
from dials_diffuse.algorithms.diffuse import merge as merge_step
from dials_diffuse.algorithms.diffuse.correct import correction_factors, map_to_asu
from dials_diffuse.algorithms.diffuse.integrate import (
    ChunkIntegrator,
    pack_voxel_index,
    unpack_voxel_keys,
)
from dials_diffuse.algorithms.diffuse.scale import TERMS, ScaleModel
from dials_diffuse.algorithms.diffuse.sweep import check_exposure_times
from dials_diffuse.io.tables import Table
from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)

#: The sums kept per voxel.
SUMS = ("counts", "background_counts", "scale", "pixels", "rs_volume", "s_sum")

#: Partial rows accumulated before they are summed per voxel (bounds memory).
_COMPACT_ROWS = 20_000_000


def _build_phil_scope():
    """subdivide and output; the correct step's corrections and p1; merge's apply."""
    scope = parse(
        """
subdivide = None
  .type = ints(size=3, value_min=1)
  .help = "Voxels per reciprocal lattice unit along h, k and l of the new"
          "map (any grid: the scaling model does not depend on it), e.g."
          "subdivide=6,6,6."
output_type = *intensity counts
  .type = choice
  .help = "intensity: (counts - background_counts) / scale per voxel, with"
          "its error; counts: the sums (counts, background_counts, scale,"
          "pixels, rs_volume) for your own estimator, as mdx2.reintegrate."
"""
    )
    for obj in correct_step.phil_scope.objects:
        if obj.name != "lorentz":  # a voxel map of diffuse intensities
            scope.adopt(obj)
    for obj in merge_step.phil_scope.objects:
        if obj.name == "apply":
            scope.adopt(obj)
    return scope


#: The parameters of reintegrate (dials.diffuse.reintegrate includes them).
phil_scope = _build_phil_scope()


class ChunkReintegrator:
    """Bin one chunk of frames, then correct, scale and sum the partials per ASU voxel.

    Parameters
    ----------
    subdivide : (int, int, int)
    seconds : ndarray
        Exposure time (s) of every frame of the source.
    mask_file : MaskFile, optional
    corrections : list of str
        Factors besides the solid angle ("attenuation", "efficiency",
        "polarization").
    model : ScaleModel
        The terms to apply (empty: none).
    space_group : cctbx space_group
        Whose Laue group maps voxels to the asymmetric unit.
    """

    def __init__(self, subdivide, seconds, mask_file, corrections, model, space_group):
        self.integrator = ChunkIntegrator(subdivide, seconds, mask_file)
        self.subdivide = np.asarray(subdivide, dtype=np.int64)
        self.corrections = list(corrections)
        self.model = model
        # By its Hall symbol: the work may be pickled to Dask workers.
        self.hall_symbol = space_group.type().hall_symbol()

    def __call__(self, sweep, chunk):
        from cctbx import sgtbx

        return corrected_partials(
            self.integrator(sweep, chunk),
            sweep.experiment,
            self.subdivide,
            self.corrections,
            self.model,
            sgtbx.space_group(self.hall_symbol),
        )


def corrected_partials(partial, experiment, subdivide, corrections, model, space_group):
    """The kernel's partial sums of one chunk, corrected, scaled and summed per ASU voxel.

    Returns
    -------
    dict
        ``key`` (packed ASU voxel index, unique) and the `SUMS` per key.
    """
    pixels = np.asarray(partial["pixels"], dtype=np.float64)
    used = pixels > 0
    pixels = pixels[used]
    index = np.asarray(partial["index"]).reshape(-1, 3)[used]
    hkl = index / subdivide
    phi = np.asarray(partial["phi_sum"])[used] / pixels
    iy = np.asarray(partial["iy_sum"])[used] / pixels
    ix = np.asarray(partial["ix_sum"])[used] / pixels
    seconds = np.asarray(partial["seconds"], dtype=np.float64)[used]
    counts = np.asarray(partial["counts"], dtype=np.float64)[used]
    factors = correction_factors(
        experiment, iy, ix, ("solid_angle", "d3s", *corrections)
    )
    efficiency = factors["solid_angle"]
    for name in corrections:
        efficiency = efficiency * factors[name]
    B = np.asarray(experiment.crystal.get_B(), dtype=np.float64).reshape(3, 3)
    s = np.linalg.norm(hkl @ B.T, axis=1)
    a, b, c, d = model.factors(pd.DataFrame({"phi": phi, "s": s, "ix": ix, "iy": iy}))
    exposure = seconds * efficiency
    asu, _ = map_to_asu(hkl, subdivide, space_group)
    keys = pack_voxel_index(np.rint(asu * subdivide).astype(np.int64))
    unique, row = np.unique(keys, return_inverse=True)
    row = row.ravel()
    values = {
        "counts": counts,
        "background_counts": exposure * a * d * c,
        "scale": exposure * a * b * d,
        "pixels": pixels,
        "rs_volume": pixels * factors["d3s"] / abs(np.linalg.det(B)),
        "s_sum": s * pixels,
    }
    sums = {
        name: np.bincount(row, weights=value, minlength=len(unique))
        for name, value in values.items()
    }
    return {"key": unique, **sums}


def _summed(parts):
    """One set of per-voxel sums from several (`corrected_partials` outputs)."""
    keys = np.concatenate([part["key"] for part in parts])
    unique, row = np.unique(keys, return_inverse=True)
    row = row.ravel()
    sums = {
        name: np.bincount(
            row,
            weights=np.concatenate([part[name] for part in parts]),
            minlength=len(unique),
        )
        for name in SUMS
    }
    return {"key": unique, **sums}


@dataclasses.dataclass
class ReintegrateResult:
    """What `do_reintegrate` made: the voxel table and how much went into it."""

    table: Table
    sweeps: int
    pixels: int

    def summary(self):
        """The key results for a program's JSON summary."""
        return {"voxels": len(self.table), "sweeps": self.sweeps, "pixels": self.pixels}


def do_reintegrate(
    sweeps,
    params,
    pmap,
    masks=None,
    models=None,
    frame_ranges=None,
    frames_per_chunk=10,
):
    """Reintegrate one or more sweeps into one map (dials.diffuse.reintegrate).

    Parameters
    ----------
    sweeps : list of Sweep
        Crystals of one space group (each in its own cell and orientation).
    params : PHIL extract of `phil_scope`
    pmap : ParallelMap
    masks : list of MaskFile or None, optional
        One per sweep (mask_peaks' mask.nxs).
    models : list of ScaleModel, optional
        One per sweep (scale's scale.nxs); the terms `params.apply` selects
        are applied. None: no model (intensities are corrected count rates).
    frame_ranges : list of (int, int), optional
        0-based half-open frames of each sweep's source.
    frames_per_chunk : int

    Returns
    -------
    ReintegrateResult
    """
    if params.subdivide is None:
        raise DataError(
            "subdivide is required: voxels per r.l.u., e.g. subdivide=6,6,6"
        )
    count = len(sweeps)
    masks = masks or [None] * count
    frame_ranges = frame_ranges or [None] * count
    for what, given in (("mask", masks), ("scaling model", models or [])):
        if given and len(given) != count:
            raise DataError(
                f"{len(given)} {what}(s) for {count} sweep(s): give one per sweep, "
                "in the same order"
            )
    which = [name for name in TERMS if getattr(params.apply, name)]
    groups = {
        str(sweep.experiment.crystal.get_space_group().info()) for sweep in sweeps
    }
    if len(groups) > 1:
        raise DataError(
            f"the crystals have different space groups ({', '.join(sorted(groups))})"
        )
    from cctbx import sgtbx

    space_group = (
        sgtbx.space_group_info("P -1").group()
        if params.p1
        else sweeps[0].experiment.crystal.get_space_group()
    )
    corrections = [
        name
        for name in ("attenuation", "efficiency", "polarization")
        if getattr(params, name)
    ]
    parts = []
    rows = 0
    for number, sweep in enumerate(sweeps):
        model = ScaleModel()
        if models:
            model = ScaleModel(
                {t: term for t, term in models[number].terms.items() if t in which}
            )
        frame_range = frame_ranges[number] or (0, sweep.source.n_frames)
        seconds = check_exposure_times(sweep, np.arange(*frame_range))
        if masks[number] is not None:
            masks[number].check_covers(
                sweep.source.image_numbers[frame_range[0] : frame_range[1]],
                sweep.source.panel_shapes[0],
            )
        work = ChunkReintegrator(
            params.subdivide, seconds, masks[number], corrections, model, space_group
        )
        chunks = sweep.chunks(frames_per_chunk, frame_range)
        desc = f"reintegrate sweep {number + 1}" if count > 1 else "reintegrate"
        for part in sweep.map_chunks(pmap, work, chunks, desc):
            parts.append(part)
            rows += len(part["key"])
            if rows > _COMPACT_ROWS:
                parts = [_summed(parts)]
                rows = len(parts[0]["key"])
        logger.info(
            "Sweep %d: reintegrated with %s%s",
            number + 1,
            ", ".join(["solid angle", *corrections]),
            f" and {', '.join(model.terms)} of its scaling model"
            if model.terms
            else "",
        )
    if not parts:
        raise DataError("no frame to reintegrate")
    sums = _summed(parts)
    if len(sums["key"]) == 0:
        raise DataError("no unmasked pixel to reintegrate: is everything masked?")
    table = _voxel_table(sums, params, space_group, corrections)
    pixels = int(sums["pixels"].sum())
    logger.info(
        "Reintegrated %d pixels of %d sweep(s) into %d asymmetric-unit voxels "
        "(subdivide %s)",
        pixels,
        count,
        len(table),
        ",".join(str(n) for n in params.subdivide),
    )
    return ReintegrateResult(table, count, pixels)


def _voxel_table(sums, params, space_group, corrections):
    """The `hkl_table` of the summed voxels: intensities or the sums themselves."""
    subdivide = np.asarray(params.subdivide, dtype=np.int64)
    index = unpack_voxel_keys(sums["key"])
    columns = {
        name: (index[:, axis] / subdivide[axis]).astype(np.float32)
        for axis, name in enumerate("hkl")
    }
    columns["s"] = (sums["s_sum"] / sums["pixels"]).astype(np.float32)
    columns["pixels"] = np.rint(sums["pixels"]).astype(np.int64)
    columns["rs_volume"] = sums["rs_volume"].astype(np.float32)
    if params.output_type == "counts":
        columns["counts"] = sums["counts"]
        columns["background_counts"] = sums["background_counts"]
        columns["scale"] = sums["scale"]
    else:
        scale = sums["scale"]
        columns["intensity"] = (
            (sums["counts"] - sums["background_counts"]) / scale
        ).astype(np.float32)
        columns["intensity_error"] = (
            np.sqrt(np.maximum(sums["counts"], 1.0)) / scale
        ).astype(np.float32)
    attrs = {
        "subdivide": subdivide,
        "space_group": str(space_group.info()),
        "corrections": ",".join(["solid_angle", *corrections]),
        "output_type": params.output_type,
    }
    return Table("hkl_table", columns, attrs)
