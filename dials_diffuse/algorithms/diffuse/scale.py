"""mdx2's scaling model, refined from the redundant voxels of a corrected table.

Every observation i of asymmetric-unit voxel v is modelled as (mdx2 1.0.5's
``ScaledData.predict``)::

    I_i = a_i d_i (b_i M_v + c_i)

with M_v the merged intensity and four smooth terms, each piecewise
(multi)linear between nodes on a regular grid:

- b(phi), the scaling term ("scaling_model"): beam intensity, illuminated
  volume, radiation damage along the sweep (phi in degrees);
- c(s, phi), the offset ("offset_model"): an additive background left after
  correction, against s = 1/d (inverse Angstrom) and phi;
- d(ix, iy), the detector term ("detector_model"): a smooth gain across the
  detector face (pixel indices);
- a(ix, iy, phi), the absorption term ("absorption_model"): the crystal and
  mount absorbing differently along the sweep and across the detector.

Applying the model (``ScaleModel.apply``, used by merge) gives the scaled
intensity I_i / (a b d) - c / b with error sigma_i / (a b d).

Refinement is mdx2's alternating weighted least squares: merge with the
current model, then, holding M and the other terms, solve the linear least
squares problem for one term's node values u,

    min_u sum_i (I_i - Q_i - P_i (A u)_i)^2 / sigma_i^2 + sum_k alpha_k |B_k u|^2

(A the interpolation matrix, P, Q what the other terms contribute, B_k the
smoothness restraints: second differences along phi or s, the neighbour
Laplacian across the detector; alpha_k = weight_k tr(A'WA) / tr(B_k'B_k),
mdx2's normalisation, so weights are relative to the data). The stages run
in mdx2's order, each until the reduced chi-square improves by less than its
tolerance, each followed by rejection of outliers: b; b with c; c; d; a.

Where we differ from mdx2, and why:

- a, b and d are normalised to a mean of 1 over the observations after each
  fit (compensated in c), so merged intensities stay on the corrected
  table's scale (mdx2 leaves the overall scale free);
- nodes are flat beyond the ends of their grid (mdx2 gives 0 there);
- outliers are observations more than `outlier` errors *above* the model,
  like merge's rejection (mdx2 rejects those below it);
- the normal equations are solved directly (sparse LU), not iteratively.

Only voxels observed at least twice constrain the model.
"""

import dataclasses
import functools
import logging

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

from dials_diffuse.io.tables import Table, load_table, table_names
from dials_diffuse.util.errors import UserError

logger = logging.getLogger(__name__)

#: Term name -> (table name, coordinates, value column).
TERMS = {
    "scaling": ("scaling_model", ("phi",), "scale"),
    "offset": ("offset_model", ("s", "phi"), "offset"),
    "detector": ("detector_model", ("ix", "iy"), "scale"),
    "absorption": ("absorption_model", ("ix", "iy", "phi"), "scale"),
}
MODEL_TABLES = {table: name for name, (table, _, _) in TERMS.items()}


# --- terms on grids of nodes ---------------------------------------------------


def _bracket(axis, x):
    """Lower node index and fraction of each x between nodes (flat beyond the ends)."""
    x = np.asarray(x, dtype=np.float64)
    if len(axis) == 1:
        return np.zeros(len(x), dtype=np.int64), np.zeros(len(x))
    position = np.clip((x - axis[0]) / (axis[1] - axis[0]), 0, len(axis) - 1)
    lower = np.minimum(np.floor(position).astype(np.int64), len(axis) - 2)
    return lower, position - lower


