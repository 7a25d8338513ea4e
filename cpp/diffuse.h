// Diffuse-scattering kernels: per-pixel Miller indices fused with binning
// into reciprocal-space voxels, and the Bragg-peak ellipsoid mask.
//
// Geometry comes in as numpy buffers, so the kernels know nothing of dxtbx:
// s1 of every pixel centre of the chunk (rows x columns x 3, inverse
// Angstrom), s0 of every frame (frames x 3, for scan-varying beams), and one
// matrix per frame M_f (frames x 3 x 3) with hkl = M_f . (s1 - s0_f), i.e.
// M_f = (S R(axis, phi_f) F A_f)^-1 evaluated at the frame centre (the dxtbx
// convention; the Python side builds M_f and s0_f).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common.h"

namespace dials_diffuse {

// Raise ValueError unless `array` is float64, C-contiguous, with `shape`
// (-1 matches any extent).
inline const double *double_buffer(const py::array &array, const char *name,
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

// A (frames, rows, columns) byte mask checked against the data's shape.
inline const std::uint8_t *frame_mask(const py::object &mask,
                                      const py::array &data, const char *name) {
  if (mask.is_none()) return nullptr;
  if (!py::isinstance<py::array>(mask)) {
    throw std::invalid_argument(std::string(name) +
                                " must be a numpy array or None");
  }
  py::array array = mask.cast<py::array>();
  require_contiguous(array, name);
  require_same_shape(array, name, data, "data");
  const char kind = array.dtype().kind();
  if (!((kind == 'b' || kind == 'u') && array.dtype().itemsize() == 1)) {
    throw std::invalid_argument(std::string(name) +
                                " must have dtype bool or uint8, not " +
                                dtype_name(array.dtype()));
  }
  return static_cast<const std::uint8_t *>(array.data());
}

// Sums of one voxel.
struct VoxelSums {
  std::int32_t h, k, l;  // voxel index: round(hkl * subdivide)
  std::int64_t pixels;
  double counts, seconds, phi, iy, ix;
};

// Open-addressing hash table from packed voxel index to its sums.
class VoxelTable {
 public:
  VoxelTable() { rehash(1 << 12); }

  VoxelSums &at(std::int32_t h, std::int32_t k, std::int32_t l) {
    const std::uint64_t key = pack(h, k, l);
    std::size_t slot = hash(key);
    while (true) {
      const std::int64_t index = slots_[slot];
      if (index < 0) break;
      if (keys_[slot] == key) return sums_[static_cast<std::size_t>(index)];
      slot = (slot + 1) & (slots_.size() - 1);
    }
    if (2 * (sums_.size() + 1) > slots_.size()) {
      rehash(2 * slots_.size());
      return at(h, k, l);
    }
    slots_[slot] = static_cast<std::int64_t>(sums_.size());
    keys_[slot] = key;
    sums_.push_back(VoxelSums{h, k, l, 0, 0.0, 0.0, 0.0, 0.0, 0.0});
    return sums_.back();
  }

  const std::vector<VoxelSums> &sums() const { return sums_; }

  static constexpr std::int32_t limit = (1 << 20) - 1;

 private:
  static std::uint64_t pack(std::int32_t h, std::int32_t k, std::int32_t l) {
    const std::uint64_t offset = 1u << 20;
    return ((static_cast<std::uint64_t>(h) + offset) << 42) |
           ((static_cast<std::uint64_t>(k) + offset) << 21) |
           (static_cast<std::uint64_t>(l) + offset);
  }
  std::size_t hash(std::uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  void rehash(std::size_t capacity) {
    slots_.assign(capacity, -1);
    keys_.assign(capacity, 0);
    shift_ = 64;
    for (std::size_t c = capacity; c > 1; c >>= 1) --shift_;
    for (std::size_t i = 0; i < sums_.size(); ++i) {
      const std::uint64_t key = pack(sums_[i].h, sums_[i].k, sums_[i].l);
      std::size_t slot = hash(key);
      while (slots_[slot] >= 0) slot = (slot + 1) & (capacity - 1);
      slots_[slot] = static_cast<std::int64_t>(i);
      keys_[slot] = key;
    }
  }

  std::vector<std::int64_t> slots_;
  std::vector<std::uint64_t> keys_;
  std::vector<VoxelSums> sums_;
  int shift_ = 52;
};

// floor() without a libm call (the x86-64 baseline has no SSE4.1 round).
inline double fast_floor(double value) {
  const double truncated = static_cast<double>(static_cast<std::int64_t>(value));
  return truncated > value ? truncated - 1.0 : truncated;
}

inline std::int32_t voxel_index(double value, double subdivide) {
  const double scaled = value * subdivide + 0.5;
  if (!(std::fabs(scaled) < VoxelTable::limit)) {
    throw std::invalid_argument(
        "Miller index out of range (|h * subdivide| >= 2^20) or not finite: "
        "check the geometry");
  }
  return static_cast<std::int32_t>(fast_floor(scaled));
}

// Pixels of one row that fall into the same voxel one after another, summed
// in registers and added to the table when the voxel changes (or the row ends).
struct VoxelRun {
  std::int32_t h = 0, k = 0, l = 0;
  std::int64_t pixels = 0;
  double counts = 0.0, columns = 0.0;

  void flush(VoxelTable &table, double phi, double seconds, double iy,
             double column0) {
    if (pixels == 0) return;
    VoxelSums &sums = table.at(h, k, l);
    const double n = static_cast<double>(pixels);
    sums.pixels += pixels;
    sums.counts += counts;
    sums.seconds += n * seconds;
    sums.phi += n * phi;
    sums.iy += n * iy;
    sums.ix += n * column0 + columns;
    pixels = 0;
    counts = 0.0;
    columns = 0.0;
  }
};

template <typename T>
void bin_pixels(const T *data, const std::uint8_t *valid,
                const std::uint8_t *exclude, std::size_t frames,
                std::size_t rows, std::size_t columns, const double *s1,
                const double *s0, const double *matrices,
                const double *subdivide, const double *phi,
                const double *seconds, double row0, double column0,
                VoxelTable &table) {
  const std::size_t frame_size = rows * columns;
  const double sh = subdivide[0], sk = subdivide[1], sl = subdivide[2];
  for (std::size_t f = 0; f < frames; ++f) {
    const double *M = matrices + 9 * f;
    const double *s0_f = s0 + 3 * f;
    const double frame_phi = phi[f];
    const double frame_seconds = seconds[f];
    for (std::size_t r = 0; r < rows; ++r) {
      const double iy = row0 + static_cast<double>(r);
      VoxelRun run;
      const std::size_t row_start = f * frame_size + r * columns;
      const double *s1_row = s1 + 3 * r * columns;
      for (std::size_t c = 0; c < columns; ++c) {
        const std::size_t i = row_start + c;
        if ((valid != nullptr && valid[i] == 0) ||
            (exclude != nullptr && exclude[i] != 0)) {
          continue;
        }
        const double d0 = s1_row[3 * c] - s0_f[0];
        const double d1 = s1_row[3 * c + 1] - s0_f[1];
        const double d2 = s1_row[3 * c + 2] - s0_f[2];
        const std::int32_t h =
            voxel_index(M[0] * d0 + M[1] * d1 + M[2] * d2, sh);
        const std::int32_t k =
            voxel_index(M[3] * d0 + M[4] * d1 + M[5] * d2, sk);
        const std::int32_t l =
            voxel_index(M[6] * d0 + M[7] * d1 + M[8] * d2, sl);
        if (h != run.h || k != run.k || l != run.l) {
          run.flush(table, frame_phi, frame_seconds, iy, column0);
          run.h = h;
          run.k = k;
          run.l = l;
        }
        run.pixels += 1;
        run.counts += static_cast<double>(data[i]);
        run.columns += static_cast<double>(c);
      }
      run.flush(table, frame_phi, frame_seconds, iy, column0);
    }
  }
}

struct ChunkGeometry {
  std::size_t frames, rows, columns;
  const double *s1, *s0, *matrices;
};

inline ChunkGeometry check_geometry(const py::array &data, const py::array &s1,
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
  g.s1 = double_buffer(s1, "s1", {data.shape(1), data.shape(2), 3});
  g.s0 = double_buffer(s0, "s0", {data.shape(0), 3});
  g.matrices = double_buffer(matrices, "matrices", {data.shape(0), 3, 3});
  return g;
}

// Python: integrate_voxels(data, s1, s0, matrices, subdivide, phi, seconds,
// valid=None, exclude=None, row0=0, column0=0) -> dict of columns.
inline py::dict integrate_voxels(const py::array &data, const py::array &s1,
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
  const std::uint8_t *valid_ptr = frame_mask(valid, data, "valid");
  const std::uint8_t *exclude_ptr = frame_mask(exclude, data, "exclude");
  VoxelTable table;
  dispatch_pixel_dtype(data, "data", [&](auto tag) {
    using T = decltype(tag);
    const T *values = static_cast<const T *>(data.data());
    py::gil_scoped_release release;
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
    index_ptr[3 * i] = v.h;
    index_ptr[3 * i + 1] = v.k;
    index_ptr[3 * i + 2] = v.l;
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

// Python: mask_peak_ellipsoids(s1, s0, matrices, frames, centre, whitening,
// cutoff, allowed, origin) -> uint8 (frames, rows, columns), 1 where the
// pixel's offset from its nearest lattice point (rounded hkl) lies inside the
// peak ellipsoid |W (dhkl - centre)| < cutoff and that lattice point is
// allowed (allowed[h - origin_h, k - origin_k, l - origin_l] != 0; lattice
// points outside the table are not allowed).
inline py::array_t<std::uint8_t> mask_peak_ellipsoids(
    const py::array &s1, const py::array &s0, const py::array &matrices,
    const py::array &centre, const py::array &whitening, double cutoff,
    const py::array &allowed, const py::array &origin) {
  require_contiguous(matrices, "matrices");
  if (matrices.ndim() != 3) {
    throw std::invalid_argument("matrices must be (frames, 3, 3)");
  }
  const py::ssize_t frames = matrices.shape(0);
  const double *M_all = double_buffer(matrices, "matrices", {frames, 3, 3});
  require_contiguous(s1, "s1");
  if (s1.ndim() != 3) throw std::invalid_argument("s1 must be (rows, columns, 3)");
  const py::ssize_t rows = s1.shape(0), columns = s1.shape(1);
  const double *s1_ptr = double_buffer(s1, "s1", {rows, columns, 3});
  const double *s0_all = double_buffer(s0, "s0", {frames, 3});
  const double *centre_ptr = double_buffer(centre, "centre", {3});
  const double *W = double_buffer(whitening, "whitening", {3, 3});
  require_contiguous(allowed, "allowed");
  if (allowed.ndim() != 3 || allowed.dtype().itemsize() != 1) {
    throw std::invalid_argument("allowed must be a 3-d bool or uint8 array");
  }
  const std::uint8_t *allowed_ptr =
      static_cast<const std::uint8_t *>(allowed.data());
  const std::array<std::int64_t, 3> extent{allowed.shape(0), allowed.shape(1),
                                           allowed.shape(2)};
  require_contiguous(origin, "origin");
  if (!(origin.dtype().kind() == 'i' && origin.dtype().itemsize() == 8 &&
        origin.ndim() == 1 && origin.shape(0) == 3)) {
    throw std::invalid_argument("origin must be 3 int64 values");
  }
  const std::int64_t *origin_ptr =
      static_cast<const std::int64_t *>(origin.data());
  if (!(cutoff > 0)) throw std::invalid_argument("cutoff must be positive");
  py::array_t<std::uint8_t> mask({frames, rows, columns});
  std::uint8_t *out = mask.mutable_data();
  {
    py::gil_scoped_release release;
    const double cutoff2 = cutoff * cutoff;
    const std::size_t frame_size = static_cast<std::size_t>(rows * columns);
    for (py::ssize_t f = 0; f < frames; ++f) {
      const double *M = M_all + 9 * f;
      const double *s0_ptr = s0_all + 3 * f;
      std::uint8_t *frame_out = out + static_cast<std::size_t>(f) * frame_size;
      for (std::size_t p = 0; p < frame_size; ++p) {
        const double d0 = s1_ptr[3 * p] - s0_ptr[0];
        const double d1 = s1_ptr[3 * p + 1] - s0_ptr[1];
        const double d2 = s1_ptr[3 * p + 2] - s0_ptr[2];
        const double hkl[3] = {M[0] * d0 + M[1] * d1 + M[2] * d2,
                               M[3] * d0 + M[4] * d1 + M[5] * d2,
                               M[6] * d0 + M[7] * d1 + M[8] * d2};
        double offset[3];
        std::int64_t cell[3];
        bool inside_table = true;
        for (int a = 0; a < 3; ++a) {
          const double nearest = fast_floor(hkl[a] + 0.5);
          offset[a] = hkl[a] - nearest - centre_ptr[a];
          cell[a] = static_cast<std::int64_t>(nearest) - origin_ptr[a];
          inside_table = inside_table && cell[a] >= 0 && cell[a] < extent[a];
        }
        std::uint8_t inside = 0;
        if (inside_table &&
            allowed_ptr[(cell[0] * extent[1] + cell[1]) * extent[2] + cell[2]]) {
          double d2sum = 0.0;
          for (int a = 0; a < 3; ++a) {
            const double w = W[3 * a] * offset[0] + W[3 * a + 1] * offset[1] +
                             W[3 * a + 2] * offset[2];
            d2sum += w * w;
          }
          inside = d2sum < cutoff2 ? 1 : 0;
        }
        frame_out[p] = inside;
      }
    }
  }
  return mask;
}

inline void bind_diffuse(py::module_ &m) {
  m.def("integrate_voxels", &integrate_voxels, py::arg("data"), py::arg("s1"),
        py::arg("s0"), py::arg("matrices"), py::arg("subdivide"),
        py::arg("phi"), py::arg("seconds"), py::arg("valid") = py::none(),
        py::arg("exclude") = py::none(), py::arg("row0") = 0.0,
        py::arg("column0") = 0.0,
        R"doc(Bin every usable pixel of a chunk into reciprocal-space voxels.

Per pixel: hkl = matrices[f] . (s1[r, c] - s0[f]); voxel index
round(hkl * subdivide) (halves round up); the voxel's sums gain the pixel's
counts, 1 pixel, the frame's seconds, phi, row (row0 + r) and column
(column0 + c). GIL released.

Parameters
----------
data : ndarray (frames, rows, columns), any of u1 u2 u4 i1 i2 i4 i8 f4 f8
s1 : float64 (rows, columns, 3), inverse Angstrom, pixel centres
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
        py::arg("origin"),
        R"doc(Pixels inside the peak ellipsoid of an allowed lattice point.

Per pixel and frame: hkl = matrices[f] . (s1[r, c] - s0[f]), nearest lattice
point round(hkl), offset = hkl - round(hkl) - centre; inside when
|whitening . offset|^2 < cutoff^2 and allowed[round(hkl) - origin] is
nonzero. GIL released.

Returns
-------
uint8 (frames, rows, columns): 1 inside a peak ellipsoid, else 0.
)doc");
}

}  // namespace dials_diffuse
