"""The production revenue forecaster on real monthly sales: ABS Australian retail turnover (152 series).

    nice -n 10 .venv/bin/python benchmarks/retail_forecast_check.py                 # all 152 series
    nice -n 10 .venv/bin/python benchmarks/retail_forecast_check.py --series 10     # first 10, quick

Data: ``real_datasets.retail_series()`` (``../shared/datasets/aus_retail``, read at run time; one
series per state x industry, 441, 369, 140 or 32 months). The last 24 months of every series are the
test window (``real_datasets.split_last``); everything before is the history.

Platform: ``forecasting_model.train(history, ForecastConfig())``, the call ``forecast_training``
makes for an organization's monthly history (revenue indexed by month), then ``predict(24)``.
Baselines (``forecast_baselines``, one fixed specification each): seasonal naive, ETS (Holt-Winters,
additive damped trend, multiplicative seasonality), Theta (statsmodels, period 12).

Scores per series, over the 24 test months, averaged over the series: MASE (scaled by the in-sample
seasonal-naive MAE; the two series with 8 months of history use the naive MAE, see
``forecast_baselines.mase``), sMAPE, and the platform's accuracy ``max(0, 1 - WAPE)``. Also the
ensemble's components (each refitted on the whole history) and how often the ensemble beats each
baseline.

Cost: the platform fits run first, alone, in ``--workers`` processes (default 2; each warms up on a
small series before the clock starts for its series): seconds per series (wall and CPU, including
Prophet's Stan process) and the wall time of the whole pass, pool start-up included. The baselines
run afterwards in a second pass and are not part of the fitting time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import forecast_baselines as fb
import real_datasets

from neuracrm_mlops.models.forecasting_model import ForecastConfig, train

HORIZON = 24
BASELINES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "seasonal naive": fb.seasonal_naive,
    "ETS (damped, multiplicative seasonality)": fb.ets,
    "Theta (statsmodels)": fb.theta,
}

Task = tuple[str, pd.Series, np.ndarray]


def as_history(frame: pd.DataFrame) -> pd.Series:
    """A ``sales`` frame (``month`` YYYY-MM, ``revenue``) as the month-indexed Series ``train`` takes."""
    return pd.Series(
        frame["revenue"].to_numpy(dtype=float), index=pd.PeriodIndex(frame["month"], freq="M"), name="revenue"
    )


def load_tasks(limit: int | None, horizon: int) -> list[Task]:
    tasks: list[Task] = []
    for sid, frame in real_datasets.retail_series().items():
        history, test = real_datasets.split_last(frame, horizon)
        tasks.append((sid, as_history(history), test["revenue"].to_numpy(dtype=float)))
    return tasks[:limit] if limit is not None else tasks


def scores(actual: np.ndarray, forecast: np.ndarray, history: np.ndarray) -> dict[str, float]:
    abs_sum = float(np.abs(actual).sum())
    wape = float(np.abs(actual - forecast).sum()) / abs_sum if abs_sum > 0 else math.inf
    return {
        "mase": fb.mase(actual, forecast, history),
        "smape": fb.smape(actual, forecast),
        "accuracy": max(0.0, 1.0 - wape),
    }


def fit_platform(task: Task) -> dict[str, Any]:
    """One production fit and its scores on the test window."""
    sid, history, test = task
    wall0 = time.perf_counter()
    fitted = train(history, ForecastConfig())
    wall = time.perf_counter() - wall0
    h = min(test.size, fitted.max_horizon)
    y = history.to_numpy(dtype=float)
    forecast = fitted.predict(h)
    point = np.asarray(forecast.point, dtype=float)
    actual = test[:h]
    b = fitted.backtest
    return {
        "series_id": sid,
        "months": int(y.size),
        "wall": wall,
        "cpu": b.cpu_seconds,
        "level": b.chain_used,
        "weights": b.weights,
        "best": b.best_model,
        "failures": b.failures,
        "structure": b.structure,
        "n_origins": b.n_origins,
        "ensemble": scores(actual, point, y),
        "cover80": float(np.mean((actual >= forecast.lower_80) & (actual <= forecast.upper_80))),
        "cover95": float(np.mean((actual >= forecast.lower_95) & (actual <= forecast.upper_95))),
        "components": {
            m: scores(actual, np.asarray(fitted.component_forecast(m, h), dtype=float), y)
            for m in fitted.components
        },
    }


def fit_baselines(task: Task) -> dict[str, Any]:
    sid, history, test = task
    y = history.to_numpy(dtype=float)
    out: dict[str, Any] = {"series_id": sid, "baselines": {}, "baseline_seconds": {}}
    for name, fn in BASELINES.items():
        t0 = time.perf_counter()
        forecast = np.asarray(fn(y, test.size), dtype=float)
        out["baseline_seconds"][name] = time.perf_counter() - t0
        out["baselines"][name] = scores(test, forecast, y)
    return out


def _warm_up() -> None:
    """Import statsmodels and Prophet and load the Stan model once per worker, outside the timings."""
    idx = pd.period_range("2000-01", periods=48, freq="M")
    train(pd.Series(100 + np.arange(48) + 10 * np.sin(np.arange(48) * np.pi / 6), index=idx))


def run_pool(
    fn: Callable[[Task], dict[str, Any]], tasks: list[Task], workers: int, label: str
) -> tuple[list[dict[str, Any]], float]:
    t0 = time.perf_counter()
    out: list[dict[str, Any]] = []
    # longest first, one at a time: the 441-month series must not all end up in one worker's tail
    ordered = sorted(tasks, key=lambda t: -len(t[1]))
    if workers <= 1:
        _warm_up()
        results: Any = map(fn, ordered)
        for r in results:
            out.append(r)
            _progress(label, len(out), len(tasks), t0)
        return out, time.perf_counter() - t0
    with get_context("fork").Pool(workers, initializer=_warm_up) as pool:
        for r in pool.imap_unordered(fn, ordered, chunksize=1):
            out.append(r)
            _progress(label, len(out), len(tasks), t0)
    return out, time.perf_counter() - t0


def _progress(label: str, done: int, total: int, t0: float) -> None:
    if done % 25 == 0 or done == total:
        print(
            f"  {label}: {done}/{total} series, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True
        )


def _mean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)) if arr.size else math.nan


def summarise(
    fits: list[dict[str, Any]], bases: list[dict[str, Any]], wall: float, workers: int
) -> dict[str, Any]:
    by_id = {b["series_id"]: b for b in bases}
    rows: list[dict[str, Any]] = []

    def add(method: str, per_series: list[dict[str, float]]) -> None:
        rows.append(
            {
                "method": method,
                "n": len(per_series),
                "mase": _mean([s["mase"] for s in per_series]),
                "mase_median": float(np.nanmedian([s["mase"] for s in per_series])),
                "smape": _mean([s["smape"] for s in per_series]),
                "accuracy": _mean([s["accuracy"] for s in per_series]),
            }
        )

    add("**NeuraCRM ensemble (production)**", [f["ensemble"] for f in fits])
    for name in BASELINES:
        add(f"baseline: {name}", [by_id[f["series_id"]]["baselines"][name] for f in fits])
    for model in sorted({m for f in fits for m in f["components"]}):
        per = [f["components"][model] for f in fits if model in f["components"]]
        add(f"component: {model}" + (f" ({len(per)} series)" if len(per) < len(fits) else ""), per)
    wins = {
        name: int(
            sum(
                f["ensemble"]["mase"] < by_id[f["series_id"]]["baselines"][name]["mase"]
                for f in fits
                if math.isfinite(f["ensemble"]["mase"])
            )
        )
        for name in BASELINES
    }
    walls = np.asarray([f["wall"] for f in fits], dtype=float)
    cpus = np.asarray([f["cpu"] for f in fits], dtype=float)
    by_len: dict[int, list[float]] = {}
    for f in fits:
        by_len.setdefault(f["months"], []).append(f["wall"])
    baseline_seconds = {
        name: float(np.sum([b["baseline_seconds"][name] for b in bases])) for name in BASELINES
    }
    return {
        "rows": rows,
        "n": len(fits),
        "wins": wins,
        "workers": workers,
        "wall": wall,
        "fit_seconds_total": float(walls.sum()),
        "fit_seconds_mean": float(walls.mean()),
        "fit_seconds_p95": float(np.quantile(walls, 0.95)),
        "fit_seconds_max": float(walls.max()),
        "cpu_mean": float(cpus.mean()),
        "by_length": {k: (len(v), float(np.mean(v)), float(np.max(v))) for k, v in sorted(by_len.items())},
        "levels": {lv: sum(f["level"] == lv for f in fits) for lv in sorted({f["level"] for f in fits})},
        "weights_mean": {
            m: float(np.mean([f["weights"].get(m, 0.0) for f in fits]))
            for m in sorted({m for f in fits for m in f["weights"]})
        },
        "failures": _count_failures(fits),
        "cover80": float(np.mean([f["cover80"] for f in fits])),
        "cover95": float(np.mean([f["cover95"] for f in fits])),
        "origins": dict(sorted(Counter(f["n_origins"] for f in fits).items())),
        "baseline_seconds": baseline_seconds,
    }


def _count_failures(fits: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in fits:
        for m in f["failures"]:
            out[m] = out.get(m, 0) + 1
    return out


def render(s: dict[str, Any], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{s['workers']} worker processes.",
        "",
        f"{s['n']} ABS retail series, last {HORIZON} months held out; scores averaged over the series.",
        "",
        "| method | mean MASE | median MASE | sMAPE | accuracy (1-WAPE) | series |",
        "|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['method']} | {r['mase']:.3f} | {r['mase_median']:.3f} | {r['smape']:.2f} | "
            f"{100 * r['accuracy']:.1f}% | {r['n']} |"
        )
    lines += [
        "",
        "- Ensemble MASE below the baseline's on: "
        + ", ".join(f"{name} {k}/{s['n']}" for name, k in s["wins"].items())
        + " series.",
        f"- Fitting (production `train`): {s['wall']:.0f} s wall for {s['n']} series on {s['workers']} "
        f"processes (pool start-up included); per series {s['fit_seconds_mean']:.2f} s mean, "
        f"p95 {s['fit_seconds_p95']:.2f} s, max {s['fit_seconds_max']:.2f} s "
        f"(sum {s['fit_seconds_total']:.0f} s); "
        f"CPU {s['cpu_mean']:.2f} s mean. By history length: "
        + ", ".join(
            f"{k} months ({n}) mean {m:.2f} s / max {x:.2f} s" for k, (n, m, x) in s["by_length"].items()
        )
        + ".",
        "- Mean ensemble weight: "
        + ", ".join(f"{m} {w:.2f}" for m, w in sorted(s["weights_mean"].items(), key=lambda kv: -kv[1]))
        + ". Levels: "
        + ", ".join(f"{k} {v}" for k, v in s["levels"].items())
        + ". Models dropped: "
        + (", ".join(f"{k} on {v} series" for k, v in sorted(s["failures"].items())) or "none")
        + ".",
        f"- Prediction intervals on the test months: 80% covers {100 * s['cover80']:.1f}%, "
        f"95% covers {100 * s['cover95']:.1f}%. Backtest origins: "
        + ", ".join(f"{k} on {v} series" for k, v in s["origins"].items())
        + ".",
        "- Baselines, total seconds over the series: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in s["baseline_seconds"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=None, help="only the first N series (file order)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="write the markdown report here too")
    parser.add_argument("--details", type=Path, default=None, help="per-series results as JSON lines")
    args = parser.parse_args(argv)
    command = "python benchmarks/retail_forecast_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    tasks = load_tasks(args.series, HORIZON)
    print(f"ABS retail: {len(tasks)} series, {args.workers} workers", file=sys.stderr)
    fits, wall = run_pool(fit_platform, tasks, args.workers, "platform fits")
    bases, _ = run_pool(fit_baselines, tasks, args.workers, "baselines")
    order = {t[0]: i for i, t in enumerate(tasks)}
    fits.sort(key=lambda f: order[f["series_id"]])
    summary = summarise(fits, bases, wall, args.workers)
    text = render(summary, command.strip())
    print(text)
    if args.output:
        args.output.write_text(text)
    if args.details:
        by_id = {b["series_id"]: b for b in bases}
        with args.details.open("w") as fh:
            for f in fits:
                fh.write(json.dumps({**f, **by_id[f["series_id"]]}, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
