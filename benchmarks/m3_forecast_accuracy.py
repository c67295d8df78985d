"""Accuracy of the production revenue forecaster on the M3 monthly series, and what it costs.

Runs ``neuracrm_mlops.models.forecasting_model.train`` with the production defaults (an unchanged
``ForecastConfig()``) on every M3 monthly series: fit on the ``train`` part, forecast the 18 ``test``
months. Reports, over horizons 1-18, sMAPE (mean of 200|y-f|/(|y|+|f|)) and MASE (mean |y-f| over the
in-sample mean absolute lag-12 difference) for the ensemble, for each component model (its own
forecast refitted on the full train part) and for the model the backtest picked as best, next to
the competition's reference rows; plus the coverage of the 80%/95% intervals, the runtime and the
CPU cost per series.

    python benchmarks/m3_forecast_accuracy.py                      # all 1,428 series, 2 workers
    python benchmarks/m3_forecast_accuracy.py --limit 200          # stratified sample, seed 0
    python benchmarks/m3_forecast_accuracy.py --cost-orgs 200      # + cost on synthetic CRM orgs

``--cost-orgs N`` also times training on N synthetic organizations (the platform's own generator,
``neuracrm_mlops.store.synthetic``) at 48 and at 120 months.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuracrm_mlops.models.forecasting_model import ForecastConfig, train

DATA = Path("/work/shared/benchmarks/m3_monthly.csv")
REFERENCE = Path("/work/shared/benchmarks/m3_monthly_reference.csv")
HORIZON = 18
SEASON = 12


def load_m3(path: Path) -> dict[str, tuple[str, pd.Series, np.ndarray]]:
    """``{series_id: (category, train history as a monthly Series, test values)}`` in file order."""
    df = pd.read_csv(path, dtype={"series_id": str, "category": str, "month": str, "split": str})
    out: dict[str, tuple[str, pd.Series, np.ndarray]] = {}
    for sid, g in df.groupby("series_id", sort=False):
        tr = g[g["split"] == "train"]
        te = g[g["split"] == "test"]
        if tr["month"].isna().all():
            # 29 OTHER series (N2801-N2829) have no calendar in M3: give them one, starting in January
            index = pd.period_range("2000-01", periods=len(tr), freq="M")
        else:
            index = pd.PeriodIndex(tr["month"], freq="M")
        history = pd.Series(tr["value"].to_numpy(dtype=float), index=index, name=str(sid))
        out[str(sid)] = (str(g["category"].iloc[0]), history, te["value"].to_numpy(dtype=float))
    return out


def stratified_sample(categories: dict[str, str], k: int, seed: int) -> list[str]:
    """``k`` series ids, allocated to categories in proportion to their size, drawn with ``seed``."""
    ids = list(categories)
    if k >= len(ids):
        return ids
    rng = np.random.default_rng(seed)
    by_cat: dict[str, list[str]] = {}
    for sid in ids:
        by_cat.setdefault(categories[sid], []).append(sid)
    shares = {c: len(v) * k / len(ids) for c, v in by_cat.items()}
    alloc = {c: math.floor(s) for c, s in shares.items()}
    for c in sorted(shares, key=lambda c: shares[c] - alloc[c], reverse=True)[: k - sum(alloc.values())]:
        alloc[c] += 1
    chosen: list[str] = []
    for c, members in by_cat.items():
        chosen += list(rng.choice(np.array(members), size=alloc[c], replace=False))
    order = {sid: i for i, sid in enumerate(ids)}
    return sorted(chosen, key=order.__getitem__)


def smape(y: np.ndarray, f: np.ndarray) -> float:
    den = np.abs(y) + np.abs(f)
    terms = np.divide(2.0 * np.abs(y - f), den, out=np.zeros_like(den), where=den > 0)
    return float(100.0 * terms.mean())


def mase(train_values: np.ndarray, y: np.ndarray, f: np.ndarray) -> float:
    scale = float(np.mean(np.abs(train_values[SEASON:] - train_values[:-SEASON])))
    return float(np.mean(np.abs(y - f))) / scale if scale > 0 else math.nan


def _run_one(task: tuple[str, pd.Series, np.ndarray | None]) -> dict[str, Any]:
    """Train with the production defaults; score against ``test`` when given."""
    sid, history, test = task
    wall0 = time.perf_counter()
    fitted = train(history, ForecastConfig())
    wall = time.perf_counter() - wall0
    b = fitted.backtest
    out: dict[str, Any] = {
        "series_id": sid,
        "months": len(history),
        "cpu": b.cpu_seconds,
        "wall": wall,
        "level": b.chain_used,
        "best": b.best_model,
        "weights": b.weights,
        "failures": b.failures,
        "seasonal": b.seasonal,
        "accuracy": b.ensemble.accuracy if b.ensemble else math.nan,
        "backtest_wape": {m: sc.wape for m, sc in b.models.items()},
    }
    if test is None:
        return out
    h = min(len(test), fitted.max_horizon)
    res = fitted.predict(h)
    y = np.asarray(test[:h], dtype=float)
    tr = history.to_numpy(dtype=float)
    point = np.asarray(res.point)
    out["ensemble"] = (smape(y, point), mase(tr, y, point))
    out["components"] = {}
    out["component_forecasts"] = {}
    for model in fitted.components:
        f = np.asarray(fitted.component_forecast(model, h))
        out["components"][model] = (smape(y, f), mase(tr, y, f))
        out["component_forecasts"][model] = f.tolist()
    out["best_model_score"] = out["components"].get(b.best_model, out["ensemble"])
    lo80, hi80 = np.asarray(res.lower_80), np.asarray(res.upper_80)
    lo95, hi95 = np.asarray(res.lower_95), np.asarray(res.upper_95)
    out["cover80"] = float(np.mean((y >= lo80) & (y <= hi80)))
    out["cover95"] = float(np.mean((y >= lo95) & (y <= hi95)))
    out["point"] = point.tolist()
    return out


def _warm_up() -> None:
    """Import statsmodels/Prophet and load the Stan model once per worker, outside the timings."""
    idx = pd.period_range("2000-01", periods=48, freq="M")
    values = 100 + np.arange(48) + 10 * np.sin(np.arange(48) * np.pi / 6)
    train(pd.Series(values, index=idx))


def run_pool(tasks: list[tuple[str, pd.Series, np.ndarray | None]], workers: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    if workers <= 1:
        _warm_up()
        for i, task in enumerate(tasks):
            results.append(_run_one(task))
            _progress(i + 1, len(tasks), t0)
        return results
    with get_context("fork").Pool(workers, initializer=_warm_up) as pool:
        for i, r in enumerate(pool.imap_unordered(_run_one, tasks, chunksize=4)):
            results.append(r)
            _progress(i + 1, len(tasks), t0)
    return results


def _progress(done: int, total: int, t0: float) -> None:
    if done % 100 == 0 or done == total:
        print(f"  {done}/{total} series, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def _q(values: Iterable[float], q: float) -> float:
    arr = np.asarray(list(values), dtype=float)
    return float(np.quantile(arr, q)) if arr.size else math.nan


def summarise(
    results: list[dict[str, Any]], reference: pd.DataFrame, wall: float, workers: int
) -> dict[str, Any]:
    n = len(results)
    rows: list[dict[str, Any]] = []

    def add(method: str, pairs: list[tuple[float, float]], note: str) -> None:
        arr = np.asarray(pairs, dtype=float)
        rows.append(
            {
                "method": method,
                "n_series": len(pairs),
                "sMAPE": float(np.mean(arr[:, 0])),
                "MASE": float(np.nanmean(arr[:, 1])),
                "source": note,
            }
        )

    add("**NeuraCRM ensemble**", [r["ensemble"] for r in results], "this run")
    add("NeuraCRM best model (backtest pick)", [r["best_model_score"] for r in results], "this run")
    models = sorted({m for r in results for m in r["components"]})
    for m in models:
        pairs = [r["components"][m] for r in results if m in r["components"]]
        add(
            f"component: {m}", pairs, "this run" + (f", fitted on {len(pairs)}/{n}" if len(pairs) < n else "")
        )
    for _, ref in reference.iterrows():
        rows.append(
            {
                "method": str(ref["method"]),
                "n_series": int(ref["n_series"]),
                "sMAPE": float(ref["sMAPE_1_18"]),
                "MASE": float(ref["MASE_1_18"]),
                "source": "M3 reference (all 1,428 series)",
            }
        )
    rows.sort(key=lambda r: r["sMAPE"])
    cpu = [r["cpu"] for r in results]
    weights_mean = {m: float(np.mean([r["weights"].get(m, 0.0) for r in results])) for m in models}
    best_share = {m: float(np.mean([r["best"] == m for r in results])) for m in models}
    failures: dict[str, int] = {}
    for r in results:
        for m in r["failures"]:
            failures[m] = failures.get(m, 0) + 1
    by_len: dict[str, list[float]] = {}
    for r in results:
        key = "48-72" if r["months"] <= 72 else ("73-108" if r["months"] <= 108 else "109-126")
        by_len.setdefault(key, []).append(r["cpu"])
    return {
        "rows": rows,
        "n": n,
        "wall": wall,
        "workers": workers,
        "cpu_mean": float(np.mean(cpu)),
        "cpu_p95": _q(cpu, 0.95),
        "cpu_by_length": {k: (len(v), float(np.mean(v)), _q(v, 0.95)) for k, v in sorted(by_len.items())},
        "cover80": float(np.mean([r["cover80"] for r in results])),
        "cover95": float(np.mean([r["cover95"] for r in results])),
        "weights_mean": weights_mean,
        "best_share": best_share,
        "failures": failures,
        "levels": {lv: sum(r["level"] == lv for r in results) for lv in {r["level"] for r in results}},
        "seasonal_share": float(np.mean([r["seasonal"] for r in results])),
    }


def cost_on_synthetic(n_orgs: int, workers: int, seed: int) -> dict[int, dict[str, float]]:
    """CPU per organization on the platform's synthetic CRM at 48 and 120 months."""
    from neuracrm_mlops.store.synthetic import generate_crm

    out: dict[int, dict[str, float]] = {}
    for months in (48, 120):
        crm = generate_crm(n_orgs, months, seed, leads_per_org=0, interactions_per_lead=0.0)
        sales = crm.monthly_sales
        tasks: list[tuple[str, pd.Series, np.ndarray | None]] = []
        for org, g in sales.groupby("org_index"):
            idx = pd.PeriodIndex([pd.Period(d, freq="M") for d in g["month"]], freq="M")
            tasks.append((f"org{org}", pd.Series(g["revenue"].to_numpy(dtype=float), index=idx), None))
        res = run_pool(tasks, workers)
        full = [r["cpu"] for r in res if r["level"] == "full"]
        cpu = [r["cpu"] for r in res]
        busy = sum(r["wall"] for r in res)  # time spent in train(), without the pool's start-up
        out[months] = {
            "orgs": float(len(res)),
            "cpu_mean": float(np.mean(cpu)),
            "cpu_p95": _q(cpu, 0.95),
            "cpu_mean_full": float(np.mean(full)) if full else math.nan,
            "cpu_p95_full": _q(full, 0.95),
            "wall_per_1000": busy / max(workers, 1) / len(res) * 1000,
        }
    return out


