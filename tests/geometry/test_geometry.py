"""dials_diffuse.geometry against dxtbx/DIALS' own methods and hand calculation."""

import math

import numpy as np
import pytest
from dials.array_family import flex
from dxtbx.imageset import ImageSetFactory
from dxtbx.model import (
    BeamFactory,
    Crystal,
    Detector,
    DetectorFactory,
    GoniometerFactory,
    ScanFactory,
)
from dxtbx.model.experiment_list import Experiment, ExperimentListFactory
from scitbx import matrix

from dials_diffuse import geometry

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def centroid_experiment(dials_centroid):
    path = dials_centroid / "indexed.expt"
    return ExperimentListFactory.from_json_file(str(path), check_format=False)[0]


@pytest.fixture(scope="module")
def centroid_reflections(dials_centroid):
    path = dials_centroid / "indexed.refl"
    table = flex.reflection_table.from_file(str(path))
    return table.select(table["id"] == 0)


@pytest.fixture(scope="module")
def cysteine_experiment(l_cysteine):
    """Real PILATUS 2M CBF sweep: parallax-corrected px/mm strategy, Si sensor."""
    files = sorted(l_cysteine.glob("*.cbf"))
    return ExperimentListFactory.from_filenames([str(f) for f in files])[0]


def simple_detector(distance=200.0, centre=(30.0, 20.0), size=(300, 200), px=0.1):
    """A flat detector normal to a beam along -z; beam centre in mm."""
    return DetectorFactory.simple(
        "PAD", distance, centre, "+x", "-y", (px, px), size, (-1, 1e6)
    )


def tilted_detector():
    """A detector tilted 30° about the lab y axis and rotated 10° in-plane."""
    tilt = matrix.col((0, 1, 0)).axis_and_angle_as_r3_rotation_matrix(30, deg=True)
    spin = matrix.col((0, 0, 1)).axis_and_angle_as_r3_rotation_matrix(10, deg=True)
    fast = tilt * spin * matrix.col((1, 0, 0))
    slow = tilt * spin * matrix.col((0, -1, 0))
    origin = matrix.col((-15.0, 12.0, -150.0))
    detector = Detector()
    panel = detector.add_panel()
    panel.set_frame(fast, slow, origin)
    panel.set_pixel_size((0.075, 0.075))
    panel.set_image_size((400, 300))
    return detector


def hierarchical_detector():
    """Two panels under a rotated and shifted group: lab frame from the hierarchy."""
    detector = Detector()
    root = detector.hierarchy()
    rotation = (
        matrix.col((1, 1, 0))
        .normalize()
        .axis_and_angle_as_r3_rotation_matrix(7, deg=True)
    )
    root.set_frame(
        rotation * matrix.col((1, 0, 0)),
        rotation * matrix.col((0, -1, 0)),
        (5, -3, -180),
    )
    for i in range(2):
        panel = detector.add_panel()
        panel.set_local_frame((1, 0, 0), (0, -1, 0), (-20 + 22 * i, 10, 0))
        panel.set_pixel_size((0.1, 0.1))
        panel.set_image_size((200, 100))
        root.add_panel(panel)
    return detector


def random_pixels(panel, n=50, seed=0):
    rng = np.random.default_rng(seed)
    n_columns, n_rows = panel.get_image_size()
    return rng.integers(0, n_rows, n), rng.integers(0, n_columns, n)


# ----------------------------------------------------- lab coordinates, s1


def all_test_panels(centroid_experiment, cysteine_experiment):
    panels = [centroid_experiment.detector[0], cysteine_experiment.detector[0]]
    panels += [tilted_detector()[0], *hierarchical_detector()]
    two_theta = DetectorFactory.two_theta(
        "PAD",
        150,
        (40, 40),
        "+x",
        "-y",
        "+x",
        25,
        (0.172, 0.172),
        (487, 195),
        (-1, 1e6),
    )
    return panels + [two_theta[0]]


