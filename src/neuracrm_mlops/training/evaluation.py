"""The one definition of accuracy that the 80% rule depends on, shared by every model family.

- classification (lead scoring, sentiment): share of correct labels over the window;
- forecast: ``max(0, 1 - WAPE)``, WAPE = sum|y - yhat| / sum|y|.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def wape(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> float:
    """Weighted absolute percentage error; ``inf`` when every actual is zero but a forecast is not."""
    y = np.asarray(y_true, dtype=float)
    f = np.asarray(y_pred, dtype=float)
    if y.shape != f.shape:
        raise ValueError(f"{y.shape[0]} actuals but {f.shape[0]} forecasts")
    if y.size == 0:
        raise ValueError("no values to evaluate")
    error = float(np.abs(y - f).sum())
    scale = float(np.abs(y).sum())
    if scale == 0:
        return 0.0 if error == 0 else float("inf")
    return error / scale


def forecast_accuracy(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> float:
    return max(0.0, 1.0 - wape(y_true, y_pred))


def classification_accuracy(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("no values to evaluate")
    return float(np.mean([a == b for a, b in zip(y_true, y_pred, strict=True)]))


def evaluate(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    *,
    probabilities: Sequence[float] | np.ndarray | None = None,
) -> dict[str, float]:
    """Holdout metrics of a classifier (lead scoring, sentiment): ``accuracy`` (the share of labels
    right, what the 80% rule reads, as the monitor measures it live) and ``n``; with the positive
    class's ``probabilities`` of a binary classifier also ROC AUC, precision, recall and Brier score.
    Forecasts have their own (``models.forecasting_model.evaluate``: WAPE, sMAPE, MASE)."""
    metrics = {"accuracy": classification_accuracy(list(y_true), list(y_pred)), "n": float(len(y_true))}
    if probabilities is not None:
        from sklearn.metrics import brier_score_loss, precision_score, recall_score, roc_auc_score

        y = np.asarray(y_true, dtype=int)
        p = np.asarray(probabilities, dtype=float)
        predicted = np.asarray(y_pred, dtype=int)
        metrics["roc_auc"] = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
        metrics["precision"] = float(precision_score(y, predicted, zero_division=0))
        metrics["recall"] = float(recall_score(y, predicted, zero_division=0))
        metrics["brier"] = float(brier_score_loss(y, p))
    return metrics
