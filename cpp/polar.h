// Resample images onto a polar (q, phi) grid through a precomputed sparse map.
//
// The map is CSR: output bin b takes sum_k weights[k] * pixel[indices[k]]
// for k in indptr[b] .. indptr[b+1]-1 (nearest: one pixel of weight 1;
// bilinear: up to four pixels whose weights sum to 1). Pixel indices run over
// the flattened pixels of one frame (panels concatenated). A bin is valid when
// its row is not empty and every pixel in its row is valid; an
// invalid bin is written as 0 and flagged 0 in the output mask, so masked
// detector pixels (gaps, beam stop, bad pixels) carry over to the polar mask.
#pragma once

#include <cstdint>
#include <string>

#include "common.h"

namespace dials_diffuse {

// Returns false (and stops) at the first pixel index outside the frame.
template <typename T, bool HasValid>
bool polar_resample_frames(const std::int64_t *indptr, const std::int32_t *indices,
                           const float *weights, std::size_t n_bins,
                           const T *frames, const std::uint8_t *valid,
                           std::size_t n_frames, std::size_t n_pixels,
                           float *out, std::uint8_t *out_valid) {
  for (std::size_t f = 0; f < n_frames; ++f) {
    const T *frame = frames + f * n_pixels;
    const std::uint8_t *frame_valid = HasValid ? valid + f * n_pixels : nullptr;
    float *row_out = out + f * n_bins;
    std::uint8_t *row_valid = out_valid + f * n_bins;
    std::int64_t begin = indptr[0];
    for (std::size_t b = 0; b < n_bins; ++b) {
      const std::int64_t end = indptr[b + 1];
      unsigned ok = end > begin;
      std::uint32_t in_range = 1;
      double sum = 0.0;
      for (std::int64_t k = begin; k < end; ++k) {
        const std::uint32_t p = static_cast<std::uint32_t>(indices[k]);
        in_range &= p < n_pixels;
        const std::uint32_t safe = p < n_pixels ? p : 0;
        if (HasValid) ok &= frame_valid[safe] != 0;
        sum += static_cast<double>(weights[k]) * static_cast<double>(frame[safe]);
      }
      if (!in_range) return false;
      row_out[b] = ok ? static_cast<float>(sum) : 0.0f;
      row_valid[b] = static_cast<std::uint8_t>(ok);
      begin = end;
    }
  }
  return true;
}

// Python entry point; see the docstring in bind_polar.
inline py::tuple polar_resample(const py::array &indptr_in,
                                const py::array &indices_in,
                                const py::array &weights_in,
                                const py::array &frames,
                                const py::object &valid) {
  require_contiguous(frames, "frames");
  if (frames.ndim() < 2) {
    throw std::invalid_argument("frames must have shape (n_frames, ...pixels)");
  }
  auto indptr = indptr_in.cast<py::array_t<std::int64_t, py::array::c_style>>();
  auto indices = indices_in.cast<py::array_t<std::int32_t, py::array::c_style>>();
  auto weights = weights_in.cast<py::array_t<float, py::array::c_style>>();
  if (indptr_in.dtype().kind() != 'i' || indptr_in.dtype().itemsize() != 8 ||
      indices_in.dtype().kind() != 'i' || indices_in.dtype().itemsize() != 4 ||
      weights_in.dtype().kind() != 'f' || weights_in.dtype().itemsize() != 4) {
    throw std::invalid_argument(
        "the map must be indptr int64, indices int32, weights float32");
  }
  if (indptr.ndim() != 1 || indptr.shape(0) < 1 || indices.ndim() != 1 ||
      weights.ndim() != 1 || indices.shape(0) != weights.shape(0)) {
    throw std::invalid_argument("indptr, indices and weights must be 1-d; "
                                "indices and weights of equal length");
  }
  const std::size_t n_bins = static_cast<std::size_t>(indptr.shape(0) - 1);
  const std::size_t n_frames = static_cast<std::size_t>(frames.shape(0));
  const std::size_t n_pixels =
      n_frames ? static_cast<std::size_t>(frames.size()) / n_frames : 0;
  const std::int64_t *ip = indptr.data();
  const std::int32_t *ix = indices.data();
  const std::int64_t nnz = indices.shape(0);
  if (ip[0] != 0 || ip[n_bins] != nnz) {
    throw std::invalid_argument("indptr must start at 0 and end at len(indices)");
  }
  for (std::size_t b = 0; b < n_bins; ++b) {
    if (ip[b + 1] < ip[b]) throw std::invalid_argument("indptr must not decrease");
  }
  const std::uint8_t *valid_ptr = mask_pointer(valid, frames);
  py::array_t<float> out({n_frames, n_bins});
  py::array_t<std::uint8_t> out_valid({n_frames, n_bins});
  float *out_ptr = out.mutable_data();
  std::uint8_t *out_valid_ptr = out_valid.mutable_data();
  const float *w = weights.data();
  bool in_bounds = true;
  dispatch_pixel_dtype(frames, "frames", [&](auto tag) {
    using T = decltype(tag);
    const T *data = static_cast<const T *>(frames.data());
    py::gil_scoped_release release;
    in_bounds =
        valid_ptr != nullptr
            ? polar_resample_frames<T, true>(ip, ix, w, n_bins, data, valid_ptr,
                                             n_frames, n_pixels, out_ptr,
                                             out_valid_ptr)
            : polar_resample_frames<T, false>(ip, ix, w, n_bins, data, nullptr,
                                              n_frames, n_pixels, out_ptr,
                                              out_valid_ptr);
  });
  if (!in_bounds) {
    throw std::invalid_argument("a map index lies outside the frame of " +
                                std::to_string(n_pixels) + " pixels");
  }
  return py::make_tuple(out, out_valid);
}

inline void bind_polar(py::module_ &m) {
  m.def("polar_resample", &polar_resample, py::arg("indptr"), py::arg("indices"),
        py::arg("weights"), py::arg("frames"), py::arg("valid") = py::none(),
        R"doc(Resample frames through a sparse (CSR) pixel map, GIL released.

Parameters
----------
indptr : ndarray of int64, length n_bins + 1
indices : ndarray of int32
    Flattened pixel index of each map entry (0 .. pixels per frame - 1).
weights : ndarray of float32, same length as indices
frames : ndarray, shape (n_frames, ...), C-contiguous, u1 u2 u4 i1 i2 i4 i8 f4 f8
valid : ndarray of bool or uint8, same shape as frames, optional
    Nonzero marks a valid pixel (DIALS convention).

Returns
-------
(out, out_valid) : float32 and uint8 arrays of shape (n_frames, n_bins)
    A bin is valid when its row is not empty and every pixel in its row is
    valid; invalid bins are 0.
)doc");
}

}  // namespace dials_diffuse
