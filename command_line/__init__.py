"""The dials.diffuse.* programs: one module each, a thin shell over dials_diffuse.algorithms."""

import os

# Our programs parallelise over chunks (nproc= threads, Dask workers); numpy's
# OpenBLAS thread pool only spins on the small matrices of per-chunk code and
# takes a core from the workers. Set before numpy is imported; a user's own
# setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from dials_diffuse.util.deferred_imports import defer_heavy_dependencies  # noqa: E402

# Before any program module imports dxtbx: a process running one of our
# programs does not pay for scikit-learn unless something really uses it.
defer_heavy_dependencies()