def render_markdown(s: dict[str, Any], cost: dict[int, dict[str, float]] | None, command: str) -> str:
    lines = [
        f"Command: `{command}`",
        f"Date: {dt.date.today().isoformat()}. Machine: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {s['workers']} worker processes.",
        "",
        f"{s['n']} series, horizons 1-18 (sMAPE and MASE averaged over series and horizons).",
        "",
        "| method | sMAPE | MASE | series | source |",
        "|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['method']} | {r['sMAPE']:.2f} | {r['MASE']:.3f} | {r['n_series']} | {r['source']} |"
        )
    lines += [
        "",
        f"- Prediction intervals on the test months: 80% covers {100 * s['cover80']:.1f}%, "
        f"95% covers {100 * s['cover95']:.1f}%.",
        f"- Runtime: {s['wall']:.0f} s wall for {s['n']} series on {s['workers']} workers "
        f"({s['wall'] / s['n'] * s['workers']:.2f} s of worker time per series).",
        f"- CPU per series (train, incl. Prophet's Stan process): mean {s['cpu_mean']:.2f} s, "
        f"p95 {s['cpu_p95']:.2f} s; by training length: "
        + ", ".join(
            f"{k} months ({n} series) mean {m:.2f} s / p95 {p:.2f} s"
            for k, (n, m, p) in s["cpu_by_length"].items()
        )
        + ".",
        "- Mean ensemble weight: "
        + ", ".join(f"{m} {w:.2f}" for m, w in sorted(s["weights_mean"].items(), key=lambda kv: -kv[1]))
        + "; picked as best model: "
        + ", ".join(f"{m} {100 * w:.0f}%" for m, w in sorted(s["best_share"].items(), key=lambda kv: -kv[1]))
        + ".",
        f"- Seasonal by the test: {100 * s['seasonal_share']:.0f}% of the series. Fallback levels used: "
        + ", ".join(f"{k} {v}" for k, v in sorted(s["levels"].items()))
        + ". Models dropped: "
        + (", ".join(f"{k} on {v} series" for k, v in sorted(s["failures"].items())) or "none")
        + ".",
    ]
    if cost:
        lines += _cost_lines(cost)
    return "\n".join(lines) + "\n"


