"""dxtbx Format classes, registered through the ``dxtbx.format`` entry points (setup.py)."""
