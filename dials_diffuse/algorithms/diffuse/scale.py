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

On a multi-panel detector (tables with a ``panel`` column; ix, iy within
the panel) d and a are per panel: d(ix, iy, panel) and a(ix, iy, phi,
panel), the same node grid over every panel's pixel indices, restrained
smooth within each panel only (`PANEL`).

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
- the normal equations are solved directly (sparse LU), not iteratively;
- in the joint stage b and c are one least-squares problem (the prediction
  is linear in both together), not alternated: it converges in a few
  cycles where alternating had not after mdx2's five;
- the offset's floor (``offset.min``) shifts c by b(phi) f(s), which
  merging absorbs, instead of clipping nodes (clipping fights the fit).

Only voxels observed at least twice constrain the model. Several tables
(sweeps) are scaled together as mdx2's batches: each its own b, c and a, all
one d, voxels merged across them.
"""

import dataclasses
import functools
import logging

import numpy as np
from libtbx.phil import parse
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

from dials_diffuse.util.errors import DataError

logger = logging.getLogger(__name__)

#: Term name -> (table name, coordinates, value column).
TERMS = {
    "scaling": ("scaling_model", ("phi",), "scale"),
    "offset": ("offset_model", ("s", "phi"), "offset"),
    "detector": ("detector_model", ("ix", "iy"), "scale"),
    "absorption": ("absorption_model", ("ix", "iy", "phi"), "scale"),
}
#: The value of an absent term.
NEUTRAL = {"absorption": 1.0, "scaling": 1.0, "offset": 0.0, "detector": 1.0}
#: The column of a multi-panel table's panel numbers: the last coordinate of
#: the detector and absorption terms there, one node per panel (0, 1, ...),
#: so each panel has its own d and a, none interpolated between panels.
PANEL = "panel"
#: The terms that are per panel on a multi-panel detector.
PER_PANEL = ("detector", "absorption")


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
        ix/iy in pixels); ``panel`` (last, detector and absorption on a
        multi-panel detector) has the nodes 0, 1, ..., one per panel.
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
        for name, x in zip(self.axes, coordinates):
            if not np.all(np.isfinite(x)):
                raise DataError(
                    f"the {self.name} term needs finite {name} values: "
                    f"{np.count_nonzero(~np.isfinite(x))} are not"
                )
            if name == PANEL:
                outside = (x < 0) | (x > self.axes[PANEL][-1]) | (x != np.round(x))
                if np.any(outside):
                    raise DataError(
                        f"the {self.name} term covers panels 0-"
                        f"{int(self.axes[PANEL][-1])}, not panel "
                        f"{x[np.argmax(outside)]:g}"
                    )
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


# --- parameters (mdx2 1.0.5's defaults) ------------------------------------------

_stage_phil = """
  cycles = {cycles}
    .type = int(value_min=1, allow_none=False)
    .help = "At most this many alternations of merging and refining the term."
  tolerance = {tolerance}
    .type = float(value_min=0, allow_none=False)
    .help = "Stop when the reduced chi-square improves by less than this."
  outlier = {outlier}
    .type = float(value_min=0, allow_none=False)
    .help = "After refining, reject observations more than this many standard"
            "errors above the model."
"""

#: The parameters of every term (the one source of their defaults): programs
#: include this scope; `ScalingSettings` etc. are made from it.
phil_str = (
    """
scaling {
  enable = True
    .type = bool
    .help = "Refine b(phi), a scale against rotation angle."
  phi_step = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Degrees between the nodes of b(phi)."
  smoothness = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the curvature restraint along phi, relative to the data"
            "(0: none)."
"""
    + _stage_phil.format(cycles=10, tolerance=1e-4, outlier=10.0)
    + """
}
offset {
  enable = False
    .type = bool
    .help = "Refine c(s, phi), an additive offset against resolution and angle"
            "(with b, the two are first refined together)."
  phi_step = 2.5
    .type = float(value_min=0, allow_none=False)
    .help = "Degrees between the nodes of c along phi."
  s_nodes = 31
    .type = int(value_min=1, allow_none=False)
    .help = "Nodes of c along s = 1/d, from the smallest to the largest s."
  smoothness_s = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the curvature restraint along s."
  smoothness_phi = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the curvature restraint along phi."
  ridge = 0.001
    .type = float(value_min=0, allow_none=False)
    .help = "Weight pulling the nodes towards 0 (relative to the largest"
            "diagonal element of the normal matrix)."
  minimum = 0.0
    .type = float
    .help = "The offset's smallest value over phi at each s (the data fix c"
            "only up to a function of s, merged away). None: leave it free."
"""
    + _stage_phil.format(cycles=5, tolerance=1e-3, outlier=5.0)
    + """
}
detector {
  enable = False
    .type = bool
    .help = "Refine d(ix, iy), a smooth gain across the detector face."
  x_nodes = 200
    .type = int(value_min=1, allow_none=False)
    .help = "Nodes of d across the detector's fast axis (ix)."
  y_nodes = 200
    .type = int(value_min=1, allow_none=False)
    .help = "Nodes of d across the detector's slow axis (iy)."
  smoothness = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the neighbour (Laplacian) restraint across the detector."
"""
    + _stage_phil.format(cycles=5, tolerance=1e-3, outlier=5.0)
    + """
}
absorption {
  enable = False
    .type = bool
    .help = "Refine a(ix, iy, phi), a scale against detector position and angle."
  phi_step = 5.0
    .type = float(value_min=0, allow_none=False)
    .help = "Degrees between the nodes of a along phi."
  x_nodes = 20
    .type = int(value_min=1, allow_none=False)
    .help = "Nodes of a across the detector's fast axis (ix)."
  y_nodes = 20
    .type = int(value_min=1, allow_none=False)
    .help = "Nodes of a across the detector's slow axis (iy)."
  smoothness_xy = 10.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the neighbour (Laplacian) restraint across the detector."
  smoothness_phi = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "Weight of the curvature restraint along phi."
"""
    + _stage_phil.format(cycles=5, tolerance=1e-4, outlier=5.0)
    + """
}
auto_nodes = True
  .type = bool
  .help = "Give each term only as many nodes as the data determine: every node"
          "needs min_observations redundant observations (per sweep), b(phi)"
          "gets one node per sweep narrower than its phi_step; a term left"
          "with one node on a single sweep is not refined. Each change is"
          "logged with its reason. False: the nodes exactly as given (mdx2)."
