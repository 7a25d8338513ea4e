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

#include "common.h"

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

// Flat indices (int64, ascending) of the valid pixels of `data` above
// `threshold`.
inline py::array_t<std::int64_t> pixels_above(const py::array &data,
                                              const py::object &valid,
                                              double threshold) {
  require_contiguous(data, "data");
  const std::uint8_t *mask = mask_pointer(valid, data);
  const std::size_t n = static_cast<std::size_t>(data.size());
  std::vector<std::int64_t> found;
  dispatch_pixel_dtype(data, "data", [&](auto zero) {
    using T = decltype(zero);
    const T *values = static_cast<const T *>(data.data());
    py::gil_scoped_release release;
    collect_above(values, mask, n, threshold, found);
  });
  py::array_t<std::int64_t> result(static_cast<py::ssize_t>(found.size()));
  std::copy(found.begin(), found.end(), result.mutable_data());
  return result;
}

inline void bind_peaks(py::module_ &m) {
  m.def("pixels_above", &pixels_above, py::arg("data"),
        py::arg("valid") = py::none(), py::arg("threshold"),
        "Flat C-order indices (int64) of the pixels of `data` above "
        "`threshold` where `valid` (bool/uint8, same shape, nonzero = usable; "
        "None: all) is set: numpy.flatnonzero((data > threshold) & valid) in "
        "one pass. Releases the GIL.");
}

}  // namespace dials_diffuse
