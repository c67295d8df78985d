"""The promotion ledger and alerts (delivery, escalation, ack, Airflow notifier) on SQLite and PostgreSQL.

Webhook delivery goes to a real HTTP server on localhost that records what it receives.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from serving_support import free_port

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.errors import NotFoundError
from neuracrm_mlops.monitoring.notifier import NeuraCRMAlertNotifier, dag_failure_callback
from neuracrm_mlops.store.alerts import (
    AlertStateError,
    acknowledge,
    deliver,
    escalate_overdue,
    get_alert,
    list_alerts,
    raise_alert,
    resolve,
)
from neuracrm_mlops.store.db.schema import PromotionLedgerEntry, utcnow
from neuracrm_mlops.store.ledger import (
    actor_for_cli,
    actor_for_dag,
    champion_history,
    champion_moves,
    latest_entries,
    previous_champion,
    record_change,
)

WEBHOOK_SECRET_PATH = "/services/T000/B000/secret-token"


@dataclass
class Receiver:
    """A local webhook: records each POSTed JSON body, answers with the queued status codes (then 200)."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.bodies.append(json.loads(self.rfile.read(length)))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"nope")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{WEBHOOK_SECRET_PATH}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def fast_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    """No webhook unless a test sets one; three attempts with a tiny backoff."""
    monkeypatch.delenv("NEURACRM_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("NEURACRM_ALERT_ESCALATE_MINUTES", raising=False)
    monkeypatch.setenv("NEURACRM_ALERT_WEBHOOK_RETRIES", "3")
    monkeypatch.setenv("NEURACRM_ALERT_WEBHOOK_BACKOFF_SECONDS", "0.01")
    monkeypatch.setenv("NEURACRM_ALERT_WEBHOOK_TIMEOUT_SECONDS", "2")
    reset_settings()


def use_webhook(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("NEURACRM_ALERT_WEBHOOK_URL", url)
    reset_settings()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}{WEBHOOK_SECRET_PATH}"


ACCURACY_ALERT: dict[str, Any] = {
    "kind": "accuracy_below_floor",
    "severity": "critical",
    "title": "lead_scoring live accuracy 0.7123 < floor 0.8",
    "message": "Live accuracy over the last 1,200 labelled outcomes fell below the floor.",
    "dedup_key": "accuracy:lead_scoring",
    "model_name": "lead_scoring",
    "model_version": "7",
    "organization_id": 12,
    "metrics": {"accuracy": np.float64(0.7123), "accuracy_floor": 0.8, "labelled": np.int64(1200)},
    "action_taken": "rolled back lead_scoring to v6 (champion)",
    "runbook": "Check the drift report for lead_scoring, then retrain: `neuracrm-mlops train lead_scoring`.",
    "links": {
        "dag_run": "http://airflow.local/dags/monitor/runs/scheduled__2026-03-14",
        "mlflow_version": "http://mlflow.local/#/models/lead_scoring/versions/7",
    },
}


# --- promotion ledger ----------------------------------------------------------------------------


def test_ledger_appends_and_lists_newest_first_with_plain_json_metrics(engine: sa.Engine) -> None:
    register = record_change(
        engine,
        actor="dag:train_lead_scoring/run-1",
        model_name="lead_scoring",
        action="register",
        reason="new version passed the gates",
        to_version=5,
        metrics={"accuracy": np.float64(0.91), "n": np.int64(300), "auc": float("nan"), "cm": np.eye(2)},
    )
    canary = record_change(
        engine,
        actor="dag:rollout/run-2",
        model_name="lead_scoring",
        action="canary",
        reason="step 1",
        alias="challenger",
        to_version="5",
        weight=0.1,
    )
    record_change(engine, actor="cli:ops", model_name="sentiment", action="hold", reason="not enough labels")

    entries = latest_entries(engine, model_name="lead_scoring")
    assert [e.id for e in entries] == [canary, register]
    assert entries[0].weight == 0.1 and entries[0].alias == "challenger"
    assert entries[1].to_version == "5"
    assert entries[1].metrics == {"accuracy": 0.91, "n": 300, "auc": None, "cm": [[1.0, 0.0], [0.0, 1.0]]}
    assert [e.model_name for e in latest_entries(engine)] == ["sentiment", "lead_scoring", "lead_scoring"]
    assert len(latest_entries(engine, limit=1)) == 1


def test_ledger_row_shares_the_callers_transaction(engine: sa.Engine) -> None:
    with pytest.raises(RuntimeError, match="alias change failed"), engine.begin() as conn:
        record_change(conn, actor="cli:ops", model_name="m", action="promote", reason="x", to_version="2")
        raise RuntimeError("alias change failed")
    assert latest_entries(engine) == []
    with engine.begin() as conn:
        entry_id = record_change(conn, actor="cli:ops", model_name="m", action="promote", reason="x")
    assert [e.id for e in latest_entries(engine)] == [entry_id]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"action": "delete"}, "action must be one of"),
        ({"weight": 1.5}, "between 0 and 1"),
        ({"weight": float("nan")}, "between 0 and 1"),
        ({"reason": " "}, "reason"),
        ({"actor": ""}, "actor"),
    ],
)
def test_ledger_refuses_bad_changes(engine: sa.Engine, changes: dict[str, Any], problem: str) -> None:
    arguments: dict[str, Any] = {"actor": "cli:ops", "model_name": "m", "action": "canary", "reason": "r"}
    with pytest.raises(ValueError, match=problem):
        record_change(engine, **(arguments | changes))
    assert latest_entries(engine) == []


def test_ledger_refuses_update_and_delete(engine: sa.Engine) -> None:
    record_change(engine, actor="cli:ops", model_name="m", action="promote", reason="canary passed")
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.update(PromotionLedgerEntry).values(reason="rewritten"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.delete(PromotionLedgerEntry))
    assert [e.reason for e in latest_entries(engine)] == ["canary passed"]


def _champion(engine: sa.Engine, action: str, from_version: str | None, to_version: str) -> None:
    record_change(
        engine,
        actor="dag:rollout/r",
        model_name="lead_scoring",
        action=action,
        alias="champion",
        from_version=from_version,
        to_version=to_version,
        reason=action,
    )


def test_previous_champion_walks_back_over_promotions_and_rollbacks(engine: sa.Engine) -> None:
    _champion(engine, "promote", None, "1")
    _champion(engine, "promote", "1", "2")
    assert previous_champion(engine, "lead_scoring", current_version="2") == "1"
    _champion(engine, "promote", "2", "3")
    # rows that do not move the champion alias are ignored
    record_change(engine, actor="a", model_name="lead_scoring", action="canary", alias="challenger",
                  from_version="3", to_version="4", weight=0.5, reason="step")  # fmt: skip
    record_change(engine, actor="a", model_name="other", action="promote", alias="champion",
                  from_version="8", to_version="9", reason="other model")  # fmt: skip
    assert previous_champion(engine, "lead_scoring", current_version="3") == "2"
    _champion(engine, "rollback", "3", "2")
    # after rolling back from 3, the champion before 2 is 1: the rolled-back 3 is never offered
    assert previous_champion(engine, "lead_scoring", current_version="2") == "1"
    assert previous_champion(engine, "lead_scoring", current_version="3") == "2"
    assert previous_champion(engine, "lead_scoring", current_version=1) is None
    assert previous_champion(engine, "lead_scoring", current_version="42") is None
    assert previous_champion(engine, "other", current_version="9") == "8"  # ledger started mid-history


def test_previous_champion_after_the_runbooks_undo_is_the_version_before_the_rollback(
    engine: sa.Engine,
) -> None:
    """promote v2, promote v3, rollback (-> v2), rollback --to 3 (-> v3): the ledger's v2 -> v3 counts."""
    _champion(engine, "promote", None, "2")
    _champion(engine, "promote", "2", "3")
    _champion(engine, "rollback", "3", "2")
    assert previous_champion(engine, "lead_scoring", current_version="2") is None  # v3 was rolled back
    _champion(engine, "rollback", "2", "3")
    assert previous_champion(engine, "lead_scoring", current_version="3") == "2"
    history = champion_history(engine, "lead_scoring", current_version="3")
    assert [(e.version, e.rolled_back) for e in history.earlier] == [("2", False)]
    with engine.begin() as conn:  # inside a transaction, its own rows count
        _champion_in(conn, "rollback", "3", "2")
        assert champion_moves(conn, "lead_scoring")[-1] == ("rollback", "3", "2")
        assert previous_champion(conn, "lead_scoring", current_version="2") is None


