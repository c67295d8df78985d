"""The backtested levels of the fallback chain: rolling origins, every model refitted at each one,
inverse-WAPE weights, the ensemble's own backtest and the intervals it gives."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .candidates import _MODELS, _min_train
from .config import ForecastConfig
from .forecaster import ModelScore
from .intervals import _interval_widths
from .metrics import _smape, _wape
from .series import FloatArray, _Context


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