@dataclasses.dataclass
class GridTerm:
    """One term of the model: values on a regular grid of nodes, interpolated.

    Attributes
    ----------
    name : str
        "scaling", "offset", "detector" or "absorption" (see `TERMS`).
    axes : dict of str -> ndarray
        Node positions along each coordinate (evenly spaced, increasing),
        in the coordinate's units (phi in degrees, s in inverse Angstrom,
        ix/iy in pixels).
    values : ndarray
        Node values, shape (len(axis) for each axis), C order.
    """

    name: str
    axes: dict
    values: np.ndarray

    @property
    def coordinates(self):
        return tuple(self.axes)

    @property
    def shape(self):
        return tuple(len(axis) for axis in self.axes.values())

    def matrix(self, *coordinates):
        """Sparse interpolation matrix (observations x nodes), multilinear."""
        n = len(coordinates[0])
        index, weight = [np.zeros(n, dtype=np.int64)], [np.ones(n)]
        for axis, x in zip(self.axes.values(), coordinates):
            lower, fraction = _bracket(axis, x)
            upper = np.minimum(lower + 1, len(axis) - 1)
            index = [i * len(axis) + j for i in index for j in (lower, upper)]
            weight = [w * f for w in weight for f in (1 - fraction, fraction)]
        rows = np.tile(np.arange(n), len(index))
        return sparse.csr_matrix(
            (np.concatenate(weight), (rows, np.concatenate(index))),
            shape=(n, int(np.prod(self.shape))),
        )

    def __call__(self, *coordinates):
        """The term at the given coordinates (one array per coordinate)."""
        return self.matrix(*coordinates) @ self.values.ravel()

    def at(self, frame):
        """The term at every row of a table (pandas) with the coordinate columns."""
        return self(*(frame[c].to_numpy(np.float64) for c in self.coordinates))

    def to_table(self, attrs=None):
        """Table `<name>_model`: one row per node, coordinate columns then the value."""
        table_name, _, value_column = TERMS[self.name]
        mesh = np.meshgrid(*self.axes.values(), indexing="ij")
        columns = {c: m.ravel() for c, m in zip(self.coordinates, mesh)}
        columns[value_column] = self.values.ravel()
        return Table(table_name, columns, {"shape": self.shape, **(attrs or {})})

    @classmethod
    def from_table(cls, table):
        """The term stored by `to_table` (also the older b(phi)-only scale.nxs)."""
        name = MODEL_TABLES[table.name]
        _, coordinates, value_column = TERMS[name]
        axes = {c: np.unique(np.asarray(table[c], np.float64)) for c in coordinates}
        shape = tuple(len(axis) for axis in axes.values())
        values = np.asarray(table[value_column], np.float64).reshape(shape)
        return cls(name, axes, values)


def _axis_nodes(values, step=None, count=None, whole=True):
    """Evenly spaced nodes covering `values`: every `step`, or `count` of them.

    With `whole`, the ends are rounded out to whole units (mdx2's
    ``integer_limits``).
    """
    low, high = float(np.min(values)), float(np.max(values))
    if whole:
        low, high = np.floor(low), np.ceil(high)
    if count is None:
        count = int(round((high - low) / step)) + 1 if step > 0 else 1
    return np.linspace(low, high, max(1, int(count)))


# --- restraints ------------------------------------------------------------------


def _kron_along(shape, axis, operator):
    """`operator` acting along one axis of a C-ordered grid, identity elsewhere."""
    factors = [sparse.identity(n, format="csr") for n in shape]
    factors[axis] = sparse.csr_matrix(operator)
    return functools.reduce(lambda x, y: sparse.kron(x, y, format="csr"), factors)


def curvature_restraint(shape, axis):
    """Second differences (-1/2, 1, -1/2) of neighbouring nodes along `axis` (mdx2's)."""
    n = shape[axis]
    if n < 3:
        return sparse.csr_matrix((0, int(np.prod(shape))))
    operator = sparse.diags([-0.5, 1.0, -0.5], [0, 1, 2], shape=(n - 2, n))
    return _kron_along(shape, axis, operator)


def laplacian_restraint(shape, axes):
    """Each node minus the mean of its neighbours along `axes` (mdx2's detector B)."""
    size = int(np.prod(shape))
    adjacency = sparse.csr_matrix((size, size))
    for axis in axes:
        n = shape[axis]
        path = sparse.diags([np.ones(n - 1), np.ones(n - 1)], [-1, 1], shape=(n, n))
        adjacency = adjacency + _kron_along(shape, axis, path)
    neighbours = np.asarray(adjacency.sum(axis=1)).ravel()
    if np.any(neighbours == 0):
        return sparse.csr_matrix((0, size))
    return (
        sparse.identity(size, format="csr") - sparse.diags(1 / neighbours) @ adjacency
    )


