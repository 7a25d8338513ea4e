"""Write the first chunk of an Eiger series and its mask bits for eiger_kernel_split.cpp.

Usage: .venv/bin/python benchmarks/eiger_kernel_split.py MASTER DIRECTORY
(writes DIRECTORY/chunk.bin and DIRECTORY/mask_bits.bin).
"""

import sys
from pathlib import Path

import numpy as np

from dials_diffuse.images.eiger import EigerMasterSource


def main():
    source = EigerMasterSource(sys.argv[1])
    directory = Path(sys.argv[2])
    chunk = next(source.raw_frames(0, 1))[2][0]
    (directory / "chunk.bin").write_bytes(bytes(chunk))
    bits = np.packbits(source.static_mask().ravel(), bitorder="little")
    (directory / "mask_bits.bin").write_bytes(bits.tobytes())


if __name__ == "__main__":
    main()
