// The codecs of HDF5 chunks, as pure C++ (no Python): every decoder and
// encoder that dials-diffuse uses, one home.
//
// - LZ4 (HDF5 filter 32004) and bitshuffle + LZ4 (filter 32008, the DECTRIS
//   Eiger default). Both start with a 12-byte header (uint64 big-endian
//   uncompressed bytes, uint32 big-endian block bytes), then per block a
//   uint32 big-endian compressed size and an LZ4 block (for LZ4, the block
//   stored as it is when the compressed size equals the block size). For
//   bitshuffle the LZ4 block holds the bit-transposed block (bit planes);
//   the last block holds the remaining elements rounded down to a multiple
//   of 8, and the final (elements % 8) elements follow as plain bytes.
// - deflate (H5Z_FILTER_DEFLATE, 1: a zlib stream, libdeflate), optionally
//   after the shuffle filter (H5Z_FILTER_SHUFFLE, 2: the first byte of every
//   element, then the second byte of every element, ...); MaskDeflater, a
//   fast zlib coder for masks.
//
// Corrupt or truncated input raises DecodeError (an std::invalid_argument:
// ValueError in Python), never reads or writes out of bounds. Buffers are
// per thread, so worker threads decode in parallel.
#pragma once

#include <libdeflate.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>  // AVX2 / AVX-512, used in functions with target attributes
#define DIALS_DIFFUSE_AVX2_UNTRANSPOSE 1
#endif

