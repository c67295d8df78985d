"""The monthly revenue forecaster: intervals, weights, the fallback chain, failures, errors, metrics."""

from __future__ import annotations

import datetime as dt
import math
import pickle
import time
from typing import Any

import forecast_baselines  # benchmarks/ is on the test path (pyproject: pythonpath)
import numpy as np
import pandas as pd
import pytest
import real_datasets

import neuracrm_mlops.models.forecasting_model as fm
from neuracrm_mlops.models.forecasting import backtest, candidates, series
from neuracrm_mlops.models.forecasting_model import (
    FittedForecaster,
    ForecastConfig,
    ForecastResult,
    evaluate,
    train,
)

# module-scoped fixtures, made once: the module runs on one worker
pytestmark = pytest.mark.xdist_group("forecasting_model")

# the production models without Prophet: same machinery, about half the CPU (Prophet has its own tests)
NO_PROPHET = ForecastConfig(models=("arima", "ets", "theta", "linear", "seasonal_naive"))


def monthly(values: Any, start: str = "2021-01") -> pd.Series:
    values = np.asarray(values, dtype=float)
    return pd.Series(values, index=pd.period_range(start, periods=values.size, freq="M"))


def seasonal_series(n: int, seed: int = 0, *, level: float = 40_000.0, noise: float = 0.05) -> pd.Series:
    """Like the platform's synthetic revenue: log-linear growth, yearly swing, multiplicative noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    log_rev = (
        math.log(level)
        + 0.08 * t / 12
        + 0.2 * np.sin(2 * np.pi * t / 12 + rng.uniform(0, 2 * np.pi))
        + rng.normal(0, noise, n)
    )
    return monthly(np.round(np.exp(log_rev), 2))


def assert_intervals_ordered(result: ForecastResult) -> None:
    for lo95, lo80, point, hi80, hi95 in zip(
        result.lower_95, result.lower_80, result.point, result.upper_80, result.upper_95, strict=True
    ):
        assert 0.0 <= lo95 <= lo80 <= point <= hi80 <= hi95
        assert all(math.isfinite(v) for v in (lo95, lo80, point, hi80, hi95))


@pytest.fixture(scope="module")
def production_fit() -> FittedForecaster:
    """One fit with the production defaults (Prophet included) on four years of revenue."""
    return train(seasonal_series(48, seed=3))


# --------------------------------------------------------------------------------------------------
# the full ensemble
# --------------------------------------------------------------------------------------------------


def test_production_defaults_fit_every_model_and_weights_sum_to_one(production_fit: FittedForecaster) -> None:
    b = production_fit.backtest
    assert b.chain_used == "full"
    assert b.failures == {}
    assert set(production_fit.components) == set(fm.DEFAULT_MODELS)
    assert math.isclose(sum(b.weights.values()), 1.0, rel_tol=1e-9)
    assert all(w >= 0 for w in b.weights.values())
    assert b.best_model in b.weights and b.weights[b.best_model] > 0
    assert b.n_origins == 3 and len(b.origins) == 3 and b.horizon == 6
    assert b.origins == ("2024-07", "2024-01", "2023-07")  # latest first, each scores 6 months
    assert b.ensemble is not None and 0.0 <= b.ensemble.accuracy <= 1.0
    for score in b.models.values():
        assert score.accuracy == pytest.approx(max(0.0, 1.0 - score.wape))
    assert b.seasonal
    assert b.cpu_seconds > 0


def test_prediction_intervals_are_ordered_and_nonnegative(production_fit: FittedForecaster) -> None:
    result = production_fit.predict(24)
    assert len(result.point) == len(result.months) == 24
    assert_intervals_ordered(result)
    # they widen with the horizon
    assert result.upper_95[23] - result.lower_95[23] > result.upper_95[0] - result.lower_95[0]


def test_lower_bounds_are_clipped_at_zero_for_a_collapsing_series() -> None:
    values = np.r_[np.linspace(5000, 300, 36) + np.random.default_rng(1).normal(0, 150, 36)]
    result = train(monthly(np.abs(values)), NO_PROPHET).predict(24)
    assert_intervals_ordered(result)
    assert min(result.lower_95) == 0.0


def test_predict_returns_month_starts_after_the_history(production_fit: FittedForecaster) -> None:
    result = production_fit.predict(3)
    assert result.months == [dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1)]
    assert result.weights == production_fit.backtest.weights
    assert result.best_model == production_fit.backtest.best_model
    assert production_fit.predict(24).point[:3] == result.point
    assert fm.predict(production_fit, 3) == result  # the module-level form every family exposes


def test_predict_is_a_fast_slice(production_fit: FittedForecaster) -> None:
    production_fit.predict(24)
    start = time.perf_counter()
    for _ in range(200):
        production_fit.predict(24)
    assert (time.perf_counter() - start) / 200 < 1e-3


def test_weights_favour_the_model_that_is_clearly_right() -> None:
    # an exact linear trend plus a fixed month-of-year pattern: linear regression is the true model
    t = np.arange(48)
    pattern = np.array([0, 30, 80, 40, -20, -60, -90, -40, 10, 60, 20, -40], dtype=float)
    values = 1000 + 12.0 * t + pattern[t % 12] + np.random.default_rng(0).normal(0, 1.0, 48)
    fitted = train(monthly(values), ForecastConfig(models=("linear", "naive", "seasonal_naive", "drift")))
    b = fitted.backtest
    assert b.best_model == "linear"
    assert math.isclose(sum(b.weights.values()), 1.0, rel_tol=1e-9)
    assert b.weights["linear"] > 0.9
    assert b.models["linear"].accuracy > 0.99
    assert b.models["linear"].wape < min(s.wape for m, s in b.models.items() if m != "linear")


def test_ensemble_beats_seasonal_naive_on_synthetic_seasonal_series() -> None:
    ens_wape, snaive_wape = [], []
    for seed in range(6):
        full = seasonal_series(60, seed=seed, noise=0.06)
        history, future = full.iloc[:48], full.iloc[48:].to_numpy()
        fitted = train(history, NO_PROPHET)
        ens_wape.append(evaluate(future, fitted.predict(12).point)["wape"])
        snaive_wape.append(evaluate(future, history.to_numpy()[-12:])["wape"])
    assert np.mean(ens_wape) < np.mean(snaive_wape)


def test_prophet_forecast_read_from_its_parameters_matches_prophet_predict() -> None:
    prophet_cls = candidates._import_prophet()
    history = seasonal_series(40, seed=5)
    ds = pd.date_range("2021-01-01", periods=52, freq="MS")
    model = prophet_cls(
        yearly_seasonality=True, weekly_seasonality=False, daily_seasonality=False, uncertainty_samples=0
    )
    model.fit(pd.DataFrame({"ds": ds[:40], "y": history.to_numpy()}), algorithm="LBFGS")
    expected = model.predict(pd.DataFrame({"ds": ds[40:]}))["yhat"].to_numpy()
    np.testing.assert_allclose(candidates._prophet_path(model, ds[40:]), expected, rtol=1e-9, atol=1e-6)


def test_pickle_round_trip_keeps_the_forecast(production_fit: FittedForecaster) -> None:
    blob = pickle.dumps(production_fit)
    assert len(blob) < 20_000  # numbers only, no fitted model objects
    restored = pickle.loads(blob)
    assert restored.predict(24) == production_fit.predict(24)
    assert restored.backtest == production_fit.backtest


# --------------------------------------------------------------------------------------------------
# long histories: the capped window (max_fit_months) and the extra backtest origins
# --------------------------------------------------------------------------------------------------


def drifting_season_series(n: int, change_at: int, seed: int = 0) -> pd.Series:
    """Monthly revenue growing 0.2% a month whose December peak appears at month ``change_at``:
    +0% before, +40% after (a business whose seasonality changed years ago)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    start = pd.Period("1985-01", freq="M")
    december = np.asarray((start.month - 1 + t) % 12 == 11)
    season = np.where(december & (t >= change_at), 1.4, 1.0)
    return monthly(1000.0 * np.exp(0.002 * t) * season * np.exp(rng.normal(0, 0.02, n)), "1985-01")


