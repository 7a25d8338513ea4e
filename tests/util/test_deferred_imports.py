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
        print(type(sys.modules["sklearn"]).__name__, hasattr(sklearn, "get_config"),
              type(sklearn.cluster).__name__)
        """
    )
    assert output.split() == ["module", "True", "module"]


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    """A package whose import is recorded: toy_deferred_pkg.sub.VALUE == 42."""
    package = tmp_path / "toy_deferred_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import builtins\nbuiltins.toy_runs = 1\n")
    (package / "sub.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "toy_deferred_pkg"
    for name in ("toy_deferred_pkg.sub", "toy_deferred_pkg"):
        sys.modules.pop(name, None)
    import builtins

    if hasattr(builtins, "toy_runs"):
        del builtins.toy_runs


def test_defer_runs_nothing_until_an_attribute_is_used(toy_package):
    import builtins

    assert defer(f"{toy_package}.sub")
    assert isinstance(sys.modules[toy_package], DeferredModule)
    assert not hasattr(builtins, "toy_runs")
    import toy_deferred_pkg.sub  # noqa: F401 - the stand-ins, still nothing run

    assert not hasattr(builtins, "toy_runs")
    assert toy_deferred_pkg.sub.VALUE == 42
    assert builtins.toy_runs == 1
    assert not isinstance(sys.modules[toy_package], DeferredModule)
    assert sys.modules[f"{toy_package}.sub"].VALUE == 42


def test_defer_leaves_missing_and_imported_modules_alone():
    assert not defer("no_such_module_here.sub")
    assert "no_such_module_here" not in sys.modules
    assert not defer("json")  # already imported: nothing to gain
    assert not isinstance(sys.modules["json"], DeferredModule)
