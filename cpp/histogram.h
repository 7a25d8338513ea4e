// Exact histogram of pixel values.
//
// Bins are numpy's: `bins` equal-width bins on [low, high], edges
// low + i * (high - low) / bins, the last bin closed on the right. The bin of
// each value is computed exactly as numpy.histogram does (scaled index, then
// corrected against the edges), so counts equal numpy's bin for bin, in
// double precision. Values below `low` or above `high` are counted as
// underflow/overflow, NaN separately, and masked pixels (mask == 0) are
// counted and skipped.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace dials_diffuse {

struct HistogramTally {
  std::int64_t underflow = 0;
  std::int64_t overflow = 0;
  std::int64_t nan = 0;
  std::int64_t masked = 0;
};

// Equal-width bins on [low, high] as numpy defines them; `add` counts one
// value (valid pixel) into `counts` or into the tally.
class UniformBins {
 public:
  UniformBins(double low, double high, std::size_t bins)
      : low_(low), high_(high), bins_(bins), edges_(bins + 1) {
    // Edges as numpy.linspace computes them (start + i * step, last = stop).
    const double step = (high - low) / static_cast<double>(bins);
    for (std::size_t i = 0; i < bins; ++i) {
      edges_[i] = static_cast<double>(i) * step + low;
    }
    edges_[bins] = high;
    norm_ = static_cast<double>(bins) / (high - low);
  }

  void add(double v, std::int64_t *counts, HistogramTally &tally) const {
    if (std::isnan(v)) {
      ++tally.nan;
    } else if (v < low_) {
      ++tally.underflow;
    } else if (v > high_) {
      ++tally.overflow;
    } else {
      std::size_t index = static_cast<std::size_t>((v - low_) * norm_);
      if (index >= bins_) index = bins_ - 1;
      if (v < edges_[index]) {
        --index;
      } else if (index + 1 < bins_ && v >= edges_[index + 1]) {
        ++index;
      }
      ++counts[index];
    }
  }

 private:
  double low_, high_;
  std::size_t bins_;
  std::vector<double> edges_;
  double norm_;
};

// Python-facing checks of a histogram's range and bin count.
inline void check_bins(double low, double high, std::int64_t bins) {
  if (bins < 1) throw std::invalid_argument("bins must be at least 1");
  if (!(std::isfinite(low) && std::isfinite(high) && high > low)) {
    throw std::invalid_argument("need finite low < high");
  }
}

template <typename T>
void histogram_values(const T *values, const std::uint8_t *mask,
                      std::size_t n, double low, double high,
                      std::int64_t *counts, std::size_t bins,
                      HistogramTally &tally) {
  const UniformBins binning(low, high, bins);
  for (std::size_t i = 0; i < n; ++i) {
    if (mask != nullptr && mask[i] == 0) {
      ++tally.masked;
      continue;
    }
    binning.add(static_cast<double>(values[i]), counts, tally);
  }
}

// Python entry point: histogram(data, low, high, bins, mask=None, counts=None)
// -> (counts, underflow, overflow, nan, masked). When `counts` (int64, length
// bins) is given it is added to in place and returned, so one array can
// accumulate a whole stream of chunks.
inline py::tuple histogram(const py::array &data, double low, double high,
                           std::int64_t bins, const py::object &mask,
                           const py::object &counts_in) {
  require_contiguous(data, "data");
  check_bins(low, high, bins);
  const std::uint8_t *mask_ptr = mask_pointer(mask, data);
  py::array_t<std::int64_t> counts;
  if (counts_in.is_none()) {
    counts = py::array_t<std::int64_t>(bins);
    std::fill(counts.mutable_data(), counts.mutable_data() + bins, 0);
  } else {
    py::array given = counts_in.cast<py::array>();
    require_contiguous(given, "counts");
    if (!(given.dtype().kind() == 'i' && given.dtype().itemsize() == 8) ||
        given.ndim() != 1 || given.shape(0) != bins) {
      throw std::invalid_argument("counts must be a 1-d int64 array of length bins");
    }
    if (!given.writeable()) throw std::invalid_argument("counts is read-only");
    counts = given.cast<py::array_t<std::int64_t>>();
  }
  std::int64_t *counts_ptr = counts.mutable_data();
  const std::size_t n = static_cast<std::size_t>(data.size());
  HistogramTally tally;
  dispatch_pixel_dtype(data, "data", [&](auto tag) {
    using T = decltype(tag);
    const T *values = static_cast<const T *>(data.data());
    py::gil_scoped_release release;
    histogram_values(values, mask_ptr, n, low, high, counts_ptr,
                     static_cast<std::size_t>(bins), tally);
  });
  return py::make_tuple(counts, tally.underflow, tally.overflow, tally.nan,
                        tally.masked);
}

inline void bind_histogram(py::module_ &m) {
  m.def("histogram", &histogram, py::arg("data"), py::arg("low"),
        py::arg("high"), py::arg("bins"), py::arg("mask") = py::none(),
        py::arg("counts") = py::none(),
        R"doc(Exact histogram of pixel values, numpy's bins, GIL released.

Parameters
----------
data : ndarray, C-contiguous, any of u1 u2 u4 i1 i2 i4 i8 f4 f8
low, high : float
    Range; `bins` equal bins, the last closed on the right (as numpy).
bins : int
mask : ndarray of bool or uint8, same shape as data, optional
    Nonzero marks a valid pixel (DIALS convention).
counts : ndarray of int64, length bins, optional
    Accumulate into this array in place.

Returns
-------
(counts, underflow, overflow, nan, masked)
)doc");
}

}  // namespace dials_diffuse
