"""Truth files written beside simulated data, and how to read them back.

Every simulated dataset has a ``truth.h5`` (plain HDF5, open it with h5py).
The root attributes say what it is (``kind``, ``seed``, ``size``,
``description``, ``units``); the rest depends on the kind.

Rotation sweep (``kind = "rotation"``), beside ``rotation_master.h5``:

``/models``
    Attributes of the geometry: ``wavelength`` (Å), ``unit_cell`` (Å, °),
    ``space_group``, ``A_matrix`` (UB, Å⁻¹, row-major 3x3), ``distance_mm``,
    ``pixel_mm``, ``beam_centre_px`` (fast, slow), ``rotation_axis``,
    ``oscillation_deg`` (start, width), ``exposure_s``; the exact dxtbx
    models are in ``truth.expt`` (DIALS reads it).
``/bragg/miller_index`` (n, 3), ``/bragg/intensity`` (n,)
    Every reflection present (all symmetry and Friedel mates), with its peak
    rate (counts/s at the reciprocal-lattice point, before corrections).
    Systematic absences are not listed (their intensity is 0). Attributes:
    the peak shape (``spot_sigma`` Å⁻¹, ``mosaicity_deg``).
``/diffuse/grid`` (nh, nk, nl), ``/diffuse/h``, ``/k``, ``/l``
    The diffuse rate (counts/s, before corrections) on a voxel grid of
    fractional hkl with ``subdivide`` points per r.l.u. along each axis
    (voxel centres at multiples of 1/subdivide, integers included).
    Attributes: the analytic model's parameters (`DiffuseModel`).
``/hot_pixels/position`` (m, 2) and ``/hot_pixels/rate`` (m,)
    Hot pixels as 0-based (slow, fast) = (y, x) and their rate (counts/s).
``/mask/gap`` (ny, nx)
    True in the module gap (pixel value 65535, NXmx ``pixel_mask`` bit 0).
``/mask/dead`` (ny, nx)
    True on dead pixels (pixel value 0, NXmx ``pixel_mask`` bit 1).
``/modules/tiles`` (n, 4), ``/modules/efficiency`` (n,)
    Only for a detector of several modules: each module's (first row,
    first column, rows, columns) of the frame (its DIALS panel, in order)
    and its relative efficiency (also in ``/corrections/module_efficiency``
    per pixel and in ``total``).
``/corrections/{polarization,solid_angle,efficiency,air,total}`` (ny, nx)
    The per-pixel corrections applied (formulas: `correction_factors`).
``/frames/expected_{bragg,diffuse,background,hot,total}`` (frames,)
    Expected counts summed over the pixels neither in the gap nor dead of
    each frame (before
    Poisson noise and saturation); ``/frames/phi_start_deg``,
    ``/frames/exposure_s``.
"""

import json
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np

from dials_diffuse.io.atomic import atomic_path

DIFFUSE_SUBDIVIDE = 4


def _attrs(group, values):
    for key, value in values.items():
        group.attrs[key] = value


def write_rotation_truth(
    experiment, path, seed, frame_sums, transmission=None, with_grid=True
):
    """Write ``truth.h5`` for a rotation sweep; return its path.

    `with_grid=False` leaves out ``/diffuse/grid`` and its axes (the model's
    parameters stay in the attributes of ``/diffuse``).
    """
    setup = experiment.setup
    panel = experiment.detector[0]
    crystal = experiment.crystal
    with h5py.File(path, "w") as handle:
        _attrs(
            handle,
            {
                "kind": "rotation",
                "seed": seed,
                "description": __doc__,
                "units": "lengths mm, angles degrees, rates counts/s, |s| 1/Angstrom",
                "setup": json.dumps(asdict(setup)),
            },
        )
        if transmission is not None:
            handle.attrs["transmission"] = transmission
        m = handle.create_group("models")
        _attrs(
            m,
            {
                "wavelength": experiment.beam.get_wavelength(),
                "unit_cell": np.array(crystal.get_unit_cell().parameters()),
                "space_group": str(crystal.get_space_group().info()),
                "A_matrix": np.array(crystal.get_A()).reshape(3, 3),
                "distance_mm": panel.get_distance(),
                "pixel_mm": panel.get_pixel_size()[0],
                "beam_centre_px": np.array(
                    panel.get_beam_centre_px(experiment.beam.get_s0())
                ),
                "rotation_axis": np.array(experiment.goniometer.get_rotation_axis()),
                "oscillation_deg": np.array(experiment.scan.get_oscillation()),
                "exposure_s": setup.exposure_s,
            },
        )
        bragg = handle.create_group("bragg")
        bragg.create_dataset(
            "miller_index",
            data=experiment.miller_indices.astype(np.int32),
            compression="gzip",
        )
        bragg.create_dataset(
            "intensity", data=experiment.intensities, compression="gzip"
        )
        _attrs(bragg, setup.bragg.as_dict())

        diffuse = handle.create_group("diffuse")
        if with_grid:
            axes, grid = diffuse_grid(experiment)
            diffuse.create_dataset(
                "grid", data=grid, chunks=True, compression="gzip", shuffle=True
            )
            for name, axis in zip("hkl", axes):
                diffuse.create_dataset(name, data=axis)
        _attrs(diffuse, {**setup.diffuse.as_dict(), "subdivide": DIFFUSE_SUBDIVIDE})

        hot = handle.create_group("hot_pixels")
        hot.create_dataset("position", data=experiment.hot_pixels.astype(np.int32))
        hot.create_dataset("rate", data=experiment.hot_rates)
        handle.create_dataset("mask/gap", data=experiment.gap_mask, compression="gzip")
        handle.create_dataset(
            "mask/dead", data=experiment.dead_mask, compression="gzip"
        )
        tiles = setup.module_tiles
        if tiles is not None:
            modules = handle.create_group("modules")
            modules.create_dataset("tiles", data=np.array(tiles, dtype=np.int32))
            efficiency = setup.module_efficiency or (1.0,) * len(tiles)
            modules.create_dataset("efficiency", data=np.array(efficiency, float))
        for name, values in experiment.corrections.items():
            handle.create_dataset(
                f"corrections/{name}", data=values, compression="gzip"
            )
        handle["corrections"].attrs["air_mu_per_mm"] = setup.corrections.air_mu_per_mm
        frames = handle.create_group("frames")
        for name, sums in frame_sums.items():
            frames.create_dataset(f"expected_{name}", data=sums)
        frames.create_dataset(
            "phi_start_deg",
            data=setup.start_deg + setup.width_deg * np.arange(setup.frames),
        )
        frames.create_dataset(
            "exposure_s", data=np.full(setup.frames, setup.exposure_s)
        )
    return Path(path)


