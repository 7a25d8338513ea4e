// Python bindings of the diffuse kernels (diffuse.h): argument checks,
// then the work with the GIL released.
#include "bindings.h"
#include "diffuse.h"

namespace dials_diffuse {

namespace {

// Raise ValueError unless `array` is float64, C-contiguous, with `shape`
// (-1 matches any extent).
const double *double_buffer(const py::array &array, const char *name,
                                   std::initializer_list<py::ssize_t> shape) {
  require_contiguous(array, name);
  if (!(array.dtype().kind() == 'f' && array.dtype().itemsize() == 8)) {
    throw std::invalid_argument(std::string(name) + " must be float64, not " +
                                dtype_name(array.dtype()));
  }
  if (array.ndim() != static_cast<py::ssize_t>(shape.size())) {
    throw std::invalid_argument(std::string(name) + " must have " +
                                std::to_string(shape.size()) + " dimensions");
  }
  py::ssize_t axis = 0;
  for (py::ssize_t extent : shape) {
    if (extent >= 0 && array.shape(axis) != extent) {
      throw std::invalid_argument(std::string(name) + " has the wrong shape");
    }
    ++axis;
  }
  return static_cast<const double *>(array.data());
}

// `out` checked to be a writeable C-contiguous uint8 array of `shape`, or a
// new one when `out` is None.
py::array uint8_output(const py::object &out,
                              std::initializer_list<py::ssize_t> shape,
                              const char *name) {
  if (out.is_none()) return py::array_t<std::uint8_t>(std::vector<py::ssize_t>(shape));
  if (!py::isinstance<py::array>(out)) {
    throw std::invalid_argument(std::string(name) + " must be a numpy array or None");
  }
  py::array array = out.cast<py::array>();
  require_contiguous(array, name);
  if (!array.writeable()) throw std::invalid_argument(std::string(name) + " is read-only");
  if (!(array.dtype().kind() == 'u' && array.dtype().itemsize() == 1)) {
    throw std::invalid_argument(std::string(name) + " must have dtype uint8");
  }
  bool same = array.ndim() == static_cast<py::ssize_t>(shape.size());
  py::ssize_t axis = 0;
  for (py::ssize_t extent : shape) {
    same = same && array.shape(axis++) == extent;
  }
  if (!same) throw std::invalid_argument(std::string(name) + " has the wrong shape");
  return array;
}

struct ChunkGeometry {
  std::size_t frames, rows, columns;
  const double *s1, *s0, *matrices;
};

ChunkGeometry check_geometry(const py::array &data, const py::array &s1,
                                    const py::array &s0,
                                    const py::array &matrices) {
  require_contiguous(data, "data");
  if (data.ndim() != 3) {
    throw std::invalid_argument("data must be (frames, rows, columns)");
  }
  ChunkGeometry g;
  g.frames = static_cast<std::size_t>(data.shape(0));
  g.rows = static_cast<std::size_t>(data.shape(1));
  g.columns = static_cast<std::size_t>(data.shape(2));
  g.s1 = double_buffer(s1, "s1", {3, data.shape(1), data.shape(2)});
  g.s0 = double_buffer(s0, "s0", {data.shape(0), 3});
  g.matrices = double_buffer(matrices, "matrices", {data.shape(0), 3, 3});
  return g;
}

// Python: integrate_voxels(data, s1, s0, matrices, subdivide, phi, seconds,
// valid=None, exclude=None, row0=0, column0=0) -> dict of columns.
py::dict integrate_voxels(const py::array &data, const py::array &s1,
                                 const py::array &s0,
                                 const py::array &matrices,
                                 const py::array &subdivide,
                                 const py::array &phi,
                                 const py::array &seconds,
                                 const py::object &valid,
                                 const py::object &exclude, double row0,
                                 double column0) {
  const ChunkGeometry g = check_geometry(data, s1, s0, matrices);
  const double *subdivide_ptr = double_buffer(subdivide, "subdivide", {3});
  for (int i = 0; i < 3; ++i) {
    if (!(subdivide_ptr[i] >= 1)) {
      throw std::invalid_argument("subdivide must be at least 1");
    }
  }
  const double *phi_ptr =
      double_buffer(phi, "phi", {static_cast<py::ssize_t>(g.frames)});
  const double *seconds_ptr =
      double_buffer(seconds, "seconds", {static_cast<py::ssize_t>(g.frames)});
  const std::uint8_t *valid_ptr = mask_pointer(valid, data, "valid");
  const std::uint8_t *exclude_ptr = mask_pointer(exclude, data, "exclude");
  VoxelTable table;
  with_pixels_released(data, "data", [&](auto values) {
    bin_pixels(values, valid_ptr, exclude_ptr, g.frames, g.rows, g.columns,
               g.s1, g.s0, g.matrices, subdivide_ptr, phi_ptr, seconds_ptr,
               row0, column0, table);
  });
  const auto &sums = table.sums();
  const py::ssize_t n = static_cast<py::ssize_t>(sums.size());
  py::array_t<std::int32_t> index({n, static_cast<py::ssize_t>(3)});
  py::array_t<std::int64_t> pixels(n);
  py::array_t<double> counts(n), seconds_out(n), phi_out(n), iy(n), ix(n);
  auto index_ptr = index.mutable_data();
  for (py::ssize_t i = 0; i < n; ++i) {
    const VoxelSums &v = sums[static_cast<std::size_t>(i)];
    for (int a = 0; a < 3; ++a) index_ptr[3 * i + a] = unpack_voxel(v.key, a);
    pixels.mutable_data()[i] = v.pixels;
    counts.mutable_data()[i] = v.counts;
    seconds_out.mutable_data()[i] = v.seconds;
    phi_out.mutable_data()[i] = v.phi;
    iy.mutable_data()[i] = v.iy;
    ix.mutable_data()[i] = v.ix;
  }
  py::dict result;
  result["index"] = index;
  result["pixels"] = pixels;
  result["counts"] = counts;
  result["seconds"] = seconds_out;
  result["phi_sum"] = phi_out;
  result["iy_sum"] = iy;
  result["ix_sum"] = ix;
  return result;
}

// Python: mask_peak_ellipsoids(s1, s0, matrices, centre, whitening, cutoff,
// allowed, origin, invalid=None, invert=False, out=None) -> uint8 (frames,
// rows, columns), 1 where the pixel's offset from its nearest lattice point
// (rounded hkl) lies inside the peak ellipsoid |W (dhkl - centre)| < cutoff
// and that lattice point is allowed (allowed[h - origin_h, k - origin_k,
// l - origin_l] != 0; lattice points outside the table are not allowed);
// inverted if `invert`; then 1 wherever invalid[row, column] is nonzero.
py::array mask_peak_ellipsoids(
    const py::array &s1, const py::array &s0, const py::array &matrices,
    const py::array &centre, const py::array &whitening, double cutoff,
    const py::array &allowed, const py::array &origin, const py::object &invalid,
    bool invert, const py::object &out) {
  require_contiguous(matrices, "matrices");
  if (matrices.ndim() != 3) {
    throw std::invalid_argument("matrices must be (frames, 3, 3)");
  }
  const py::ssize_t frames = matrices.shape(0);
  const double *M_all = double_buffer(matrices, "matrices", {frames, 3, 3});
  require_contiguous(s1, "s1");
  if (s1.ndim() != 3) throw std::invalid_argument("s1 must be (3, rows, columns)");
  const py::ssize_t rows = s1.shape(1), columns = s1.shape(2);
  const double *s1_ptr = double_buffer(s1, "s1", {3, rows, columns});
  const double *s0_all = double_buffer(s0, "s0", {frames, 3});
  PeakShape peak;
  const double *centre_ptr = double_buffer(centre, "centre", {3});
  const double *W = double_buffer(whitening, "whitening", {3, 3});
  std::copy(centre_ptr, centre_ptr + 3, peak.centre);
  std::copy(W, W + 9, peak.W);
  require_contiguous(allowed, "allowed");
  if (allowed.ndim() != 3 || allowed.dtype().itemsize() != 1) {
    throw std::invalid_argument("allowed must be a 3-d bool or uint8 array");
  }
  const std::uint8_t *allowed_ptr =
      static_cast<const std::uint8_t *>(allowed.data());
  require_contiguous(origin, "origin");
  if (!(origin.dtype().kind() == 'i' && origin.dtype().itemsize() == 8 &&
        origin.ndim() == 1 && origin.shape(0) == 3)) {
    throw std::invalid_argument("origin must be 3 int64 values");
  }
  const std::int64_t *origin_ptr =
      static_cast<const std::int64_t *>(origin.data());
  for (int a = 0; a < 3; ++a) {
    peak.origin[a] = origin_ptr[a];
    peak.extent[a] = allowed.shape(a);
  }
  const std::size_t table_size = static_cast<std::size_t>(allowed.size());
  if (table_size >= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
    throw std::invalid_argument("allowed has more than 2^31 - 1 lattice points");
  }
  // table[1 + i] = allowed (0 or 1) of flat index i; table[0] = 0.
  std::vector<std::uint8_t> table(table_size + 1, 0);
  for (std::size_t i = 0; i < table_size; ++i) table[i + 1] = allowed_ptr[i] != 0;
  if (!(cutoff > 0)) throw std::invalid_argument("cutoff must be positive");
  peak.cutoff2 = cutoff * cutoff;
  const std::uint8_t *invalid_ptr = nullptr;
  if (!invalid.is_none()) {
    invalid_ptr = mask_pointer(invalid, std::vector<py::ssize_t>{rows, columns}, "invalid");
  }
  py::array mask = uint8_output(out, {frames, rows, columns}, "out");
  std::uint8_t *out_ptr = static_cast<std::uint8_t *>(mask.mutable_data());
  {
    py::gil_scoped_release release;
    mask_ellipsoids(s1_ptr, static_cast<std::size_t>(frames),
                    static_cast<std::size_t>(rows), static_cast<std::size_t>(columns),
                    s0_all, M_all, peak, table.data(), invalid_ptr, invert, out_ptr);
  }
  return mask;
}

}  // namespace

void bind_diffuse(py::module_ &m) {
  m.def("integrate_voxels", &integrate_voxels, py::arg("data"), py::arg("s1"),
        py::arg("s0"), py::arg("matrices"), py::arg("subdivide"),
        py::arg("phi"), py::arg("seconds"), py::arg("valid") = py::none(),
        py::arg("exclude") = py::none(), py::arg("row0") = 0.0,
        py::arg("column0") = 0.0,
        R"doc(Bin every usable pixel of a chunk into reciprocal-space voxels.

Per pixel: hkl = matrices[f] . (s1[:, r, c] - s0[f]); voxel index
round(hkl * subdivide) (halves round up); the voxel's sums gain the pixel's
counts, 1 pixel, the frame's seconds, phi, row (row0 + r) and column
(column0 + c). GIL released.

Parameters
----------
data : ndarray (frames, rows, columns), any of u1 u2 u4 i1 i2 i4 i8 f4 f8
s1 : float64 (3, rows, columns), inverse Angstrom, pixel centres (x, y, z planes)
s0 : float64 (frames, 3), inverse Angstrom, per frame
matrices : float64 (frames, 3, 3)
subdivide : float64 (3,), voxels per reciprocal lattice unit along h, k, l
phi : float64 (frames,), degrees at the frame centres
seconds : float64 (frames,), exposure time of each frame
valid : bool/uint8 like data, optional; 0 skips a pixel (detector mask)
exclude : bool/uint8 like data, optional; nonzero skips a pixel (peak mask)
row0, column0 : float, panel row/column of the chunk's first pixel

Returns
-------
dict with index (n, 3) int32, pixels int64, counts, seconds, phi_sum,
iy_sum, ix_sum float64 (sums over the voxel's pixels).
)doc");
  m.def("mask_peak_ellipsoids", &mask_peak_ellipsoids, py::arg("s1"),
        py::arg("s0"), py::arg("matrices"), py::arg("centre"),
        py::arg("whitening"), py::arg("cutoff"), py::arg("allowed"),
        py::arg("origin"), py::arg("invalid") = py::none(),
        py::arg("invert") = false, py::arg("out") = py::none(),
        R"doc(Pixels inside the peak ellipsoid of an allowed lattice point.

Per pixel and frame: hkl = matrices[f] . (s1[:, r, c] - s0[f]), nearest lattice
point round(hkl), offset = hkl - round(hkl) - centre; inside when
|whitening . offset|^2 < cutoff^2 and allowed[round(hkl) - origin] is
nonzero. GIL released.

Parameters
----------
s1 : float64 (3, rows, columns), inverse Angstrom, pixel centres (x, y, z planes)
s0 : float64 (frames, 3); matrices : float64 (frames, 3, 3)
centre : float64 (3,), r.l.u.; whitening : float64 (3, 3); cutoff : sigmas
allowed : bool/uint8 3-d table of allowed lattice points; origin : int64 (3,)
invalid : bool/uint8 (rows, columns), optional: set to 1 in every frame
    (detector mask, hot pixels), after any inversion
invert : bool
    1 outside the ellipsoids instead (keep only Bragg peaks)
out : uint8 (frames, rows, columns), optional, C-contiguous: filled and
    returned instead of a new array

Returns
-------
uint8 (frames, rows, columns): 1 inside a peak ellipsoid (or outside, with
invert) or invalid, else 0.
)doc");
}

}  // namespace dials_diffuse
