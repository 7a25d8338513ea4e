// Per-frame statistics of detector frames, as pure C++ (the Python glue is
// in bindings_eiger.cpp): the sum, number and maximum of the pixels within
// [low, high] that the mask calls valid, and the number of valid pixels
// flagged by their value (gap markers, overloads: value >= invalid_from).
//
// Decoded frames of any pixel type: `FrameAccumulator`, branch-free runs the
// compiler vectorises for unsigned pixels.
//
// Compressed frames (`compressed_frame_tally`): chunks are decoded block by
// block into per-thread buffers that stay in L1/L2 (never a whole frame).
// Bitshuffle blocks are not un-transposed at all: the sum of a block is
// sum_b 2^b popcount(plane_b & use), where `use` is the bitmap of the used
// pixels. Below the thresholds (values < 2^k <= high + 1, the common case)
// `use` is the validity bitmap itself; only 64-pixel words where a valid
// pixel has a bit in plane k or above are compared bit-sliced, plane by
// plane. Integer arithmetic throughout: the same result in every build and
// on every CPU, equal to the sum of the decoded values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>  // AVX2 / AVX-512, used in functions with target attributes
#define DIALS_DIFFUSE_X86_KERNELS 1
#endif

#include "clones.h"
#include "codecs.h"

namespace dials_diffuse {

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
// CPU-specific clones of DIALS_DIFFUSE_CLONES (clones.h).
#define DIALS_DIFFUSE_TALLY_RUN(T)                                                  \
  [[maybe_unused]] DIALS_DIFFUSE_CLONES static void tally_run_masked(               \
      const T *values, const std::uint8_t *m, std::size_t n, T lo, T hi, T last,    \
      RunTally<T> &r) {                                                             \
    tally_run_impl<T, true>(values, m, n, lo, hi, last, r);                         \
  }                                                                                 \
  [[maybe_unused]] DIALS_DIFFUSE_CLONES static void tally_run_unmasked(             \
      const T *values, const std::uint8_t *, std::size_t n, T lo, T hi, T last,     \
      RunTally<T> &r) {                                                             \
    tally_run_impl<T, false>(values, nullptr, n, lo, hi, last, r);                  \
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
// The integer form of (low, high, invalid_from) for unsigned pixels of type
// T: a valid pixel is used when lo <= v <= hi (none is when lo > hi), and
// invalid when v > last, or always with all_invalid.
template <typename T>
struct UnsignedLimits {
  T lo = 1, hi = 0, last = std::numeric_limits<T>::max();
  bool all_invalid = false;
  UnsignedLimits(double low, double high, double invalid_from) {
    using W = std::conditional_t<(sizeof(T) < 4), std::uint32_t, std::uint64_t>;
    const UnsignedBounds<T, W> b(low, high, invalid_from);
    const W top = std::numeric_limits<T>::max();
    if (b.inv == 0) {
      all_invalid = true;
      return;
    }
    const W last_valid = std::min(top, b.inv - 1);
    const W hi_used = std::min(b.hi, last_valid);
    last = static_cast<T>(last_valid);
    if (b.lo <= hi_used) {
      lo = static_cast<T>(b.lo);
      hi = static_cast<T>(hi_used);
    }
  }
  bool none_used() const { return all_invalid || lo > hi; }
};

// UnsignedLimits for unsigned T, nothing for the others.
template <typename T, typename = void>
struct LimitsOf {
  LimitsOf(double, double, double) {}
};
template <typename T>
struct LimitsOf<T, std::enable_if_t<std::is_unsigned<T>::value>> : UnsignedLimits<T> {
  using UnsignedLimits<T>::UnsignedLimits;
};

// Bit-plane statistics of bitshuffle blocks need little-endian 64-bit words
// (bit q of a word is pixel q); elsewhere blocks are un-transposed first.
#if (defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) || \
    defined(_MSC_VER)
constexpr bool kPlaneWords = true;
#else
constexpr bool kPlaneWords = false;
#endif

// Set bits of x: the popcnt instruction where the caller's target has it.
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline std::uint64_t popcount64(std::uint64_t x) {
#if defined(__GNUC__)
  return static_cast<std::uint64_t>(__builtin_popcountll(x));
#else
  x = x - ((x >> 1) & 0x5555555555555555ULL);
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return (x * 0x0101010101010101ULL) >> 56;
#endif
}

inline std::uint64_t load_word(const std::uint8_t *p) {
  std::uint64_t x;
  std::memcpy(&x, p, 8);
  return x;
}

// The first `bytes` (< 8) bytes at p as the low bytes of a word.
inline std::uint64_t load_partial_word(const std::uint8_t *p, std::size_t bytes) {
  std::uint64_t x = 0;
  for (std::size_t i = 0; i < bytes; ++i) x |= std::uint64_t(p[i]) << (8 * i);
  return x;
}

// Bit-sliced v <= c for the 64 pixels whose bit b is in p[b] (B planes).
template <int B>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline std::uint64_t planes_at_most(const std::uint64_t *p, std::uint64_t c) {
  std::uint64_t lt = 0, eq = ~std::uint64_t(0);
  for (int b = B - 1; b >= 0; --b) {
    if ((c >> b) & 1) {
      lt |= eq & ~p[b];
      eq &= p[b];
    } else {
      eq &= ~p[b];
    }
  }
  return lt | eq;
}

// Running statistics of one frame's unsigned pixels from bit planes.
template <typename T>
struct PlaneTally {
  std::uint64_t sum = 0, used = 0, invalid = 0;
  T max = 0;
  bool any = false;  // max holds the largest used value so far
};

// One bitshuffle block of n pixels (n % 8 == 0) held as bit planes: plane
// b (bit b of the values) at planes + b * n / 8, bit m of its byte i for
// pixel 8 i + m, read as 64-pixel words (the last one partial when n / 8 is
// not a multiple of 8). `valid`: the block's n / 8 bytes of validity bits
// in the same order (nullptr: all valid). `k`: values below 2^k are neither
// above L.hi nor invalid (with no pixel used: not invalid).
template <typename T>
struct PlaneBlock {
  static constexpr int B = 8 * sizeof(T);
  const std::uint8_t *planes;
  std::size_t row, full, tail, words;
  const std::uint8_t *valid;
  const UnsignedLimits<T> &L;
  int k;
  bool lo_zero, none, check_last;

  PlaneBlock(const std::uint8_t *planes_, std::size_t n, const std::uint8_t *valid_,
             const UnsignedLimits<T> &limits, int k_)
      : planes(planes_), row(n / 8), full(n / 64), tail(n / 8 % 8),
        words(n / 64 + (n / 8 % 8 ? 1 : 0)), valid(valid_), L(limits), k(k_),
        lo_zero(limits.lo == 0), none(limits.none_used()),
        check_last(limits.last != std::numeric_limits<T>::max()) {}

  std::uint64_t load(const std::uint8_t *p, std::size_t w) const {
    return w < full ? load_word(p + 8 * w) : load_partial_word(p + 8 * w, tail);
  }
  std::uint64_t plane(int b, std::size_t w) const { return load(planes + b * row, w); }
  std::uint64_t valid_word(std::size_t w) const {
    if (valid) return load(valid, w);
    return w < full ? ~std::uint64_t(0) : (std::uint64_t(1) << (8 * tail)) - 1;
  }
};

struct BlockCounts {
  std::uint64_t used = 0, invalid = 0;
  std::uint64_t high = 0;  // used pixels with a bit in plane k or above
};

// The used and invalid pixels of words [from, words) into use[] and c.
template <typename T>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline void classify_words(const PlaneBlock<T> &blk, std::size_t from, std::uint64_t *use,
                           BlockCounts &c) {
  constexpr int B = PlaneBlock<T>::B;
  const std::uint64_t ones = ~std::uint64_t(0);
  for (std::size_t w = from; w < blk.words; ++w) {
    const std::uint64_t v = blk.valid_word(w);
    std::uint64_t h = 0;
    for (int b = blk.k; b < B; ++b) h |= blk.plane(b, w);
    std::uint64_t u, bad = 0;
    if (blk.lo_zero && !(h & v)) {
      u = blk.none ? 0 : v;
      bad = blk.L.all_invalid ? v : 0;
    } else {  // a valid pixel at or above 2^k: compare bit-sliced
      std::uint64_t p[B];
      for (int b = 0; b < B; ++b) p[b] = blk.plane(b, w);
      u = blk.none ? 0
                   : v & planes_at_most<B>(p, blk.L.hi) &
                         (blk.lo_zero ? ones
                                      : ~planes_at_most<B>(p, std::uint64_t(blk.L.lo) - 1));
      if (blk.L.all_invalid) {
        bad = v;
      } else if (blk.check_last) {
        bad = v & ~planes_at_most<B>(p, blk.L.last);
      }
      c.high |= u & h;
    }
    use[w] = u;
    c.used += popcount64(u);
    c.invalid += popcount64(bad);
  }
}

// Number of used pixels of words [from, words) with bit b set.
template <typename T>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline std::uint64_t count_plane(const PlaneBlock<T> &blk, int b, const std::uint64_t *use,
                                 std::size_t from) {
  const std::uint8_t *plane = blk.planes + b * blk.row;
  std::uint64_t s = 0;
  std::size_t w = from;
  for (; w < blk.full; ++w) {
    s += popcount64(load_word(plane + 8 * w) & use[w]);
  }
  if (w < blk.words) {
    s += popcount64(load_partial_word(plane + 8 * w, blk.tail) & use[w]);
  }
  return s;
}

// The block's largest used value, which has bit top_bit (-1: the values
// are 0) and none above; cand: room for blk.words words.
template <typename T>
inline T block_max(const PlaneBlock<T> &blk, const std::uint64_t *use, std::uint64_t *cand,
                   int top_bit) {
  if (top_bit < 0) return 0;
  std::uint64_t m = std::uint64_t(1) << top_bit;
  for (std::size_t w = 0; w < blk.words; ++w) cand[w] = use[w] & blk.plane(top_bit, w);
  for (int b = top_bit - 1; b >= 0; --b) {
    std::uint64_t any = 0;
    for (std::size_t w = 0; w < blk.words; ++w) any |= cand[w] & blk.plane(b, w);
    if (!any) continue;
    m |= std::uint64_t(1) << b;
    for (std::size_t w = 0; w < blk.words; ++w) cand[w] &= blk.plane(b, w);
  }
  return static_cast<T>(m);
}

// Tally one block with the word kernels of Kernels (classify: use[] and
// counts; count: used pixels with bit b set), then its maximum if it may
// exceed the frame's so far. use, cand: room for blk.words words.
template <typename Kernels, typename T>
inline void tally_block(const PlaneBlock<T> &blk, std::uint64_t *use, std::uint64_t *cand,
                        PlaneTally<T> &t) {
  BlockCounts c;
  Kernels::classify(blk, use, c);
  t.invalid += c.invalid;
  if (!c.used) return;
  t.used += c.used;
  // Used values have no bit in planes k and above unless c.high.
  const int top = c.high ? PlaneBlock<T>::B : blk.k;
  int top_bit = -1;
  for (int b = 0; b < top; ++b) {
    const std::uint64_t s = Kernels::count(blk, b, use);
    t.sum += s << b;
    if (s) top_bit = b;
  }
  const std::uint64_t bound = top_bit < 0 ? 0 : (std::uint64_t(2) << top_bit) - 1;
  if (t.any && bound <= t.max) return;
  const T m = block_max(blk, use, cand, top_bit);
  if (!t.any || m > t.max) t.max = m;
  t.any = true;
}

// The word kernels, one word at a time, compiled for the build's target and
// (x86-64) with the popcnt instruction.
#define DIALS_DIFFUSE_WORD_KERNELS(Name, ATTRIBUTES)                                \
  struct Name {                                                                     \
    template <typename T>                                                           \
    ATTRIBUTES static void classify(const PlaneBlock<T> &blk, std::uint64_t *use,   \
                                    BlockCounts &c) {                               \
      classify_words(blk, 0, use, c);                                               \
    }                                                                               \
    template <typename T>                                                           \
    ATTRIBUTES static std::uint64_t count(const PlaneBlock<T> &blk, int b,          \
                                          const std::uint64_t *use) {               \
      return count_plane(blk, b, use, 0);                                           \
    }                                                                               \
  };

DIALS_DIFFUSE_WORD_KERNELS(WordKernels, )

#if defined(DIALS_DIFFUSE_X86_KERNELS)

DIALS_DIFFUSE_WORD_KERNELS(PopcntWordKernels, __attribute__((target("popcnt"))))

// The sum of the eight 64-bit lanes (without _mm512_reduce_add_epi64, which
// draws a -Wuninitialized false alarm from GCC 12's headers).
__attribute__((target("avx512f"))) inline std::uint64_t lane_sum(__m512i x) {
  alignas(64) std::uint64_t lanes[8];
  _mm512_store_si512(lanes, x);
  std::uint64_t s = 0;
  for (std::uint64_t lane : lanes) s += lane;
  return s;
}

// Eight words at a time with AVX-512 (VPOPCNTQ); the words left, and the
// 8-word groups where a valid pixel is at or above 2^k, one at a time.
struct Avx512WordKernels {
  template <typename T>
  __attribute__((target("avx512f,avx512vpopcntdq,popcnt"))) static void classify(
      const PlaneBlock<T> &blk, std::uint64_t *use, BlockCounts &c) {
    constexpr int B = PlaneBlock<T>::B;
    const std::size_t groups = blk.full / 8 * 8;
    __m512i used = _mm512_setzero_si512(), invalid = _mm512_setzero_si512();
    std::size_t w = 0;
    for (; w < groups; w += 8) {
      const __m512i v = blk.valid ? _mm512_loadu_si512(blk.valid + 8 * w)
                                  : _mm512_set1_epi64(-1);
      __m512i h = _mm512_setzero_si512();
      for (int b = blk.k; b < B; ++b) {
        h = _mm512_or_si512(h, _mm512_loadu_si512(blk.planes + b * blk.row + 8 * w));
      }
      if (!blk.lo_zero || _mm512_test_epi64_mask(h, v)) {
        BlockCounts slow;
        PlaneBlock<T> part = blk;
        part.words = w + 8;
        classify_words(part, w, use, slow);
        c.used += slow.used;
        c.invalid += slow.invalid;
        c.high |= slow.high;
        continue;
      }
      const __m512i u = blk.none ? _mm512_setzero_si512() : v;
      _mm512_storeu_si512(use + w, u);
      used = _mm512_add_epi64(used, _mm512_popcnt_epi64(u));
      if (blk.L.all_invalid) invalid = _mm512_add_epi64(invalid, _mm512_popcnt_epi64(v));
    }
    c.used += lane_sum(used);
    c.invalid += lane_sum(invalid);
    classify_words(blk, w, use, c);
  }

  template <typename T>
  __attribute__((target("avx512f,avx512vpopcntdq,popcnt"))) static std::uint64_t count(
      const PlaneBlock<T> &blk, int b, const std::uint64_t *use) {
    const std::uint8_t *plane = blk.planes + b * blk.row;
    const std::size_t groups = blk.full / 8 * 8;
    __m512i s = _mm512_setzero_si512();
    for (std::size_t w = 0; w < groups; w += 8) {
      const __m512i x = _mm512_and_si512(_mm512_loadu_si512(plane + 8 * w),
                                         _mm512_loadu_si512(use + w));
      s = _mm512_add_epi64(s, _mm512_popcnt_epi64(x));
    }
    return lane_sum(s) +
           count_plane(blk, b, use, groups);
  }
};
#endif

// Which word kernels this CPU runs: 2 AVX-512 VPOPCNTQ, 1 popcnt, 0 plain.
// All give the same integers.
inline int plane_kernel_level() {
#if defined(DIALS_DIFFUSE_X86_KERNELS)
  static const int level = __builtin_cpu_supports("avx512vpopcntdq") &&
                                   __builtin_cpu_supports("avx512f")
                               ? 2
                           : __builtin_cpu_supports("popcnt") ? 1
                                                              : 0;
  return level;
#else
  return 0;
#endif
}

// Tally one bitshuffle block (see PlaneBlock) into t, with the best word
// kernels of this CPU, or those of `level` when it is lower (for tests).
template <typename T>
inline void tally_planes(const std::uint8_t *planes, std::size_t n,
                         const std::uint8_t *valid, const UnsignedLimits<T> &L, int k,
                         std::uint64_t *use, std::uint64_t *cand, PlaneTally<T> &t,
                         int level) {
  const PlaneBlock<T> blk(planes, n, valid, L, k);
  level = std::min(level, plane_kernel_level());
#if defined(DIALS_DIFFUSE_X86_KERNELS)
  if (level >= 2) return tally_block<Avx512WordKernels>(blk, use, cand, t);
  if (level == 1) return tally_block<PopcntWordKernels>(blk, use, cand, t);
#endif
  tally_block<WordKernels>(blk, use, cand, t);
}

// Accumulates the pixels of one frame, run by run. Integer sums are exact
// (64-bit) and converted once at the end. Unsigned pixels (the Eiger types)
// take branch-free runs the compiler vectorises, or bit planes.
template <typename T>
struct FrameAccumulator {
  using Acc = typename std::conditional<std::is_integral<T>::value,
                                        std::conditional_t<std::is_signed<T>::value,
                                                           std::int64_t, std::uint64_t>,
                                        double>::type;
  double low, high, invalid_from;
  LimitsOf<T> limits;
  Acc sum = 0;
  std::int64_t used = 0;
  std::int64_t invalid = 0;
  bool any = false;
  T max_value{};

  FrameAccumulator(double low_, double high_, double invalid_from_)
      : low(low_), high(high_), invalid_from(invalid_from_),
        limits(low_, high_, invalid_from_) {}

  // n values with their byte mask `m` (nonzero = valid; nullptr: all valid).
  void add(const T *values, std::size_t n, const std::uint8_t *m) {
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

  // Unsigned pixels: integer thresholds, then branch-free runs of at most
  // 4096 pixels (tally_run), in the pixel type itself so that the compiler
  // packs as many pixels per vector as it can.
  void add_unsigned(const T *values, std::size_t n, const std::uint8_t *m) {
    const UnsignedLimits<T> &L = limits;
    if (L.all_invalid) {
      for (std::size_t i = 0; i < n; ++i) invalid += m ? (m[i] != 0) : 1;
      return;
    }
    constexpr std::size_t run = 4096;
    for (std::size_t start = 0; start < n; start += run) {
      RunTally<T> r;
      tally_run(values + start, m ? m + start : nullptr, std::min(n - start, run), L.lo,
                L.hi, L.last, r);
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

  void add(const PlaneTally<T> &t) {
    sum += t.sum;
    used += static_cast<std::int64_t>(t.used);
    invalid += static_cast<std::int64_t>(t.invalid);
    if (t.any && (!any || t.max > max_value)) {
      max_value = t.max;
      any = true;
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

// Bytes 0/1 for the n validity bits from pixel `first` of a bitmap (bit m
// of byte i for pixel 8 i + m; nullptr: all valid) into out.
inline void expand_valid_bits(const std::uint8_t *bits, std::size_t first,
                              std::size_t n, std::uint8_t *out) {
  if (bits == nullptr) {
    std::memset(out, 1, n);
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t p = first + i;
    out[i] = (bits[p >> 3] >> (p & 7)) & 1;
  }
}

// The largest k <= 8 sizeof(T) with every value below 2^k at most `limit`.
template <typename T>
inline int planes_below(T limit) {
  int k = 0;
  while (k < 8 * static_cast<int>(sizeof(T)) &&
         ((std::uint64_t(2) << k) - 1) <= static_cast<std::uint64_t>(limit)) {
    ++k;
  }
  return k;
}

// Statistics of one compressed frame of n_pixels unsigned pixels (T),
// decoded block by block (codecs none, LZ4 and bitshuffle/LZ4); `valid`:
// the frame's validity bitmap (bit m of byte i for pixel 8 i + m), or
// nullptr (all valid).
template <typename T>
FrameTally compressed_frame_tally(const std::uint8_t *src, std::size_t size,
                                  ChunkCodec codec, std::size_t n_pixels, double low,
                                  double high, double invalid_from,
                                  const std::uint8_t *valid, int level = 2) {
  static_assert(std::is_unsigned<T>::value, "Eiger pixels are unsigned");
  FrameAccumulator<T> acc{low, high, invalid_from};
  const UnsignedLimits<T> &L = acc.limits;
  const int k = planes_below<T>(L.none_used() ? L.last : L.hi);
  PlaneTally<T> planes_tally;
  for_each_lz4_block(
      src, size, codec, sizeof(T), n_pixels * sizeof(T),
      [&](const std::uint8_t *data, std::size_t bytes, std::size_t offset,
          bool planes) {
        const std::size_t n = bytes / sizeof(T), first = offset / sizeof(T);
        if (planes && kPlaneWords) {
          const std::size_t words = n / 64 + 1;
          auto *use = reinterpret_cast<std::uint64_t *>(
              thread_buffer(Buffer::use_bits, 2 * words * 8));
          tally_planes(data, n, valid ? valid + first / 8 : nullptr, L, k, use,
                       use + words, planes_tally, level);
          return;
        }
        const T *values = reinterpret_cast<const T *>(data);
        if (planes) {  // big-endian hosts: un-transpose first
          std::uint8_t *plain = thread_buffer(Buffer::plain_block, bytes);
          bit_untranspose_block(data, plain, n, sizeof(T));
          values = reinterpret_cast<const T *>(plain);
        } else if (reinterpret_cast<std::uintptr_t>(data) % alignof(T) != 0) {
          std::uint8_t *aligned = thread_buffer(Buffer::plain_block, bytes);
          std::memcpy(aligned, data, bytes);
          values = reinterpret_cast<const T *>(aligned);
        }
        std::uint8_t *m = nullptr;
        if (valid) {
          m = thread_buffer(Buffer::mask_block, n);
          expand_valid_bits(valid, first, n, m);
        }
        acc.add(values, n, m);
      });
  acc.add(planes_tally);
  return acc.result();
}

// Pack a byte mask (nonzero = valid) of n pixels into validity bits (bit m
// of byte i for pixel 8 i + m), (n + 7) / 8 bytes at out.
inline void pack_valid_bits(const std::uint8_t *mask, std::size_t n, std::uint8_t *out) {
  std::memset(out, 0, (n + 7) / 8);
  std::size_t i = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  for (; i + 16 <= n; i += 16) {  // 16 bytes to 16 bits: compare, movemask
    const __m128i m = _mm_loadu_si128(reinterpret_cast<const __m128i *>(mask + i));
    const int invalid = _mm_movemask_epi8(_mm_cmpeq_epi8(m, zero));
    const unsigned bits = ~static_cast<unsigned>(invalid) & 0xFFFFu;
    out[i / 8] = static_cast<std::uint8_t>(bits);
    out[i / 8 + 1] = static_cast<std::uint8_t>(bits >> 8);
  }
#endif
  for (; i < n; ++i) {
    out[i >> 3] |= static_cast<std::uint8_t>((mask[i] != 0) << (i & 7));
  }
}

}  // namespace dials_diffuse
