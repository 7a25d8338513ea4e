// Shared helpers for the dials_diffuse kernels: checked access to numpy buffers.
//
// Every kernel takes C-contiguous numpy arrays. A wrong dtype, shape or layout
// raises ValueError (pybind11 translates std::invalid_argument), never crashes.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "clones.h"  // DIALS_DIFFUSE_CLONES

namespace dials_diffuse {

namespace py = pybind11;

// Raise ValueError unless `array` is C-contiguous.
inline void require_contiguous(const py::array &array, const char *name) {
  if (!(array.flags() & py::array::c_style)) {
    throw std::invalid_argument(std::string(name) +
                                " must be a C-contiguous array");
  }
}

// The numpy name of a dtype ("uint16"), for error messages.
inline std::string dtype_name(const py::dtype &dt) {
  return dt.attr("name").cast<std::string>();
}

// Raise ValueError unless `a` and `b` have identical shapes.
inline void require_same_shape(const py::array &a, const char *a_name,
                               const py::array &b, const char *b_name) {
  bool same = a.ndim() == b.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) {
    same = a.shape(i) == b.shape(i);
  }
  if (!same) {
    throw std::invalid_argument(std::string(a_name) + " and " + b_name +
                                " must have the same shape");
  }
}

// `mask` checked to be a C-contiguous bool/uint8 numpy array (messages name
// it `name`); its shape is the caller's to check.
inline py::array byte_array(const py::object &mask, const char *name) {
  if (!py::isinstance<py::array>(mask)) {
    throw std::invalid_argument(std::string(name) + " must be a numpy array or None");
  }
  py::array array = mask.cast<py::array>();
  require_contiguous(array, name);
  const char kind = array.dtype().kind();
  if (!((kind == 'b' || kind == 'u') && array.dtype().itemsize() == 1)) {
    throw std::invalid_argument(std::string(name) +
                                " must have dtype bool or uint8, not " +
                                dtype_name(array.dtype()));
  }
  return array;
}

// A boolean/uint8 mask (nonzero = valid pixel, the DIALS convention) as a
// byte pointer, or nullptr when no mask was given. Checked against `data`.
inline const std::uint8_t *mask_pointer(const py::object &mask,
                                        const py::array &data,
                                        const char *name = "mask") {
  if (mask.is_none()) return nullptr;
  py::array array = byte_array(mask, name);
  require_same_shape(array, name, data, "data");
  return static_cast<const std::uint8_t *>(array.data());
}

// A bool/uint8 mask of exactly `shape` as a byte pointer, or nullptr for None.
inline const std::uint8_t *mask_pointer(const py::object &mask,
                                        const std::vector<py::ssize_t> &shape,
                                        const char *name) {
  if (mask.is_none()) return nullptr;
  py::array array = byte_array(mask, name);
  bool same = array.ndim() == static_cast<py::ssize_t>(shape.size());
  for (py::ssize_t i = 0; same && i < array.ndim(); ++i) {
    same = array.shape(i) == shape[static_cast<std::size_t>(i)];
  }
  if (!same) throw std::invalid_argument(std::string(name) + " has the wrong shape");
  return static_cast<const std::uint8_t *>(array.data());
}

// Dispatch `fn(T{})` on the numpy dtype of `array` for the pixel types that
// detectors and our corrected data use (native byte order only).
template <typename Fn>
inline auto dispatch_pixel_dtype(const py::array &array, const char *name,
                                 Fn &&fn) {
  const py::dtype dt = array.dtype();
  const char kind = dt.kind();
  const py::ssize_t size = dt.itemsize();
  const bool native = dt.attr("isnative").cast<bool>();
  if (native && kind == 'u' && size == 1) return fn(std::uint8_t{});
  if (native && kind == 'u' && size == 2) return fn(std::uint16_t{});
  if (native && kind == 'u' && size == 4) return fn(std::uint32_t{});
  if (native && kind == 'i' && size == 1) return fn(std::int8_t{});
  if (native && kind == 'i' && size == 2) return fn(std::int16_t{});
  if (native && kind == 'i' && size == 4) return fn(std::int32_t{});
  if (native && kind == 'i' && size == 8) return fn(std::int64_t{});
  if (native && kind == 'f' && size == 4) return fn(float{});
  if (native && kind == 'f' && size == 8) return fn(double{});
  throw std::invalid_argument(std::string(name) + " has unsupported dtype " +
                              dtype_name(dt));
}

// Dispatch on the pixel dtype of `array` (as dispatch_pixel_dtype) and call
// `fn(values)` with `values` its data as `const T *` and the GIL released:
// the one way the bindings hand a pixel array to a kernel.
template <typename Fn>
inline void with_pixels_released(const py::array &array, const char *name,
                                 Fn &&fn) {
  dispatch_pixel_dtype(array, name, [&](auto tag) {
    using T = decltype(tag);
    const T *values = static_cast<const T *>(array.data());
    py::gil_scoped_release release;
    fn(values);
  });
}

}  // namespace dials_diffuse
