// Placing decoded HDF5 chunks into an output block, cutting a block into
// chunks for writing, and turning stored integer frames into dxtbx's int32
// values with their validity (`stored_to_dxtbx`): pure C++ (the codecs are
// in codecs.h, the Python glue in bindings_chunks.cpp).
//
// HDF5 stores a chunked dataset as chunks of `chunk_shape` elements (edge
// chunks are stored whole, padded beyond the dataset). Reading: each decoded
// chunk's part inside an output block (frames x rows x columns) is copied
// there, unshuffling on the way (SSE2), and optionally a validity mask
// (value >= 0; NaN is invalid) is filled while the placed values are still
// in cache. Writing: `gather_tile` cuts a whole (zero-padded) chunk out of a
// block of frames, as byte planes when the shuffle filter is asked for.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "codecs.h"

namespace dials_diffuse {

// valid[i] = values[i] >= 0 (false for NaN; always true for unsigned types).
// `bytes` is aligned for T (it points into out).
template <typename T>
inline void nonnegative_run(const std::uint8_t *bytes, std::size_t n,
                            std::uint8_t *valid) {
  if constexpr (std::is_unsigned_v<T>) {
    std::memset(valid, 1, n);
  } else {
    const T *values = reinterpret_cast<const T *>(bytes);
    std::size_t i = 0;
#if defined(__SSE2__)
    // 16 values at a time: compare, pack the lanes' all-ones/zero to bytes.
    if constexpr (std::is_same_v<T, std::int32_t> || std::is_same_v<T, float>) {
      const __m128i one = _mm_set1_epi8(1);
      for (; i + 16 <= n; i += 16) {
        __m128i m[4];
        for (int k = 0; k < 4; ++k) {
          if constexpr (std::is_same_v<T, float>) {
            const __m128 x = _mm_loadu_ps(values + i + 4 * k);
            m[k] = _mm_castps_si128(_mm_cmpge_ps(x, _mm_setzero_ps()));
          } else {
            const __m128i x =
                _mm_loadu_si128(reinterpret_cast<const __m128i *>(values + i + 4 * k));
            m[k] = _mm_cmpgt_epi32(x, _mm_set1_epi32(-1));
          }
        }
        const __m128i bytes16 = _mm_packs_epi16(_mm_packs_epi32(m[0], m[1]),
                                                _mm_packs_epi32(m[2], m[3]));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(valid + i),
                         _mm_and_si128(bytes16, one));
      }
    }
#endif
    for (; i < n; ++i) valid[i] = values[i] >= T(0);
  }
}

using NonnegativeRun = void (*)(const std::uint8_t *, std::size_t, std::uint8_t *);

// The overlap of a chunk at `origin` (out's coordinates) with out, of
// `out_shape`, as
// [lo, hi) per axis; false when they do not overlap.
inline bool chunk_overlap(const std::array<std::int64_t, 3> &chunk_shape,
                          const std::array<std::int64_t, 3> &origin,
                          const std::array<std::int64_t, 3> &out_shape,
                          std::array<std::int64_t, 3> &lo,
                          std::array<std::int64_t, 3> &hi) {
  for (int d = 0; d < 3; ++d) {
    lo[d] = std::max<std::int64_t>(0, origin[d]);
    hi[d] = std::min<std::int64_t>(out_shape[d], origin[d] + chunk_shape[d]);
    if (hi[d] <= lo[d]) return false;
  }
  return true;
}

// Copy the overlap of one decoded chunk into out (and valid, if given).
inline void place_decoded(const std::uint8_t *src,
                          const std::array<std::int64_t, 3> &chunk_shape,
                          const std::array<std::int64_t, 3> &origin,
                          const std::array<std::int64_t, 3> &lo,
                          const std::array<std::int64_t, 3> &hi,
                          const std::array<std::int64_t, 3> &out_shape, std::size_t size,
                          bool shuffled, std::uint8_t *dst, std::uint8_t *valid,
                          NonnegativeRun nonnegative) {
  const std::size_t total =
      static_cast<std::size_t>(chunk_shape[0] * chunk_shape[1] * chunk_shape[2]);
  const std::size_t run = static_cast<std::size_t>(hi[2] - lo[2]);
  for (std::int64_t z = lo[0]; z < hi[0]; ++z) {
    for (std::int64_t y = lo[1]; y < hi[1]; ++y) {
      const std::size_t first = static_cast<std::size_t>(
          ((z - origin[0]) * chunk_shape[1] + (y - origin[1])) * chunk_shape[2] +
          (lo[2] - origin[2]));
      const std::size_t at =
          static_cast<std::size_t>((z * out_shape[1] + y) * out_shape[2] + lo[2]);
      std::uint8_t *target = dst + at * size;
      if (shuffled && size > 1) {
        unshuffle_run_any(src, total, first, run, size, target);
      } else {
        std::memcpy(target, src + first * size, run * size);
      }
    }
    // The validity of this frame's tile while it is in cache (L2).
    for (std::int64_t y = lo[1]; valid && y < hi[1]; ++y) {
      const std::size_t at =
          static_cast<std::size_t>((z * out_shape[1] + y) * out_shape[2] + lo[2]);
      nonnegative(dst + at * size, run, valid + at);
    }
  }
}