namespace dials_diffuse {


// Codecs of raw HDF5 chunks (the numbers the Python side passes).
enum class ChunkCodec : int {
  none = 0,
  lz4 = 1,
  bitshuffle_lz4 = 2,
  deflate = 3,
  shuffle_deflate = 4
};

inline ChunkCodec chunk_codec_from_int(int codec) {
  if (codec < 0 || codec > 4) {
    throw std::invalid_argument(
        "codec must be 0 (none), 1 (lz4), 2 (bitshuffle_lz4), 3 (deflate) or 4 "
        "(shuffle+deflate)");
  }
  return static_cast<ChunkCodec>(codec);
}

class DecodeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

inline std::uint64_t read_be64(const std::uint8_t *p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

inline std::uint32_t read_be32(const std::uint8_t *p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) |
         (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}

// Decode one LZ4 block (the raw block format, no frame header) of
// `src_size` bytes into exactly `dst_size` bytes. Every read and write is
// bounds-checked: corrupt input raises DecodeError, never overruns.
//
// Away from the ends of src and dst, literals of up to 14 bytes and matches
// are copied in fixed 16 (or 8) byte moves that may run past the sequence
// (but never past dst's end); later sequences overwrite the excess. Bit
// planes of detector frames decode to about a hundred short sequences per
// 8 kB block, so this fixed-size copying is what makes the decoder fast.
inline void lz4_decode_block(const std::uint8_t *src, std::size_t src_size,
                             std::uint8_t *dst, std::size_t dst_size) {
  const std::uint8_t *ip = src;
  const std::uint8_t *const iend = src + src_size;
  std::uint8_t *op = dst;
  std::uint8_t *const oend = dst + dst_size;
  auto read_length = [&](std::size_t length) {
    if (length == 15) {
      std::uint8_t s;
      do {
        if (ip >= iend) throw DecodeError("LZ4 block truncated (length)");
        s = *ip++;
        length += s;
      } while (s == 255);
    }
    return length;
  };
  while (true) {
    if (ip >= iend) throw DecodeError("LZ4 block truncated (token)");
    const unsigned token = *ip++;
    std::size_t literals = token >> 4;
    // The common sequence, far from both ends: at most 14 literals and a
    // match of at most 18 bytes from at least 8 bytes back, in fixed moves.
    if (literals < 15 && (token & 15) < 15 && iend - ip >= 18 && oend - op >= 48) {
      std::memcpy(op, ip, 16);
      ip += literals;
      op += literals;
      const std::size_t offset = std::size_t(ip[0]) | (std::size_t(ip[1]) << 8);
      if (offset >= 8 && offset <= static_cast<std::size_t>(op - dst)) {
        ip += 2;
        const std::uint8_t *match = op - offset;
        std::memcpy(op, match, 8);
        std::memcpy(op + 8, match + 8, 8);
        std::memcpy(op + 16, match + 16, 8);
        op += (token & 15) + 4;
        continue;
      }
      literals = 0;  // done; the match below takes the general path
    } else if (literals < 15 && iend - ip >= 16 && oend - op >= 16) {
      std::memcpy(op, ip, 16);  // the literals and some bytes beyond
    } else {
      literals = read_length(literals);
      if (literals > static_cast<std::size_t>(iend - ip) ||
          literals > static_cast<std::size_t>(oend - op)) {
        throw DecodeError("LZ4 block corrupt (literals overrun)");
      }
      std::memcpy(op, ip, literals);
    }
    ip += literals;
    op += literals;
    if (ip == iend) break;  // the last sequence has literals only
    if (iend - ip < 2) throw DecodeError("LZ4 block truncated (offset)");
    const std::size_t offset = std::size_t(ip[0]) | (std::size_t(ip[1]) << 8);
    ip += 2;
    if (offset == 0 || offset > static_cast<std::size_t>(op - dst)) {
      throw DecodeError("LZ4 block corrupt (match offset)");
    }
    const std::size_t length = read_length(token & 15) + 4;
    const std::size_t room = static_cast<std::size_t>(oend - op);
    if (length > room) throw DecodeError("LZ4 block corrupt (match overrun)");
    const std::uint8_t *match = op - offset;
    if (offset >= 16 && length + 16 <= room) {
      // Each 16-byte move reads bytes written before it (offset >= 16).
      for (std::size_t k = 0; k < length; k += 16) std::memcpy(op + k, match + k, 16);
    } else if (offset >= 8 && length + 8 <= room) {
      for (std::size_t k = 0; k < length; k += 8) std::memcpy(op + k, match + k, 8);
    } else if (length + 16 <= room) {
      // offset < 8: the output repeats match[0, offset). Spread those bytes
      // over a word (the bytes of x past `offset` are replaced), store it at
      // 0 and at the largest multiple r of the offset <= 8, so that at least
      // 13 bytes are done, then copy 8 bytes at a time from q bytes back,
      // q the smallest multiple of the offset >= 8 (<= 14).
      std::uint64_t x;
      std::memcpy(&x, match, 8);
      x &= (std::uint64_t(1) << (8 * offset)) - 1;
      for (std::size_t shift = 8 * offset; shift < 64; shift *= 2) x |= x << shift;
      const std::size_t r = 8 / offset * offset, q = (8 + offset - 1) / offset * offset;
      std::memcpy(op, &x, 8);
      std::memcpy(op + r, &x, 8);
      for (std::size_t k = q; k < length; k += 8) std::memcpy(op + k, op + k - q, 8);
    } else if (length <= 16) {
      for (std::size_t k = 0; k < length; ++k) op[k] = match[k];  // may overlap
    } else if (offset == 1) {
      std::memset(op, *match, length);
    } else if (offset >= length) {
      std::memcpy(op, match, length);
    } else {
      // Overlapping match: the output is periodic with period `offset`, so
      // copy whole periods from `match`, doubling the span each time.
      std::size_t copied = 0;
      while (copied < length) {
        const std::size_t span = offset + copied;
        const std::size_t n = std::min(length - copied, span);
        std::memcpy(op + copied, match, n);
        copied += n;
      }
    }
    op += length;
  }
  if (op != oend) throw DecodeError("LZ4 block decodes to the wrong size");
}

// Transpose an 8x8 bit matrix held in a uint64: bit 8*r+c <-> bit 8*c+r.
inline std::uint64_t transpose_bits_8x8(std::uint64_t x) {
  std::uint64_t t;
  t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL;
  x = x ^ t ^ (t << 7);
  t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL;
  x = x ^ t ^ (t << 14);
  t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL;
  x = x ^ t ^ (t << 28);
  return x;
}

// Undo the transpose for groups [first, last) of 8 elements (scalar). In the
// transposed block, row r = 8*j + k (byte j of the element, bit k of that
// byte) holds n/8 bytes; bit m of its byte i is bit k of byte j of element
// 8*i + m.
inline void bit_untranspose_groups(const std::uint8_t *in, std::uint8_t *out,
                                   std::size_t n, std::size_t elem_size,
                                   std::size_t first, std::size_t last) {
  const std::size_t row = n / 8;
  for (std::size_t j = 0; j < elem_size; ++j) {
    const std::uint8_t *rows = in + 8 * j * row;
    for (std::size_t i = first; i < last; ++i) {
      std::uint64_t x = 0;
      for (int k = 0; k < 8; ++k) {
        x |= std::uint64_t(rows[k * row + i]) << (8 * k);
      }
      x = transpose_bits_8x8(x);
      std::uint8_t *o = out + 8 * i * elem_size + j;
      for (int m = 0; m < 8; ++m) {
        o[m * elem_size] = static_cast<std::uint8_t>(x >> (8 * m));
      }
    }
  }
}

#if defined(__SSE2__)
// transpose_bits_8x8 on both 64-bit lanes of a vector.
inline __m128i transpose_bits_8x8_x2(__m128i x) {
  const __m128i m7 = _mm_set1_epi64x(0x00AA00AA00AA00AALL);
  const __m128i m14 = _mm_set1_epi64x(0x0000CCCC0000CCCCLL);
  const __m128i m28 = _mm_set1_epi64x(0x00000000F0F0F0F0LL);
  __m128i t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 7)), m7);
  x = _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64(t, 7));
  t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 14)), m14);
  x = _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64(t, 14));
  t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 28)), m28);
  x = _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64(t, 28));
  return x;
}

