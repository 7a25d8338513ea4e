"""Per-frame intensity statistics of long image series."""
