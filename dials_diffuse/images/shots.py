"""Every image of any number of image sets (sweeps and stills), shot by shot.

Programs that look at images one at a time (pixel histograms, frame
statistics) take any mix of sweeps and still image sets: an experiment list
with many imagesets, image files of several series, serial stills (SSX,
XFEL, grid scans). `ShotReader` lists every image of every distinct imageset
once, as a `Shot` (imageset, image number, the experiment it belongs to),
reads one shot (every panel, with the DIALS validity mask), and
`map_shots` runs a function over batches of shots in parallel (threads or
Dask), results in order, with only a few batches in memory.

Image numbers follow DIALS: the numbers of a sequence's scan (as
`image_range=`), and 1, 2, ... for a set of stills, in the imageset's order.
"""

import dataclasses

import numpy as np

from dials_diffuse.images.imageset import ImagesetSource, frame_file
from dials_diffuse.images.source import frame_range
from dials_diffuse.util.errors import DataError


@dataclasses.dataclass(frozen=True)
class Shot:
    """One image of one imageset.

    Attributes
    ----------
    imageset : int
        0-based position of its imageset among the distinct imagesets.
    experiment : int
        0-based index of the first experiment that uses the imageset.
    index : int
        0-based index of the image within its imageset.
    image : int
        DIALS image number (the scan's numbering for a sequence; 1-based
        position for stills).
    """

    imageset: int
    experiment: int
    index: int
    image: int


class ShotReader:
    """The images of every distinct imageset of an experiment list.

    Parameters
    ----------
    experiments : dxtbx ExperimentList
        Imagesets shared by several experiments (e.g. stills indexed as
        several lattices) are read once.

    Attributes
    ----------
    sources : list of ImagesetSource
        One per distinct imageset, in the order of the experiments.
    experiment_of : list of int
        The first experiment of each imageset.
    panel_shapes : list of (rows, columns)
        Of every imageset (they must agree).
    """

    def __init__(self, experiments):
        self.sources, self.experiment_of = [], []
        seen = {}
        for number, experiment in enumerate(experiments):
            imageset = experiment.imageset
            if imageset is None:
                raise DataError(f"experiment {number} carries no images")
            key = id(imageset)
            if key in seen:
                continue
            seen[key] = len(self.sources)
            self.sources.append(ImagesetSource(imageset))
            self.experiment_of.append(number)
        if not self.sources:
            raise DataError("no images given")
        self.panel_shapes = [tuple(s) for s in self.sources[0].panel_shapes]
        for source in self.sources[1:]:
            shapes = [tuple(s) for s in source.panel_shapes]
            if shapes != self.panel_shapes:
                raise DataError(
                    f"{frame_file(source.imageset, 0)}: a detector of "
                    f"{len(shapes)} panel(s) {shapes[:2]}..., the first images "
                    f"{len(self.panel_shapes)} panel(s) {self.panel_shapes[:2]}...: "
                    "give images of one detector"
                )

    def __getstate__(self):
        return {"sources": self.sources, "experiment_of": self.experiment_of}

    def __setstate__(self, state):
        self.sources = state["sources"]
        self.experiment_of = state["experiment_of"]
        self.panel_shapes = [tuple(s) for s in self.sources[0].panel_shapes]

    @property
    def detector(self):
        """The detector model of the first imageset."""
        return self.sources[0].imageset.get_detector()

    def shots(self, image_range=None):
        """Every image of every imageset, in order (list of Shot).

        image_range : (int, int), optional
            First and last DIALS image number (inclusive) to keep in each
            imageset; a DataError unless it lies within the numbers of the
            imageset (`images.source.frame_range`), or of one of several.
        """
        numbers = [np.asarray(source.image_numbers) for source in self.sources]
        if image_range is not None:
            first, last = image_range
            if len(numbers) == 1:
                frame_range(numbers[0], image_range)  # DIALS's rule and message
            elif not any(n[0] <= first <= last <= n[-1] for n in numbers if n.size):
                ranges = ", ".join(f"{n[0]}-{n[-1]}" for n in numbers if n.size)
                raise DataError(
                    f"image_range={first},{last} is outside the images of every "
                    f"image set (numbered {ranges})"
                )
        shots = []
        for number, images in enumerate(numbers):
            for index, image in enumerate(images):
                if image_range is None or first <= image <= last:
                    shots.append(
                        Shot(number, self.experiment_of[number], index, int(image))
                    )
        return shots

    def path(self, shot):
        """The file that holds a shot."""
        return frame_file(self.sources[shot.imageset].imageset, shot.index)

    def read(self, shot):
        """(data, valid) of a shot: one array per panel, the detector's dtype
        and the DIALS validity mask (gaps, bad pixels, trusted range, any
        external mask). Reads of one imageset are serialised; a read error
        is a DataError naming the file."""
        return self.sources[shot.imageset].frame(shot.index)


def _run_batch(item):
    function, reader, batch = item
    return function(reader, batch)


def batches(shots, size):
    """`shots` cut into lists of at most `size`."""
    return [shots[i : i + size] for i in range(0, len(shots), size)]


def map_shots(function, reader, shots, pmap=None, batch_size=8):
    """Yield ``function(reader, batch)`` for batches of shots, in order.

    `function` (module level, for Dask) reads its shots with
    ``reader.read(shot)`` and returns what the caller combines; batches run
    in parallel on `pmap` (a `ParallelMap`; default: here, one at a time).
    """
    items = [(function, reader, batch) for batch in batches(shots, batch_size)]
    if pmap is None:
        yield from map(_run_batch, items)
    else:
        yield from pmap(_run_batch, items)
