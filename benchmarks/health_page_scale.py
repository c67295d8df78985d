"""What the on-call model-health page costs at 1,000 organizations (one forecast model each).

Seeds a private ``NEURACRM_HOME`` (SQLite CRM store, SQLite MLflow registry) with ``--orgs`` forecast
models ``sales_forecast_org_<id>`` (versions point at a dummy artifact URI: the page never loads a
model), plus ``lead_scoring`` and ``sentiment``; each champion v2 with v1 ``previous`` and the two
promotions in the ledger, a week of logged forecasts with their actuals, and some trouble: 2% of the
organizations below the accuracy floor, 2% with an open drift alert, 1% with a canary running.
Then times ``model_health`` and ``render_health_page`` (and the whole ``health_page_html``), and
counts the SQL statements sent to the CRM store and the calls made to the MLflow client. The medians
leave out the first run, which also pays for MLflow's start-up in the process.

    python benchmarks/health_page_scale.py                       # 1,000 orgs, seeded in a temp dir
    python benchmarks/health_page_scale.py --home /tmp/hp1000    # seed once, reuse on later runs
    git show 8f01152:src/neuracrm_mlops/health_page.py > /tmp/health_page_before.py
    python benchmarks/health_page_scale.py --home /tmp/hp1000 --health-page-file /tmp/health_page_before.py

``--health-page-file`` times another version of the module (e.g. the one before a change) on the
same data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import sqlalchemy as sa

SEEDED_MARK = "health-page-benchmark.json"
VERSION_SOURCE = "file:///nonexistent/benchmark-model"  # never loaded
ACTOR = "cli:health-page-benchmark"
MONTHS = ("2026-08", "2026-09", "2026-10")


def _configure(home: Path) -> None:
    os.environ["NEURACRM_HOME"] = str(home)
    for name in ("NEURACRM_DB_URL", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    from neuracrm_mlops.config import reset_settings

    reset_settings()


def _trouble(org: int) -> str:
    """Which organizations have a problem (deterministic): below the floor, drift alert, canary."""
    if org % 50 == 7:
        return "below_floor"
    if org % 50 == 21:
        return "drift"
    if org % 100 == 42:
        return "canary"
    return "healthy"


def seed(home: Path, orgs: int) -> dict[str, Any]:
    """Write the registry and the CRM store; returns what was written and how long it took."""
    from neuracrm_mlops.config import get_settings
    from neuracrm_mlops.inference.prediction_log import prediction_row
    from neuracrm_mlops.store import registry
    from neuracrm_mlops.store.alerts import raise_alert
    from neuracrm_mlops.store.db.engine import create_engine
    from neuracrm_mlops.store.db.migrate import upgrade
    from neuracrm_mlops.store.db.schema import Outcome, Prediction, PromotionLedgerEntry

    started = time.perf_counter()
    engine = create_engine(get_settings().db_url)
    upgrade(engine)
    client = registry.configure_mlflow()
    now = dt.datetime.now(dt.UTC)
    ledger_rows: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []

    def register(name: str, org: int | None, *, canary: bool) -> None:
        client.create_registered_model(name, description="health page benchmark")
        for _ in range(3 if canary else 2):
            client.create_model_version(name, VERSION_SOURCE, tags={"status": "benchmark"})
        client.set_registered_model_alias(name, registry.PREVIOUS, "1")
        client.set_registered_model_alias(name, registry.CHAMPION, "2")
        promotions = [(None, "1", now - dt.timedelta(days=60)), ("1", "2", now - dt.timedelta(days=30))]
        for old, new, at in promotions:
            ledger_rows.append(
                {
                    "created_at": at,
                    "actor": ACTOR,
                    "model_name": name,
                    "organization_id": org,
                    "action": "promote",
                    "alias": "champion",
                    "from_version": old,
                    "to_version": new,
                    "weight": 0.0,
                    "reason": f"canary of v{new} passed at 100%",
                    "metrics": {},
                }
            )
        if canary:
            client.set_registered_model_alias(name, registry.CHALLENGER, "3")
            registry.set_canary_weight(client, name, 0.1)
            client.set_registered_model_tag(
                name, "canary_started_at", (now - dt.timedelta(hours=5)).isoformat()
            )
            ledger_rows.append(
                {
                    "created_at": now - dt.timedelta(hours=5),
                    "actor": ACTOR,
                    "model_name": name,
                    "organization_id": org,
                    "action": "canary",
                    "alias": "challenger",
                    "from_version": "2",
                    "to_version": "3",
                    "weight": 0.1,
                    "reason": "canary started: v3 gets 10% of traffic against champion v2",
                    "metrics": {},
                }
            )

    for family, output, labels in (
        ("lead_scoring", lambda i: {"probability": 0.9 if i % 10 else 0.2}, ("converted", "not_converted")),
        ("sentiment", lambda i: {"label": "positive", "score": 0.9}, ("positive", "negative")),
    ):
        register(family, None, canary=False)
        for i in range(2_000):
            predictions.append(
                prediction_row(
                    model_name=family,
                    model_version="2",
                    route="champion",
                    request_id=f"{family}-{i}",
                    organization_id=1 + i % orgs,
                    entity_id=f"{family}-entity-{i}",
                    features={"region": "emea", "industry": "Software", "email_opens": i % 7},
                    output=output(i),
                    latency_ms=5.0 + i % 20,
                    fallback=False,
                    created_at=now - dt.timedelta(minutes=i),
                )
            )
            outcomes.append(
                {
                    "model_name": family,
                    "organization_id": 1 + i % orgs,
                    "entity_id": f"{family}-entity-{i}",
                    "label": labels[0] if i % 10 else labels[1],
                    "value": None,
                    "observed_at": now,
                    "source": "simulated",
                }
            )

    for org in range(1, orgs + 1):
        name = registry.forecast_model_name(org)
        trouble = _trouble(org)
        register(name, org, canary=trouble == "canary")
        for day in range(7):  # a week of forecasts, one a day, three months each
            version = "3" if trouble == "canary" and day % 2 else "2"
            predictions.append(
                prediction_row(
                    model_name=name,
                    model_version=version,
                    route="challenger" if version == "3" else "champion",
                    request_id=f"{name}-{day}",
                    organization_id=org,
                    entity_id=None,
                    features={"horizon": len(MONTHS)},
                    output={
                        "points": [
                            {"month": m, "forecast": 1000.0 + 10 * k, "lower_80": 900.0, "upper_80": 1100.0}
                            for k, m in enumerate(MONTHS)
                        ],
                        "weights": {"ets": 0.5, "theta": 0.5},
                        "best_model": "ets",
                    },
                    latency_ms=40.0 + day,
                    fallback=False,
                    created_at=now - dt.timedelta(days=day, minutes=org % 60),
                )
            )
        factor = 1.5 if trouble == "below_floor" else 1.05
        for k, month in enumerate(MONTHS):
            outcomes.append(
                {
                    "model_name": name,
                    "organization_id": org,
                    "entity_id": month,
                    "label": None,
                    "value": (1000.0 + 10 * k) * factor,
                    "observed_at": now,
                    "source": "simulated",
                }
            )
        if org % 100 == 0:
            print(f"  registered {org} of {orgs} forecast models", file=sys.stderr, flush=True)

    with engine.begin() as conn:
        conn.execute(sa.insert(PromotionLedgerEntry), ledger_rows)
        conn.execute(sa.insert(Prediction), predictions)
        conn.execute(sa.insert(Outcome), outcomes)
    alerts = 0
    for org in range(1, orgs + 1):
        if _trouble(org) == "drift":
            name = registry.forecast_model_name(org)
            raise_alert(
                engine,
                kind="data_drift",
                severity="warning",
                title=f"{name} v2: input drift in revenue",
                message="revenue: KS p < 0.001 after Benjamini-Hochberg",
                dedup_key=f"data_drift:{name}:2",
                model_name=name,
                model_version="2",
                organization_id=org,
                deliver=False,
            )
            alerts += 1
    engine.dispose()
    summary = {
        "orgs": orgs,
        "registered_models": orgs + 2,
        "ledger_rows": len(ledger_rows),
        "predictions": len(predictions),
        "outcomes": len(outcomes),
        "open_alerts": alerts,
        "seed_seconds": round(time.perf_counter() - started, 1),
    }
    (home / SEEDED_MARK).write_text(json.dumps(summary, indent=2))
    return summary


class _CountingClient:
    """An MlflowClient that counts the calls made through it."""

    def __init__(self, client: Any, counts: Counter[str]) -> None:
        self._client = client
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._counts[name] += 1
            return attribute(*args, **kwargs)

        return call


def _load_health_page(path: Path | None) -> ModuleType:
    if path is None:
        from neuracrm_mlops.ops import health_page

        return health_page
    spec = importlib.util.spec_from_file_location("neuracrm_mlops._health_page_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(module: ModuleType, repeat: int) -> dict[str, Any]:
    from neuracrm_mlops.config import get_settings
    from neuracrm_mlops.store import registry
    from neuracrm_mlops.store.db.engine import create_engine

    engine = create_engine(get_settings().db_url)
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    sa.event.listen(engine, "before_cursor_execute", count)
    mlflow_calls: Counter[str] = Counter()
    real_configure = registry.configure_mlflow
    registry.configure_mlflow = lambda: _CountingClient(real_configure(), mlflow_calls)
    runs: list[dict[str, Any]] = []
    try:
        for _ in range(repeat):
            statements = 0
            mlflow_calls.clear()
            started = time.perf_counter()
            rows = module.model_health(engine)
            health = time.perf_counter() - started
            health_statements, health_calls = statements, dict(mlflow_calls)
            started = time.perf_counter()
            page = module.render_health_page(rows, username="oncall", can_rollback=True, csrf="0" * 64)
            render = time.perf_counter() - started
            started = time.perf_counter()
            whole = module.health_page_html(engine, username="oncall", can_rollback=True, csrf="0" * 64)
            full = time.perf_counter() - started
            runs.append(
                {
                    "model_health_s": health,
                    "render_s": render,
                    "health_page_html_s": full,
                    "rows": len(rows),
                    "rows_in_page": page.count("<tr id="),
                    "page_kib": len(whole.encode()) / 1024,
                    "crm_statements": health_statements,
                    "mlflow_calls": sum(health_calls.values()),
                    "mlflow_calls_by_method": health_calls,
                    "below_floor": sum(r.below_floor for r in rows),
                    "with_open_alerts": sum(bool(r.open_alerts) for r in rows),
                    "canaries": sum(bool(r.challenger) and r.canary_weight > 0 for r in rows),
                }
            )
    finally:
        registry.configure_mlflow = real_configure
        engine.dispose()
    warm = runs[1:] or runs
    return {
        "runs": runs,
        "first_run_model_health_s": runs[0]["model_health_s"],  # includes MLflow's start-up in the process
        "model_health_s_median": statistics.median(r["model_health_s"] for r in warm),
        "render_s_median": statistics.median(r["render_s"] for r in warm),
        "health_page_html_s_median": statistics.median(r["health_page_html_s"] for r in warm),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=1_000, help="forecast models to register (default 1000)")
    parser.add_argument("--home", type=Path, help="NEURACRM_HOME to seed, or reuse when already seeded")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--health-page-file", type=Path, help="time this copy of health_page.py instead")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="health-page-bench-") as scratch:
        home = (args.home or Path(scratch) / "home").resolve()
        home.mkdir(parents=True, exist_ok=True)
        _configure(home)
        mark = home / SEEDED_MARK
        if mark.exists():
            seeded = json.loads(mark.read_text())
            if seeded["orgs"] != args.orgs:
                parser.error(f"{home} was seeded with {seeded['orgs']} organizations, not {args.orgs}")
            print(f"reusing {home} ({seeded})", file=sys.stderr)
        else:
            print(f"seeding {home} with {args.orgs} organizations...", file=sys.stderr, flush=True)
            seeded = seed(home, args.orgs)
        module = _load_health_page(args.health_page_file)
        result = measure(module, args.repeat)
        report = {
            "machine": f"{platform.python_version()} on {os.cpu_count()} cores",
            "implementation": str(args.health_page_file or "neuracrm_mlops.ops.health_page"),
            "seeded": seeded,
            **result,
        }
        print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
