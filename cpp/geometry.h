// Per-pixel geometry of a flat detector panel: s1 of every pixel centre.
//
// The same arithmetic as dials_diffuse.geometry.pixel_s1 (numpy, checked
// against dxtbx) for the two px/mm strategies of flat panels, in one pass
// without temporaries:
//
//   pixel (column, row) has its centre at (column + 0.5, row + 0.5) px,
//   x_mm = x * pixel_size[0], y_mm = y * pixel_size[1];
//   parallax correction (dxtbx ParallaxCorrectedPxMmStrategy, inverse), when
//   mu > 0 and t0 > 0: ray = unit(origin + x_mm fast + y_mm slow),
//   normal = fast x slow (pointing away from the sample), cos_t = ray.normal,
//   depth = 1/mu - (t0/cos_t + 1/mu) exp(-mu t0 / cos_t),
//   x_mm -= (ray.fast) depth, y_mm -= (ray.slow) depth;
//   lab = origin + x_mm fast + y_mm slow (mm), s1 = lab / |lab| / wavelength.
//
// Units: mm for origin and pixel size, mm^-1 for mu, Angstrom for the
// wavelength, s1 in inverse Angstrom.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace dials_diffuse {

using Vec3 = std::array<double, 3>;

inline double dot(const Vec3 &a, const Vec3 &b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

// A flat panel: origin, fast and slow axes in the lab frame (mm, unit
// vectors) and its pixel size (mm) and count.
struct FlatPanel {
  Vec3 origin, fast, slow;
  double size_fast, size_slow;
  std::int64_t n_rows, n_columns;
};

// s1 (n_rows x n_columns x 3, C order, inverse Angstrom) of every pixel
// centre of `panel` into `out`; parallax when mu > 0 and t0 > 0.
inline void panel_pixel_s1(const FlatPanel &panel, double wavelength, double mu,
                           double t0, double *out) {
  const Vec3 &origin = panel.origin, &fast = panel.fast, &slow = panel.slow;
  const bool parallax = mu > 0 && t0 > 0;
  Vec3 normal = {fast[1] * slow[2] - fast[2] * slow[1],
                 fast[2] * slow[0] - fast[0] * slow[2],
                 fast[0] * slow[1] - fast[1] * slow[0]};
  if (dot(origin, normal) < 0) {
    for (double &v : normal) v = -v;
  }
  const double inverse_wavelength = 1.0 / wavelength;
  const double inverse_mu = parallax ? 1.0 / mu : 0.0;
  for (std::int64_t row = 0; row < panel.n_rows; ++row) {
    const double y0 = (static_cast<double>(row) + 0.5) * panel.size_slow;
    for (std::int64_t column = 0; column < panel.n_columns; ++column) {
      double x_mm = (static_cast<double>(column) + 0.5) * panel.size_fast;
      double y_mm = y0;
      Vec3 lab;
      for (int i = 0; i < 3; ++i) {
        lab[i] = origin[i] + x_mm * fast[i] + y_mm * slow[i];
      }
      if (parallax) {
        const double norm = std::sqrt(dot(lab, lab));
        const Vec3 ray = {lab[0] / norm, lab[1] / norm, lab[2] / norm};
        const double cos_t = dot(ray, normal);
        const double depth =
            inverse_mu - (t0 / cos_t + inverse_mu) * std::exp(-mu * t0 / cos_t);
        x_mm -= dot(ray, fast) * depth;
        y_mm -= dot(ray, slow) * depth;
        for (int i = 0; i < 3; ++i) {
          lab[i] = origin[i] + x_mm * fast[i] + y_mm * slow[i];
        }
      }
      const double scale = inverse_wavelength / std::sqrt(dot(lab, lab));
      for (int i = 0; i < 3; ++i) *out++ = lab[i] * scale;
    }
  }
}

}  // namespace dials_diffuse
