"""A trained forecaster (``FittedForecaster``): the precomputed paths and what the backtest found."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..pickling import FORECASTING, pickled_as
from .config import ForecastConfig
from .series import FloatArray


@pickled_as(FORECASTING)
@dataclass(frozen=True)
class ModelScore:
    """Backtest accuracy of one model (or of the ensemble), pooled over origins and steps."""

    wape: float
    accuracy: float
    smape: float
    weight: float


@pickled_as(FORECASTING)
@dataclass(frozen=True)
class BacktestReport:
    """What training found out. Everything here is plain data (safe to log as params/metrics).

    Attributes:
        chain_used: the fallback level used (one of :data:`FALLBACK_CHAIN`).
        chain_tried: the levels considered before it, with why each was passed over.
        models: backtest score per model that survived.
        weights: ensemble weight per model (sums to 1).
        best_model: the model with the best backtest accuracy.
        ensemble: backtest score of the weighted ensemble (its accuracy is the family's accuracy).
        failures: ``{model: reason}`` for every model dropped.
        n_origins: origins used (0 for levels without a backtest).
        origins: first forecast month (YYYY-MM) of each origin, latest first.
        horizon: months scored after each origin.
        training_months: months of history used (after trimming leading zeros).
        first_month / last_month: the training range (YYYY-MM).
        seasonal: whether the seasonality test found a yearly pattern.
        structure: the choices fixed on the full history (ARIMA order, ETS form, ...).
        interval_growth: the exponent ``gamma`` of the interval half-width ``~ h ** gamma``.
        cpu_seconds: CPU time of the whole training (including Prophet's Stan process).
    """

    chain_used: str
    chain_tried: dict[str, str]
    models: dict[str, ModelScore]
    weights: dict[str, float]
    best_model: str
    ensemble: ModelScore | None
    failures: dict[str, str]
    n_origins: int
    origins: tuple[str, ...]
    horizon: int
    training_months: int
    first_month: str
    last_month: str
    seasonal: bool
    structure: dict[str, str]
    interval_growth: float
    cpu_seconds: float


@dataclass
class ForecastResult:
    """A forecast for the next ``len(months)`` months (all lists have that length)."""

    months: list[dt.date]
    point: list[float]
    lower_80: list[float]
    upper_80: list[float]
    lower_95: list[float]
    upper_95: list[float]
    weights: dict[str, float]
    best_model: str


@pickled_as(FORECASTING)
class FittedForecaster:
    """A trained forecaster: the precomputed paths for ``1..max_horizon`` months and the backtest.

    It holds numbers only (no fitted statsmodels/Prophet objects), so it pickles small and fast.
    """

    def __init__(
        self,
        *,
        config: ForecastConfig,
        last_month: pd.Period,
        point: FloatArray,
        lower_80: FloatArray,
        upper_80: FloatArray,
        lower_95: FloatArray,
        upper_95: FloatArray,
        components: dict[str, FloatArray],
        backtest: BacktestReport,
    ) -> None:
        self.config = config
        self.last_month = last_month
        self.point = point
        self.lower_80 = lower_80
        self.upper_80 = upper_80
        self.lower_95 = lower_95
        self.upper_95 = upper_95
        self.components = components
        self.backtest = backtest
        self._months = tuple((last_month + i).start_time.date() for i in range(1, point.shape[0] + 1))

    @property
    def max_horizon(self) -> int:
        return int(self.point.shape[0])

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.backtest.weights)

    @property
    def best_model(self) -> str:
        return self.backtest.best_model

    def _check_months(self, months: int) -> None:
        if isinstance(months, bool) or not isinstance(months, int | np.integer):
            raise ValueError(f"months must be an integer between 1 and {self.max_horizon}, got {months!r}")
        if not 1 <= int(months) <= self.max_horizon:
            raise ValueError(
                f"months must be between 1 and {self.max_horizon} (max_horizon), got {months}; "
                "retrain with a larger ForecastConfig.max_horizon for longer forecasts"
            )

    def months_ahead(self, months: int) -> list[dt.date]:
        """Month-start dates of the next ``months`` months after the training history."""
        self._check_months(months)
        return list(self._months[: int(months)])

    def predict(self, months: int) -> ForecastResult:
        """The forecast for the next ``months`` months (1..max_horizon): point and 80%/95% intervals."""
        k = int(months) if not isinstance(months, bool) and isinstance(months, int | np.integer) else 0
        self._check_months(months)
        return ForecastResult(
            months=self.months_ahead(k),
            point=self.point[:k].tolist(),
            lower_80=self.lower_80[:k].tolist(),
            upper_80=self.upper_80[:k].tolist(),
            lower_95=self.lower_95[:k].tolist(),
            upper_95=self.upper_95[:k].tolist(),
            weights=dict(self.backtest.weights),
            best_model=self.backtest.best_model,
        )

    def component_forecast(self, model: str, months: int) -> list[float]:
        """One model's own forecast (refitted on the full history), e.g. to compare with the ensemble."""
        self._check_months(months)
        if model not in self.components:
            raise KeyError(f"no forecast for model {model!r}; available: {sorted(self.components)}")
        return [float(v) for v in self.components[model][: int(months)]]

    def __repr__(self) -> str:
        b = self.backtest
        return (
            f"FittedForecaster(level={b.chain_used!r}, best={b.best_model!r}, "
            f"weights={ {k: round(v, 3) for k, v in b.weights.items()} }, months={b.training_months}, "
            f"max_horizon={self.max_horizon})"
        )
