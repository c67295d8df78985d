"""The sales forecast family's public API: ``train``, ``predict``, ``ForecastConfig``, ``evaluate``, ...

The code lives in the ``forecasting`` package (its docstring says how ``train`` works); this module
re-exports what the rest of the platform uses. It is also the import path registered models were
saved under: a version's joblib artifact names ``neuracrm_mlops.models.forecasting_model``
``.FittedForecaster`` (and ``ForecastConfig``, ``BacktestReport``, ``ModelScore``), and those
classes keep pickling under this path (``models/pickling.py``). Keep exporting them here.
"""

from __future__ import annotations

from neuracrm_mlops.models.forecasting.config import (
    ALL_MODELS,
    DEFAULT_MODELS,
    FALLBACK_CHAIN,
    ForecastConfig,
)
from neuracrm_mlops.models.forecasting.fallback import seasonal_naive_forecast
from neuracrm_mlops.models.forecasting.forecaster import (
    BacktestReport,
    FittedForecaster,
    ForecastResult,
    ModelScore,
)
from neuracrm_mlops.models.forecasting.metrics import evaluate
from neuracrm_mlops.models.forecasting.training import predict, train

__all__ = [
    "ALL_MODELS",
    "DEFAULT_MODELS",
    "FALLBACK_CHAIN",
    "BacktestReport",
    "FittedForecaster",
    "ForecastConfig",
    "ForecastResult",
    "ModelScore",
    "evaluate",
    "predict",
    "seasonal_naive_forecast",
    "train",
]
