"""The monitor's alerts are true and actionable, through the real monitoring path (a trained model,
its stored reference profile, logged predictions, ``monitor_model``) on SQLite and PostgreSQL:

- scoring a sample of the training data itself raises no drift alert (lead scoring, sentiment);
- a check that cannot run raises its own ``check_failed`` warning (never silence, never "no drift"),
  resolved with a note once the check runs again;
- a drift alert whose next check finds no drift is resolved with a note;
- a rollback resolves the condition alerts of the version it took out of service, with a note from
  the ledger, and leaves the rollback's own alert open; every accuracy figure names its window.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
import sqlalchemy as sa

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.inference.prediction_log import prediction_row
from neuracrm_mlops.release import rollout
from neuracrm_mlops.release.outcomes import simulate_outcomes
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.alerts import list_alerts, raise_alert
from neuracrm_mlops.store.db.schema import Prediction


def _insert(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(Prediction), rows)


def _lead_rows(version: str, leads: list[dict[str, Any]], prefix: str, **fields: Any) -> list[dict[str, Any]]:
    rng = random.Random(5)
    return [
        prediction_row(
            model_name="lead_scoring",
            model_version=version,
            route="champion",
            request_id=f"{prefix}-{i}",
            organization_id=1,
            entity_id=f"{prefix}-lead-{i}",
            features=lead,
            output={"probability": rng.random()},
            latency_ms=5.0,
            fallback=False,
            **fields,
        )
        for i, lead in enumerate(leads)
    ]


def _open(engine: sa.Engine, kind: str) -> list[Any]:
    return [a for a in list_alerts(engine, open_only=True, limit=200) if a.kind == kind]


def _all(engine: sa.Engine, kind: str) -> list[Any]:
    return [a for a in list_alerts(engine, limit=200) if a.kind == kind]


@pytest.mark.slow
def test_lead_traffic_from_the_training_data_raises_no_drift_and_failed_checks_say_so(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.artifacts

    from neuracrm_mlops.monitoring.monitor import monitor_model
    from neuracrm_mlops.ops.demo import demo_leads
    from neuracrm_mlops.store.seeding import seed_database
    from neuracrm_mlops.training.train import Lineage, train_lead_scoring

    monkeypatch.setenv("NEURACRM_ACCURACY_FLOOR", "0.5")
    monkeypatch.setenv("NEURACRM_MIN_OUTCOMES", "20")
    reset_settings()
    seed_database(20, 12, 3, leads_per_org=60, engine=engine)
    trained = train_lead_scoring(Lineage.for_cli("lead_scoring"), engine=engine)
    assert trained.version, trained
    version = trained.version
    client = registry.configure_mlflow()
    client.set_registered_model_alias("lead_scoring", "champion", version)

    # 1. a sample of the training leads, as the demo and the service send and log them: no drift
    leads = random.Random(1).sample(demo_leads(engine), 400)
    _insert(engine, _lead_rows(version, leads, "train"))
    simulate_outcomes(engine, "lead_scoring", agree=1.0)
    report = monitor_model("lead_scoring", actor="cli:test", engine=engine)
    assert report.drift is not None and report.drift["tested_features"] >= 10, report.drift
    assert report.drift["drifted_features"] == [], report.drift["summary"]
    assert not _all(engine, "data_drift") and not _all(engine, "check_failed")
    assert (
        report.verdict == "ok" and "live accuracy 1.000 over the last 400 labelled outcomes" in report.reason
    )
    assert "NEURACRM_MONITOR_WINDOW_HOURS=168)" in report.reason

    # 2. the reference profile cannot be read (MLflow unreachable): a check_failed warning, not "no drift"
    def unreachable(uri: str) -> Any:
        raise ConnectionError(f"MLflow at {uri} refused the connection")

    load_dict = mlflow.artifacts.load_dict
    monkeypatch.setattr(mlflow.artifacts, "load_dict", unreachable)
    report = monitor_model("lead_scoring", actor="cli:test", engine=engine)
    assert report.drift is None and "refused the connection" in report.check_failures["drift"]
    [failed] = _open(engine, "check_failed")
    assert failed.severity == "warning" and failed.model_version == version
    assert failed.metrics["check"] == "drift" and "refused the connection" in failed.message
    assert f"lead_scoring v{version}: the drift check could not run" == failed.title
    # MLflow reachable again (not monkeypatch.undo(): that would also undo the per-test data dir)
    monkeypatch.setattr(mlflow.artifacts, "load_dict", load_dict)

    # 3. the bias attribute is absent from the served features: its own check_failed
    monkeypatch.setenv("NEURACRM_BIAS_ATTRIBUTE", "household_income")
    reset_settings()
    report = monitor_model("lead_scoring", actor="cli:test", engine=engine)
    assert "household_income" in report.check_failures["bias"]
    assert {a.metrics["check"] for a in _open(engine, "check_failed")} == {"bias"}  # drift ran again
    [resolved] = [a for a in _all(engine, "check_failed") if a.status == "resolved"]
    assert resolved.metrics["check"] == "drift" and "ran again" in (resolved.resolution_note or "")
    monkeypatch.setenv("NEURACRM_BIAS_ATTRIBUTE", "region")
    reset_settings()

    # 4. drifted traffic raises data_drift; once it has left the window, the next check resolves it
    drifted = [{**lead, "company_employees": 90_000, "email_opens": 500} for lead in leads[:200]]
    _insert(engine, _lead_rows(version, drifted, "drifted"))
    with engine.begin() as conn:  # the in-distribution rows leave the window: only drift is judged
        conn.execute(
            sa.update(Prediction)
            .where(Prediction.request_id.like("train-%"))
            .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
        )
    report = monitor_model("lead_scoring", actor="cli:test", engine=engine)
    [drift_alert] = _open(engine, "data_drift")
    assert {"company_employees", "email_opens"} <= set(drift_alert.metrics["drifted_features"])
    assert "served_from" in drift_alert.metrics and "tested features" in drift_alert.title
    assert not _open(engine, "check_failed")  # the bias check ran: resolved too
    with engine.begin() as conn:
        conn.execute(
            sa.update(Prediction)
            .where(Prediction.request_id.like("drifted-%"))
            .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
        )
    _insert(engine, _lead_rows(version, leads, "again"))
    report = monitor_model("lead_scoring", actor="cli:test", engine=engine)
    assert report.drift is not None and report.drift["drifted_features"] == []
    assert not _open(engine, "data_drift")
    [done] = _all(engine, "data_drift")
    assert done.resolved_by == "monitor" and "found no drift" in (done.resolution_note or "")


@pytest.mark.slow
def test_sentiment_traffic_from_the_training_texts_raises_no_drift(engine: sa.Engine) -> None:
    from neuracrm_mlops.monitoring.monitor import monitor_model
    from neuracrm_mlops.store.seeding import seed_database
    from neuracrm_mlops.training.train import Lineage, load_labelled_interactions, train_sentiment

    seed_database(10, 12, 3, leads_per_org=20, engine=engine)
    trained = train_sentiment(Lineage.for_cli("sentiment"), engine=engine)
    assert trained.version, trained
    client = registry.configure_mlflow()
    client.set_registered_model_alias("sentiment", "champion", trained.version)
    texts = [str(t) for t in load_labelled_interactions(engine)["text"]]
    sample = random.Random(2).sample(texts, min(400, len(texts)))
    rows = [
        prediction_row(
            model_name="sentiment",
            model_version=trained.version,
            route="champion",
            request_id=f"s-{i}",
            organization_id=1,
            entity_id=f"interaction-{i}",
            features={"text": text, "chars": len(text)},  # what the service logs (predictor._text_features)
            output={"label": "neutral"},
            latency_ms=3.0,
            fallback=False,
        )
        for i, text in enumerate(sample)
    ]
    _insert(engine, rows)
    report = monitor_model("sentiment", actor="cli:test", engine=engine)
    assert report.drift is not None and report.drift["tested_features"] == 1, report.drift
    assert report.drift["drifted_features"] == [], report.drift["summary"]
    assert not [a for a in list_alerts(engine) if a.kind in ("data_drift", "check_failed")]


def test_a_rollback_resolves_the_conditions_of_the_version_it_took_out_and_keeps_its_own_alert_open(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.monitoring.monitor import monitor_model

    monkeypatch.setenv("NEURACRM_MIN_OUTCOMES", "20")
    reset_settings()
    client = registry.configure_mlflow()
    registry.ensure_registered_model(client, "lead_scoring", "test")
    for _ in range(2):
        client.create_model_version("lead_scoring", "file:///nonexistent", tags={"status": "test"})
    client.set_model_version_tag("lead_scoring", "1", "holdout_accuracy", "0.910000")
    for version in ("1", "2"):
        client.set_registered_model_alias("lead_scoring", "challenger", version)
        rollout.promote("lead_scoring", actor="dag:rollout_lead_scoring/t", reason="passed", engine=engine)
    # what earlier passes left open on v2: two conditions, and one unrelated canary action
    for kind in ("data_drift", "bias"):
        raise_alert(
            engine,
            kind=kind,
            severity="warning",
            title=f"lead_scoring v2: {kind}",
            message="seen earlier",
            dedup_key=f"{kind}:lead_scoring:2",
            model_name="lead_scoring",
            model_version="2",
            deliver=False,
        )
    # v2 degrades: every outcome says the opposite of its answer
    rows = _lead_rows("2", [{"region": "europe"}] * 30, "degraded")
    for row in rows:
        row["output"] = {"probability": 0.9}
    _insert(engine, rows)
    simulate_outcomes(engine, "lead_scoring", degrade=["2"], agree=1.0, degraded_agree=0.0)

    report = monitor_model("lead_scoring", actor="dag:monitor_models/t", engine=engine)
    assert report.rolled_back_to == "1"
    assert report.drift is None and report.bias is None  # v2 is no longer checked: it does not serve
    open_alerts = list_alerts(engine, open_only=True)
    assert [(a.kind, a.model_version) for a in open_alerts] == [("accuracy_below_floor", "2")]
    [critical] = open_alerts
    assert critical.metrics["rolled_back_to"] == "1" and critical.metrics["window_start"]
    for text in (critical.title, critical.message):
        assert "live accuracy 0.000 over the last 30 labelled outcomes (window " in text, text
        assert "NEURACRM_MONITOR_WINDOW_HOURS=168" in text
    resolved = [a for a in list_alerts(engine) if a.status == "resolved"]
    assert sorted(a.kind for a in resolved) == ["bias", "data_drift"]
    for alert in resolved:
        assert alert.resolved_by == "monitor"
        assert (alert.resolution_note or "").startswith("v2 no longer serves: rolled back to v1 at "), alert


def test_only_condition_alerts_resolve_themselves_and_every_resolution_says_why(engine: sa.Engine) -> None:
    from neuracrm_mlops.store.alerts import (
        get_alert,
        render_text,
        resolve,
        resolve_cleared,
        resolve_not_serving,
    )

    def alert(kind: str, version: str, **metrics: Any) -> int:
        return raise_alert(
            engine,
            kind=kind,
            severity="warning",
            title=f"{kind} v{version}",
            message="m",
            dedup_key=f"{kind}:lead_scoring:{version}",
            model_name="lead_scoring",
            model_version=version,
            metrics=metrics,
            deliver=False,
        ).id

    drift = alert("data_drift", "2")
    kept = alert("accuracy_below_floor", "2", rolled_back_to="1")  # reports the rollback it did
    no_action = alert("accuracy_below_floor", "3")  # nothing was done: a condition
    canary = alert("canary_failed", "4")
    assert resolve_cleared(engine, "accuracy_below_floor:lead_scoring:2", note="back above") is None
    assert resolve_cleared(engine, "data_drift:lead_scoring:2", note="condition cleared: no drift") == drift
    assert resolve_cleared(engine, "data_drift:lead_scoring:2", note="again") is None  # once
    resolved = resolve_not_serving(engine, "lead_scoring", {"1"}, note_for=lambda v: f"v{v} no longer serves")
    assert resolved == [no_action]
    assert get_alert(engine, no_action).resolution_note == "v3 no longer serves"
    assert get_alert(engine, kept).status == get_alert(engine, canary).status == "open"
    manual = resolve(engine, canary, by="oncall", note="retrained, v5 on its way")
    assert manual.resolution_note == "retrained, v5 on its way"
    assert "Resolved by oncall at " in render_text(manual) and "retrained, v5" in render_text(manual)
    assert get_alert(engine, drift).resolution_note == "condition cleared: no drift"