def _cost_lines(cost: dict[int, dict[str, float]]) -> list[str]:
    lines = [
        "",
        "Cost on the platform's synthetic CRM (`neuracrm_mlops.store.synthetic`, all profiles; the wall "
        "time per 1,000 orgs is the time spent in `train` divided by the workers, without the "
        "one-off worker start-up):",
        "",
    ]
    lines += [
        "| months | orgs | CPU mean (all) | CPU p95 (all) | CPU mean (full ensemble) | "
        "CPU p95 (full ensemble) | wall per 1,000 orgs |",
        "|---|---|---|---|---|---|---|",
    ]
    for months, c in cost.items():
        lines.append(
            f"| {months} | {int(c['orgs'])} | {c['cpu_mean']:.2f} s | {c['cpu_p95']:.2f} s | "
            f"{c['cpu_mean_full']:.2f} s | {c['cpu_p95_full']:.2f} s | {c['wall_per_1000']:.0f} s |"
        )
    return lines


def render_cost(cost: dict[int, dict[str, float]], command: str, workers: int) -> str:
    head = [
        f"Command: `{command}`",
        f"Date: {dt.date.today().isoformat()}. Machine: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {workers} worker processes.",
    ]
    return "\n".join(head + _cost_lines(cost)) + "\n"


def write_csv(path: Path, s: dict[str, Any]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["method", "sMAPE", "MASE", "n_series", "source"])
        w.writeheader()
        for r in s["rows"]:
            w.writerow({k: r[k] for k in w.fieldnames})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--limit", type=int, default=None, help="stratified sample of N series (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="results file (.md or .csv)")
    parser.add_argument("--details", type=Path, default=None, help="per-series results as JSON lines")
    parser.add_argument(
        "--cost-orgs", type=int, default=0, help="also time N synthetic orgs at 48/120 months"
    )
    parser.add_argument("--cost-only", action="store_true", help="skip M3: only the --cost-orgs timing")
    args = parser.parse_args(argv)
    command = "python benchmarks/m3_forecast_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.cost_only:
        cost_only = cost_on_synthetic(args.cost_orgs or 200, args.workers, args.seed)
        text = render_cost(cost_only, command.strip(), args.workers)
        print(text)
        if args.output:
            args.output.write_text(text)
        return 0

    data = load_m3(args.data)
    ids = list(data)
    if args.limit is not None:
        ids = stratified_sample({sid: data[sid][0] for sid in ids}, args.limit, args.seed)
    tasks: list[tuple[str, pd.Series, np.ndarray | None]] = [(sid, data[sid][1], data[sid][2]) for sid in ids]
    print(f"M3 monthly: {len(tasks)} series, {args.workers} workers", file=sys.stderr)
    t0 = time.perf_counter()
    results = run_pool(tasks, args.workers)
    wall = time.perf_counter() - t0
    reference = pd.read_csv(args.reference)
    summary = summarise(results, reference, wall, args.workers)
    cost = cost_on_synthetic(args.cost_orgs, args.workers, args.seed) if args.cost_orgs else None
    text = render_markdown(summary, cost, command.strip())
    print(text)
    if args.output:
        if args.output.suffix.lower() == ".csv":
            write_csv(args.output, summary)
        else:
            args.output.write_text(text)
    if args.details:
        with args.details.open("w") as fh:
            for r in results:
                fh.write(json.dumps(r, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