min_observations = 20
  .type = int(value_min=1, allow_none=False)
  .help = "Redundant observations (of voxels seen at least twice) each node"
          "needs, with auto_nodes."
validation {
  enable = True
    .type = bool
    .help = "After refinement, check the model: refined on a random half of"
            "the voxels, merge the other half with and without it (CC1/2 of"
            "random halves, reduced chi-square about the voxels' means), and"
            "compare b(phi) with the variation of the sweep's frame totals. It"
            "passes if CC1/2 is not lower and chi-square not higher by more"
            "than validation.tolerance standard errors, and b varies no more"
            "than 1.5 x the frame totals + 2%."
  action = *fallback warn
    .type = choice
    .help = "When the model fails: fallback tries b(phi) alone, linear over"
            "each sweep, then no scaling (the model written with neutral"
            "values, so merge gives the unscaled map); warn keeps the model."
            "Either way the log, the JSON summary and the report say why."
  tolerance = 1.0
    .type = float(value_min=0, allow_none=False)
    .help = "How far the held-out CC1/2 may drop, and the held-out chi-square"
            "rise, before the model counts as making the data worse, in"
            "standard errors of the statistic without the model: CC1/2 on"
            "Fisher's z scale, z = atanh(CC1/2), sigma(z) = 1/sqrt(n - 3) for"
            "n voxels seen in both halves; the reduced chi-square of nu"
            "degrees of freedom, sigma = chi-square x sqrt(2/nu). A change"
            "smaller than one standard error is within the sampling noise of"
            "the statistic itself (a model that changes nothing moves CC1/2"
            "by a few ten-thousandths on one sweep). 0: any drop or rise fails."
  seed = 0
    .type = int(allow_none=False)
    .help = "Seed of the random halves for CC1/2."
}
"""
)
phil_scope = parse(phil_str)


def _settings_class(name, doc):
    """A dataclass of one term's settings: the fields and defaults of its PHIL scope."""
    (scope,) = phil_scope.get(name).objects
    defaults = getattr(phil_scope.extract(), name)
    fields = [
        (obj.name, object, dataclasses.field(default=getattr(defaults, obj.name)))
        for obj in scope.objects
        if obj.name != "enable"
    ]
    return dataclasses.make_dataclass(
        f"{name.capitalize()}Settings", fields, namespace={"__doc__": doc}
    )


# Settings for Python callers of `refine_scale_model` (a program passes its
# PHIL scopes, which have the same attributes).
ScalingSettings = _settings_class(
    "scaling", "b(phi): nodes every `phi_step` degrees, curvature weight `smoothness`."
)
OffsetSettings = _settings_class(
    "offset",
    """c(s, phi): `s_nodes` nodes in s, every `phi_step` degrees in phi.

    `ridge` pulls nodes towards 0 (weight relative to the largest diagonal
    element of A'WA). The data fix c only up to b(phi) f(s) (merging absorbs
    any f(s)): after each fit the offset is shifted by such a term so that
    at every s its smallest node equals `minimum` (mdx2's ``offset.min``,
    a non-negative background; None: no shift).
    """,
)
DetectorSettings = _settings_class(
    "detector", "d(ix, iy): `x_nodes` x `y_nodes` nodes over the detector face."
)
AbsorptionSettings = _settings_class(
    "absorption",
    "a(ix, iy, phi): `x_nodes` x `y_nodes` nodes, every `phi_step` degrees.",
)


def enabled_terms(params):
    """{term name: its settings} of the terms a PHIL extract enables, in `TERMS` order."""
    return {
        name: getattr(params, name) for name in TERMS if getattr(params, name).enable
    }


SETTINGS_CLASSES = {
    "scaling": ScalingSettings,
    "offset": OffsetSettings,
    "detector": DetectorSettings,
    "absorption": AbsorptionSettings,
}


def settings_copy(name, settings, **changes):
    """A term's settings (a PHIL extract or a dataclass) as a new dataclass."""
    cls = SETTINGS_CLASSES[name]
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)}
    values.update(changes)
    return cls(**values)


def redundant_rows(observations):
    """True for usable observations of voxels seen at least twice (what scaling uses)."""
    intensity = observations["intensity"].to_numpy(np.float64)
    sigma = observations["intensity_error"].to_numpy(np.float64)
    usable = np.isfinite(intensity) & np.isfinite(sigma) & (sigma > 0)
    group = observations.groupby(["h", "k", "l"], sort=False).ngroup().to_numpy()
    multiplicity = np.bincount(group[usable], minlength=int(group.max()) + 1)
    return usable & (multiplicity[group] >= 2)


def _shrunk(name, settings, factor):
    """`settings` with about `factor` (< 1) times the nodes along every axis."""
    changes = {}
    if hasattr(settings, "phi_step"):
        changes["phi_step"] = settings.phi_step / factor
    for field in ("s_nodes", "x_nodes", "y_nodes"):
        if hasattr(settings, field):
            changes[field] = max(1, int(getattr(settings, field) * factor))
    return settings_copy(name, settings, **changes)


def _most_demanding(name, settings, subsets):
    """(nodes, observations, shape) of the batch with the fewest observations per node."""
    counts = []
    for subset in subsets:
        if len(subset):
            shape = _new_term(name, settings, subset).shape
            counts.append((int(np.prod(shape)), len(subset), shape))
    if not counts:
        raise DataError("no voxel is seen twice: nothing to scale against")
    return min(counts, key=lambda count: count[1] / count[0])