// For byte j: 16 groups (128 elements) starting at group i. y[p] holds
// groups i+2p (low lane) and i+2p+1 (high lane); byte m of a lane is byte j
// of element 8*group + m.
inline void untranspose_16_groups(const std::uint8_t *rows, std::size_t row,
                                  std::size_t i, __m128i y[8]) {
  __m128i r[8];
  for (int k = 0; k < 8; ++k) {
    r[k] = _mm_loadu_si128(reinterpret_cast<const __m128i *>(rows + k * row + i));
  }
  // Byte transpose: gather (r0..r7)[g] into the 64-bit lane of group g.
  __m128i a[8], b[8];
  for (int k = 0; k < 4; ++k) {
    a[2 * k] = _mm_unpacklo_epi8(r[2 * k], r[2 * k + 1]);      // groups 0-7
    a[2 * k + 1] = _mm_unpackhi_epi8(r[2 * k], r[2 * k + 1]);  // groups 8-15
  }
  for (int h = 0; h < 2; ++h) {  // h: groups 0-7 or 8-15
    b[4 * h + 0] = _mm_unpacklo_epi16(a[h], a[2 + h]);  // rows 0-3, groups +0..3
    b[4 * h + 1] = _mm_unpackhi_epi16(a[h], a[2 + h]);  // rows 0-3, groups +4..7
    b[4 * h + 2] = _mm_unpacklo_epi16(a[4 + h], a[6 + h]);  // rows 4-7, +0..3
    b[4 * h + 3] = _mm_unpackhi_epi16(a[4 + h], a[6 + h]);  // rows 4-7, +4..7
  }
  for (int h = 0; h < 2; ++h) {
    for (int q = 0; q < 2; ++q) {  // q: groups +0..3 or +4..7
      const __m128i lo = b[4 * h + q], hi = b[4 * h + 2 + q];
      y[4 * h + 2 * q] = transpose_bits_8x8_x2(_mm_unpacklo_epi32(lo, hi));
      y[4 * h + 2 * q + 1] = transpose_bits_8x8_x2(_mm_unpackhi_epi32(lo, hi));
    }
  }
}

// SSE2 untranspose of 16 groups at a time for 1, 2 and 4-byte elements.
// Returns the number of groups done (the rest is left to the scalar code).
inline std::size_t bit_untranspose_sse2(const std::uint8_t *in, std::uint8_t *out,
                                        std::size_t n, std::size_t elem_size,
                                        std::size_t first = 0) {
  const std::size_t row = n / 8;
  const std::size_t groups = row - row % 16;
  if (elem_size != 1 && elem_size != 2 && elem_size != 4) return first;
  __m128i y[4][8];
  for (std::size_t i = first; i < groups; i += 16) {
    for (std::size_t j = 0; j < elem_size; ++j) {
      untranspose_16_groups(in + 8 * j * row, row, i, y[j]);
    }
    // y[j][p]: two groups (16 elements) of byte j; interleave the bytes.
    for (int p = 0; p < 8; ++p) {
      std::uint8_t *o = out + (8 * (i + 2 * p)) * elem_size;
      if (elem_size == 1) {
        _mm_storeu_si128(reinterpret_cast<__m128i *>(o), y[0][p]);
      } else if (elem_size == 2) {
        _mm_storeu_si128(reinterpret_cast<__m128i *>(o),
                         _mm_unpacklo_epi8(y[0][p], y[1][p]));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(o + 16),
                         _mm_unpackhi_epi8(y[0][p], y[1][p]));
      } else {
        const __m128i lo01 = _mm_unpacklo_epi8(y[0][p], y[1][p]);
        const __m128i lo23 = _mm_unpacklo_epi8(y[2][p], y[3][p]);
        const __m128i hi01 = _mm_unpackhi_epi8(y[0][p], y[1][p]);
        const __m128i hi23 = _mm_unpackhi_epi8(y[2][p], y[3][p]);
        _mm_storeu_si128(reinterpret_cast<__m128i *>(o), _mm_unpacklo_epi16(lo01, lo23));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(o + 16),
                         _mm_unpackhi_epi16(lo01, lo23));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(o + 32),
                         _mm_unpacklo_epi16(hi01, hi23));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(o + 48),
                         _mm_unpackhi_epi16(hi01, hi23));
      }
    }
  }
  return groups;
}
#endif

#if defined(DIALS_DIFFUSE_AVX2_UNTRANSPOSE)

