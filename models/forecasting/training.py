"""``train``: the first level of the fallback chain the history qualifies for and at which a model
fits, assembled into a ``FittedForecaster``; ``predict``, the module-level form every family exposes."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import pandas as pd

from .backtest import _LevelResult, _run_backtested_level
from .config import ForecastConfig
from .fallback import _levels_for, _run_simple_level
from .forecaster import BacktestReport, FittedForecaster, ForecastResult
from .series import FloatArray, _Context, _to_monthly

logger = logging.getLogger(__name__)


_BACKTESTED_LEVELS = ("full", "short", "intermittent")


def _cpu_now() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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