def test_pixel_lab_coordinates_match_dxtbx(centroid_experiment, cysteine_experiment):
    panels = all_test_panels(centroid_experiment, cysteine_experiment)
    assert cysteine_experiment.detector[0].get_px_mm_strategy().name() == (
        "ParallaxCorrectedPxMmStrategy"
    )
    for panel in panels:
        rows, columns = random_pixels(panel)
        xyz = geometry.pixel_lab_coordinates(panel, rows, columns)
        assert xyz.shape == (len(rows), len(columns), 3)
        for i in range(0, len(rows), 7):
            for j in range(0, len(columns), 5):
                expected = panel.get_pixel_lab_coord((columns[j] + 0.5, rows[i] + 0.5))
                np.testing.assert_allclose(xyz[i, j], expected, atol=1e-9)


def test_pixel_lab_coordinates_whole_panel_and_slices():
    panel = simple_detector()[0]
    xyz = geometry.pixel_lab_coordinates(panel)
    assert xyz.shape == (200, 300, 3)
    # Hand calculation: fast = +x, slow = -y, beam centre at (30, 20) mm.
    np.testing.assert_allclose(xyz[0, 0], (0.05 - 30, 20 - 0.05, -200))
    np.testing.assert_allclose(
        xyz[199, 299], (29.95 - 30 + 0.0, 20 - 19.95, -200), atol=1e-12
    )
    np.testing.assert_allclose(
        geometry.pixel_lab_coordinates(panel, slice(10, 20), slice(5, 8)),
        xyz[10:20, 5:8],
    )


def test_parallax_shifts_oblique_pixels_inward(cysteine_experiment):
    """Parallax: oblique pixels are seen nearer the normal's foot, by < t0·tan α.

    X-rays absorbed at depth in the sensor land further out than where they
    entered, so the corrected (entry) position lies towards the foot of the
    detector normal; the shift is zero at normal incidence.
    """
    panel = cysteine_experiment.detector[0]
    t0 = panel.get_px_mm_strategy().t0()
    rows, columns = [0, 800, 1678], [0, 700, 1474]
    corrected = geometry.pixel_lab_coordinates(panel, rows, columns)
    plain = geometry.lab_coordinates(
        simple_copy(panel),
        np.array(columns)[None, :] + 0.5,
        np.array(rows)[:, None] + 0.5,
    )
    normal = np.asarray(panel.get_normal())
    foot = normal * (np.asarray(panel.get_origin()) @ normal)
    inward = np.linalg.norm(plain - foot, axis=-1) - np.linalg.norm(
        corrected - foot, axis=-1
    )
    shift = np.linalg.norm(corrected - plain, axis=-1)
    tan_alpha = np.linalg.norm(plain - foot, axis=-1) / np.linalg.norm(foot)
    assert np.all(inward > 0)
    np.testing.assert_allclose(inward, shift, rtol=1e-6)  # purely radial
    assert np.all(shift < t0 * tan_alpha)
    assert shift.max() > 0.01  # ~0.1 mm at the far corner: it matters


def simple_copy(panel):
    """The same panel with the simple px/mm strategy."""
    from dxtbx.model import SimplePxMmStrategy

    copy = Detector()
    new = copy.add_panel()
    new.set_frame(panel.get_fast_axis(), panel.get_slow_axis(), panel.get_origin())
    new.set_pixel_size(panel.get_pixel_size())
    new.set_image_size(panel.get_image_size())
    new.set_px_mm_strategy(SimplePxMmStrategy())
    return new


def test_s1_two_theta_d_against_dxtbx(centroid_experiment, cysteine_experiment):
    beams = [centroid_experiment.beam, cysteine_experiment.beam]
    panels = all_test_panels(centroid_experiment, cysteine_experiment)
    for beam in beams:
        s0 = beam.get_s0()
        for panel in panels:
            rows, columns = random_pixels(panel, 8)
            s1 = geometry.pixel_s1(panel, beam, rows=rows, columns=columns)
            tth = geometry.two_theta(panel, beam, rows=rows, columns=columns)
            d = geometry.d_spacing(panel, beam, rows=rows, columns=columns)
            s = geometry.s_magnitude(panel, beam, rows=rows, columns=columns)
            np.testing.assert_allclose(
                np.linalg.norm(s1, axis=-1), 1 / beam.get_wavelength()
            )
            for i, row in enumerate(rows):
                for j, column in enumerate(columns):
                    xy = (column + 0.5, row + 0.5)
                    np.testing.assert_allclose(
                        tth[i, j], panel.get_two_theta_at_pixel(s0, xy), rtol=1e-9
                    )
                    np.testing.assert_allclose(
                        d[i, j], panel.get_resolution_at_pixel(s0, xy), rtol=1e-9
                    )
                    expected_s1 = (
                        matrix.col(panel.get_pixel_lab_coord(xy)).normalize()
                        / beam.get_wavelength()
                    )
                    np.testing.assert_allclose(s1[i, j], expected_s1, atol=1e-12)
            # |s| = 2 sin θ / λ (Bragg's law)
            np.testing.assert_allclose(
                s, 2 * np.sin(tth / 2) / beam.get_wavelength(), rtol=1e-9
            )