// The SSE2 untranspose on 256-bit vectors: lane 0 does groups [i, i + 16),
// lane 1 groups [i + 16, i + 32), with the same unpack steps (AVX2 unpacks
// stay within 128-bit lanes); each lane's results are stored apart.
__attribute__((target("avx2"))) inline __m256i transpose_bits_8x8_x4(__m256i x) {
  const __m256i m7 = _mm256_set1_epi64x(0x00AA00AA00AA00AALL);
  const __m256i m14 = _mm256_set1_epi64x(0x0000CCCC0000CCCCLL);
  const __m256i m28 = _mm256_set1_epi64x(0x00000000F0F0F0F0LL);
  __m256i t = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 7)), m7);
  x = _mm256_xor_si256(_mm256_xor_si256(x, t), _mm256_slli_epi64(t, 7));
  t = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 14)), m14);
  x = _mm256_xor_si256(_mm256_xor_si256(x, t), _mm256_slli_epi64(t, 14));
  t = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 28)), m28);
  x = _mm256_xor_si256(_mm256_xor_si256(x, t), _mm256_slli_epi64(t, 28));
  return x;
}

__attribute__((target("avx2"))) inline void untranspose_32_groups(
    const std::uint8_t *rows, std::size_t row, std::size_t i, __m256i y[8]) {
  __m256i r[8], a[8], b[8];
  for (int k = 0; k < 8; ++k) {
    r[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rows + k * row + i));
  }
  for (int k = 0; k < 4; ++k) {
    a[2 * k] = _mm256_unpacklo_epi8(r[2 * k], r[2 * k + 1]);
    a[2 * k + 1] = _mm256_unpackhi_epi8(r[2 * k], r[2 * k + 1]);
  }
  for (int h = 0; h < 2; ++h) {
    b[4 * h + 0] = _mm256_unpacklo_epi16(a[h], a[2 + h]);
    b[4 * h + 1] = _mm256_unpackhi_epi16(a[h], a[2 + h]);
    b[4 * h + 2] = _mm256_unpacklo_epi16(a[4 + h], a[6 + h]);
    b[4 * h + 3] = _mm256_unpackhi_epi16(a[4 + h], a[6 + h]);
  }
  for (int h = 0; h < 2; ++h) {
    for (int q = 0; q < 2; ++q) {
      const __m256i lo = b[4 * h + q], hi = b[4 * h + 2 + q];
      y[4 * h + 2 * q] = transpose_bits_8x8_x4(_mm256_unpacklo_epi32(lo, hi));
      y[4 * h + 2 * q + 1] = transpose_bits_8x8_x4(_mm256_unpackhi_epi32(lo, hi));
    }
  }
}

// Store lane 0 of v at p and lane 1 at p + lane1 bytes.
__attribute__((target("avx2"))) inline void store_lanes(std::uint8_t *p, std::size_t lane1,
                                                        __m256i v) {
  _mm_storeu_si128(reinterpret_cast<__m128i *>(p), _mm256_castsi256_si128(v));
  _mm_storeu_si128(reinterpret_cast<__m128i *>(p + lane1),
                   _mm256_extracti128_si256(v, 1));
}

// AVX2 untranspose of 32 groups at a time for 1, 2 and 4-byte elements;
// returns the number of groups done.
__attribute__((target("avx2"))) inline std::size_t bit_untranspose_avx2(
    const std::uint8_t *in, std::uint8_t *out, std::size_t n, std::size_t elem_size) {
  const std::size_t row = n / 8;
  const std::size_t groups = row - row % 32;
  if (elem_size != 1 && elem_size != 2 && elem_size != 4) return 0;
  const std::size_t lane1 = 8 * 16 * elem_size;  // 16 groups further on
  __m256i y[4][8];
  for (std::size_t i = 0; i < groups; i += 32) {
    for (std::size_t j = 0; j < elem_size; ++j) {
      untranspose_32_groups(in + 8 * j * row, row, i, y[j]);
    }
    for (int p = 0; p < 8; ++p) {
      std::uint8_t *o = out + (8 * (i + 2 * p)) * elem_size;
      if (elem_size == 1) {
        store_lanes(o, lane1, y[0][p]);
      } else if (elem_size == 2) {
        store_lanes(o, lane1, _mm256_unpacklo_epi8(y[0][p], y[1][p]));
        store_lanes(o + 16, lane1, _mm256_unpackhi_epi8(y[0][p], y[1][p]));
      } else {
        const __m256i lo01 = _mm256_unpacklo_epi8(y[0][p], y[1][p]);
        const __m256i lo23 = _mm256_unpacklo_epi8(y[2][p], y[3][p]);
        const __m256i hi01 = _mm256_unpackhi_epi8(y[0][p], y[1][p]);
        const __m256i hi23 = _mm256_unpackhi_epi8(y[2][p], y[3][p]);
        store_lanes(o, lane1, _mm256_unpacklo_epi16(lo01, lo23));
        store_lanes(o + 16, lane1, _mm256_unpackhi_epi16(lo01, lo23));
        store_lanes(o + 32, lane1, _mm256_unpacklo_epi16(hi01, hi23));
        store_lanes(o + 48, lane1, _mm256_unpackhi_epi16(hi01, hi23));
      }
    }
  }
  return groups;
}
#endif

