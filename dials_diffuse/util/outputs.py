"""Output planning: every output of a run is checked before anything is written.

The runner (`dials_diffuse.util.program`) builds an `OutputPlan` after the
inputs are loaded and before the log file is opened or the program's work
starts. Its outputs are every ``.type = path`` parameter under a scope named
``output`` (at any depth: ``dials.diffuse.process`` nests each step's as
``<step>.output.*``), ``output.log`` and ``output.json`` among them; programs
that derive more names (one file per experiment) register them with
``RunContext.plan_outputs`` before writing any. Each output is refused (a
`UserError` naming the file, exit 1) when it

- is, or resolves to (symbolic links, the same file by another path), an
  input: a positional file, a ``.phil`` file, a file given as a parameter
  (``mask=``, ``background=``) or a file an input refers to (the image files
  of an ``.expt``'s image sets and their mask/gain/pedestal files, the data
  files an NXmx/Eiger master links or maps through a virtual dataset);
- has the same name as another output;
- is an existing directory (unless the parameter is a ``directory``, as
  ``simulate``'s ``output.directory``), or lies in a directory that does not exist or
  cannot be written (read-only file system, no permission).

Planning also removes the temporaries (``.<name>.<pid>.<random>.partial``,
see `dials_diffuse.io.atomic`) that a killed run left for the same output
name: those of processes that no longer run on this machine.
"""

import os
from pathlib import Path

from dials_diffuse.io.atomic import remove_stale_temporaries
from dials_diffuse.util.errors import UserError

#: The file-kind words of the refusal messages, by how a file came in.
INPUT = "an input file"


def path_parameters(working):
    """(outputs, inputs) of a working PHIL scope: {parameter: value} of set paths.

    Outputs are the `.type = path` parameters with a scope named `output`
    among their parents; inputs are the other path parameters.
    """
    outputs, inputs = {}, {}

    def walk(scope, in_output):
        for obj in scope.objects:
            if obj.is_definition:
                if obj.type is None or obj.type.phil_type != "path":
                    continue
                value = obj.extract()
                if value is None or str(value) in ("", "None"):
                    continue
                target = outputs if in_output else inputs
                target[obj.full_path()] = str(value)
            else:
                walk(obj, in_output or obj.name == "output")

    walk(working, False)
    return outputs, inputs


def _identity(path):
    """The absolute path with symbolic links resolved (as far as they exist)."""
    return Path(os.path.realpath(os.path.abspath(path)))


def _inode(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


class OutputPlan:
    """The inputs a run protects and the outputs it will write, checked.

    Parameters
    ----------
    protected : dict
        {path: description} of every file no output may replace, e.g.
        ``{"truth.expt": "an input file", "data_000001.h5": "a data file of
        master.h5"}``.
    """

    def __init__(self, protected=None):
        self._protected = {}
        self._inodes = {}
        self._folders = set()
        self.outputs = {}
        #: Keys of the outputs planned as derived names (RunContext.plan_outputs).
        self.derived = set()
        for path, description in (protected or {}).items():
            self.protect(path, description)

    def protect(self, path, description=INPUT):
        """No output may replace `path` (described as `description` in refusals)."""
        identity = _identity(path)
        self._protected.setdefault(identity, description)
        inode = _inode(identity)
        if inode is not None:
            self._inodes.setdefault(inode, description)

    def protection_of(self, path):
        """The description of `path` if it is protected, else None."""
        identity = _identity(path)
        if identity in self._protected:
            return self._protected[identity]
        inode = _inode(identity)
        return self._inodes.get(inode) if inode is not None else None

    def will_make(self, folder):
        """The program makes `folder` itself before writing into it.

        Outputs inside it are then checked against the nearest folder that
        exists (it must be writable), not refused for a missing folder.
        """
        self._folders.add(_identity(folder))

    def add(self, key, path):
        """Check one output (named `key` in messages) and record it.

        Raises
        ------
        UserError
            Naming the file: an input or referenced file, the name of another
            output, a directory, or in a missing or read-only directory.
        """
        path = Path(path)
        identity = _identity(path)
        for other_key, other in self.outputs.items():
            if other == identity and other_key != key:
                raise UserError(
                    f"{path}: both {other_key} and {key} name this file; "
                    "give one of them another name"
                )
        description = self.protection_of(path)
        if description is not None:
            raise UserError(
                f"{path}: refusing to overwrite {description} ({key}); "
                "choose another output name"
            )
        if path.is_dir() and not key.endswith("directory"):
            raise UserError(f"{path}: {key} names a directory, not a file")
        directory = identity.parent
        while directory in self._folders and not directory.is_dir():
            directory = directory.parent  # a folder the program makes itself
        if not directory.is_dir():
            raise UserError(
                f"{path}: output directory {path.parent} does not exist ({key})"
            )
        if not os.access(directory, os.W_OK | os.X_OK):
            raise UserError(
                f"{path}: output directory {path.parent} is not writable ({key})"
            )
        self.outputs[key] = identity
        remove_stale_temporaries(path)

    def key_of(self, path):
        """The key under which `path` is planned, or None."""
        identity = _identity(path)
        for key, planned in self.outputs.items():
            if planned == identity:
                return key
        return None

    def is_planned(self, path):
        return _identity(path) in self.outputs.values()

    @staticmethod
    def identity(path):
        """The absolute path with symbolic links resolved, as outputs are compared."""
        return _identity(path)


def referenced_files(inputs):
    """{path: description} of the files the loaded inputs refer to.

    The image files of every image set (an NXmx/Eiger master and the data
    files it links or maps), the image set's mask, gain and pedestal files,
    and the data files of HDF5 files given directly.
    """
    from dials_diffuse.images.hdf5_sources import is_hdf5
    from dials_diffuse.images.hdf5_sources import referenced_files as hdf5_files

    found = {}

    def add_hdf5(path, owner):
        if is_hdf5(path):
            for data_file in hdf5_files(path):
                found.setdefault(data_file, f"a data file of {Path(owner).name}")

    for path in inputs.files:
        add_hdf5(path, path)
    imagesets = inputs.experiments.imagesets() if len(inputs.experiments) else []
    for imageset in imagesets:
        try:
            paths = sorted(set(imageset.paths()))
        except Exception:  # an image set without files (in-memory)
            paths = []
        for path in paths:
            found.setdefault(Path(path), "an image file of the input experiments")
        if paths:
            add_hdf5(paths[0], paths[0])
        lookup = getattr(imageset, "external_lookup", None)
        for item in ("mask", "gain", "pedestal", "dx", "dy"):
            name = getattr(getattr(lookup, item, None), "filename", None)
            if name:
                found.setdefault(Path(name), f"the image set's {item} file")
    return found
