"""Modules that dependencies import at start-up but our programs rarely use, loaded on first use.

dxtbx's ``dxtbx.model.detector_helpers`` imports ``sklearn.cluster`` at
import time (for clustering the panels of multi-panel detectors when a beam
centre is set), and scikit-learn brings scipy.stats and joblib with it:
about 0.3 s and 30 MB in every process that loads an experiment, for a
function our programs never call. `defer` puts a stand-in for such a module
in ``sys.modules``; the real module is imported the first time any of its
attributes is asked for, so code that uses it still gets it, just later.

A stand-in is only made when the module is installed and not yet imported,
so ``import`` statements that expect ImportError for a missing module behave
as before.
"""

import importlib
import importlib.machinery
import importlib.util
import sys
import types


class DeferredModule(types.ModuleType):
    """Stand-in for a module: imports the real one on first attribute access.

    It carries only the import system's bookkeeping (``__spec__``,
    ``__name__``, ``__loader__``) and the stand-ins of deferred submodules,
    so ``import name`` finds it without loading anything. Any other
    attribute (including ``__path__``, which the import of an undeferred
    submodule asks for) imports the real module and is looked up there.
    """

    def __getattr__(self, attribute):
        return getattr(_load(self.__name__), attribute)

    def __dir__(self):
        return dir(_load(self.__name__))


def _load(name):
    """The real module `name`, imported now if only its stand-in is there.

    Every stand-in of the same top-level package leaves ``sys.modules`` and
    all those modules are imported, so that afterwards the modules are
    exactly as without deferral; stand-ins still referred to elsewhere keep
    forwarding here.
    """
    module = sys.modules.get(name)
    if module is not None and not isinstance(module, DeferredModule):
        return module
    top = name.partition(".")[0]
    deferred = sorted(
        key
        for key, value in list(sys.modules.items())
        if isinstance(value, DeferredModule)
        and (key == top or key.startswith(top + "."))
    )
    for key in deferred:
        del sys.modules[key]
    for key in deferred:
        importlib.import_module(key)
    return importlib.import_module(name)


def defer(name):
    """Defer the import of module `name` (and its parent packages) to first use.

    Parameters
    ----------
    name : str
        Dotted module name, e.g. ``"sklearn.cluster"``.

    Returns
    -------
    bool
        True if stand-ins were installed; False if the module (or its top
        package) is already imported or is not installed.
    """
    parts = name.split(".")
    if parts[0] in sys.modules:
        return False
    search_path = None
    stand_ins = []
    for depth in range(1, len(parts) + 1):
        dotted = ".".join(parts[:depth])
        if search_path is None:
            spec = importlib.util.find_spec(dotted)
        else:  # a submodule, found without importing its package
            spec = importlib.machinery.PathFinder.find_spec(dotted, search_path)
        if spec is None:
            return False
        stand_in = DeferredModule(dotted)
        stand_in.__spec__ = spec
        stand_in.__loader__ = spec.loader
        if spec.has_location:  # inspect.getmodule() asks every module for it
            stand_in.__file__ = spec.origin
        stand_in.__package__ = dotted if spec.submodule_search_locations else None
        if stand_ins:
            setattr(stand_ins[-1], parts[depth - 1], stand_in)
        stand_ins.append(stand_in)
        search_path = spec.submodule_search_locations
    for stand_in in stand_ins:
        sys.modules[stand_in.__name__] = stand_in
    return True


def defer_heavy_dependencies():
    """Defer what dxtbx imports at start-up and our programs do not need."""
    defer("sklearn.cluster")