def test_two_theta_and_azimuth_by_hand():
    """Beam along -z at (30, 20) mm on a detector 200 mm away, 0.1 mm pixels."""
    panel = simple_detector()[0]
    beam = BeamFactory.simple(1.0)
    # Pixel whose centre is 10 mm along +x from the beam: column 399.5 - 0.5...
    # beam centre px = (300, 200): pixel (row 199, column 399) is off-panel,
    # so use pixels on the panel: column 250 -> x = 25.05 - 30 = -4.95 mm.
    row, column = 150, 250
    x, y = (column + 0.5) * 0.1 - 30, 20 - (row + 0.5) * 0.1
    r = math.hypot(x, y)
    tth = geometry.two_theta(panel, beam, rows=[row], columns=[column])[0, 0]
    assert tth == pytest.approx(math.atan2(r, 200), rel=1e-12)
    assert geometry.d_spacing(panel, beam, rows=[row], columns=[column])[
        0, 0
    ] == pytest.approx(1 / (2 * math.sin(tth / 2)), rel=1e-12)
    assert geometry.azimuth(panel, beam, rows=[row], columns=[column])[
        0, 0
    ] == pytest.approx(math.atan2(y, x), abs=1e-12)


def test_azimuth_quadrants():
    """Pixels along +x, +y, -x, -y of the beam centre have azimuth 0, π/2, π, -π/2."""
    # The beam hits the centre of pixel (row 100, column 100).
    detector = simple_detector(centre=(10.05, 10.05), size=(201, 201))
    beam = BeamFactory.simple(1.0)
    phi = geometry.azimuth(
        detector[0], beam, rows=[100, 0, 100, 200], columns=[200, 100, 0, 100]
    )
    assert phi[0, 0] == pytest.approx(0, abs=1e-12)  # +x
    assert phi[1, 1] == pytest.approx(math.pi / 2, abs=1e-12)  # row 0 is +y
    assert abs(phi[2, 2]) == pytest.approx(math.pi, abs=1e-12)  # -x
    assert phi[3, 3] == pytest.approx(-math.pi / 2, abs=1e-12)  # -y


# ---------------------------------------------------------- rotation angle


def test_rotation_angle_matches_scan(centroid_experiment):
    scan = ScanFactory.make_scan((11, 40), 0.1, (-30.0, 0.25), list(range(30)))
    for s in (scan, centroid_experiment.scan):
        z = np.linspace(s.get_array_range()[0] - 2, s.get_array_range()[1] + 2, 17)
        expected = [s.get_angle_from_array_index(v, deg=True) for v in z]
        np.testing.assert_allclose(
            geometry.rotation_angle_deg(s, z), expected, atol=1e-12
        )
    # Hand: image 11 is array index 10; its start is at -30°, its middle at -29.875°.
    assert geometry.rotation_angle_deg(scan, 10.5) == pytest.approx(-29.875)


# ------------------------------------------------------------ fractional hkl


def centroid_s1(experiment, table, column):
    panel = experiment.detector[0]
    x, y, z = (part.as_numpy_array() for part in table[column].parts())
    xyz = geometry.lab_coordinates(panel, x, y)
    return xyz / np.linalg.norm(
        xyz, axis=-1, keepdims=True
    ) / experiment.beam.get_wavelength(), z


