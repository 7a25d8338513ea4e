"""Still shots of an experiment list, read one block at a time.

Shots come from an experiment list (image files imported by dxtbx, or a
`.expt`): every image of every imageset is one shot (stills have one image
per experiment; an image series gives one shot per image). Shots in SACLA
DataConvert files are
read straight from HDF5 through `SACLASource` (the tag of each shot and
its dark flag come from the file); any other still images through their
dxtbx imageset. Never more than one block of shots is in memory.
"""

import copy
import logging

import numpy as np

from dials_diffuse.images.imageset import read_frame
from dials_diffuse.io.dials_mask import read_dials_mask
from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)


def _is_sacla(imageset):
    """True when the imageset's images come from our SACLA Format class."""
    from dials_diffuse.format.FormatSACLA import FormatSACLA

    try:
        format_class = imageset.get_format_class()
    except Exception:
        return False
    return format_class is not None and issubclass(format_class, FormatSACLA)


class Shots:
    """Still shots with a shared geometry, read in blocks.

    Parameters
    ----------
    experiments : dxtbx ExperimentList
        Every image of every imageset is a shot (images shared by several
        experiments count once); the imagesets must be readable.
    external_mask : ndarray of bool, optional
        (slow, fast) validity mask applied to every shot (single panel), or a
        list with one per panel; True = valid.

    Attributes
    ----------
    detector, beam : dxtbx models of the first shot (the geometry used).
    tags : ndarray of int64
        SACLA tag of each shot, else its 1-based image number in its series.
    dark : ndarray of bool
        Shutter-closed shots (SACLA), else all False.
    wavelengths : ndarray of float
        Wavelength of each shot in Å (its experiment's beam).
    panel_shapes : list of (rows, columns)
    """

    def __init__(self, experiments, external_mask=None):
        if len(experiments) == 0:
            raise DataError("no shots given: name image files or an experiment list")
        first = experiments[0]
        if first.imageset is None:
            raise DataError("the experiments carry no images")
        self.detector = first.detector
        self.beam = first.beam
        self.panel_shapes = [tuple(reversed(p.get_image_size())) for p in self.detector]
        self._sources = {}
        # One shot per image: (imageset, index in it, SACLA (path, index) or None).
        self._where = []
        tags, dark, wavelengths, seen = [], [], [], set()
        for experiment in experiments:
            imageset = experiment.imageset
            if imageset is None:
                raise DataError("an experiment carries no images")
            sacla = _is_sacla(imageset)
            for local, file_index in enumerate(imageset.indices()):
                path = imageset.get_path(local)
                if (path, file_index) in seen:  # experiments sharing images
                    continue
                seen.add((path, file_index))
                location = (path, int(file_index)) if sacla else None
                if location is not None:
                    source = self._sacla_source(path)
                    tags.append(int(source.tags[file_index]))
                    dark.append(bool(source.dark[file_index]))
                else:
                    tags.append(int(file_index) + 1)
                    dark.append(False)
                self._where.append((imageset, local, location))
                wavelengths.append(experiment.beam.get_wavelength())
        self.tags = np.array(tags, dtype=np.int64)
        self.dark = np.array(dark, dtype=bool)
        self.wavelengths = np.array(wavelengths, dtype=np.float64)
        self.n_pixels = int(sum(r * c for r, c in self.panel_shapes))
        self._external = self._external_mask(external_mask)

    def _sacla_source(self, path):
        from dials_diffuse.images.sacla import SACLASource

        if path not in self._sources:
            self._sources[path] = SACLASource(path)
        return self._sources[path]

    def _external_mask(self, mask):
        if mask is None:
            return None
        masks = mask if isinstance(mask, (list, tuple)) else [mask]
        if len(masks) != len(self.panel_shapes) or any(
            np.shape(m) != s for m, s in zip(masks, self.panel_shapes)
        ):
            raise DataError(
                f"the mask has shape {[np.shape(m) for m in masks]}, the detector "
                f"{self.panel_shapes}"
            )
        return np.concatenate([np.asarray(m, dtype=bool).ravel() for m in masks])

    def __len__(self):
        return len(self._where)

    def read(self, index):
        """One shot as flat arrays: (data float32 (n_pixels,), valid bool)."""
        imageset, local, location = self._where[index]
        if location is not None:
            data, valid = self._sacla_source(location[0]).read_shot(location[1])
            data = data.astype(np.float32, copy=False).ravel()
            valid = valid.ravel()
        else:
            panels, masks = read_frame(imageset, local)
            data = np.concatenate([p.ravel() for p in panels]).astype(np.float32)
            valid = np.concatenate([m.ravel() for m in masks])
        if self._external is not None:
            valid = valid & self._external
        return data, valid

    def blocks(self, indices, size=8):
        """Yield (indices, data (n, n_pixels) float32, valid (n, n_pixels) bool)."""
        indices = list(indices)
        for start in range(0, len(indices), size):
            chunk = indices[start : start + size]
            data = np.empty((len(chunk), self.n_pixels), dtype=np.float32)
            valid = np.empty((len(chunk), self.n_pixels), dtype=bool)
            for row, index in enumerate(chunk):
                data[row], valid[row] = self.read(index)
            yield chunk, data, valid

    def select(self, shots=None, tags=None, include_dark=False):
        """0-based indices of the shots chosen by index or tag (dark ones dropped).

        Parameters
        ----------
        shots : list of int, optional
            0-based shot indices.
        tags : list of int, optional
            SACLA tags (or image numbers for other formats).
        include_dark : bool
            Keep shutter-closed shots.
        """
        chosen = np.arange(len(self))
        if shots:
            bad = [s for s in shots if not 0 <= s < len(self)]
            if bad:
                raise DataError(
                    f"shot {bad[0]} does not exist: there are {len(self)} shots (0-based)"
                )
            chosen = np.array(sorted(set(shots)), dtype=np.int64)
        if tags:
            position = {int(t): i for i, t in enumerate(self.tags)}
            missing = [t for t in tags if t not in position]
            if missing:
                raise DataError(f"tag {missing[0]} is not among the shots")
            chosen = np.intersect1d(chosen, [position[t] for t in tags])
        if not include_dark:
            chosen = chosen[~self.dark[chosen]]
        if chosen.size == 0:
            raise DataError("no shots selected (dark shots are left out)")
        return [int(i) for i in chosen]

    def close(self):
        for source in self._sources.values():
            source.close()


