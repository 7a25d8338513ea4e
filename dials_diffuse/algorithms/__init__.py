"""The work of every program, as plain functions on DIALS objects and numpy arrays."""
