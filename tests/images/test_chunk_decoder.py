"""ChunkDecoder: NXmx frames decoded by our codecs give exactly dxtbx's values and mask."""

import numpy as np
import pytest
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_diffuse.images.imageset import ImagesetSource, chunk_decoder, read_frame


def imageset_of(simulated):
    return ExperimentListFactory.from_json_file(str(simulated["truth_expt"]))[
        0
    ].imageset


def reassembled(source, frame_range, **sizes):
    """Data and valid of frames [frame_range) put together from chunks of `sizes`."""
    first, stop = frame_range
    rows, columns = source.panel_shapes[0]
    data = np.zeros((stop - first, rows, columns), np.int32)
    valid = np.zeros(data.shape, bool)
    for chunk in source.chunks(frame_range=frame_range, **sizes):
        block, mask = source.read(chunk)
        where = (
            slice(chunk.frames.start - first, chunk.frames.stop - first),
            chunk.rows,
            chunk.columns,
        )
        data[where] = block
        valid[where] = mask
    return data, valid


def test_decoded_chunks_are_dxtbx_frames_and_masks(simulated_rotation):
    """Tiles of several frames, against dxtbx's get_raw_data and DIALS's mask.

    The simulated uint16 frames carry the all-ones gap marker 65535, which
    dxtbx turns into -1 (readout bit depth 16): the decoder must too.
    """
    imageset = imageset_of(simulated_rotation)
    decoder = chunk_decoder(imageset)
    assert decoder is not None and decoder.top == 2**16
    source = ImagesetSource(imageset)
    data, valid = reassembled(source, (3, 29), frames=4, rows=100, columns=90)
    for i, index in enumerate(range(3, 29)):
        expected, expected_valid = read_frame(imageset, index)
        np.testing.assert_array_equal(data[i], expected[0])
        np.testing.assert_array_equal(valid[i], expected_valid[0])
        np.testing.assert_array_equal(
            valid[i], imageset.get_mask(index)[0].as_numpy_array()
        )
    assert (data == -1).any() and not valid[data == -1].any()
    assert source.dtype == np.int32


def test_an_image_range_inside_the_file(simulated_rotation):
    """Images 6-20 of the file: the imageset's image i is the file's frame 5 + i."""
    imageset = imageset_of(simulated_rotation)[5:20]
    decoder = chunk_decoder(imageset)
    assert decoder is not None and decoder.first_frame == 5
    source = ImagesetSource(imageset)
    data, _ = reassembled(source, (0, 15), frames=3)
    for i in range(15):
        np.testing.assert_array_equal(
            data[i], imageset.get_raw_data(i)[0].as_numpy_array()
        )


def test_dxtbx_reads_what_the_decoder_cannot_stand_in_for(simulated_modules):
    """A detector of several modules (panels) is read by dxtbx, as before."""
    imageset = imageset_of(simulated_modules)
    assert chunk_decoder(imageset) is None
    source = ImagesetSource(imageset)
    data, valid = source.frame(2)
    expected, expected_valid = read_frame(imageset, 2)
    for panel in range(len(expected)):
        np.testing.assert_array_equal(data[panel], expected[panel])
        np.testing.assert_array_equal(valid[panel], expected_valid[panel])


def test_markers_of_a_12_bit_readout():
    """With a 12-bit readout 4095 and 4094 are dxtbx's -1 and -2; larger
    values (which such a readout cannot give) stay as they are."""
    from dials_diffuse.images.imageset import ChunkDecoder

    class Stored:
        def read_frames(self, start, stop):
            return np.array([[[4093, 4094, 4095, 4096, 65535]]], np.uint16)

    decoder = ChunkDecoder(Stored(), 0, 2**12)
    everywhere = np.ones((1, 5), dtype=bool)
    data, valid = decoder.read(
        slice(0, 1), slice(None), slice(None), everywhere, (-1.0, 4096.0)
    )
    np.testing.assert_array_equal(data[0, 0], [4093, -2, -1, 4096, 65535])
    assert data.dtype == np.int32


def numpy_stored_to_dxtbx(stored, top, low, high, inclusive, static_mask):
    """The reference: FormatNXmx.get_raw_data's int32 values and markers, then
    DIALS's trusted-range rule and the static mask."""
    data = stored.astype(np.int64)
    if top:
        data = np.where(data == top - 1, -1, np.where(data == top - 2, -2, data))
    data = data.astype(np.int32)
    if inclusive:
        valid = (data >= low) & (data <= high)
    else:
        valid = (data > low) & (data < high)
    return data, valid & static_mask


@pytest.mark.parametrize("dtype", ["u1", "u2", "i1", "i2", "i4"])
@pytest.mark.parametrize("inclusive", [True, False])
def test_stored_to_dxtbx_kernel_against_numpy(dtype, inclusive):
    from dials_diffuse import _kernels

    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    stored = rng.integers(info.min, int(info.max) + 1, (3, 17, 29)).astype(dtype)
    top = 2 ** (8 * np.dtype(dtype).itemsize) if dtype.startswith("u") else 0
    if top:
        stored[0, :2, :5] = top - 1
        stored[1, :2, :5] = top - 2
    static_mask = rng.random((17, 29)) > 0.1
    low, high = -1.0, float(info.max) * 0.8
    data = np.empty(stored.shape, np.int32)
    valid = np.empty(stored.shape, bool)
    _kernels.stored_to_dxtbx(
        stored, top, low, high, inclusive, static_mask, data, valid
    )
    expected, expected_valid = numpy_stored_to_dxtbx(
        stored, top, low, high, inclusive, static_mask
    )
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_array_equal(valid, expected_valid)
    assert valid.any() and not valid.all()
