"""The dials.diffuse.* programs: one module each, a thin shell over dials_diffuse.algorithms."""

from dials_diffuse.util.deferred_imports import defer_heavy_dependencies

# Before any program module imports dxtbx: a process running one of our
# programs does not pay for scikit-learn unless something really uses it.
defer_heavy_dependencies()
