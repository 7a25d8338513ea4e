// Histograms of DIALS shoebox pixels straight from the serialised shoebox
// column, with no per-reflection Python work.
//
// DIALS writes a `Shoebox<>` column (reflection_table.as_msgpack(), .refl
// files) as one binary blob of consecutive records:
//   uint32 panel, int32 bbox[6] (x0 x1 y0 y1 z0 z1), uint8 flag, then, when
//   flag is 1 or 2, n = (x1-x0)(y1-y0)(z1-z0) float32 data values, n mask
//   values (int32 for flag 1, DIALS <= 3.2x; uint8 for flag 2, newer DIALS)
//   and n float32 background values. Flag 0: no pixel data.
// `shoebox_layout` walks the records once and returns where each one's data
// start; `shoebox_histogram` and `shoebox_value_range` then read the pixels
// in place. A pixel is selected when (mask & required) == required, so
// required = Valid|Foreground gives the valid foreground, Valid every valid
// pixel, 0 every pixel of the box. Plain C++: the Python glue (argument checks, GIL release) is in
// bindings_shoebox.cpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "histogram.h"

namespace dials_diffuse {

namespace shoebox_detail {

template <typename T>
inline T read_at(const std::uint8_t *bytes, std::size_t offset) {
  T value;
  std::memcpy(&value, bytes + offset, sizeof(T));
  return value;
}

// Byte size of a mask value for a record flag (0 when no data).
inline std::size_t mask_bytes_for_flag(std::uint8_t flag) {
  if (flag == 1) return 4;
  if (flag == 2) return 1;
  return 0;
}

}  // namespace shoebox_detail

// Where each record's pixels lie in a serialised shoebox column (from
// `walk_shoeboxes`): the per-record arrays every pixel kernel takes.
struct ShoeboxRecords {
  const std::uint8_t *blob;
  std::size_t blob_size;
  const std::int64_t *offset;      // byte offset of the data, -1: none
  const std::int64_t *pixels;      // pixels in the record
  const std::int8_t *mask_bytes;   // 4 (int32 mask) or 1 (uint8 mask)
  std::size_t n;