def choose_nodes(observations, settings, min_observations):
    """The nodes each term can afford from the data; (settings, notes).

    Parameters
    ----------
    observations : DataFrame
        As `refine_scale_model` takes them (with an optional batch column).
    settings : dict of str -> settings
        The enabled terms.
    min_observations : int
        Redundant observations each node needs (in every batch it applies to).

    Returns
    -------
    settings : dict
        The terms to refine, some with fewer nodes (wider phi steps, fewer
        s/x/y nodes), some left out.
    notes : list of str
        One line per change, saying why (for the log and the summary).

    Rules: b(phi) gets a single node (phi_step infinite) when the redundant
    observations of every sweep span less than its phi_step: it then fits
    one scale per sweep. Every term keeps at most n / min_observations nodes
    for the n redundant observations of its smallest sweep (all sweeps for
    the shared detector term), thinning every axis alike. A term left with a
    single node on a single sweep is a constant, which the normalisation
    (a, b, d) or the offset's floor (c) removes: it is not refined. When
    only some sweeps are narrower than b's phi_step, those get one node (the
    attribute ``one_node_batches`` of the scaling settings, which
    `refine_scale_model` honours).
    """
    if "batch" in observations:
        batch = observations["batch"].to_numpy().astype(np.int64)
    else:
        batch = np.zeros(len(observations), dtype=np.int64)
    n_batches = int(batch.max()) + 1 if len(batch) else 1
    redundant = redundant_rows(observations)
    chosen, notes = {}, []
    for name, term_settings in settings.items():
        current = settings_copy(name, term_settings)
        batches = [None] if name == "detector" else range(n_batches)
        subsets = [
            observations[
                redundant & ((batch == number) if number is not None else True)
            ]
            for number in batches
        ]
        if hasattr(current, "phi_step") and name == "scaling":
            widths = [float(np.ptp(p["phi"])) if len(p) else 0.0 for p in subsets]
            narrow = tuple(i for i, w in enumerate(widths) if w < current.phi_step)
            if len(narrow) == len(widths):
                notes.append(
                    f"scaling: the redundant observations span {max(widths):.2f} "
                    f"degrees, less than phi_step = {current.phi_step:g}: one b "
                    "per sweep (b cannot vary within the sweep)"
                )
                current = settings_copy(name, current, phi_step=np.inf)
            for number in narrow if len(narrow) < len(widths) else ():
                notes.append(
                    f"scaling: sweep {number + 1} spans {widths[number]:.2f} "
                    f"degrees, less than phi_step = {current.phi_step:g}: one b "
                    "for it (its overall scale)"
                )

        original = _most_demanding(name, current, subsets)
        nodes, available, shape = original
        for _ in range(40):
            if available >= min_observations * nodes or nodes == 1:
                break
            factor = min(0.9, (available / (min_observations * nodes)) ** 0.5)
            current = _shrunk(name, current, max(factor, 0.25))
            nodes, available, shape = _most_demanding(name, current, subsets)
        if shape != original[2]:
            notes.append(
                f"{name}: {' x '.join(map(str, shape))} nodes instead of "
                f"{' x '.join(map(str, original[2]))}: {available} redundant "
                f"observations, at least {min_observations} per node"
            )
        if nodes == 1 and (name != "scaling" or n_batches == 1):
            notes.append(
                f"{name}: not refined: with one node it is a constant, which "
                + (
                    "the offset's floor removes"
                    if name == "offset"
                    else "the merged intensities absorb"
                )
            )
            continue
        if name == "scaling" and 0 < len(narrow) < len(widths):
            current.one_node_batches = narrow
        chosen[name] = current
    return chosen, notes


def _new_term(name, settings, observations, batch=None, panels=None):
    """A term of neutral values (1, or 0 for the offset) with nodes covering the data.

    b(phi) of a batch listed in the settings' ``one_node_batches`` (see
    `choose_nodes`) has a single node. The detector and absorption terms of
    a table with a ``panel`` column get a last axis of one node per panel,
    `panels` of them (default: up to the largest panel number observed).
    """
    column = {c: observations[c].to_numpy(np.float64) for c in TERMS[name][1]}
    if name == "scaling" and batch in getattr(settings, "one_node_batches", ()):
        axes = {"phi": np.array([float(np.mean(column["phi"]))])}
    elif name == "scaling":
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
        if PANEL in observations:
            if panels is None:
                panels = int(observations[PANEL].max()) + 1 if len(observations) else 1
            axes[PANEL] = np.arange(panels, dtype=np.float64)
    shape = tuple(len(a) for a in axes.values())
    return GridTerm(name, axes, np.full(shape, 0.0 if name == "offset" else 1.0))


def _restraints(name, settings, shape):
    """(matrix, weight) pairs of a term's smoothness restraints.

    A panel axis (last) is not restrained: panels are independent.
    """
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
    """The terms present (any of scaling, offset, detector, absorption).

    `model_used` says which model scale wrote (`ScaleResult.model_used`):
    "as refined", or a fallback after validation ("b(phi) linear over each
    sweep", "none (unscaled)"), which merge reports.
    """

    terms: dict = dataclasses.field(default_factory=dict)
    model_used: str = "as refined"

    def factors(self, frame):
        """(a, b, c, d) at every row of a table (pandas); absent terms neutral."""
        value = dict(NEUTRAL)
        value.update({name: term.at(frame) for name, term in self.terms.items()})
        return tuple(
            np.broadcast_to(np.asarray(value[name], np.float64), (len(frame),))
            for name in ("absorption", "scaling", "offset", "detector")
        )

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


# --- refinement -------------------------------------------------------------------


