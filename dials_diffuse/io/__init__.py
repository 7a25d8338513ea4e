"""Our file formats, one module each with its write/read pair, and output helpers.

- ``tables``: NeXus tables (peaks.nxs, integrated.nxs, corrected.nxs, merged.nxs);
- ``image_series``: data.nxs (and the image-stack layout mask.nxs shares);
- ``mask_file``: mask.nxs; ``background_file``: background.nxs;
- ``scale_model``: scale.nxs; ``polar_files``: polar.h5;
  ``correlation_file``: correlation.h5;
- ``histogram_files``, ``linearity_files``: pixel statistics tables;
- ``dectris_master``: the DECTRIS master header (read; the simulator writes it);
- ``dials_mask``: DIALS mask pickles (read safely, write);
- ``summing_tool_config``: the 2018 frame-statistics tool's config.yaml;
- plots, HTML report, Redis, JSON summaries and atomic writes.
"""