def test_hkl_at_predicted_centroids_is_integer(
    centroid_experiment, centroid_reflections
):
    """DIALS' predicted positions (xyzcal.px) map to the integer Miller index."""
    table = centroid_reflections
    x, y, _ = table["xyzcal.px"].parts()
    table = table.select((x > 0) & (y > 0))  # one reflection has no prediction
    s1, z = centroid_s1(centroid_experiment, table, "xyzcal.px")
    hkl = geometry.fractional_hkl(centroid_experiment, s1, z)
    np.testing.assert_allclose(hkl, np.array(table["miller_index"]), atol=1e-6)


def test_hkl_at_observed_centroids(centroid_experiment, centroid_reflections):
    """Observed centroids index within 0.1 of their Miller indices.

    30 of the 569 do not: mostly weak (median I 50 against 400) and one-image
    spots whose observed centroid is itself ~2 px and ~3.6 images away from
    DIALS' prediction. For those too our value equals DIALS' own mapping of
    the centroid (the ``rlp`` column), so the deviation is in the
    observation, not in the geometry: at least 94 % within 0.1, the median
    far below, none beyond 0.2.
    """
    table = centroid_reflections
    s1, z = centroid_s1(centroid_experiment, table, "xyzobs.px.value")
    hkl = geometry.fractional_hkl(centroid_experiment, s1, z)
    error = np.abs(hkl - np.array(table["miller_index"])).max(axis=1)
    assert np.median(error) < 0.03
    assert np.mean(error < 0.1) > 0.94
    assert error.max() < 0.2
    # DIALS' own reciprocal-lattice points of the same centroids (indexing).
    a = np.array(centroid_experiment.crystal.get_A()).reshape(3, 3)
    dials_hkl = np.array(table["rlp"]) @ np.linalg.inv(a).T
    np.testing.assert_allclose(hkl, dials_hkl, atol=0.01)


def test_hkl_one_frame_equals_per_pixel_frames(centroid_experiment):
    panel, beam = centroid_experiment.detector[0], centroid_experiment.beam
    s1 = geometry.pixel_s1(
        panel, beam, rows=slice(0, 40, 7), columns=slice(100, 140, 9)
    )
    single = geometry.fractional_hkl(centroid_experiment, s1, 3.25)
    many = geometry.fractional_hkl(
        centroid_experiment, s1, np.full(s1.shape[:-1], 3.25)
    )
    np.testing.assert_allclose(single, many, atol=1e-12)


def synthetic_sweep(goniometer, scan_varying=False):
    """A P1 crystal on a given goniometer, 20 images of 0.5° on a flat detector."""
    beam = BeamFactory.complex((0.02, 0.0, 1.0), 0.99, (0, 1, 0), 0.9)
    detector = DetectorFactory.simple(
        "PAD", 120, (60, 60), "+x", "-y", (0.1, 0.1), (1200, 1200), (-1, 1e6)
    )
    scan = ScanFactory.make_scan((1, 20), 0.1, (5.0, 0.5), list(range(20)))
    crystal = Crystal((20, 1, 2), (-1, 25, 1), (0.5, -2, 30), space_group_symbol="P1")
    if scan_varying:
        # A changes along the scan: an extra 0.4° rotation and 1 % expansion.
        axis = matrix.col((0.3, 0.2, 1)).normalize()
        a0 = matrix.sqr(crystal.get_A())
        points = []
        for i in range(21):
            r = axis.axis_and_angle_as_r3_rotation_matrix(0.02 * i, deg=True)
            points.append(r * a0 * (1 / (1 + 0.0005 * i)))
        crystal.set_A_at_scan_points(points)
    # DIALS predicts a sweep only for an ImageSequence (the files need not exist).
    imageset = ImageSetFactory.make_sequence(
        "/nonexistent/image_#####.cbf",
        list(range(1, 21)),
        beam=beam,
        detector=detector,
        goniometer=goniometer,
        scan=scan,
        check_format=False,
    )
    return Experiment(
        imageset=imageset,
        beam=beam,
        detector=detector,
        goniometer=goniometer,
        scan=scan,
        crystal=crystal,
    )


def multi_axis_goniometer():
    """Kappa-like three-axis goniometer with nonzero setting and fixed rotations."""
    axes = flex.vec3_double([(1, 0, 0), (0.64, 0.0, 0.77), (1, 0, 0), (0, 1, 0)])
    names = flex.std_string(["phi", "kappa", "omega", "tilt"])
    return GoniometerFactory.multi_axis(axes, flex.double([20, 40, 15, 10]), names, 2)


