// Pixels above a count threshold: the per-pixel pass of find_peaks.
//
// One pass over a chunk instead of numpy's comparison, AND with the
// validity mask and nonzero (three passes and two chunk-sized temporaries).
// The result equals numpy.flatnonzero((data > threshold) & valid): flat C
// order indices, compared in double precision (exact for every integer
// detector type).
#pragma once

#include <cstdint>
#include <vector>

namespace dials_diffuse {

template <typename T>
void collect_above(const T *data, const std::uint8_t *valid, std::size_t n,
                   double threshold, std::vector<std::int64_t> &found) {
  for (std::size_t i = 0; i < n; ++i) {
    if (static_cast<double>(data[i]) > threshold &&
        (valid == nullptr || valid[i] != 0)) {
      found.push_back(static_cast<std::int64_t>(i));
    }
  }
}

}  // namespace dials_diffuse