def uncapped_ctx(y: Any) -> Any:
    return series._Context(y, pd.Period("1985-01", freq="M"), ForecastConfig(max_fit_months=None))


def test_seasonal_indices_come_from_the_last_max_fit_months_aligned_to_the_calendar() -> None:
    y = drifting_season_series(400, change_at=200).to_numpy()
    first = pd.Period("1985-01", freq="M")
    capped = series._Context(y, first, ForecastConfig())
    uncapped = series._Context(y, first, ForecastConfig(max_fit_months=None))
    for n in (400, 394, 383):  # the full fit and backtest origins: windows starting at any month
        idx = capped.indices(n)
        assert idx is not None
        # position i of the indices is month i of the history: December is position 11
        assert int(np.argmax(idx)) == 11
        assert idx[11] / np.delete(idx, 11).mean() == pytest.approx(1.4, abs=0.03)
    old = uncapped.indices(400)
    assert old is not None and old[11] / np.delete(old, 11).mean() < 1.25  # half the years had no peak


def test_backtest_origins_grow_only_while_each_keeps_a_full_window() -> None:
    config = ForecastConfig()  # 3 origins, 6 apart, 6 months scored; up to 6 origins; 120-month cap
    assert backtest._plan_origins(400, config, 24) == ([394, 388, 382, 376, 370, 364], 6)
    assert backtest._plan_origins(126, config, 24) == ([120, 114, 108], 6)  # the longest M3 series: 3
    assert backtest._plan_origins(138, config, 24) == ([132, 126, 120], 6)
    assert backtest._plan_origins(144, config, 24) == ([138, 132, 126, 120], 6)
    assert backtest._plan_origins(400, ForecastConfig(max_fit_months=None), 24) == ([394, 388, 382], 6)
    assert backtest._plan_origins(400, ForecastConfig(max_origins=3), 24) == ([394, 388, 382], 6)


