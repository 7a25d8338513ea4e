"""mdx2's scaling model (a, b, c, d) against known distortions of a redundant table."""

import numpy as np
import pandas as pd
import pytest

from dials_diffuse.algorithms.diffuse.scale import (
    AbsorptionSettings,
    DetectorSettings,
    GridTerm,
    OffsetSettings,
    ScaleModel,
    ScalingSettings,
    curvature_restraint,
    laplacian_restraint,
    refine_scale_model,
)
from dials_diffuse.io.scale_model import term_from_table, term_to_table
from dials_diffuse.util.errors import DataError


def true_b(phi):
    return 1 + 0.3 * np.sin(phi / 5.0)


def true_d(ix, iy):
    return 1 + 0.3 * (ix / 256 - 0.5) + 0.15 * np.cos(np.pi * iy / 256)


def true_a(ix, iy, phi):
    return 1 + 0.3 * (ix / 256 - 0.5) * (phi / 30)


def true_c(s, phi):
    return 30 * s * (1 + np.sin(phi / 6.0))


def simulate(a=None, b=None, c=None, d=None, noise=0.01, seed=3):
    """4000 voxels seen 8 times at random (phi, ix, iy): I = a d (b M + c) + noise.

    phi in degrees (0-30), ix/iy in pixels (0-256), s in inverse Angstrom.
    """
    n_voxels, per_voxel = 4000, 8
    # The voxels (intensity, s) are the same for every seed.
    voxels = np.random.default_rng(0)
    truth = voxels.gamma(2.0, 50.0, size=n_voxels)
    s = np.repeat(voxels.uniform(0.1, 0.6, n_voxels), per_voxel)
    rng = np.random.default_rng(seed)
    n = n_voxels * per_voxel
    voxel = np.repeat(np.arange(n_voxels), per_voxel)
    phi, ix, iy = rng.uniform(0, 30, n), rng.uniform(0, 256, n), rng.uniform(0, 256, n)
    terms = {
        "a": a(ix, iy, phi) if a else np.ones(n),
        "b": b(phi) if b else np.ones(n),
        "c": c(s, phi) if c else np.zeros(n),
        "d": d(ix, iy) if d else np.ones(n),
    }
    expected = terms["a"] * terms["d"] * (terms["b"] * truth[voxel] + terms["c"])
    sigma = noise * expected + 0.5
    frame = pd.DataFrame(
        {
            "h": voxel,
            "k": 0,
            "l": 0,
            "phi": phi,
            "ix": ix,
            "iy": iy,
            "s": s,
            "intensity": expected + rng.normal(size=n) * sigma,
            "intensity_error": sigma,
        }
    )
    return frame, truth, terms


def relative_spread(recovered, truth):
    """RMS relative deviation of recovered/truth from its mean (gauge-free)."""
    ratio = recovered / truth
    return float(np.std(ratio) / np.mean(ratio))


def merged_means(model, frame):
    intensity, error = model.apply(frame)
    weight = 1 / error**2
    voxel = frame["h"].to_numpy()
    return np.bincount(voxel, weight * intensity) / np.bincount(voxel, weight)


def test_grid_term_interpolates_multilinearly_and_round_trips():
    term = GridTerm(
        "detector",
        {"ix": np.array([0.0, 10.0, 20.0]), "iy": np.array([0.0, 4.0])},
        np.array([[1.0, 2.0], [3.0, 5.0], [7.0, 11.0]]),
    )
    # (ix, iy) = (15, 1): x halfway between nodes 1 and 2, y a quarter of the way.
    expected = 0.5 * 0.75 * 3 + 0.5 * 0.25 * 5 + 0.5 * 0.75 * 7 + 0.5 * 0.25 * 11
    assert term(np.array([15.0]), np.array([1.0]))[0] == pytest.approx(expected)
    # Nodes exactly, and flat beyond the ends.
    np.testing.assert_allclose(
        term(np.array([0.0, 20.0, -5.0, 30.0]), np.array([0.0, 4.0, 9.0, -1.0])),
        [1.0, 11.0, 2.0, 7.0],
    )
    back = term_from_table(term_to_table(term))
    assert back.name == "detector" and back.shape == (3, 2)
    np.testing.assert_array_equal(back.values, term.values)
    np.testing.assert_array_equal(back.axes["ix"], term.axes["ix"])


