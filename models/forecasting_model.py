"""Per-organization monthly revenue forecaster (the ``sales_forecast`` family).

Pure library code: a monthly revenue series goes in, a small picklable :class:`FittedForecaster` comes
out. No database, no MLflow; the training flow wraps this module.

How :func:`train` works
-----------------------
1. The history is validated (monthly, no gaps, no missing values) and leading zero months (the months
   before the organization's first sale) are dropped.
2. A *fallback level* is chosen (see :data:`FALLBACK_CHAIN`): the full ensemble needs
   ``min_months_full`` months and a series that is not intermittent; otherwise the chain goes down to a
   small ensemble for short series, an intermittent-demand ensemble, seasonal naive, naive and finally
   the mean (which works from a single month). All-zero histories forecast zero.
3. Every model of the level is fitted on the full history first. That fit fixes its structure (the
   ARIMA order, the ETS form, the seasonality decision) and gives the final ``max_horizon`` path.
   ARIMA, Prophet, the linear regression and the seasonal indices see only the last
   ``max_fit_months`` (10 years): long histories drift, and those fits cost more the longer the
   series; the cheap level models on the seasonally adjusted series use all of it.
4. Rolling-origin backtest: ``n_origins`` origins, ``origin_step`` months apart, the last one
   ``backtest_horizon`` months before the end; a history long enough that every origin keeps a full
   ``max_fit_months`` window gets more origins, up to ``max_origins``. Each model is refitted at
   every origin with its fixed structure (warm-started), on data up to that origin only, and
   forecasts to the end of the history. A model that raises or returns nonsense at any step is
   dropped, with the reason in ``backtest.failures``.
5. Accuracy is the platform's definition, ``max(0, 1 - WAPE)``, computed on the first
   ``backtest_horizon`` steps of every origin (pooled). Weights are inverse ``WAPE ** weight_power``
   over the models whose WAPE is within ``keep_ratio`` of the best one; the others get weight 0.
6. Prediction intervals come from the ensemble's own backtest errors: symmetric, with a half-width
   that grows as ``h ** gamma`` (``gamma`` fitted on the per-step error sizes), the 80% and 95%
   quantiles of the pooled, horizon-normalised absolute errors, inflated by ``interval_inflation``
   (calibrated on M3). Lower bounds are clipped at zero.

:meth:`FittedForecaster.predict` only slices these precomputed paths.

Cost (two workers on the project's 2-core machine): about 0.55 s of CPU per organization at 48 and at
120 months with the default models (Prophet ~40%, ARIMA ~30%), i.e. about 5 minutes for 1,000
organizations. A longer history costs about as much (the capped window): on the 152 ABS retail
series (``benchmarks/retail_forecast_check.py``, mostly 417 months, 6 backtest origins) 0.51 s of
CPU per series, 44 s for all of them on 2 processes. On M3 the ensemble scores sMAPE 13.46 (Theta:
13.90); on the retail series mean MASE 1.218 (seasonal naive 1.462, Holt-Winters ETS 1.258). See
BENCHMARKS.md.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]

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
    "train",
]

logger = logging.getLogger(__name__)

#: Every model name understood by :class:`ForecastConfig`.
ALL_MODELS: tuple[str, ...] = (
    "arima",
    "ets",
    "theta",
    "prophet",
    "linear",
    "seasonal_naive",
    "naive",
    "drift",
    "ses",
    "mean",
    "croston",
)

#: The production ensemble: the three required models plus ETS, Theta and seasonal naive.
DEFAULT_MODELS: tuple[str, ...] = ("arima", "ets", "theta", "prophet", "linear", "seasonal_naive")

#: Fallback levels, best first. ``train`` uses the first level the history qualifies for and at which
#: at least one model fits; ``BacktestReport.chain_used`` names it.
FALLBACK_CHAIN: tuple[str, ...] = (
    "full",
    "short",
    "intermittent",
    "seasonal_naive",
    "naive",
    "mean",
    "zeros",
)

_BACKTESTED_LEVELS = ("full", "short", "intermittent")
_Z80 = 1.2815515655446004
_Z95 = 1.959963984540054


# --------------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastConfig:
    """What to fit and how to backtest it. The defaults are the production settings.

    Attributes:
        models: models of the full ensemble (names from :data:`ALL_MODELS`).
        short_models: models for histories shorter than ``min_months_full``.
        intermittent_models: models for series with many zero months.
        n_origins: rolling backtest origins (at least 3).
        backtest_horizon: months scored after each origin for the accuracy (and so the weights).
        origin_step: months between consecutive origins.
        season_length: months per season.
        max_horizon: longest forecast :meth:`FittedForecaster.predict` serves.
        min_months_full: months needed for the full ensemble.
        intermittent_zero_share: share of zero months from which a series counts as intermittent.
        weight_power: weights are ``1 / WAPE ** weight_power`` ...
        keep_ratio: ... over the models whose WAPE is at most ``keep_ratio`` times the best one.
        seasonality_z: critical value of the lag-``season_length`` autocorrelation test (1.645 is the
            90% test that the M3 Theta method used) ...
        seasonality_alpha: ... or level of the ANOVA test of month effects on the detrended series;
            a series is seasonal when either test says so.
        nonnegative: clip forecasts and interval bounds at zero (revenue).
        trim_leading_zeros: drop the zero months before the first non-zero one.
        interval_inflation: factor on the backtest error quantiles. Backtest errors understate future
            ones (the weights and model structures were chosen on them, and 3 origins are a small
            sample): uninflated, the 80%/95% intervals covered 70%/85% of the M3 test months; with
            1.3 (and ``interval_tail_ratio`` 1.7) they cover about 80%/94% (300-series sample).
        interval_tail_ratio: the 95% half-width is at least this times the 80% one (a normal
            distribution has 1.53; real errors have heavier tails).
        fallback_spread: relative half-width of the 80% interval when nothing can be estimated (a
            one-month history).
        single_thread_blas: run training with one BLAS thread (much faster for these small problems,
            and the right thing when several workers share the cores).
        max_fit_months: the most recent months seen by the parts that estimate a pattern over the
            whole history or whose cost grows with it (``None``: all of it): ARIMA, Prophet, the
            linear regression and the seasonal indices of the seasonally adjusted models (ETS,
            Theta, drift, SES). Long real histories drift: on 35 years of ABS retail turnover,
            seasonal indices averaged over all of it cost ETS and Theta ~0.2 MASE, and a trend
            (linear or Prophet's) over 35 years extrapolates the wrong slope; and a SARIMAX fit
            costs 2.5 times more on 417 months than on 120. The seasonality test and the level
            models on the seasonally adjusted series (ETS, Theta, SES, drift; cheap) use the whole
            history. 120 months (10 years) changes only the M3 series of 121-126 months (M3 monthly
            ensemble sMAPE 13.452 -> 13.457, MASE 0.8335 -> 0.8337).
        max_origins: a history long enough gets more backtest origins than ``n_origins``, up to this
            many (``origin_step`` apart), as long as the earliest one still keeps a full
            ``max_fit_months`` window: every refit then sees as much history as the final fit, at
            the same bounded cost, and the weights rest on more backtest months (on the ABS retail
            series, 6 origins instead of 3 lowered the ensemble's mean MASE by ~0.02 at caps of 96,
            120 and 144 months). Needs ``max_fit_months + backtest_horizon + n_origins *
            origin_step`` months for a 4th origin (144 by default; no M3 series is that long).
    """

    models: tuple[str, ...] = DEFAULT_MODELS
    short_models: tuple[str, ...] = ("naive", "seasonal_naive", "drift", "ses", "theta")
    intermittent_models: tuple[str, ...] = ("croston", "mean", "seasonal_naive", "naive")
    n_origins: int = 3
    backtest_horizon: int = 6
    origin_step: int = 6
    season_length: int = 12
    max_horizon: int = 24
    min_months_full: int = 24
    intermittent_zero_share: float = 0.3
    weight_power: float = 2.0
    keep_ratio: float = 1.5
    seasonality_z: float = 1.645
    seasonality_alpha: float = 0.01
    nonnegative: bool = True
    trim_leading_zeros: bool = True
    interval_inflation: float = 1.3
    interval_tail_ratio: float = 1.7
    fallback_spread: float = 0.25
    single_thread_blas: bool = True
    max_fit_months: int | None = 120
    max_origins: int = 6

    def __post_init__(self) -> None:
        for group in (self.models, self.short_models, self.intermittent_models):
            if not group:
                raise ValueError("ForecastConfig: every model list needs at least one model")
            unknown = [name for name in group if name not in _MODELS]
            if unknown:
                raise ValueError(f"ForecastConfig: unknown model(s) {unknown}; known: {list(ALL_MODELS)}")
            if len(set(group)) != len(group):
                raise ValueError(f"ForecastConfig: duplicate model names in {list(group)}")
        if self.n_origins < 3:
            raise ValueError(f"ForecastConfig: n_origins must be at least 3, got {self.n_origins}")
        if self.max_origins < self.n_origins:
            raise ValueError(
                f"ForecastConfig: max_origins ({self.max_origins}) must be at least "
                f"n_origins ({self.n_origins})"
            )
        if self.backtest_horizon < 1 or self.origin_step < 1:
            raise ValueError("ForecastConfig: backtest_horizon and origin_step must be at least 1")
        if self.season_length < 2:
            raise ValueError(f"ForecastConfig: season_length must be at least 2, got {self.season_length}")
        if self.max_horizon < 1:
            raise ValueError(f"ForecastConfig: max_horizon must be at least 1, got {self.max_horizon}")
        if self.min_months_full < self.season_length + self.n_origins:
            raise ValueError("ForecastConfig: min_months_full must leave room for a season and the origins")
        if not 0.0 < self.intermittent_zero_share <= 1.0:
            raise ValueError("ForecastConfig: intermittent_zero_share must be in (0, 1]")
        if self.weight_power < 0 or self.keep_ratio < 1.0:
            raise ValueError("ForecastConfig: weight_power must be >= 0 and keep_ratio >= 1")
        if self.max_fit_months is not None and self.max_fit_months < 2 * self.season_length:
            raise ValueError(
                f"ForecastConfig: max_fit_months must be at least two seasons ({2 * self.season_length}) "
                f"or None, got {self.max_fit_months}"
            )
        if self.fallback_spread < 0 or self.interval_inflation <= 0 or self.interval_tail_ratio < 1:
            raise ValueError(
                "ForecastConfig: fallback_spread must be >= 0, interval_inflation > 0 "
                "and interval_tail_ratio >= 1"
            )


@dataclass(frozen=True)
class ModelScore:
    """Backtest accuracy of one model (or of the ensemble), pooled over origins and steps."""

    wape: float
    accuracy: float
    smape: float
    weight: float


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


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# History validation
# --------------------------------------------------------------------------------------------------


def _to_monthly(history: pd.Series) -> tuple[FloatArray, pd.Period]:
    """Validate ``history`` and return its values and first month. Missing months are an error."""
    if not isinstance(history, pd.Series):
        raise TypeError(f"history must be a pandas Series indexed by month, got {type(history).__name__}")
    if len(history) == 0:
        raise ValueError("history is empty: at least one month of revenue is needed to forecast")
    index = history.index
    if isinstance(index, pd.PeriodIndex):
        if index.freqstr not in ("M", "ME"):
            raise ValueError(
                f"history has a PeriodIndex with frequency {index.freqstr!r}; monthly ('M') needed"
            )
        periods = index
    elif isinstance(index, pd.DatetimeIndex):
        stamps = index.tz_localize(None) if index.tz is not None else index
        off = stamps[(stamps.day != 1) | (stamps.normalize() != stamps)]
        if len(off):
            raise ValueError(
                "history must be indexed by month starts (day 1, midnight); "
                f"got {off[0]!s} (aggregate to months first)"
            )
        periods = stamps.to_period("M")
    else:
        raise ValueError(
            "history must have a DatetimeIndex of month starts or a monthly PeriodIndex, "
            f"got {type(index).__name__}"
        )
    if periods.has_duplicates:
        dup = periods[periods.duplicated()][0]
        raise ValueError(f"history has more than one value for month {dup}")
    values = pd.to_numeric(history, errors="coerce").to_numpy(dtype=float)
    order = np.argsort(periods.asi8, kind="stable")
    periods = periods[order]
    values = values[order]
    bad = ~np.isfinite(values)
    if bad.any():
        months = ", ".join(str(p) for p in periods[bad][:5])
        raise ValueError(f"history has missing or non-numeric values for {int(bad.sum())} month(s): {months}")
    expected = int(periods[-1].ordinal - periods[0].ordinal) + 1
    if expected != len(periods):
        present = set(periods.asi8.tolist())
        gaps = [
            str(pd.Period(ordinal=o, freq="M"))
            for o in range(int(periods[0].ordinal), int(periods[-1].ordinal) + 1)
            if o not in present
        ]
        raise ValueError(
            f"history is missing {len(gaps)} month(s) inside its range ({', '.join(gaps[:5])}"
            f"{', ...' if len(gaps) > 5 else ''}); add them explicitly (0 if there was no revenue)"
        )
    return values.astype(np.float64), periods[0]


# --------------------------------------------------------------------------------------------------
# Seasonality (shared by the models that work on seasonally adjusted data)
# --------------------------------------------------------------------------------------------------


def _acf(y: FloatArray, nlags: int) -> FloatArray:
    x = y - y.mean()
    den = float(x @ x)
    out = np.zeros(nlags + 1)
    out[0] = 1.0
    if den == 0:
        return out
    for k in range(1, nlags + 1):
        out[k] = float(x[k:] @ x[:-k]) / den
    return out


def _seasonality_test(y: FloatArray, m: int, z: float, alpha: float) -> bool:
    """Is there a yearly pattern? Either of two tests, on the first ``len(y)`` months.

    1. The M3 Theta method's test: the lag-``m`` autocorrelation exceeds ``z`` standard errors
       (Bartlett's formula).
    2. A one-way ANOVA of the detrended series (log ratio to the centred moving average when revenue
       is positive, the difference otherwise) by position in the season, at level ``alpha``. Test 1
       alone misses smooth seasonality on trending series of a few years (a growing business with a
       +-10% yearly swing over 48 months); test 2 catches it.
    """
    from scipy.special import fdtrc

    n = y.size
    if n < 2 * m or np.ptp(y) == 0:
        return False
    r = _acf(y, m)[1:]
    se = math.sqrt((1.0 + 2.0 * float(np.sum(r[:-1] ** 2))) / n)
    if abs(r[-1]) / se > z:
        return True
    trend, half = _centred_ma(y, m)
    core = y[half : half + trend.size]
    positive = bool(np.all(core > 0)) and bool(np.all(trend > 0))
    x = np.log(core / trend) if positive else core - trend
    pos = (np.arange(x.size) + half) % m
    counts = np.bincount(pos, minlength=m).astype(np.float64)
    dof_within = x.size - m
    if np.any(counts == 0) or dof_within < 4:
        return False
    means = np.bincount(pos, weights=x, minlength=m) / counts
    within = float(np.sum((x - means[pos]) ** 2))
    between = float(np.sum(counts * (means - x.mean()) ** 2))
    if within <= 0:
        return between > 0
    stat = (between / (m - 1)) / (within / dof_within)
    return bool(fdtrc(m - 1, dof_within, stat) < alpha)


def _centred_ma(y: FloatArray, m: int) -> tuple[FloatArray, int]:
    """Centred moving average over one season (2 x m for even m) and its offset into ``y``."""
    w = np.r_[0.5, np.ones(m - 1), 0.5] / m if m % 2 == 0 else np.ones(m) / m
    return np.convolve(y, w, mode="valid"), (w.size - 1) // 2


def _classical_indices(y: FloatArray, m: int, multiplicative: bool) -> FloatArray | None:
    """Seasonal indices (position ``i`` = months ``i, i+m, ...`` of ``y``) of a classical decomposition."""
    if y.size < 2 * m:
        return None
    trend, half = _centred_ma(y, m)
    core = y[half : half + trend.size]
    if multiplicative:
        if np.any(trend <= 0):
            return None
        ratio = core / trend
    else:
        ratio = core - trend
    pos = (np.arange(trend.size) + half) % m
    sums = np.bincount(pos, weights=ratio, minlength=m)
    counts = np.bincount(pos, minlength=m)
    if np.any(counts == 0):
        return None
    idx = sums / counts
    if multiplicative:
        idx = idx / idx.mean()
        if idx.min() < 0.01:
            return None
    else:
        idx = idx - idx.mean()
    return np.asarray(idx, dtype=np.float64)


class _Context:
    """Per-series facts shared by the models: season, calendar, the full-history seasonality decision."""

    def __init__(self, y: FloatArray, first_month: pd.Period, config: ForecastConfig) -> None:
        self.y = y
        self.m = config.season_length
        self.first_month = first_month
        self.config = config
        self.positive = bool(np.all(y > 0))
        self.seasonal = _seasonality_test(y, self.m, config.seasonality_z, config.seasonality_alpha)
        self.multiplicative = self.positive
        self.max_fit_months = config.max_fit_months
        self._indices: dict[int, FloatArray | None] = {}
        self.full_indices = self._recent_indices(y.size) if self.seasonal else None
        if self.full_indices is None:
            self.seasonal = False

    def window_start(self, n: int) -> int:
        """First month (position) of the capped window of the first ``n`` months (``max_fit_months``)."""
        cap = self.max_fit_months
        return 0 if cap is None or n <= cap else n - cap

    def recent(self, y: FloatArray) -> tuple[FloatArray, int]:
        """The last ``max_fit_months`` of ``y`` (a prefix of the history) and where they start."""
        start = self.window_start(y.size)
        return y[start:], start

    def _recent_indices(self, n: int) -> FloatArray | None:
        """Indices of months ``0 .. n-1`` estimated on the capped window ending at month ``n``."""
        start = self.window_start(n)
        idx = _classical_indices(self.y[start:n], self.m, self.multiplicative)
        # position i of the window's indices is month start + i: realign to position 0 of the history
        return None if idx is None else np.roll(idx, start % self.m)

    def indices(self, n: int) -> FloatArray | None:
        """Seasonal indices estimated on the first ``n`` months (their last ``max_fit_months``), or the
        full-history ones if ``n`` is too short."""
        if not self.seasonal:
            return None
        if n not in self._indices:
            own = self._recent_indices(n)
            self._indices[n] = own if own is not None else self.full_indices
        return self._indices[n]

    def adjust(self, y: FloatArray) -> FloatArray:
        idx = self.indices(y.size)
        if idx is None:
            return y
        s = idx[np.arange(y.size) % self.m]
        return y / s if self.multiplicative else y - s

    def restore(self, fc: FloatArray, n: int) -> FloatArray:
        idx = self.indices(n)
        if idx is None:
            return fc
        s = idx[np.arange(n, n + fc.size) % self.m]
        return fc * s if self.multiplicative else fc + s

    def month_of_year(self, start: int, length: int) -> npt.NDArray[np.int64]:
        """Calendar month (0-11) of positions ``start .. start+length-1`` of the history."""
        first = self.first_month.month - 1
        return np.asarray((first + np.arange(start, start + length)) % 12, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# Models: fn(y, h, ctx, state) -> h forecasts. ``state`` persists across the calls of one training
# (full history first, then the origins) so that structure chosen on the full history is reused.
# --------------------------------------------------------------------------------------------------

_ModelFn = Callable[[FloatArray, int, _Context, dict[str, Any]], FloatArray]


def _fc_naive(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    return np.full(h, y[-1], dtype=np.float64)


def _fc_seasonal_naive(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    if y.size < ctx.m:
        raise ValueError(f"seasonal naive needs at least {ctx.m} months, got {y.size}")
    return np.resize(y[-ctx.m :], h).astype(np.float64)


def _fc_drift(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    x = ctx.adjust(y)
    slope = (x[-1] - x[0]) / (x.size - 1) if x.size > 1 else 0.0
    return ctx.restore(x[-1] + slope * np.arange(1, h + 1, dtype=np.float64), y.size)


def _fc_mean(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    return np.full(h, float(np.mean(y[-ctx.m :])), dtype=np.float64)


def _fc_croston(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    """Croston's method with the Syntetos-Boylan correction (alpha 0.1), for intermittent sales."""
    alpha = 0.1
    nz = np.flatnonzero(y)
    if nz.size == 0:
        return np.zeros(h, dtype=np.float64)
    size = float(y[nz[0]])
    interval = float(nz[0] + 1)
    for prev, cur in itertools.pairwise(nz):
        size += alpha * (float(y[cur]) - size)
        interval += alpha * (float(cur - prev) - interval)
    return np.full(h, (1 - alpha / 2) * size / interval, dtype=np.float64)


def _fc_ses(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    x = ctx.adjust(y)
    res = ETSModel(x, error="add").fit(disp=False, maxiter=200, start_params=state.get("params"))
    state.setdefault("params", np.asarray(res.params))
    return ctx.restore(np.asarray(res.forecast(h), dtype=np.float64), y.size)


def _fc_theta(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    """The standard Theta method (SES with half the linear-trend drift) on seasonally adjusted data."""
    from statsmodels.tsa.forecasting.theta import ThetaModel

    x = ctx.adjust(y)
    if x.size < 4:
        raise ValueError(f"Theta needs at least 4 months, got {x.size}")
    res = ThetaModel(x, deseasonalize=False).fit()
    return ctx.restore(np.asarray(res.forecast(h, theta=2), dtype=np.float64), y.size)


# Holt's undamped trend (AAN) is left out: on M3 it cost accuracy (sMAPE 12.58 -> 12.53 without it on
# a 200-series sample) as well as a fit.
_ETS_FORMS: dict[str, tuple[str, str | None, bool]] = {
    "ANN": ("add", None, False),
    "AAdN": ("add", "add", True),
    "MNN": ("mul", None, False),
    "MAdN": ("mul", "add", True),
}


def _fit_ets(x: FloatArray, form: str, start: FloatArray | None) -> Any:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    error, trend, damped = _ETS_FORMS[form]
    model = ETSModel(x, error=error, trend=trend, damped_trend=damped)
    return model.fit(disp=False, maxiter=200, start_params=start)


def _fc_ets(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    """Exponential smoothing on seasonally adjusted data; the form (no or damped trend, A/M error) by AICc."""
    x = ctx.adjust(y)
    if "form" not in state:
        forms = ["ANN", "AAdN"] + (["MNN", "MAdN"] if bool(np.all(x > 0)) else [])
        best: tuple[float, str, Any] | None = None
        errors: list[str] = []
        for form in forms:
            try:
                res = _fit_ets(x, form, None)
            except Exception as exc:  # a form that cannot be fitted is just not a candidate
                errors.append(f"{form}: {exc}")
                continue
            aicc = float(res.aicc)
            if math.isfinite(aicc) and (best is None or aicc < best[0]):
                best = (aicc, form, res)
        if best is None:
            raise RuntimeError("no ETS form could be fitted (" + "; ".join(errors) + ")")
        state["form"] = best[1]
        state["params"] = np.asarray(best[2].params)
        res = best[2]
    else:
        res = _fit_ets(x, state["form"], state["params"])
    return ctx.restore(np.asarray(res.forecast(h), dtype=np.float64), y.size)


def _undifference(z: FloatArray, forecast: FloatArray, lags: Sequence[int]) -> FloatArray:
    """Invert the differences ``lags`` (applied in that order to ``z``) on a forecast of the result."""
    levels = [z]
    for lag in lags:
        levels.append(levels[-1][lag:] - levels[-1][:-lag])
    out = np.asarray(forecast, dtype=np.float64)
    for lag, base in zip(reversed(lags), reversed(levels[:-1]), strict=True):
        ext = np.concatenate([base, np.zeros(out.size)])
        nb = base.size
        for i in range(out.size):
            ext[nb + i] = out[i] + ext[nb + i - lag]
        out = ext[nb:]
    return out


def _fit_sarimax(
    z: FloatArray,
    order: tuple[int, int, int],
    seasonal: tuple[int, int, int, int],
    start: FloatArray | None,
    strict: bool = False,
) -> Any:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    model = SARIMAX(
        z,
        order=order,
        seasonal_order=seasonal,
        trend="n",
        simple_differencing=True,
        concentrate_scale=True,
        enforce_stationarity=strict,
        enforce_invertibility=strict,
    )
    return model.fit(disp=False, start_params=start, maxiter=200)


def _sarimax_ok(res: Any) -> bool:
    """Finite parameters and AICc, a stationary AR part and an MA part not far from invertible.

    The fast fit does not enforce either constraint, so they are checked here. The MA part gets some
    slack: with seasonal differencing on a stable seasonal pattern the seasonal MA coefficient sits
    at -1 (a root on the unit circle), or a little beyond, and the forecasts are still right.
    """
    try:
        params = np.asarray(res.params, dtype=np.float64)
        ar = np.asarray(res.arroots)
        ma = np.asarray(res.maroots)
        aicc = float(res.aicc)
    except Exception:
        return False
    return bool(
        math.isfinite(aicc)
        and np.all(np.isfinite(params))
        and (ar.size == 0 or np.all(np.abs(ar) > 1.0 + 1e-6))
        and (ma.size == 0 or np.all(np.abs(ma) > 0.9))
    )


def _fit_sarimax_checked(
    z: FloatArray, order: tuple[int, int, int], seasonal: tuple[int, int, int, int], start: FloatArray | None
) -> Any:
    """The fast unconstrained fit; if it lands outside the sane region, the slower constrained one."""
    res = _fit_sarimax(z, order, seasonal, start)
    if _sarimax_ok(res):
        return res
    res = _fit_sarimax(z, order, seasonal, None, strict=True)
    if _sarimax_ok(res):
        return res
    raise RuntimeError(f"ARIMA{order}x{seasonal} has no stationary, invertible fit")


_ARIMA_ORDERS: tuple[tuple[int, int, int], ...] = ((0, 1, 1), (1, 1, 0), (1, 1, 1))


def _fc_arima(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    """Seasonal ARIMA from statsmodels, on logs when revenue is positive, on the last
    ``max_fit_months`` months (the whole history when it is no longer).

    The grid is small: (p,1,q) in {(0,1,1), (1,1,0), (1,1,1)}, times the seasonal part (0,1,1)_m when
    the seasonality test is positive; the order is the one with the lowest AICc on the (capped) full
    history and is reused (warm-started) at the backtest origins. The cap bounds the cost: SARIMAX's
    likelihood and numerical gradients grow with the series (on 417 months of ABS retail turnover a
    cold fit took 0.043 s on average, on their last 120 months 0.017 s), and the ensemble on those
    series was no worse for it. Differencing is done up front
    (``simple_differencing``), the scale is concentrated out and stationarity/invertibility are
    checked after the fit instead of being enforced by a transformation, which keeps a fit at
    ~10-40 ms; a fit that lands outside that region is redone with the constraints enforced.
    """
    use_log = ctx.positive
    y, _ = ctx.recent(y)
    z = np.log(y) if use_log else y
    m = ctx.m
    if "order" not in state:
        seasonal = (0, 1, 1, m) if ctx.seasonal else (0, 0, 0, 0)
        best: tuple[float, tuple[int, int, int], Any] | None = None
        errors: list[str] = []
        for order in _ARIMA_ORDERS:
            try:
                res = _fit_sarimax_checked(z, order, seasonal, None)
            except Exception as exc:
                errors.append(f"{order}: {exc}")
                continue
            if best is None or float(res.aicc) < best[0]:
                best = (float(res.aicc), order, res)
        if best is None:
            raise RuntimeError(
                f"no ARIMA order in {list(_ARIMA_ORDERS)} x {seasonal} fitted ({'; '.join(errors)})"
            )
        state["order"], state["seasonal"], state["params"] = best[1], seasonal, np.asarray(best[2].params)
        res = best[2]
    else:
        res = _fit_sarimax_checked(z, state["order"], state["seasonal"], state["params"])
    order, seasonal = state["order"], state["seasonal"]
    lags = [1] * order[1] + [m] * seasonal[1]
    if z.size <= sum(lags) + 1:
        raise ValueError(f"ARIMA{order}x{seasonal} needs more than {sum(lags) + 1} months, got {z.size}")
    path = _undifference(z, np.asarray(res.forecast(h), dtype=np.float64), lags)
    if use_log:
        path = np.exp(np.clip(path, -700.0, 700.0))
    return path


def _import_prophet() -> Any:
    """Import Prophet quietly: no "Importing plotly failed", no per-fit cmdstanpy INFO lines."""
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    from cmdstanpy.utils.logging import get_logger
    from prophet import Prophet

    # Prophet's fall-back from L-BFGS to Newton logs a warning and cmdstanpy logs the failed run as an
    # error; a fit that really fails raises, and train() records it in backtest.failures.
    logging.getLogger("prophet").setLevel(logging.CRITICAL)
    get_logger().setLevel(logging.CRITICAL)  # creates cmdstanpy's logger (at DEBUG) on first use
    return Prophet


def _prophet_path(model: Any, future: pd.DatetimeIndex) -> FloatArray:
    """Prophet's ``yhat`` from its fitted parameters, without ``Prophet.predict`` (~40 ms of pandas).

    Only valid for what :func:`_fc_prophet` builds: linear growth, a single yearly seasonality, no
    holidays or regressors; the unit tests check it against ``Prophet.predict``.
    """
    prophet_cls = _import_prophet()
    params = model.params
    t = np.asarray((future - model.start) / model.t_scale, dtype=np.float64)
    trend = prophet_cls.piecewise_linear(
        t,
        np.asarray(params["delta"], dtype=np.float64).mean(axis=0),
        float(np.mean(params["k"])),
        float(np.mean(params["m"])),
        np.asarray(model.changepoints_t, dtype=np.float64),
    )
    trend = trend * float(model.y_scale)
    season = model.seasonalities["yearly"]
    x = prophet_cls.fourier_series(pd.Series(future), season["period"], season["fourier_order"])
    beta = np.asarray(params["beta"], dtype=np.float64).mean(axis=0)
    seasonal = x @ beta[: x.shape[1]]
    if season["mode"] == "multiplicative":
        return np.asarray(trend * (1.0 + seasonal), dtype=np.float64)
    return np.asarray(trend + seasonal * float(model.y_scale), dtype=np.float64)


def _fc_prophet(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    """Prophet, made cheap: MAP fit with L-BFGS, no uncertainty sampling, forecast read off the params."""
    prophet_cls = _import_prophet()
    y, offset = ctx.recent(y)
    start = (ctx.first_month + offset).start_time
    ds = pd.date_range(start, periods=y.size + h, freq="MS")
    model = prophet_cls(
        growth="linear",
        yearly_seasonality=True,
        weekly_seasonality=False,
        daily_seasonality=False,
        uncertainty_samples=0,
        n_changepoints=min(25, max(0, y.size // 2)),
    )
    model.fit(pd.DataFrame({"ds": ds[: y.size], "y": y}), algorithm="LBFGS")
    if list(model.seasonalities) != ["yearly"] or model.extra_regressors or model.holidays is not None:
        future = pd.DataFrame({"ds": ds[y.size :]})
        return np.asarray(model.predict(future)["yhat"], dtype=np.float64)
    return _prophet_path(model, ds[y.size :])


def _fc_linear(y: FloatArray, h: int, ctx: _Context, state: dict[str, Any]) -> FloatArray:
    """Ordinary least squares on an intercept, a linear trend and month-of-year dummies (last
    ``max_fit_months``)."""
    y, offset = ctx.recent(y)
    n = y.size
    t = np.arange(n + h, dtype=np.float64)
    columns = [np.ones(n + h), t]
    if n >= ctx.m + 3:
        month = ctx.month_of_year(offset, n + h)
        columns += [(month == k).astype(np.float64) for k in range(1, 12)]
    design = np.column_stack(columns)
    beta, *_ = np.linalg.lstsq(design[:n], y, rcond=None)
    return np.asarray(design[n:] @ beta, dtype=np.float64)


@dataclass(frozen=True)
class _ModelSpec:
    fn: _ModelFn
    min_train: int  # months needed (season lengths are substituted at run time, see _min_train)
    seasonal_min: bool = False  # True: needs one full season


_MODELS: dict[str, _ModelSpec] = {
    "arima": _ModelSpec(_fc_arima, 8),
    "ets": _ModelSpec(_fc_ets, 6),
    "theta": _ModelSpec(_fc_theta, 4),
    "prophet": _ModelSpec(_fc_prophet, 6),
    "linear": _ModelSpec(_fc_linear, 3),
    "seasonal_naive": _ModelSpec(_fc_seasonal_naive, 0, seasonal_min=True),
    "naive": _ModelSpec(_fc_naive, 1),
    "drift": _ModelSpec(_fc_drift, 2),
    "ses": _ModelSpec(_fc_ses, 4),
    "mean": _ModelSpec(_fc_mean, 1),
    "croston": _ModelSpec(_fc_croston, 2),
}


def _min_train(name: str, m: int) -> int:
    spec = _MODELS[name]
    return max(spec.min_train, m if spec.seasonal_min else 0)


# --------------------------------------------------------------------------------------------------
# Backtest, weights, intervals
# --------------------------------------------------------------------------------------------------


def _plan_origins(n: int, config: ForecastConfig, min_train: int) -> tuple[list[int], int] | None:
    """Origins (training lengths, latest first) and the scored horizon, or None if there is no room.

    The configured horizon and step are shrunk (never below 1) until the earliest origin keeps at
    least ``min_train`` months of training. A long history gets more origins, up to
    ``max_origins``, as long as the earliest one keeps a full ``max_fit_months`` window.
    """
    k = config.n_origins
    cap = config.max_fit_months
    for h in range(config.backtest_horizon, 0, -1):
        step = min(config.origin_step, h)
        origins = [n - h - i * step for i in range(k)]
        if origins[-1] >= min_train:
            while cap is not None and len(origins) < config.max_origins and origins[-1] - step >= cap:
                origins.append(origins[-1] - step)
            return origins, h
    return None


def _valid_path(path: FloatArray, h: int, y: FloatArray) -> str | None:
    if path.shape != (h,):
        return f"returned {path.shape} values instead of {h}"
    if not np.all(np.isfinite(path)):
        return "returned non-finite values"
    bound = 100.0 * float(np.max(np.abs(y))) + 1.0
    if float(np.max(np.abs(path))) > bound:
        return "diverged (forecast more than 100x the largest observed value)"
    return None


def _weights(wapes: Mapping[str, float], power: float, keep_ratio: float) -> dict[str, float]:
    """Inverse-WAPE weights (``1 / WAPE ** power``) over the models within ``keep_ratio`` of the best."""
    names = list(wapes)
    w = np.array([wapes[name] for name in names], dtype=np.float64)
    best = float(np.min(w))
    if not math.isfinite(best):
        raw = np.ones(w.size)
    elif best <= 1e-12:
        raw = (w <= 1e-12).astype(np.float64)
    else:
        keep = w <= keep_ratio * best * (1 + 1e-9)
        raw = np.where(keep, (best / np.where(keep, w, 1.0)) ** power, 0.0)
    raw = raw / raw.sum()
    return {name: float(v) for name, v in zip(names, raw, strict=True)}


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


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _cpu_now() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class _LevelResult:
    paths: dict[str, FloatArray]
    weights: dict[str, float]
    scores: dict[str, ModelScore]
    ensemble: ModelScore | None
    best: str
    failures: dict[str, str]
    origins: list[int]
    horizon: int
    half80: FloatArray
    half95: FloatArray
    gamma: float
    structure: dict[str, str] = field(default_factory=dict)


def _run_backtested_level(
    y: FloatArray, ctx: _Context, models: Sequence[str], config: ForecastConfig, min_train: int
) -> tuple[_LevelResult | None, str]:
    """Fit ``models`` on the full history, backtest them, weight them. ``(None, why)`` if none works."""
    n = y.size
    plan = _plan_origins(n, config, min_train)
    if plan is None:
        return None, f"{n} months leave no room for {config.n_origins} backtest origins"
    origins, horizon = plan
    failures: dict[str, str] = {}
    paths: dict[str, FloatArray] = {}
    states: dict[str, dict[str, Any]] = {}
    for name in models:
        need = _min_train(name, ctx.m)
        if origins[-1] < need:
            failures[name] = f"needs {need} months of training, the earliest origin has {origins[-1]}"
            continue
        state: dict[str, Any] = {}
        try:
            path = _MODELS[name].fn(y, config.max_horizon, ctx, state)
        except Exception as exc:
            failures[name] = f"fit failed: {type(exc).__name__}: {exc}"
            continue
        problem = _valid_path(np.asarray(path, dtype=np.float64), config.max_horizon, y)
        if problem:
            failures[name] = f"fit {problem}"
            continue
        paths[name] = np.asarray(path, dtype=np.float64)
        states[name] = state

    # backtest: every surviving model at every origin, forecasting to the end of the history
    bt: dict[str, list[FloatArray]] = {}
    for name in list(paths):
        preds: list[FloatArray] = []
        for o in origins:
            h = n - o
            try:
                f = np.asarray(_MODELS[name].fn(y[:o], h, ctx, states[name]), dtype=np.float64)
            except Exception as exc:
                failures[name] = f"backtest origin {ctx.first_month + o} failed: {type(exc).__name__}: {exc}"
                break
            problem = _valid_path(f, h, y[:o])
            if problem:
                failures[name] = f"backtest origin {ctx.first_month + o} {problem}"
                break
            preds.append(np.maximum(f, 0.0) if config.nonnegative else f)
        else:
            bt[name] = preds
            continue
        del paths[name]
    if not paths:
        return None, "every model failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items())

    actual = np.concatenate([y[o : o + horizon] for o in origins])
    wapes: dict[str, float] = {}
    smapes: dict[str, float] = {}
    for name, preds in bt.items():
        scored = np.concatenate([p[:horizon] for p in preds])
        wapes[name] = _wape(float(np.abs(actual - scored).sum()), float(np.abs(actual).sum()))
        smapes[name] = _smape(actual, scored)
    weights = _weights(wapes, config.weight_power, config.keep_ratio)
    scores = {
        name: ModelScore(wapes[name], max(0.0, 1.0 - wapes[name]), smapes[name], weights[name]) for name in bt
    }
    best = min(wapes, key=lambda k: (wapes[k], -weights[k]))

    # the ensemble's own backtest, for its accuracy and the intervals
    ens: list[FloatArray] = [
        np.sum([weights[name] * bt[name][i] for name in bt], axis=0) for i in range(len(origins))
    ]
    ens_scored = np.concatenate([e[:horizon] for e in ens])
    ens_wape = _wape(float(np.abs(actual - ens_scored).sum()), float(np.abs(actual).sum()))
    ensemble = ModelScore(ens_wape, max(0.0, 1.0 - ens_wape), _smape(actual, ens_scored), 1.0)
    # the intervals come from the latest n_origins origins only: their calibration (interval_inflation)
    # was set with that many, and extra origins of a long history made them too wide (ABS retail:
    # 86% / 97% coverage instead of 80% / 95%)
    calibrated = origins[: config.n_origins]
    max_steps = n - calibrated[-1]
    errors_by_step = []
    for j in range(max_steps):
        errs = [y[o + j] - e[j] for o, e in zip(calibrated, ens, strict=False) if o + j < n]
        errors_by_step.append(np.asarray(errs, dtype=np.float64))
    half80, half95, gamma = _interval_widths(
        errors_by_step, config.max_horizon, config.interval_inflation, config.interval_tail_ratio
    )
    structure = {
        f"{name}.{key}": str(value)
        for name, state in states.items()
        if name in paths
        for key, value in state.items()
        if key != "params"
    }
    return (
        _LevelResult(
            paths,
            weights,
            scores,
            ensemble,
            best,
            failures,
            origins,
            horizon,
            half80,
            half95,
            gamma,
            structure,
        ),
        "",
    )


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


def train(history: pd.Series, config: ForecastConfig | None = None) -> FittedForecaster:
    """Fit the forecaster on one organization's monthly revenue.

    Args:
        history: revenue per month, indexed by month starts (``DatetimeIndex``) or a monthly
            ``PeriodIndex``. Unsorted is fine; duplicated months, months missing inside the range and
            missing values are errors (``ValueError`` naming them): record a month without revenue
            as 0.
        config: models and backtest settings; the production defaults when omitted.

    Returns:
        A :class:`FittedForecaster` with the paths for 1..``config.max_horizon`` months.

    Raises:
        ValueError: empty history, gaps, duplicates, non-numeric values, a non-monthly index.
        TypeError: ``history`` is not a pandas Series.
    """
    config = config or ForecastConfig()
    cpu0 = _cpu_now()
    values, first_month = _to_monthly(history)
    if config.trim_leading_zeros and np.any(values != 0):
        lead = int(np.argmax(values != 0))
        values, first_month = values[lead:], first_month + lead
    # statsmodels installs "always" filters for its warnings when first imported; import it before
    # the "ignore" filter below so that ours comes first.
    import statsmodels.tools.sm_exceptions  # noqa: F401

    if config.single_thread_blas:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _train(values, first_month, config, cpu0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _train(values, first_month, config, cpu0)


def _train(y: FloatArray, first_month: pd.Period, config: ForecastConfig, cpu0: float) -> FittedForecaster:
    ctx = _Context(y, first_month, config)
    m = config.season_length
    tried: dict[str, str] = {}
    result: _LevelResult | None = None
    used = ""
    for level in _levels_for(y, config):
        if level in _BACKTESTED_LEVELS:
            if level == "full":
                models, min_train = config.models, min(2 * m, y.size - config.n_origins)
            elif level == "short":
                models, min_train = config.short_models, m
            else:
                models, min_train = config.intermittent_models, m
            result, why = _run_backtested_level(y, ctx, models, config, min_train)
            if result is None:
                tried[level] = why
                continue
        else:
            result = _run_simple_level(level, y, ctx, config)
        used = level
        break
    assert result is not None  # the last level (mean or zeros) always succeeds
    if result.failures or tried:
        logger.debug("forecaster: level %s (passed over: %s), dropped: %s", used, tried, result.failures)

    # components are clipped at zero first: a model forecasting negative revenue must not drag the
    # others down (on M3 that was worth 0.06 sMAPE)
    components = {k: (np.maximum(v, 0.0) if config.nonnegative else v) for k, v in result.paths.items()}
    point = np.sum([result.weights[k] * components[k] for k in components], axis=0)
    lo80, hi80 = point - result.half80, point + result.half80
    lo95, hi95 = point - result.half95, point + result.half95
    if config.nonnegative:
        lo80, lo95 = np.maximum(lo80, 0.0), np.maximum(lo95, 0.0)
    last_month = first_month + (y.size - 1)
    report = BacktestReport(
        chain_used=used,
        chain_tried=tried,
        models=result.scores,
        weights=result.weights,
        best_model=result.best,
        ensemble=result.ensemble,
        failures=result.failures,
        n_origins=len(result.origins),
        origins=tuple(str(first_month + o) for o in result.origins),
        horizon=result.horizon,
        training_months=int(y.size),
        first_month=str(first_month),
        last_month=str(last_month),
        seasonal=ctx.seasonal,
        structure=result.structure,
        interval_growth=result.gamma,
        cpu_seconds=_cpu_now() - cpu0,
    )
    return FittedForecaster(
        config=config,
        last_month=last_month,
        point=np.asarray(point, dtype=np.float64),
        lower_80=np.asarray(lo80, dtype=np.float64),
        upper_80=np.asarray(hi80, dtype=np.float64),
        lower_95=np.asarray(lo95, dtype=np.float64),
        upper_95=np.asarray(hi95, dtype=np.float64),
        components=components,
        backtest=report,
    )


def predict(model: FittedForecaster, months: int) -> ForecastResult:
    """Module-level form of :meth:`FittedForecaster.predict` (every model family exposes ``predict``)."""
    return model.predict(months)


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
