"""Modules that dependencies import at start-up but our programs rarely use, loaded on first use.

dxtbx's ``dxtbx.model.detector_helpers`` imports ``sklearn.cluster`` at
import time (for clustering the panels of multi-panel detectors when a beam
centre is set), and scikit-learn brings scipy.stats and joblib with it:
about 0.3 s and 30 MB in every process that loads an experiment, for a
function our programs never call. DIALS's reflection tables import pandas
(0.15 s) for two methods we do not use. `defer` puts a stand-in for such a
module in ``sys.modules``; the real module is imported the first time it is
really used, so code that uses it still gets it, just later:

- an attribute of the stand-in (``sklearn.cluster.DBSCAN``,
  ``pandas.DataFrame``) imports the real module and is looked up there;
- importing any submodule of a deferred package (``from sklearn.neighbors
  import ...``) first imports the real package, as Python would have, and
  executes no module twice.

A stand-in is only made when the module is installed and not yet imported,
so ``import`` statements that expect ImportError for a missing module behave
as before.
"""

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
import types


class DeferredModule(types.ModuleType):
    """Stand-in for a module: imports the real one on first attribute access.

    It carries only the import system's bookkeeping (``__spec__``,
    ``__name__``, ``__loader__``, ``__file__``) and the stand-ins of
    deferred submodules, so ``import name`` finds it without loading
    anything. Any other attribute imports the real module and is looked up
    there; ``__path__`` is asked for when a submodule is being imported.
    """

    def __getattr__(self, attribute):
        before = set(sys.modules) if attribute == "__path__" else None
        module = _load(self.__name__)
        if before is not None:
            # A submodule is being imported through this package: the real
            # package may have imported it already (see _NoSecondExecution).
            _pending.names = set(sys.modules) - before
        return getattr(module, attribute)

    def __dir__(self):
        return dir(_load(self.__name__))


def _load(name):
    """The real module `name`, imported now if only its stand-in is there.

    Every stand-in of the same top-level package leaves ``sys.modules`` and
    all those modules are imported, package first: afterwards the modules
    are exactly as they would be without deferral. Stand-ins still referred
    to elsewhere keep forwarding here.
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


class _AlreadyImported:
    """Loader that hands the import system a module that is already imported."""

    def __init__(self, module):
        self.module = module
        self.original_spec = module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        module.__spec__ = self.original_spec  # module_from_spec replaced it


class _NoSecondExecution:
    """Keep the import system from executing a module a second time.

    Importing ``package.sub`` through a stand-in ``package`` asks the
    stand-in for ``__path__``, which imports the real package; when that
    brings ``package.sub`` in as a side effect, the import system (which
    checked ``sys.modules`` before) would execute ``package.sub`` again.
    This finder, first on ``sys.meta_path`` and consulted right after, hands
    it the module already imported instead. It answers only that one
    question, so ordinary imports and reloads never see it.
    """

    def find_spec(self, fullname, path, target=None):
        names, _pending.names = getattr(_pending, "names", None), None
        if not names or fullname not in names or fullname not in sys.modules:
            return None
        module = sys.modules[fullname]
        return importlib.util.spec_from_loader(
            fullname, _AlreadyImported(module), is_package=hasattr(module, "__path__")
        )


_pending = threading.local()
_FINDER = _NoSecondExecution()


def defer(name):
    """Defer the import of module `name` (and its parent packages) to first use.

    Parameters
    ----------
    name : str
        Dotted module name, e.g. ``"sklearn.cluster"``.

    Returns
    -------
    bool
        True if stand-ins were installed; False if the module's top-level
        package is already imported or the module is not installed.
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
        stand_in.__package__ = dotted if spec.submodule_search_locations else None
        if spec.has_location:  # inspect.getmodule() asks every module for it
            stand_in.__file__ = spec.origin
        if stand_ins:
            setattr(stand_ins[-1], parts[depth - 1], stand_in)
        stand_ins.append(stand_in)
        search_path = spec.submodule_search_locations
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    for stand_in in stand_ins:
        sys.modules[stand_in.__name__] = stand_in
    return True


def defer_heavy_dependencies():
    """Defer what dxtbx and DIALS import at start-up and our programs do not need."""
    defer("sklearn.cluster")
    defer("pandas")
