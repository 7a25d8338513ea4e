"""Synthetic datasets with known ground truth, in the formats real detectors write.

Each ``simulate_<kind>(directory, size="test", seed=0, ...)`` writes one
dataset and its ``truth.h5`` into a new directory and returns the paths (a
dict). The datasets are deterministic for a seed; "test" sizes take seconds,
"demo" sizes are what the demo uses. The truth files are documented in each
kind's module.
"""

from libtbx.phil import parse

from dials_diffuse.simulate.eiger_series import simulate_eiger_series
from dials_diffuse.simulate.rotation import simulate_rotation
from dials_diffuse.simulate.sacla import simulate_sacla
from dials_diffuse.simulate.transmission_series import (
    DetectorResponse,
    simulate_transmission_series,
)

#: What to simulate and how (dials.diffuse.simulate includes it).
phil_scope = parse(
    """
kind = *rotation transmission_series sacla eiger_series
  .type = choice
  .help = "What to simulate (see the help text)."
size = *test demo
  .type = choice
  .help = "test: small, made in seconds; demo: the larger sets for the demo."
seed = 0
  .type = int(value_min=0, allow_none=False)
  .help = "Random seed: the same seed gives identical files."
frames = None
  .type = int(value_min=1)
  .help = "Number of frames (rotation: per sweep; sacla: shots). Default: the"
          "size preset's."
rotation {
  modules = None
    .type = ints(size=2, value_min=1)
    .help = "Write the detector as this many modules (rows, columns), one"
            "NXmx detector module and DIALS panel each, e.g. 4,2; the gap rows"
            "lie between module rows. Default: one panel."
  module_efficiency = None
    .type = floats(value_min=0)
    .help = "Relative efficiency of each module (one value per module, rows"
            "first), multiplying the signal they record: a known per-panel"
            "detector response. Default: every module 1."
  dead_pixels = 0
    .type = int(value_min=0)
    .help = "Number of dead pixels (they record 0), flagged dead in the NXmx"
            "pixel_mask."
}
transmission_series {
  transmissions = 0.064 0.127 0.253 0.503 1.0
    .type = floats(value_min=0)
    .help = "Beam transmission of each sweep (fractions, 0 < T <= 1)."
  notch = 200 212
    .type = ints(size=2, value_min=1)
    .help = "True counts in [first, second) are recorded as the second value"
            "(a gain-switch notch in the pixel histogram)."
  saturation = 4000
    .type = int(value_min=2)
    .help = "The detector's saturation value (NXmx saturation_value): true"
            "counts at or above it are recorded as this value + 1, the"
            "overload value (a pile-up that DIALS masks)."
}
eiger_series {
  cv = 0.02
    .type = float(value_min=0)
    .help = "Coefficient of variation of the beam intensity from frame to"
            "frame (a fraction, 0.02 = 2%)."
  drift = None
    .type = float
    .help = "Linear drift of the intensity, as a fraction per frame. Default:"
            "the size preset's (-2e-4 for test, -5e-5 for demo)."
}
sacla {
  symmetry_order = 6
    .type = int(value_min=1)
    .help = "The speckle's n-fold rotational symmetry."
  dark_shots = None
    .type = int(value_min=0)
    .help = "Number of dark shots at the start of the run. Default: the size"
            "preset's (4 for test, 20 for demo)."
}
"""
)


def do_simulate(directory, params):
    """Write the dataset `params.kind` asks for into `directory`; return its paths.

    Parameters
    ----------
    directory : str or Path
        A new (or empty) directory.
    params : PHIL extract of `phil_scope`

    Returns
    -------
    dict
        The paths the ``simulate_<kind>`` function returns (data files,
        ``truth``, ...).
    """
    frames = {"frames": params.frames} if params.frames else {}
    if params.kind == "rotation":
        r = params.rotation
        extra = {"dead_pixels": r.dead_pixels}
        if r.modules:
            extra["modules"] = tuple(r.modules)
        if r.module_efficiency:
            extra["module_efficiency"] = tuple(r.module_efficiency)
        return simulate_rotation(directory, params.size, params.seed, **frames, **extra)
    if params.kind == "transmission_series":
        t = params.transmission_series
        return simulate_transmission_series(
            directory,
            params.size,
            params.seed,
            transmissions=t.transmissions,
            response=DetectorResponse(t.notch[0], t.notch[1], t.saturation),
            **frames,
        )
    if params.kind == "eiger_series":
        e = params.eiger_series
        extra = {"cv": e.cv, **frames}
        if e.drift is not None:
            extra["drift_per_frame"] = e.drift
        return simulate_eiger_series(directory, params.size, params.seed, **extra)
    s = params.sacla
    extra = {"symmetry_order": s.symmetry_order}
    if params.frames:
        extra["shots"] = params.frames
    if s.dark_shots is not None:
        extra["dark_shots"] = s.dark_shots
    return simulate_sacla(directory, params.size, params.seed, **extra)


__all__ = [
    "do_simulate",
    "phil_scope",
    "simulate_eiger_series",
    "simulate_rotation",
    "simulate_sacla",
    "simulate_transmission_series",
]
