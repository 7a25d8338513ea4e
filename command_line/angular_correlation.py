"""dials.diffuse.angular_correlation: difference angular correlations C(q, dphi)."""

import logging
import sys
from pathlib import Path

import numpy as np

from dials_diffuse.algorithms.xfel.correlation import do_angular_correlation
from dials_diffuse.io.correlation_file import write_correlation
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.io.polar_files import open_polar_file
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.parallel import parallel_map_from_params
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.angular_correlation")

help_message = """
Difference angular correlations of still-shot pairs, from the polar images
of dials.diffuse.polar_transform. For each pair the two polar images are
subtracted (where both are valid), and the difference is correlated with
itself along phi by FFT, divided by the correlation of the mask itself, so
that detector gaps and masked regions do not bias the result. Pairs whose
mean squared difference is an outlier (robust z-score of median and MAD
above outliers.z_max) are rejected; the rest are averaged into C(q, dphi).

Pairs: pairs=consecutive (neighbouring shots in acquisition order, dark
shots left out), or a JSON file listing tag pairs, as in the SACLA recipe:
[["tag_166762240", "tag_166762242"], ...] (integers work too). Pairs naming
tags not in the polar file are skipped. Shots flagged dark in the polar file
are never used; skip_dark=N also leaves out the first N shots.

Outputs: correlation.h5 (C(q, dphi), q in Å⁻¹, dphi in degrees, how many
pairs contribute, and every pair with its tags, score, z and whether it was
used) and correlation.png.

Examples:

  dials.diffuse.angular_correlation polar.h5

  dials.diffuse.angular_correlation polar.h5 pairs=tag_pairs.json

  dials.diffuse.angular_correlation polar.h5 skip_dark=50 outliers.z_max=5
"""

phil_scope = """
include scope dials_diffuse.algorithms.xfel.correlation.phil_scope
plot {
  exclude_dphi = 5
    .type = float(value_min=0, allow_none=False)
    .help = "Leave out lags within this many degrees of 0 and 360 in the plot"
            "(the self-correlation peak)."
}
output {
  correlation = correlation.h5
    .type = path
    .help = "C(q, dphi), axes, pair table (HDF5)."
  plot = correlation.png
    .type = path
    .help = "Image of C(q, dphi) and its mean over q. None: no plot."
}
"""


def main(params, inputs, run):
    if len(inputs.nexus) != 1 or len(inputs.experiments) or inputs.reflections:
        others = [f for f in inputs.files if f not in inputs.nexus]
        if others:
            raise UserError(
                f"{others[0]}: not a polar file from dials.diffuse.polar_transform"
            )
        raise UserError("give exactly one polar.h5 from dials.diffuse.polar_transform")
    polar_path = inputs.nexus[0]
    polar = open_polar_file(polar_path)
    try:
        if params.pairs != "consecutive":
            if not Path(params.pairs).is_file():
                raise UserError(f"{params.pairs}: no such pair file")
            inputs.protect(params.pairs)
        with parallel_map_from_params(params) as pmap, run.timer("correlate"):
            result = do_angular_correlation(polar, params, pmap)
        q, tags = polar.q, polar.tags
    finally:
        polar.close()
    dphi = result.dphi
    run.results.update(result.summary())
    with run.write(params.output.correlation, "angular correlation") as path:
        write_correlation(path, result, q, dphi, tags, polar_path)
    if params.output.plot:
        with run.write(params.output.plot, "correlation plot") as path:
            plot_correlation(
                result.correlation, q, dphi, params.plot.exclude_dphi, path
            )


def plot_correlation(correlation, q, dphi, exclude, path):
    """C(q, dphi) as an image and its mean over q, lags near 0 left out."""
    keep = (dphi > exclude) & (dphi < 360 - exclude)
    figure, (top, bottom) = new_figure(width=8, height=7, rows=2, sharex=True)
    shown = np.where(keep[None, :], correlation, np.nan)
    finite = shown[np.isfinite(shown)]
    vmin, vmax = np.percentile(finite, [1, 99]) if finite.size else (0, 1)
    image = top.imshow(
        shown,
        aspect="auto",
        origin="lower",
        cmap="RdBu_r",
        extent=(0, 360, q[0], q[-1]),
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    top.set_ylabel("q (Å⁻¹)")
    top.set_title("Difference angular correlation C(q, Δφ)")
    figure.colorbar(image, ax=top, label="C")
    defined = np.isfinite(shown)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(defined, shown, 0).sum(axis=0) / defined.sum(axis=0)
    bottom.plot(dphi, mean, lw=1)
    bottom.set_xlabel("Δφ (degrees)")
    bottom.set_ylabel("C averaged over q")
    bottom.set_xlim(0, 360)
    save_png(figure, path)


program = Program(
    name="angular_correlation",
    phil=phil_scope,
    help=help_message,
    main=main,
    parallel_work=True,
)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
