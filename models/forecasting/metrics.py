"""Forecast accuracy with the platform's shared definition (``evaluate``), and its WAPE and sMAPE."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .series import FloatArray


def evaluate(
    y_true: Sequence[float] | FloatArray | pd.Series,
    y_pred: Sequence[float] | FloatArray | pd.Series,
    *,
    y_train: Sequence[float] | FloatArray | pd.Series | None = None,
    season_length: int = 12,
) -> dict[str, float]:
    """Forecast accuracy with the platform's shared definition.

    Returns ``wape`` (sum|y - yhat| / sum|y|), ``accuracy`` (``max(0, 1 - wape)``), ``smape`` (mean of
    ``200 |y - yhat| / (|y| + |yhat|)``, a 0/0 term counts as 0), ``mae`` and, when ``y_train`` has more
    than ``season_length`` points with a non-zero seasonal difference, ``mase`` (MAE over the in-sample
    mean absolute lag-``season_length`` difference). When every actual is zero, ``wape`` is 0 for a
    perfect forecast and infinite otherwise.
    """
    y = np.asarray(y_true, dtype=float).ravel()
    f = np.asarray(y_pred, dtype=float).ravel()
    if y.shape != f.shape:
        raise ValueError(f"y_true and y_pred have different lengths ({y.size} and {f.size})")
    if y.size == 0:
        raise ValueError("evaluate needs at least one point")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(f))):
        raise ValueError("evaluate: y_true and y_pred must be finite")
    abs_err = np.abs(y - f)
    wape = _wape(float(abs_err.sum()), float(np.abs(y).sum()))
    out = {
        "wape": wape,
        "accuracy": max(0.0, 1.0 - wape),
        "smape": _smape(y, f),
        "mae": float(abs_err.mean()),
    }
    if y_train is not None:
        tr = np.asarray(y_train, dtype=float).ravel()
        if tr.size > season_length:
            scale = float(np.mean(np.abs(tr[season_length:] - tr[:-season_length])))
            if scale > 0:
                out["mase"] = float(abs_err.mean()) / scale
    return out


def _wape(abs_err_sum: float, abs_actual_sum: float) -> float:
    if abs_actual_sum > 0:
        return abs_err_sum / abs_actual_sum
    return 0.0 if abs_err_sum == 0 else math.inf


def _smape(y: FloatArray, f: FloatArray) -> float:
    den = np.abs(y) + np.abs(f)
    num = 2.0 * np.abs(y - f)
    terms = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(100.0 * terms.mean())