def test_a_long_history_fits_on_the_capped_window_and_forecasts_its_recent_pattern(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sarimax_lengths: list[int] = []
    fit_sarimax = candidates._fit_sarimax

    def recording(z: Any, *args: Any, **kwargs: Any) -> Any:
        sarimax_lengths.append(len(z))
        return fit_sarimax(z, *args, **kwargs)

    monkeypatch.setattr(candidates, "_fit_sarimax", recording)
    interval_errors: list[list[int]] = []
    interval_widths = backtest._interval_widths

    def recording_widths(errors_by_step: Any, *args: Any) -> Any:
        interval_errors.append([e.size for e in errors_by_step])
        return interval_widths(errors_by_step, *args)

    monkeypatch.setattr(backtest, "_interval_widths", recording_widths)
    full = drifting_season_series(424, change_at=200, seed=1)
    history, future = full.iloc[:400], full.iloc[400:].to_numpy()
    fitted = train(history, NO_PROPHET)
    b = fitted.backtest
    assert b.chain_used == "full" and b.failures == {}
    assert b.training_months == 400 and b.n_origins == 6
    assert b.origins[-1] == str(pd.Period(history.index[0]) + 364)
    # ARIMA: the order search (3 candidates) and the 6 backtest refits, all on the last 120 months
    assert len(sarimax_lengths) >= 3 + 6
    assert set(sarimax_lengths) == {120}
    # the intervals stay calibrated as designed: errors of the latest 3 origins (steps 1-18) only
    assert interval_errors == [[3] * 6 + [2] * 6 + [1] * 6]
    result = fitted.predict(24)
    assert_intervals_ordered(result)
    point = np.asarray(result.point)
    december = np.array([m.month == 12 for m in result.months])
    # the recent December peak (+40%), not the 35-year average of it
    assert point[december].mean() / point[~december].mean() > 1.3
    assert evaluate(future, point)["wape"] < 0.05
    assert evaluate(future, point)["wape"] < evaluate(future, np.resize(history.to_numpy()[-12:], 24))["wape"]


def test_prophet_and_the_linear_regression_see_the_last_max_fit_months_with_their_calendar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prophet_cls = candidates._import_prophet()
    seen: list[pd.DataFrame] = []

    class RecordingProphet(prophet_cls):  # type: ignore[misc, valid-type]
        def fit(self, df: pd.DataFrame, **kwargs: Any) -> Any:
            seen.append(df.copy())
            return super().fit(df, **kwargs)

    monkeypatch.setattr(candidates, "_import_prophet", lambda: RecordingProphet)
    history = drifting_season_series(300, change_at=100)
    y = history.to_numpy()
    ctx = series._Context(y, pd.Period("1985-01", freq="M"), ForecastConfig())
    path = candidates._fc_prophet(y, 12, ctx, {})
    assert len(seen) == 1 and len(seen[0]) == 120
    assert seen[0]["ds"].iloc[0] == (pd.Period("1985-01", freq="M") + 180).start_time
    np.testing.assert_allclose(seen[0]["y"].to_numpy(), y[-120:])
    assert path.shape == (12,) and np.all(np.isfinite(path))
    # the linear regression fits the same window: as if the history started 180 months later
    window_ctx = series._Context(y[-120:], pd.Period("2000-01", freq="M"), ctx.config)
    capped = candidates._fc_linear(y, 12, ctx, {})
    np.testing.assert_allclose(capped, candidates._fc_linear(y[-120:], 12, window_ctx, {}))
    assert not np.allclose(capped, candidates._fc_linear(y, 12, uncapped_ctx(y), {}))


def test_max_fit_months_none_uses_the_whole_history(monkeypatch: pytest.MonkeyPatch) -> None:
    lengths: list[int] = []
    fit_sarimax = candidates._fit_sarimax

    def recording(z: Any, *args: Any, **kwargs: Any) -> Any:
        lengths.append(len(z))
        return fit_sarimax(z, *args, **kwargs)

    monkeypatch.setattr(candidates, "_fit_sarimax", recording)
    y = drifting_season_series(200, change_at=0).to_numpy()
    candidates._fc_arima(y, 6, uncapped_ctx(y), {})
    assert lengths and min(lengths) == 200


RETAIL_FILE = real_datasets.datasets_dir() / "aus_retail" / "aus_retail.csv"


@pytest.mark.slow
@pytest.mark.skipif(
    not RETAIL_FILE.is_file(),
    reason=f"{RETAIL_FILE} is missing (the shared real datasets are not beside the checkout)",
)
def test_real_retail_series_beat_seasonal_naive_on_their_last_24_months() -> None:
    """The first four ABS retail series (New South Wales, 417 months of history each), production
    defaults, scored like ``benchmarks/retail_forecast_check.py``."""
    ensemble, snaive = [], []
    for frame in list(real_datasets.retail_series().values())[:4]:
        history, test = real_datasets.split_last(frame, 24)
        y = history["revenue"].to_numpy(dtype=float)
        fitted = train(pd.Series(y, index=pd.PeriodIndex(history["month"], freq="M")))
        assert fitted.backtest.chain_used == "full" and fitted.backtest.n_origins == 6
        actual = test["revenue"].to_numpy(dtype=float)
        ensemble.append(forecast_baselines.mase(actual, fitted.predict(24).point, y))
        snaive.append(forecast_baselines.mase(actual, forecast_baselines.seasonal_naive(y, 24), y))
    assert np.mean(ensemble) < np.mean(snaive)


# --------------------------------------------------------------------------------------------------
# the fallback chain
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("months", "level"),
    [(1, "mean"), (2, "mean"), (6, "naive"), (13, "seasonal_naive"), (20, "short")],
)
def test_short_histories_fall_back_without_raising(months: int, level: str) -> None:
    fitted = train(seasonal_series(months, seed=months))
    b = fitted.backtest
    assert b.chain_used == level
    assert b.training_months == months
    assert "full" not in b.chain_tried  # never eligible under 24 months
    result = fitted.predict(24)
    assert_intervals_ordered(result)
    assert math.isclose(sum(result.weights.values()), 1.0, rel_tol=1e-9)
    if level == "short":
        assert b.n_origins == 3 and set(b.weights) == set(ForecastConfig().short_models)
    else:
        assert b.n_origins == 0 and b.chain_tried["short"].startswith(f"{months} months leave no room")