def _champion_in(conn: sa.Connection, action: str, from_version: str, to_version: str) -> None:
    record_change(
        conn,
        actor="dag:monitor_models/r",
        model_name="lead_scoring",
        action=action,
        alias="champion",
        from_version=from_version,
        to_version=to_version,
        reason=action,
    )


def test_actor_strings_name_the_dag_run_or_the_os_user() -> None:
    context = {"dag": SimpleNamespace(dag_id="rollout"), "run_id": "manual__2026-03-14"}
    assert actor_for_dag(context) == "dag:rollout/manual__2026-03-14"
    assert actor_for_dag("monitor", "scheduled__1") == "dag:monitor/scheduled__1"
    with pytest.raises(ValueError, match="run_id"):
        actor_for_dag("monitor")
    assert actor_for_cli() == f"cli:{getpass.getuser()}"


# --- alerts: dedup and delivery --------------------------------------------------------------------


def test_repeated_incident_counts_up_and_pages_the_webhook_once(
    engine: sa.Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, receiver.url)
    first = raise_alert(engine, **ACCURACY_ALERT)
    second = raise_alert(engine, **ACCURACY_ALERT)
    assert first.new and not second.new and second.id == first.id and second.occurrences == 2
    open_alerts = list_alerts(engine, open_only=True)
    assert [(a.id, a.occurrences) for a in open_alerts] == [(first.id, 2)]

    assert len(receiver.bodies) == 1
    payload = receiver.bodies[0]
    blocks_text = json.dumps(payload["blocks"])
    for text in (payload["text"], blocks_text):
        assert "0.7123" in text and "floor 0.8" in text and "1,200" in text
        assert "rolled back lead_scoring to v6" in text
        assert "neuracrm-mlops train lead_scoring" in text
        assert "lead_scoring v7" in text and "12" in text
    assert "CRITICAL" in payload["text"]
    assert "<http://mlflow.local/#/models/lead_scoring/versions/7|mlflow_version>" in blocks_text
    assert "http://airflow.local/dags/monitor/runs/scheduled__2026-03-14" in payload["text"]
    assert {b["type"] for b in payload["blocks"]} >= {"header", "section", "context"}

    alert = get_alert(engine, first.id)
    assert alert.delivery_status == "delivered" and alert.delivery_attempts == 1
    assert alert.delivered_at is not None and alert.last_delivery_error is None
    assert alert.metrics["accuracy"] == 0.7123 and alert.metrics["labelled"] == 1200


