// Diffuse-scattering kernels: per-pixel Miller indices fused with binning
// into reciprocal-space voxels, and the Bragg-peak ellipsoid mask.
//
// Geometry comes in as plain buffers, so the kernels know nothing of dxtbx
// (nor of Python: the glue is in bindings_diffuse.cpp):
// s1 of every pixel centre of the chunk as three component planes
// (3 x rows x columns, inverse Angstrom: vector loads, no rearranging per call), s0 of every frame (frames x 3, for scan-varying beams), and one
// matrix per frame M_f (frames x 3 x 3) with hkl = M_f . (s1 - s0_f), i.e.
// M_f = (S R(axis, phi_f) F A_f)^-1 evaluated at the frame centre (the dxtbx
// convention; the Python side builds M_f and s0_f).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "clones.h"

namespace dials_diffuse {

// Voxel indices (h, k, l) are packed into one 64-bit key, 21 bits per axis:
// ((h + offset) << 42) | ((k + offset) << 21) | (l + offset), |index| < limit.
constexpr std::int32_t voxel_limit = (1 << 20) - 1;
constexpr std::int64_t voxel_offset = std::int64_t{1} << 20;

// Index `axis` (0 = h, 1 = k, 2 = l) of a packed voxel key.
inline std::int32_t unpack_voxel(std::int64_t key, int axis) {
  return static_cast<std::int32_t>(((key >> (42 - 21 * axis)) & ((1 << 21) - 1)) -
                                   voxel_offset);
}

// Call visit(frame, row, sx, sy, sz) for every frame and row of a chunk,
// where sx, sy, sz are the row's pixels in the three s1 planes (3, rows,
// columns). The rows are taken in blocks whose s1 fits in the L2 cache, each
// block visited by every frame in turn, so the per-frame data of a block are
// read as one contiguous stream while the block's s1 stays cached.
template <typename Visit>
void for_each_row(const double *s1, std::size_t frames, std::size_t rows,
                  std::size_t columns, Visit &&visit) {
  const std::size_t block =
      std::max<std::size_t>(1, (256 * 1024) / (3 * sizeof(double) * columns));
  const std::size_t plane = rows * columns;
  for (std::size_t first = 0; first < rows; first += block) {
    const std::size_t last = std::min(rows, first + block);
    for (std::size_t f = 0; f < frames; ++f) {
      for (std::size_t r = first; r < last; ++r) {
        const double *sx = s1 + r * columns;
        visit(f, r, sx, sx + plane, sx + 2 * plane);
      }
    }
  }
}

// An affine map from s1 to scaled Miller indices for one frame:
// x = A s1 + b = subdivide * (M (s1 - s0)) + 0.5, so that floor(x) is the
// voxel index (halves rounding up). With subdivide 1 and no 0.5 it gives hkl.
struct FrameMap {
  double A[9], b[3];

  FrameMap(const double *M, const double *s0, const double *subdivide,
           double shift) {
    for (int a = 0; a < 3; ++a) {
      const double scale = subdivide == nullptr ? 1.0 : subdivide[a];
      b[a] = shift;
      for (int j = 0; j < 3; ++j) {
        A[3 * a + j] = scale * M[3 * a + j];
        b[a] -= A[3 * a + j] * s0[j];
      }
    }
  }
};

// The packed voxel key of every pixel of one row for one frame:
// floor(A s1 + b) per axis. Returns false if any scaled index is out of
// range (|.| >= 2^20) or not finite.
DIALS_DIFFUSE_CLONES
inline bool voxel_keys_row(const double *sx, const double *sy, const double *sz,
                           std::size_t n, const FrameMap &map,
                           std::int64_t *keys) {
  const double limit = static_cast<double>(voxel_limit);
  const double *A = map.A;
  std::int64_t bad = 0;
  for (std::size_t c = 0; c < n; ++c) {
    std::int64_t key = 0;
    for (int a = 0; a < 3; ++a) {
      double scaled = A[3 * a] * sx[c] + A[3 * a + 1] * sy[c] +
                      A[3 * a + 2] * sz[c] + map.b[a];
      const std::int64_t in_range = std::fabs(scaled) < limit;  // 0 for NaN
      bad |= in_range ^ 1;
      scaled = in_range ? std::floor(scaled) : 0.0;
      key = (key << 21) |
            (static_cast<std::int64_t>(static_cast<std::int32_t>(scaled)) +
             voxel_offset);
    }
    keys[c] = key;
  }
  return bad == 0;
}

// Sums of one voxel.
struct VoxelSums {
  std::int64_t key;  // packed voxel index round(hkl * subdivide)
  std::int64_t pixels;
  double counts, seconds, phi, iy, ix;
};

// Open-addressing hash table from packed voxel key to its sums.
class VoxelTable {
 public:
  VoxelTable() { rehash(1 << 12); }

