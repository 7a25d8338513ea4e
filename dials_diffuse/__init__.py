"""dials-diffuse: DIALS programs for everything beyond the Bragg spot.

Diffuse scattering maps, pixel-level detector statistics, XFEL angular
correlations and Eiger intensity statistics. Programs live in
`dials_diffuse.command_line` (installed as `dials.diffuse.<name>`); each is a
thin shell over a plain function in `dials_diffuse.algorithms`.
"""

__version__ = "0.1.0"
