"""Recognise and load a program's positional files by kind.

- `.expt` (and DIALS `.json` experiment lists): a dxtbx ExperimentList;
- `.refl`: a `flex.reflection_table`;
- `.nxs`/`.h5` written by dials-diffuse (root attribute ``creator``);
- anything else: image files, imported through dxtbx's Format classes (every
  format DIALS reads, Eiger/NXmx master files among them).

Each problem (missing, unreadable, corrupt or truncated file, a file no
Format class understands) is a `UserError` that names the file.

Then what programs make of them: the experiments with readable images
(`readable_experiments`), the input .nxs holding a given group
(`nexus_input`), and the one rotation sweep of a diffuse-chain program
(`load_sweep`, `load_sweep_for_program`: images from data.nxs or the .expt),
and the still shots of an XFEL program (`shots_from_inputs`).
"""

import logging
from pathlib import Path

from dials_diffuse.util.errors import UserError

logger = logging.getLogger(__name__)

EXPERIMENT_SUFFIXES = (".expt", ".json")
REFLECTION_SUFFIXES = (".refl",)
HDF5_SUFFIXES = (".nxs", ".h5", ".hdf5", ".nx5")
OUR_CREATOR_PREFIX = "dials-diffuse"


class Inputs:
    """The positional files of one program run, loaded.

    Attributes
    ----------
    experiments : dxtbx ExperimentList
        From `.expt` files and image files, in command-line order.
    reflections : list of flex.reflection_table
        One table per `.refl` file, experiment ids renumbered to follow the
        experiments of earlier files.
    nexus : list of Path
        Files written by dials-diffuse (data.nxs, mask.nxs, tables).
    files : list of Path
        Every input file; outputs are never written over them.
    claimed : list of Path
        Files the program opens itself (see `Program(claim_file=)`).
    """

    def __init__(self, experiments, reflections, nexus, files):
        self.experiments = experiments
        self.reflections = reflections
        self.nexus = nexus
        self.files = files
        self.claimed = []
        self._protected = {_identity(path) for path in files}

    def add_claimed(self, paths):
        """Record files the program opens itself; they are inputs too."""
        for path in map(Path, paths):
            self.claimed.append(path)
            self.files.append(path)
            self._protected.add(_identity(path))

    def protect(self, path):
        """Also refuse to write outputs over `path` (e.g. the log file)."""
        if path:
            self._protected.add(_identity(Path(path)))

    def is_input(self, path):
        """True when `path` names one of the input files."""
        return _identity(Path(path)) in self._protected

    def describe(self):
        """The input file names, for the JSON summary."""
        return [str(path) for path in self.files]


def _identity(path):
    try:
        return Path(path).resolve()
    except OSError:
        return Path(path).absolute()


def _is_our_hdf5(path):
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            creator = handle.attrs.get("creator", b"")
    except OSError:
        return False
    if isinstance(creator, bytes):
        creator = creator.decode(errors="replace")
    return str(creator).startswith(OUR_CREATOR_PREFIX)


