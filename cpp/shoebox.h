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
// pixel, 0 every pixel of the box. All run with the GIL released.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "common.h"
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

// The per-record arrays that every pixel kernel takes, checked.
struct Records {
  const std::uint8_t *blob;
  std::size_t blob_size;
  const std::int64_t *offset;
  const std::int64_t *pixels;
  const std::int8_t *mask_bytes;
  std::size_t n;
};

inline Records check_records(const py::array &blob, const py::array &offset,
                             const py::array &pixels,
                             const py::array &mask_bytes) {
  for (const auto &pair : {std::make_pair(&blob, "blob"),
                           std::make_pair(&offset, "offset"),
                           std::make_pair(&pixels, "pixels"),
                           std::make_pair(&mask_bytes, "mask_bytes")}) {
    require_contiguous(*pair.first, pair.second);
    if (pair.first->ndim() != 1) {
      throw std::invalid_argument(std::string(pair.second) +
                                  " must be 1-dimensional");
    }
  }
  auto is = [](const py::array &a, char kind, py::ssize_t size) {
    return a.dtype().kind() == kind && a.dtype().itemsize() == size;
  };
  if (!is(blob, 'u', 1)) throw std::invalid_argument("blob must be uint8");
  if (!is(offset, 'i', 8) || !is(pixels, 'i', 8)) {
    throw std::invalid_argument("offset and pixels must be int64");
  }
  if (!is(mask_bytes, 'i', 1)) {
    throw std::invalid_argument("mask_bytes must be int8");
  }
  const std::size_t n = static_cast<std::size_t>(offset.shape(0));
  if (static_cast<std::size_t>(pixels.shape(0)) != n ||
      static_cast<std::size_t>(mask_bytes.shape(0)) != n) {
    throw std::invalid_argument(
        "offset, pixels and mask_bytes must have the same length");
  }
  Records records{static_cast<const std::uint8_t *>(blob.data()),
                  static_cast<std::size_t>(blob.shape(0)),
                  static_cast<const std::int64_t *>(offset.data()),
                  static_cast<const std::int64_t *>(pixels.data()),
                  static_cast<const std::int8_t *>(mask_bytes.data()),
                  n};
  for (std::size_t i = 0; i < n; ++i) {
    if (records.offset[i] < 0) continue;
    const std::size_t each = 8 + static_cast<std::size_t>(records.mask_bytes[i]);
    const std::size_t end = static_cast<std::size_t>(records.offset[i]) +
                            static_cast<std::size_t>(records.pixels[i]) * each;
    if (records.pixels[i] < 0 ||
        (records.mask_bytes[i] != 1 && records.mask_bytes[i] != 4) ||
        end > records.blob_size) {
      throw std::invalid_argument("shoebox record " + std::to_string(i) +
                                  " lies outside the blob");
    }
  }
  return records;
}

