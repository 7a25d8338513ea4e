"""dxtbx Format classes of dials-diffuse, registered through the dxtbx.format entry points."""
