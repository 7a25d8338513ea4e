"""Per-frame intensity statistics of long image series (seed 004)."""
