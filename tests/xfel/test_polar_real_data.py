"""polar_transform on real PILATUS CBF frames (any images dxtbx reads)."""

import h5py
import numpy as np
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.algorithms.xfel.polar import q_phi_coordinates
from dials_diffuse.command_line import polar_transform


def test_nearest_polar_samples_are_the_image_pixels(l_cysteine, in_tmp_path):
    frames = sorted(l_cysteine.glob("*.cbf"))[:2]
    code = polar_transform.run(
        [str(f) for f in frames]
        + ["interpolation=nearest", "q_range=0.2,1.2", "nq=40", "nphi=120", "nproc=1"]
    )
    assert code == 0
    with h5py.File("polar.h5", "r") as f:
        data = f["entry/polar/data"][()]
        mask = f["entry/polar/mask"][()] != 0
        q = f["entry/polar/q"][()]
        np.testing.assert_array_equal(f["entry/polar/tag"][()], [1, 2])
    assert data.shape == (2, 40, 120)
    experiments = ExperimentListFactory.from_filenames([str(f) for f in frames])
    imageset = experiments[0].imageset
    fast, slow, _ = q_phi_coordinates(
        experiments[0].detector, experiments[0].beam, q, 120
    )
    for shot in range(2):
        image = imageset.get_raw_data(shot)[0].as_numpy_array()
        valid = imageset.get_mask(shot)[0].as_numpy_array()
        on = np.isfinite(fast)
        i = np.floor(np.where(on, fast, 0)).astype(int)
        j = np.floor(np.where(on, slow, 0)).astype(int)
        expected_valid = on & valid[j, i]
        np.testing.assert_array_equal(mask[shot], expected_valid)
        np.testing.assert_array_equal(
            data[shot][expected_valid], image[j, i][expected_valid]
        )
        # The PILATUS module gaps really are masked in the polar image.
        assert 0.02 < 1 - expected_valid[on].mean() < 0.3
