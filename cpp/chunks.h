// Decoding HDF5 chunks into an output array, and encoding them for writing.
//
// HDF5 stores a chunked dataset as chunks of `chunk_shape` elements (edge
// chunks are stored whole, padded beyond the dataset). Each chunk passes
// through the dataset's filters: here deflate (H5Z_FILTER_DEFLATE, 1: a zlib
// stream), optionally after the shuffle filter (H5Z_FILTER_SHUFFLE, 2: the
// first byte of every element, then the second byte of every element, ...),
// or the LZ4 codecs of eiger.h.
//
// Reading: `place_chunks` decodes a list of raw chunks (libdeflate, into a
// per-thread scratch buffer) and copies the part of each that falls inside
// an output block (frames x rows x columns), unshuffling on the way (SSE2),
// and optionally fills a validity mask (value >= 0; NaN is invalid) while
// the placed values are still in cache: one call per block, GIL released, so
// worker threads decode in parallel.
//
// Writing: `deflate_tiles` cuts a block of frames into whole chunks, shuffles
// them if asked and compresses them with libdeflate (GIL released), so that
// worker threads compress and one writer only stores the bytes
// (h5py's write_direct_chunk). The streams are standard zlib: HDF5's own
// gzip filter (and h5py, NeXpy, any HDF5 reader) decodes them.
#pragma once

#include <libdeflate.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <pybind11/stl.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common.h"
#include "eiger.h"

