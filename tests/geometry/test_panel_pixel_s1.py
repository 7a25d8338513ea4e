"""The C++ per-pixel s1 of a whole panel against numpy (pixel_s1) and dxtbx."""

import numpy as np
import pytest
from dxtbx.model import BeamFactory, OffsetPxMmStrategy
from dxtbx.model.experiment_list import ExperimentListFactory
from scitbx import matrix
from scitbx.array_family import flex

from dials_diffuse import _kernels, geometry
from tests.geometry.test_geometry import all_test_panels, simple_copy, tilted_detector


@pytest.fixture(scope="module")
def centroid_experiment(dials_centroid):
    path = dials_centroid / "indexed.expt"
    return ExperimentListFactory.from_json_file(str(path), check_format=False)[0]


@pytest.fixture(scope="module")
def cysteine_experiment(l_cysteine):
    """Real PILATUS 2M CBF sweep: parallax-corrected px/mm strategy, Si sensor."""
    files = sorted(l_cysteine.glob("*.cbf"))
    return ExperimentListFactory.from_filenames([str(f) for f in files])[0]


def test_equals_numpy_and_dxtbx_on_every_kind_of_panel(
    centroid_experiment, cysteine_experiment
):
    panels = all_test_panels(centroid_experiment, cysteine_experiment)
    panels.append(simple_copy(cysteine_experiment.detector[0]))
    strategies = {panel.get_px_mm_strategy().name() for panel in panels}
    assert strategies == {"SimplePxMmStrategy", "ParallaxCorrectedPxMmStrategy"}
    rng = np.random.default_rng(1)
    for beam in (centroid_experiment.beam, cysteine_experiment.beam):
        for panel in panels:
            s1 = geometry.panel_pixel_s1(panel, beam)
            n_columns, n_rows = panel.get_image_size()
            assert s1.shape == (n_rows, n_columns, 3)
            assert s1.dtype == np.float64 and s1.flags.c_contiguous
            np.testing.assert_allclose(
                s1, geometry.pixel_s1(panel, beam), rtol=0, atol=1e-13
            )
            for row, column in zip(
                rng.integers(0, n_rows, 5), rng.integers(0, n_columns, 5)
            ):
                lab = panel.get_pixel_lab_coord((column + 0.5, row + 0.5))
                expected = matrix.col(lab).normalize() / beam.get_wavelength()
                np.testing.assert_allclose(s1[row, column], expected, atol=1e-12)


def test_parallax_correction_is_applied(cysteine_experiment):
    """The PILATUS parallax shifts oblique pixels: s1 differs from the simple panel's."""
    panel, beam = cysteine_experiment.detector[0], cysteine_experiment.beam
    corrected = geometry.panel_pixel_s1(panel, beam)
    simple = geometry.panel_pixel_s1(simple_copy(panel), beam)
    shift = np.linalg.norm(corrected - simple, axis=-1) * beam.get_wavelength()
    assert shift.max() > 1e-5  # radians: ~0.1 mm at ~190 mm on the far corner
    assert shift.min() < shift.max() / 50  # tiny near the beam


def test_offset_strategy_goes_through_numpy():
    """Per-pixel offset maps are not in the kernel: the numpy path, row blocks."""
    detector = tilted_detector()
    panel = detector[0]
    n_columns, n_rows = panel.get_image_size()
    rng = np.random.default_rng(2)
    dx = flex.double(rng.uniform(-0.3, 0.3, (n_rows, n_columns)))
    dy = flex.double(rng.uniform(-0.3, 0.3, (n_rows, n_columns)))
    panel.set_px_mm_strategy(OffsetPxMmStrategy(dx, dy))
    beam = BeamFactory.simple(1.0)
    s1 = geometry.panel_pixel_s1(panel, beam)
    np.testing.assert_allclose(s1, geometry.pixel_s1(panel, beam), atol=1e-13)
    lab = panel.get_pixel_lab_coord((3.5, 200.5))
    np.testing.assert_allclose(
        s1[200, 3], matrix.col(lab).normalize() / beam.get_wavelength(), atol=1e-12
    )


def test_kernel_rejects_bad_arguments():
    good = dict(
        origin=np.array([0.0, 0.0, -100.0]),
        fast=np.array([1.0, 0.0, 0.0]),
        slow=np.array([0.0, -1.0, 0.0]),
        size_fast=0.1,
        size_slow=0.1,
        n_rows=4,
        n_columns=5,
        wavelength=1.0,
    )
    assert _kernels.panel_pixel_s1(**good).shape == (4, 5, 3)
    for change in (
        {"origin": np.zeros(2)},
        {"n_rows": 0},
        {"wavelength": 0.0},
        {"size_fast": -0.1},
    ):
        with pytest.raises(ValueError):
            _kernels.panel_pixel_s1(**{**good, **change})