@pytest.mark.parametrize(
    "goniometer_kind,scan_varying",
    [("single", False), ("multi", False), ("multi", True)],
)
def test_hkl_of_dials_predictions(goniometer_kind, scan_varying):
    """DIALS' predictor (static and scan-varying) puts integer hkl where we compute it."""
    goniometer = (
        multi_axis_goniometer()
        if goniometer_kind == "multi"
        else GoniometerFactory.single_axis()
    )
    experiment = synthetic_sweep(goniometer, scan_varying)
    if goniometer_kind == "multi":
        assert not np.allclose(goniometer.get_setting_rotation(), np.eye(3).ravel())
        assert not np.allclose(goniometer.get_fixed_rotation(), np.eye(3).ravel())
    predicted = flex.reflection_table.from_predictions(experiment, dmin=2.0)
    assert len(predicted) > 50
    s1 = np.array(predicted["s1"])
    z = predicted["xyzcal.px"].parts()[2].as_numpy_array()
    hkl = geometry.fractional_hkl(experiment, s1, z)
    np.testing.assert_allclose(hkl, np.array(predicted["miller_index"]), atol=2e-4)
    if scan_varying:
        # The static A would miss: the scan-varying model is really used.
        static = synthetic_sweep(goniometer, False)
        hkl_static = geometry.fractional_hkl(static, s1, z)
        assert np.abs(hkl_static - np.array(predicted["miller_index"])).max() > 0.01


def test_hkl_scan_varying_setting_rotation():
    """A scan-varying goniometer setting S is interpolated like A (DIALS predictor)."""
    goniometer = multi_axis_goniometer()
    # DIALS predicts scan-varying models only when A (or s0) has scan points.
    experiment = synthetic_sweep(goniometer, scan_varying=True)
    s0 = matrix.sqr(goniometer.get_setting_rotation())
    axis = matrix.col((0, 1, 0))
    points = [
        axis.axis_and_angle_as_r3_rotation_matrix(0.05 * i, deg=True) * s0
        for i in range(21)
    ]
    goniometer.set_setting_rotation_at_scan_points(points)
    predicted = flex.reflection_table.from_predictions(experiment, dmin=2.0)
    s1 = np.array(predicted["s1"])
    z = predicted["xyzcal.px"].parts()[2].as_numpy_array()
    hkl = geometry.fractional_hkl(experiment, s1, z)
    np.testing.assert_allclose(hkl, np.array(predicted["miller_index"]), atol=2e-4)
    static_setting = synthetic_sweep(multi_axis_goniometer(), scan_varying=True)
    hkl_static = geometry.fractional_hkl(static_setting, s1, z)
    assert np.abs(hkl_static - np.array(predicted["miller_index"])).max() > 0.01


def test_hkl_stills():
    """Without scan or goniometer: hkl = A⁻¹ (s1 - s0), z not needed."""
    beam = BeamFactory.simple(1.2)
    crystal = Crystal((10, 0, 0), (0, 12, 0), (0, 0, 15), space_group_symbol="P1")
    experiment = Experiment(beam=beam, crystal=crystal)
    hkl = np.array([[1.0, -2.0, 3.0]])
    s1 = np.asarray(beam.get_s0()) + hkl / np.array([10.0, 12.0, 15.0])
    np.testing.assert_allclose(geometry.fractional_hkl(experiment, s1), hkl, atol=1e-12)


def test_sweep_needs_z(centroid_experiment):
    with pytest.raises(ValueError, match="frame coordinate"):
        geometry.fractional_hkl(centroid_experiment, np.zeros((1, 3)))


# --------------------------------------------------------------- corrections


