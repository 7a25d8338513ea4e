"""Rotation sweeps of one crystal at several beam transmissions, with a notch.

As in a detector commissioning experiment: the same crystal, in
the same orientation, measured in N sweeps at different transmissions, by a
detector with a known non-linearity (`DetectorResponse`):

- a notch: true counts in ``[notch_low, notch_high)`` are recorded as
  ``notch_high`` (as a gain switch does), leaving a gap in the histogram of
  pixel values and a spike just above it;
- pile-up at saturation: every true count at or above ``saturation`` (the
  NXmx ``saturation_value``) is recorded as ``saturation + 1``, the
  overload value (a spike at the top of the histogram, which DIALS masks as
  overloaded under either of dxtbx's trusted-range rules; see
  `models.record_overloads`).

Each sweep ``sweep_<i>/`` (1-based, in the order of the transmissions) is a
complete rotation dataset (`dials_diffuse.simulate.rotation`):
``transmission_<T>_master.h5`` + data files, ``truth.h5`` (its root attribute
``transmission``; expected frame sums include the transmission) and
``truth.expt``; the diffuse model is given by its parameters only (no
``/diffuse/grid``: it is the same in every sweep). The scattered signal (Bragg, diffuse, background) scales with
the transmission; hot pixels do not. The noise of each sweep is independent.

The top-level ``truth.h5`` has root attributes ``kind =
"transmission_series"``, ``seed``, ``transmissions`` (fractions),
``notch_low``, ``notch_high``, ``saturation`` and ``overload_value`` (counts;
the recorded pile-up value, saturation + 1), ``exposure_s``, and
``/sweeps`` (the sweep directory names).
"""

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dials_diffuse.simulate.models import record_overloads
from dials_diffuse.simulate.output import dataset_directory
from dials_diffuse.simulate.rotation import (
    build_experiment,
    rotation_setup,
    write_rotation_files,
)
from dials_diffuse.simulate.truth import write_truth_expt
from dials_diffuse.util.errors import DataError

DEFAULT_TRANSMISSIONS = (0.064, 0.127, 0.253, 0.503, 1.0)


@dataclass(frozen=True)
class DetectorResponse:
    """A notch (gain switch) and pile-up at saturation, in counts.

    True counts in [notch_low, notch_high) are recorded as notch_high; true
    counts at or above `saturation` as saturation + 1 (the overload value).
    """

    notch_low: int = 200
    notch_high: int = 212
    saturation: int = 4000

    def __call__(self, counts):
        """Recorded values for true `counts` (integer array)."""
        recorded = np.where(
            (counts >= self.notch_low) & (counts < self.notch_high),
            self.notch_high,
            counts,
        )
        return record_overloads(recorded, self.saturation)


SWEEP_OVERRIDES = {
    "test": {"frames": 10, "exposure_s": 1.0},
    "demo": {"frames": 30, "exposure_s": 1.0},
}


def simulate_transmission_series(
    directory,
    size="test",
    seed=0,
    transmissions=DEFAULT_TRANSMISSIONS,
    response=None,
    **overrides,
):
    """Simulate N sweeps of one crystal at `transmissions` into `directory`.

    Parameters
    ----------
    directory : str or Path
        Created; must not exist or be empty.
    size : {"test", "demo"}
        The rotation preset; "test" sweeps have 10 frames of 0.5° (1 s),
        "demo" sweeps 30 frames.
    seed : int
        Seeds the crystal, intensities, hot pixels and the noise.
    transmissions : sequence of float
        Beam transmission of each sweep (0 < T <= 1).
    response : DetectorResponse or None
        The detector non-linearity; default `DetectorResponse()`.
    **overrides
        Fields of `RotationSetup` to change.

    Returns
    -------
    dict
        ``sweeps``: a list of dicts (``master``, ``data``, ``truth``,
        ``truth_expt``, ``transmission``), and ``truth``, ``directory``.
    """
    transmissions = [float(t) for t in transmissions]
    if not transmissions or any(not 0.0 < t <= 1.0 for t in transmissions):
        raise DataError("transmissions must be fractions in (0, 1]")
    response = response or DetectorResponse()
    if not 0 < response.notch_low < response.notch_high < response.saturation:
        raise DataError("need 0 < notch_low < notch_high < saturation")
    setup = rotation_setup(
        size,
        **{
            **SWEEP_OVERRIDES.get(size, {}),
            "saturation": response.saturation,
            **overrides,
        },
    )
    experiment = build_experiment(setup, seed)
    directory = Path(directory)
    names = [f"sweep_{i}" for i in range(1, len(transmissions) + 1)]
    with dataset_directory(directory) as work:
        for sweep, (name, transmission) in enumerate(
            zip(names, transmissions), start=1
        ):
            (work / name).mkdir()
            write_rotation_files(
                experiment,
                work / name,
                seed,
                prefix=f"transmission_{transmission:.3f}",
                transmission=transmission,
                response=response,
                sweep=sweep,
                desc=f"sweep {sweep} (T = {transmission:g})",
            )
        with h5py.File(work / "truth.h5", "w") as handle:
            handle.attrs.update(
                {
                    "kind": "transmission_series",
                    "seed": seed,
                    "description": __doc__,
                    "transmissions": np.array(transmissions),
                    "notch_low": response.notch_low,
                    "notch_high": response.notch_high,
                    "saturation": response.saturation,
                    "overload_value": response.saturation + 1,
                    "exposure_s": setup.exposure_s,
                }
            )
            handle.create_dataset("sweeps", data=[np.bytes_(n) for n in names])
    sweeps = []
    for name, transmission in zip(names, transmissions):
        master = next((directory / name).glob("*_master.h5"))
        sweeps.append(
            {
                "master": master,
                "data": sorted((directory / name).glob("*_data_*.h5")),
                "truth": directory / name / "truth.h5",
                "truth_expt": write_truth_expt(
                    experiment, master, directory / name / "truth.expt"
                ),
                "transmission": transmission,
            }
        )
    return {"sweeps": sweeps, "truth": directory / "truth.h5", "directory": directory}