def diffuse_grid(experiment):
    """The diffuse model on a voxel grid of fractional hkl.

    The grid covers every hkl reachable at the detector's highest resolution,
    with `DIFFUSE_SUBDIVIDE` voxels per r.l.u.

    Returns
    -------
    axes : list of three 1-D arrays
        The voxel centres along h, k and l (r.l.u.).
    grid : ndarray (len(h), len(k), len(l))
        float32 rates (counts/s); NaN beyond the detector's resolution.
    """
    A = np.array(experiment.crystal.get_A()).reshape(3, 3)
    s_max = np.linalg.norm(
        experiment.s1 - np.array(experiment.beam.get_s0()), axis=-1
    ).max()
    # |h| <= s_max * |a| for each axis.
    real_lengths = np.linalg.norm(np.linalg.inv(A), axis=1)
    axes = [
        np.arange(
            -np.ceil(s_max * length),
            np.ceil(s_max * length) + 1e-9,
            1.0 / DIFFUSE_SUBDIVIDE,
        )
        for length in real_lengths
    ]
    grid = np.empty(tuple(len(axis) for axis in axes), dtype=np.float32)
    kl = np.stack(np.meshgrid(axes[1], axes[2], indexing="ij"), axis=-1)
    for i, h in enumerate(axes[0]):
        hkl = np.concatenate([np.full(kl.shape[:2] + (1,), h), kl], axis=-1)
        s = np.linalg.norm(hkl @ A.T, axis=-1)
        grid[i] = np.where(s <= s_max, experiment.setup.diffuse(hkl, s), np.nan)
    return axes, grid


def write_truth_expt(experiment, master, path):
    """Write the exact models (with the crystal) as a DIALS experiment list.

    A detector of several modules (`RotationSetup.modules`) is the imported
    one (the same pixels as the flat model, one panel per module), with the
    flat model's mapping of pixels to millimetres (no parallax).
    """
    from dxtbx.model import Experiment, ExperimentList
    from dxtbx.model.experiment_list import ExperimentListFactory

    imported = ExperimentListFactory.from_filenames([str(master)])
    detector = experiment.detector
    if experiment.setup.modules is not None:
        detector = imported[0].detector
        for panel in detector:
            panel.set_px_mm_strategy(experiment.detector[0].get_px_mm_strategy())
    truth = ExperimentList(
        [
            Experiment(
                imageset=imported[0].imageset,
                beam=experiment.beam,
                detector=detector,
                goniometer=experiment.goniometer,
                scan=experiment.scan,
                crystal=experiment.crystal,
            )
        ]
    )
    with atomic_path(path) as temporary:
        temporary.write_text(truth.as_json())
    return Path(path)


def truth_summary(path):
    """The key facts of a ``truth.h5`` as plain Python values (for logs and JSON).

    The root attributes (except the long ``description`` and ``setup``) and,
    for a rotation sweep, the cell, space group and wavelength.
    """
    summary = {}
    with h5py.File(path, "r") as handle:
        groups = [handle] + ([handle["models"]] if "models" in handle else [])
        for group in groups:
            for key, value in group.attrs.items():
                if key in ("description", "setup", "A_matrix"):
                    continue
                if isinstance(value, bytes):
                    value = value.decode()
                summary[key] = value.tolist() if hasattr(value, "tolist") else value
    return summary
