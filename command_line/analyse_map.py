"""dials.diffuse.analyse_map: isotropic/anisotropic parts, statistics, 3D-DeltaPDF, viewer."""

import logging
import sys

from dials_diffuse.algorithms.maps import analyse, delta_pdf
from dials_diffuse.io import map_files, map_plots, map_viewer
from dials_diffuse.io.tables import Table, load_table, table_names
from dials_diffuse.util.errors import UserError
from dials_diffuse.util.program import Program

logger = logging.getLogger("dials_diffuse.command_line.analyse_map")

help_message = """
Analyse a diffuse map: the merged.nxs of merge (the asymmetric unit,
expanded by the Laue group; with the split halves of merge for CC1/2) or a
map.nxs of map, or mdx2's map, an MTZ or a CCP4 map of dials.diffuse.map.
The unit cell and space group come from the .expt (or unit_cell=,
space_group=).

1. Laue-symmetry average, the spread of the mates kept as an error estimate;
2. the isotropic component (mean per shell of |s| = 1/d, with the voxel
   counts, as LUNUS) and the anisotropic map (map minus isotropic);
3. statistics per shell: completeness, mean, sigma, I/sigma, anisotropic
   rms, symmetry spread, CC1/2 of the total and of the anisotropic signal;
4. the 3D-DeltaPDF (as NXRefine): Bragg positions punched (a sphere of
   delta_pdf.punch.radius r.l.u., or the peak ellipsoid of peaks.nxs) and
   filled (zero or the shell mean), apodised, Fourier transformed on the
   supercell; in Angstrom along a, b, c;
5. an interactive viewer (one HTML page): sections along h, k, l of every
   layer and x, y, z of the DeltaPDF, at any level, linear or log colour.

Outputs: map_analysis.nxs (NXdata per layer: intensity, isotropic,
anisotropic, symmetry_spread and symmetry_mates -- the standard error of the
average is spread / sqrt(mates) --, intensity_error; tables
isotropic_profile and shell_statistics),
isotropic.csv, map_statistics.csv, map_statistics.png, map_sections.png,
delta_pdf.nxs, delta_pdf.ccp4 (cell: the supercell; origin at the grid
centre), delta_pdf.png, map_viewer.html.

Examples:

  dials.diffuse.analyse_map merged.nxs refined.expt

  dials.diffuse.analyse_map map.nxs refined.expt shells.width=0.02

  dials.diffuse.analyse_map merged.nxs refined.expt peaks.nxs \\
      delta_pdf.punch.shape=ellipsoid delta_pdf.map=anisotropic

  dials.diffuse.analyse_map mdx2_map.nxs unit_cell=34,41,52,90,90,90 \\
      space_group=P212121 delta_pdf.enable=False
"""

# The step's own parameters (dials.diffuse.process nests them).
step_phil = phil_scope = (
    map_files.input_phil_str
    + analyse.phil_str
    + "delta_pdf {\n"
    + """
enable = True
  .type = bool
  .help = "Compute the 3D-DeltaPDF."
"""
    + delta_pdf.phil_str
    + """
}
output {
  analysis = map_analysis.nxs
    .type = path
    .help = "The map, its isotropic and anisotropic parts and the symmetry"
            "spread (NXdata each, NeXpy opens them) with the shell tables."
  isotropic = isotropic.csv
    .type = path
    .help = "The isotropic component per shell (|s|, d, voxels, mean). None:"
            "not written."
  statistics = map_statistics.csv
    .type = path
    .help = "Statistics per resolution shell. None: not written."
  plot = map_statistics.png
    .type = path
    .help = "Isotropic profile, completeness, I/sigma, CC1/2 against |s|."
            "None: no plot."
  sections = map_sections.png
    .type = path
    .help = "Central sections of the map and its two parts. None: no plot."
  delta_pdf = delta_pdf.nxs
    .type = path
    .help = "The 3D-DeltaPDF (NXdata, axes x, y, z in Angstrom)."
  delta_pdf_ccp4 = delta_pdf.ccp4
    .type = path
    .help = "The 3D-DeltaPDF as a CCP4 map (cell: the supercell). None: not"
            "written."
  delta_pdf_plot = delta_pdf.png
    .type = path
    .help = "Central sections of the 3D-DeltaPDF. None: no plot."
  viewer = map_viewer.html
    .type = path
    .help = "The interactive viewer page. None: not written."
  viewer_voxels = 400000
    .type = int(value_min=1000)
    .help = "Most grid points per layer in the viewer (larger layers are"
            "downsampled by a whole step)."
}
"""
)


