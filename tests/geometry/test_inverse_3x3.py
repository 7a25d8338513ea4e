"""3 x 3 inverses without LAPACK (per-chunk geometry must not wake OpenBLAS threads)."""

import numpy as np
import pytest
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse import geometry


def test_equals_numpy_inverse():
    rng = np.random.default_rng(3)
    matrices = rng.normal(size=(50, 4, 3, 3)) + 3 * np.eye(3)
    inverse = geometry.inverse_3x3(matrices)
    assert inverse.shape == matrices.shape
    np.testing.assert_allclose(inverse, np.linalg.inv(matrices), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        matrices @ inverse, np.broadcast_to(np.eye(3), matrices.shape), atol=1e-13
    )
    # A reciprocal-cell matrix (Å⁻¹, entries ~0.05) and a rotation.
    a_matrix = np.diag([1 / 79.0, 1 / 52.3, 1 / 41.0]) @ geometry.rotation_matrices(
        [1, 2, 3], 0.7
    )
    np.testing.assert_allclose(
        geometry.inverse_3x3(a_matrix), np.linalg.inv(a_matrix), rtol=1e-12
    )


def test_hkl_matrices_call_no_lapack(dials_centroid, monkeypatch):
    """The matrices every chunk asks for: same values, and numpy.linalg not used."""
    path = dials_centroid / "indexed.expt"
    experiment = ExperimentListFactory.from_json_file(str(path), check_format=False)[0]
    z = np.arange(10) + 0.5
    expected = geometry.hkl_matrices(experiment, z)

    def refuse(*args, **kwargs):
        raise AssertionError("LAPACK called in the per-chunk geometry")

    monkeypatch.setattr(np.linalg, "inv", refuse)
    got = geometry.hkl_matrices(experiment, z)
    np.testing.assert_array_equal(got, expected)
    # Against the textbook product with numpy's own inverses.
    monkeypatch.undo()
    crystal, goniometer = experiment.crystal, experiment.goniometer
    phi = np.radians(geometry.rotation_angle_deg(experiment.scan, z))
    reference = (
        np.linalg.inv(np.reshape(crystal.get_A(), (3, 3)))
        @ np.linalg.inv(np.reshape(goniometer.get_fixed_rotation(), (3, 3)))
        @ geometry.rotation_matrices(goniometer.get_rotation_axis_datum(), -phi)
        @ np.linalg.inv(np.reshape(goniometer.get_setting_rotation(), (3, 3)))
    )
    np.testing.assert_allclose(got, reference, rtol=1e-12, atol=1e-12)


def test_rejects_singular_and_non_3x3_matrices():
    with pytest.raises(ValueError, match="singular"):
        geometry.inverse_3x3(np.ones((3, 3)))
    with pytest.raises(ValueError, match="3 x 3"):
        geometry.inverse_3x3(np.ones((3, 2)))
