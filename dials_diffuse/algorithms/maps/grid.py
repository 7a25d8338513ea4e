"""A 3-D reciprocal-space map on the voxel grid, and its geometry.

A `ReciprocalMap` is what every map analysis step works on: values on a
regular grid of fractional Miller indices h = i / subdivide (and k, l), one
or more named layers of the same shape (``intensity``, its error, the two
halves of a split merge), NaN where nothing was measured, with the crystal's
unit cell (for |s| = 1/d) and space group (for Laue symmetry) when known.

Units: axes in reciprocal lattice units (r.l.u.), |s| in inverse Angstrom,
cell lengths in Angstrom and angles in degrees.
"""

import dataclasses

import numpy as np

from dials_diffuse.util.errors import DataError


@dataclasses.dataclass
class ReciprocalMap:
    """Layers of values on a grid of fractional Miller indices.

    Attributes
    ----------
    axes : list of three 1-D arrays
        Grid points along h, k and l (r.l.u.), multiples of 1/subdivide.
    layers : dict of str -> ndarray (len(h), len(k), len(l))
        The map (``intensity`` or another name) and optional companions:
        ``intensity_error``, ``intensity_1``, ``intensity_2`` (split halves).
    subdivide : ndarray of int (3,)
        Grid points per r.l.u. along h, k, l.
    unit_cell : tuple of 6 floats or None
        a, b, c (Angstrom), alpha, beta, gamma (degrees) of the crystal.
    space_group : str or None
        The space group symbol (its Laue group relates equivalent voxels).
    signal : str
        The name of the main layer.
    source : str
        Where the map came from (for messages).
    """

    axes: list
    layers: dict
    subdivide: np.ndarray
    unit_cell: tuple = None
    space_group: str = None
    signal: str = "intensity"
    source: str = "map"

    def __post_init__(self):
        self.axes = [np.asarray(a, dtype=np.float64) for a in self.axes]
        self.subdivide = np.asarray(self.subdivide, dtype=np.int64)
        shape = self.shape
        for name, values in self.layers.items():
            if values.shape != shape:
                raise DataError(
                    f"{self.source}: layer {name} has shape {values.shape}, "
                    f"the axes {shape}"
                )
        if self.signal not in self.layers:
            raise DataError(f"{self.source}: no layer '{self.signal}'")

    @property
    def shape(self):
        return tuple(len(a) for a in self.axes)

    @property
    def values(self):
        """The main layer."""
        return self.layers[self.signal]

    def with_layers(self, layers, signal=None):
        """A map on the same grid with other layers."""
        return dataclasses.replace(
            self, layers=dict(layers), signal=signal or next(iter(layers))
        )

    def first_index(self):
        """Integer grid coordinate (h * subdivide) of the first point on each axis."""
        return np.array(
            [int(round(a[0] * s)) for a, s in zip(self.axes, self.subdivide)]
        )

    def cell(self):
        """The cctbx unit cell; DataError naming the source if none is known."""
        if self.unit_cell is None:
            raise DataError(
                f"{self.source}: no unit cell known: give the refined .expt or "
                "unit_cell="
            )
        from cctbx import uctbx

        return uctbx.unit_cell(tuple(float(v) for v in self.unit_cell))

    def group(self):
        """The cctbx space group; DataError naming the source if none is known."""
        if self.space_group is None:
            raise DataError(
                f"{self.source}: no space group known: give the refined .expt or "
                "space_group="
            )
        from cctbx import sgtbx

        return sgtbx.space_group_info(str(self.space_group)).group()

    def s(self):
        """|s| = 1/d (inverse Angstrom) at every grid point, float64 (shape of the map)."""
        return resolution_grid(self.axes, self.cell())


def reciprocal_metric(cell):
    """The reciprocal metric tensor G* (3x3, inverse Angstrom squared): s^2 = h G* h."""
    astar2, bstar2, cstar2, ab, ac, bc = cell.reciprocal_metrical_matrix()
    return np.array([[astar2, ab, ac], [ab, bstar2, bc], [ac, bc, cstar2]])


def resolution_grid(axes, cell):
    """|s| (inverse Angstrom) on the grid spanned by `axes` (r.l.u.)."""
    metric = reciprocal_metric(cell)
    h = axes[0][:, None, None]
    k = axes[1][None, :, None]
    l = axes[2][None, None, :]  # noqa: E741 - Miller index name
    s2 = (
        metric[0, 0] * h * h
        + metric[1, 1] * k * k
        + metric[2, 2] * l * l
        + 2 * (metric[0, 1] * h * k + metric[0, 2] * h * l + metric[1, 2] * k * l)
    )
    return np.sqrt(np.maximum(s2, 0.0))


def inscribed_s(axes, cell):
    """The largest |s| (inverse Angstrom) of a sphere about h = 0 inside the grid's box.

    The face h = H of the box lies 1 / |a| * |H| from the origin (a the real
    cell length along a, since a . s = h).
    """
    lengths = cell.parameters()[:3]
    return float(
        min(min(abs(a[0]), abs(a[-1])) / length for a, length in zip(axes, lengths))
    )


@dataclasses.dataclass
class Shells:
    """Resolution shells of equal width in |s|.

    Attributes
    ----------
    edges : ndarray
        Shell boundaries in |s| (inverse Angstrom), from 0.
    """

    edges: np.ndarray

    @classmethod
    def of_width(cls, width, s_max):
        if width <= 0:
            raise DataError(f"shell width {width} must be positive")
        count = int(np.floor(s_max / width)) + 1
        return cls(np.arange(count + 1) * float(width))

    @property
    def count(self):
        return len(self.edges) - 1

    def index(self, s):
        """Shell number of each |s| (-1 beyond the last shell)."""
        number = np.searchsorted(self.edges, s, side="right") - 1
        return np.where(number >= self.count, -1, number)
