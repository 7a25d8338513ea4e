"""A binned background image series: mean count rate in coarse blocks.

As mdx2's bin_image_series: the images (typically a background measurement:
air and sample-holder scatter without the crystal, or the sweep itself with
its peak mask) are cut into blocks of `bins` = (frames, rows, columns); each
block's value is the mean count of its valid (and unmasked) pixels divided
by the block's mean exposure time: a count rate per pixel (counts/s). The
block centres (mean phi in degrees, mean 0-based row and column index) are
the grid on which correct interpolates the background at each voxel's mean
(phi, iy, ix) and subtracts it from the count rate.

On a multi-panel detector every panel is binned on its own (iy, ix within
the panel): a `PanelBackgrounds`, one `BinnedBackground` per panel, which
correct evaluates on each voxel's panel.

The file background.nxs is `dials_diffuse.io.background_file`'s.
"""

import dataclasses
import logging

import numpy as np
from libtbx.phil import parse

from dials_diffuse.images.source import read_reusing
from dials_diffuse.util.errors import DataError
from dials_diffuse.util.progress import progress

logger = logging.getLogger(__name__)

#: The parameters of bin_image_series (its program includes them).
phil_scope = parse(
    """
bins = 10,20,20
  .type = ints(size=3, value_min=1)
  .help = "Frames, rows and columns per block."
"""
)


@dataclasses.dataclass
class BinnedBackground:
    """Background count rate (counts/s per pixel) on a coarse (phi, iy, ix) grid."""

    phi: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    rate: np.ndarray

    def __call__(self, phi, iy, ix):
        """Trilinear interpolation at points (clamped to the grid's span)."""
        from scipy.interpolate import RegularGridInterpolator

        axes = []
        points = []
        for axis, values in ((self.phi, phi), (self.iy, iy), (self.ix, ix)):
            values = np.asarray(values, dtype=np.float64)
            if len(axis) == 1:
                axis = np.array([axis[0] - 0.5, axis[0] + 0.5])
            axes.append(axis)
            points.append(np.clip(values, axis[0], axis[-1]))
        rate = self.rate
        for number, axis in enumerate((self.phi, self.iy, self.ix)):
            if len(axis) == 1:
                rate = np.repeat(rate, 2, axis=number)
        interpolator = RegularGridInterpolator(tuple(axes), rate)
        return interpolator(np.stack(points, axis=-1))


class PanelBackgrounds(list):
    """One `BinnedBackground` per detector panel (a multi-panel detector)."""

    def __call__(self, phi, iy, ix, panels):
        """Each point's panel's background count rate (counts/s per pixel)."""
        phi, iy, ix, panels = (np.asarray(v) for v in (phi, iy, ix, panels))
        rate = np.empty(len(panels))
        for number in np.unique(panels):
            rows = panels == number
            rate[rows] = self[int(number)](phi[rows], iy[rows], ix[rows])
        return rate


def _block_starts(size, step):
    return np.arange(0, size, step)


def bin_chunk(data, valid, row_step, column_step):
    """Sums of valid counts and numbers of valid pixels per block of one chunk.

    Returns
    -------
    counts, pixels : ndarray (row blocks, column blocks)
    """
    valid = valid.reshape(-1, *valid.shape[-2:])
    values = np.where(valid, data.reshape(valid.shape), 0).astype(np.float64)
    rows = _block_starts(valid.shape[1], row_step)
    columns = _block_starts(valid.shape[2], column_step)
    counts = np.add.reduceat(
        np.add.reduceat(values.sum(axis=0), rows, axis=0), columns, axis=1
    )
    pixels = np.add.reduceat(
        np.add.reduceat(valid.sum(axis=0), rows, axis=0), columns, axis=1
    )
    return counts, pixels


def bin_image_series(source, bins, phi, mask_file=None, frame_range=None, panel=0):
    """Bin one panel of an ImageSource into a BinnedBackground.

    Parameters
    ----------
    source : ImageSource
    bins : (int, int, int)
        Frames, rows and columns per block.
    phi : ndarray
        Rotation angle (degrees) at the centre of every frame of the source.
    mask_file : MaskFile, optional
        Pixels with mask 1 are left out.
    frame_range : (int, int), optional
    panel : int
        The panel (iy, ix of the result are within it).
    """
    return bin_panels(source, bins, phi, mask_file, frame_range, [panel])[0]