def test_one_month_history_forecasts_that_month_with_a_default_spread() -> None:
    result = train(monthly([1200.0])).predict(2)
    assert result.point == [1200.0, 1200.0]
    assert result.upper_80[0] == pytest.approx(1200.0 * 1.25)
    assert_intervals_ordered(result)


def test_all_zero_history_forecasts_zero() -> None:
    fitted = train(monthly(np.zeros(30)))
    assert fitted.backtest.chain_used == "zeros"
    result = fitted.predict(12)
    assert result.point == [0.0] * 12 and result.upper_95 == [0.0] * 12


def test_intermittent_sales_use_the_intermittent_models() -> None:
    rng = np.random.default_rng(11)
    values = np.where(rng.random(36) < 0.5, 0.0, rng.gamma(2.0, 500.0, 36))
    values[0] = 800.0
    fitted = train(monthly(values))
    b = fitted.backtest
    assert b.chain_used == "intermittent"
    assert set(b.weights) <= set(ForecastConfig().intermittent_models)
    assert_intervals_ordered(fitted.predict(24))


def test_short_intermittent_history_falls_back_to_the_mean() -> None:
    fitted = train(monthly([0, 0, 300, 0, 0, 500, 0, 100]))  # the two leading zeros are trimmed
    assert fitted.backtest.chain_used == "mean"
    assert fitted.backtest.training_months == 6
    assert fitted.predict(1).point == [pytest.approx(150.0)]