def load_mask_file(path, panel_shapes):
    """A validity mask from a file: `.npy` (non-zero = valid, as SACLA
    mask.npy files) or a DIALS mask pickle (tuple of flex.bool, True = valid)."""
    path = str(path)
    if path.endswith(".npy"):
        try:
            masks = [np.load(path, allow_pickle=False) != 0]
        except Exception as error:
            raise DataError(f"{path}: not a readable mask ({error})") from error
    else:
        masks = read_dials_mask(path)
    shapes = [m.shape for m in masks]
    if shapes != list(panel_shapes):
        raise DataError(
            f"{path}: mask shape {shapes} does not match the detector {list(panel_shapes)}"
        )
    return masks


#: PHIL for programs that let users override the geometry of the images.
geometry_phil = """
geometry {
  distance = None
    .type = float(value_min=0)
    .help = "Override the sample-detector distance, in mm (single-panel"
            "detectors), e.g. for SACLA files that do not record it."
  wavelength = None
    .type = float(value_min=0)
    .help = "Override the wavelength of every shot, in Å."
  beam_centre = None
    .type = floats(size=2)
    .help = "Override the beam centre (fast, slow) in pixels, pixel centres"
            "at i+0.5 (as dials.import fast_slow_beam_centre=)."
}
"""


def override_geometry(experiments, distance=None, wavelength=None, beam_centre=None):
    """A copy of `experiments` with the distance (mm), wavelength (Å) or beam
    centre (fast, slow px on panel 0) replaced where given; the input when
    nothing is.

    Uses dxtbx's own helpers (set_detector_distance,
    set_fast_slow_beam_centre_mm), as dials.import does.
    """
    if distance is None and wavelength is None and beam_centre is None:
        return experiments
    for name, value in (("distance", distance), ("wavelength", wavelength)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise DataError(f"geometry.{name}={value:g}: it must be positive")
    from dxtbx.model.detector_helpers import (
        set_detector_distance,
        set_fast_slow_beam_centre_mm,
    )

    updated = copy.deepcopy(experiments)
    for beam in _unique(e.beam for e in updated):
        if wavelength is not None:
            beam.set_wavelength(float(wavelength))
    done = set()
    for experiment in updated:
        detector = experiment.detector
        if id(detector) in done:
            continue
        done.add(id(detector))
        if distance is not None:
            if len(detector) != 1:
                raise DataError("geometry.distance needs a single-panel detector")
            set_detector_distance(detector, float(distance))
        if beam_centre is not None:
            pixel = detector[0].get_pixel_size()
            mm = [beam_centre[0] * pixel[0], beam_centre[1] * pixel[1]]
            set_fast_slow_beam_centre_mm(detector, experiment.beam, mm, panel_id=0)
    return updated


def _unique(models):
    seen = {}
    for model in models:
        seen.setdefault(id(model), model)
    return list(seen.values())
