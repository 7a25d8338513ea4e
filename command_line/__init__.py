"""The dials.diffuse.* programs: one module each, a thin shell over dials_diffuse.algorithms."""
