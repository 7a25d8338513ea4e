"""Descriptive statistics of per-frame series, with the coefficient of variation."""

import numpy as np

ROWS = ("count", "mean", "std", "CV%", "min", "25%", "50%", "75%", "max")


def describe_series(columns):
    """A statistics table like the 2018 Eiger summing tool's: one column per series.

    Parameters
    ----------
    columns : dict of str -> array
        E.g. {'raw': sums, 'detrended': detrended}.

    Returns
    -------
    pandas.DataFrame
        Rows count, mean, std (sample, ddof=1), CV% (std/mean*100), min,
        quartiles, max; NaN values are ignored.
    """
    import pandas as pd

    table = {}
    for name, values in columns.items():
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        count = values.size
        mean = values.mean() if count else np.nan
        std = values.std(ddof=1) if count > 1 else np.nan
        quartiles = (
            np.percentile(values, [0, 25, 50, 75, 100]) if count else [np.nan] * 5
        )
        cv = std / mean * 100.0 if count > 1 and mean != 0 else np.nan
        table[name] = [count, mean, std, cv, *quartiles]
    return pd.DataFrame(table, index=list(ROWS))