def split_inputs(inputs):
    """The map files and the peak model (peaks.nxs) among the claimed files."""
    maps, peaks = [], None
    for path in inputs.claimed:
        if path.suffix.lower() == ".nxs" and "peak_model" in _names(path):
            peaks = path
        else:
            maps.append(path)
    return maps, peaks


def _names(path):
    try:
        return table_names(path)
    except OSError:
        return []


def main(params, inputs, run):
    maps, peaks_path = split_inputs(inputs)
    if len(maps) != 1:
        raise UserError(
            "give one map: merged.nxs of merge, map.nxs of map, mdx2's map, an MTZ "
            "or a CCP4 map (and the refined .expt)"
        )
    if params.delta_pdf.enable and params.delta_pdf.punch.shape == "ellipsoid":
        if peaks_path is None:
            raise UserError(
                "delta_pdf.punch.shape=ellipsoid needs the peaks.nxs of find_peaks"
            )
    crystal = inputs.experiments[0].crystal if inputs.experiments else None
    recmap = map_files.read_map_as_given(maps[0], params.input, crystal)
    logger.info(
        "Map %s: %s grid points, %s per r.l.u., cell %s, space group %s",
        recmap.source,
        "x".join(map(str, recmap.shape)),
        "x".join(map(str, recmap.subdivide)),
        recmap.unit_cell,
        recmap.space_group,
    )
    if params.symmetry.average and recmap.space_group is None:
        raise UserError(
            f"{recmap.source}: no space group for the symmetry average: give the "
            ".expt, space_group= or symmetry.average=False"
        )
    analyse_and_write(recmap, params, peaks_path, run)


def analyse_and_write(recmap, params, peaks_path, run):
    """Analyse a loaded map and write every output (the program and process call it).

    `peaks_path`: the peaks.nxs of find_peaks, for punching by the peak-model
    ellipsoid (None otherwise).
    """
    with run.timer("analyse"):
        result = analyse.do_analyse_map(recmap, params)
    log_statistics(result)
    run.results.update(result.summary)
    analysed = result.map
    layers = [analysed.signal, "isotropic", "anisotropic"]
    layers += [
        n for n in ("symmetry_spread", "intensity_error") if n in analysed.layers
    ]
    tables = [
        Table.from_frame("isotropic_profile", result.profile),
        Table.from_frame("shell_statistics", result.statistics),
    ]
    with run.write(params.output.analysis, "map analysis (NeXus)") as path:
        map_files.write_map_layers(path, analysed, layers, "anisotropic", tables)
    if params.output.isotropic:
        with run.write(params.output.isotropic, "isotropic profile (CSV)") as path:
            result.profile.to_csv(path, index=False, float_format="%.6g")
    if params.output.statistics:
        with run.write(params.output.statistics, "shell statistics (CSV)") as path:
            result.statistics.to_csv(path, index=False, float_format="%.6g")
    if params.output.plot:
        with run.write(params.output.plot, "statistics plot") as path:
            map_plots.plot_map_statistics(result.profile, result.statistics, path)
    if params.output.sections:
        with run.write(params.output.sections, "map sections") as path:
            map_plots.plot_central_sections(
                analysed.axes,
                [
                    (analysed.signal, analysed.values, False),
                    ("isotropic", analysed.layers["isotropic"], False),
                    ("anisotropic", analysed.layers["anisotropic"], True),
                ],
                "hkl",
                path,
            )
    pdf = None
    if params.delta_pdf.enable:
        pdf = compute_delta_pdf(params, analysed, peaks_path, run)
    if params.output.viewer:
        with run.write(params.output.viewer, map_viewer.VIEWER_OUTPUT) as path:
            write_viewer(path, analysed, pdf, params.output.viewer_voxels)


