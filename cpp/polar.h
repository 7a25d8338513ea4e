// Polar (q, phi) resampling of detector frames: building the sparse map and
// applying it. Pure kernels on raw pointers (no Python); the pybind11 glue
// is in bindings_polar.cpp.
//
// Pixels of a frame are flattened panel after panel (panel p starts at
// offsets[p]; row-major within a panel). Pixel coordinates (fast, slow) are
// in pixels with pixel centres at i + 0.5 (the DIALS convention).
//
// Three layouts of a map (output bins: q row-major, phi fastest):
//
// - nearest: entry k gives bin bins[k] the pixel index[k] that contains its
//   sample, -1 when the sample is off the detector (8 bytes per bin).
// - bilinear: entry k gives bin bins[k] the pixel index[k] at the
//   lower-left of the four around its sample (-1: off the detector), and
//   fractions[2k], fractions[2k+1] the sample's offsets (tx, ty) in [0, 1]
//   from that pixel's centre; the other three pixels are index + 1,
//   index + stride, index + stride + 1 (every panel has `stride` columns).
//   Weights (1-tx)(1-ty), tx(1-ty), (1-tx)ty, tx ty; 16 bytes per bin.
//   Entries of both are sorted by pixel (see below).
// - csr: output bin b is sum_k weights[k] * pixel[indices[k]] for k in
//   indptr[b] .. indptr[b+1]-1, any number of pixels per bin (oversampled
//   maps: the mean over sub-samples, duplicate pixels merged).
//
// A bin is valid when it is on the detector and every pixel it uses with a
// non-zero weight is valid; an invalid bin is written as 0 and flagged 0 in
// the output mask, so masked pixels (gaps, beam stop, bad pixels) carry over
// to the polar mask.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dials_diffuse {

// ---------------------------------------------------------------- applying

// Nearest and bilinear maps are stored sorted by pixel: entry k is output
// bin bins[k], whose (lower-left) pixel index[k] never decreases with k. A
// frame is then read once, in order, as a stream, and the outputs (a few
// bytes per bin, in cache) are written in scattered order.

// Nearest layout; every index is -1 or a pixel of the frame and every bin
// is below n_bins (checked by the caller once per map).
template <typename T, bool HasValid>
void polar_apply_nearest(const std::int32_t *bins, const std::int32_t *index,
                         std::size_t n_entries, std::size_t n_bins,
                         const T *frames, const std::uint8_t *valid,
                         std::size_t n_frames, std::size_t n_pixels, float *out,
                         std::uint8_t *out_valid) {
  for (std::size_t f = 0; f < n_frames; ++f) {
    const T *frame = frames + f * n_pixels;
    const std::uint8_t *frame_valid = HasValid ? valid + f * n_pixels : nullptr;
    float *o = out + f * n_bins;
    std::uint8_t *ov = out_valid + f * n_bins;
    for (std::size_t k = 0; k < n_entries; ++k) {
      const std::int32_t p = index[k];
      const std::size_t safe = p >= 0 ? static_cast<std::size_t>(p) : 0;
      unsigned ok = p >= 0;
      if (HasValid) ok &= frame_valid[safe] != 0;
      o[bins[k]] = ok ? static_cast<float>(frame[safe]) : 0.0f;
      ov[bins[k]] = static_cast<std::uint8_t>(ok);
    }
  }
}

