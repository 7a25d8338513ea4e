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
#include <stdexcept>
#include <vector>

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

// Checks of a histogram's range and bin count.
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

}  // namespace dials_diffuse
