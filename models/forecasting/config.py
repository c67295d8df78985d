"""What the forecaster fits and how it backtests it: the model names and ``ForecastConfig``."""

from __future__ import annotations

from dataclasses import dataclass

from ..pickling import FORECASTING, pickled_as
from .candidates import _MODELS

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


@pickled_as(FORECASTING)
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