// Bilinear layout; every index is -1 or a pixel p with p + stride + 1
// inside the frame and every bin below n_bins (checked by the caller once
// per map). A corner of zero weight does not need to be valid.
template <typename T, bool HasValid>
void polar_apply_bilinear(const std::int32_t *bins, const std::int32_t *index,
                          const float *fractions, std::size_t stride,
                          std::size_t n_entries, std::size_t n_bins,
                          const T *frames, const std::uint8_t *valid,
                          std::size_t n_frames, std::size_t n_pixels, float *out,
                          std::uint8_t *out_valid) {
  for (std::size_t f = 0; f < n_frames; ++f) {
    const T *frame = frames + f * n_pixels;
    const std::uint8_t *frame_valid = HasValid ? valid + f * n_pixels : nullptr;
    float *o = out + f * n_bins;
    std::uint8_t *ov = out_valid + f * n_bins;
    for (std::size_t k = 0; k < n_entries; ++k) {
      const std::int32_t p = index[k];
      const std::size_t p00 = p >= 0 ? static_cast<std::size_t>(p) : 0;
      const std::size_t p10 = p00 + stride;
      const float tx = fractions[2 * k], ty = fractions[2 * k + 1];
      const float w00 = (1.0f - tx) * (1.0f - ty), w01 = tx * (1.0f - ty);
      const float w10 = (1.0f - tx) * ty, w11 = tx * ty;
      unsigned ok = p >= 0;
      if (HasValid) {
        ok &= (frame_valid[p00] != 0) | (w00 == 0.0f);
        ok &= (frame_valid[p00 + 1] != 0) | (w01 == 0.0f);
        ok &= (frame_valid[p10] != 0) | (w10 == 0.0f);
        ok &= (frame_valid[p10 + 1] != 0) | (w11 == 0.0f);
      }
      const float value = w00 * static_cast<float>(frame[p00]) +
                          w01 * static_cast<float>(frame[p00 + 1]) +
                          w10 * static_cast<float>(frame[p10]) +
                          w11 * static_cast<float>(frame[p10 + 1]);
      o[bins[k]] = ok ? value : 0.0f;
      ov[bins[k]] = static_cast<std::uint8_t>(ok);
    }
  }
}

