// Python binding of the pixel geometry kernel (geometry.h): argument checks,
// then the work with the GIL released.
#include "bindings.h"
#include "geometry.h"

namespace dials_diffuse {

namespace {

Vec3 vec3_from(const py::array_t<double> &array, const char *name) {
  if (array.ndim() != 1 || array.shape(0) != 3) {
    throw std::invalid_argument(std::string(name) + " must have 3 elements");
  }
  auto a = array.unchecked<1>();
  return {a(0), a(1), a(2)};
}

py::array_t<double> panel_pixel_s1_py(
    const py::array_t<double> &origin, const py::array_t<double> &fast,
    const py::array_t<double> &slow, double size_fast, double size_slow,
    py::ssize_t n_rows, py::ssize_t n_columns, double wavelength, double mu,
    double t0) {
  const FlatPanel panel{vec3_from(origin, "origin"), vec3_from(fast, "fast"),
                        vec3_from(slow, "slow"),     size_fast,
                        size_slow,                   n_rows,
                        n_columns};
  if (n_rows < 1 || n_columns < 1) {
    throw std::invalid_argument("the panel must have at least one pixel");
  }
  if (!(wavelength > 0) || !(size_fast > 0) || !(size_slow > 0)) {
    throw std::invalid_argument("wavelength and pixel size must be positive");
  }
  py::array_t<double> s1({n_rows, n_columns, py::ssize_t{3}});
  double *out = s1.mutable_data();
  {
    py::gil_scoped_release release;
    panel_pixel_s1(panel, wavelength, mu, t0, out);
  }
  return s1;
}

}  // namespace

void bind_geometry(py::module_ &m) {
  m.def("panel_pixel_s1", &panel_pixel_s1_py, py::arg("origin"), py::arg("fast"),
        py::arg("slow"), py::arg("size_fast"), py::arg("size_slow"),
        py::arg("n_rows"), py::arg("n_columns"), py::arg("wavelength"),
        py::arg("mu") = 0.0, py::arg("t0") = 0.0,
        "s1 (n_rows, n_columns, 3), inverse Angstrom, of every pixel centre "
        "of a flat panel (origin, fast, slow in the lab frame, mm; pixel "
        "size in mm); with mu (mm^-1) and t0 (mm) both positive, dxtbx's "
        "parallax correction. Releases the GIL.");
}

}  // namespace dials_diffuse
