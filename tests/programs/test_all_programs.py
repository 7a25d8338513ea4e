"""Every installed program follows the house rules: documented parameters, help with examples."""

import importlib
import pkgutil
import subprocess

import pytest

import dials_diffuse.command_line as command_line
from tests.helpers import console_script

PROGRAMS = sorted(m.name for m in pkgutil.iter_modules(command_line.__path__))


def definitions(scope):
    for obj in scope.objects:
        if obj.is_definition:
            yield obj
        else:
            yield from definitions(obj)


def test_there_are_programs():
    assert "pixel_histogram" in PROGRAMS


@pytest.mark.parametrize("name", PROGRAMS)
def test_every_parameter_has_help(name):
    program = importlib.import_module(f"dials_diffuse.command_line.{name}").program
    undocumented = [
        d.full_path() for d in definitions(program.master_phil) if not d.help
    ]
    assert undocumented == []


@pytest.mark.parametrize("name", PROGRAMS)
def test_help_has_examples_and_console_script_works(name):
    result = subprocess.run(
        [console_script(f"dials.diffuse.{name}"), "-h"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "Example" in result.stdout
    assert f"dials.diffuse.{name}" in result.stdout
