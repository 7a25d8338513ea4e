"""Pure-Python/numpy references for the Eiger kernels (slow, obviously right).

LZ4 block decoding byte by byte from the format description, bitshuffle's
bit transpose undone with numpy.unpackbits, and the thresholded frame sums
with numpy masks.
"""

import numpy as np


def lz4_decode_block(data, size):
    """Decode one raw LZ4 block to `size` bytes."""
    out = bytearray()
    i = 0
    while True:
        token = data[i]
        i += 1
        literals = token >> 4
        if literals == 15:
            while True:
                extra = data[i]
                i += 1
                literals += extra
                if extra != 255:
                    break
        out += data[i : i + literals]
        i += literals
        if i == len(data):
            break
        offset = data[i] | (data[i + 1] << 8)
        i += 2
        length = token & 15
        if length == 15:
            while True:
                extra = data[i]
                i += 1
                length += extra
                if extra != 255:
                    break
        length += 4
        start = len(out) - offset
        for k in range(length):  # byte by byte: overlapping copies repeat
            out.append(out[start + k])
    assert len(out) == size
    return bytes(out)


def bit_untranspose(block, n, elem_size):
    """Undo bitshuffle on one block of n elements (n % 8 == 0), bytes -> bytes."""
    bits = np.unpackbits(np.frombuffer(block, np.uint8), bitorder="little")
    # Rows: byte j, bit k of the element (8 * elem_size rows); columns: element.
    matrix = bits.reshape(8 * elem_size, n)
    element_bits = matrix.T.reshape(n, elem_size, 8)
    return np.packbits(element_bits, axis=-1, bitorder="little").tobytes()


def decode_chunk(chunk, codec, dtype, n_elements):
    """Decode a raw HDF5 chunk: codec 0 none, 1 LZ4 (32004), 2 bitshuffle/LZ4 (32008)."""
    dtype = np.dtype(dtype)
    if codec == 0:
        return np.frombuffer(chunk, dtype)
    total = int.from_bytes(chunk[:8], "big")
    block = int.from_bytes(chunk[8:12], "big")
    assert total == n_elements * dtype.itemsize
    position, out = 12, bytearray()
    body = total if codec == 1 else (n_elements - n_elements % 8) * dtype.itemsize
    while len(out) < body:
        this = min(block, body - len(out))
        size = int.from_bytes(chunk[position : position + 4], "big")
        position += 4
        data = chunk[position : position + size]
        position += size
        if codec == 1:
            out += data if size == this else lz4_decode_block(data, this)
        else:
            plain = lz4_decode_block(data, this)
            out += bit_untranspose(plain, this // dtype.itemsize, dtype.itemsize)
    out += chunk[position:]
    assert len(out) == total
    return np.frombuffer(bytes(out), dtype)


def frame_statistics(frames, low, high, valid=None, invalid_from=np.inf):
    """(sum, used, max, invalid) per frame, as the kernels define them."""
    frames = np.asarray(frames)
    if valid is None:
        valid = np.ones(frames.shape[1:], bool)
    sums, used, maxima, invalid = [], [], [], []
    for frame in frames:
        values = frame.astype(float)
        bad = valid & (values >= invalid_from)
        use = valid & ~bad & (values >= low) & (values <= high)
        sums.append(frame[use].astype(np.float64).sum())
        used.append(int(use.sum()))
        maxima.append(values[use].max() if use.any() else np.nan)
        invalid.append(int(bad.sum()))
    return np.array(sums), np.array(used), np.array(maxima), np.array(invalid)
