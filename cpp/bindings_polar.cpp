// pybind11 glue for the polar kernels of polar.h: checks every array once,
// then calls the kernel with the GIL released.

#include <cstdint>
#include <string>
#include <vector>

#include "bindings.h"
#include "polar.h"

namespace dials_diffuse {

namespace polar_glue {

template <typename T>
py::array_t<T, py::array::c_style> exact(const py::array &array, const char *name,
                                         char kind) {
  if (array.dtype().kind() != kind ||
      array.dtype().itemsize() != static_cast<py::ssize_t>(sizeof(T))) {
    throw std::invalid_argument(std::string(name) + " must be " +
                                (kind == 'f' ? "float" : "int") +
                                std::to_string(8 * sizeof(T)) + ", not " +
                                dtype_name(array.dtype()));
  }
  require_contiguous(array, name);
  return array.cast<py::array_t<T, py::array::c_style>>();
}

struct Frames {
  std::size_t n_frames, n_pixels;
  const std::uint8_t *valid;
};

inline Frames check_frames(const py::array &frames, const py::object &valid) {
  require_contiguous(frames, "frames");
  if (frames.ndim() < 2) {
    throw std::invalid_argument("frames must have shape (n_frames, ...pixels)");
  }
  Frames f;
  f.n_frames = static_cast<std::size_t>(frames.shape(0));
  f.n_pixels = f.n_frames ? static_cast<std::size_t>(frames.size()) / f.n_frames : 0;
  f.valid = mask_pointer(valid, frames, "valid");
  return f;
}

inline PanelLayout panel_layout(const py::array_t<std::int64_t, py::array::c_style> &rows,
                                const py::array_t<std::int64_t, py::array::c_style> &columns,
                                std::vector<std::int64_t> &offsets) {
  if (rows.ndim() != 1 || columns.ndim() != 1 || rows.shape(0) != columns.shape(0)) {
    throw std::invalid_argument("panel rows and columns must be 1-d, one per panel");
  }
  const std::size_t n = static_cast<std::size_t>(rows.shape(0));
  offsets.assign(n + 1, 0);
  for (std::size_t p = 0; p < n; ++p) {
    if (rows.data()[p] < 1 || columns.data()[p] < 1) {
      throw std::invalid_argument("every panel needs at least one row and column");
    }
    offsets[p + 1] = offsets[p] + rows.data()[p] * columns.data()[p];
  }
  if (offsets[n] > INT32_MAX) {
    throw std::invalid_argument("the detector has too many pixels for a 32-bit index");
  }
  return PanelLayout{rows.data(), columns.data(), offsets.data(), n};
}

}  // namespace polar_glue

inline py::tuple polar_resample(const py::array &indptr_in, const py::array &indices_in,
                                const py::array &weights_in, const py::array &frames,
                                const py::object &valid) {
  using namespace polar_glue;
  const Frames f = check_frames(frames, valid);
  if (indptr_in.dtype().kind() != 'i' || indptr_in.dtype().itemsize() != 8 ||
      indices_in.dtype().kind() != 'i' || indices_in.dtype().itemsize() != 4 ||
      weights_in.dtype().kind() != 'f' || weights_in.dtype().itemsize() != 4) {
    throw std::invalid_argument(
        "the map must be indptr int64, indices int32, weights float32");
  }
  auto indptr = indptr_in.cast<py::array_t<std::int64_t, py::array::c_style>>();
  auto indices = indices_in.cast<py::array_t<std::int32_t, py::array::c_style>>();
  auto weights = weights_in.cast<py::array_t<float, py::array::c_style>>();
  if (indptr.ndim() != 1 || indptr.shape(0) < 1 || indices.ndim() != 1 ||
      weights.ndim() != 1 || indices.shape(0) != weights.shape(0)) {
    throw std::invalid_argument("indptr, indices and weights must be 1-d; "
                                "indices and weights of equal length");
  }
  const std::size_t n_bins = static_cast<std::size_t>(indptr.shape(0) - 1);
  const std::int64_t *ip = indptr.data();
  if (ip[0] != 0 || ip[n_bins] != indices.shape(0)) {
    throw std::invalid_argument("indptr must start at 0 and end at len(indices)");
  }
  for (std::size_t b = 0; b < n_bins; ++b) {
    if (ip[b + 1] < ip[b]) throw std::invalid_argument("indptr must not decrease");
  }
  py::array_t<float> out({f.n_frames, n_bins});
  py::array_t<std::uint8_t> out_valid({f.n_frames, n_bins});
  float *o = out.mutable_data();
  std::uint8_t *ov = out_valid.mutable_data();
  const std::int32_t *ix = indices.data();
  const float *w = weights.data();
  bool in_bounds = true;
  dispatch_pixel_dtype(frames, "frames", [&](auto tag) {
    using T = decltype(tag);
    const T *data = static_cast<const T *>(frames.data());
    py::gil_scoped_release release;
    in_bounds = f.valid != nullptr
                    ? polar_apply_csr<T, true>(ip, ix, w, n_bins, data, f.valid,
                                               f.n_frames, f.n_pixels, o, ov)
                    : polar_apply_csr<T, false>(ip, ix, w, n_bins, data, nullptr,
                                                f.n_frames, f.n_pixels, o, ov);
  });
  if (!in_bounds) {
    throw std::invalid_argument("a map index lies outside the frame of " +
                                std::to_string(f.n_pixels) + " pixels");
  }
  return py::make_tuple(out, out_valid);
}

inline py::tuple polar_resample_compact(const py::array &bins_in,
                                        const py::array &index_in,
                                        const py::object &fractions_in,
                                        std::int64_t stride, std::int64_t n_bins_in,
                                        const py::array &frames,
                                        const py::object &valid) {
  using namespace polar_glue;
  const Frames f = check_frames(frames, valid);
  auto bins = exact<std::int32_t>(bins_in, "bins", 'i');
  auto index = exact<std::int32_t>(index_in, "index", 'i');
  if (bins.ndim() != 1 || index.ndim() != 1 || bins.shape(0) != index.shape(0)) {
    throw std::invalid_argument("bins and index must be 1-d, of one length");
  }
  const std::size_t n_entries = static_cast<std::size_t>(index.shape(0));
  if (n_bins_in < 0) throw std::invalid_argument("n_bins must not be negative");
  const std::size_t n_bins = static_cast<std::size_t>(n_bins_in);
  const bool bilinear = !fractions_in.is_none();
  py::array_t<float, py::array::c_style> fractions;
  if (bilinear) {
    fractions = exact<float>(fractions_in.cast<py::array>(), "fractions", 'f');
    if (fractions.ndim() != 2 ||
        static_cast<std::size_t>(fractions.shape(0)) != n_entries ||
        fractions.shape(1) != 2) {
      throw std::invalid_argument("fractions must have shape (len(index), 2)");
    }
    if (stride < 1) throw std::invalid_argument("stride must be positive");
  }
  // Every pixel an entry may touch must lie in the frame, every bin in the
  // output.
  const std::int64_t reach = bilinear ? stride + 1 : 0;
  const std::int32_t *ix = index.data();
  const std::int32_t *bx = bins.data();
  for (std::size_t k = 0; k < n_entries; ++k) {
    if (ix[k] < -1 ||
        (ix[k] >= 0 && ix[k] + reach >= static_cast<std::int64_t>(f.n_pixels))) {
      throw std::invalid_argument("a map index lies outside the frame of " +
                                  std::to_string(f.n_pixels) + " pixels");
    }
    if (bx[k] < 0 || static_cast<std::size_t>(bx[k]) >= n_bins) {
      throw std::invalid_argument("a map bin lies outside the " +
                                  std::to_string(n_bins) + " bins");
    }
  }
  py::array_t<float> out({f.n_frames, n_bins});
  py::array_t<std::uint8_t> out_valid({f.n_frames, n_bins});
  float *o = out.mutable_data();
  std::uint8_t *ov = out_valid.mutable_data();
  const float *fr = bilinear ? fractions.data() : nullptr;
  const std::size_t s = static_cast<std::size_t>(stride);
  dispatch_pixel_dtype(frames, "frames", [&](auto tag) {
    using T = decltype(tag);
    const T *data = static_cast<const T *>(frames.data());
    py::gil_scoped_release release;
    if (n_entries != n_bins) {  // bins without an entry stay invalid
      std::fill(o, o + f.n_frames * n_bins, 0.0f);
      std::fill(ov, ov + f.n_frames * n_bins, std::uint8_t{0});
    }
    if (bilinear && f.valid != nullptr) {
      polar_apply_bilinear<T, true>(bx, ix, fr, s, n_entries, n_bins, data, f.valid,
                                    f.n_frames, f.n_pixels, o, ov);
    } else if (bilinear) {
      polar_apply_bilinear<T, false>(bx, ix, fr, s, n_entries, n_bins, data, nullptr,
                                     f.n_frames, f.n_pixels, o, ov);
    } else if (f.valid != nullptr) {
      polar_apply_nearest<T, true>(bx, ix, n_entries, n_bins, data, f.valid,
                                   f.n_frames, f.n_pixels, o, ov);
    } else {
      polar_apply_nearest<T, false>(bx, ix, n_entries, n_bins, data, nullptr,
                                    f.n_frames, f.n_pixels, o, ov);
    }
  });
  return py::make_tuple(out, out_valid);
}

inline void polar_coordinates_on_panel(
    const py::array &cos2t_in, const py::array &sin2t_in, std::int64_t row_begin,
    std::int64_t row_end, const py::array &cosphi_in, const py::array &sinphi_in,
    std::int64_t col_begin, std::int64_t col_count, const py::array &matrix_in,
    double scale_x, double scale_y, const py::array &limits_in, std::int32_t panel_id, py::array x_in, py::array y_in, py::array panel_in) {
  using namespace polar_glue;
  auto cos2t = exact<double>(cos2t_in, "cos2t", 'f');
  auto sin2t = exact<double>(sin2t_in, "sin2t", 'f');
  auto cosphi = exact<double>(cosphi_in, "cosphi", 'f');
  auto sinphi = exact<double>(sinphi_in, "sinphi", 'f');
  auto matrix = exact<double>(matrix_in, "matrix", 'f');
  auto limits = exact<double>(limits_in, "limits", 'f');
  if (limits.size() != 4) throw std::invalid_argument("limits must have 4 values");
  auto x = exact<double>(x_in, "x", 'f');
  auto y = exact<double>(y_in, "y", 'f');
  auto panel = exact<std::int32_t>(panel_in, "panel", 'i');
  const std::size_t n_rows = static_cast<std::size_t>(cos2t.size());
  const std::size_t n_columns = static_cast<std::size_t>(cosphi.size());
  if (static_cast<std::size_t>(sin2t.size()) != n_rows ||
      static_cast<std::size_t>(sinphi.size()) != n_columns || matrix.size() != 9 ||
      static_cast<std::size_t>(x.size()) != n_rows * n_columns ||
      y.size() != x.size() || panel.size() != x.size()) {
    throw std::invalid_argument("inconsistent array sizes");
  }
  if (row_begin < 0 || row_end < row_begin ||
      static_cast<std::size_t>(row_end) > n_rows || col_begin < 0 ||
      static_cast<std::size_t>(col_begin) >= std::max<std::size_t>(n_columns, 1) ||
      col_count < 0 || static_cast<std::size_t>(col_count) > n_columns) {
    throw std::invalid_argument("row or column range outside the grid");
  }
  double *xp = x.mutable_data(), *yp = y.mutable_data();
  std::int32_t *pp = panel.mutable_data();
  py::gil_scoped_release release;
  polar_panel_coordinates(cos2t.data(), sin2t.data(), static_cast<std::size_t>(row_begin),
                          static_cast<std::size_t>(row_end), cosphi.data(),
                          sinphi.data(), n_columns, static_cast<std::size_t>(col_begin),
                          static_cast<std::size_t>(col_count), matrix.data(), scale_x,
                          scale_y, limits.data(), panel_id, xp, yp, pp);
}

inline py::tuple polar_build_map(const py::array &fast_in, const py::array &slow_in,
                                 const py::array &panel_in, const py::array &rows_in,
                                 const py::array &columns_in, std::int64_t over,
                                 bool bilinear, bool compact) {
  using namespace polar_glue;
  auto fast = exact<double>(fast_in, "fast", 'f');
  auto slow = exact<double>(slow_in, "slow", 'f');
  auto panel = exact<std::int32_t>(panel_in, "panel", 'i');
  auto rows = exact<std::int64_t>(rows_in, "rows", 'i');
  auto columns = exact<std::int64_t>(columns_in, "columns", 'i');
  if (fast.ndim() != 2 || slow.ndim() != 2 || panel.ndim() != 2 ||
      slow.shape(0) != fast.shape(0) || slow.shape(1) != fast.shape(1) ||
      panel.shape(0) != fast.shape(0) || panel.shape(1) != fast.shape(1)) {
    throw std::invalid_argument("fast, slow and panel must be 2-d of one shape");
  }
  if (over < 1 || fast.shape(0) % over != 0 || fast.shape(1) % over != 0) {
    throw std::invalid_argument("the sub-sample grid must be a multiple of oversample");
  }
  if (compact && over != 1) {
    throw std::invalid_argument("the compact layouts have one sample per bin");
  }
  std::vector<std::int64_t> offsets;
  const PanelLayout layout = panel_layout(rows, columns, offsets);
  const std::size_t n_rows = static_cast<std::size_t>(fast.shape(0) / over);
  const std::size_t n_columns = static_cast<std::size_t>(fast.shape(1) / over);
  if (compact) {
    const std::size_t n_bins = n_rows * n_columns;
    py::array_t<std::int32_t> index(n_bins);
    py::array_t<float> fractions(std::vector<std::size_t>{bilinear ? n_bins : 0, 2});
    std::int32_t *ix = index.mutable_data();
    float *fr = fractions.mutable_data();
    {
      py::gil_scoped_release release;
      polar_build_compact(fast.data(), slow.data(), panel.data(), n_bins, layout,
                          bilinear, ix, fr);
    }
    return py::make_tuple(index, fractions);  // in bin order
  }
  std::vector<std::int64_t> indptr;
  std::vector<std::int32_t> indices;
  std::vector<float> weights;
  {
    py::gil_scoped_release release;
    polar_build_csr(fast.data(), slow.data(), panel.data(), n_rows, n_columns,
                    static_cast<std::size_t>(over), layout, bilinear, indptr, indices,
                    weights);
  }
  auto as_array = [](auto &vector) {
    using V = typename std::decay_t<decltype(vector)>::value_type;
    py::array_t<V> array(vector.size());
    std::copy(vector.begin(), vector.end(), array.mutable_data());
    return array;
  };
  return py::make_tuple(as_array(indptr), as_array(indices), as_array(weights));
}

inline py::tuple polar_sort_by_pixel_py(const py::array &index_in,
                                       const py::object &fractions_in,
                                       std::int64_t n_pixels) {
  using namespace polar_glue;
  auto index = exact<std::int32_t>(index_in, "index", 'i');
  const std::size_t n = static_cast<std::size_t>(index.size());
  const std::int32_t *ix = index.data();
  for (std::size_t b = 0; b < n; ++b) {
    if (ix[b] < -1 || ix[b] >= n_pixels) {
      throw std::invalid_argument("an index lies outside the frame");
    }
  }
  py::array_t<float, py::array::c_style> fractions;
  const bool bilinear = !fractions_in.is_none();
  if (bilinear) {
    fractions = exact<float>(fractions_in.cast<py::array>(), "fractions", 'f');
    if (static_cast<std::size_t>(fractions.size()) != 2 * n) {
      throw std::invalid_argument("fractions must have shape (len(index), 2)");
    }
  }
  py::array_t<std::int32_t> bins(n), index_out(n);
  py::array_t<float> fractions_out(std::vector<std::size_t>{bilinear ? n : 0, 2});
  std::int32_t *bp = bins.mutable_data(), *op = index_out.mutable_data();
  float *fp = fractions_out.mutable_data();
  const float *fr = bilinear ? fractions.data() : nullptr;
  {
    py::gil_scoped_release release;
    polar_sort_by_pixel(ix, fr, n, static_cast<std::size_t>(n_pixels), bp, op, fp);
  }
  return py::make_tuple(bins, index_out, fractions_out);
}

void bind_polar(py::module_ &m) {
  m.def("polar_sort_by_pixel", &polar_sort_by_pixel_py, py::arg("index"),
        py::arg("fractions"), py::arg("n_pixels"),
        "A compact map given in bin order, sorted by pixel (stable counting sort, "
        "-1 first): (bins, index, fractions; empty for nearest).");
  m.def("polar_resample", &polar_resample, py::arg("indptr"), py::arg("indices"),
        py::arg("weights"), py::arg("frames"), py::arg("valid") = py::none(),
        R"doc(Resample frames through a CSR pixel map, GIL released.

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
  m.def("polar_resample_compact", &polar_resample_compact, py::arg("bins"),
        py::arg("index"), py::arg("fractions"), py::arg("stride"), py::arg("n_bins"),
        py::arg("frames"), py::arg("valid") = py::none(),
        R"doc(Resample frames through a nearest or bilinear map, GIL released.

Parameters
----------
bins : ndarray of int32
    The output bin of each entry (0 .. n_bins - 1).
index : ndarray of int32, one per entry
    The pixel (nearest) or the lower-left of the four pixels (bilinear) of
    each entry; -1 for a bin off the detector. Sorted (not required, but
    fastest): the frame is then read in order.
fractions : ndarray of float32, shape (n_entries, 2), or None for nearest
    (tx, ty) of each bilinear sample from its lower-left pixel's centre.
stride : int
    Columns of every panel (bilinear: the pixel below is index + stride).
n_bins : int
frames, valid : as polar_resample

Returns
-------
(out, out_valid) : float32 and uint8 arrays of shape (n_frames, n_bins)
    A bin is valid when it has an entry on the detector and each pixel it
    uses with a non-zero weight is valid; invalid bins are 0.
)doc");
  m.def("polar_coordinates_on_panel", &polar_coordinates_on_panel, py::arg("cos2t"),
        py::arg("sin2t"), py::arg("row_begin"), py::arg("row_end"),
        py::arg("cosphi"), py::arg("sinphi"), py::arg("col_begin"),
        py::arg("col_count"), py::arg("matrix"), py::arg("scale_x"),
        py::arg("scale_y"), py::arg("limits"),
        py::arg("panel_id"), py::arg("x"), py::arg("y"), py::arg("panel"),
        R"doc(Where the samples of a (2theta, phi) grid land on one flat panel.

Fills x, y (float64, n_rows x n_columns) and panel (int32, -1 = not yet
claimed) in place for the samples in rows [row_begin, row_end) and the
col_count columns from col_begin (wrapping) that land on the panel: see
polar_panel_coordinates in polar.h. matrix: D [b e1 e2] (3 x 3, float64);
limits: (low x, high x, low y, high y) of the scaled coordinates.
)doc");
  m.def("polar_build_map", &polar_build_map, py::arg("fast"), py::arg("slow"),
        py::arg("panel"), py::arg("rows"), py::arg("columns"), py::arg("oversample"),
        py::arg("bilinear"), py::arg("compact"),
        R"doc(A polar map from the pixel coordinates of its (sub-)samples.

fast, slow (float64) and panel (int32, -1 off the detector) have shape
(n_q * oversample, n_phi * oversample); rows, columns (int64) per panel.
compact (oversample 1): returns (index int32, fractions float32 (n, 2); empty
for nearest); else the CSR map (indptr int64, indices int32, weights
float32), each bin the mean over its sub-samples, duplicates merged.
)doc");
}

}  // namespace dials_diffuse
