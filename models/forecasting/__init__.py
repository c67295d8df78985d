"""The per-organization monthly revenue forecaster (the ``sales_forecast`` family), as a package.

Import it from ``neuracrm_mlops.models.forecasting_model``: that module is the family's public API and
the import path registered models pickle its classes under (see ``models/pickling.py``). Here:

- ``config``: the model names and ``ForecastConfig`` (what to fit, how to backtest it).
- ``forecaster``: the trained ``FittedForecaster``, its ``BacktestReport`` and the ``ForecastResult``
  it answers with.
- ``training``: ``train`` (the fallback chain, the ensemble) and ``predict``.
- ``series``: history validation, the seasonality test and indices, the per-series context.
- ``candidates``: the candidate models (ARIMA/SARIMA, ETS, Theta, Prophet, the linear regression, the
  naive ones, Croston) and their registry.
- ``backtest``: rolling origins, inverse-WAPE weights, the backtested levels of the chain.
- ``intervals``: prediction-interval half-widths from backtest errors or in-sample residuals.
- ``fallback``: the closed-form levels at the end of the chain, and ``seasonal_naive_forecast``.
- ``metrics``: ``evaluate`` (the platform's accuracy definition), WAPE and sMAPE.

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