// Undo bitshuffle's bit transpose of one block of `n` elements (n % 8 == 0)
// of `elem_size` bytes: AVX2 for 32 groups of 8 elements at a time (if the
// CPU has it), SSE2 for 16, scalar for the rest: the same bytes either way
// (the partial blocks of the tests take all three).
inline void bit_untranspose_block(const std::uint8_t *in, std::uint8_t *out,
                                  std::size_t n, std::size_t elem_size) {
  std::size_t done = 0;
#if defined(DIALS_DIFFUSE_AVX2_UNTRANSPOSE)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) done = bit_untranspose_avx2(in, out, n, elem_size);
#endif
#if defined(__SSE2__)
  done = bit_untranspose_sse2(in, out, n, elem_size, done);
#endif
  bit_untranspose_groups(in, out, n, elem_size, done, n / 8);
}

// Per-thread buffers of at least n bytes, reused from call to call (no
// allocation per chunk), one for each use that may be live at once.
enum class Buffer : int {
  chunk = 0,        // a decoded (or gathered) chunk
  compressed = 1,   // a compressed chunk
  lz4_block = 2,    // one decoded LZ4 block
  plain_block = 3,  // one block of plain values
  mask_block = 4,   // one block's mask bytes
  use_bits = 5      // one block's bitmaps of used pixels
};

