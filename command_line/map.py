"""dials.diffuse.map: a 3-D reciprocal-space map from a merged voxel table."""

import logging
import sys

import numpy as np

from dials_diffuse.algorithms.diffuse.maps import do_map
from dials_diffuse.io.map_files import write_map_ccp4, write_map_nexus
from dials_diffuse.io.plots import new_figure, save_png
from dials_diffuse.io.tables import load_table
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.map")

help_message = """
Make a 3-D map of a voxel table (merged.nxs of merge, or corrected.nxs) on
the voxel grid over limits in reciprocal lattice units: every grid point is
mapped to the asymmetric unit of the Laue group and takes that voxel's
value (symmetry expansion, as mdx2's map); voxels never observed are NaN.
The space group comes from the table (written by correct) or from a .expt.

Outputs: map.nxs (NXdata /entry/<column> with axes h, k, l: open it in
NeXpy), map.ccp4 (CCP4/MRC through iotbx; its cell is the box in r.l.u.,
P1, empty voxels filled with the mean) and map.png (the h=0, k=0 and l=0
sections).

Examples:

  dials.diffuse.map merged.nxs

  dials.diffuse.map merged.nxs limits=-10,10,-10,10,0,0.5 output.ccp4=None

  dials.diffuse.map merged.nxs refined.expt column=count symmetry=False
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = phil_scope = """
include scope dials_diffuse.algorithms.diffuse.maps.phil_scope
output {
  map = map.nxs
    .type = path
    .help = "The map as NeXus (NXdata with h, k, l axes)."
  ccp4 = map.ccp4
    .type = path
    .help = "The map as CCP4/MRC. None: not written."
  plot = map.png
    .type = path
    .help = "The central sections h=0, k=0, l=0. None: no plot."
}
"""


def plot_sections(axes, grid, column, path):
    figure, panels = new_figure(width=14, height=4.5, columns=3)
    names = "hkl"
    finite = grid[np.isfinite(grid)]
    low, high = np.percentile(finite, [2, 98]) if finite.size else (0, 1)
    for axis, panel in enumerate(panels):
        index = int(np.argmin(np.abs(axes[axis])))
        section = np.take(grid, index, axis=axis)
        others = [a for a in range(3) if a != axis]
        extent = [
            axes[others[1]][0],
            axes[others[1]][-1],
            axes[others[0]][0],
            axes[others[0]][-1],
        ]
        image = panel.imshow(
            section, origin="lower", extent=extent, vmin=low, vmax=high, aspect="auto"
        )
        panel.set_xlabel(names[others[1]])
        panel.set_ylabel(names[others[0]])
        panel.set_title(f"{names[axis]} = {axes[axis][index]:g}")
    figure.colorbar(image, ax=panels, label=column)
    save_png(figure, path)


def main(params, inputs, run):
    if len(inputs.nexus) != 1:
        raise UserError("give one table: the merged.nxs of merge (or a corrected.nxs)")
    # NaN is "not measured" in a merged table's columns (a half-set's where
    # the half is empty): only the Miller indices must be finite here.
    table = load_table(inputs.nexus[0], "hkl_table", finite=("h", "k", "l"))
    column = table.columns.get(params.column)
    if column is not None and np.isinf(np.asarray(column, dtype=np.float64)).any():
        raise UserError(f"{inputs.nexus[0]}: column '{params.column}' holds Inf")
    if inputs.experiments:
        space_group = inputs.experiments[0].crystal.get_space_group()
    elif "space_group" in table.attrs:
        from cctbx import sgtbx

        space_group = sgtbx.space_group_info(str(table.attrs["space_group"])).group()
    else:
        raise UserError(
            f"{inputs.nexus[0]}: no space group recorded: also give the refined .expt"
        )
    with run.timer("map"):
        result = do_map(table, space_group, params, name=str(inputs.nexus[0]))
    write_outputs(result, params, run)


def write_outputs(result, params, run):
    """Write the map (NeXus, CCP4) and the sections plot; record the results."""
    run.results.update(result.summary())
    with run.write(params.output.map, "map (NeXus)") as path:
        write_map_nexus(
            path,
            result.axes,
            result.grid,
            result.column,
            {"subdivide": result.subdivide},
        )
    if params.output.ccp4:
        with run.write(params.output.ccp4, "map (CCP4)") as path:
            write_map_ccp4(
                path,
                result.axes,
                result.grid,
                result.subdivide,
                f"dials.diffuse.map {result.column}",
            )
    if params.output.plot:
        with run.write(params.output.plot, "map sections") as path:
            plot_sections(result.axes, result.grid, result.column, path)


program = Program(name="map", phil=phil_scope, help=help_message, main=main)
run = program.run

if __name__ == "__main__":
    sys.exit(run())