// Call fn(value) for every selected pixel of record i; count the others.
template <typename Fn>
inline void for_selected_pixels(const Records &r, std::size_t i,
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

// shoebox_layout(blob, count) -> (panel, bbox, offset, pixels, mask_bytes)
inline py::tuple shoebox_layout(const py::array &blob, std::int64_t count) {
  require_contiguous(blob, "blob");
  if (!(blob.dtype().kind() == 'u' && blob.dtype().itemsize() == 1) ||
      blob.ndim() != 1) {
    throw std::invalid_argument("blob must be a 1-d uint8 array");
  }
  if (count < 0) throw std::invalid_argument("count must not be negative");
  const auto *bytes = static_cast<const std::uint8_t *>(blob.data());
  const std::size_t size = static_cast<std::size_t>(blob.shape(0));
  const std::size_t n = static_cast<std::size_t>(count);
  py::array_t<std::uint32_t> panel(n);
  py::array_t<std::int32_t> bbox({static_cast<py::ssize_t>(n), py::ssize_t{6}});
  py::array_t<std::int64_t> offset(n);
  py::array_t<std::int64_t> pixels(n);
  py::array_t<std::int8_t> mask_bytes(n);
  auto *panel_ptr = panel.mutable_data();
  auto *bbox_ptr = bbox.mutable_data();
  auto *offset_ptr = offset.mutable_data();
  auto *pixels_ptr = pixels.mutable_data();
  auto *mask_ptr = mask_bytes.mutable_data();
  std::string problem;
  {
    py::gil_scoped_release release;
    std::size_t at = 0;
    constexpr std::size_t header = 4 + 6 * 4 + 1;
    for (std::size_t i = 0; i < n && problem.empty(); ++i) {
      if (at + header > size) {
        problem = "shoebox data end inside record " + std::to_string(i);
        break;
      }
      panel_ptr[i] = shoebox_detail::read_at<std::uint32_t>(bytes, at);
      std::int64_t volume = 1;
      for (int k = 0; k < 6; ++k) {
        bbox_ptr[6 * i + k] =
            shoebox_detail::read_at<std::int32_t>(bytes, at + 4 + 4 * k);
      }
      for (int k = 0; k < 3; ++k) {
        const std::int64_t extent = static_cast<std::int64_t>(bbox_ptr[6 * i + 2 * k + 1]) -
                                    bbox_ptr[6 * i + 2 * k];
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
        offset_ptr[i] = -1;
        pixels_ptr[i] = 0;
        mask_ptr[i] = 0;
        continue;
      }
      const std::size_t length = static_cast<std::size_t>(volume) * (8 + mask_size);
      if (at + length > size) {
        problem = "shoebox data end inside record " + std::to_string(i);
        break;
      }
      offset_ptr[i] = static_cast<std::int64_t>(at);
      pixels_ptr[i] = volume;
      mask_ptr[i] = static_cast<std::int8_t>(mask_size);
      at += length;
    }
    if (problem.empty() && at != size) {
      problem = "shoebox data hold " + std::to_string(size - at) +
                " bytes more than " + std::to_string(n) + " records";
    }
  }
  if (!problem.empty()) throw std::invalid_argument(problem);
  return py::make_tuple(panel, bbox, offset, pixels, mask_bytes);
}

// shoebox_histogram(blob, offset, pixels, mask_bytes, group, required, low,
// high, counts, tally): add the selected pixels of record i to row group[i]
// of counts (groups x bins, int64, in place); tally (groups x 4, int64, in
// place) gets underflow, overflow, NaN and excluded (mask) pixels.
inline void shoebox_histogram(const py::array &blob, const py::array &offset,
                              const py::array &pixels,
                              const py::array &mask_bytes,
                              const py::array &group, std::uint32_t required,
                              double low, double high, py::array counts,
                              py::array tally) {
  const auto records =
      shoebox_detail::check_records(blob, offset, pixels, mask_bytes);
  require_contiguous(group, "group");
  require_contiguous(counts, "counts");
  require_contiguous(tally, "tally");
  if (!(group.dtype().kind() == 'i' && group.dtype().itemsize() == 4) ||
      group.ndim() != 1 || static_cast<std::size_t>(group.shape(0)) != records.n) {
    throw std::invalid_argument("group must be int32 with one entry per record");
  }
  if (!(counts.dtype().kind() == 'i' && counts.dtype().itemsize() == 8) ||
      counts.ndim() != 2 || !counts.writeable()) {
    throw std::invalid_argument("counts must be a writeable 2-d int64 array");
  }
  const std::size_t groups = static_cast<std::size_t>(counts.shape(0));
  const std::size_t bins = static_cast<std::size_t>(counts.shape(1));
  if (!(tally.dtype().kind() == 'i' && tally.dtype().itemsize() == 8) ||
      tally.ndim() != 2 || static_cast<std::size_t>(tally.shape(0)) != groups ||
      tally.shape(1) != 4 || !tally.writeable()) {
    throw std::invalid_argument("tally must be a writeable int64 array (groups, 4)");
  }
  check_bins(low, high, static_cast<std::int64_t>(bins));
  const auto *group_ptr = static_cast<const std::int32_t *>(group.data());
  for (std::size_t i = 0; i < records.n; ++i) {
    if (group_ptr[i] < 0 || static_cast<std::size_t>(group_ptr[i]) >= groups) {
      throw std::invalid_argument("group " + std::to_string(group_ptr[i]) +
                                  " is outside the counts rows");
    }
  }
  auto *counts_ptr = static_cast<std::int64_t *>(counts.mutable_data());
  auto *tally_ptr = static_cast<std::int64_t *>(tally.mutable_data());
  py::gil_scoped_release release;
  const UniformBins binning(low, high, bins);
  for (std::size_t i = 0; i < records.n; ++i) {
    const std::size_t g = static_cast<std::size_t>(group_ptr[i]);
    std::int64_t *row = counts_ptr + g * bins;
    HistogramTally t;
    std::int64_t excluded = 0;
    shoebox_detail::for_selected_pixels(
        records, i, required, excluded,
        [&](double v) { binning.add(v, row, t); });
    tally_ptr[4 * g + 0] += t.underflow;
    tally_ptr[4 * g + 1] += t.overflow;
    tally_ptr[4 * g + 2] += t.nan;
    tally_ptr[4 * g + 3] += excluded;
  }
}

// shoebox_value_range(blob, offset, pixels, mask_bytes, required)
// -> (selected, min, max, all_integer) over the selected, non-NaN pixels.
inline py::tuple shoebox_value_range(const py::array &blob,
                                     const py::array &offset,
                                     const py::array &pixels,
                                     const py::array &mask_bytes,
                                     std::uint32_t required) {
  const auto records =
      shoebox_detail::check_records(blob, offset, pixels, mask_bytes);
  std::int64_t selected = 0;
  double lowest = std::numeric_limits<double>::infinity();
  double highest = -std::numeric_limits<double>::infinity();
  bool integer = true;
  {
    py::gil_scoped_release release;
    std::int64_t excluded = 0;
    for (std::size_t i = 0; i < records.n; ++i) {
      shoebox_detail::for_selected_pixels(
          records, i, required, excluded, [&](double v) {
            if (std::isnan(v)) return;
            ++selected;
            if (v < lowest) lowest = v;
            if (v > highest) highest = v;
            if (integer && v != std::floor(v)) integer = false;
          });
    }
  }
  return py::make_tuple(selected, lowest, highest, integer);
}

inline void bind_shoebox(py::module_ &m) {
  m.def("shoebox_layout", &shoebox_layout, py::arg("blob"), py::arg("count"),
        R"doc(Walk a serialised DIALS shoebox column (GIL released).

Parameters
----------
blob : ndarray of uint8
    The binary body of a `Shoebox<>` column as DIALS serialises it.
count : int
    Number of shoeboxes (rows) it holds.

Returns
-------
(panel uint32 (n,), bbox int32 (n, 6), offset int64 (n,) byte offset of the
data or -1 when the shoebox holds none, pixels int64 (n,), mask_bytes int8
(n,) 4 or 1, 0 without data). ValueError on a truncated or corrupt blob.
)doc");
  m.def("shoebox_histogram", &shoebox_histogram, py::arg("blob"),
        py::arg("offset"), py::arg("pixels"), py::arg("mask_bytes"),
        py::arg("group"), py::arg("required"), py::arg("low"),
        py::arg("high"), py::arg("counts"), py::arg("tally"),
        R"doc(Histogram selected shoebox pixels per group, in place (GIL released).

A pixel is selected when (mask & required) == required. counts (groups,
bins) int64 uses numpy's bins on [low, high]; tally (groups, 4) int64 adds
underflow, overflow, NaN and excluded pixels.
)doc");
  m.def("shoebox_value_range", &shoebox_value_range, py::arg("blob"),
        py::arg("offset"), py::arg("pixels"), py::arg("mask_bytes"),
        py::arg("required"),
        R"doc(Number, minimum, maximum of the selected non-NaN pixels and
whether all are whole numbers (GIL released).
)doc");
}

}  // namespace dials_diffuse
