"""Standard forecasting baselines for the real-data benchmarks: seasonal naive, ETS, Theta, and MASE.

Plain functions on plain arrays (``history``: the training values in time order; ``h``: months to
forecast), independent of the platform's forecaster so that it is compared with something it did not
build. One fixed specification each, chosen before looking at any test window:

- ``seasonal_naive``: last year's months repeated; with less than a season of history, the last value.
- ``ets``: statsmodels ``ExponentialSmoothing`` (Holt-Winters), additive damped trend, seasonal period
  12, multiplicative seasonality when every value is positive and additive otherwise, parameters and
  initial states by maximum likelihood (``initialization_method="estimated"``). With less than two
  seasons of history the seasonal part is left out (additive damped trend only); with fewer than 4
  values, the last value.
- ``theta``: statsmodels ``ThetaModel`` (the standard Theta method of Assimakopoulos & Nikolopoulos as
  in Hyndman & Billah: SES with half the linear-trend drift), period 12, its own seasonality test and
  multiplicative classical decomposition (``method="auto"``: additive when a value is not positive);
  with less than two seasons of history, no deseasonalising.
- ``mase``: mean absolute error over the in-sample mean absolute lag-``m`` difference (the in-sample
  seasonal-naive MAE, Hyndman & Koehler 2006). A history of ``m`` values or fewer has no lag-``m``
  difference: the lag-1 (naive) MAE is used instead; if that is 0 too, the result is NaN.

All forecasts are finite arrays of length ``h``; ETS and Theta fall back to seasonal naive if
statsmodels raises or returns non-finite values (it never did on the retail or M3 series).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

SEASON = 12

__all__ = ["SEASON", "ets", "mase", "seasonal_naive", "smape", "theta"]


def _as_array(history: npt.ArrayLike) -> FloatArray:
    y = np.asarray(history, dtype=np.float64).ravel()
    if y.size == 0:
        raise ValueError("history is empty")
    if not np.all(np.isfinite(y)):
        raise ValueError("history has non-finite values")
    return y


def seasonal_naive(history: npt.ArrayLike, h: int, m: int = SEASON) -> FloatArray:
    """Last season repeated (``y[n - m + (k mod m)]``); the last value when ``len(history) < m``."""
    y = _as_array(history)
    if y.size < m:
        return np.full(h, y[-1], dtype=np.float64)
    return np.resize(y[-m:], h).astype(np.float64)


def ets(history: npt.ArrayLike, h: int, m: int = SEASON) -> FloatArray:
    """Holt-Winters with additive damped trend; multiplicative seasonality for positive series."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    y = _as_array(history)
    if y.size < 4:
        return seasonal_naive(y, h, m)
    seasonal: str | None = None
    if y.size >= 2 * m:
        seasonal = "mul" if bool(np.all(y > 0)) else "add"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ExponentialSmoothing(
                y,
                trend="add",
                damped_trend=True,
                seasonal=seasonal,
                seasonal_periods=m if seasonal else None,
                initialization_method="estimated",
            )
            forecast = np.asarray(model.fit().forecast(h), dtype=np.float64)
    except Exception:  # a baseline that cannot be fitted answers with seasonal naive
        return seasonal_naive(y, h, m)
    return forecast if np.all(np.isfinite(forecast)) else seasonal_naive(y, h, m)


def theta(history: npt.ArrayLike, h: int, m: int = SEASON) -> FloatArray:
    """statsmodels' standard Theta method, period ``m`` (deseasonalised when the series is seasonal)."""
    from statsmodels.tsa.forecasting.theta import ThetaModel

    y = _as_array(history)
    if y.size < 4:
        return seasonal_naive(y, h, m)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ThetaModel(y, period=m, deseasonalize=y.size >= 2 * m, method="auto")
            forecast = np.asarray(model.fit().forecast(h), dtype=np.float64)
    except Exception:  # a baseline that cannot be fitted answers with seasonal naive
        return seasonal_naive(y, h, m)
    return forecast if np.all(np.isfinite(forecast)) else seasonal_naive(y, h, m)


def mase(actual: npt.ArrayLike, forecast: npt.ArrayLike, history: npt.ArrayLike, m: int = SEASON) -> float:
    """MAE of ``forecast`` over the in-sample seasonal-naive MAE of ``history`` (lag 1 if too short)."""
    y = np.asarray(actual, dtype=np.float64).ravel()
    f = np.asarray(forecast, dtype=np.float64).ravel()
    if y.shape != f.shape:
        raise ValueError(f"actual and forecast have different lengths ({y.size} and {f.size})")
    tr = _as_array(history)
    lag = m if tr.size > m else 1
    if tr.size <= lag:
        return math.nan
    scale = float(np.mean(np.abs(tr[lag:] - tr[:-lag])))
    if scale <= 0:
        return math.nan
    return float(np.mean(np.abs(y - f))) / scale


def smape(actual: npt.ArrayLike, forecast: npt.ArrayLike) -> float:
    """Mean of ``200 |y - f| / (|y| + |f|)`` (a 0/0 term counts as 0), in percent."""
    y = np.asarray(actual, dtype=np.float64).ravel()
    f = np.asarray(forecast, dtype=np.float64).ravel()
    den = np.abs(y) + np.abs(f)
    terms = np.divide(2.0 * np.abs(y - f), den, out=np.zeros_like(den), where=den > 0)
    return float(100.0 * terms.mean())