# --- settings (mdx2 1.0.5's defaults) ---------------------------------------------


@dataclasses.dataclass
class ScalingSettings:
    """b(phi): nodes every `phi_step` degrees, curvature weight `smoothness`."""

    phi_step: float = 1.0
    smoothness: float = 1.0
    cycles: int = 10
    tolerance: float = 1e-4
    outlier: float = 10.0


@dataclasses.dataclass
class OffsetSettings:
    """c(s, phi): `s_nodes` nodes in s, every `phi_step` degrees in phi.

    `ridge` pulls nodes towards 0 (weight relative to the largest diagonal
    element of A'WA). The data fix c only up to b(phi) f(s) (merging absorbs
    any f(s)): after each fit the offset is shifted by such a term so that
    at every s its smallest node equals `minimum` (mdx2's ``offset.min``,
    a non-negative background; None: no shift).
    """

    phi_step: float = 2.5
    s_nodes: int = 31
    smoothness_s: float = 1.0
    smoothness_phi: float = 1.0
    ridge: float = 0.001
    minimum: float = 0.0
    cycles: int = 5
    tolerance: float = 1e-3
    outlier: float = 5.0


@dataclasses.dataclass
class DetectorSettings:
    """d(ix, iy): `x_nodes` x `y_nodes` nodes over the detector face."""

    x_nodes: int = 200
    y_nodes: int = 200
    smoothness: float = 1.0
    cycles: int = 5
    tolerance: float = 1e-3
    outlier: float = 5.0


@dataclasses.dataclass
class AbsorptionSettings:
    """a(ix, iy, phi): `x_nodes` x `y_nodes` nodes, every `phi_step` degrees."""

    phi_step: float = 5.0
    x_nodes: int = 20
    y_nodes: int = 20
    smoothness_xy: float = 10.0
    smoothness_phi: float = 1.0
    cycles: int = 5
    tolerance: float = 1e-4
    outlier: float = 5.0


SETTINGS = {
    "scaling": ScalingSettings,
    "offset": OffsetSettings,
    "detector": DetectorSettings,
    "absorption": AbsorptionSettings,
}


def _new_term(name, settings, observations):
    """A term of neutral values (1, or 0 for the offset) with nodes covering the data."""
    column = {c: observations[c].to_numpy(np.float64) for c in TERMS[name][1]}
    if name == "scaling":
        axes = {"phi": _axis_nodes(column["phi"], step=settings.phi_step)}
    elif name == "offset":
        axes = {
            "s": _axis_nodes(column["s"], count=settings.s_nodes, whole=False),
            "phi": _axis_nodes(column["phi"], step=settings.phi_step),
        }
    else:
        axes = {
            "ix": _axis_nodes(column["ix"], count=settings.x_nodes),
            "iy": _axis_nodes(column["iy"], count=settings.y_nodes),
        }
        if name == "absorption":
            axes["phi"] = _axis_nodes(column["phi"], step=settings.phi_step)
    shape = tuple(len(a) for a in axes.values())
    return GridTerm(name, axes, np.full(shape, 0.0 if name == "offset" else 1.0))


def _restraints(name, settings, shape):
    """(matrix, weight) pairs of a term's smoothness restraints."""
    if name == "scaling":
        return [(curvature_restraint(shape, 0), settings.smoothness)]
    if name == "offset":
        return [
            (curvature_restraint(shape, 0), settings.smoothness_s),
            (curvature_restraint(shape, 1), settings.smoothness_phi),
        ]
    if name == "detector":
        return [(laplacian_restraint(shape, (0, 1)), settings.smoothness)]
    return [
        (laplacian_restraint(shape, (0, 1)), settings.smoothness_xy),
        (curvature_restraint(shape, 2), settings.smoothness_phi),
    ]


