// Python binding of the find_peaks pixel pass (peaks.h): argument checks,
// then the work with the GIL released.
#include "bindings.h"
#include "peaks.h"

namespace dials_diffuse {

namespace {

// Flat indices (int64, ascending) of the valid pixels of `data` above
// `threshold`.
py::array_t<std::int64_t> pixels_above(const py::array &data,
                                              const py::object &valid,
                                              double threshold) {
  require_contiguous(data, "data");
  const std::uint8_t *mask = mask_pointer(valid, data);
  const std::size_t n = static_cast<std::size_t>(data.size());
  std::vector<std::int64_t> found;
  with_pixels_released(data, "data", [&](auto values) {
    collect_above(values, mask, n, threshold, found);
  });
  py::array_t<std::int64_t> result(static_cast<py::ssize_t>(found.size()));
  std::copy(found.begin(), found.end(), result.mutable_data());
  return result;
}

}  // namespace

void bind_peaks(py::module_ &m) {
  m.def("pixels_above", &pixels_above, py::arg("data"),
        py::arg("valid") = py::none(), py::arg("threshold"),
        "Flat C-order indices (int64) of the pixels of `data` above "
        "`threshold` where `valid` (bool/uint8, same shape, nonzero = usable; "
        "None: all) is set: numpy.flatnonzero((data > threshold) & valid) in "
        "one pass. Releases the GIL.");
}

}  // namespace dials_diffuse