def load_experiments(path, check_format=True):
    """Load an experiment list file; a UserError names the file on failure."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    try:
        experiments = ExperimentListFactory.from_json_file(
            str(path), check_format=check_format
        )
    except Exception as error:
        if check_format:
            try:
                ExperimentListFactory.from_json_file(str(path), check_format=False)
            except Exception:
                raise UserError(
                    f"{path}: not a readable experiment list ({_short(error)})"
                ) from error
            raise UserError(
                f"{path}: the images it refers to cannot be read ({_short(error)})"
            ) from error
        raise UserError(
            f"{path}: not a readable experiment list ({_short(error)})"
        ) from error
    if len(experiments) == 0:
        raise UserError(f"{path}: contains no experiments")
    return experiments


def load_reflections(path):
    """Load a reflection table; a UserError names the file on failure."""
    from dials.array_family import flex

    try:
        return flex.reflection_table.from_file(str(path))
    except Exception as error:
        if _starts_with(path, HDF5_SIGNATURE):
            raise UserError(
                f"{path}: a reflection file in the HDF5 format of newer DIALS, which "
                "the DIALS installed here cannot read: save it as MessagePack with "
                "the DIALS that wrote it (flex.reflection_table.from_file(...)"
                ".as_msgpack_file(...)) or run this program there"
            ) from error
        raise UserError(
            f"{path}: not a readable reflection file ({_short(error)})"
        ) from error


#: The first bytes of every HDF5 file.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _starts_with(path, signature):
    with open(path, "rb") as handle:
        return handle.read(len(signature)) == signature


def import_images(paths):
    """Experiments for image files through dxtbx's Format classes.

    Every file must be understood by some Format class; the first that is not
    is named in the error.
    """
    from dxtbx.format.Registry import get_format_class_for_file
    from dxtbx.model.experiment_list import ExperimentListFactory

    for path in paths:
        try:
            format_class = get_format_class_for_file(str(path))
        except Exception as error:
            raise UserError(
                f"{path}: cannot be read as an image ({_short(error)})"
            ) from error
        if format_class is None:
            raise UserError(f"{path}: not an image format that dxtbx can read")
    try:
        experiments = ExperimentListFactory.from_filenames([str(p) for p in paths])
    except Exception as error:
        raise UserError(
            f"{paths[0]}: cannot import images ({_short(error)})"
        ) from error
    if len(experiments) == 0:
        raise UserError(f"{paths[0]}: no images could be imported")
    for experiment in experiments:
        if experiment.detector is None or experiment.beam is None:
            path = experiment.imageset.get_path(0)
            raise UserError(f"{path}: the header describes no detector or beam")
    return experiments


def load_inputs(file_names, reads_images=False):
    """Load every positional file by kind; see the module docstring."""
    from dxtbx.model.experiment_list import ExperimentList

    experiments = ExperimentList()
    reflections = []
    nexus = []
    image_files = []
    paths = [Path(name) for name in file_names]
    seen = {}
    for path in paths:
        if _identity(path) in seen:
            raise UserError(f"{path}: given twice (as {seen[_identity(path)]} before)")
        seen[_identity(path)] = path
        if not path.exists():
            raise UserError(f"{path}: no such file")
        if path.is_dir():
            raise UserError(f"{path}: is a directory, not a file")
        if not _readable(path):
            raise UserError(f"{path}: cannot be read (permission denied)")
        if path.stat().st_size == 0:
            raise UserError(f"{path}: file is empty")
    for path in paths:
        suffix = path.suffix.lower()
        if suffix in EXPERIMENT_SUFFIXES:
            loaded = load_experiments(path, check_format=reads_images)
            experiments.extend(loaded)
            logger.info("Read %d experiment(s) from %s", len(loaded), path)
        elif suffix in REFLECTION_SUFFIXES:
            table = load_reflections(path)
            reflections.append(table)
            logger.info("Read %d reflections from %s", table.size(), path)
        elif suffix in HDF5_SUFFIXES and _is_our_hdf5(path):
            nexus.append(path)
            logger.info("Read %s", path)
        else:
            image_files.append(path)
    if image_files:
        imported = import_images(image_files)
        experiments.extend(imported)
        n_images = sum(len(e.imageset) for e in imported)
        logger.info("Imported %d image(s) from %d file(s)", n_images, len(image_files))
    return Inputs(experiments, reflections, nexus, paths)


def readable_experiments(inputs):
    """Every experiment of the inputs, with imagesets whose images can be read.

    The `.expt` files loaded again with their Format classes (in command-line
    order, as `inputs.experiments`); experiments imported from image files
    are already readable.
    """
    from dxtbx.model.experiment_list import ExperimentList

    files = [p for p in inputs.files if p.suffix.lower() in EXPERIMENT_SUFFIXES]
    if not files:
        return inputs.experiments
    experiments = ExperimentList()
    for path in files:
        experiments.extend(load_experiments(path, check_format=True))
    return experiments


def readable_imageset(inputs, experiment):
    """The experiment's imageset with its Format class (images checked readable).

    Programs load experiment files without opening the images (data.nxs may
    replace them); without data.nxs the experiment file is loaded again with
    its images. Experiments imported from image files are already readable.
    """
    if experiment.imageset is None:
        raise UserError("the experiment has no images: give data.nxs or the images")
    return readable_experiments(inputs)[0].imageset


def nexus_inputs_by_group(inputs, groups):
    """Our .nxs input files sorted by the /entry/<group> each holds.

    Returns a dict: group -> list of paths in the order given, and None ->
    the paths that hold none of `groups`.
    """
    import h5py

    found = {group: [] for group in (*groups, None)}
    for path in inputs.nexus:
        with h5py.File(path, "r") as handle:
            group = next((g for g in groups if f"entry/{g}" in handle), None)
        found[group].append(path)
    return found


def nexus_input(inputs, group):
    """The input file among our .nxs files that holds /entry/<group>, or None.

    More than one such file is a UserError.
    """
    found = nexus_inputs_by_group(inputs, [group])[group]
    if len(found) > 1:
        raise UserError(f"two files hold /entry/{group}: {found[0]} and {found[1]}")
    return found[0] if found else None


def load_sweep(inputs, data_file=None):
    """The Sweep of a program's inputs: one experiment, images from data.nxs or the .expt.

    Parameters
    ----------
    inputs : Inputs
    data_file : Path, optional
        A data.nxs to read the images from; default the experiment's images.
    """
    from dials_diffuse.algorithms.diffuse.sweep import sweep_from_experiment

    experiments = inputs.experiments
    if len(experiments) == 0:
        raise UserError("no experiment given: name a refined .expt file")
    if len(experiments) > 1:
        raise UserError(
            f"the input holds {len(experiments)} experiments: give one sweep "
            "(dials.split_experiments makes one file per experiment)"
        )
    experiment = experiments[0]
    imageset = None
    if data_file is None and experiment.imageset is not None:
        imageset = readable_imageset(inputs, experiment)
    return sweep_from_experiment(experiment, imageset, data_file)


def load_sweep_for_program(params, inputs):
    """The Sweep and frame range a diffuse program works on (images from data.nxs if given).

    `params.image_range` (`dials_diffuse.algorithms.diffuse.sweep.sweep_phil`)
    selects the frames.
    """
    sweep = load_sweep(inputs, nexus_input(inputs, "image_series"))
    return sweep, sweep.frame_range(params.image_range)


def shots_from_inputs(inputs, mask_path=None, geometry=None):
    """The still Shots of a program's inputs, with an optional mask file.

    Parameters
    ----------
    inputs : Inputs
    mask_path : str, optional
        A mask file (`dials_diffuse.algorithms.xfel.shots.load_mask_file`);
        protected from being overwritten.
    geometry : extracted `geometry_phil` scope, optional
        Overrides of distance, wavelength and beam centre.

    Returns
    -------
    (Shots, ExperimentList)
        The shots and the experiments they use (with any overrides).
    """
    from dials_diffuse.algorithms.xfel.shots import (
        Shots,
        load_mask_file,
        override_geometry,
    )

    if inputs.nexus:
        raise UserError(
            f"{inputs.nexus[0]}: a dials-diffuse output file, not still images"
        )
    if len(inputs.experiments) == 0:
        raise UserError("no shots given: name SACLA/still image files or an .expt")
    mask = None
    if mask_path:
        inputs.protect(mask_path)
        detector = inputs.experiments[0].detector
        shapes = [tuple(reversed(p.get_image_size())) for p in detector]
        mask = load_mask_file(mask_path, shapes)
    experiments = inputs.experiments
    if geometry is not None:
        experiments = override_geometry(
            experiments, geometry.distance, geometry.wavelength, geometry.beam_centre
        )
    return Shots(experiments, external_mask=mask), experiments


def _readable(path):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError:
        return False
    return True


def _short(error):
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