def test_leading_zero_months_are_trimmed() -> None:
    history = pd.concat(
        [
            monthly(np.zeros(10), "2020-01"),
            seasonal_series(30).set_axis(pd.period_range("2020-11", periods=30, freq="M")),
        ]
    )
    fitted = train(history, NO_PROPHET)
    assert fitted.backtest.training_months == 30
    assert fitted.backtest.first_month == "2020-11"


# --------------------------------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------------------------------


def test_a_model_that_fails_is_dropped_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(y: Any, h: int, ctx: Any, state: Any) -> Any:
        raise RuntimeError("solver exploded")

    monkeypatch.setitem(candidates._MODELS, "theta", candidates._ModelSpec(broken, 4))
    fitted = train(seasonal_series(48), ForecastConfig(models=("theta", "linear", "seasonal_naive")))
    b = fitted.backtest
    assert b.chain_used == "full"
    assert "solver exploded" in b.failures["theta"]
    assert "theta" not in b.weights and "theta" not in fitted.components
    assert math.isclose(sum(b.weights.values()), 1.0, rel_tol=1e-9)
    assert_intervals_ordered(fitted.predict(12))


def test_a_model_that_fails_only_in_the_backtest_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails_on_shorter_histories(y: Any, h: int, ctx: Any, state: Any) -> Any:
        if y.size < 48:
            raise ValueError("not enough data")
        return np.full(h, float(y[-1]))

    monkeypatch.setitem(candidates._MODELS, "theta", candidates._ModelSpec(fails_on_shorter_histories, 4))
    b = train(seasonal_series(48), ForecastConfig(models=("theta", "linear"))).backtest
    assert b.failures["theta"] == "backtest origin 2024-07 failed: ValueError: not enough data"
    assert b.weights == {"linear": 1.0}


def test_a_model_returning_nonsense_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        candidates._MODELS, "theta", candidates._ModelSpec(lambda y, h, c, s: np.full(h, np.nan), 4)
    )
    b = train(seasonal_series(48), ForecastConfig(models=("theta", "linear"))).backtest
    assert b.failures["theta"] == "fit returned non-finite values"