def test_restraints_vanish_on_what_they_allow():
    shape = (4, 5, 6)
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    # Curvature along an axis is zero for a function linear along it.
    linear_in_z = (3 * z + x**2 + y**3).ravel().astype(float)
    assert np.allclose(curvature_restraint(shape, 2) @ linear_in_z, 0)
    assert not np.allclose(curvature_restraint(shape, 0) @ linear_in_z, 0)
    assert curvature_restraint(shape, 2).shape == (4 * 5 * 4, 4 * 5 * 6)
    # The neighbour Laplacian over x, y is zero where values depend on z only.
    depends_on_z = (z**2).ravel().astype(float)
    assert np.allclose(laplacian_restraint(shape, (0, 1)) @ depends_on_z, 0)
    # Corner node of a 2 x 2 grid: itself minus the mean of its two neighbours.
    laplacian = laplacian_restraint((2, 2), (0, 1)).toarray()
    np.testing.assert_allclose(laplacian[0], [1, -0.5, -0.5, 0])


def test_apply_divides_the_scale_and_subtracts_the_offset():
    frame = pd.DataFrame(
        {
            "phi": [0.0, 10.0],
            "s": [0.2, 0.2],
            "intensity": [12.0, 30.0],
            "intensity_error": [2.0, 3.0],
        }
    )
    model = ScaleModel(
        {
            "scaling": GridTerm(
                "scaling", {"phi": np.array([0.0, 10.0])}, np.array([2.0, 3.0])
            ),
            "offset": GridTerm(
                "offset",
                {"s": np.array([0.2]), "phi": np.array([0.0, 10.0])},
                np.array([[4.0, 6.0]]),
            ),
        }
    )
    intensity, error = model.apply(frame)
    # I/(a b d) - c/b with a = d = 1.
    np.testing.assert_allclose(intensity, [12 / 2 - 4 / 2, 30 / 3 - 6 / 3])
    np.testing.assert_allclose(error, [1.0, 1.0])


def test_scale_and_detector_terms_recovered():
    frame, truth, terms = simulate(b=true_b, d=true_d, noise=0.03)
    (model,), history = refine_scale_model(
        frame,
        {
            "scaling": ScalingSettings(),
            "detector": DetectorSettings(x_nodes=9, y_nodes=9),
        },
    )
    a, b, c, d = model.factors(frame)
    # The total scale per observation within 1% rms of the truth (up to one
    # constant), each term within 2%; the fit reaches the noise level.
    assert relative_spread(a * b * d, terms["b"] * terms["d"]) < 0.01
    assert relative_spread(b, terms["b"]) < 0.02
    assert relative_spread(d, terms["d"]) < 0.02
    assert np.mean(b) == pytest.approx(1, abs=0.01)
    assert history[-1]["stage"] == "detector"
    assert history[-1]["chi_square"] < 1.1
    # Merged within 2% rms (the noise alone: 3% / sqrt(8) = 1.1%).
    merged = merged_means(model, frame)
    assert relative_spread(merged, truth) < 0.02


def test_absorption_term_recovered():
    frame, truth, terms = simulate(a=true_a)
    (model,), history = refine_scale_model(
        frame, {"absorption": AbsorptionSettings(x_nodes=5, y_nodes=5)}
    )
    a, _, _, _ = model.factors(frame)
    assert relative_spread(a, terms["a"]) < 0.01
    assert history[-1]["chi_square"] < 1.1
    assert relative_spread(merged_means(model, frame), truth) < 0.01


