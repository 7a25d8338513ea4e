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

#include "common.h"

namespace dials_diffuse {

using Vec3 = std::array<double, 3>;

inline Vec3 vec3_from(const py::array_t<double> &array, const char *name) {
  if (array.ndim() != 1 || array.shape(0) != 3) {
    throw std::invalid_argument(std::string(name) + " must have 3 elements");
  }
  auto a = array.unchecked<1>();
  return {a(0), a(1), a(2)};
}

inline double dot(const Vec3 &a, const Vec3 &b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

// s1 (n_rows, n_columns, 3) of every pixel centre of a flat panel.
inline py::array_t<double> panel_pixel_s1(
    const py::array_t<double> &origin_in, const py::array_t<double> &fast_in,
    const py::array_t<double> &slow_in, double size_fast, double size_slow,
    py::ssize_t n_rows, py::ssize_t n_columns, double wavelength, double mu,
    double t0) {
  const Vec3 origin = vec3_from(origin_in, "origin");
  const Vec3 fast = vec3_from(fast_in, "fast");
  const Vec3 slow = vec3_from(slow_in, "slow");
  if (n_rows < 1 || n_columns < 1) {
    throw std::invalid_argument("the panel must have at least one pixel");
  }
  if (!(wavelength > 0) || !(size_fast > 0) || !(size_slow > 0)) {
    throw std::invalid_argument("wavelength and pixel size must be positive");
  }
  const bool parallax = mu > 0 && t0 > 0;
  Vec3 normal = {fast[1] * slow[2] - fast[2] * slow[1],
                 fast[2] * slow[0] - fast[0] * slow[2],
                 fast[0] * slow[1] - fast[1] * slow[0]};
  if (dot(origin, normal) < 0) {
    for (double &v : normal) v = -v;
  }
  py::array_t<double> s1({n_rows, n_columns, py::ssize_t{3}});
  double *out = s1.mutable_data();
  {
    py::gil_scoped_release release;
    const double inverse_wavelength = 1.0 / wavelength;
    const double inverse_mu = parallax ? 1.0 / mu : 0.0;
    for (py::ssize_t row = 0; row < n_rows; ++row) {
      const double y0 = (static_cast<double>(row) + 0.5) * size_slow;
      for (py::ssize_t column = 0; column < n_columns; ++column) {
        double x_mm = (static_cast<double>(column) + 0.5) * size_fast;
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
              inverse_mu -
              (t0 / cos_t + inverse_mu) * std::exp(-mu * t0 / cos_t);
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
  return s1;
}

inline void bind_geometry(py::module_ &m) {
  m.def("panel_pixel_s1", &panel_pixel_s1, py::arg("origin"), py::arg("fast"),
        py::arg("slow"), py::arg("size_fast"), py::arg("size_slow"),
        py::arg("n_rows"), py::arg("n_columns"), py::arg("wavelength"),
        py::arg("mu") = 0.0, py::arg("t0") = 0.0,
        "s1 (n_rows, n_columns, 3), inverse Angstrom, of every pixel centre "
        "of a flat panel (origin, fast, slow in the lab frame, mm; pixel "
        "size in mm); with mu (mm^-1) and t0 (mm) both positive, dxtbx's "
        "parallax correction. Releases the GIL.");
}

}  // namespace dials_diffuse
