"""A rotation sweep ready for per-pixel work: experiment, images and geometry.

Every diffuse step works on one experiment (crystal, scan, detector of one
or more panels) and its images, from the `.expt`'s own image files or from a
data.nxs copy. `Sweep` bundles them with the
per-pixel s1 of every panel and the per-frame matrices the kernels need, and
runs a function over chunks of frames in parallel; a chunk is a block of
frames of one panel, so the kernels run panel by panel on that panel's s1.

Frame conventions: frames are numbered 0.. within the image source; the
frame with 1-based image number n spans array indices [n - 1, n], and its
geometry (rotation angle, crystal orientation) is taken at the frame centre,
array index n - 0.5 (DIALS's convention; mdx2 also uses frame centres).
"""

import functools
import logging
import threading

import dxtbx.model  # noqa: F401  (its converters unpickle the experiment: Dask workers)
import numpy as np

from dials_diffuse import geometry
from dials_diffuse.images.imageset import ImagesetSource
from dials_diffuse.images.source import frame_range
from dials_diffuse.io.image_series import NexusDataSource
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.progress import progress

logger = logging.getLogger(__name__)

# s1 per detector/beam geometry, so that Dask workers compute it once per
# process; the lock makes threads that start together compute it once too.
_S1_CACHE = {}
_S1_LOCK = threading.Lock()


def _pixel_s1_planes_cached(experiment, panel=0):
    """s1 of a panel's pixel centres as x, y, z planes (3, rows, columns)."""
    key = (
        str(experiment.detector[panel].to_dict()),
        tuple(experiment.beam.get_s0()),
    )
    with _S1_LOCK:
        if key not in _S1_CACHE:
            if len(_S1_CACHE) >= len(experiment.detector):
                _S1_CACHE.clear()
            s1 = geometry.panel_pixel_s1(experiment.detector[panel], experiment.beam)
            _S1_CACHE[key] = np.ascontiguousarray(np.moveaxis(s1, -1, 0))
        return _S1_CACHE[key]


class Sweep:
    """One experiment's rotation sweep: images plus the geometry of every pixel.

    Parameters
    ----------
    experiment : dxtbx Experiment
        With crystal, scan, goniometer and a detector of one or more panels.
    source : ImageSource
        Its images (frames in scan order), one array per panel.
    """

    def __init__(self, experiment, source):
        self.experiment = experiment
        self.source = source
        self._s1_planes = {}

    def __getstate__(self):
        return {"experiment": self.experiment, "source": self.source}

    def __setstate__(self, state):
        self.__init__(state["experiment"], state["source"])

    @property
    def shape(self):
        """(frames, rows, columns) of the image source (panel 0)."""
        return (self.source.n_frames, *self.source.panel_shapes[0])

    @property
    def n_panels(self):
        """Number of detector panels."""
        return len(self.source.panel_shapes)

    @property
    def s1_planes(self):
        """s1 of panel 0's pixel centres as x, y, z planes (3, rows, columns), inverse Angstrom."""
        return self.panel_s1_planes(0)

    def panel_s1_planes(self, panel):
        """s1 of a panel's pixel centres as x, y, z planes (3, rows, columns), inverse Angstrom.

        The layout the kernels take; computed once per process, geometry and panel.
        """
        if panel not in self._s1_planes:
            self._s1_planes[panel] = _pixel_s1_planes_cached(self.experiment, panel)
        return self._s1_planes[panel]

    @property
    def s1(self):
        """s1 (rows, columns, 3) of panel 0's pixel centres, inverse Angstrom (a view of the planes)."""
        return np.moveaxis(self.s1_planes, 0, -1)

    def s1_at(self, rows, columns, panel=0):
        """s1 (n, 3) of the centres of pixels (rows, columns) of a panel, inverse Angstrom.

        The full-panel array when it is already computed, else only these
        pixels (a few peak pixels need not cost the whole panel's geometry).
        """
        if panel in self._s1_planes:
            return np.moveaxis(self._s1_planes[panel], 0, -1)[rows, columns]
        panel = self.experiment.detector[panel]
        lab = geometry.lab_coordinates(
            panel, np.asarray(columns) + 0.5, np.asarray(rows) + 0.5
        )
        return geometry.pixel_s1(panel, self.experiment.beam, lab)

    def s0(self, frames):
        """The beam's s0 (n, 3) at each frame centre, inverse Angstrom."""
        return np.ascontiguousarray(
            geometry.beam_s0(self.experiment, self.frame_centres(frames)),
            dtype=np.float64,
        )

    def detector_mask(self, panel=0):
        """Valid pixels of a panel in the first frame (rows, columns): static mask and gaps.

        From a data.nxs the masked pixels (-1) of the first frame; from the
        images the format's and external masks and the trusted range.
        """
        chunk = next(self.source.chunks(frames=1, panels=[panel]))
        _, valid = self.source.read(chunk)
        return np.asarray(self.source.static_mask(panel), dtype=bool) & valid[0]

    def frame_centres(self, frames):
        """Array index z of the centre of each frame (0-based within the source)."""
        return self.source.image_numbers[frames] - 0.5

    def phi(self, frames):
        """Rotation angle (degrees) at the centre of each frame."""
        return geometry.rotation_angle_deg(
            self.experiment.scan, self.frame_centres(frames)
        )

    def matrices(self, frames):
        """hkl = M . (s1 - s0) matrices (n, 3, 3), C-contiguous, per frame."""
        return np.ascontiguousarray(
            geometry.hkl_matrices(self.experiment, self.frame_centres(frames))
        )

    def frame_range(self, image_range=None):
        """0-based half-open frame range of the source for a DIALS image_range
        (image numbers of the sequence: `dials_diffuse.images.source.frame_range`)."""
        return frame_range(self.source.image_numbers, image_range)

    def chunks(self, frames_per_chunk, frame_range=None):
        """Chunks of whole frames (all rows and columns), panel by panel."""
        return list(
            self.source.chunks(frames=frames_per_chunk, frame_range=frame_range)
        )

    def map_chunks(self, pmap, function, chunks, desc):
        """Yield `function(self, chunk)` for each chunk, in order, in parallel.

        One chunk more than there are workers is in flight: memory stays
        at about (workers + 1) chunks.
        """
        work = functools.partial(_call_on_chunk, function, self)
        yield from progress(
            pmap(work, chunks, in_flight=pmap.workers + 1),
            total=len(chunks),
            desc=desc,
            unit="chunk",
        )