  // Throws std::invalid_argument when a record lies outside the blob.
  void check() const {
    for (std::size_t i = 0; i < n; ++i) {
      if (offset[i] < 0) continue;
      const std::size_t each = 8 + static_cast<std::size_t>(mask_bytes[i]);
      const std::size_t end = static_cast<std::size_t>(offset[i]) +
                              static_cast<std::size_t>(pixels[i]) * each;
      if (pixels[i] < 0 || (mask_bytes[i] != 1 && mask_bytes[i] != 4) ||
          end > blob_size) {
        throw std::invalid_argument("shoebox record " + std::to_string(i) +
                                    " lies outside the blob");
      }
    }
  }
};

namespace shoebox_detail {

// Call fn(value) for every selected pixel of record i; count the others.
template <typename Fn>
inline void for_selected_pixels(const ShoeboxRecords &r, std::size_t i,
                                std::uint32_t required, std::int64_t &excluded,
                                Fn &&fn) {
  if (r.offset[i] < 0) return;
  const std::size_t n = static_cast<std::size_t>(r.pixels[i]);
  const std::size_t data = static_cast<std::size_t>(r.offset[i]);
  const std::size_t mask = data + 4 * n;
  const bool wide = r.mask_bytes[i] == 4;
  for (std::size_t p = 0; p < n; ++p) {
    const std::uint32_t code =
        wide ? static_cast<std::uint32_t>(read_at<std::int32_t>(r.blob, mask + 4 * p))
             : r.blob[mask + p];
    if ((code & required) != required) {
      ++excluded;
      continue;
    }
    fn(static_cast<double>(read_at<float>(r.blob, data + 4 * p)));
  }
}

}  // namespace shoebox_detail

// Walk `n` records of a serialised shoebox column (`bytes`, `size` bytes)
// once, filling per record: panel, bbox (6 int32), byte offset of the data
// (-1 without), pixel count and mask value size. Returns "" or what is wrong
// (truncated or corrupt data).
inline std::string walk_shoeboxes(const std::uint8_t *bytes, std::size_t size,
                                  std::size_t n, std::uint32_t *panel,
                                  std::int32_t *bbox, std::int64_t *offset,
                                  std::int64_t *pixels, std::int8_t *mask_bytes) {
  std::string problem;
  std::size_t at = 0;
  constexpr std::size_t header = 4 + 6 * 4 + 1;
  for (std::size_t i = 0; i < n && problem.empty(); ++i) {
    if (at + header > size) {
      problem = "shoebox data end inside record " + std::to_string(i);
      break;
    }
    panel[i] = shoebox_detail::read_at<std::uint32_t>(bytes, at);
    std::int64_t volume = 1;
    for (int k = 0; k < 6; ++k) {
      bbox[6 * i + k] = shoebox_detail::read_at<std::int32_t>(bytes, at + 4 + 4 * k);
    }
    for (int k = 0; k < 3; ++k) {
      const std::int64_t extent =
          static_cast<std::int64_t>(bbox[6 * i + 2 * k + 1]) - bbox[6 * i + 2 * k];
      if (extent < 0) {
        problem = "shoebox " + std::to_string(i) + " has an inverted bounding box";
      }
      volume *= extent;
    }
    const std::uint8_t flag = bytes[at + header - 1];
    at += header;
    const std::size_t mask_size = shoebox_detail::mask_bytes_for_flag(flag);
    if (flag != 0 && mask_size == 0) {
      problem = "shoebox " + std::to_string(i) + " has unknown data flag " +
                std::to_string(flag);
    }
    if (mask_size == 0) {
      offset[i] = -1;
      pixels[i] = 0;
      mask_bytes[i] = 0;
      continue;
    }
    const std::size_t length = static_cast<std::size_t>(volume) * (8 + mask_size);
    if (at + length > size) {
      problem = "shoebox data end inside record " + std::to_string(i);
      break;
    }
    offset[i] = static_cast<std::int64_t>(at);
    pixels[i] = volume;
    mask_bytes[i] = static_cast<std::int8_t>(mask_size);
    at += length;
  }
  if (problem.empty() && at != size) {
    problem = "shoebox data hold " + std::to_string(size - at) +
              " bytes more than " + std::to_string(n) + " records";
  }
  return problem;
}

// Add the selected pixels of record i to row group[i] of `counts` (groups x
// bins, numpy's bins on [low, high]); `tally` (groups x 4) gets underflow,
// overflow, NaN and excluded (mask) pixels. Groups must be in range.
inline void histogram_shoeboxes(const ShoeboxRecords &records,
                                const std::int32_t *group, std::uint32_t required,
                                double low, double high, std::size_t bins,
                                std::int64_t *counts, std::int64_t *tally) {
  const UniformBins binning(low, high, bins);
  for (std::size_t i = 0; i < records.n; ++i) {
    const std::size_t g = static_cast<std::size_t>(group[i]);
    std::int64_t *row = counts + g * bins;
    HistogramTally t;
    std::int64_t excluded = 0;
    shoebox_detail::for_selected_pixels(records, i, required, excluded,
                                        [&](double v) { binning.add(v, row, t); });
    tally[4 * g + 0] += t.underflow;
    tally[4 * g + 1] += t.overflow;
    tally[4 * g + 2] += t.nan;
    tally[4 * g + 3] += excluded;
  }
}

// Number, minimum and maximum of the selected non-NaN pixels, and whether
// all are whole numbers.
struct ValueRange {
  std::int64_t selected = 0;
  double lowest = std::numeric_limits<double>::infinity();
  double highest = -std::numeric_limits<double>::infinity();
  bool integer = true;
};

inline ValueRange shoebox_value_range(const ShoeboxRecords &records,
                                      std::uint32_t required) {
  ValueRange range;
  std::int64_t excluded = 0;
  for (std::size_t i = 0; i < records.n; ++i) {
    shoebox_detail::for_selected_pixels(
        records, i, required, excluded, [&](double v) {
          if (std::isnan(v)) return;
          ++range.selected;
          if (v < range.lowest) range.lowest = v;
          if (v > range.highest) range.highest = v;
          if (range.integer && v != std::floor(v)) range.integer = false;
        });
  }
  return range;
}

}  // namespace dials_diffuse