  VoxelSums &at(std::int64_t key) {
    std::size_t slot = hash(key);
    while (true) {
      const std::int64_t index = slots_[slot];
      if (index < 0) break;
      if (keys_[slot] == key) return sums_[static_cast<std::size_t>(index)];
      slot = (slot + 1) & (slots_.size() - 1);
    }
    if (2 * (sums_.size() + 1) > slots_.size()) {
      rehash(2 * slots_.size());
      return at(key);
    }
    slots_[slot] = static_cast<std::int64_t>(sums_.size());
    keys_[slot] = key;
    sums_.push_back(VoxelSums{key, 0, 0.0, 0.0, 0.0, 0.0, 0.0});
    return sums_.back();
  }

  const std::vector<VoxelSums> &sums() const { return sums_; }

 private:
  std::size_t hash(std::int64_t key) const {
    return static_cast<std::size_t>(
        (static_cast<std::uint64_t>(key) * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  void rehash(std::size_t capacity) {
    slots_.assign(capacity, -1);
    keys_.assign(capacity, 0);
    shift_ = 64;
    for (std::size_t c = capacity; c > 1; c >>= 1) --shift_;
    for (std::size_t i = 0; i < sums_.size(); ++i) {
      std::size_t slot = hash(sums_[i].key);
      while (slots_[slot] >= 0) slot = (slot + 1) & (capacity - 1);
      slots_[slot] = static_cast<std::int64_t>(i);
      keys_[slot] = sums_[i].key;
    }
  }

  std::vector<std::int64_t> slots_;
  std::vector<std::int64_t> keys_;
  std::vector<VoxelSums> sums_;
  int shift_ = 52;
};

// Key of pixels that are not to be integrated (masked, excluded).
constexpr std::int64_t unusable_key = -1;

// Replace the key of every pixel that is invalid (valid == 0) or excluded
// (exclude != 0) by unusable_key; either mask may be absent (nullptr).
DIALS_DIFFUSE_CLONES
inline void drop_unusable(const std::uint8_t *valid, const std::uint8_t *exclude,
                          std::size_t n, std::int64_t *keys) {
  if (valid != nullptr && exclude != nullptr) {
    for (std::size_t c = 0; c < n; ++c) {
      keys[c] = (valid[c] != 0) & (exclude[c] == 0) ? keys[c] : unusable_key;
    }
  } else if (valid != nullptr) {
    for (std::size_t c = 0; c < n; ++c) {
      keys[c] = valid[c] != 0 ? keys[c] : unusable_key;
    }
  } else if (exclude != nullptr) {
    for (std::size_t c = 0; c < n; ++c) {
      keys[c] = exclude[c] == 0 ? keys[c] : unusable_key;
    }
  }
}

// Whether any pixel of a row is usable (valid and not excluded): rows
// without one are skipped (most rows, when a bragg=True mask keeps only the
// peaks). Either mask may be absent (nullptr).
DIALS_DIFFUSE_CLONES
inline bool any_usable(const std::uint8_t *valid, const std::uint8_t *exclude,
                       std::size_t n) {
  if (exclude == nullptr) {
    if (valid == nullptr) return n > 0;
    std::uint8_t any = 0;
    for (std::size_t c = 0; c < n; ++c) any |= valid[c];
    return any != 0;
  }
  std::uint8_t any = 0;
  for (std::size_t c = 0; c < n; ++c) {
    any |= (valid == nullptr ? 1 : (valid[c] != 0)) & (exclude[c] == 0);
  }
  return any != 0;
}

// The end of the run of keys equal to `key` that continues at `c`: whole
// blocks of 8 compared at once (vectorised), then one by one.
DIALS_DIFFUSE_CLONES
inline std::size_t run_end(const std::int64_t *keys, std::size_t c, std::size_t n,
                           std::int64_t key) {
  while (c + 8 <= n) {
    std::int64_t differ = 0;
    for (std::size_t j = 0; j < 8; ++j) differ |= keys[c + j] ^ key;
    if (differ != 0) break;
    c += 8;
  }
  while (c < n && keys[c] == key) ++c;
  return c;
}

// Integer pixels are summed exactly in 64-bit integers, others in double.
template <typename T>
using CountSum =
    typename std::conditional<std::is_integral<T>::value, std::int64_t, double>::type;

// Add the pixels of one row to their voxels. Consecutive pixels with the
// same key form a run, added to the table once: its pixel count, counts,
// and column sum (an arithmetic series). Runs of unusable pixels are skipped.
template <typename T>
void accumulate_row(const T *values, const std::int64_t *keys, std::size_t n,
                    double phi, double seconds, double iy, double column0,
                    VoxelTable &table) {
  std::size_t c = 0;
  while (c < n) {
    const std::size_t start = c;
    const std::int64_t key = keys[c];
    c = run_end(keys, c + 1, n, key);
    if (key == unusable_key) continue;
    CountSum<T> counts = 0;
    for (std::size_t i = start; i < c; ++i) counts += values[i];
    VoxelSums &sums = table.at(key);
    const std::size_t pixels = c - start;
    const double count = static_cast<double>(pixels);
    sums.pixels += static_cast<std::int64_t>(pixels);
    sums.counts += static_cast<double>(counts);
    sums.seconds += count * seconds;
    sums.phi += count * phi;
    sums.iy += count * iy;
    // Columns start .. c - 1: count * column0 + (start + c - 1) * count / 2.
    sums.ix += count * column0 +
               static_cast<double>((start + c - 1) * pixels / 2);
  }
}

template <typename T>
void bin_pixels(const T *data, const std::uint8_t *valid,
                const std::uint8_t *exclude, std::size_t frames,
                std::size_t rows, std::size_t columns, const double *s1,
                const double *s0, const double *matrices,
                const double *subdivide, const double *phi,
                const double *seconds, double row0, double column0,
                VoxelTable &table) {
  const std::size_t frame_size = rows * columns;
  std::vector<std::int64_t> keys(columns);
  std::vector<FrameMap> maps;
  for (std::size_t f = 0; f < frames; ++f) {
    maps.emplace_back(matrices + 9 * f, s0 + 3 * f, subdivide, 0.5);
  }
  for_each_row(s1, frames, rows, columns,
               [&](std::size_t f, std::size_t r, const double *sx,
                   const double *sy, const double *sz) {
                 const std::size_t start = f * frame_size + r * columns;
                 const std::uint8_t *row_valid =
                     valid == nullptr ? nullptr : valid + start;
                 const std::uint8_t *row_exclude =
                     exclude == nullptr ? nullptr : exclude + start;
                 if (!any_usable(row_valid, row_exclude, columns)) return;
                 if (!voxel_keys_row(sx, sy, sz, columns, maps[f], keys.data())) {
                   throw std::invalid_argument(
                       "Miller index out of range (|h * subdivide| >= 2^20) "
                       "or not finite: check the geometry");
                 }
                 drop_unusable(row_valid, row_exclude, columns, keys.data());
                 accumulate_row(data + start, keys.data(), columns, phi[f],
                                seconds[f], row0 + static_cast<double>(r),
                                column0, table);
               });
}

// The peak ellipsoid of a lattice point, and the table of allowed points.
struct PeakShape {
  double centre[3];  // mean offset from the lattice point (r.l.u.)
  double W[9];       // whitening: |W (offset - centre)| is in sigmas
  double cutoff2;    // squared cutoff in sigmas
  std::int64_t origin[3], extent[3];  // allowed[h - origin_h, ...] table
};

// For every pixel of one row in one frame: 1 + the flat index into the
// allowed table of its nearest lattice point (round(hkl), halves up) when the
// pixel lies inside that point's peak ellipsoid and the point is in the
// table, else 0.
DIALS_DIFFUSE_CLONES
inline void ellipsoid_candidates_row(const double *sx, const double *sy,
                                     const double *sz, std::size_t n,
                                     const FrameMap &map, const PeakShape &peak,
                                     std::int32_t *candidates) {
  const double *A = map.A;
  const double *W = peak.W;
  for (std::size_t c = 0; c < n; ++c) {
    double offset[3];
    std::int64_t cell[3];
    std::int64_t in_table = 1;
    for (int a = 0; a < 3; ++a) {
      const double hkl = A[3 * a] * sx[c] + A[3 * a + 1] * sy[c] +
                         A[3 * a + 2] * sz[c] + map.b[a];
      const double nearest = std::floor(hkl + 0.5);
      offset[a] = hkl - nearest - peak.centre[a];
      // Lattice points beyond +-2^30 are outside any table; keeps the
      // conversion defined (and NaN maps to the outside too).
      const double bounded = std::fabs(nearest) < 1073741824.0 ? nearest : -1e9;
      cell[a] = static_cast<std::int64_t>(static_cast<std::int32_t>(bounded)) -
                peak.origin[a];
      in_table &= (cell[a] >= 0) & (cell[a] < peak.extent[a]);
    }
    double distance2 = 0.0;
    for (int a = 0; a < 3; ++a) {
      const double w = W[3 * a] * offset[0] + W[3 * a + 1] * offset[1] +
                       W[3 * a + 2] * offset[2];
      distance2 += w * w;
    }
    const std::int64_t index =
        (cell[0] * peak.extent[1] + cell[1]) * peak.extent[2] + cell[2];
    candidates[c] = static_cast<std::int32_t>(
        (in_table & (distance2 < peak.cutoff2)) ? index + 1 : 0);
  }
}

// One row of the mask: table[candidate] (table[0] = 0: not in an allowed
// ellipsoid), flipped by `flip`, OR the row's invalid pixels (if given).
DIALS_DIFFUSE_CLONES
inline void mask_row(const std::int32_t *candidates, std::size_t n,
                     const std::uint8_t *table, std::uint8_t flip,
                     const std::uint8_t *invalid, std::uint8_t *out) {
  if (invalid == nullptr) {
    for (std::size_t c = 0; c < n; ++c) out[c] = table[candidates[c]] ^ flip;
  } else {
    for (std::size_t c = 0; c < n; ++c) {
      out[c] = (table[candidates[c]] ^ flip) | (invalid[c] != 0);
    }
  }
}

// Fill `out` (frames x rows x columns, C order) with 1 where a pixel lies
// inside the peak ellipsoid of an allowed lattice point (see `PeakShape`,
// table[1 + flat index] = allowed, table[0] = 0), or outside with `invert`;
// then 1 wherever invalid[row, column] is nonzero (nullptr: none). s1 are
// the three component planes (3 x rows x columns), s0 (frames x 3) and M
// (frames x 3 x 3) per frame.
inline void mask_ellipsoids(const double *s1, std::size_t frames, std::size_t rows,
                            std::size_t columns, const double *s0,
                            const double *matrices, const PeakShape &peak,
                            const std::uint8_t *table, const std::uint8_t *invalid,
                            bool invert, std::uint8_t *out) {
  const std::size_t frame_size = rows * columns;
  std::vector<FrameMap> maps;
  for (std::size_t f = 0; f < frames; ++f) {
    maps.emplace_back(matrices + 9 * f, s0 + 3 * f, nullptr, 0.0);
  }
  const std::uint8_t flip = invert ? 1 : 0;
  std::vector<std::int32_t> candidates(columns);
  for_each_row(s1, frames, rows, columns,
               [&](std::size_t f, std::size_t r, const double *sx, const double *sy,
                   const double *sz) {
                 ellipsoid_candidates_row(sx, sy, sz, columns, maps[f], peak,
                                          candidates.data());
                 mask_row(candidates.data(), columns, table, flip,
                          invalid == nullptr ? nullptr : invalid + r * columns,
                          out + f * frame_size + r * columns);
               });
}

}  // namespace dials_diffuse