// CSR layout. Returns false (and stops) at the first pixel index outside
// the frame.
template <typename T, bool HasValid>
bool polar_apply_csr(const std::int64_t *indptr, const std::int32_t *indices,
                     const float *weights, std::size_t n_bins, const T *frames,
                     const std::uint8_t *valid, std::size_t n_frames,
                     std::size_t n_pixels, float *out, std::uint8_t *out_valid) {
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

// ---------------------------------------------------------------- building

// Where the samples of a separable (2theta, phi) grid land on one flat
// panel. Sample (r, c) has the lab direction
//   cos2t[r] b + sin2t[r] (cosphi[c] e1 + sinphi[c] e2)
// and panel coordinates v = M (cos2t, sin2t cosphi, sin2t sinphi), with
// M = D [b e1 e2] (D: dxtbx's lab-to-panel matrix), x = v0 / v2 and
// y = v1 / v2 in mm. Only rows [row_begin, row_end) and the col_count
// columns from col_begin (wrapping around n_columns) are visited: the
// caller bounds the panel in (2theta, phi). A sample with v2 > 0 whose
// (x * scale_x, y * scale_y) lies in [limits[0], limits[1]) x [limits[2],
// limits[3]), and that no earlier panel claimed (panel[k] < 0), is written:
// x and y scaled (px for a panel without parallax correction: scale = 1 /
// pixel size, limits the panel's size in px), and its panel.
inline void polar_panel_coordinates(
    const double *cos2t, const double *sin2t, std::size_t row_begin,
    std::size_t row_end, const double *cosphi, const double *sinphi,
    std::size_t n_columns, std::size_t col_begin, std::size_t col_count,
    const double *M, double scale_x, double scale_y, const double *limits,
    std::int32_t panel_id, double *x, double *y,
    std::int32_t *panel) {
  for (std::size_t r = row_begin; r < row_end; ++r) {
    const double c2 = cos2t[r], s2 = sin2t[r];
    const double a0 = M[0] * c2, a1 = M[3] * c2, a2 = M[6] * c2;
    const std::size_t row = r * n_columns;
    for (std::size_t n = 0; n < col_count; ++n) {
      std::size_t c = col_begin + n;
      if (c >= n_columns) c -= n_columns;
      const std::size_t k = row + c;
      if (panel[k] >= 0) continue;
      const double u = s2 * cosphi[c], w = s2 * sinphi[c];
      const double v2 = a2 + M[7] * u + M[8] * w;
      if (!(v2 > 0.0)) continue;
      const double px = (a0 + M[1] * u + M[2] * w) / v2 * scale_x;
      const double py = (a1 + M[4] * u + M[5] * w) / v2 * scale_y;
      if (px >= limits[0] && px < limits[1] && py >= limits[2] && py < limits[3]) {
        x[k] = px;
        y[k] = py;
        panel[k] = panel_id;
      }
    }
  }
}

// The geometry of a flattened frame: per panel its rows, columns and the
// index of its first pixel.
struct PanelLayout {
  const std::int64_t *rows;
  const std::int64_t *columns;
  const std::int64_t *offsets;
  std::size_t n_panels;
};

// One interpolation point: up to four (pixel, weight) pairs with a
// non-zero weight. Returns false when a pixel it needs (non-zero weight) is
// off its panel.
inline bool interpolation_point(double fast, double slow, std::int32_t p,
                                const PanelLayout &layout, bool bilinear,
                                std::int64_t *pixels, double *weights,
                                int *count) {
  if (p < 0 || static_cast<std::size_t>(p) >= layout.n_panels) return false;
  if (!std::isfinite(fast) || !std::isfinite(slow)) return false;
  const std::int64_t n_rows = layout.rows[p], n_columns = layout.columns[p];
  const std::int64_t base = layout.offsets[p];
  *count = 0;
  if (!bilinear) {
    const std::int64_t i = static_cast<std::int64_t>(std::floor(fast));
    const std::int64_t j = static_cast<std::int64_t>(std::floor(slow));
    if (i < 0 || i >= n_columns || j < 0 || j >= n_rows) return false;
    pixels[0] = base + j * n_columns + i;
    weights[0] = 1.0;
    *count = 1;
    return true;
  }
  const double fx = fast - 0.5, fy = slow - 0.5;
  const double x0 = std::floor(fx), y0 = std::floor(fy);
  const double tx = fx - x0, ty = fy - y0;
  const std::int64_t i0 = static_cast<std::int64_t>(x0);
  const std::int64_t j0 = static_cast<std::int64_t>(y0);
  const double w[4] = {(1 - tx) * (1 - ty), tx * (1 - ty), (1 - tx) * ty, tx * ty};
  const std::int64_t di[4] = {0, 1, 0, 1}, dj[4] = {0, 0, 1, 1};
  for (int corner = 0; corner < 4; ++corner) {
    if (!(w[corner] > 0.0)) continue;
    const std::int64_t i = i0 + di[corner], j = j0 + dj[corner];
    if (i < 0 || i >= n_columns || j < 0 || j >= n_rows) return false;
    pixels[*count] = base + j * n_columns + i;
    weights[*count] = w[corner];
    ++*count;
  }
  return true;
}

// A CSR map from the pixel coordinates of sub-samples: the sub-sample grid
// has n_rows * over rows and n_columns * over columns (fast, slow, panel
// per sub-sample; panel -1 off the detector); output bin (i, j) is the mean
// over its over x over sub-samples (rows i*over.., columns j*over..), valid
// only when every one is on the detector (panel >= 0, finite coordinates). Duplicate pixels in a bin are
// merged (their weights added). Weights are float32 (computed in double).
inline void polar_build_csr(const double *fast, const double *slow,
                            const std::int32_t *panel, std::size_t n_rows,
                            std::size_t n_columns, std::size_t over,
                            const PanelLayout &layout, bool bilinear,
                            std::vector<std::int64_t> &indptr,
                            std::vector<std::int32_t> &indices,
                            std::vector<float> &weights) {
  const std::size_t sub_columns = n_columns * over;
  const double share = 1.0 / static_cast<double>(over * over);
  // A bin uses at most 4 pixels per sub-sample.
  std::vector<std::int64_t> bin_pixels(4 * over * over);
  std::vector<double> bin_weights(4 * over * over);
  indptr.assign(1, 0);
  indptr.reserve(n_rows * n_columns + 1);
  indices.reserve(n_rows * n_columns * (bilinear ? 4 : 1) * (over > 1 ? 3 : 1));
  weights.reserve(indices.capacity());
  for (std::size_t i = 0; i < n_rows; ++i) {
    for (std::size_t j = 0; j < n_columns; ++j) {
      std::size_t used = 0;
      bool ok = true;
      for (std::size_t a = 0; ok && a < over; ++a) {
        for (std::size_t b = 0; ok && b < over; ++b) {
          const std::size_t k = (i * over + a) * sub_columns + j * over + b;
          std::int64_t pixels[4];
          double w[4];
          int count = 0;
          ok = interpolation_point(fast[k], slow[k], panel[k], layout, bilinear,
                                   pixels, w, &count);
          for (int e = 0; ok && e < count; ++e) {
            std::size_t m = 0;
            while (m < used && bin_pixels[m] != pixels[e]) ++m;
            if (m == used) {
              bin_pixels[used] = pixels[e];
              bin_weights[used++] = w[e] * share;
            } else {
              bin_weights[m] += w[e] * share;
            }
          }
        }
      }
      if (ok) {
        for (std::size_t e = 0; e < used; ++e) {
          indices.push_back(static_cast<std::int32_t>(bin_pixels[e]));
          weights.push_back(static_cast<float>(bin_weights[e]));
        }
      }
      indptr.push_back(static_cast<std::int64_t>(indices.size()));
    }
  }
}

// The nearest or bilinear layout from one point per bin (see the top of
// this file). Bilinear needs every panel to have `stride` columns and at
// least two rows and columns. A point whose right (lower) neighbours fall
// off the panel with zero weight is moved one pixel left (up) with a
// fraction of 1, so that all four corners stay on the panel; fractions are
// kept below 1 otherwise (a corner of non-zero weight keeps a non-zero
// float32 weight).
inline void polar_build_compact(const double *fast, const double *slow,
                                const std::int32_t *panel, std::size_t n_bins,
                                const PanelLayout &layout, bool bilinear,
                                std::int32_t *index, float *fractions) {
  const float below_one = std::nextafter(1.0f, 0.0f);
  for (std::size_t b = 0; b < n_bins; ++b) {
    index[b] = -1;
    if (bilinear) fractions[2 * b] = fractions[2 * b + 1] = 0.0f;
    const std::int32_t p = panel[b];
    if (p < 0 || static_cast<std::size_t>(p) >= layout.n_panels) continue;
    if (!std::isfinite(fast[b]) || !std::isfinite(slow[b])) continue;
    const std::int64_t n_rows = layout.rows[p], n_columns = layout.columns[p];
    const std::int64_t base = layout.offsets[p];
    if (!bilinear) {
      const std::int64_t i = static_cast<std::int64_t>(std::floor(fast[b]));
      const std::int64_t j = static_cast<std::int64_t>(std::floor(slow[b]));
      if (i >= 0 && i < n_columns && j >= 0 && j < n_rows) {
        index[b] = static_cast<std::int32_t>(base + j * n_columns + i);
      }
      continue;
    }
    const double fx = fast[b] - 0.5, fy = slow[b] - 0.5;
    const double x0 = std::floor(fx), y0 = std::floor(fy);
    double tx = fx - x0, ty = fy - y0;
    std::int64_t i0 = static_cast<std::int64_t>(x0);
    std::int64_t j0 = static_cast<std::int64_t>(y0);
    if (i0 == n_columns - 1 && tx == 0.0) i0 -= 1, tx = 1.0;
    if (j0 == n_rows - 1 && ty == 0.0) j0 -= 1, ty = 1.0;
    if (i0 < 0 || i0 + 1 >= n_columns || j0 < 0 || j0 + 1 >= n_rows) continue;
    float ftx = static_cast<float>(tx), fty = static_cast<float>(ty);
    if (tx < 1.0) ftx = std::min(ftx, below_one);
    if (ty < 1.0) fty = std::min(fty, below_one);
    index[b] = static_cast<std::int32_t>(base + j0 * n_columns + i0);
    fractions[2 * b] = ftx;
    fractions[2 * b + 1] = fty;
  }
}

// A compact map's entries (given in bin order: entry b is bin b) sorted by
// pixel, by a stable counting sort: bins[k], index_out[k] and (bilinear)
// fractions_out[2k..2k+1] of the k-th entry by pixel (-1 first). index
// values lie in [-1, n_pixels).
inline void polar_sort_by_pixel(const std::int32_t *index, const float *fractions,
                                std::size_t n_bins, std::size_t n_pixels,
                                std::int32_t *bins, std::int32_t *index_out,
                                float *fractions_out) {
  std::vector<std::size_t> start(n_pixels + 2, 0);
  for (std::size_t b = 0; b < n_bins; ++b) {
    ++start[static_cast<std::size_t>(index[b] + 1) + 1];
  }
  for (std::size_t p = 1; p < start.size(); ++p) start[p] += start[p - 1];
  for (std::size_t b = 0; b < n_bins; ++b) {
    const std::size_t k = start[static_cast<std::size_t>(index[b] + 1)]++;
    bins[k] = static_cast<std::int32_t>(b);
    index_out[k] = index[b];
    if (fractions != nullptr) {
      fractions_out[2 * k] = fractions[2 * b];
      fractions_out[2 * k + 1] = fractions[2 * b + 1];
    }
  }
}

}  // namespace dials_diffuse