# --- the model -------------------------------------------------------------------


@dataclasses.dataclass
class ScaleModel:
    """The terms present (any of scaling, offset, detector, absorption)."""

    terms: dict = dataclasses.field(default_factory=dict)

    def factors(self, frame):
        """(a, b, c, d) at every row of a table (pandas); absent terms neutral."""
        n = len(frame)
        value = {"absorption": 1.0, "scaling": 1.0, "offset": 0.0, "detector": 1.0}
        value.update({name: term.at(frame) for name, term in self.terms.items()})
        a, b, c, d = (
            np.broadcast_to(np.asarray(value[name], np.float64), (n,))
            for name in ("absorption", "scaling", "offset", "detector")
        )
        return a, b, c, d

    def apply(self, frame):
        """Scaled (intensity, intensity_error) of a table: I/(abd) - c/b, sigma/(abd)."""
        a, b, c, d = self.factors(frame)
        scale = a * b * d
        intensity = frame["intensity"].to_numpy(np.float64)
        error = frame["intensity_error"].to_numpy(np.float64)
        return intensity / scale - c / b, error / scale

    def missing_columns(self, frame):
        """Coordinate columns the terms need that the table lacks."""
        needed = {c for term in self.terms.values() for c in term.coordinates}
        return sorted(needed - set(frame))

    def to_tables(self, attrs=None):
        return [term.to_table(attrs) for term in self.terms.values()]

    @classmethod
    def from_file(cls, path, which=None):
        """The terms stored in a scale.nxs (only those named in `which`, if given)."""
        terms = {}
        for table_name in table_names(path):
            name = MODEL_TABLES.get(table_name)
            if name and (which is None or name in which):
                terms[name] = GridTerm.from_table(load_table(path, table_name))
        if not terms and which is None:
            raise UserError(f"{path}: no scaling model (/entry/*_model) in it")
        return cls(terms)


def is_model_file(path):
    """True if the file holds at least one model table."""
    return any(name in MODEL_TABLES for name in table_names(path))


# --- refinement -------------------------------------------------------------------