def test_polarization_and_lorentz_match_dials(centroid_experiment, cysteine_experiment):
    from dials.algorithms.integration import Corrections

    for experiment in (centroid_experiment, cysteine_experiment):
        panel, beam, goniometer = (
            experiment.detector[0],
            experiment.beam,
            experiment.goniometer,
        )
        s1 = geometry.pixel_s1(
            panel, beam, rows=slice(0, 1400, 97), columns=slice(3, 1400, 113)
        )
        p = geometry.polarization_factor(s1, beam)
        lorentz = geometry.inverse_lorentz(s1, beam, goniometer)
        stills = Corrections(beam, experiment.detector)
        rotation = Corrections(beam, goniometer, experiment.detector)
        flat = flex.vec3_double(s1.reshape(-1, 3))
        dials_p = np.array([1 / stills.lp(v) for v in flat]).reshape(p.shape)
        dials_lp = np.array([rotation.lp(v) for v in flat]).reshape(p.shape)
        np.testing.assert_allclose(p, dials_p, rtol=1e-12)
        np.testing.assert_allclose(lorentz / p, dials_lp, rtol=1e-12)


def test_polarization_by_hand():
    """Unpolarised: (1 + cos²2θ)/2. Fully polarised along x: 1 - (ŝ1·x)²."""
    s1 = np.array([[0.0, 0.6, -0.8], [0.6, 0.0, -0.8], [0.0, 0.0, -1.0]])
    unpolarised = BeamFactory.complex((0, 0, 1), 0.5, (0, 1, 0), 1.0)
    np.testing.assert_allclose(
        geometry.polarization_factor(s1, unpolarised), [0.82, 0.82, 1.0]
    )
    polarised = BeamFactory.complex((0, 0, 1), 1.0, (0, 1, 0), 1.0)
    np.testing.assert_allclose(
        geometry.polarization_factor(s1, polarised), [1.0, 0.64, 1.0]
    )


def test_inverse_lorentz_by_hand():
    """Beam -z, axis x: L⁻¹ = |ŝ1·(x × -z)| = |ŝ1·y|."""
    beam = BeamFactory.simple(1.0)
    goniometer = GoniometerFactory.single_axis()
    s1 = np.array([[0.0, 0.6, -0.8], [0.6, 0.0, -0.8]])
    np.testing.assert_allclose(
        geometry.inverse_lorentz(s1, beam, goniometer), [0.6, 0.0], atol=1e-15
    )


def test_solid_angle_by_hand():
    """A 0.1 mm pixel centred on the beam axis at 200 mm: 4 asin(a²/(a²+4d²))."""
    detector = simple_detector(centre=(10.05, 10.05), size=(201, 201))
    omega = geometry.solid_angle(detector[0], None, rows=[100], columns=[100])[0, 0]
    a, d = 0.1, 200.0
    assert omega == pytest.approx(4 * math.asin(a * a / (a * a + 4 * d * d)), rel=1e-9)


def test_solid_angle_whole_plane_and_small_pixel_limit():
    """Pixels tile the panel: their solid angles add up to the panel's; each ≈ A cos α / r²."""
    detector = tilted_detector()
    panel = detector[0]
    omega = geometry.solid_angle(panel)
    xyz = geometry.pixel_lab_coordinates(panel)
    r = np.linalg.norm(xyz, axis=-1)
    cos_alpha = np.abs(xyz @ np.asarray(panel.get_normal())) / r
    np.testing.assert_allclose(omega, 0.075**2 * cos_alpha / r**2, rtol=1e-5)
    # Whole panel as one big "pixel" quadrilateral (corners of the panel).
    corners = geometry.lab_coordinates(
        panel, np.array([0, 400, 400, 0]), np.array([0, 0, 300, 300])
    )
    whole = geometry._triangle_solid_angle(
        corners[0], corners[1], corners[2]
    ) + geometry._triangle_solid_angle(corners[0], corners[2], corners[3])
    assert omega.sum() == pytest.approx(whole, rel=1e-9)
    # Non-contiguous selections give the same values.
    np.testing.assert_allclose(
        geometry.solid_angle(panel, None, rows=[5, 2, 250], columns=[0, 399]),
        omega[[5, 2, 250]][:, [0, 399]],
    )


