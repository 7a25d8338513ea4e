// Python binding of the exact histogram kernel (histogram.h): argument
// checks, then the work with the GIL released.
#include <algorithm>

#include "bindings.h"
#include "histogram.h"

namespace dials_diffuse {

namespace {

// Python entry point: histogram(data, low, high, bins, mask=None, counts=None)
// -> (counts, underflow, overflow, nan, masked). When `counts` (int64, length
// bins) is given it is added to in place and returned, so one array can
// accumulate a whole stream of chunks.
py::tuple histogram(const py::array &data, double low, double high,
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
  with_pixels_released(data, "data", [&](auto values) {
    histogram_values(values, mask_ptr, n, low, high, counts_ptr,
                     static_cast<std::size_t>(bins), tally);
  });
  return py::make_tuple(counts, tally.underflow, tally.overflow, tally.nan,
                        tally.masked);
}

}  // namespace

void bind_histogram(py::module_ &m) {
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