namespace dials_diffuse {

// Codecs of raw HDF5 chunks: eiger.h's 0-2, then deflate without and with shuffle.
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

// Per-thread buffers of at least n bytes, reused from call to call: `which`
// 0 holds a decoded (or gathered) chunk, 1 a compressed one.
inline std::uint8_t *chunk_scratch(std::size_t n, int which = 0) {
  thread_local std::vector<std::uint8_t> scratch[2];
  if (scratch[which].size() < n) scratch[which].resize(n);
  return scratch[which].data();
}

// Decode one raw chunk of `expected` bytes: a pointer to the decoded bytes
// (src itself when stored uncompressed, else a per-thread scratch buffer).
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
      std::uint8_t *dst = chunk_scratch(expected);
      inflate_zlib(src, n, dst, expected);
      return dst;
    }
    default: {
      std::uint8_t *dst = chunk_scratch(expected);
      for_each_decoded_block(
          src, n, static_cast<EigerCodec>(codec), elem_size, expected,
          [&](const std::uint8_t *bytes, std::size_t size, std::size_t offset) {
            if (bytes != dst + offset) std::memcpy(dst + offset, bytes, size);
          },
          dst);
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

inline NonnegativeRun nonnegative_function(const py::array &out) {
  return dispatch_pixel_dtype(out, "out", [](auto zero) -> NonnegativeRun {
    return &nonnegative_run<decltype(zero)>;
  });
}

// The overlap of a chunk at `origin` (out's coordinates) with out, as
// [lo, hi) per axis; false when they do not overlap.
inline bool chunk_overlap(const std::array<std::int64_t, 3> &chunk_shape,
                          const std::array<std::int64_t, 3> &origin,
                          const py::array &out, std::array<std::int64_t, 3> &lo,
                          std::array<std::int64_t, 3> &hi) {
  for (int d = 0; d < 3; ++d) {
    lo[d] = std::max<std::int64_t>(0, origin[d]);
    hi[d] = std::min<std::int64_t>(out.shape(d), origin[d] + chunk_shape[d]);
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

inline void check_out(const py::array &out) {
  require_contiguous(out, "out");
  if (!out.writeable()) throw std::invalid_argument("out is read-only");
  if (out.ndim() != 3) {
    throw std::invalid_argument("out must be 3-d (frames, rows, columns)");
  }
}

// Python: place_chunk(chunk, chunk_shape, out, origin, shuffled=False) -> out
inline py::array place_chunk(const py::object &chunk,
                             const std::array<std::int64_t, 3> &chunk_shape,
                             py::array out, const std::array<std::int64_t, 3> &origin,
                             bool shuffled) {
  check_out(out);
  check_chunk_shape(chunk_shape);
  py::buffer_info info = py::reinterpret_borrow<py::buffer>(chunk).request();
  const std::size_t size = static_cast<std::size_t>(out.itemsize());
  const std::size_t total =
      static_cast<std::size_t>(chunk_shape[0] * chunk_shape[1] * chunk_shape[2]);
  const std::size_t chunk_bytes =
      static_cast<std::size_t>(info.size) * static_cast<std::size_t>(info.itemsize);
  if (chunk_bytes != total * size) {
    throw std::invalid_argument("chunk has " + std::to_string(chunk_bytes) +
                                " bytes, expected " + std::to_string(total * size) +
                                " for its shape and out's dtype");
  }
  std::array<std::int64_t, 3> lo{}, hi{};
  if (!chunk_overlap(chunk_shape, origin, out, lo, hi)) return out;
  const std::array<std::int64_t, 3> out_shape{out.shape(0), out.shape(1), out.shape(2)};
  const auto *src = static_cast<const std::uint8_t *>(info.ptr);
  auto *dst = static_cast<std::uint8_t *>(out.mutable_data());
  {
    py::gil_scoped_release release;
    place_decoded(src, chunk_shape, origin, lo, hi, out_shape, size, shuffled, dst,
                  nullptr, nullptr);
  }
  return out;
}

// Python: place_chunks(chunks, origins, chunk_shape, out, codec, valid=None) -> out
inline py::array place_chunks(const py::list &chunks,
                              const std::vector<std::array<std::int64_t, 3>> &origins,
                              const std::array<std::int64_t, 3> &chunk_shape,
                              py::array out, int codec_value, const py::object &valid) {
  const ChunkCodec codec = chunk_codec_from_int(codec_value);
  check_out(out);
  check_chunk_shape(chunk_shape);
  if (origins.size() != chunks.size()) {
    throw std::invalid_argument("chunks and origins must have the same length");
  }
  std::uint8_t *valid_ptr = nullptr;
  NonnegativeRun nonnegative = nullptr;
  if (!valid.is_none()) {
    valid_ptr = const_cast<std::uint8_t *>(mask_pointer(valid, out));
    if (!valid.cast<py::array>().writeable()) {
      throw std::invalid_argument("valid is read-only");
    }
    nonnegative = nonnegative_function(out);
  }
  const std::size_t size = static_cast<std::size_t>(out.itemsize());
  if ((codec == ChunkCodec::lz4 || codec == ChunkCodec::bitshuffle_lz4) &&
      size != 1 && size != 2 && size != 4 && size != 8) {
    throw std::invalid_argument("LZ4 chunks need 1, 2, 4 or 8-byte elements");
  }
  const std::size_t expected =
      static_cast<std::size_t>(chunk_shape[0] * chunk_shape[1] * chunk_shape[2]) * size;
  std::vector<std::pair<const std::uint8_t *, std::size_t>> views;
  views.reserve(chunks.size());
  for (const auto &chunk : chunks) views.push_back(bytes_view(chunk));
  const std::array<std::int64_t, 3> out_shape{out.shape(0), out.shape(1), out.shape(2)};
  auto *dst = static_cast<std::uint8_t *>(out.mutable_data());
  {
    py::gil_scoped_release release;
    for (std::size_t i = 0; i < views.size(); ++i) {
      std::array<std::int64_t, 3> lo{}, hi{};
      if (!chunk_overlap(chunk_shape, origins[i], out, lo, hi)) continue;
      const std::uint8_t *decoded =
          decode_raw_chunk(views[i].first, views[i].second, codec, size, expected);
      place_decoded(decoded, chunk_shape, origins[i], lo, hi, out_shape, size,
                    codec == ChunkCodec::shuffle_deflate, dst, valid_ptr, nonnegative);
    }
  }
  return out;
}

// Python: inflate(chunk, out) -> out: a zlib stream decoded into exactly out's bytes.
inline py::array inflate(const py::object &chunk, py::array out) {
  require_contiguous(out, "out");
  if (!out.writeable()) throw std::invalid_argument("out is read-only");
  auto view = bytes_view(chunk);
  auto *dst = static_cast<std::uint8_t *>(out.mutable_data());
  const std::size_t expected = static_cast<std::size_t>(out.nbytes());
  {
    py::gil_scoped_release release;
    inflate_zlib(view.first, view.second, dst, expected);
  }
  return out;
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

// Python: deflate_tiles(block, chunk_shape, level=1, shuffle=False, runs=False)
inline py::list deflate_tiles(py::array block,
                              const std::array<std::int64_t, 3> &chunk_shape, int level,
                              bool shuffle, bool runs) {
  require_contiguous(block, "block");
  if (block.ndim() != 3) {
    throw std::invalid_argument("block must be 3-d (frames, rows, columns)");
  }
  check_chunk_shape(chunk_shape);
  if (block.shape(0) > chunk_shape[0]) {
    throw std::invalid_argument("block has " + std::to_string(block.shape(0)) +
                                " frames, a chunk " + std::to_string(chunk_shape[0]));
  }
  if (level < 0 || level > 12) {
    throw std::invalid_argument("level must be 0-12 (libdeflate)");
  }
  const std::array<std::int64_t, 3> block_shape{block.shape(0), block.shape(1),
                                                block.shape(2)};
  const std::size_t size = static_cast<std::size_t>(block.itemsize());
  const std::size_t chunk_bytes =
      static_cast<std::size_t>(chunk_shape[0] * chunk_shape[1] * chunk_shape[2]) * size;
  const auto *src = static_cast<const std::uint8_t *>(block.data());
  std::vector<std::uint8_t> stored;  // the compressed tiles, end to end
  std::vector<std::size_t> ends;
  {
    py::gil_scoped_release release;
    static const MaskDeflater mask_deflater;
    libdeflate_compressor *compressor = runs ? nullptr : thread_compressor(level);
    const std::size_t bound =
        runs ? MaskDeflater::bound(chunk_bytes)
             : libdeflate_zlib_compress_bound(compressor, chunk_bytes);
    std::uint8_t *tile = chunk_scratch(chunk_bytes, 0);
    std::uint8_t *compressed = chunk_scratch(bound, 1);
    // The distance to the row above in a (shuffled) chunk.
    const std::size_t row_bytes =
        static_cast<std::size_t>(chunk_shape[2]) * (shuffle ? 1 : size);
    for (std::int64_t row = 0; row < block_shape[1]; row += chunk_shape[1]) {
      for (std::int64_t column = 0; column < block_shape[2]; column += chunk_shape[2]) {
        gather_tile(src, block_shape, chunk_shape, row, column, size, shuffle, tile);
        const std::size_t n =
            runs ? mask_deflater.compress(tile, chunk_bytes, row_bytes, compressed)
                 : libdeflate_zlib_compress(compressor, tile, chunk_bytes, compressed,
                                            bound);
        if (n == 0) throw std::runtime_error("libdeflate could not compress a chunk");
        stored.insert(stored.end(), compressed, compressed + n);
        ends.push_back(stored.size());
      }
    }
  }
  py::list result;
  std::size_t start = 0;
  for (std::size_t end : ends) {
    result.append(py::bytes(reinterpret_cast<const char *>(stored.data() + start),
                            end - start));
    start = end;
  }
  return result;
}

inline void bind_chunks(py::module_ &m) {
  m.def("place_chunk", &place_chunk, py::arg("chunk"), py::arg("chunk_shape"),
        py::arg("out"), py::arg("origin"), py::arg("shuffled") = false,
        R"doc(Copy the part of a decoded HDF5 chunk inside `out` into it, GIL released.

Parameters
----------
chunk : bytes or buffer
    The decoded (decompressed) chunk: prod(chunk_shape) elements of
    out's dtype, in HDF5's byte order for the chunk (shuffled or not).
chunk_shape : (int, int, int)
    The dataset's chunk shape (edge chunks are stored whole).
out : ndarray, 3-d, C-contiguous, writeable
    The output block (frames, rows, columns).
origin : (int, int, int)
    Where element [0, 0, 0] of the chunk lies in out's coordinates (may be
    negative or beyond out: only the overlap is copied).
shuffled : bool
    The chunk was written with HDF5's shuffle filter (byte planes).

Returns
-------
out
)doc");
  m.def("place_chunks", &place_chunks, py::arg("chunks"), py::arg("origins"),
        py::arg("chunk_shape"), py::arg("out"), py::arg("codec"),
        py::arg("valid") = py::none(),
        R"doc(Decode raw HDF5 chunks and copy their parts inside `out` into it, GIL released.

One call per block: each chunk is decoded (libdeflate for deflate, the LZ4
codecs of decompress_chunk) into a per-thread scratch buffer and placed,
the shuffle filter undone on the way.

Parameters
----------
chunks : list of bytes (or 1-d uint8 arrays)
    The chunks as stored in the file.
origins : list of (int, int, int)
    Where element [0, 0, 0] of each chunk lies in out's coordinates (may
    be negative or beyond out: only the overlap is copied).
chunk_shape : (int, int, int)
    The dataset's chunk shape (edge chunks are stored whole).
out : ndarray, 3-d, C-contiguous, writeable
    The output block (frames, rows, columns), native byte order.
codec : int
    0 uncompressed, 1 LZ4 (filter 32004), 2 bitshuffle/LZ4 (32008),
    3 deflate (gzip, filter 1), 4 shuffle (filter 2) then deflate.
valid : ndarray of bool, shape of out, optional
    Set to out >= 0 (False for NaN, True for unsigned types) where chunks
    are placed, while the values are in cache.

Returns
-------
out

Raises
------
ValueError
    Bad arguments, or a corrupt or truncated chunk.
)doc");
  m.def("inflate", &inflate, py::arg("chunk"), py::arg("out"),
        R"doc(Decode one zlib stream (an HDF5 deflate chunk) into `out`, GIL released.

Parameters
----------
chunk : bytes or 1-d uint8 array
out : ndarray, C-contiguous, writeable
    Receives exactly out.nbytes bytes.

Returns
-------
out

Raises
------
ValueError
    Corrupt or truncated stream, or one that decodes to another size.
)doc");
  m.def("deflate_tiles", &deflate_tiles, py::arg("block"), py::arg("chunk_shape"),
        py::arg("level") = 1, py::arg("shuffle") = false, py::arg("runs") = false,
        R"doc(Compress a block of frames into whole HDF5 chunks (libdeflate), GIL released.

Parameters
----------
block : ndarray (frames, rows, columns), C-contiguous
    At most chunk_shape[0] frames, every row and column of the dataset.
chunk_shape : (int, int, int)
level : int
    Compression level 0-12 (libdeflate; 1 is fast, 6 is zlib's default).
shuffle : bool
    Apply HDF5's shuffle filter (byte planes) before deflate.
runs : bool
    Code only repeats of the previous byte or of the row above (LZ77 with
    two candidate distances, fixed Huffman codes; `level` ignored): for
    masks, several times faster than libdeflate and about as small; up to
    1/8 larger than the input for data without runs.

Returns
-------
list of bytes
    One zlib stream per chunk, rows then columns (C order of the tiles);
    edge chunks are padded with zeros to the whole chunk shape, as HDF5
    stores them. Any zlib/HDF5 gzip reader decodes them.
)doc");
}

}  // namespace dials_diffuse
