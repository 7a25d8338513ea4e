"""The diffuse-scattering pipeline (mdx2 workflow) on DIALS experiments."""