def log_statistics(result):
    table = result.statistics
    logger.info("\nStatistics by resolution shell:")
    columns = ["d_low", "d_high", "measured", "completeness", "mean", "sigma"]
    columns += [
        c for c in ("i_over_sigma", "cc_half", "cc_half_anisotropic") if c in table
    ]
    logger.info(
        table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}")
    )
    logger.info(
        "Overall: %s",
        ", ".join(
            f"{key} {value:.4g}"
            for key, value in result.summary.items()
            if isinstance(value, float)
        ),
    )


def compute_delta_pdf(params, analysed, peaks_path, run):
    """The 3D-DeltaPDF of the analysed map, written as NeXus, CCP4 and PNG."""
    peak_model = None
    if params.delta_pdf.punch.shape == "ellipsoid":
        from dials_diffuse.algorithms.diffuse.peaks import PeakModel

        peak_model = PeakModel.from_table(load_table(peaks_path, "peak_model"))
    source = analysed.with_layers({"intensity": analysed.values})
    with run.timer("delta_pdf"):
        pdf = delta_pdf.do_delta_pdf(source, params.delta_pdf, peak_model)
    step = pdf.step_angstrom
    logger.info(
        "3D-DeltaPDF: %s grid points, %.3g x %.3g x %.3g Angstrom steps, supercell "
        "%.4g %.4g %.4g Angstrom; %.1f%% of the map punched, %.1f%% filled, window "
        "to |s| %.3g 1/Angstrom",
        "x".join(map(str, pdf.values.shape)),
        *step,
        *pdf.supercell[:3],
        100 * pdf.punched_fraction,
        100 * pdf.filled_fraction,
        pdf.s_max,
    )
    run.results["delta_pdf"] = {
        "shape": list(pdf.values.shape),
        "step_angstrom": step.tolist(),
        "supercell": list(pdf.supercell),
        "punched_fraction": pdf.punched_fraction,
        "filled_fraction": pdf.filled_fraction,
        "s_max": pdf.s_max,
    }
    with run.write(params.output.delta_pdf, "3D-DeltaPDF (NeXus)") as path:
        map_files.write_real_space_nexus(path, pdf)
    if params.output.delta_pdf_ccp4:
        with run.write(params.output.delta_pdf_ccp4, "3D-DeltaPDF (CCP4)") as path:
            map_files.write_real_space_ccp4(path, pdf, "dials.diffuse 3D-DeltaPDF")
    if params.output.delta_pdf_plot:
        with run.write(params.output.delta_pdf_plot, "3D-DeltaPDF sections") as path:
            map_plots.plot_central_sections(
                pdf.axes_angstrom,
                [("3D-DeltaPDF", pdf.values, True)],
                "xyz",
                path,
                units="(Angstrom)",
            )
    return pdf


def write_viewer(path, analysed, pdf, max_voxels):
    layers = [
        map_viewer.viewer_layer(
            name,
            analysed.axes,
            analysed.layers[name],
            signed=signed,
            max_voxels=max_voxels,
        )
        for name, signed in (
            (analysed.signal, False),
            ("isotropic", False),
            ("anisotropic", True),
        )
    ]
    if pdf is not None:
        layers.append(
            map_viewer.viewer_layer(
                "3D-DeltaPDF",
                pdf.axes_angstrom,
                pdf.values,
                axis_names=("x along a", "y along b", "z along c"),
                units="Angstrom",
                signed=True,
                max_voxels=max_voxels,
            )
        )
    map_viewer.write_map_viewer(path, layers, f"Map viewer: {analysed.source}")


program = Program(
    name="analyse_map",
    phil=phil_scope,
    help=help_message,
    main=main,
    claim_file=map_files.is_map_file,
)

run = program.run


if __name__ == "__main__":
    sys.exit(run())
