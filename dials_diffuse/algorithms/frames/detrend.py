"""Remove slow drifts from a per-frame series: linear, polynomial or moving window.

The detrended series keeps the raw mean (the trend is removed, then the mean
of the series added back), so both columns of the statistics table share a
scale, as in the 2018 Eiger summing tool (scipy.signal.detrend plus the mean).
"""

import numpy as np

from dials_diffuse.util.errors import DataError

METHODS = ("linear", "polynomial", "moving_window", "none")


def fit_trend(values, method="linear", order=2, window=101):
    """The slow trend of `values` (same units), by `method`.

    Parameters
    ----------
    values : ndarray of float
        The series, one value per frame (frames equally spaced).
    method : str
        'linear' (least-squares line), 'polynomial' (least-squares polynomial
        of degree `order`), 'moving_window' (centred moving mean over
        `window` frames, shorter at the ends) or 'none' (constant mean).
    order : int
        Polynomial degree for 'polynomial'.
    window : int
        Window length in frames for 'moving_window'.

    Returns
    -------
    ndarray
        The trend, one value per frame.
    """
    values = np.asarray(values, dtype=float)
    n = values.size
    if n == 0:
        raise DataError("no frames to detrend")
    x = np.arange(n, dtype=float)
    if method == "none" or n == 1:
        return np.full(n, values.mean())
    if method == "linear":
        order = 1
        method = "polynomial"
    if method == "polynomial":
        degree = min(int(order), n - 1)
        return np.polynomial.Polynomial.fit(x, values, degree)(x)
    if method == "moving_window":
        if window < 1:
            raise DataError(f"detrend.window={window}: must be at least 1 frame")
        import pandas as pd

        return (
            pd.Series(values)
            .rolling(int(window), center=True, min_periods=1)
            .mean()
            .to_numpy()
        )
    raise DataError(f"detrend method {method!r}: choose one of {', '.join(METHODS)}")


def detrend(values, method="linear", order=2, window=101):
    """Return (detrended, trend): `values` minus the trend plus their mean."""
    values = np.asarray(values, dtype=float)
    trend = fit_trend(values, method, order, window)
    return values - trend + values.mean(), trend


def running_cv(values, window):
    """Coefficient of variation in percent (std/mean*100) over a centred window."""
    import pandas as pd

    series = pd.Series(np.asarray(values, dtype=float))
    rolling = series.rolling(int(window), center=True, min_periods=2)
    return (rolling.std() / rolling.mean() * 100.0).to_numpy()
