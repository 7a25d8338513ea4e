"""Pure-Python/numpy references for the Eiger kernels (slow, obviously right).

LZ4 block decoding byte by byte from the format description, bitshuffle's
bit transpose undone with numpy.unpackbits, and the thresholded frame sums
with numpy masks. The encoders write the same formats from the description
(LZ4 blocks from any list of sequences, bit-transposed blocks, whole HDF5
chunks), independently of the LZ4 and bitshuffle libraries.
"""

import numpy as np


def lz4_decode_block(data, size):
    """Decode one raw LZ4 block to `size` bytes (None: whatever it decodes to)."""
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
    assert size is None or len(out) == size
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


def _length_bytes(n):
    """LZ4's length extension: 255 while at least 255 remains, then the rest."""
    return b"\xff" * (n // 255) + bytes([n % 255])


def lz4_block_from_sequences(sequences, last_literals=b""):
    """An LZ4 block of (literals, offset, match_length) sequences, then literals.

    Any sequence the format allows (offset 1-65535, match_length >= 4), also
    ones a compressor would not emit (the block need not end with 5
    literals): for exercising a decoder.
    """
    out = bytearray()
    for literals, offset, length in sequences:
        extra = length - 4
        out.append((min(len(literals), 15) << 4) | min(extra, 15))
        if len(literals) >= 15:
            out += _length_bytes(len(literals) - 15)
        out += literals
        out += offset.to_bytes(2, "little")
        if extra >= 15:
            out += _length_bytes(extra - 15)
    out.append(min(len(last_literals), 15) << 4)
    if len(last_literals) >= 15:
        out += _length_bytes(len(last_literals) - 15)
    out += last_literals
    return bytes(out)


def bit_transpose(block, n, elem_size):
    """Bitshuffle's transpose of one block of n elements (n % 8 == 0), bytes -> bytes."""
    bits = np.unpackbits(np.frombuffer(block, np.uint8), bitorder="little")
    matrix = bits.reshape(n, 8 * elem_size).T  # row 8 j + k: bit k of byte j
    return np.packbits(matrix, axis=-1, bitorder="little").tobytes()


def encode_chunk(values, codec, block_bytes=8192):
    """A raw HDF5 chunk of `values` (1-d): codec 0 none, 1 LZ4, 2 bitshuffle/LZ4.

    Blocks are LZ4 blocks of literals only (LZ4 blocks of `block_bytes`
    alternate with blocks stored as they are).
    """
    values = np.ascontiguousarray(values)
    data = values.tobytes()
    if codec == 0:
        return data
    size = values.dtype.itemsize
    out = bytearray(len(data).to_bytes(8, "big") + block_bytes.to_bytes(4, "big"))
    body = len(data) if codec == 1 else (values.size - values.size % 8) * size
    for index, start in enumerate(range(0, body, block_bytes)):
        block = data[start : min(start + block_bytes, body)]
        if codec == 2:
            block = bit_transpose(block, len(block) // size, size)
            stored = lz4_block_from_sequences([], block)
        else:
            stored = block if index % 2 else lz4_block_from_sequences([], block)
        out += len(stored).to_bytes(4, "big") + stored
    out += data[body:]
    return bytes(out)
