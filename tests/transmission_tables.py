"""A synthetic transmission series as a real integrated reflection table.

The same reflections (Miller index, entering, predicted position) appear in
every experiment with intensity T_j * I_true, optionally through a detector
response with saturation, I_measured = I / (1 + I / saturation), and with a
known relative noise. Decoys share a Miller index with a real reflection but
lie on the other side of the Ewald sphere (`entering` flipped) with an
intensity of their own (also scaled by T): matching that ignored `entering`
would pair a decoy with the wrong reflection and get a wrong ratio.
"""

import numpy as np


def transmission_series(
    transmissions,
    n_reflections=800,
    relative_noise=0.002,
    saturation=None,
    missing=0.1,
    decoys=100,
    seed=0,
):
    """Build the table; returns (flex.reflection_table, truth dict).

    truth: 'intensity' (I_true per reflection), 'hkl', 'entering'.
    """
    from dials.array_family import flex

    rng = np.random.default_rng(seed)
    hkl = np.unique(rng.integers(-30, 31, size=(3 * n_reflections, 3)), axis=0)
    hkl = hkl[rng.permutation(len(hkl))[:n_reflections]]
    entering = rng.random(n_reflections) < 0.5
    # Decoys: the first `decoys` Miller indices again, entering flipped.
    hkl = np.concatenate([hkl, hkl[:decoys]])
    entering = np.concatenate([entering, ~entering[:decoys]])
    n_all = len(hkl)
    true = np.exp(rng.uniform(np.log(200), np.log(2e5), n_all))
    xyz = rng.uniform(0, 1, (n_all, 3)) * [2000, 2000, 900]
    rows = {key: [] for key in ("hkl", "entering", "id", "xyz", "value", "sigma")}
    for experiment, transmission in enumerate(transmissions):
        present = rng.random(n_all) >= missing
        signal = transmission * true[present]
        if saturation:
            signal = signal / (1.0 + signal / saturation)
        sigma = relative_noise * signal
        rows["hkl"].append(hkl[present])
        rows["entering"].append(entering[present])
        rows["id"].append(np.full(present.sum(), experiment))
        rows["xyz"].append(xyz[present] + rng.normal(0, 0.3, (present.sum(), 3)))
        rows["value"].append(signal + rng.normal(0, 1, present.sum()) * sigma)
        rows["sigma"].append(sigma)
    joined = {key: np.concatenate(value) for key, value in rows.items()}
    n = len(joined["id"])
    table = flex.reflection_table()
    table["miller_index"] = flex.miller_index(
        [tuple(int(v) for v in row) for row in joined["hkl"]]
    )
    table["entering"] = flex.bool(joined["entering"].tolist())
    table["id"] = flex.int(joined["id"].astype(np.int32).tolist())
    table["xyzcal.px"] = flex.vec3_double(joined["xyz"].tolist())
    for kind, scale in (("prf", 1.0), ("sum", 1.01)):
        table[f"intensity.{kind}.value"] = flex.double(joined["value"] * scale)
        table[f"intensity.{kind}.variance"] = flex.double(
            (joined["sigma"] * scale * (1.5 if kind == "sum" else 1.0)) ** 2
        )
    table.set_flags(flex.bool(n, True), table.flags.integrated_prf)
    table.set_flags(flex.bool(n, True), table.flags.integrated_sum)
    return table, {"intensity": true, "hkl": hkl, "entering": entering}


def experiments_with_names(transmissions, template_dir, beam_transmission=False):
    """An ExperimentList whose image paths carry `<T>transmission` in their names.

    Built from real DIALS experiment JSON (the centroid test data's indexed.expt;
    the test skips without it) and read
    back with dxtbx without images. With `beam_transmission`, the beam models
    record the transmissions as well (file names then say 1.000).
    """
    import json

    from dxtbx.model.experiment_list import ExperimentListFactory

    from tests.conftest import data_set

    source = json.loads((data_set("dials_centroid") / "indexed.expt").read_text())
    document = {key: [] for key in source}
    document["__id__"] = source["__id__"]
    for j, transmission in enumerate(transmissions):
        name = f"{1.0 if beam_transmission else transmission:.3f}transmission"
        for key in ("beam", "detector", "goniometer", "scan", "crystal", "imageset"):
            item = json.loads(json.dumps(source[key][0]))
            if key == "imageset":
                item["template"] = f"{template_dir}/0066{j}_scan_{name}/image_####.cbf"
            if key == "beam" and beam_transmission:
                item["transmission"] = transmission
            document[key].append(item)
        experiment = dict(source["experiment"][0])
        experiment.update(
            {
                k: j
                for k in (
                    "beam",
                    "detector",
                    "goniometer",
                    "scan",
                    "crystal",
                    "imageset",
                )
            }
        )
        experiment["identifier"] = f"experiment-{j}"
        document["experiment"].append(experiment)
    for key in ("profile", "scaling_model"):
        document.pop(key, None)
    return ExperimentListFactory.from_dict(document, check_format=False)
