"""Deferred imports: our programs start without scikit-learn, matplotlib, pandas, scipy.

The programs of the diffuse chain import only what every run needs; heavy
modules come when used (a plot, a DataFrame). Checked on sys.modules of a
fresh interpreter, never on time.
"""

import subprocess
import sys
import textwrap

import pytest

from dials_diffuse.util.deferred_imports import DeferredModule, defer

PROGRAMS = ("import_data", "find_peaks", "mask_peaks", "integrate", "correct")
HEAVY = ("matplotlib", "pandas", "scipy", "sklearn", "joblib")


def run_python(code):
    """Run `code` in a fresh interpreter; return its stdout (it must succeed)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("program", PROGRAMS)
def test_program_modules_import_nothing_heavy(program):
    """Importing a program (and loading dxtbx models) loads no heavy module for real."""
    loaded = run_python(
        f"""
        import sys
        import dials_diffuse.command_line.{program}
        import dxtbx.model
        from dxtbx.model.experiment_list import ExperimentListFactory
        real = [
            name for name in {HEAVY!r}
            if name in sys.modules
            and type(sys.modules[name]).__name__ != "DeferredModule"
        ]
        print(" ".join(real))
        """
    )
    assert loaded.split() == []


def test_deferred_sklearn_works_when_used():
    """dxtbx's use of sklearn.cluster, and any later sklearn import, get the real thing."""
    output = run_python(
        """
        import sys
        import dials_diffuse.command_line
        from dxtbx.model import detector_helpers
        assert type(sys.modules["sklearn"]).__name__ == "DeferredModule"
        import sklearn.cluster  # finds the stand-ins, loads nothing
        assert type(sys.modules["sklearn"]).__name__ == "DeferredModule"
        dbscan = detector_helpers.sklearn.cluster.DBSCAN
        assert dbscan is sys.modules["sklearn.cluster"].DBSCAN
        assert type(sys.modules["sklearn"]).__name__ == "module"
        from sklearn.neighbors import NearestNeighbors
        assert sklearn.cluster.KMeans is sys.modules["sklearn.cluster"].KMeans
        print(dbscan.__name__, NearestNeighbors.__name__, sklearn.__version__ > "0")
        """
    )
    assert output.split() == ["DBSCAN", "NearestNeighbors", "True"]


def test_submodule_import_of_a_deferred_package_runs_its_init():
    """`from sklearn.neighbors import ...` before any use loads sklearn itself first."""
    output = run_python(
        """
        import sys
        import dials_diffuse.command_line
        import dxtbx.model
        from sklearn.neighbors import NearestNeighbors
        import sklearn
        import sklearn.cluster._dbscan
        # sklearn.cluster imports sklearn.neighbors: still one module, one class.
        assert sklearn.cluster._dbscan.NearestNeighbors is NearestNeighbors
        assert sys.modules["sklearn.neighbors"].NearestNeighbors is NearestNeighbors
        from pandas.core.frame import DataFrame  # pandas deferred too
        import pandas
        assert pandas.DataFrame is DataFrame
        print(type(sys.modules["sklearn"]).__name__, hasattr(sklearn, "get_config"),
              type(sklearn.cluster).__name__, type(pandas).__name__)
        """
    )
    assert output.split() == ["module", "True", "module", "module"]


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    """Package toy_deferred_pkg: its __init__ imports .inner; .outer it does not.

    Every execution of a module is counted in builtins.toy_runs.
    """
    package = tmp_path / "toy_deferred_pkg"
    package.mkdir()
    count = "import builtins\nbuiltins.toy_runs.append(__name__)\n"
    (package / "__init__.py").write_text(count + "from . import inner\n")
    (package / "inner.py").write_text(count + "VALUE = 41\n")
    (package / "outer.py").write_text(count + "VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import builtins

    builtins.toy_runs = []
    yield builtins.toy_runs
    for name in list(sys.modules):
        if name.startswith("toy_deferred_pkg"):
            del sys.modules[name]
    del builtins.toy_runs


def test_defer_runs_nothing_until_an_attribute_is_used(toy_package):
    runs = toy_package
    assert defer("toy_deferred_pkg.outer")
    assert isinstance(sys.modules["toy_deferred_pkg"], DeferredModule)
    import toy_deferred_pkg.outer  # noqa: F401 - the stand-ins: nothing runs

    assert runs == []
    assert toy_deferred_pkg.outer.VALUE == 42
    assert runs == [
        "toy_deferred_pkg",
        "toy_deferred_pkg.inner",
        "toy_deferred_pkg.outer",
    ]
    assert not isinstance(sys.modules["toy_deferred_pkg"], DeferredModule)
    assert sys.modules["toy_deferred_pkg.outer"].VALUE == 42


def test_submodule_import_runs_the_package_first_and_each_module_once(toy_package):
    """The first use is an import of a submodule the package itself imports."""
    runs = toy_package
    assert defer("toy_deferred_pkg")
    from toy_deferred_pkg.inner import VALUE

    assert VALUE == 41
    assert runs == ["toy_deferred_pkg", "toy_deferred_pkg.inner"]
    package = sys.modules["toy_deferred_pkg"]
    assert package.inner is sys.modules["toy_deferred_pkg.inner"]
    assert package.inner.__spec__.origin.endswith("inner.py")
    from toy_deferred_pkg import outer  # an ordinary import afterwards

    assert outer.VALUE == 42
    assert runs.count("toy_deferred_pkg.inner") == 1
    assert runs.count("toy_deferred_pkg.outer") == 1


def test_defer_leaves_missing_and_imported_modules_alone():
    assert not defer("no_such_module_here.sub")
    assert "no_such_module_here" not in sys.modules
    assert not defer("json")  # already imported: nothing to gain
    assert not isinstance(sys.modules["json"], DeferredModule)