def test_detector_efficiency(cysteine_experiment):
    """Matches DIALS' qe correction; 1 - exp(-μt) at normal incidence; μ from Si tables."""
    from dials.algorithms.integration import Corrections

    panel, beam = cysteine_experiment.detector[0], cysteine_experiment.beam
    assert panel.get_material() == "Si" and panel.get_thickness() == pytest.approx(0.32)
    rows, columns = [0, 500, 1678], [0, 700, 1474]
    efficiency = geometry.detector_efficiency(panel, beam, rows=rows, columns=columns)
    s1 = geometry.pixel_s1(panel, beam, rows=rows, columns=columns)
    corrections = Corrections(
        beam, cysteine_experiment.goniometer, cysteine_experiment.detector
    )
    for i in range(3):
        for j in range(3):
            assert efficiency[i, j] == pytest.approx(
                corrections.qe(s1[i, j], 0), rel=1e-12
            )
    # μ computed from the material when the panel has none.
    no_mu = simple_copy(panel)
    no_mu.set_material("Si")
    no_mu.set_thickness(0.32)
    assert geometry.sensor_mu(no_mu, beam) == pytest.approx(panel.get_mu(), rel=1e-6)
    # Hand: normal incidence (pixel at the foot of the normal), Si μ at 0.6889 Å.
    foot = simple_detector(centre=(10.05, 10.05), size=(201, 201))[0]
    foot.set_material("Si")
    foot.set_thickness(0.45)
    foot.set_mu(3.0)
    value = geometry.detector_efficiency(foot, beam, rows=[100], columns=[100])[0, 0]
    assert value == pytest.approx(
        1 - math.exp(-3.0 * 0.45 / math.cos(math.atan(0.05 * math.sqrt(2) / 200)))
    )
    # Unknown sensor: no correction.
    assert np.all(
        geometry.detector_efficiency(simple_detector()[0], beam, rows=[0], columns=[0])
        == 1
    )


@pytest.mark.parametrize(
    "energy_kev,nist_mu_rho",
    # NIST X-ray mass attenuation coefficients of dry air (Hubbell & Seltzer), cm²/g.
    [(10.0, 5.120), (15.0, 1.614), (20.0, 0.7779)],
)
def test_air_mu_matches_nist(energy_kev, nist_mu_rho):
    wavelength = 12.398419843 / energy_kev
    expected = nist_mu_rho * 1.2041e-3 / 10  # mm⁻¹
    assert geometry.air_mu(wavelength) == pytest.approx(expected, rel=0.03)


def test_air_attenuation_by_hand():
    panel = simple_detector()[0]
    beam = BeamFactory.simple(1.0)
    xyz = geometry.pixel_lab_coordinates(panel, [0, 50], [0, 70])
    np.testing.assert_allclose(
        geometry.air_attenuation(panel, beam, rows=[0, 50], columns=[0, 70], mu=0.001),
        np.exp(-0.001 * np.linalg.norm(xyz, axis=-1)),
    )
    assert np.all(geometry.air_attenuation(panel, beam, mu=0) == 1)
    default = geometry.air_attenuation(panel, beam, rows=[0], columns=[0])[0, 0]
    assert default == pytest.approx(
        math.exp(-geometry.air_mu(1.0) * np.linalg.norm(xyz[0, 0]))
    )


def test_d3s_volume_against_swept_parallelepiped(centroid_experiment):
    """d³s equals the volume swept by the pixel's reciprocal-space patch in one frame.

    Independent calculation: the reciprocal-space points x = R(-φ)(s1 - s0) of
    the pixel's corners at the frame's start and end span a parallelepiped
    whose volume |det(u, v, w)| is the swept volume for small pixels.
    """
    experiment = centroid_experiment
    panel, beam, goniometer, scan = (
        experiment.detector[0],
        experiment.beam,
        experiment.goniometer,
        experiment.scan,
    )
    rows, columns = [100, 1200, 2400], [50, 1300, 2300]
    volume = geometry.d3s_volume(
        panel, beam, goniometer, scan, rows=rows, columns=columns
    )
    s0 = np.asarray(beam.get_s0())
    width = np.radians(scan.get_oscillation()[1])
    axis = np.asarray(goniometer.get_rotation_axis())
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):

            def x(px, py):
                xyz = geometry.lab_coordinates(panel, px, py)
                return xyz / np.linalg.norm(xyz) / beam.get_wavelength() - s0

            u = x(column + 1, row) - x(column, row)
            v = x(column, row + 1) - x(column, row)
            w = geometry.rotation_matrices(axis, -width) @ x(
                column + 0.5, row + 0.5
            ) - x(column + 0.5, row + 0.5)
            assert volume[i, j] == pytest.approx(
                abs(np.linalg.det([u, v, w])), rel=2e-3
            )


