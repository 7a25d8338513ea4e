// The dials_diffuse._kernels extension: binds every kernel family.
// Each kernel family's header (e.g. diffuse.h) is plain C++; its Python glue
// is bindings_<family>.cpp, whose bind_<family>(module) is declared in
// bindings.h: add one line here per family.
#include <pybind11/pybind11.h>

#include "bindings.h"

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "C++17 kernels of dials-diffuse; every kernel releases the GIL.";
  dials_diffuse::bind_histogram(m);
  dials_diffuse::bind_eiger(m);
  dials_diffuse::bind_polar(m);
  dials_diffuse::bind_shoebox(m);
  dials_diffuse::bind_diffuse(m);
  dials_diffuse::bind_chunks(m);
  dials_diffuse::bind_geometry(m);
  dials_diffuse::bind_peaks(m);
}