def _call_on_chunk(function, sweep, chunk):
    return function(sweep, chunk)


def check_exposure_times(sweep, frames):
    """Exposure times (s) of every frame of the source, checked for `frames`.

    dxtbx's fast import of a CBF template (headers of the first image only)
    records the exposure time of the first image and zeros for the rest:
    that pattern is recognised, reported and filled with the first value (as
    mdx2 does). Any other zero or unknown exposure time among `frames` is a
    DataError naming the images.
    """
    seconds = np.array(sweep.source.exposure_times, dtype=np.float64)
    if len(seconds) > 1 and seconds[0] > 0 and not np.any(seconds[1:]):
        logger.warning(
            "Only the first image has an exposure time (%g s; a fast dials.import "
            "reads the first header only): using it for every image",
            seconds[0],
        )
        seconds[:] = seconds[0]
    bad = ~(seconds[frames] > 0)
    if np.any(bad):
        images = sweep.source.image_numbers[frames][bad]
        listed = ", ".join(str(n) for n in images[:10])
        more = f" and {images.size - 10} more" if images.size > 10 else ""
        raise DataError(
            f"image(s) {listed}{more} have a zero or unknown exposure time: "
            "count rates would divide by zero"
        )
    return seconds


def check_sweep_experiment(experiment):
    """DataError unless `experiment` is a rotation sweep (any number of panels)."""
    for model in ("crystal", "scan", "goniometer", "detector", "beam"):
        if getattr(experiment, model) is None:
            raise DataError(
                f"the experiment has no {model} model: give a refined rotation sweep"
            )


def sweep_from_experiment(experiment, imageset=None, data_file=None):
    """A Sweep of one refined rotation experiment, its models checked.

    Parameters
    ----------
    experiment : dxtbx Experiment
        With crystal, scan, goniometer, beam and a detector of one or more panels.
    imageset : dxtbx imageset, optional
        Its images, readable (loaded with their Format class); default the
        experiment's own.
    data_file : Path, optional
        A data.nxs of import_data to read the images from instead; it must
        match the detector and lie within the scan.
    """
    check_sweep_experiment(experiment)
    if data_file is None:
        imageset = imageset or experiment.imageset
        if imageset is None:
            raise DataError("the experiment has no images: give data.nxs or the images")
        return Sweep(experiment, ImagesetSource(imageset))
    source = NexusDataSource(data_file)
    expected = [
        tuple(reversed(panel.get_image_size())) for panel in experiment.detector
    ]
    found = [tuple(shape) for shape in source.panel_shapes]
    if found != expected:
        raise DataError(
            f"{data_file}: images are {found[0] if len(found) == 1 else found} "
            f"pixels, the experiment's detector "
            f"{expected[0] if len(expected) == 1 else expected}"
        )
    first, last = experiment.scan.get_image_range()
    numbers = source.image_numbers
    if numbers[0] < first or numbers[-1] > last:
        raise DataError(
            f"{data_file}: images {numbers[0]}-{numbers[-1]} are outside the "
            f"experiment's scan {first}-{last}"
        )
    return Sweep(experiment, source)


# PHIL shared by every program of the diffuse chain.
sweep_phil = """
image_range = None
  .type = ints(size=2, value_min=1)
  .help = "First and last image to process, inclusive, numbered as DIALS"
          "numbers the sequence's images (as dials.import and"
          "dials.slice_sequence image_range=). Default: all images of the data."
frames_per_chunk = 10
  .type = int(value_min=1, allow_none=False)
  .help = "Frames per chunk of work: memory grows with it (about 30 bytes per"
          "pixel-frame), parallel work is spread over chunks."
"""
