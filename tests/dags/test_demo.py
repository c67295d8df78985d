"""`neuracrm-mlops demo`, the README's first command, run for real on a small CRM: the three training
DAGs (`airflow dags test`), the first lead version promoted, `bentoml serve` under traffic while a
retrained version goes 10% -> 50% -> 100%, a worse one fails its canary at 10%, then the degraded
champion is rolled back by `monitor_models` with one critical alert and a retrain triggered, while
the alert webhook is down. Here on PostgreSQL (the demo accepts an empty configured store), so the
same run checks the production database path; `make demo` runs it on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import demo_run as demo_background
import pytest
import sqlalchemy as sa
from demo_run import DemoRun
from mlflow import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def demo_run() -> Iterator[DemoRun]:
    """The demo's run, started in the background when collection ended (tests/demo_run.py)."""
    run = demo_background.current() or demo_background.start()
    yield run.wait()
    demo_background.finish()


def test_demo_tells_the_whole_story_and_leaves_nothing_running(
    demo_run: DemoRun,
) -> None:
    result, env = demo_run, demo_run.env
    home = Path(env["NEURACRM_HOME"])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    out = result.stdout
    for step in range(1, 10):
        assert f"{step}/9 " in out, f"step {step} missing:\n{out}"
    # a bad timestamp quarantines its row; a bad optional number only empties that field
    assert (
        "1 quarantined, 1 kept with field errors" in out and "0 imported, 142 unchanged (idempotent)" in out
    )
    assert "train_lead_scoring: success" in out and "lead_scoring v1 (1.0.0)" in out
    assert "train_sentiment: success" in out and "train_sales_forecast: success" in out
    assert "v1, the first version, is champion" in out
    assert "v2 went 10% -> 50% -> 100%" in out and "champion now v2" in out
    assert "v3 rejected at the first step, weight 0%; champion still v2" in out
    assert "champion is now v1; train_lead_scoring was triggered" in out
    assert "the prediction service answers with v1" in out
    assert "| Alert #" in out and "(accuracy_below_floor)" in out and "Runbook:" in out
    assert "prediction service stopped" in out and "make ui" in out
    # nothing left running: no pid files, and the service's port answers no more
    assert not list((home / "run").glob("*.pid"))
    forecast_log = max((home / "logs").glob("dag-train_sales_forecast-*.log")).read_text()
    assert "map_index=2" in forecast_log  # the forecast DAG fanned out over mapped chunks


def test_demo_leaves_the_rollback_in_the_ledger_registry_and_alerts(
    demo_run: DemoRun,
) -> None:
    result, env = demo_run, demo_run.env
    assert result.returncode == 0, result.stdout[-3000:]
    engine = sa.create_engine(env["NEURACRM_DB_URL"].replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            ledger = conn.execute(
                sa.text(
                    "SELECT action, from_version, to_version, weight, actor, reason FROM promotion_ledger"
                    " WHERE model_name = 'lead_scoring' AND action <> 'hold' ORDER BY id"
                )
            ).all()
            with_sales = set(conn.scalars(sa.text("SELECT DISTINCT organization_id FROM monthly_sales")))
            alerts = conn.execute(
                sa.text("SELECT kind, severity, model_version, action_taken, delivery_status FROM alerts")
            ).all()
    finally:
        engine.dispose()
    assert [(r.action, r.from_version, r.to_version, r.weight) for r in ledger] == [
        ("promote", None, "1", 0.0),
        ("canary", "1", "2", 0.1),
        ("canary", "1", "2", 0.5),
        ("canary", "1", "2", 1.0),
        ("promote", "1", "2", 0.0),
        ("canary", "2", "3", 0.1),
        ("reject", "3", None, 0.0),
        ("rollback", "2", "1", 0.0),
    ]
    assert all(r.reason and r.actor.startswith("dag:") for r in ledger)
    [critical] = [a for a in alerts if a.kind == "accuracy_below_floor"]
    assert critical.severity == "critical" and critical.model_version == "2"
    assert "rolled back" in critical.action_taken and critical.delivery_status == "failed"  # webhook down
    [failed_canary] = [a for a in alerts if a.kind == "canary_failed"]
    assert failed_canary.model_version == "3" and failed_canary.severity == "warning"

    uri = f"sqlite:///{Path(env['NEURACRM_HOME']).resolve() / 'mlflow.sqlite'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    lead = client.get_registered_model("lead_scoring")
    assert {a: str(v) for a, v in lead.aliases.items()} == {"champion": "1"}  # v1 had no predecessor
    rolled_back = client.get_model_version("lead_scoring", "2")
    assert rolled_back.tags["status"] == "rolled_back" and "accuracy" in rolled_back.tags["reason"]
    rejected = client.get_model_version("lead_scoring", "3")
    assert rejected.tags["status"] == "rejected" and "accuracy" in rejected.tags["reason"]
    lead_v1 = client.get_model_version("lead_scoring", "1")
    assert lead_v1.tags["dag_run_id"].startswith("manual__")
    assert lead_v1.tags["run_key"].startswith("train_lead_scoring/")
    assert lead_v1.tags["validation_success"] == "True" and lead_v1.tags["gx_report"].endswith(".html")
    sentiment = client.get_model_version("sentiment", "1")
    assert sentiment.tags["dag_run_id"].startswith("manual__")
    assert sentiment.tags["data_snapshot_hash"] and sentiment.tags["git_commit"]
    forecasts = {
        m.name for m in client.search_registered_models() if m.name.startswith("sales_forecast_org_")
    }
    assert forecasts == {f"sales_forecast_org_{org}" for org in with_sales}