inline std::uint8_t *thread_buffer(Buffer which, std::size_t n) {
  thread_local std::vector<std::uint8_t> buffers[6];
  std::vector<std::uint8_t> &v = buffers[static_cast<int>(which)];
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Walk an uncompressed, LZ4 or bitshuffle/LZ4 chunk of `expected` bytes
// block by block. `sink(data, n_bytes, offset, planes)` receives consecutive
// runs of whole elements in order: with `planes` false, plain values; with
// `planes` true, one bitshuffle block still transposed (bit plane b of its
// n_bytes / elem_size elements at data + b * n_bytes / (8 * elem_size), bit
// m of byte i of a plane belonging to element 8 i + m), in a per-thread
// buffer. With `direct` (`expected` bytes), LZ4 blocks are decoded straight
// into it.
template <typename Sink>
void for_each_lz4_block(const std::uint8_t *src, std::size_t src_size, ChunkCodec codec,
                        std::size_t elem_size, std::size_t expected, Sink &&sink,
                        std::uint8_t *direct = nullptr) {
  if (codec == ChunkCodec::none) {
    if (src_size != expected) {
      throw DecodeError("uncompressed chunk has " + std::to_string(src_size) +
                        " bytes, not " + std::to_string(expected));
    }
    sink(src, src_size, 0, false);
    return;
  }
  if (codec != ChunkCodec::lz4 && codec != ChunkCodec::bitshuffle_lz4) {
    throw std::invalid_argument("not an LZ4 codec");
  }
  const bool bitshuffle = codec == ChunkCodec::bitshuffle_lz4;
  if (src_size < 12) throw DecodeError("compressed chunk shorter than its header");
  const std::uint64_t total = read_be64(src);
  const std::uint32_t block_bytes = read_be32(src + 8);
  if (total != expected) {
    throw DecodeError("chunk header gives " + std::to_string(total) +
                      " bytes, expected " + std::to_string(expected));
  }
  if (block_bytes == 0 || block_bytes % (bitshuffle ? 8 * elem_size : elem_size) != 0) {
    throw DecodeError("chunk header has an invalid block size");
  }
  const std::uint8_t *ip = src + 12;
  const std::uint8_t *const iend = src + src_size;
  std::size_t done = 0;
  const std::size_t n_elements = total / elem_size;
  // bitshuffle: full blocks, then one block of the remainder rounded down to
  // a multiple of 8 elements, then the last (n % 8) elements stored plain.
  const std::size_t compressed_bytes =
      bitshuffle ? (n_elements - n_elements % 8) * elem_size : total;
  while (done < compressed_bytes) {
    const std::size_t this_block =
        std::min<std::size_t>(block_bytes, compressed_bytes - done);
    if (iend - ip < 4) throw DecodeError("compressed chunk truncated");
    const std::uint32_t csize = read_be32(ip);
    ip += 4;
    if (csize > static_cast<std::size_t>(iend - ip)) {
      throw DecodeError("compressed chunk truncated");
    }
    if (!bitshuffle && csize == this_block) {
      sink(ip, this_block, done, false);  // stored uncompressed
    } else {
      std::uint8_t *buffer = !bitshuffle && direct
                                 ? direct + done
                                 : thread_buffer(Buffer::lz4_block, this_block);
      lz4_decode_block(ip, csize, buffer, this_block);
      sink(static_cast<const std::uint8_t *>(buffer), this_block, done, bitshuffle);
    }
    ip += csize;
    done += this_block;
  }
  const std::size_t leftover = total - done;
  if (static_cast<std::size_t>(iend - ip) != leftover) {
    throw DecodeError("compressed chunk has " +
                      std::to_string(static_cast<std::size_t>(iend - ip) - leftover) +
                      " bytes too many or too few");
  }
  if (leftover) sink(ip, leftover, done, false);
}

// Decode a whole uncompressed, LZ4 or bitshuffle/LZ4 chunk into dst
// (`expected` bytes).
inline void decode_lz4_chunk(const std::uint8_t *src, std::size_t src_size,
                             ChunkCodec codec, std::size_t elem_size, std::uint8_t *dst,
                             std::size_t expected) {
  for_each_lz4_block(
      src, src_size, codec, elem_size, expected,
      [&](const std::uint8_t *data, std::size_t n, std::size_t offset, bool planes) {
        if (planes) {
          bit_untranspose_block(data, dst + offset, n / elem_size, elem_size);
        } else if (data != dst + offset) {
          std::memcpy(dst + offset, data, n);
        }
      },
      dst);
}

// One libdeflate decompressor per thread (they are not thread-safe).
inline libdeflate_decompressor *thread_decompressor() {
  struct Owner {
    libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    ~Owner() { libdeflate_free_decompressor(d); }
  };
  thread_local Owner owner;
  if (owner.d == nullptr) throw std::bad_alloc();
  return owner.d;
}

// One libdeflate compressor per thread, for the last level asked.
inline libdeflate_compressor *thread_compressor(int level) {
  struct Owner {
    libdeflate_compressor *c = nullptr;
    int level = -1;
    ~Owner() {
      if (c) libdeflate_free_compressor(c);
    }
  };
  thread_local Owner owner;
  if (owner.level != level) {
    if (owner.c) libdeflate_free_compressor(owner.c);
    owner.c = libdeflate_alloc_compressor(level);
    owner.level = owner.c ? level : -1;
  }
  if (owner.c == nullptr) throw std::bad_alloc();
  return owner.c;
}

// Inflate the zlib stream src[0, n) into exactly `expected` bytes at dst.
inline void inflate_zlib(const std::uint8_t *src, std::size_t n, std::uint8_t *dst,
                         std::size_t expected) {
  std::size_t actual = 0;
  const libdeflate_result result =
      libdeflate_zlib_decompress(thread_decompressor(), src, n, dst, expected, &actual);
  if (result == LIBDEFLATE_BAD_DATA) {
    throw DecodeError("corrupt or truncated deflate stream");
  }
  if (result == LIBDEFLATE_INSUFFICIENT_SPACE) {
    throw DecodeError("deflate stream decodes to more than " + std::to_string(expected) +
                      " bytes");
  }
  if (result != LIBDEFLATE_SUCCESS || actual != expected) {
    throw DecodeError("deflate stream decodes to " + std::to_string(actual) +
                      " bytes, not " + std::to_string(expected));
  }
}

// Decode one raw chunk of any codec of `expected` bytes: a pointer to the
// decoded bytes (src itself when stored uncompressed, else a per-thread
// buffer). Shuffled deflate chunks stay shuffled (byte planes).
inline const std::uint8_t *decode_raw_chunk(const std::uint8_t *src, std::size_t n,
                                            ChunkCodec codec, std::size_t elem_size,
                                            std::size_t expected) {
  switch (codec) {
    case ChunkCodec::none:
      if (n != expected) {
        throw DecodeError("uncompressed chunk has " + std::to_string(n) +
                          " bytes, not " + std::to_string(expected));
      }
      return src;
    case ChunkCodec::deflate:
    case ChunkCodec::shuffle_deflate: {
      std::uint8_t *dst = thread_buffer(Buffer::chunk, expected);
      inflate_zlib(src, n, dst, expected);
      return dst;
    }
    default: {
      std::uint8_t *dst = thread_buffer(Buffer::chunk, expected);
      decode_lz4_chunk(src, n, codec, elem_size, dst, expected);
      return dst;
    }
  }
}

// Copy `n` shuffled elements of `S` bytes starting at element `first` of a
// chunk of `total` elements (byte plane b at src + b * total) to dst.
template <std::size_t S>
inline void unshuffle_run(const std::uint8_t *src, std::size_t total,
                          std::size_t first, std::size_t n, std::uint8_t *dst) {
  const std::uint8_t *planes[S];
  for (std::size_t b = 0; b < S; ++b) planes[b] = src + b * total + first;
  std::size_t i = 0;
#if defined(__SSE2__)
  // 16 elements at a time: interleave the byte planes with unpack.
  if constexpr (S == 2) {
    for (; i + 16 <= n; i += 16) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i *>(planes[0] + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(planes[1] + i));
      auto *out = reinterpret_cast<__m128i *>(dst + i * 2);
      _mm_storeu_si128(out, _mm_unpacklo_epi8(a, b));
      _mm_storeu_si128(out + 1, _mm_unpackhi_epi8(a, b));
    }
  } else if constexpr (S == 4) {
    for (; i + 16 <= n; i += 16) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i *>(planes[0] + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(planes[1] + i));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i *>(planes[2] + i));
      const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i *>(planes[3] + i));
      const __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
      const __m128i cd_lo = _mm_unpacklo_epi8(c, d), cd_hi = _mm_unpackhi_epi8(c, d);
      auto *out = reinterpret_cast<__m128i *>(dst + i * 4);
      _mm_storeu_si128(out, _mm_unpacklo_epi16(ab_lo, cd_lo));
      _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(ab_lo, cd_lo));
      _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(ab_hi, cd_hi));
      _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(ab_hi, cd_hi));
    }
  }