def test_corrections_on_multi_panel_detector():
    """Every per-panel function works on each panel of a hierarchical detector."""
    detector = hierarchical_detector()
    beam = BeamFactory.simple(1.0)
    goniometer = GoniometerFactory.single_axis()
    scan = ScanFactory.make_scan((1, 5), 0.1, (0.0, 0.1), list(range(5)))
    for panel in detector:
        shape = (100, 200)
        for values in (
            geometry.solid_angle(panel, beam),
            geometry.detector_efficiency(panel, beam),
            geometry.air_attenuation(panel, beam),
            geometry.d3s_volume(panel, beam, goniometer, scan),
            geometry.polarization_factor(geometry.pixel_s1(panel, beam), beam),
        ):
            assert values.shape == shape
            assert np.all(np.isfinite(values)) and np.all(values > 0)


def test_hkl_scan_varying_beam():
    """A scan-varying s0 (wavelength drifting 0.5 % over the scan) is used per frame."""
    experiment = synthetic_sweep(GoniometerFactory.single_axis())
    s0 = matrix.col(experiment.beam.get_s0())
    experiment.beam.set_s0_at_scan_points([s0 * (1 + 0.00025 * i) for i in range(21)])
    predicted = flex.reflection_table.from_predictions(experiment, dmin=2.0)
    s1 = np.array(predicted["s1"])
    z = predicted["xyzcal.px"].parts()[2].as_numpy_array()
    hkl = geometry.fractional_hkl(experiment, s1, z)
    # DIALS' predictor gives s1 the frame's mean wavenumber rather than the
    # interpolated one: a difference of up to 1.2e-4 relative in |s0| here.
    error = np.abs(hkl - np.array(predicted["miller_index"])).max()
    assert error < 0.006
    static = synthetic_sweep(GoniometerFactory.single_axis())
    error_static = np.abs(
        geometry.fractional_hkl(static, s1, z) - np.array(predicted["miller_index"])
    ).max()
    assert error_static > 5 * error


def test_evaluation_at_lab_positions_equals_pixel_grid(cysteine_experiment):
    """lab= (any positions, e.g. voxel means) gives the pixel-grid values there."""
    experiment = cysteine_experiment
    panel, beam = experiment.detector[0], experiment.beam
    goniometer, scan = experiment.goniometer, experiment.scan
    rows, columns = [0, 300, 1678], [5, 800, 1474]
    lab = geometry.lab_coordinates(
        panel, np.array(columns)[None, :] + 0.5, np.array(rows)[:, None] + 0.5
    )
    grid = {"rows": rows, "columns": columns}
    for function in (
        geometry.pixel_s1,
        geometry.two_theta,
        geometry.d_spacing,
        geometry.s_magnitude,
        geometry.azimuth,
        geometry.detector_efficiency,
        geometry.air_attenuation,
    ):
        np.testing.assert_allclose(
            function(panel, beam, lab), function(panel, beam, **grid), rtol=1e-12
        )
    # Solid angle (and so d3s) at arbitrary positions: the small-pixel form,
    # which does not see the parallax-corrected pixels' slightly changed size
    # (0.1 % at this 0.32 mm Si sensor's far corners; 1e-5 without parallax,
    # see test_solid_angle_whole_plane_and_small_pixel_limit).
    np.testing.assert_allclose(
        geometry.solid_angle(panel, beam, lab),
        geometry.solid_angle(panel, beam, **grid),
        rtol=2e-3,
    )
    np.testing.assert_allclose(
        geometry.d3s_volume(panel, beam, goniometer, scan, lab),
        geometry.d3s_volume(panel, beam, goniometer, scan, **grid),
        rtol=2e-3,
    )


def test_hkl_matrices_per_frame(centroid_experiment):
    """One matrix per frame coordinate; each equals the single-frame one."""
    z = np.array([0.5, 3.25, 8.5])
    matrices = geometry.hkl_matrices(centroid_experiment, z)
    assert matrices.shape == (3, 3, 3)
    for i, value in enumerate(z):
        np.testing.assert_allclose(
            matrices[i], geometry.hkl_matrices(centroid_experiment, value), atol=1e-15
        )
