"""Prediction-interval half-widths: from the ensemble's backtest errors, or (levels without a
backtest) from in-sample residuals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .series import FloatArray

_Z80 = 1.2815515655446004
_Z95 = 1.959963984540054


def _interval_widths(
    errors_by_step: Sequence[FloatArray], max_horizon: int, inflation: float, tail_ratio: float
) -> tuple[FloatArray, FloatArray, float]:
    """80% and 95% half-widths for steps 1..max_horizon from backtest errors (list index = step - 1).

    The half-width is ``q * h ** gamma``: ``gamma`` is the slope of log RMSE on log step (clipped to
    [0.25, 1]), ``q`` the 80% / 95% quantile of the pooled ``|error| / h ** gamma``, times
    ``inflation``; the 95% one is at least ``tail_ratio`` times the 80% one.
    """
    steps = [j + 1 for j, e in enumerate(errors_by_step) if e.size]
    if not steps:
        return np.zeros(max_horizon), np.zeros(max_horizon), 0.5
    rms = np.array([math.sqrt(float(np.mean(errors_by_step[j - 1] ** 2))) for j in steps])
    counts = np.array([errors_by_step[j - 1].size for j in steps], dtype=np.float64)
    gamma = 0.5
    usable = rms > 0
    if int(usable.sum()) >= 3:
        lx = np.log(np.array(steps, dtype=np.float64)[usable])
        ly = np.log(rms[usable])
        wts = counts[usable]
        mx = float(np.average(lx, weights=wts))
        var = float(np.average((lx - mx) ** 2, weights=wts))
        if var > 0:
            gamma = (
                float(np.average((lx - mx) * (ly - float(np.average(ly, weights=wts))), weights=wts)) / var
            )
    gamma = min(max(gamma, 0.25), 1.0)
    scaled = np.concatenate([np.abs(errors_by_step[j - 1]) / j**gamma for j in steps])
    q80 = inflation * float(np.quantile(scaled, 0.8))
    q95 = max(inflation * float(np.quantile(scaled, 0.95)), tail_ratio * q80)
    growth = np.arange(1, max_horizon + 1, dtype=np.float64) ** gamma
    return q80 * growth, q95 * growth, gamma


def _simple_widths(
    residuals: FloatArray, max_horizon: int, growth: FloatArray, level: float, spread: float
) -> tuple[FloatArray, FloatArray]:
    """Normal-theory half-widths from in-sample residuals (fallback levels without a backtest)."""
    if residuals.size:
        sigma = math.sqrt(float(np.mean(residuals**2)))
        return _Z80 * sigma * growth, _Z95 * sigma * growth
    half80 = spread * abs(level) * growth
    return half80, half80 * _Z95 / _Z80
