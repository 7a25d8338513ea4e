// Placing decoded HDF5 chunks into an output array, undoing the shuffle filter.
//
// HDF5 stores a chunked dataset as chunks of `chunk_shape` elements (edge
// chunks are stored whole, padded beyond the dataset). After decompression a
// chunk written with the shuffle filter (H5Z_FILTER_SHUFFLE, 2) holds the
// first byte of every element, then the second byte of every element, and
// so on. `place_chunk` copies the part of one decoded chunk that falls inside
// an output block (frames x rows x columns) into it, unshuffling on the way:
// one pass, no temporary, the GIL released, so worker threads place chunks in
// parallel (Python's zlib.decompress also releases the GIL).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>

#include <pybind11/stl.h>

#include "common.h"

namespace dials_diffuse {

// Copy `n` shuffled elements of `S` bytes starting at element `first` of a
// chunk of `total` elements (byte plane b at src + b * total) to dst.
template <std::size_t S>
inline void unshuffle_run(const std::uint8_t *src, std::size_t total,
                          std::size_t first, std::size_t n, std::uint8_t *dst) {
  const std::uint8_t *planes[S];
  for (std::size_t b = 0; b < S; ++b) planes[b] = src + b * total + first;
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t b = 0; b < S; ++b) dst[i * S + b] = planes[b][i];
  }
}

inline void unshuffle_run_any(const std::uint8_t *src, std::size_t total,
                              std::size_t first, std::size_t n, std::size_t size,
                              std::uint8_t *dst) {
  switch (size) {
    case 2: return unshuffle_run<2>(src, total, first, n, dst);
    case 4: return unshuffle_run<4>(src, total, first, n, dst);
    case 8: return unshuffle_run<8>(src, total, first, n, dst);
    default:
      for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t b = 0; b < size; ++b) {
          dst[i * size + b] = src[b * total + first + i];
        }
      }
  }
}

// Python: place_chunk(chunk, chunk_shape, out, origin, shuffled=False) -> out
inline py::array place_chunk(const py::object &chunk,
                             const std::array<std::int64_t, 3> &chunk_shape,
                             py::array out, const std::array<std::int64_t, 3> &origin,
                             bool shuffled) {
  require_contiguous(out, "out");
  if (!out.writeable()) throw std::invalid_argument("out is read-only");
  if (out.ndim() != 3) throw std::invalid_argument("out must be 3-d (frames, rows, columns)");
  for (auto n : chunk_shape) {
    if (n < 1) throw std::invalid_argument("chunk_shape must be positive");
  }
  py::buffer_info info = py::reinterpret_borrow<py::buffer>(chunk).request();
  const std::size_t size = static_cast<std::size_t>(out.itemsize());
  const std::size_t total = static_cast<std::size_t>(chunk_shape[0] * chunk_shape[1] *
                                                     chunk_shape[2]);
  const std::size_t chunk_bytes =
      static_cast<std::size_t>(info.size) * static_cast<std::size_t>(info.itemsize);
  if (chunk_bytes != total * size) {
    throw std::invalid_argument("chunk has " + std::to_string(chunk_bytes) +
                                " bytes, expected " + std::to_string(total * size) +
                                " for its shape and out's dtype");
  }
  // The intersection of the chunk's box and out's box, in out's coordinates.
  std::array<std::int64_t, 3> lo{}, hi{};
  for (int d = 0; d < 3; ++d) {
    lo[d] = std::max<std::int64_t>(0, origin[d]);
    hi[d] = std::min<std::int64_t>(out.shape(d), origin[d] + chunk_shape[d]);
    if (hi[d] <= lo[d]) return out;  // no overlap
  }
  const auto *src = static_cast<const std::uint8_t *>(info.ptr);
  auto *dst = static_cast<std::uint8_t *>(out.mutable_data());
  const std::int64_t out_rows = out.shape(1), out_columns = out.shape(2);
  const std::size_t run = static_cast<std::size_t>(hi[2] - lo[2]);
  {
    py::gil_scoped_release release;
    for (std::int64_t z = lo[0]; z < hi[0]; ++z) {
      for (std::int64_t y = lo[1]; y < hi[1]; ++y) {
        const std::size_t first = static_cast<std::size_t>(
            ((z - origin[0]) * chunk_shape[1] + (y - origin[1])) * chunk_shape[2] +
            (lo[2] - origin[2]));
        std::uint8_t *target =
            dst + static_cast<std::size_t>((z * out_rows + y) * out_columns + lo[2]) * size;
        if (shuffled && size > 1) {
          unshuffle_run_any(src, total, first, run, size, target);
        } else {
          std::memcpy(target, src + first * size, run * size);
        }
      }
    }
  }
  return out;
}

inline void bind_chunks(py::module_ &m) {
  m.def("place_chunk", &place_chunk, py::arg("chunk"), py::arg("chunk_shape"),
        py::arg("out"), py::arg("origin"), py::arg("shuffled") = false,
        R"doc(Copy the part of a decoded HDF5 chunk inside `out` into it, GIL released.

Parameters
----------
chunk : bytes or buffer
    The decoded (decompressed) chunk: prod(chunk_shape) elements of
    out's dtype, in HDF5's byte order for the chunk (shuffled or not).
chunk_shape : (int, int, int)
    The dataset's chunk shape (edge chunks are stored whole).
out : ndarray, 3-d, C-contiguous, writeable
    The output block (frames, rows, columns).
origin : (int, int, int)
    Where element [0, 0, 0] of the chunk lies in out's coordinates (may be
    negative or beyond out: only the overlap is copied).
shuffled : bool
    The chunk was written with HDF5's shuffle filter (byte planes).

Returns
-------
out
)doc");
}

}  // namespace dials_diffuse
