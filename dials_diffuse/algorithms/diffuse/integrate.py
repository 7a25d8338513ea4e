"""Bin every unmasked pixel of a sweep into reciprocal-space voxels.

The voxel of a pixel is round(hkl * subdivide) (mdx2's grid: voxels centred
on multiples of 1/subdivide r.l.u.), with hkl from the pixel centre and the
frame-centre geometry. The fused C++ kernel computes hkl and accumulates the
voxel sums in one pass over each chunk of frames; chunks run in parallel.

Observations of one voxel at well separated rotation angles (e.g. the two
passes of a 360 degree sweep) are kept apart, as in mdx2: each chunk's
partial sum of a voxel has a mean phi; partials whose mean phi lies
`max_spread` degrees or more beyond the voxel's first partial get a higher
observation index n = floor((phi - phi_first) / max_spread). Partials with
the same (h, k, l, n) are summed.

On a multi-panel detector each chunk is a block of frames of one panel and
the kernel runs on that panel's s1; a voxel's observation is then also kept
apart per panel (a `panel` column; iy, ix are within that panel), so that
correct evaluates every factor on the panel the pixels lie on.
"""

import dataclasses
import logging
import time

import numpy as np
from libtbx.phil import parse

from dials_diffuse import _kernels
from dials_diffuse.algorithms.diffuse.sweep import check_exposure_times
from dials_diffuse.images.source import read_reusing, thread_buffer
from dials_diffuse.io.tables import Table
from dials_diffuse.util.errors import DataError

_OFFSET = 1 << 20


logger = logging.getLogger(__name__)

#: The parameters of integrate (dials.diffuse.integrate and process include them).
phil_scope = parse(
    """
subdivide = 1,1,1
  .type = ints(size=3, value_min=1)
  .help = "Voxels per reciprocal lattice unit along h, k and l."
max_spread = 1.0
  .type = float(value_min=0, allow_none=False)
  .help = "Degrees of rotation beyond which observations of the same voxel"
          "are kept apart (observation index n)."
"""
)


class ChunkIntegrator:
    """Integrate one chunk of whole frames: read pixels (and mask), run the kernel.

    Parameters
    ----------
    subdivide : (int, int, int)
        Voxels per reciprocal lattice unit along h, k, l.
    seconds : ndarray
        Exposure time (s) of every frame of the source.
    mask_file : MaskFile, optional
        Pixels with mask 1 are excluded.
    """

    def __init__(self, subdivide, seconds, mask_file=None):
        self.subdivide = np.asarray(subdivide, dtype=np.float64)
        self.seconds = np.asarray(seconds, dtype=np.float64)
        self.mask_file = mask_file

    def __call__(self, sweep, chunk):
        data, valid = read_reusing(sweep.source, chunk)
        frames = np.arange(chunk.frames.start, chunk.frames.stop)
        exclude = None
        if self.mask_file is not None:
            exclude = self.mask_file.read(
                sweep.source.image_numbers[frames],
                out=thread_buffer(chunk.shape, np.uint8, "mask"),
                panel=chunk.panel,
            )
        return _kernels.integrate_voxels(
            np.ascontiguousarray(data),
            sweep.panel_s1_planes(chunk.panel),
            sweep.s0(frames),
            sweep.matrices(frames),
            self.subdivide,
            np.ascontiguousarray(sweep.phi(frames)),
            np.ascontiguousarray(self.seconds[frames]),
            valid=np.ascontiguousarray(valid),
            exclude=exclude,
        )


def pack_voxel_index(index):
    """One int64 key per voxel index (n, 3): 21 bits per axis, offset to positive."""
    index = np.asarray(index).reshape(-1, 3)
    key = index[:, 0].astype(np.int64) + _OFFSET
    key <<= 21
    key += index[:, 1]
    key += _OFFSET
    key <<= 21
    key += index[:, 2]
    key += _OFFSET
    return key


def unpack_voxel_keys(key):
    """Voxel indices (n, 3) int64 of packed keys (the inverse of `pack_voxel_index`)."""
    mask = (1 << 21) - 1
    return np.stack(
        [(key >> 42) - _OFFSET, ((key >> 21) & mask) - _OFFSET, (key & mask) - _OFFSET],
        axis=1,
    )


def _run_starts(sorted_values):
    """Positions where a run of equal values starts in a sorted 1-D array."""
    new = np.empty(len(sorted_values), dtype=bool)
    new[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new[1:])
    return np.flatnonzero(new)