def test_a_repeat_carries_the_latest_action_and_runbook_and_pages_again_only_when_asked(
    engine: sa.Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open incident seen again must not keep an earlier occurrence's "already done" line: the
    stored alert, ``alerts --open`` and an escalation page show what the latest occurrence did."""
    use_webhook(monkeypatch, receiver.url)
    rolled_back = {**ACCURACY_ALERT, "action_taken": "champion rolled back from v7 to v6 automatically"}
    first = raise_alert(engine, **rolled_back)
    kept = {
        **ACCURACY_ALERT,
        "title": "lead_scoring v7: live accuracy below the floor (again)",
        "action_taken": "no automatic rollback: previous v6 could not be measured; v7 keeps serving",
        "runbook": "Nothing was changed: `neuracrm-mlops rollback lead_scoring --to 6`.",
    }
    second = raise_alert(engine, **kept)
    assert second.id == first.id and not second.new
    stored = get_alert(engine, first.id)
    assert (stored.title, stored.action_taken, stored.runbook) == (
        kept["title"],
        kept["action_taken"],
        kept["runbook"],
    )
    assert len(receiver.bodies) == 1  # counting a repeat does not page
    third = raise_alert(engine, **rolled_back, page_repeat=True)  # this occurrence moved the champion
    assert third.id == first.id and third.occurrences == 3
    assert len(receiver.bodies) == 2
    assert "champion rolled back from v7 to v6 automatically" in receiver.bodies[1]["text"]
    assert "seen 3 time(s)" in receiver.bodies[1]["text"]


def test_webhook_that_is_down_marks_delivery_failed_without_raising(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, closed_port_url())
    ref = raise_alert(engine, **ACCURACY_ALERT)
    alert = get_alert(engine, ref.id)
    assert alert.delivery_status == "failed"
    assert alert.delivery_attempts == 3
    assert alert.last_delivery_error is not None and "attempt 3/3" in alert.last_delivery_error
    assert "secret-token" not in alert.last_delivery_error  # the webhook path is a secret
    # nobody was paged, so a repeat of the incident tries again
    raise_alert(engine, **ACCURACY_ALERT)
    assert get_alert(engine, ref.id).delivery_attempts == 6


def test_webhook_server_errors_are_retried_and_client_errors_are_not(
    engine: sa.Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, receiver.url)
    receiver.statuses[:] = [500, 503]
    ref = raise_alert(engine, **ACCURACY_ALERT)
    alert = get_alert(engine, ref.id)
    assert (alert.delivery_status, alert.delivery_attempts, len(receiver.bodies)) == ("delivered", 3, 3)

    receiver.statuses[:] = [400]
    assert deliver(ref.id, engine=engine) == "failed"
    alert = get_alert(engine, ref.id)
    assert (alert.delivery_status, alert.delivery_attempts, len(receiver.bodies)) == ("failed", 4, 4)
    assert alert.last_delivery_error is not None and "HTTP 400" in alert.last_delivery_error


def test_without_a_webhook_the_alert_goes_to_the_log_only(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="neuracrm_mlops.store.alerts"):
        ref = raise_alert(engine, **ACCURACY_ALERT)
    alert = get_alert(engine, ref.id)
    assert alert.delivery_status == "log_only" and alert.delivery_attempts == 0
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Runbook: Check the drift report" in logged and "accuracy: 0.7123 (floor 0.8)" in logged


def test_raise_alert_can_skip_delivery(
    engine: sa.Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, receiver.url)
    ref = raise_alert(engine, **ACCURACY_ALERT, deliver=False)
    assert get_alert(engine, ref.id).delivery_status == "pending" and receiver.bodies == []


# --- alerts: acknowledge, resolve, escalate --------------------------------------------------------


def test_acknowledge_and_resolve_follow_the_lifecycle(engine: sa.Engine) -> None:
    ref = raise_alert(engine, **ACCURACY_ALERT)
    acked = acknowledge(engine, ref.id, by="alice")
    assert acked.status == "acknowledged" and acked.acked_by == "alice" and acked.acked_at is not None
    assert acknowledge(engine, ref.id, by="bob").acked_by == "alice"  # a second ack changes nothing
    resolved = resolve(engine, ref.id, by="bob")
    assert resolved.status == "resolved" and resolved.resolved_by == "bob"
    with pytest.raises(AlertStateError, match=f"alert {ref.id} is already resolved \\(by bob"):
        acknowledge(engine, ref.id, by="carol")
    with pytest.raises(AlertStateError, match="already resolved"):
        resolve(engine, ref.id, by="carol")
    with pytest.raises(NotFoundError, match="no alert with id 999999"):
        acknowledge(engine, 999_999, by="carol")
    assert list_alerts(engine, open_only=True) == []
    reopened = raise_alert(engine, **ACCURACY_ALERT)  # the incident comes back: a new alert
    assert reopened.new and reopened.id != ref.id
    assert [a.id for a in list_alerts(engine)] == [reopened.id, ref.id]


def test_unacknowledged_critical_alerts_escalate_once(
    engine: sa.Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURACRM_ALERT_ESCALATE_MINUTES", "30")
    use_webhook(monkeypatch, receiver.url)
    unacked = raise_alert(engine, **ACCURACY_ALERT)
    acked = raise_alert(engine, **(ACCURACY_ALERT | {"dedup_key": "accuracy:sentiment"}))
    warning = raise_alert(engine, **(ACCURACY_ALERT | {"dedup_key": "drift:x", "severity": "warning"}))
    acknowledge(engine, acked.id, by="alice")
    assert len(receiver.bodies) == 3
    now = utcnow()

    assert escalate_overdue(engine, now=now + dt.timedelta(minutes=10)) == []
    assert escalate_overdue(engine, now=now + dt.timedelta(minutes=31)) == [unacked.id]
    assert escalate_overdue(engine, now=now + dt.timedelta(minutes=90)) == []  # once

    assert len(receiver.bodies) == 4
    assert receiver.bodies[-1]["text"].startswith("ESCALATED: [CRITICAL]")
    assert "ESCALATED" in receiver.bodies[-1]["blocks"][0]["text"]["text"]
    assert get_alert(engine, unacked.id).escalated_at is not None
    assert get_alert(engine, acked.id).escalated_at is None
    assert get_alert(engine, warning.id).escalated_at is None


# --- the Airflow notifier --------------------------------------------------------------------------


def _failure_context(exception: BaseException) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="train_lead_scoring",
        task_id="train",
        try_number=3,
        log_url="http://airflow.local/dags/train_lead_scoring/runs/manual__1/tasks/train?try_number=3",
    )
    return {
        "dag": SimpleNamespace(dag_id="train_lead_scoring"),
        "ti": ti,
        "task_instance": ti,
        "run_id": "manual__1",
        "exception": exception,
    }


def test_notifier_raises_one_critical_alert_per_failing_task_and_counts_repeats(
    engine: sa.Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, receiver.url)
    NeuraCRMAlertNotifier()(_failure_context(ValueError("holdout is empty")))
    [alert] = list_alerts(engine)
    assert (alert.kind, alert.severity, alert.status, alert.occurrences) == (
        "dag_failed",
        "critical",
        "open",
        1,
    )
    assert alert.dedup_key == "dag_failed:train_lead_scoring:train"
    assert "train_lead_scoring.train" in alert.title
    assert "manual__1" in alert.message and "ValueError: holdout is empty" in alert.message
    assert alert.links == {
        "task_log": "http://airflow.local/dags/train_lead_scoring/runs/manual__1/tasks/train?try_number=3"
    }
    assert alert.runbook and "clear the failed task" in alert.runbook
    assert alert.metrics["try_number"] == 3

    dag_failure_callback(_failure_context(RuntimeError("again")))
    [alert] = list_alerts(engine)
    assert alert.occurrences == 2 and "RuntimeError: again" in alert.message
    assert len(receiver.bodies) == 1  # the repeat counted up without a second page


def test_a_failure_that_already_raised_its_own_alert_is_not_paged_twice(engine: sa.Engine) -> None:
    from neuracrm_mlops.errors import NeuraCRMError

    class AlreadyAlerted(NeuraCRMError):
        already_alerted = True

    try:
        try:
            raise AlreadyAlerted("leads validation failed: expect_column_values_to_be_between")
        except AlreadyAlerted as cause:
            raise RuntimeError("the task failed") from cause  # as the DAG task re-raises it
    except RuntimeError as wrapped:
        NeuraCRMAlertNotifier()(_failure_context(wrapped))
    assert list_alerts(engine) == []
    dag_failure_callback(_failure_context(RuntimeError("an unexpected crash")))
    assert [a.kind for a in list_alerts(engine)] == ["dag_failed"]


def test_failure_callbacks_never_raise_when_alerting_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NEURACRM_DB_URL", "postgresql://nobody@127.0.0.1:1/nothing")
    reset_settings()
    with caplog.at_level(logging.ERROR, logger="neuracrm_mlops.monitoring.notifier"):
        NeuraCRMAlertNotifier()(_failure_context(ValueError("boom")))
        dag_failure_callback({"not": "an airflow context"})
    assert sum("could not raise the NeuraCRM alert" in r.getMessage() for r in caplog.records) == 2