class _Refinement:
    """Observations, voxel groups, the current model and the outlier mask."""

    def __init__(self, observations, model):
        self.frame = observations
        self.intensity = observations["intensity"].to_numpy(np.float64)
        self.sigma = observations["intensity_error"].to_numpy(np.float64)
        keys = observations[["h", "k", "l"]].to_numpy(np.float64)
        self.group = np.unique(keys, axis=0, return_inverse=True)[1].ravel()
        self.n_groups = int(self.group.max()) + 1 if len(self.group) else 0
        self.model = model
        self.matrices = {}
        usable = np.isfinite(self.intensity) & np.isfinite(self.sigma)
        usable &= self.sigma > 0
        multiplicity = np.bincount(self.group[usable], minlength=self.n_groups)
        self.use = usable & (multiplicity[self.group] >= 2)

    def matrix(self, name):
        if name not in self.matrices:
            self.matrices[name] = self.model.terms[name].matrix(
                *(self.frame[c].to_numpy(np.float64) for c in TERMS[name][1])
            )
        return self.matrices[name]

    def factors(self):
        value = {"absorption": 1.0, "scaling": 1.0, "offset": 0.0, "detector": 1.0}
        for name, term in self.model.terms.items():
            value[name] = self.matrix(name) @ term.values.ravel()
        return (
            value["absorption"],
            value["scaling"],
            value["offset"],
            value["detector"],
        )

    def merge(self):
        """Merged intensity of each voxel under the current model (NaN if none)."""
        a, b, c, d = self.factors()
        scale = a * b * d * np.ones(len(self.intensity))
        scaled = self.intensity / scale - c / b
        weight = np.where(self.use, (scale / self.sigma) ** 2, 0.0)
        total = np.bincount(self.group, weights=weight, minlength=self.n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (
                np.bincount(
                    self.group, weights=weight * scaled, minlength=self.n_groups
                )
                / total
            )

    def residuals(self, merged):
        """(I - a d (b M + c)) / sigma of every observation."""
        a, b, c, d = self.factors()
        return (self.intensity - a * d * (b * merged[self.group] + c)) / self.sigma

    def chi_square(self, merged):
        return float(np.mean(self.residuals(merged)[self.use] ** 2))

    def _design(self, name, merged):
        """Rows of the term's least-squares problem: I = Q + P (A u), used rows only."""
        a, b, c, d = self.factors()
        m = merged[self.group]
        P, Q = {
            "scaling": (a * d * m, a * d * c),
            "offset": (a * d, a * b * d * m),
            "detector": (a * (b * m + c), 0.0),
            "absorption": (d * (b * m + c), 0.0),
        }[name]
        n = len(self.intensity)
        P = np.broadcast_to(P, (n,))[self.use]
        Q = np.broadcast_to(Q, (n,))[self.use]
        return sparse.diags(P / self.sigma[self.use]) @ self.matrix(name)[self.use], Q

    def fit(self, names, merged, settings):
        """Refine the nodes of `names` together, holding M and the other terms.

        The prediction a d (b M + c) is linear in the nodes of any one term,
        and in those of b and c together: one linear least-squares problem
        (normal equations with the restraints, each weighted relative to
        its own term's data), then the offset's floor and the normalisation.
        """
        blocks, penalties, ridges = [], [], []
        rest = 0.0
        for name in names:
            design, Q = self._design(name, merged)
            # The other terms' contribution, counted once: Q of the offset
            # is the b part and vice versa, so only the first block's Q is
            # subtracted when two terms are fitted together.
            rest = Q if not blocks else rest
            blocks.append(design)
            # The diagonal of A'WA: column sums of squares (A'WA itself is
            # formed once, for all blocks together).
            diagonal = np.asarray(design.multiply(design).sum(axis=0)).ravel()
            data_trace = diagonal.sum()
            size = len(diagonal)
            penalty = sparse.csr_matrix((size, size))
            for restraint, weight in _restraints(
                name, settings[name], self.model.terms[name].shape
            ):
                if restraint.shape[0] and weight > 0:
                    gram = restraint.T @ restraint
                    penalty = (
                        penalty + weight * data_trace / gram.diagonal().sum() * gram
                    )
            if name == "offset" and settings[name].ridge > 0:
                penalty = penalty + settings[name].ridge * diagonal.max() * (
                    sparse.identity(size)
                )
            penalties.append(penalty)
            ridges.append(np.full(size, 1e-12 * max(data_trace, 1e-300)))
        if len(names) == 2:
            # Fitting b and c together: neither is held, so nothing is left over.
            rest = 0.0
        design = sparse.hstack(blocks).tocsr()
        y = (self.intensity[self.use] - rest) / self.sigma[self.use]
        # A vanishing ridge keeps nodes no observation or restraint reaches at 0.
        system = (
            design.T @ design
            + sparse.block_diag(penalties)
            + sparse.diags(np.concatenate(ridges))
        )
        values = sparse_linalg.spsolve(system.tocsc(), design.T @ y)
        values = np.atleast_1d(values)
        for name in names:
            term = self.model.terms[name]
            size = term.values.size
            term_values, values = values[:size], values[size:]
            term.values = np.asarray(term_values, np.float64).reshape(term.shape)
            if name == "offset" and settings[name].minimum is not None:
                self._floor_offset(settings[name].minimum)
        for name in names:
            if name != "offset":
                self._normalise(name)

    def _floor_offset(self, minimum):
        """Shift c(s, phi) by b(phi) f(s) so that min over phi is `minimum` at each s.

        The data fix c only up to b(phi) f(s) for any f (merging moves
        f(s_v) out of each voxel's M), so this only chooses which: mdx2's
        non-negative offset (its floor, ``offset.min``), without clipping.
        """
        offset = self.model.terms["offset"]
        if "scaling" in self.model.terms:
            b = self.model.terms["scaling"](offset.axes["phi"])[np.newaxis, :]
        else:
            b = np.ones((1, len(offset.axes["phi"])))
        shift = np.max((minimum - offset.values) / b, axis=1, keepdims=True)
        offset.values = offset.values + b * shift

    def _normalise(self, name):
        """Mean 1 over the used observations; the offset compensates for a and d."""
        term = self.model.terms[name]
        mean = float(np.mean((self.matrix(name) @ term.values.ravel())[self.use]))
        if not mean > 0:
            raise UserError(
                f"the {name} term refined to a non-positive mean: the data do not "
                "constrain it (fewer nodes or more smoothness)"
            )
        term.values = term.values / mean
        if name in ("absorption", "detector") and "offset" in self.model.terms:
            self.model.terms["offset"].values = self.model.terms["offset"].values * mean

    def reject_outliers(self, threshold):
        """Exclude observations more than `threshold` errors above the model."""
        merged = self.merge()
        outlier = self.use & (self.residuals(merged) > threshold)
        self.use &= ~outlier
        return int(outlier.sum())


def refine_scale_model(observations, settings, progress=None):
    """Refine mdx2's scaling model from a corrected table (pandas).

    Parameters
    ----------
    observations : DataFrame
        h, k, l (asymmetric unit), intensity, intensity_error, and the
        coordinates of the terms asked for: phi (degrees), s (inverse
        Angstrom), ix, iy (pixels).
    settings : dict of str -> settings
        The terms to refine, by name ("scaling", "offset", "detector",
        "absorption"), each with its settings (`ScalingSettings`, ...).
    progress : callable, optional
        Called with a message at the start of each stage.

    Returns
    -------
    model : ScaleModel
    history : list of dict
        stage, cycle and chi_square (reduced, per used observation) after
        every cycle, and the outliers rejected after each stage.
    """
    unknown = set(settings) - set(TERMS)
    if unknown or not settings:
        raise UserError(
            f"choose terms among {', '.join(TERMS)} (got {sorted(settings) or 'none'})"
        )
    needed = {"h", "k", "l", "intensity", "intensity_error"}
    for name in settings:
        needed |= set(TERMS[name][1])
    missing = needed - set(observations)
    if missing:
        raise UserError(f"the table has no {', '.join(sorted(missing))} column")
    refinement = _Refinement(observations, ScaleModel())
    if refinement.use.sum() < 10:
        raise UserError(
            "fewer than 10 redundant observations: nothing to scale against"
        )
    used = observations[refinement.use]
    refinement.model.terms = {
        name: _new_term(name, settings[name], used)
        for name in TERMS
        if name in settings
    }
    stages = [
        ("scaling", ["scaling"]),
        ("scaling+offset", ["offset", "scaling"]),
        ("offset", ["offset"]),
        ("detector", ["detector"]),
        ("absorption", ["absorption"]),
    ]
    history = []
    for stage, names in stages:
        if not all(name in settings for name in names):
            continue
        # The joint stage runs with the offset's cycles and tolerances (mdx2).
        control = settings[names[0]]
        if progress:
            progress(stage)
        previous = np.inf
        for cycle in range(control.cycles):
            refinement.fit(names, refinement.merge(), settings)
            chi_square = refinement.chi_square(refinement.merge())
            history.append(
                {"stage": stage, "cycle": cycle + 1, "chi_square": chi_square}
            )
            logger.debug("%s cycle %d: chi-square %.5f", stage, cycle + 1, chi_square)
            if previous - chi_square < control.tolerance:
                break
            previous = chi_square
        rejected = refinement.reject_outliers(control.outlier)
        history[-1]["outliers"] = rejected
    return refinement.model, history


def refine_phi_scale(observations, phi_step=1.0, smoothness=1.0, cycles=10):
    """Refine b(phi) alone; return (the b term, reduced chi-square per cycle).

    The b-only special case of `refine_scale_model` (see there), with no
    early stop and no outlier rejection worth noting (10 sigma).
    """
    model, history = refine_scale_model(
        observations,
        {"scaling": ScalingSettings(phi_step, smoothness, cycles, tolerance=-np.inf)},
    )
    return model.terms["scaling"], [entry["chi_square"] for entry in history]