def merge_partials(partials, subdivide, max_spread, integer_counts=True):
    """Sum the chunks' partial voxel sums into the integrated table.

    One sort of the packed voxel keys groups the partials of each voxel and
    numbers the observations (voxel, n); the sums are weighted bincounts over
    the partials in their original order (the summation order of the chunks),
    with no per-voxel Python work: about 1 s for six million partials.

    Parameters
    ----------
    partials : list of dict
        Outputs of the integrate_voxels kernel, one per chunk.
    subdivide : (int, int, int)
    max_spread : float
        Degrees of rotation that separate observations (see module docstring).
    integer_counts : bool
        Store counts as int64 (integer detectors) rather than float64.

    Returns
    -------
    Table `hkl_table`: h, k, l (voxel centre, r.l.u.), n, counts, pixels,
    seconds, phi (deg), iy, ix (mean 0-based pixel indices), sorted by
    h, k, l, n.
    """
    if max_spread <= 0:
        raise DataError("max_spread must be positive (degrees)")
    keys = np.concatenate([pack_voxel_index(p["index"]) for p in partials] or [[]])
    if len(keys) == 0:
        raise DataError("no unmasked pixel to integrate")

    def column(name, dtype=np.float64):
        return np.concatenate([np.asarray(p[name], dtype=dtype) for p in partials])

    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    voxel_starts = _run_starts(keys)
    pixels = column("pixels", np.int64)
    mean_phi = (column("phi_sum") / pixels)[order]
    # Observation index n of each partial: its mean phi beyond the voxel's
    # first (lowest) mean phi, in units of max_spread (sorted order).
    first_phi = np.minimum.reduceat(mean_phi, voxel_starts)
    lengths = np.diff(np.append(voxel_starts, len(keys)))
    n = np.floor((mean_phi - np.repeat(first_phi, lengths)) / max_spread)
    n = n.astype(np.int64)
    if n.any():  # some voxel seen again later: each (voxel, n) is a row
        voxel = np.repeat(np.arange(len(voxel_starts)), lengths)
        same_voxel = voxel[1:] == voxel[:-1]
        if np.any(same_voxel & (n[1:] < n[:-1])):  # chunks not in phi order
            within = np.lexsort((n, voxel))
            order, keys, n = order[within], keys[within], n[within]
        new_row = np.ones(len(keys), dtype=bool)
        new_row[1:] = ~same_voxel | (n[1:] != n[:-1])
        starts = np.flatnonzero(new_row)
        row_of_sorted = np.cumsum(new_row) - 1
    else:
        starts = voxel_starts
        row_of_sorted = np.repeat(np.arange(len(starts)), lengths)
    # Output row of every partial, in the partials' own order.
    row = np.empty(len(keys), dtype=np.int64)
    row[order] = row_of_sorted

    def total(values):
        return np.bincount(row, weights=values, minlength=len(starts))

    hkl_index = unpack_voxel_keys(keys[starts])
    pixels = np.rint(total(pixels)).astype(np.int64)
    counts = total(column("counts"))
    columns = {
        "h": (hkl_index[:, 0] / subdivide[0]).astype(np.float32),
        "k": (hkl_index[:, 1] / subdivide[1]).astype(np.float32),
        "l": (hkl_index[:, 2] / subdivide[2]).astype(np.float32),
        "n": n[starts].astype(np.int32),
        "counts": np.rint(counts).astype(np.int64) if integer_counts else counts,
        "pixels": pixels,
        "seconds": total(column("seconds")),
        "phi": (total(column("phi_sum")) / pixels).astype(np.float32),
        "iy": (total(column("iy_sum")) / pixels).astype(np.float32),
        "ix": (total(column("ix_sum")) / pixels).astype(np.float32),
    }
    attrs = {
        "subdivide": np.asarray(subdivide, dtype=np.int64),
        "max_spread": max_spread,
    }
    return Table("hkl_table", columns, attrs)


def merge_panel_partials(partials, panels, subdivide, max_spread, integer_counts):
    """`merge_partials` panel by panel, for a multi-panel detector.

    Parameters
    ----------
    partials : list of dict
        Outputs of the integrate_voxels kernel, one per chunk.
    panels : list of int
        The panel of each chunk.

    Returns
    -------
    Table `hkl_table` as `merge_partials`'s with a `panel` column after n
    (iy, ix within that panel), sorted by h, k, l, n, panel.
    """
    panels = np.asarray(panels)
    tables = []
    for panel in np.unique(panels):
        own = [partials[i] for i in np.flatnonzero(panels == panel)]
        if sum(len(p["pixels"]) for p in own) == 0:
            continue  # every pixel of this panel masked
        table = merge_partials(own, subdivide, max_spread, integer_counts)
        tables.append((int(panel), table))
    if not tables:
        raise DataError("no unmasked pixel to integrate")
    names = list(tables[0][1].columns)
    columns = {
        name: np.concatenate([table[name] for _, table in tables]) for name in names
    }
    panel = np.concatenate(
        [np.full(len(table), number, dtype=np.int32) for number, table in tables]
    )
    order = np.lexsort((panel, columns["n"], columns["l"], columns["k"], columns["h"]))
    ordered = {}
    for name in names:
        ordered[name] = columns[name][order]
        if name == "n":
            ordered["panel"] = panel[order]
    return Table("hkl_table", ordered, dict(tables[0][1].attrs))


