// Eiger (DECTRIS) chunk decompression and per-frame statistics.
//
// DECTRIS detectors write one HDF5 chunk per frame, compressed with
//   - bitshuffle + LZ4 (HDF5 filter 32008, cd_values[4] == 2): a 12-byte
//     header (uint64 big-endian uncompressed bytes, uint32 big-endian block
//     bytes), then per block a uint32 big-endian compressed size and an LZ4
//     block holding the bit-transposed block; the last block holds the
//     remaining elements rounded down to a multiple of 8, and the final
//     (elements % 8) elements follow as plain bytes;
//   - LZ4 (HDF5 filter 32004): the same 12-byte header, then per block a
//     uint32 big-endian compressed size and an LZ4 block, or the block
//     stored as it is when the compressed size equals the block size.
//
// `decompress_chunk` decodes one chunk into a numpy buffer. The fused
// `compressed_frame_statistics` decodes a list of chunks block by block into
// a small per-thread scratch buffer (never a whole frame) and sums the
// pixels within [low, high] on the fly. Both release the GIL.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common.h"

namespace dials_diffuse {

enum class EigerCodec : int { none = 0, lz4 = 1, bitshuffle_lz4 = 2 };

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
    const std::size_t literals = read_length(token >> 4);
    if (literals > static_cast<std::size_t>(iend - ip) ||
        literals > static_cast<std::size_t>(oend - op)) {
      throw DecodeError("LZ4 block corrupt (literals overrun)");
    }
    std::memcpy(op, ip, literals);
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
    if (length > static_cast<std::size_t>(oend - op)) {
      throw DecodeError("LZ4 block corrupt (match overrun)");
    }
    const std::uint8_t *match = op - offset;
    if (offset >= length) {
      std::memcpy(op, match, length);
    } else if (offset == 1) {
      std::memset(op, *match, length);
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
                                        std::size_t n, std::size_t elem_size) {
  const std::size_t row = n / 8;
  const std::size_t groups = row - row % 16;
  if (elem_size != 1 && elem_size != 2 && elem_size != 4) return 0;
  __m128i y[4][8];
  for (std::size_t i = 0; i < groups; i += 16) {
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

// Undo bitshuffle's bit transpose of one block of `n` elements (n % 8 == 0)
// of `elem_size` bytes: SSE2 for 16 groups of 8 elements at a time where
// available, scalar for the rest.
inline void bit_untranspose_block(const std::uint8_t *in, std::uint8_t *out,
                                  std::size_t n, std::size_t elem_size) {
  std::size_t done = 0;
#if defined(__SSE2__)
  done = bit_untranspose_sse2(in, out, n, elem_size);
#endif
  bit_untranspose_groups(in, out, n, elem_size, done, n / 8);
}

// Per-frame result of the thresholded sum.
struct FrameTally {
  double sum = 0.0;          // sum of used pixel values (counts)
  std::int64_t used = 0;     // valid pixels with low <= value <= high
  double max = std::numeric_limits<double>::quiet_NaN();  // max used value
  std::int64_t invalid = 0;  // pixels valid in the mask but >= invalid_from
};

// Integer thresholds for unsigned pixels of type T, in a wider type W so that
// "nothing" (max + 1) is representable: used when lo <= v <= hi and v < inv,
// invalid when v >= inv. Equivalent to the double comparisons of the generic
// path for every value of T.
template <typename T, typename W>
struct UnsignedBounds {
  W lo, hi, inv;
  UnsignedBounds(double low, double high, double invalid_from) {
    const double top = static_cast<double>(std::numeric_limits<T>::max());
    auto ceil_clamped = [&](double x) -> W {
      if (!(x > 0)) return 0;
      if (x > top) return static_cast<W>(std::numeric_limits<T>::max()) + 1;
      return static_cast<W>(std::ceil(x));
    };
    lo = ceil_clamped(low);
    inv = std::isnan(invalid_from) ? static_cast<W>(std::numeric_limits<T>::max()) + 1
                                   : ceil_clamped(invalid_from);
    if (!(high >= 0)) {  // negative or NaN: nothing is used
      lo = 1;
      hi = 0;
    } else {
      hi = high >= top ? static_cast<W>(std::numeric_limits<T>::max())
                       : static_cast<W>(std::floor(high));
    }
    if (std::isnan(low)) lo = hi + 1;
  }
};

// Tally of one run of at most 4096 unsigned pixels: the sum fits in W
// (4096 * 65535 < 2^32), the counters in 16 bits or in T.
template <typename T>
struct RunTally {
  using W = std::conditional_t<(sizeof(T) < 4), std::uint32_t, std::uint64_t>;
  using Count = std::conditional_t<(sizeof(T) < 2), std::uint16_t, T>;
  W sum = 0;
  T max = 0;
  Count used = 0, invalid = 0;
};

// Branch-free, in the pixel type itself so that the compiler packs as many
// pixels per vector as it can: used when lo <= v <= hi, invalid when
// v > last, both only where the mask (if any) is nonzero.
template <typename T, bool HasMask>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline void tally_run_impl(const T *values, const std::uint8_t *m, std::size_t n,
                           T lo, T hi, T last, RunTally<T> &r) {
  typename RunTally<T>::W sum = 0;
  T max = 0;
  typename RunTally<T>::Count used = 0, invalid = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const T v = values[i];
    const T ok = HasMask ? T(T(0) - T(m[i] != 0)) : T(~T(0));
    const T use = ok & T(T(0) - T(v >= lo)) & T(T(0) - T(v <= hi));
    const T bad = ok & T(T(0) - T(v > last));
    const T kept = v & use;
    sum += kept;
    max = kept > max ? kept : max;
    used += use & 1u;
    invalid += bad & 1u;
  }
  r.sum = sum;
  r.max = max;
  r.used = used;
  r.invalid = invalid;
}

// One compiled copy per pixel type and mask presence, each with the
// CPU-specific clones of DIALS_DIFFUSE_CLONES (common.h).
#define DIALS_DIFFUSE_TALLY_RUN(T)                                                 \
  DIALS_DIFFUSE_CLONES static void tally_run_masked(                               \
      const T *values, const std::uint8_t *m, std::size_t n, T lo, T hi, T last,   \
      RunTally<T> &r) {                                                            \
    tally_run_impl<T, true>(values, m, n, lo, hi, last, r);                        \
  }                                                                                \
  DIALS_DIFFUSE_CLONES static void tally_run_unmasked(                             \
      const T *values, const std::uint8_t *, std::size_t n, T lo, T hi, T last,    \
      RunTally<T> &r) {                                                            \
    tally_run_impl<T, false>(values, nullptr, n, lo, hi, last, r);                 \
  }

DIALS_DIFFUSE_TALLY_RUN(std::uint8_t)
DIALS_DIFFUSE_TALLY_RUN(std::uint16_t)
DIALS_DIFFUSE_TALLY_RUN(std::uint32_t)
#undef DIALS_DIFFUSE_TALLY_RUN

template <typename T>
inline void tally_run(const T *values, const std::uint8_t *m, std::size_t n, T lo,
                      T hi, T last, RunTally<T> &r) {
  if (m) {
    tally_run_masked(values, m, n, lo, hi, last, r);
  } else {
    tally_run_unmasked(values, m, n, lo, hi, last, r);
  }
}

// Accumulates pixels [offset, offset+n) of one frame. Integer sums are exact
// (64-bit) and converted once at the end. Unsigned pixels (the Eiger types)
// take a branch-free path the compiler vectorises.
template <typename T>
struct FrameAccumulator {
  using Acc = typename std::conditional<std::is_integral<T>::value,
                                        std::conditional_t<std::is_signed<T>::value,
                                                           std::int64_t, std::uint64_t>,
                                        double>::type;
  double low, high, invalid_from;
  const std::uint8_t *mask;  // nonzero = valid; nullptr = all valid
  Acc sum = 0;
  std::int64_t used = 0;
  std::int64_t invalid = 0;
  bool any = false;
  T max_value{};

  void add(const T *values, std::size_t n, std::size_t offset) {
    const std::uint8_t *m = mask ? mask + offset : nullptr;
    if constexpr (std::is_unsigned<T>::value) {
      add_unsigned(values, n, m);
      return;
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (m && !m[i]) continue;
      const T v = values[i];
      const double d = static_cast<double>(v);
      if (d >= invalid_from) {
        ++invalid;
        continue;
      }
      if (d >= low && d <= high) {  // NaN fails both tests
        sum += static_cast<Acc>(v);
        ++used;
        if (!any || v > max_value) {
          max_value = v;
          any = true;
        }
      }
    }
  }

  // Branch-free, in the pixel type itself so that the compiler packs as many
  // pixels per vector as it can (8 uint16 per SSE2 register). Runs of at most
  // 4096 pixels accumulate in W (4096 * 65535 < 2^32).
  // Unsigned pixels: integer thresholds, then branch-free runs (tally_run).
  void add_unsigned(const T *values, std::size_t n, const std::uint8_t *m) {
    using W = std::conditional_t<(sizeof(T) < 4), std::uint32_t, std::uint64_t>;
    const UnsignedBounds<T, W> b(low, high, invalid_from);
    const W top = std::numeric_limits<T>::max();
    // used: lo <= v <= hi_used; invalid: v > last_valid.
    if (b.inv == 0) {  // every value is invalid
      for (std::size_t i = 0; i < n; ++i) invalid += m ? (m[i] != 0) : 1;
      return;
    }
    const W last_valid = std::min(top, b.inv - 1);
    const W hi_used = std::min(b.hi, last_valid);
    const bool none_used = b.lo > hi_used;
    const T lo = none_used ? T(1) : static_cast<T>(b.lo);
    const T hi = none_used ? T(0) : static_cast<T>(hi_used);
    const T last = static_cast<T>(last_valid);
    constexpr std::size_t run = 4096;
    for (std::size_t start = 0; start < n; start += run) {
      RunTally<T> r;
      tally_run(values + start, m ? m + start : nullptr,
                std::min(n - start, run), lo, hi, last, r);
      sum += r.sum;
      used += r.used;
      invalid += r.invalid;
      // Used values are >= 0, so the max over (used values and 0) is theirs.
      if (r.used && (!any || r.max > max_value)) {
        max_value = r.max;
        any = true;
      }
    }
  }

  FrameTally result() const {
    FrameTally t;
    t.sum = static_cast<double>(sum);
    t.used = used;
    t.invalid = invalid;
    if (any) t.max = static_cast<double>(max_value);
    return t;
  }
};

// Per-thread scratch buffers, reused across calls (no allocation per frame).
struct Scratch {
  std::vector<std::uint8_t> decoded;
  std::vector<std::uint8_t> untransposed;
  std::uint8_t *get(std::vector<std::uint8_t> &v, std::size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
};

inline Scratch &thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Walk a compressed chunk block by block. `sink(bytes, n_bytes, offset)`
// receives consecutive runs of decoded bytes (whole elements) in order. With
// `direct` (expected_bytes long) blocks are decoded straight into it, and
// `bytes` points into it; otherwise into small per-thread scratch buffers.
template <typename Sink>
void for_each_decoded_block(const std::uint8_t *src, std::size_t src_size,
                            EigerCodec codec, std::size_t elem_size,
                            std::size_t expected_bytes, Sink &&sink,
                            std::uint8_t *direct = nullptr) {
  if (codec == EigerCodec::none) {
    if (src_size != expected_bytes) {
      throw DecodeError("uncompressed chunk has the wrong size");
    }
    sink(src, src_size, 0);
    return;
  }
  if (src_size < 12) throw DecodeError("compressed chunk shorter than its header");
  const std::uint64_t total = read_be64(src);
  const std::uint32_t block_bytes = read_be32(src + 8);
  if (total != expected_bytes) {
    throw DecodeError("chunk header gives " + std::to_string(total) +
                      " bytes, expected " + std::to_string(expected_bytes));
  }
  if (block_bytes == 0 || block_bytes % elem_size != 0) {
    throw DecodeError("chunk header has an invalid block size");
  }
  Scratch &scratch = thread_scratch();
  const std::uint8_t *ip = src + 12;
  const std::uint8_t *const iend = src + src_size;
  std::size_t done = 0;
  const std::size_t n_elements = total / elem_size;
  // bitshuffle: full blocks, then one block of the remainder rounded down to
  // a multiple of 8 elements, then the last (n % 8) elements stored plain.
  const std::size_t compressed_bytes =
      codec == EigerCodec::bitshuffle_lz4 ? (n_elements - n_elements % 8) * elem_size
                                          : total;
  while (done < compressed_bytes) {
    const std::size_t this_block =
        std::min<std::size_t>(block_bytes, compressed_bytes - done);
    if (iend - ip < 4) throw DecodeError("compressed chunk truncated");
    const std::uint32_t csize = read_be32(ip);
    ip += 4;
    if (csize > static_cast<std::size_t>(iend - ip)) {
      throw DecodeError("compressed chunk truncated");
    }
    if (codec == EigerCodec::lz4) {
      if (csize == this_block) {
        sink(ip, this_block, done);  // stored uncompressed
      } else {
        std::uint8_t *buffer =
            direct ? direct + done : scratch.get(scratch.decoded, this_block);
        lz4_decode_block(ip, csize, buffer, this_block);
        sink(buffer, this_block, done);
      }
    } else {
      std::uint8_t *buffer = scratch.get(scratch.decoded, this_block);
      std::uint8_t *plain =
          direct ? direct + done : scratch.get(scratch.untransposed, this_block);
      lz4_decode_block(ip, csize, buffer, this_block);
      bit_untranspose_block(buffer, plain, this_block / elem_size, elem_size);
      sink(plain, this_block, done);
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
  if (leftover) sink(ip, leftover, done);
}

inline EigerCodec codec_from_int(int codec) {
  if (codec < 0 || codec > 2) {
    throw std::invalid_argument("codec must be 0 (none), 1 (lz4) or 2 (bitshuffle_lz4)");
  }
  return static_cast<EigerCodec>(codec);
}

// Dispatch fn(T{}) over the Eiger pixel types (uint8/16/32).
template <typename Fn>
auto dispatch_eiger_dtype(const py::dtype &dt, Fn &&fn) {
  const bool native = dt.attr("isnative").cast<bool>();
  if (native && dt.kind() == 'u') {
    switch (dt.itemsize()) {
      case 1: return fn(std::uint8_t{});
      case 2: return fn(std::uint16_t{});
      case 4: return fn(std::uint32_t{});
    }
  }
  throw std::invalid_argument("Eiger chunks must be uint8, uint16 or uint32, not " +
                              dtype_name(dt));
}

// The bytes of a chunk given as bytes or as a 1-d C-contiguous uint8 array
// (e.g. a slice of a numpy.memmap of the data file: no copy). The caller
// keeps the object alive.
inline std::pair<const std::uint8_t *, std::size_t> bytes_view(const py::handle &h) {
  if (PyBytes_Check(h.ptr())) {
    return {reinterpret_cast<const std::uint8_t *>(PyBytes_AS_STRING(h.ptr())),
            static_cast<std::size_t>(PyBytes_GET_SIZE(h.ptr()))};
  }
  if (py::isinstance<py::array>(h)) {
    const auto a = py::reinterpret_borrow<py::array>(h);
    if (a.ndim() == 1 && a.itemsize() == 1 && (a.flags() & py::array::c_style)) {
      return {static_cast<const std::uint8_t *>(a.data()),
              static_cast<std::size_t>(a.size())};
    }
  }
  throw std::invalid_argument(
      "compressed chunks must be bytes or 1-d contiguous uint8 arrays");
}

// Python: decompress_chunk(chunk: bytes, codec: int, out: ndarray) -> out
inline py::array decompress_chunk(const py::object &chunk, int codec_value,
                                  py::array out) {
  const EigerCodec codec = codec_from_int(codec_value);
  require_contiguous(out, "out");
  if (!out.writeable()) throw std::invalid_argument("out is read-only");
  const std::size_t elem_size = static_cast<std::size_t>(out.itemsize());
  const std::size_t expected = static_cast<std::size_t>(out.nbytes());
  auto view = bytes_view(chunk);
  auto *dst = static_cast<std::uint8_t *>(out.mutable_data());
  {
    py::gil_scoped_release release;
    for_each_decoded_block(
        view.first, view.second, codec, elem_size, expected,
        [&](const std::uint8_t *bytes, std::size_t n, std::size_t offset) {
          if (bytes != dst + offset) std::memcpy(dst + offset, bytes, n);
        },
        dst);
  }
  return out;
}

inline py::tuple tallies_to_python(const std::vector<FrameTally> &tallies) {
  const py::ssize_t n = static_cast<py::ssize_t>(tallies.size());
  py::array_t<double> sums(n), maxima(n);
  py::array_t<std::int64_t> used(n), invalid(n);
  for (py::ssize_t i = 0; i < n; ++i) {
    sums.mutable_data()[i] = tallies[i].sum;
    used.mutable_data()[i] = tallies[i].used;
    maxima.mutable_data()[i] = tallies[i].max;
    invalid.mutable_data()[i] = tallies[i].invalid;
  }
  return py::make_tuple(sums, used, maxima, invalid);
}

inline const std::uint8_t *flat_mask(const py::object &mask, std::size_t n_pixels) {
  if (mask.is_none()) return nullptr;
  py::array m = mask.cast<py::array>();
  require_contiguous(m, "mask");
  if (!((m.dtype().kind() == 'b' || m.dtype().kind() == 'u') && m.itemsize() == 1)) {
    throw std::invalid_argument("mask must have dtype bool or uint8");
  }
  if (static_cast<std::size_t>(m.size()) != n_pixels) {
    throw std::invalid_argument("mask must have one entry per pixel of a frame");
  }
  return static_cast<const std::uint8_t *>(m.data());
}

// Python: compressed_frame_statistics(chunks, codec, dtype, n_pixels, low,
// high, mask=None, invalid_from=inf) -> (sum, used, max, invalid)
inline py::tuple compressed_frame_statistics(const py::list &chunks, int codec_value,
                                             const py::dtype &dtype,
                                             std::int64_t n_pixels, double low,
                                             double high, const py::object &mask,
                                             double invalid_from) {
  const EigerCodec codec = codec_from_int(codec_value);
  if (n_pixels < 1) throw std::invalid_argument("n_pixels must be positive");
  const std::uint8_t *mask_ptr = flat_mask(mask, static_cast<std::size_t>(n_pixels));
  std::vector<std::pair<const std::uint8_t *, std::size_t>> views;
  for (const auto &chunk : chunks) views.push_back(bytes_view(chunk));
  std::vector<FrameTally> tallies(views.size());
  dispatch_eiger_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const std::size_t expected = static_cast<std::size_t>(n_pixels) * sizeof(T);
    py::gil_scoped_release release;
    for (std::size_t f = 0; f < views.size(); ++f) {
      FrameAccumulator<T> acc{low, high, invalid_from, mask_ptr};
      try {
        for_each_decoded_block(
            views[f].first, views[f].second, codec, sizeof(T), expected,
            [&](const std::uint8_t *bytes, std::size_t n, std::size_t offset) {
              // Blocks are whole elements; copy out if misaligned.
              if (reinterpret_cast<std::uintptr_t>(bytes) % alignof(T) == 0) {
                acc.add(reinterpret_cast<const T *>(bytes), n / sizeof(T),
                        offset / sizeof(T));
              } else {
                Scratch &s = thread_scratch();
                std::uint8_t *aligned = s.get(s.untransposed, n);
                std::memcpy(aligned, bytes, n);
                acc.add(reinterpret_cast<const T *>(aligned), n / sizeof(T),
                        offset / sizeof(T));
              }
            });
      } catch (const DecodeError &error) {
        throw DecodeError("chunk " + std::to_string(f) + ": " + error.what());
      }
      tallies[f] = acc.result();
    }
  });
  return tallies_to_python(tallies);
}

// Python: frame_statistics(data, low, high, mask=None, invalid_from=inf)
// for decoded frames `data` of shape (frames, rows, columns) (any pixel dtype).
inline py::tuple frame_statistics(const py::array &data, double low, double high,
                                  const py::object &mask, double invalid_from) {
  require_contiguous(data, "data");
  if (data.ndim() != 3) throw std::invalid_argument("data must be (frames, rows, columns)");
  const std::size_t n_frames = static_cast<std::size_t>(data.shape(0));
  const std::size_t n_pixels = static_cast<std::size_t>(data.shape(1) * data.shape(2));
  const std::uint8_t *mask_ptr = flat_mask(mask, n_pixels);
  std::vector<FrameTally> tallies(n_frames);
  dispatch_pixel_dtype(data, "data", [&](auto tag) {
    using T = decltype(tag);
    const T *values = static_cast<const T *>(data.data());
    py::gil_scoped_release release;
    for (std::size_t f = 0; f < n_frames; ++f) {
      FrameAccumulator<T> acc{low, high, invalid_from, mask_ptr};
      acc.add(values + f * n_pixels, n_pixels, 0);
      tallies[f] = acc.result();
    }
  });
  return tallies_to_python(tallies);
}

inline void bind_eiger(py::module_ &m) {
  py::register_exception<DecodeError>(m, "DecodeError", PyExc_ValueError);
  m.def("decompress_chunk", &decompress_chunk, py::arg("chunk"), py::arg("codec"),
        py::arg("out"),
        R"doc(Decode one raw HDF5 chunk (read_direct_chunk) into `out`, GIL released.

Parameters
----------
chunk : bytes or 1-d contiguous uint8 ndarray (e.g. a numpy.memmap slice)
    The raw chunk as stored in the file.
codec : int
    0 none, 1 LZ4 (HDF5 filter 32004), 2 bitshuffle+LZ4 (filter 32008).
out : ndarray, C-contiguous, writeable
    Receives the decoded pixels; its size and itemsize must match the chunk.

Returns
-------
out

Raises
------
DecodeError (a ValueError) for corrupt or truncated chunks.
)doc");
  m.def("compressed_frame_statistics", &compressed_frame_statistics,
        py::arg("chunks"), py::arg("codec"), py::arg("dtype"), py::arg("n_pixels"),
        py::arg("low"), py::arg("high"), py::arg("mask") = py::none(),
        py::arg("invalid_from") = std::numeric_limits<double>::infinity(),
        R"doc(Per-frame thresholded sums straight from compressed chunks, GIL released.

Each chunk (one frame) is decoded block by block into a small per-thread
buffer and summed on the fly: memory never holds a decoded frame.

Parameters
----------
chunks : list of bytes or 1-d contiguous uint8 ndarrays
    One raw chunk per frame.
codec : int
    0 none, 1 LZ4 (32004), 2 bitshuffle+LZ4 (32008).
dtype : numpy dtype
    uint8, uint16 or uint32.
n_pixels : int
    Pixels per frame.
low, high : float
    Pixels with low <= value <= high are used (counts).
mask : ndarray of bool/uint8, n_pixels entries, optional
    Nonzero marks a valid pixel.
invalid_from : float
    Values >= this are invalid (gap markers 2^N-1, overloads) and counted
    apart, never summed.

Returns
-------
(sum float64, used int64, max float64 (NaN if none used), invalid int64),
one entry per frame.
)doc");
  m.def("frame_statistics", &frame_statistics, py::arg("data"), py::arg("low"),
        py::arg("high"), py::arg("mask") = py::none(),
        py::arg("invalid_from") = std::numeric_limits<double>::infinity(),
        R"doc(Per-frame thresholded sums of decoded frames, GIL released.

The same statistics as compressed_frame_statistics for data already in
memory: `data` (frames, rows, columns) of any pixel dtype, `mask` (rows,
columns) nonzero = valid.

Returns
-------
(sum float64, used int64, max float64, invalid int64) per frame.
)doc");
}

}  // namespace dials_diffuse
