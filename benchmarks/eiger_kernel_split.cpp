// Where the time of the Eiger frame-sum kernel goes, on one bitshuffle/LZ4
// uint16 chunk: LZ4 alone, LZ4 + un-transpose (decompress_chunk), LZ4 +
// bit-plane sums with the mask (compressed_frame_statistics) and without.
// Thread CPU time, best of 15 (so other jobs on the machine matter less).
// The kernel headers need no Python. Usage (from the repository root): write
// the first chunk of a series and its mask bits with
//
//   .venv/bin/python benchmarks/eiger_kernel_split.py bench_master.h5 /tmp
//
// then build and run
//
//   g++ -O3 -std=c++17 -Icpp benchmarks/eiger_kernel_split.cpp -ldeflate
//       -o /tmp/eiger_kernel_split
//   /tmp/eiger_kernel_split /tmp/chunk.bin /tmp/mask_bits.bin
#include <time.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

#include "frame_stats.h"

using namespace dials_diffuse;

static double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static std::vector<std::uint8_t> read_file(const char *path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), {}};
}

int main(int argc, char **argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s chunk.bin mask_bits.bin\n", argv[0]);
    return 2;
  }
  const std::vector<std::uint8_t> chunk = read_file(argv[1]), bits = read_file(argv[2]);
  if (chunk.size() < 12) {
    std::fprintf(stderr, "%s: not a bitshuffle/LZ4 chunk\n", argv[1]);
    return 1;
  }
  const std::size_t bytes = read_be64(chunk.data()), pixels = bytes / 2;
  std::vector<std::uint8_t> out(bytes);
  const char *names[] = {"LZ4 only", "decode (LZ4 + un-transpose)", "sums, masked",
                         "sums, no mask"};
  double check = 0;
  for (int mode = 0; mode < 4; ++mode) {
    double best = 1e30;
    for (int repeat = 0; repeat < 15; ++repeat) {
      const double start = thread_seconds();
      if (mode == 0) {
        for_each_lz4_block(chunk.data(), chunk.size(), ChunkCodec::bitshuffle_lz4, 2,
                           bytes,
                           [&](const std::uint8_t *d, std::size_t, std::size_t, bool) {
                             check += d[0];
                           });
      } else if (mode == 1) {
        decode_lz4_chunk(chunk.data(), chunk.size(), ChunkCodec::bitshuffle_lz4, 2,
                         out.data(), bytes);
      } else {
        check += compressed_frame_tally<std::uint16_t>(
                     chunk.data(), chunk.size(), ChunkCodec::bitshuffle_lz4, pixels, 0,
                     4500, 65535, mode == 2 ? bits.data() : nullptr)
                     .sum;
      }
      best = std::min(best, thread_seconds() - start);
    }
    std::printf("%-28s %7.2f ms  %5.2f G px/s\n", names[mode], best * 1e3,
                pixels / best / 1e9);
  }
  return check < 0;  // keeps the work from being optimised away
}
