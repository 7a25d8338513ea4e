"""XFEL still shots: ring-fit beam centre, polar resampling, angular correlations."""
