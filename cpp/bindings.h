// Python glue shared by the bindings_*.cpp files (the pure kernels are in the
// headers they include), and the bind_* functions they define for module.cpp.
#pragma once

#include <cstdint>
#include <utility>

#include "common.h"

namespace dials_diffuse {

// The bytes of a chunk given as bytes or as a 1-d C-contiguous uint8 array
// (e.g. a slice of a numpy.memmap of the data file: no copy). The caller
// keeps the object alive.
inline std::pair<const std::uint8_t *, std::size_t> bytes_view(const py::handle &h) {
  if (PyBytes_Check(h.ptr())) {
    return {reinterpret_cast<const std::uint8_t *>(PyBytes_AS_STRING(h.ptr())),
            static_cast<std::size_t>(PyBytes_GET_SIZE(h.ptr()))};
  }
  if (py::isinstance<py::array>(h)) {
    const auto a = py::reinterpret_borrow<py::array>(h);
    if (a.ndim() == 1 && a.itemsize() == 1 && (a.flags() & py::array::c_style)) {
      return {static_cast<const std::uint8_t *>(a.data()),
              static_cast<std::size_t>(a.size())};
    }
  }
  throw std::invalid_argument(
      "compressed chunks must be bytes or 1-d contiguous uint8 arrays");
}

void bind_chunks(py::module_ &m);  // bindings_chunks.cpp
void bind_eiger(py::module_ &m);   // bindings_eiger.cpp
void bind_geometry(py::module_ &m);  // bindings_geometry.cpp
void bind_peaks(py::module_ &m);  // bindings_peaks.cpp
void bind_histogram(py::module_ &m);  // bindings_histogram.cpp
void bind_shoebox(py::module_ &m);  // bindings_shoebox.cpp
void bind_diffuse(py::module_ &m);  // bindings_diffuse.cpp
void bind_polar(py::module_ &m);  // bindings_polar.cpp

}  // namespace dials_diffuse
