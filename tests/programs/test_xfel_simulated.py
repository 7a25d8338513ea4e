"""The XFEL programs on the simulator's SACLA run (dials_diffuse.simulate)."""

import json

import h5py
import numpy as np
import pytest
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.command_line import (
    angular_correlation,
    find_ring_center,
    polar_transform,
)
from dials_diffuse.io.correlation_file import read_correlation


@pytest.fixture(scope="module")
def truth(simulated_sacla):
    with h5py.File(simulated_sacla["truth"], "r") as f:
        values = dict(f.attrs)
        values["dark"] = f["dark"][()]
    return values


def test_format_reads_per_tag_energies(simulated_sacla):
    experiments = ExperimentListFactory.from_filenames([str(simulated_sacla["data"])])
    with h5py.File(simulated_sacla["data"], "r") as f:
        energies = f["run_178884/event_info/bl_3/oh_2/photon_energy_in_eV"][()]
    wavelengths = [e.beam.get_wavelength() for e in experiments]
    np.testing.assert_allclose(wavelengths, 12398.419843320026 / energies, rtol=1e-12)


def test_ring_centre_speckle_symmetry_and_dark_shots(
    simulated_sacla, truth, in_tmp_path
):
    data, mask = str(simulated_sacla["data"]), str(simulated_sacla["mask"])
    assert find_ring_center.run([data, f"mask={mask}", "output.json=ring.json"]) == 0
    results = json.loads((in_tmp_path / "ring.json").read_text())["results"]
    assert results["beam_centre_px"] == pytest.approx(truth["beam_centre_px"], abs=0.1)
    assert results["ring_radius_px"] == pytest.approx(truth["ring_radius_px"], abs=0.1)

    q = truth["speckle_q"]
    assert (
        polar_transform.run(
            [
                "ring_center.expt",
                f"mask={mask}",
                f"q_range={0.9 * q},{1.1 * q}",
                "nq=7",
                "nphi=180",
                "normalise=True",
            ]
        )
        == 0
    )
    with h5py.File("polar.h5", "r") as f:
        # No shutter record in the file: the dark shots are found by intensity.
        np.testing.assert_array_equal(f["entry/polar/dark"][()] != 0, truth["dark"])

    assert angular_correlation.run(["polar.h5"]) == 0
    correlation = read_correlation("correlation.h5")
    curve = np.nanmean(correlation.C, axis=0)
    dphi, used = correlation.dphi, correlation.used
    assert correlation.source == "polar.h5"
    n = int(truth["symmetry_order"])
    spectrum = np.abs(np.fft.rfft(curve))
    # Harmonics of n only: n, 2n, 3n carry the correlation.
    strongest = np.argsort(spectrum[1:])[::-1][:3] + 1
    assert sorted(strongest) == [n, 2 * n, 3 * n]
    away = (dphi > 20) & (dphi < 340)
    peak = dphi[away][np.argmax(curve[away])]
    assert min(abs(peak - k * 360.0 / n) for k in range(1, n)) <= 2.0
    assert used.sum() >= (~truth["dark"]).sum() - 3
