"""The end of the fallback chain: which levels a history qualifies for, the closed-form levels
(seasonal naive, naive, mean, zeros), and ``seasonal_naive_forecast`` for when no trained forecaster
can answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .backtest import _LevelResult
from .candidates import _fc_naive, _fc_seasonal_naive
from .config import ForecastConfig
from .forecaster import ForecastResult
from .intervals import _simple_widths
from .series import FloatArray, _Context, _to_monthly


def _run_simple_level(level: str, y: FloatArray, ctx: _Context, config: ForecastConfig) -> _LevelResult:
    """Seasonal naive, naive, mean or zeros: closed form, intervals from in-sample errors."""
    hmax = config.max_horizon
    steps = np.arange(1, hmax + 1, dtype=np.float64)
    m = ctx.m
    if level == "zeros":
        path = np.zeros(hmax)
        half80 = half95 = np.zeros(hmax)
        name = "zeros"
    elif level == "seasonal_naive":
        path = _fc_seasonal_naive(y, hmax, ctx, {})
        resid = y[m:] - y[:-m] if y.size > m else np.diff(y)
        growth = np.sqrt(np.floor((steps - 1) / m) + 1) if y.size > m else np.sqrt(steps)
        half80, half95 = _simple_widths(resid, hmax, growth, float(y.mean()), config.fallback_spread)
        name = "seasonal_naive"
    elif level == "naive":
        path = _fc_naive(y, hmax, ctx, {})
        half80, half95 = _simple_widths(
            np.diff(y), hmax, np.sqrt(steps), float(y[-1]), config.fallback_spread
        )
        name = "naive"
    else:
        path = np.full(hmax, float(y.mean()))
        resid = y - y.mean()
        growth = np.full(hmax, math.sqrt(1.0 + 1.0 / y.size)) if y.size > 1 else np.ones(hmax)
        if y.size > 1:
            resid = resid * math.sqrt(y.size / (y.size - 1))
        half80, half95 = _simple_widths(
            resid if y.size > 1 else np.zeros(0), hmax, growth, float(y.mean()), config.fallback_spread
        )
        name = "mean"
    return _LevelResult({name: path}, {name: 1.0}, {}, None, name, {}, [], 0, half80, half95, 0.5)


def _levels_for(y: FloatArray, config: ForecastConfig) -> list[str]:
    n = y.size
    if not np.any(y != 0):
        return ["zeros"]
    intermittent = float(np.mean(y == 0)) >= config.intermittent_zero_share
    levels = []
    if not intermittent:
        if n >= config.min_months_full:
            levels.append("full")
        levels.append("short")
        if n >= config.season_length:
            levels.append("seasonal_naive")
        if n >= 3:
            levels.append("naive")
    else:
        levels.append("intermittent")
    levels.append("mean")
    return levels


def seasonal_naive_forecast(history: pd.Series, months: int, m: int = 12) -> ForecastResult:
    """The last resort when no trained forecaster can answer: last year's months again (or the last
    value, with less than a year of history), with intervals from the history's seasonal differences.

    ``history``: revenue indexed by month (anything ``pd.Period(..., "M")`` accepts), at least 1 month.
    """
    if months < 1:
        raise ValueError(f"months must be at least 1, got {months}")
    y, first_month = _to_monthly(history)
    if y.size == 0:
        raise ValueError("seasonal naive needs at least one month of history")
    lag = m if y.size >= m else 1
    point = np.resize(y[-lag:], months).astype(np.float64)
    diffs = y[lag:] - y[:-lag] if y.size > lag else np.zeros(1)
    sigma = float(np.std(diffs)) if diffs.size > 1 else float(abs(y[-1]) * 0.25)
    steps = np.sqrt(np.arange(months) // lag + 1.0)  # one more seasonal step per cycle ahead
    last_month = first_month + (y.size - 1)
    width80, width95 = 1.2816 * sigma * steps, 1.9600 * sigma * steps
    return ForecastResult(
        months=[(last_month + i).start_time.date() for i in range(1, months + 1)],
        point=point.tolist(),
        lower_80=np.maximum(point - width80, 0.0).tolist(),
        upper_80=(point + width80).tolist(),
        lower_95=np.maximum(point - width95, 0.0).tolist(),
        upper_95=(point + width95).tolist(),
        weights={"seasonal_naive" if lag == m else "naive": 1.0},
        best_model="seasonal_naive" if lag == m else "naive",
    )