def test_offset_recovered_with_scale():
    frame, truth, terms = simulate(b=true_b, c=true_c)
    settings = {"scaling": ScalingSettings(), "offset": OffsetSettings(s_nodes=6)}
    (model,), history = refine_scale_model(frame, settings)
    _, b, c, _ = model.factors(frame)
    assert relative_spread(b, terms["b"]) < 0.005
    # c is fixed only up to b(phi) f(s), merged away: compare c/b with each
    # voxel's mean removed. Within 5% rms of the truth's spread.
    voxel = frame["h"].to_numpy()

    def within_voxel(values):
        return values - (np.bincount(voxel, values) / np.bincount(voxel))[voxel]

    deviation = within_voxel(c / b) - within_voxel(terms["c"] / terms["b"])
    assert np.std(deviation) < 0.05 * np.std(within_voxel(terms["c"] / terms["b"]))
    # The floor: at every s the offset's smallest node is 0 (mdx2's offset.min).
    offset = model.terms["offset"].values
    np.testing.assert_allclose(offset.min(axis=1), 0.0, atol=1e-9)
    # The true offset's minimum over phi is near 0 too (sin(phi/6) reaches
    # -0.96), so the merged intensities match the truth within 1%.
    merged = merged_means(model, frame)
    assert np.median(merged / truth) == pytest.approx(1.0, abs=0.01)
    assert history[-1]["chi_square"] < 1.1


def test_refinement_rejects_unusable_input():
    frame, _, _ = simulate(b=true_b)
    with pytest.raises(DataError, match="no ix, iy column"):
        refine_scale_model(
            frame.drop(columns=["ix", "iy"]), {"detector": DetectorSettings()}
        )
    with pytest.raises(DataError, match="choose terms"):
        refine_scale_model(frame, {})
    with pytest.raises(DataError, match="non-finite phi"):
        refine_scale_model(frame.assign(phi=np.nan), {"scaling": ScalingSettings()})
    term = GridTerm("scaling", {"phi": np.array([0.0, 1.0])}, np.ones(2))
    with pytest.raises(DataError, match="finite phi"):
        term(np.array([0.5, np.inf]))
    single = frame.drop_duplicates("h")
    with pytest.raises(DataError, match="redundant"):
        refine_scale_model(single, {"scaling": ScalingSettings()})


def test_batches_get_their_own_scale_and_share_the_detector():
    # Two sweeps of the same voxels: the second twice as bright with another
    # b(phi); one detector gain for both.
    first, truth, terms = simulate(b=true_b, d=true_d, noise=0.03, seed=4)
    second, _, second_terms = simulate(
        b=lambda phi: 2 * (1 - 0.2 * np.cos(phi / 4.0)), d=true_d, noise=0.03, seed=5
    )
    observations = pd.concat(
        [first.assign(batch=0), second.assign(batch=1)], ignore_index=True
    )
    models, history = refine_scale_model(
        observations,
        {
            "scaling": ScalingSettings(),
            "detector": DetectorSettings(x_nodes=9, y_nodes=9),
        },
    )
    assert len(models) == 2
    assert models[0].terms["detector"] is models[1].terms["detector"]
    b_first = models[0].factors(first)[1]
    b_second = models[1].factors(second)[1]
    # Each batch's b within 1% of its truth up to one constant common to
    # both: the factor 2 between the sweeps is kept (to 1%).
    both = np.concatenate([b_first, b_second])
    truth_both = np.concatenate([terms["b"], second_terms["b"]])
    assert relative_spread(both, truth_both) < 0.01
    assert np.mean(b_second) / np.mean(b_first) == pytest.approx(
        np.mean(second_terms["b"]) / np.mean(terms["b"]), rel=0.01
    )
    assert relative_spread(models[1].factors(second)[3], second_terms["d"]) < 0.01
    assert history[-1]["chi_square"] < 1.1