class _Refinement:
    """Observations, voxel groups, the terms of every batch and the outlier mask.

    Terms are keyed (name, batch); the detector term is shared by all
    batches (key ("detector", None)), as in mdx2.

    Only the observations in use are held: those of voxels seen at least
    twice with a finite intensity and a positive error, less the outliers
    rejected so far (`reject_outliers` drops them). The others weigh
    nothing in any sum, so leaving them out changes no result and keeps
    memory to what the fit uses (the bound per observation: the help of
    dials.diffuse.scale).
    """

    def __init__(self, observations, batch):
        intensity = observations["intensity"].to_numpy(np.float64)
        sigma = observations["intensity_error"].to_numpy(np.float64)
        # The voxel of each observation (hashing: faster than sorting rows).
        group = observations.groupby(["h", "k", "l"], sort=False).ngroup().to_numpy()
        self.n_groups = int(group.max()) + 1 if len(group) else 0
        usable = np.isfinite(intensity) & np.isfinite(sigma) & (sigma > 0)
        multiplicity = np.bincount(group[usable], minlength=self.n_groups)
        #: The observations (rows of `observations`) in use at the start.
        self.kept = usable & (multiplicity[group] >= 2)
        self.intensity = intensity[self.kept]
        self.sigma = sigma[self.kept]
        self.group = group[self.kept]
        self.batch = batch[self.kept]
        coordinates = {c for _, names, _ in TERMS.values() for c in names} | {PANEL}
        self.coordinates = {
            c: observations[c].to_numpy()[self.kept]
            for c in sorted(coordinates & set(observations))
        }
        self.terms = {}
        self.matrices = {}

    def rows(self, key):
        """Indices of the observations a term applies to."""
        if key[1] is None:
            return np.arange(len(self.intensity))
        return np.flatnonzero(self.batch == key[1])

    def matrix(self, key):
        """Interpolation matrix of a term over the observations (zero off its batch)."""
        if key not in self.matrices:
            rows = self.rows(key)
            part = (
                self.terms[key]
                .matrix(
                    *(
                        self.coordinates[c][rows].astype(np.float64)
                        for c in self.terms[key].coordinates
                    )
                )
                .tocoo()
            )
            self.matrices[key] = sparse.csr_matrix(
                (part.data, (rows[part.row], part.col)),
                shape=(len(self.intensity), part.shape[1]),
            )
        return self.matrices[key]

    def value(self, name):
        """The term `name` at every observation (neutral where there is none)."""
        keys = [key for key in self.terms if key[0] == name]
        if not keys:
            return NEUTRAL[name]
        return sum(self.matrix(key) @ self.terms[key].values.ravel() for key in keys)

    def factors(self):
        return tuple(
            self.value(name) for name in ("absorption", "scaling", "offset", "detector")
        )

    def merge(self):
        """Merged intensity of each voxel under the current model (NaN if none)."""
        a, b, c, d = self.factors()
        scale = a * b * d * np.ones(len(self.intensity))
        scaled = self.intensity / scale - c / b
        weight = (scale / self.sigma) ** 2
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
        return float(np.mean(self.residuals(merged) ** 2))

    def fit(self, names, merged, settings):
        """Refine the nodes of the terms `names` (all batches) holding M and the rest.

        The prediction a d (b M + c) is linear in the nodes of any one term,
        and in those of b and c together: one linear least-squares problem
        (normal equations with each term's restraints, weighted relative to
        that term's own data, per batch), then the offset's floor and the
        normalisation.
        """
        a, b, c, d = self.factors()
        m = merged[self.group]
        # I = fixed + sum over fitted terms of P (A u) (each P computed only
        # for the terms fitted: one array per observation less to hold).
        multiplier = {
            "scaling": lambda: a * d * m,
            "offset": lambda: a * d,
            "detector": lambda: a * (b * m + c),
            "absorption": lambda: d * (b * m + c),
        }
        fixed = {
            ("scaling",): lambda: a * d * c,
            ("offset",): lambda: a * b * d * m,
        }.get(tuple(names), lambda: 0.0)()
        n = len(self.intensity)
        keys = [key for name in names for key in self.terms if key[0] == name]
        blocks, penalties = [], []
        for key in keys:
            name = key[0]
            P = np.broadcast_to(multiplier[name](), (n,))
            design = self.matrix(key).copy()
            design.data *= np.repeat(P / self.sigma, np.diff(design.indptr))
            del P
            blocks.append(design)
            # The diagonal of A'WA: column sums of squares (A'WA itself is
            # formed once, for all blocks together).
            diagonal = np.asarray(design.multiply(design).sum(axis=0)).ravel()
            data_trace = diagonal.sum()
            size = len(diagonal)
            # A vanishing ridge keeps nodes no observation or restraint reaches at 0.
            penalty = sparse.diags(np.full(size, 1e-12 * max(data_trace, 1e-300)))
            for restraint, weight in _restraints(
                name, settings[name], self.terms[key].shape
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
        design = sparse.hstack(blocks).tocsr()
        del blocks
        y = (self.intensity - np.broadcast_to(fixed, (n,))) / self.sigma
        system = design.T @ design + sparse.block_diag(penalties)
        values = np.atleast_1d(sparse_linalg.spsolve(system.tocsc(), design.T @ y))
        for key in keys:
            term = self.terms[key]
            size = term.values.size
            term.values = np.asarray(values[:size], np.float64).reshape(term.shape)
            values = values[size:]
            if key[0] == "offset" and settings["offset"].minimum is not None:
                self._floor_offset(key[1], settings["offset"].minimum)
        for key in keys:
            if PANEL in self.terms[key].axes:
                self._refine_panel_gains(key)
        for name in names:
            if name != "offset":
                self._normalise(name)
        for key in keys:
            if PANEL in self.terms[key].axes:
                self._neutral_unobserved_panels(key)

    def _floor_offset(self, batch, minimum):
        """Shift c(s, phi) by b(phi) f(s) so that min over phi is `minimum` at each s.

        The data fix c only up to b(phi) f(s) for any f (merging moves
        f(s_v) out of each voxel's M), so this only chooses which: mdx2's
        non-negative offset (its floor, ``offset.min``), without clipping.
        """
        offset = self.terms[("offset", batch)]
        phi = offset.axes["phi"]
        scaling = self.terms.get(("scaling", batch))
        b = (scaling(phi) if scaling else np.ones(len(phi)))[np.newaxis, :]
        shift = np.max((minimum - offset.values) / b, axis=1, keepdims=True)
        offset.values = offset.values + b * shift

    def _refine_panel_gains(self, key, steps=20, tolerance=1e-6):
        """One gain per panel of a per-panel term, refined jointly with M.

        Merging and fitting in turn (mdx2's cycles) moves a panel's overall
        gain only as far as the few voxels seen on it and on other panels
        pull it in one cycle: on a simulated 8-module sweep, 5 cycles left
        60 % of a module's 10 % lower efficiency unrecovered. Here the gains
        g_p and the merged intensities M_v are one Gauss-Newton problem
        (I_i = g_p a d (b M_v + c)), M eliminated voxel by voxel (a Schur
        complement of panels x panels), repeated until the gains settle;
        the term's nodes on panel p are multiplied by g_p. The overall gain
        is left to the normalisation (the minimum-norm step).
        """
        term = self.terms[key]
        # The gains act on this term's batch; M_v is fixed by every batch.
        in_term = np.ones(len(self.intensity), dtype=bool)
        if key[1] is not None:
            in_term = self.batch == key[1]
        if not in_term.any():
            return
        panel = self.coordinates[PANEL].astype(np.int64)
        n_panels = term.shape[-1]
        voxels, voxel = np.unique(self.group, return_inverse=True)
        intensity, sigma = self.intensity, self.sigma
        for _ in range(steps):
            merged = self.merge()[voxels][voxel]
            a, b, c, d = (
                np.broadcast_to(value, intensity.shape) for value in self.factors()
            )
            prediction = a * d * (b * merged + c)
            x = np.where(in_term, prediction / sigma, 0.0)  # d(prediction)/d(g_p)
            y = a * d * b / sigma  # d(prediction)/d(M_v), weighted
            r = (intensity - prediction) / sigma
            h_vv = np.bincount(voxel, y * y, minlength=len(voxels))
            inverse = np.divide(1.0, h_vv, out=np.zeros_like(h_vv), where=h_vv > 0)
            cross = sparse.csr_matrix(
                (x * y, (panel, voxel)), shape=(n_panels, len(voxels))
            )
            schur = (
                np.diag(np.bincount(panel, x * x, minlength=n_panels))
                - (cross.multiply(inverse) @ cross.T).toarray()
            )
            rhs = np.bincount(panel, x * r, minlength=n_panels) - cross @ (
                inverse * np.bincount(voxel, y * r, minlength=len(voxels))
            )
            step = np.linalg.lstsq(schur, rhs, rcond=1e-10)[0]
            term.values = term.values * (1 + np.clip(step, -0.5, 0.5))
            if np.max(np.abs(step)) < tolerance:
                break

    def _neutral_unobserved_panels(self, key):
        """Panels without an observation in use keep d = a = 1 (no data, no fit)."""
        term = self.terms[key]
        rows = np.ones(len(self.intensity), dtype=bool)
        if key[1] is not None:
            rows = self.batch == key[1]
        observed = np.zeros(term.shape[-1], dtype=bool)
        observed[self.coordinates[PANEL][rows].astype(np.int64)] = True
        term.values[..., ~observed] = 1.0

    def _normalise(self, name):
        """Mean 1 over the used observations (all batches together, keeping their
        relative scale); the offsets compensate for a and d."""
        mean = float(np.mean(np.broadcast_to(self.value(name), self.group.shape)))
        if not mean > 0:
            raise DataError(
                f"the {name} term refined to a non-positive mean: the data do not "
                "constrain it (fewer nodes or more smoothness)"
            )
        for key, term in self.terms.items():
            if key[0] == name:
                term.values = term.values / mean
            elif key[0] == "offset" and name in ("absorption", "detector"):
                term.values = term.values * mean

    def reject_outliers(self, threshold):
        """Exclude observations more than `threshold` errors above the model."""
        merged = self.merge()
        keep = ~(self.residuals(merged) > threshold)
        rejected = int(len(keep) - np.count_nonzero(keep))
        if rejected:
            for name in ("intensity", "sigma", "group", "batch"):
                setattr(self, name, getattr(self, name)[keep])
            self.coordinates = {c: v[keep] for c, v in self.coordinates.items()}
            self.matrices = {key: m[keep] for key, m in self.matrices.items()}
        return rejected


def refine_scale_model(observations, settings, progress=None):
    """Refine mdx2's scaling model from corrected observations (pandas).

    Parameters
    ----------
    observations : DataFrame
        h, k, l (asymmetric unit), intensity, intensity_error, and the
        coordinates of the terms asked for: phi (degrees), s (inverse
        Angstrom), ix, iy (pixels). With a `batch` column (0, 1, ...: e.g.
        one per sweep), each batch gets its own b, c and a and all share d
        (mdx2's batches); voxels are merged across batches. With a `panel`
        column (a multi-panel detector; ix, iy within the panel), d and a
        are per panel.
    settings : dict of str -> settings
        The terms to refine, by name ("scaling", "offset", "detector",
        "absorption"), each with its settings (`ScalingSettings`, ...).
    progress : callable, optional
        Called with the stage's name at the start of each stage.

    Returns
    -------
    models : list of ScaleModel
        One per batch (one without a batch column).
    history : list of dict
        stage, cycle and chi_square (reduced, per used observation) after
        every cycle, and the outliers rejected after each stage.
    """
    unknown = set(settings) - set(TERMS)
    if unknown or not settings:
        raise DataError(
            f"choose terms among {', '.join(TERMS)} (got {sorted(settings) or 'none'})"
        )
    needed = {"h", "k", "l", "intensity", "intensity_error"}
    for name in settings:
        needed |= set(TERMS[name][1])
    missing = needed - set(observations)
    if missing:
        raise DataError(f"the table has no {', '.join(sorted(missing))} column")
    coordinates = {c for name in settings for c in TERMS[name][1]}
    for column in sorted(coordinates):
        bad = np.count_nonzero(~np.isfinite(observations[column].to_numpy(float)))
        if bad:
            raise DataError(f"{bad} observation(s) with a non-finite {column}")
    if "batch" in observations:
        batch = observations["batch"].to_numpy().astype(np.int64)
    else:
        batch = np.zeros(len(observations), dtype=np.int64)
    n_batches = int(batch.max()) + 1 if len(batch) else 1
    panels = None
    if PANEL in observations and set(PER_PANEL) & set(settings):
        values = observations[PANEL].to_numpy(np.float64)
        if np.any((values < 0) | (values != np.round(values))):
            raise DataError("panel numbers must be whole numbers from 0")
        panels = int(values.max()) + 1 if len(values) else 1
    refinement = _Refinement(observations, batch)
    if len(refinement.intensity) < 10:
        raise DataError(
            "fewer than 10 redundant observations: nothing to scale against"
        )
    for name in (name for name in TERMS if name in settings):
        for number in [None] if name == "detector" else range(n_batches):
            rows = refinement.kept.copy()
            if number is not None:
                rows &= batch == number
            if not rows.any():
                raise DataError(f"batch {number} has no redundant observation to scale")
            refinement.terms[(name, number)] = _new_term(
                name, settings[name], observations[rows], number, panels
            )
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
    models = [
        ScaleModel(
            {
                name: term
                for (name, number), term in refinement.terms.items()
                if number in (None, batch_number)
            }
        )
        for batch_number in range(n_batches)
    ]
    return models, history


def refine_phi_scale(observations, phi_step=1.0, smoothness=1.0, cycles=10):
    """Refine b(phi) alone; return (the b term, reduced chi-square per cycle).

    The b-only special case of `refine_scale_model` (see there), with no
    early stop (outliers beyond 10 sigma are still rejected at the end).
    """
    models, history = refine_scale_model(
        observations,
        {
            "scaling": ScalingSettings(
                phi_step=phi_step,
                smoothness=smoothness,
                cycles=cycles,
                tolerance=-np.inf,
            )
        },
    )
    return models[0].terms["scaling"], [entry["chi_square"] for entry in history]


# --- does the model help? ------------------------------------------------------------


def _chi_square_about_means(intensity, sigma, group):
    """Reduced chi-square of observations about their voxel's weighted mean.

    Over the voxels seen at least twice: sum((I - M)^2 / sigma^2) / nu, with
    nu = n - voxels degrees of freedom. Returns (chi-square, nu); NaN and 0
    without a voxel seen twice.
    """
    n_groups = int(group.max()) + 1
    weight = 1.0 / sigma**2
    total = np.bincount(group, weights=weight, minlength=n_groups)
    mean = np.bincount(group, weights=weight * intensity, minlength=n_groups) / total
    count = np.bincount(group, minlength=n_groups)
    keep = count[group] >= 2
    degrees = int(keep.sum() - np.count_nonzero(count >= 2))
    if degrees <= 0:
        return float("nan"), 0
    chi_square = np.sum(((intensity - mean[group]) / sigma)[keep] ** 2) / degrees
    return float(chi_square), degrees


def _spread(values):
    """Half the range relative to the mean: (max - min) / (2 mean)."""
    values = np.asarray(values, dtype=np.float64)
    return float((values.max() - values.min()) / (2 * values.mean()))


def frame_total_spread(observations, phi_step):
    """How much the corrected signal per pixel varies along phi, as `_spread`.

    The observations are binned in phi (bins of `phi_step` degrees, the
    scale's node spacing: what b could follow; at least two, and wider to
    hold at least 200 observations each); in each bin the mean
    corrected intensity per pixel, sum(I pixels) / sum(pixels), is the
    frame total b would have to follow. Bins with less than a tenth of the
    average number of pixels are left out. None without a pixels column or
    with fewer than 400 observations.
    """
    if "pixels" not in observations or len(observations) == 0:
        return None
    phi = observations["phi"].to_numpy(np.float64)
    pixels = observations["pixels"].to_numpy(np.float64)
    intensity = observations["intensity"].to_numpy(np.float64)
    # At least two bins (a linear b follows the halves), each of at least
    # 200 observations, so that their means are not noise.
    n_bins = max(2, int(np.ceil(np.ptp(phi) / phi_step)))
    n_bins = min(n_bins, len(phi) // 200)
    if n_bins < 2:
        return None
    edges = np.linspace(phi.min(), phi.max(), n_bins + 1)
    signal, _ = np.histogram(phi, edges, weights=intensity * pixels)
    weight, _ = np.histogram(phi, edges, weights=pixels)
    full = weight > 0.1 * weight.mean()
    if full.sum() < 2:
        return None
    return _spread(signal[full] / weight[full])


def compare_merges(observations, models, seed=0, tolerance=1.0):
    """Merge with and without the models: CC1/2 and chi-square of both.

    Parameters
    ----------
    observations : DataFrame
        As `refine_scale_model` takes them (with the batch column if
        several).
    models : list of ScaleModel
        One per batch.
    seed : int
        Of the random halves (the same split with and without the model).
    tolerance : float
        How many standard errors (of the statistic without the model) CC1/2
        may drop and chi-square rise before the model counts as worse.

    Returns
    -------
    dict
        cc_half_unscaled, cc_half_scaled (random halves), voxels (seen in
        both halves) and cc_half_sigma, the standard error of CC1/2 without
        the model (Fisher: z = atanh(CC1/2) has sigma(z) = 1/sqrt(voxels -
        3), so sigma(CC1/2) = (1 - CC1/2^2) sigma(z));
        chi_square_unscaled, chi_square_scaled (`_chi_square_about_means`),
        degrees_of_freedom and chi_square_sigma = chi-square sqrt(2 / nu),
        over the voxels seen at least twice; reasons (list of str) if the
        model makes either worse by more than `tolerance` standard errors.

    Why these errors: a model that fits noise makes voxels it was not
    refined on agree less, but so little on small data that a strict
    comparison would reject any model that does nothing (the demo's b(phi),
    +-0.6 %, lowers the held-out CC1/2 from 0.9606 to 0.9604 on 4449 voxels,
    a tenth of sigma). The drop is judged against the precision of the
    statistic itself: the change that two measurements of it could not
    tell apart.
    """
    from dials_diffuse.algorithms.diffuse.merge import cc_half, merge_observations

    batch = _batches(observations)
    intensity = observations["intensity"].to_numpy(np.float64).copy()
    sigma = observations["intensity_error"].to_numpy(np.float64).copy()
    for number, model in enumerate(models):
        rows = batch == number
        intensity[rows], sigma[rows] = model.apply(observations[rows])
    usable = redundant_rows(observations)
    usable &= np.isfinite(intensity) & np.isfinite(sigma) & (sigma > 0)
    frame = observations.loc[usable, ["h", "k", "l"]]
    group = frame.groupby(["h", "k", "l"], sort=False).ngroup().to_numpy()
    result = {}
    for label, values, errors in (
        (
            "unscaled",
            observations["intensity"].to_numpy(np.float64),
            observations["intensity_error"].to_numpy(np.float64),
        ),
        ("scaled", intensity, sigma),
    ):
        halves = merge_observations(
            frame.assign(intensity=values[usable], intensity_error=errors[usable]),
            split="random_half",
            seed=seed,
        )
        # The halves are dealt by count, not weight: the same voxels and
        # observations in each half with and without the model.
        result["voxels"] = int(
            halves[["intensity_1", "intensity_2"]].notna().all(axis=1).sum()
        )
        try:
            result[f"cc_half_{label}"] = cc_half(halves, shells=1)[0]
        except DataError:
            result[f"cc_half_{label}"] = float("nan")
        (
            result[f"chi_square_{label}"],
            result["degrees_of_freedom"],
        ) = _chi_square_about_means(values[usable], errors[usable], group)
    result.update(_judge(result, tolerance))
    return result


def _judge(result, tolerance):
    """The standard errors of `compare_merges` and the reasons the model fails."""
    cc, cc_scaled = result["cc_half_unscaled"], result["cc_half_scaled"]
    sigma_z = 1 / np.sqrt(result["voxels"] - 3) if result["voxels"] > 3 else np.nan
    chi, chi_scaled = result["chi_square_unscaled"], result["chi_square_scaled"]
    nu = result["degrees_of_freedom"]
    judged = {
        "cc_half_sigma": float((1 - cc**2) * sigma_z),
        "chi_square_sigma": float(chi * np.sqrt(2 / nu)) if nu > 0 else float("nan"),
        "tolerance": tolerance,
        "reasons": [],
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        # Fisher's z: clipped so that a CC1/2 of exactly 1 stays finite.
        z = np.arctanh(np.clip([cc, cc_scaled], -1 + 1e-12, 1 - 1e-12))
        cc_drop = (z[0] - z[1]) / sigma_z
        chi_rise = (chi_scaled - chi) / judged["chi_square_sigma"]
    if cc_drop > tolerance:
        judged["reasons"].append(
            f"CC1/2 {cc_scaled:.4f} with the model, {cc:.4f} +- "
            f"{judged['cc_half_sigma']:.4f} without: {cc_drop:.1f} standard "
            f"errors lower ({result['voxels']} voxels)"
        )
    if chi_rise > tolerance:
        judged["reasons"].append(
            f"chi-square {chi_scaled:.4g} with the model, {chi:.4g} +- "
            f"{judged['chi_square_sigma']:.2g} without: {chi_rise:.1f} standard "
            f"errors higher ({nu} degrees of freedom)"
        )
    return judged


def b_against_frame_totals(observations, models):
    """Does b(phi) vary more than the frame totals allow?

    Returns a dict: b_spread (`_spread` of b(phi) over each batch's
    observations), frame_total_spread (`frame_total_spread` at b's node
    spacing, None where it cannot be measured) and reasons, one per batch
    whose b_spread exceeds 1.5 x its frame totals' + 0.02 (b scales all of a
    frame's signal, so the frame totals must follow it, up to changes of
    what the frame sees: hence the margin).
    """
    batch = _batches(observations)
    result = {"b_spread": [], "frame_total_spread": [], "reasons": []}
    for number, model in enumerate(models):
        term = model.terms.get("scaling")
        rows = batch == number
        if term is None or not rows.any():
            continue
        b_spread = _spread(term.at(observations[rows]))
        step = float(np.diff(term.axes["phi"])[0]) if term.shape[0] > 1 else np.inf
        allowed = frame_total_spread(observations[rows], step)
        result["b_spread"].append(b_spread)
        result["frame_total_spread"].append(allowed)
        if allowed is not None and b_spread > 1.5 * allowed + 0.02:
            result["reasons"].append(
                f"b(phi) of sweep {number + 1} varies by +-{100 * b_spread:.1f}%, "
                f"its frame totals by +-{100 * allowed:.1f}%"
            )
    return result


def check_model(observations, settings, models, seed=0, tolerance=1.0):
    """Does the model help? Judged on voxels it was not refined on.

    The voxels are dealt at random into two halves; the model is refined
    (with `settings`) on the first half's observations and the merges of
    the second half compared with and without it (`compare_merges`): a
    model that fits noise improves its own data's agreement, not that of
    other voxels; a drop or rise within `tolerance` standard errors is
    within the statistics' own noise and passes. b(phi) of `models`
    (refined on all) is compared with the frame totals
    (`b_against_frame_totals`).

    Returns
    -------
    dict
        The two checks' results (the CC1/2 and chi-square ones of the
        held-out voxels), passed (bool) and reasons.
    """
    batch = _batches(observations)
    group = observations.groupby(["h", "k", "l"], sort=False).ngroup().to_numpy()
    first = np.random.default_rng(seed).random(int(group.max()) + 1) < 0.5
    train = first[group]
    result = {}
    try:
        if len(np.unique(batch[train])) != len(models):
            raise DataError("a sweep has no observation in one half of the voxels")
        trained, _ = refine_scale_model(observations[train], settings)
        result.update(compare_merges(observations[~train], trained, seed, tolerance))
    except DataError as error:
        result.update(
            {
                key: float("nan")
                for key in (
                    "cc_half_unscaled",
                    "cc_half_scaled",
                    "cc_half_sigma",
                    "chi_square_unscaled",
                    "chi_square_scaled",
                    "chi_square_sigma",
                )
            }
        )
        result.update({"voxels": 0, "degrees_of_freedom": 0, "tolerance": tolerance})
        result["reasons"] = [f"cannot be checked on half of the voxels: {error}"]
    frame_totals = b_against_frame_totals(observations, models)
    result["reasons"] = result["reasons"] + frame_totals.pop("reasons")
    result.update(frame_totals)
    result["passed"] = not result["reasons"]
    return result


def _batches(observations):
    if "batch" in observations:
        return observations["batch"].to_numpy().astype(np.int64)
    return np.zeros(len(observations), dtype=np.int64)


def neutral_models(models):
    """The same terms and nodes with neutral values (1; 0 for the offset)."""
    return [
        ScaleModel(
            {
                name: GridTerm(name, term.axes, np.full(term.shape, NEUTRAL[name]))
                for name, term in model.terms.items()
            }
        )
        for model in models
    ]


# --- the step ----------------------------------------------------------------------


@dataclasses.dataclass
class ScaleResult:
    """What `do_scale` refined.

    Attributes
    ----------
    models : list of ScaleModel
        One per corrected table, in the order given.
    history : list of dict
        stage, cycle, chi_square (and outliers after each stage), as
        `refine_scale_model` returns it.
    notes : list of str
        What `choose_nodes` changed, and why.
    validation : list of dict
        `check_model` of every model tried, in order, each with the
        model's description (`model`).
    model_used : str
        "as refined", "b(phi) linear over each sweep" or "none (unscaled)":
        which model `models` is.
    """

    models: list
    history: list
    notes: list = dataclasses.field(default_factory=list)
    validation: list = dataclasses.field(default_factory=list)
    model_used: str = "as refined"

    def summary(self):
        """The key results for a program's JSON summary."""
        return {
            "terms": list(self.models[0].terms),
            "nodes": {
                name: list(term.shape) for name, term in self.models[0].terms.items()
            },
            "chi_square": [entry["chi_square"] for entry in self.history],
            "outliers": sum(entry.get("outliers", 0) for entry in self.history),
            "notes": list(self.notes),
            "validation": self.validation,
            "model_used": self.model_used,
            "check": self.check_text(),
        }

    def labelled(self):
        """This result, each model's `model_used` set to the result's."""
        for model in self.models:
            model.model_used = self.model_used
        return self

    def check_text(self):
        """One line per model tried: the checks and why it failed (for reports)."""
        lines = [
            f"{check['model']}: {describe_check(check)}" for check in self.validation
        ]
        lines.append(f"model written: {self.model_used}")
        return "; ".join(lines)


def scale_columns(params):
    """The columns of a corrected table that `do_scale` reads, with `params`.

    h, k, l, intensity, intensity_error, the coordinates of the enabled
    terms, and phi, pixels (the frame totals of the validation) and panel:
    a program loads only these (`load_table(columns=...)`).
    """
    columns = {"h", "k", "l", "intensity", "intensity_error", "phi", "pixels", "panel"}
    for name in enabled_terms(params):
        columns |= set(TERMS[name][1])
    return columns


def do_scale(tables, params, names=None):
    """Refine the scaling model of one or more corrected tables (dials.diffuse.scale).

    Parameters
    ----------
    tables : list of DataFrame
        Corrected tables (one per sweep, as `load_table(...).to_frame()`):
        h, k, l, intensity, intensity_error and the coordinates of the
        enabled terms. Several are scaled together (mdx2's batches).
    params : PHIL extract of `phil_scope`
        The terms (`scaling`, `offset`, `detector`, `absorption`), each
        with `enable` and its settings.
    names : list of str, optional
        The tables' file names, for messages and the log.

    Returns
    -------
    ScaleResult
    """
    import pandas as pd

    names = names or [f"table {number}" for number in range(1, len(tables) + 1)]
    settings = enabled_terms(params)
    if not settings:
        raise DataError(
            "no term enabled: set at least one of scaling.enable, offset.enable, "
            "detector.enable, absorption.enable"
        )
    needed = scale_columns(params) - {"phi", "pixels", "panel"}
    frames = []
    for number, (name, table) in enumerate(zip(names, tables)):
        missing = needed - set(table)
        if missing:
            raise DataError(
                f"{name}: not a corrected table (no {', '.join(sorted(missing))})"
            )
        per_panel = set(PER_PANEL) & set(settings)
        if per_panel and (PANEL in table) != (PANEL in tables[0]):
            raise DataError(
                f"{name}: {'a' if PANEL in table else 'no'} panel column, unlike "
                f"{names[0]}: the {' and '.join(sorted(per_panel))} term(s) need "
                "tables of one detector"
            )
        extra = {"phi", "pixels"} | ({PANEL} if per_panel else set())
        columns = sorted(needed | (extra & set(table)))
        frames.append(table[columns].assign(batch=np.int16(number)))
    observations = pd.concat(frames, ignore_index=True)
    del frames
    notes = []
    if params.auto_nodes:
        settings, notes = choose_nodes(observations, settings, params.min_observations)
        for note in notes:
            logger.info("%s", note)
    if not settings:
        # Nothing the data determine: a neutral b(phi) (the unscaled map).
        settings = {"scaling": settings_copy("scaling", params.scaling, cycles=1)}
        models, history = refine_scale_model(observations, settings)
        result = ScaleResult(neutral_models(models), history, notes)
        result.model_used = "none (unscaled)"
        logger.info("No term refined: the model written is neutral (unscaled)")
        return result.labelled()
    models, history = refine_scale_model(
        observations,
        settings,
        progress=lambda stage: logger.info("Refining %s", stage),
    )
    result = ScaleResult(models, history, notes)
    if params.validation.enable:
        _validate(result, observations, settings, params)
    _log_models(result, names)
    return result.labelled()


def _validate(result, observations, settings, params):
    """Check the refined model; with action=fallback, restrain it or drop it."""
    check = check_model(
        observations,
        settings,
        result.models,
        params.validation.seed,
        params.validation.tolerance,
    )
    check["model"] = "as refined"
    result.validation.append(check)
    _log_check(check)
    if check["passed"] or params.validation.action == "warn":
        if not check["passed"]:
            logger.warning(
                "The scaling model makes the merged data worse (%s); "
                "kept because validation.action=warn",
                "; ".join(check["reasons"]),
            )
        return
    fallback = neutral_models(result.models)
    if "scaling" in settings and (
        set(settings) != {"scaling"}
        or max(model.terms["scaling"].shape[0] for model in result.models) > 2
    ):
        # b(phi) alone, two nodes per sweep (its ends): linear.
        width = max(
            float(np.ptp(model.terms["scaling"].axes["phi"])) for model in result.models
        )
        linear = {
            "scaling": settings_copy(
                "scaling",
                settings["scaling"],
                phi_step=width if width > 0 else np.inf,
            )
        }
        models, history = refine_scale_model(observations, linear)
        restrained = check_model(
            observations,
            linear,
            models,
            params.validation.seed,
            params.validation.tolerance,
        )
        restrained["model"] = "b(phi) linear over each sweep"
        result.validation.append(restrained)
        _log_check(restrained)
        if restrained["passed"]:
            logger.warning(
                "The scaling model as refined makes the merged data worse "
                "(%s): b(phi) linear over each sweep used instead",
                "; ".join(check["reasons"]),
            )
            result.models, result.history = models, result.history + history
            result.model_used = restrained["model"]
            return
        fallback = neutral_models(models)
    logger.warning(
        "The scaling model makes the merged data worse (%s): not "
        "applied (the model written is neutral, merge gives the unscaled map)",
        "; ".join(check["reasons"]),
    )
    result.models = fallback
    result.model_used = "none (unscaled)"


def describe_check(check):
    """The figures and verdict of one `check_model` result, in one line."""
    text = (
        f"CC1/2 {check['cc_half_scaled']:.4f} (unscaled "
        f"{check['cc_half_unscaled']:.4f} +- {check['cc_half_sigma']:.4f}, "
        f"{check['voxels']} voxels), chi-square {check['chi_square_scaled']:.4g} "
        f"(unscaled {check['chi_square_unscaled']:.4g} +- "
        f"{check['chi_square_sigma']:.2g}, {check['degrees_of_freedom']} degrees "
        "of freedom)"
    )
    text += "".join(
        f"; b(phi) +-{100 * b:.1f}%"
        + (f", frame totals +-{100 * t:.1f}%" if t is not None else "")
        for b, t in zip(check["b_spread"], check["frame_total_spread"])
    )
    if check["reasons"]:
        return text + ": worse (" + "; ".join(check["reasons"]) + ")"
    tolerance = check["tolerance"]
    return text + (
        f": passed (no change beyond {tolerance:g} standard "
        f"error{'' if tolerance == 1 else 's'})"
    )


def _log_check(check):
    logger.info(
        "Model %s, on voxels it was not refined on: %s",
        check["model"],
        describe_check(check),
    )


def _log_models(result, names):
    history = result.history
    for entry in history:
        logger.info(
            "  %-15s cycle %2d: reduced chi-square %.4f%s",
            entry["stage"],
            entry["cycle"],
            entry["chi_square"],
            f"; {entry['outliers']} outliers rejected" if "outliers" in entry else "",
        )
    for name, model in zip(names, result.models):
        for term_name, term in model.terms.items():
            logger.info(
                "%s: %s term on %s nodes, %.4g to %.4g",
                name,
                term_name,
                " x ".join(str(n) for n in term.shape),
                term.values.min(),
                term.values.max(),
            )