def bin_panels(source, bins, phi, mask_file=None, frame_range=None, panels=None):
    """Bin every panel (or those in `panels`) of an ImageSource; one
    BinnedBackground per panel, as `bin_image_series`.

    One pass, frame block by frame block with every panel of a block in
    turn, so a source that reads whole frames (a dxtbx imageset) reads each
    frame once, not once per panel.
    """
    first, stop = frame_range or (0, source.n_frames)
    panels = list(range(len(source.panel_shapes)) if panels is None else panels)
    frames_step, row_step, column_step = (int(b) for b in bins)
    seconds = np.asarray(source.exposure_times, dtype=np.float64)
    rates = {panel: [] for panel in panels}
    phis = {panel: [] for panel in panels}
    chunks = list(
        source.chunks(frames=frames_step, frame_range=(first, stop), panels=panels)
    )
    for chunk in progress(chunks, desc="bin_image_series", unit="chunk"):
        data, valid = read_reusing(source, chunk)
        frames = np.arange(chunk.frames.start, chunk.frames.stop)
        if mask_file is not None:
            valid = valid & ~mask_file.read(
                source.image_numbers[frames], panel=chunk.panel
            ).astype(bool)
        exposure = seconds[frames].mean()
        if not exposure > 0:
            raise DataError(
                f"images {source.image_numbers[frames[0]]}-{source.image_numbers[frames[-1]]} "
                "have no exposure time: cannot make count rates"
            )
        counts, pixels = bin_chunk(data, valid, row_step, column_step)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(pixels > 0, counts / pixels, np.nan) / exposure
        rates[chunk.panel].append(rate)
        phis[chunk.panel].append(float(np.mean(np.asarray(phi)[frames])))
    backgrounds = []
    for panel in panels:
        rows, columns = source.panel_shapes[panel]
        iy = np.array(
            [
                np.arange(r, min(r + row_step, rows)).mean()
                for r in _block_starts(rows, row_step)
            ]
        )
        ix = np.array(
            [
                np.arange(c, min(c + column_step, columns)).mean()
                for c in _block_starts(columns, column_step)
            ]
        )
        rate = np.stack(rates[panel])
        if np.all(np.isnan(rate)):
            where = f" of panel {panel}" if len(source.panel_shapes) > 1 else ""
            raise DataError(f"every block{where} is masked: no background")
        backgrounds.append(
            BinnedBackground(np.array(phis[panel]), iy, ix, _fill_empty_blocks(rate))
        )
    return backgrounds


def _fill_empty_blocks(rate):
    """Give blocks without valid pixels the value of the nearest valid block."""
    from scipy.ndimage import distance_transform_edt

    empty = np.isnan(rate)
    if not empty.any():
        return rate
    _, nearest = distance_transform_edt(empty, return_indices=True)
    return rate[tuple(nearest)]


def do_bin_image_series(source, params, mask_file=None, frame_range=None):
    """The binned background count rate of an image source (dials.diffuse.bin_image_series).

    Parameters
    ----------
    source : ImageSource
        The images (a data.nxs, an imageset); every panel is binned.
    params : PHIL extract with the parameters of `phil_scope`
        bins: frames, rows and columns per block.
    mask_file : MaskFile, optional
        Pixels with mask 1 are left out; it must cover the images binned.
    frame_range : (int, int), optional
        0-based half-open frames of the source; default all.

    Returns
    -------
    BinnedBackground, or PanelBackgrounds (one per panel) for a multi-panel detector
    """
    if params.bins is None:
        raise DataError(
            "bins is required: frames,rows,columns per block, e.g. bins=10,20,20"
        )
    first, stop = frame_range or (0, source.n_frames)
    if mask_file is not None:
        mask_file.check_covers(source.image_numbers[first:stop], source.panel_shapes)
    panels = bin_panels(
        source, params.bins, source.angles_deg, mask_file, (first, stop)
    )
    for number, background in enumerate(panels):
        logger.info(
            "Background%s on %d x %d x %d blocks: %.4g to %.4g counts/s per pixel",
            f" of panel {number}" if len(panels) > 1 else "",
            *background.rate.shape,
            float(np.min(background.rate)),
            float(np.max(background.rate)),
        )
    return panels[0] if len(panels) == 1 else PanelBackgrounds(panels)