def integrate(
    sweep,
    pmap,
    subdivide=(1, 1, 1),
    max_spread=1.0,
    mask_file=None,
    seconds=None,
    frames_per_chunk=10,
    frame_range=None,
):
    """Integrate a sweep into voxels; see the module docstring.

    Parameters
    ----------
    sweep : Sweep
    pmap : ParallelMap
    subdivide : (int, int, int)
    max_spread : float
        Degrees.
    mask_file : MaskFile, optional
    seconds : ndarray, optional
        Exposure time of every frame of the source (s); default the source's.
    frames_per_chunk : int
    frame_range : (int, int), optional
        0-based half-open frames of the source.

    Returns
    -------
    Table `hkl_table` (see `merge_partials`; with a `panel` column for a
    multi-panel detector, `merge_panel_partials`).
    """
    if any(int(s) < 1 for s in subdivide):
        raise DataError("subdivide must be at least 1 along h, k and l")
    if seconds is None:
        seconds = sweep.source.exposure_times
    chunks = sweep.chunks(frames_per_chunk, frame_range)
    if mask_file is not None:
        first, stop = frame_range or (0, sweep.source.n_frames)
        mask_file.check_covers(
            sweep.source.image_numbers[first:stop], sweep.source.panel_shapes
        )
    integrator = ChunkIntegrator(subdivide, seconds, mask_file)
    partials = list(sweep.map_chunks(pmap, integrator, chunks, "integrate"))
    integer_counts = np.dtype(sweep.source.dtype).kind in "iub"
    if sweep.n_panels == 1:
        return merge_partials(partials, subdivide, max_spread, integer_counts)
    return merge_panel_partials(
        partials,
        [chunk.panel for chunk in chunks],
        subdivide,
        max_spread,
        integer_counts,
    )


@dataclasses.dataclass
class IntegrateResult:
    """What `do_integrate` binned: the voxel table and the pixel-frames per second."""

    table: Table
    pixel_frames_per_second: float

    def summary(self):
        """The key results for a program's JSON summary."""
        return {
            "voxels": len(self.table),
            "pixels": int(self.table["pixels"].sum()),
            "counts": float(self.table["counts"].sum()),
            "pixel_frames_per_second": self.pixel_frames_per_second,
        }


def do_integrate(
    sweep, params, pmap, mask_file=None, frame_range=None, frames_per_chunk=10
):
    """Bin every unmasked pixel of the sweep into reciprocal-space voxels.

    Parameters
    ----------
    sweep : Sweep
    params : PHIL extract with the parameters of `phil_scope`
        subdivide and max_spread (degrees).
    pmap : ParallelMap
    mask_file : MaskFile, optional
        The peak mask (1 = excluded); None: only the detector mask applies.
    frame_range : (int, int), optional
        0-based half-open frames of the sweep's source; default all.
    frames_per_chunk : int

    Returns
    -------
    IntegrateResult
    """
    if params.subdivide is None:
        raise DataError(
            "subdivide is required: voxels per r.l.u., e.g. subdivide=2,2,2"
        )
    if mask_file is None:
        logger.warning(
            "No mask given: Bragg peaks are integrated with the diffuse signal"
        )
    frame_range = frame_range or (0, sweep.source.n_frames)
    frames = np.arange(*frame_range)
    seconds = check_exposure_times(sweep, frames)
    n_pixels = len(frames) * sum(
        int(np.prod(shape)) for shape in sweep.source.panel_shapes
    )
    start = time.perf_counter()
    table = integrate(
        sweep,
        pmap,
        subdivide=params.subdivide,
        max_spread=params.max_spread,
        mask_file=mask_file,
        seconds=seconds,
        frames_per_chunk=frames_per_chunk,
        frame_range=frame_range,
    )
    elapsed = time.perf_counter() - start
    logger.info(
        "Integrated %d pixels (%d counts) of %d frames into %d voxel observations "
        "in %.1f s (%.3g pixel-frames/s)",
        int(table["pixels"].sum()),
        int(table["counts"].sum()),
        len(frames),
        len(table),
        elapsed,
        n_pixels / elapsed,
    )
    if len(table) == 0:
        raise DataError("no pixel left to integrate: is everything masked?")
    return IntegrateResult(table, n_pixels / elapsed)