def test_when_every_model_fails_the_chain_goes_down_a_level(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(y: Any, h: int, ctx: Any, state: Any) -> Any:
        raise RuntimeError("down")

    monkeypatch.setitem(candidates._MODELS, "theta", candidates._ModelSpec(broken, 4))
    b = train(seasonal_series(30), ForecastConfig(models=("theta",))).backtest
    assert b.chain_used == "short"
    assert b.chain_tried["full"].startswith("every model failed: theta: fit failed: RuntimeError: down")


# --------------------------------------------------------------------------------------------------
# input errors
# --------------------------------------------------------------------------------------------------


def test_empty_history_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="history is empty"):
        train(pd.Series([], index=pd.PeriodIndex([], freq="M"), dtype=float))


@pytest.mark.parametrize("months", [0, -1, 25, 1.5, True, "3"])
def test_months_outside_one_to_max_horizon_are_rejected(
    production_fit: FittedForecaster, months: Any
) -> None:
    with pytest.raises(ValueError, match="months must be"):
        production_fit.predict(months)


def test_a_missing_month_inside_the_range_is_an_error() -> None:
    history = seasonal_series(30).drop(pd.Period("2022-03", freq="M"))
    with pytest.raises(ValueError, match=r"missing 1 month\(s\) inside its range \(2022-03\)"):
        train(history)


@pytest.mark.parametrize(
    ("history", "message"),
    [
        (pd.Series([1.0, 2.0], index=pd.to_datetime(["2024-01-01", "2024-01-15"])), "month starts"),
        (
            pd.Series([1.0, 2.0], index=pd.PeriodIndex(["2024-01", "2024-01"], freq="M")),
            "more than one value",
        ),
        (
            pd.Series([1.0, np.nan], index=pd.PeriodIndex(["2024-01", "2024-02"], freq="M")),
            "missing or non-numeric",
        ),
        (pd.Series([1.0, 2.0], index=[0, 1]), "DatetimeIndex"),
    ],
)
def test_malformed_histories_are_clear_errors(history: pd.Series, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(history)


def test_month_start_timestamps_and_periods_give_the_same_forecast() -> None:
    by_period = seasonal_series(26)
    by_timestamp = by_period.set_axis(pd.PeriodIndex(by_period.index).to_timestamp())
    shuffled = by_timestamp.sample(frac=1.0, random_state=0)
    a = train(by_period, NO_PROPHET).predict(6)
    b = train(shuffled, NO_PROPHET).predict(6)
    assert a == b


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="n_origins must be at least 3"):
        ForecastConfig(n_origins=2)
    with pytest.raises(ValueError, match="unknown model"):
        ForecastConfig(models=("arima", "lstm"))
    with pytest.raises(ValueError, match="max_fit_months must be at least two seasons"):
        ForecastConfig(max_fit_months=18)
    with pytest.raises(ValueError, match="max_origins"):
        ForecastConfig(n_origins=4, max_origins=3)


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------


def test_evaluate_on_a_hand_computed_example() -> None:
    y = [100.0, 200.0, 0.0, 100.0]
    f = [110.0, 180.0, 10.0, 100.0]
    # |e| = 10, 20, 10, 0 -> 40 over sum|y| = 400; sMAPE terms 200*10/210, 200*20/380, 200*10/10, 0
    out = evaluate(y, f, y_train=[1.0, 2.0, 3.0, 5.0], season_length=2)
    assert out["wape"] == pytest.approx(0.1)
    assert out["accuracy"] == pytest.approx(0.9)
    assert out["smape"] == pytest.approx((2000 / 210 + 4000 / 380 + 200 + 0) / 4)
    assert out["mae"] == pytest.approx(10.0)
    assert out["mase"] == pytest.approx(10.0 / 2.5)  # lag-2 differences 2 and 3


def test_evaluate_accuracy_floors_at_zero_and_handles_all_zero_actuals() -> None:
    assert evaluate([10.0, 10.0], [40.0, 40.0])["accuracy"] == 0.0  # WAPE 3
    assert evaluate([0.0, 0.0], [0.0, 0.0])["wape"] == 0.0
    assert evaluate([0.0, 0.0], [1.0, 0.0])["wape"] == math.inf
    assert "mase" not in evaluate([1.0], [1.0])
    with pytest.raises(ValueError, match="different lengths"):
        evaluate([1.0, 2.0], [1.0])