inline void check_chunk_shape(const std::array<std::int64_t, 3> &chunk_shape) {
  for (auto n : chunk_shape) {
    if (n < 1) throw std::invalid_argument("chunk_shape must be positive");
  }
}

// Gather the tile of `block` (frames, rows, columns) at (row0, column0) into
// a whole chunk at dst, zero-padded, as byte planes when `shuffle`.
inline void gather_tile(const std::uint8_t *block,
                        const std::array<std::int64_t, 3> &block_shape,
                        const std::array<std::int64_t, 3> &chunk_shape,
                        std::int64_t row0, std::int64_t column0, std::size_t size,
                        bool shuffle, std::uint8_t *dst) {
  const std::size_t total =
      static_cast<std::size_t>(chunk_shape[0] * chunk_shape[1] * chunk_shape[2]);
  const std::int64_t rows = std::min(chunk_shape[1], block_shape[1] - row0);
  const std::int64_t columns = std::min(chunk_shape[2], block_shape[2] - column0);
  const bool partial = block_shape[0] < chunk_shape[0] || rows < chunk_shape[1] ||
                       columns < chunk_shape[2];
  if (partial) std::memset(dst, 0, total * size);
  const std::size_t run = static_cast<std::size_t>(columns);
  for (std::int64_t z = 0; z < block_shape[0]; ++z) {
    for (std::int64_t y = 0; y < rows; ++y) {
      const std::size_t first =
          static_cast<std::size_t>((z * chunk_shape[1] + y) * chunk_shape[2]);
      const std::uint8_t *src =
          block + static_cast<std::size_t>(
                      ((z * block_shape[1] + row0 + y) * block_shape[2] + column0)) *
                      size;
      if (!shuffle || size == 1) {
        std::memcpy(dst + first * size, src, run * size);
        continue;
      }
      shuffle_run(src, run, size, dst + first, total);
    }
  }
}

// Stored integer pixels of `frames` frames of `frame_pixels` each, as dxtbx's
// NXmx reader gives them, with the DIALS validity of each pixel, in one pass:
// out = value as int32, the readout markers top - 1 -> -1 and top - 2 -> -2
// (top = 2^N for an N-bit readout; 0: no markers); valid = the static mask
// (one frame's, the same for every frame) and low <= out <= high (`inclusive`,
// dxtbx >= 3.12) or low < out < high (dxtbx 3.11).
template <typename T>
void stored_to_dxtbx(const T *in, std::size_t frames, std::size_t frame_pixels,
                     std::int64_t top, double low, double high, bool inclusive,
                     const std::uint8_t *static_mask, std::int32_t *out,
                     std::uint8_t *valid) {
  static_assert(std::is_integral_v<T> && sizeof(T) <= 4,
                "integer pixels of at most 32 bits");
  // Wide enough for every stored value and both markers (top <= 2^32).
  using W = std::conditional_t<(sizeof(T) < 4), std::int32_t, std::int64_t>;
  const bool markers = top > 0 && top - 2 <= static_cast<std::int64_t>(
                                                   std::numeric_limits<T>::max());
  const W marker1 = markers ? static_cast<W>(top - 1) : W(0);
  const W marker2 = markers ? static_cast<W>(top - 2) : W(0);
  // The trusted range as integer bounds lo <= value <= hi (values are int32).
  const double lo_d = inclusive ? std::ceil(low) : std::floor(low) + 1;
  const double hi_d = inclusive ? std::floor(high) : std::ceil(high) - 1;
  const std::int64_t lo = static_cast<std::int64_t>(
      std::clamp(lo_d, -2147483649.0, 2147483648.0));
  const std::int64_t hi = static_cast<std::int64_t>(
      std::clamp(hi_d, -2147483649.0, 2147483648.0));
  for (std::size_t f = 0; f < frames; ++f) {
    const T *src = in + f * frame_pixels;
    std::int32_t *dst = out + f * frame_pixels;
    std::uint8_t *ok = valid + f * frame_pixels;
    for (std::size_t i = 0; i < frame_pixels; ++i) {
      const W stored = static_cast<W>(src[i]);
      std::int32_t value = static_cast<std::int32_t>(stored);
      if (markers) {
        value = stored == marker1 ? -1 : value;
        value = stored == marker2 ? -2 : value;
      }
      dst[i] = value;
      ok[i] = static_cast<std::uint8_t>((value >= lo) & (value <= hi) &
                                        (static_mask[i] != 0));
    }
  }
}

}  // namespace dials_diffuse