#endif
  for (; i < n; ++i) {
    for (std::size_t b = 0; b < S; ++b) dst[i * S + b] = planes[b][i];
  }
}

inline void unshuffle_run_any(const std::uint8_t *src, std::size_t total,
                              std::size_t first, std::size_t n, std::size_t size,
                              std::uint8_t *dst) {
  switch (size) {
    case 2: return unshuffle_run<2>(src, total, first, n, dst);
    case 4: return unshuffle_run<4>(src, total, first, n, dst);
    case 8: return unshuffle_run<8>(src, total, first, n, dst);
    default:
      for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t b = 0; b < size; ++b) {
          dst[i * size + b] = src[b * total + first + i];
        }
      }
  }
}

// A zlib stream for masks: LZ77 with two candidate distances, 1 (runs of
// equal bytes) and `row` (the row above in a chunk: mask rows resemble their
// neighbours), the longer match taken greedily, else a literal; one block
// with DEFLATE's fixed Huffman codes (RFC 1951, 3.2.6). Time grows with the
// bytes scanned, a word at a time, with no hashing: masks compress several
// times faster than with libdeflate. Any inflater decodes it; data without
// runs expands by at most 1/8.
class MaskDeflater {
 public:
  MaskDeflater() {
    for (int symbol = 0; symbol < 288; ++symbol) {
      std::uint32_t code, bits;
      if (symbol < 144) {
        code = 0x30 + symbol, bits = 8;
      } else if (symbol < 256) {
        code = 0x190 + (symbol - 144), bits = 9;
      } else if (symbol < 280) {
        code = symbol - 256, bits = 7;
      } else {
        code = 0xC0 + (symbol - 280), bits = 8;
      }
      codes_[symbol] = reverse(code, bits);  // Huffman codes go most significant bit first
      lengths_[symbol] = bits;
    }
    static const int base[29] = {3,  4,  5,  6,  7,  8,  9,   10,  11,  13,
                                 15, 17, 19, 23, 27, 31, 35,  43,  51,  59,
                                 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const int extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    for (int length = 3; length <= 258; ++length) {
      int c = 28;
      while (base[c] > length) --c;
      const int symbol = 257 + c;
      length_bits_[length] =
          codes_[symbol] | (static_cast<std::uint64_t>(length - base[c]) << lengths_[symbol]);
      length_count_[length] = lengths_[symbol] + extra[c];
    }
  }

  // Compress src[0, n) into dst (at least bound(n) bytes); returns the size.
  // `row`: the second candidate distance (0 or > 32768: runs only).
  std::size_t compress(const std::uint8_t *src, std::size_t n, std::size_t row,
                       std::uint8_t *dst) const {
    const Distance one = distance(1);
    const bool rows = row > 1 && row <= 32768;
    const Distance above = rows ? distance(row) : one;
    Bits out{dst};
    out.put(0x78, 8), out.put(0x01, 8);  // zlib header: deflate, 32 KiB window
    out.put(1, 1), out.put(1, 2);        // the final block, fixed Huffman codes
    std::size_t i = 0;
    while (i < n) {
      const std::size_t limit = std::min<std::size_t>(258, n - i);
      const std::size_t run = i >= 1 ? match(src, i, 1, limit) : 0;
      const std::size_t up = rows && i >= row ? match(src, i, row, limit) : 0;
      const std::size_t length = std::max(run, up);
      if (length < 3) {
        out.put(codes_[src[i]], lengths_[src[i]]);
        ++i;
        continue;
      }
      const Distance &d = up > run ? above : one;
      out.put(length_bits_[length], length_count_[length]);
      out.put(d.bits, d.count);
      i += length;
    }
    out.put(codes_[256], lengths_[256]);  // end of block
    std::uint8_t *end = out.finish();
    const std::uint32_t adler = libdeflate_adler32(1, src, n);
    for (int shift = 24; shift >= 0; shift -= 8) {
      *end++ = static_cast<std::uint8_t>(adler >> shift);
    }
    return static_cast<std::size_t>(end - dst);
  }

  static std::size_t bound(std::size_t n) { return n + n / 8 + 16; }

 private:
  struct Distance {
    std::uint64_t bits;
    unsigned count;
  };

  struct Bits {  // a little-endian bit stream
    std::uint8_t *at;
    std::uint64_t buffer = 0;
    unsigned count = 0;
    void put(std::uint64_t bits, unsigned n) {
      buffer |= bits << count;
      count += n;
      while (count >= 8) {
        *at++ = static_cast<std::uint8_t>(buffer);
        buffer >>= 8;
        count -= 8;
      }
    }
    std::uint8_t *finish() {
      if (count) *at++ = static_cast<std::uint8_t>(buffer);
      return at;
    }
  };

  static std::uint32_t reverse(std::uint32_t code, std::uint32_t bits) {
    std::uint32_t reversed = 0;
    for (std::uint32_t b = 0; b < bits; ++b) reversed |= ((code >> b) & 1) << (bits - 1 - b);
    return reversed;
  }

  // The fixed 5-bit distance code of d (1-32768) and its extra bits.
  static Distance distance(std::size_t d) {
    static const std::uint32_t base[30] = {
        1,    2,    3,    4,    5,    7,     9,     13,    17,    25,
        33,   49,   65,   97,   129,  193,   257,   385,   513,   769,
        1025, 1537, 2049, 3073, 4097, 6145,  8193,  12289, 16385, 24577};
    std::uint32_t c = 29;
    while (base[c] > d) --c;
    const std::uint32_t extra = c < 4 ? 0 : c / 2 - 1;
    return {reverse(c, 5) | (static_cast<std::uint64_t>(d - base[c]) << 5), 5 + extra};
  }

  // How many bytes from i (at most limit) equal those `d` bytes earlier.
  static std::size_t match(const std::uint8_t *src, std::size_t i, std::size_t d,
                           std::size_t limit) {
    std::size_t k = 0;
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (k + 8 <= limit) {  // 8 bytes at a time: the first differing byte
      std::uint64_t a, b;
      std::memcpy(&a, src + i + k, 8);
      std::memcpy(&b, src + i + k - d, 8);
      if (a != b) return k + (__builtin_ctzll(a ^ b) >> 3);
      k += 8;
    }
#endif
    while (k < limit && src[i + k] == src[i + k - d]) ++k;
    return k;
  }

  std::uint32_t codes_[288];
  std::uint32_t lengths_[288];
  std::uint64_t length_bits_[259];
  unsigned length_count_[259];
};

// The shuffle filter on `n` elements of `size` bytes at src: byte b of
// element i goes to dst[b * total + i] (byte plane b of a chunk of `total`
// elements). SSE2 for 4-byte elements, 16 at a time: three rounds of byte
// interleaving, then 64-bit halves, give the four planes.
inline void shuffle_run(const std::uint8_t *src, std::size_t n, std::size_t size,
                        std::uint8_t *dst, std::size_t total) {
  std::size_t i = 0;
#if defined(__SSE2__)
  if (size == 4) {
    for (; i + 16 <= n; i += 16) {
      const auto *in = reinterpret_cast<const __m128i *>(src + i * 4);
      __m128i x0 = _mm_loadu_si128(in), x1 = _mm_loadu_si128(in + 1);
      __m128i x2 = _mm_loadu_si128(in + 2), x3 = _mm_loadu_si128(in + 3);
      for (int round = 0; round < 3; ++round) {
        const __m128i a0 = _mm_unpacklo_epi8(x0, x1), a1 = _mm_unpackhi_epi8(x0, x1);
        const __m128i a2 = _mm_unpacklo_epi8(x2, x3), a3 = _mm_unpackhi_epi8(x2, x3);
        x0 = a0, x1 = a1, x2 = a2, x3 = a3;
      }
      // x0: elements 0-7 byte 0, then byte 1; x1: 0-7 bytes 2, 3; x2, x3: 8-15.
      _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i), _mm_unpacklo_epi64(x0, x2));
      _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + total + i),
                       _mm_unpackhi_epi64(x0, x2));
      _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + 2 * total + i),
                       _mm_unpacklo_epi64(x1, x3));
      _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + 3 * total + i),
                       _mm_unpackhi_epi64(x1, x3));
    }
  }
#endif
  for (; i < n; ++i) {
    for (std::size_t b = 0; b < size; ++b) dst[b * total + i] = src[i * size + b];
  }
}

}  // namespace dials_diffuse
