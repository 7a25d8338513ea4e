"""From the merged map to science: analysis, 3D-DeltaPDF, comparison of maps.

Each step is a plain function on a `grid.ReciprocalMap` with its own PHIL
scope: `analyse.do_analyse_map` (symmetry average, isotropic/anisotropic
parts, statistics per shell), `delta_pdf.do_delta_pdf` (punch and fill,
apodise, Fourier transform) and `compare.do_compare_maps` (CC_total,
CC_aniso, scale and offset). Maps are read by `dials_diffuse.io.map_files`.
"""
