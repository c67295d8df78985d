"""Atomic rollout state on SQLite and the real PostgreSQL with a real MLflow registry: a move that
dies between its registry calls leaves its ledger row pending, and reconcile finishes or reverts it
(one alert per row, nothing the second time); the ledger's trigger allows only pending -> done."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.release import rollout
from neuracrm_mlops.release import state as rollout_state
from neuracrm_mlops.release.state import FAILPOINT_EXIT_CODE, FAILPOINTS, reconcile_pending
from neuracrm_mlops.store import ledger, registry
from neuracrm_mlops.store.db.schema import Alert, PromotionLedgerEntry

NAME = "lead_scoring"


def _register(versions: int) -> Any:
    """``lead_scoring`` with ``versions`` versions (no artifacts: nothing here loads them)."""
    client = registry.configure_mlflow()
    registry.ensure_registered_model(client, NAME, "test")
    for _ in range(versions):
        client.create_model_version(NAME, "file:///nonexistent", tags={"status": "test", "servable": "true"})
    return client


def _promote(client: Any, engine: sa.Engine, version: str) -> None:
    client.set_registered_model_alias(NAME, "challenger", version)
    rollout.promote(NAME, actor="cli:test", reason=f"v{version} passed", engine=engine)


def _crash_in_subprocess(failpoint: str, call: str) -> None:
    """Run ``call`` (Python, with ``rollout`` imported) in a fresh process that dies at ``failpoint``."""
    env = {**os.environ, "NEURACRM_ROLLOUT_FAILPOINT": failpoint}
    code = (
        f"from neuracrm_mlops.release import rollout\n{call}\n"
        "raise SystemExit('the failpoint was not reached')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == FAILPOINT_EXIT_CODE, done.stderr[-3000:]
    assert f"exiting at {failpoint}" in done.stderr


def _rows(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(PromotionLedgerEntry.action, PromotionLedgerEntry.state).order_by(
                PromotionLedgerEntry.id
            )
        ).all()
    return [(row.action, row.state) for row in rows]


def _reconcile_alerts(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(Alert).where(Alert.kind == "rollout_reconciled")).all())


def _version_status(client: Any, version: str) -> str | None:
    return client.get_model_version(NAME, version).tags.get("status")


def test_a_promote_that_dies_after_moving_the_champion_alias_is_finished_by_reconcile(
    engine: sa.Engine,
) -> None:
    client = _register(2)
    _promote(client, engine, "1")
    client.set_registered_model_alias(NAME, "challenger", "2")
    rollout.start_rollout(NAME, actor="cli:test", engine=engine)
    assert rollout.model_state(NAME)["canary_weight"] == 0.1

    _crash_in_subprocess(
        "promote:after_champion_alias",
        "rollout.promote('lead_scoring', actor='dag:rollout_lead_scoring/r1', reason='canary passed')",
    )

    # the registry and the ledger disagree: v2 serves as champion, the ledger's history says v1
    state = rollout.model_state(NAME)
    assert (state["champion"], state["challenger"], state["previous"]) == ("2", "2", None)
    assert _rows(engine)[-1] == ("promote", "pending")
    assert ledger.champion_moves(engine, NAME) == [("promote", None, "1")]  # pending is not history

    report = reconcile_pending(actor="dag:monitor_models/m1", engine=engine).as_dict()

    assert (report["pending"], report["finished"], report["reverted"], report["failed"]) == (1, 1, 0, [])
    state = rollout.model_state(NAME)
    assert (state["champion"], state["challenger"], state["previous"]) == ("2", None, "1")
    assert (state["canary_weight"], state["canary_started_at"]) == (0.0, None)
    assert (_version_status(client, "2"), _version_status(client, "1")) == ("champion", "previous")
    assert _rows(engine)[-1] == ("promote", "done")
    assert ledger.champion_moves(engine, NAME) == [("promote", None, "1"), ("promote", "1", "2")]
    [alert] = _reconcile_alerts(engine)
    assert alert.severity == "warning" and alert.model_name == NAME
    assert alert.dedup_key == f"rollout_reconciled:{report['repaired'][0]['id']}"
    assert "was left pending" in alert.message and "1 of its" in alert.message
    assert "alias champion -> v2" in alert.message  # what was found made
    assert str(alert.action_taken).startswith("the move was finished by dag:monitor_models/m1")
    assert "`neuracrm-mlops status`" in str(alert.runbook)
    assert "`neuracrm-mlops rollback lead_scoring --to 1`" in str(alert.runbook)

    again = reconcile_pending(actor="dag:monitor_models/m2", engine=engine).as_dict()
    assert (again["pending"], again["repaired"]) == (0, [])
    assert len(_reconcile_alerts(engine)) == 1


def test_a_rollback_that_dies_after_moving_the_champion_alias_is_finished_and_never_repeated(
    engine: sa.Engine,
) -> None:
    client = _register(3)
    for version in ("1", "2", "3"):
        _promote(client, engine, version)

    _crash_in_subprocess(
        "rollback:after_champion_alias",
        "rollout.rollback('lead_scoring', actor='dag:monitor_models/r1', reason='below the floor', "
        "expected_champion='3')",
    )

    state = rollout.model_state(NAME)
    assert (state["champion"], state["previous"]) == ("2", "2")  # moved, but previous not yet
    assert _version_status(client, "3") == "champion"
    assert _rows(engine)[-1] == ("rollback", "pending")
    assert ledger.champion_moves(engine, NAME)[-1] == ("promote", "2", "3")

    report = reconcile_pending(actor="dag:monitor_models/m1", engine=engine).as_dict()

    assert (report["finished"], report["reverted"]) == (1, 0)
    state = rollout.model_state(NAME)
    assert (state["champion"], state["previous"]) == ("2", "1")
    assert (_version_status(client, "2"), _version_status(client, "3")) == ("champion", "rolled_back")
    assert ledger.champion_moves(engine, NAME)[-1] == ("rollback", "3", "2")
    [alert] = _reconcile_alerts(engine)
    assert "an interrupted rollback was finished" in alert.title
    # a second monitor that judged v3 finds the champion moved already: one rollback, not two
    again = rollout.rollback(
        NAME, actor="dag:monitor_models/r2", reason="below the floor", expected_champion="3", engine=engine
    )
    assert again.action == "noop"
    assert reconcile_pending(actor="dag:monitor_models/m2", engine=engine).as_dict()["pending"] == 0
    assert [a for a, _ in _rows(engine)].count("rollback") == 1
    assert len(_reconcile_alerts(engine)) == 1


def test_a_canary_start_that_dies_after_the_weight_is_reverted_and_the_next_move_repairs_first(
    engine: sa.Engine,
) -> None:
    client = _register(2)
    _promote(client, engine, "1")
    client.set_registered_model_alias(NAME, "challenger", "2")

    _crash_in_subprocess(
        "canary:after_weight", "rollout.start_rollout('lead_scoring', actor='dag:rollout_lead_scoring/r1')"
    )

    model = client.get_registered_model(NAME)
    assert model.tags[registry.CANARY_WEIGHT_TAG] == "0.1"  # serving routes 10% to v2 ...
    assert rollout.STEP_STARTED_TAG not in model.tags  # ... but the step never started
    assert _rows(engine)[-1] == ("canary", "pending")

    # the rollout DAG's retry starts the canary again: its lock repairs the pending row first
    started = rollout.start_rollout(NAME, actor="dag:rollout_lead_scoring/r1", engine=engine)

    assert (started.action, started.weight) == ("start", 0.1)
    assert _rows(engine)[-2:] == [("canary", "reverted"), ("canary", "done")]
    [alert] = _reconcile_alerts(engine)
    assert "an interrupted canary was undone" in alert.title
    assert "the move was reverted by dag:rollout_lead_scoring/r1" in str(alert.action_taken)
    assert "rollout_lead_scoring DAG" in str(alert.runbook)
    model = client.get_registered_model(NAME)
    assert model.tags[registry.CANARY_WEIGHT_TAG] == "0.1" and rollout.STEP_STARTED_TAG in model.tags
    assert reconcile_pending(actor="dag:monitor_models/m1", engine=engine).as_dict()["pending"] == 0


def test_a_registry_call_that_keeps_failing_leaves_the_row_pending_for_reconcile(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("NEURACRM_ALERT_WEBHOOK_BACKOFF_SECONDS", "0")
    reset_settings()
    client = _register(2)
    _promote(client, engine, "1")
    client.set_registered_model_alias(NAME, "challenger", "2")
    attempts: list[str] = []
    real = MlflowClient.delete_registered_model_alias

    def registry_down(self: Any, name: str, alias: str) -> None:
        attempts.append(alias)
        raise ConnectionError("registry unreachable")

    monkeypatch.setattr(MlflowClient, "delete_registered_model_alias", registry_down)
    with pytest.raises(ConnectionError):
        rollout.promote(NAME, actor="cli:test", reason="canary passed", engine=engine)
    assert attempts == ["challenger"] * 3  # NEURACRM_ALERT_WEBHOOK_RETRIES attempts
    assert _rows(engine)[-1] == ("promote", "pending")

    monkeypatch.setattr(MlflowClient, "delete_registered_model_alias", real)
    report = reconcile_pending(actor="dag:monitor_models/m1", engine=engine).as_dict()
    assert report["finished"] == 1
    state = rollout.model_state(NAME)
    assert (state["champion"], state["challenger"], state["previous"]) == ("2", None, "1")
    assert _rows(engine)[-1] == ("promote", "done")


# -- unit-level: the ledger's states and trigger, the retry helper, the failpoints ---------------


def _row(engine: sa.Engine, **values: Any) -> int:
    arguments: dict[str, Any] = {
        "actor": "cli:test",
        "model_name": NAME,
        "action": "promote",
        "alias": "champion",
        "reason": "r",
    }
    return ledger.record_change(engine, **(arguments | values))


def test_pending_and_reverted_rows_are_not_alias_history(engine: sa.Engine) -> None:
    _row(engine, to_version="1")
    pending = _row(engine, from_version="1", to_version="2", state="pending")
    reverted = _row(engine, from_version="1", to_version="3", state="pending")
    assert ledger.finish_change(engine, reverted, "reverted")
    assert ledger.champion_moves(engine, NAME) == [("promote", None, "1")]
    assert ledger.previous_champion(engine, NAME, current_version="2") is None
    assert [e.id for e in ledger.pending_entries(engine)] == [pending]
    assert [e.state for e in ledger.latest_entries(engine, model_name=NAME)] == [
        "reverted",
        "pending",
        "done",
    ]
    assert ledger.finish_change(engine, pending)
    assert not ledger.finish_change(engine, pending)  # already done: nothing changes
    assert ledger.champion_moves(engine, NAME)[-1] == ("promote", "1", "2")
    with pytest.raises(ValueError, match="pending or done"):
        _row(engine, state="reverted")


def test_the_ledger_trigger_allows_only_a_pending_row_to_finish(engine: sa.Engine) -> None:
    table = PromotionLedgerEntry.__table__
    done = _row(engine, to_version="1")
    pending = _row(engine, to_version="2", state="pending")
    refused = [
        sa.update(table).where(table.c.id == done).values(state="reverted"),  # a finished row
        sa.update(table).where(table.c.id == done).values(reason="rewritten"),
        sa.update(table).where(table.c.id == pending).values(reason="rewritten"),  # pending, other column
        sa.update(table).where(table.c.id == pending).values(state="done", to_version="3"),
        sa.update(table).where(table.c.id == pending).values(state="done", metrics={"x": 1}),
        sa.update(table).where(table.c.id == pending).values(state="bogus"),
        sa.delete(table).where(table.c.id == pending),
        sa.delete(table).where(table.c.id == done),
    ]
    for statement in refused:
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(statement)
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == pending).values(state="done"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == pending).values(state="pending"))
    assert [(e.to_version, e.state, e.reason) for e in ledger.latest_entries(engine)] == [
        ("2", "done", "r"),
        ("1", "done", "r"),
    ]


class _Flaky:
    """Fails ``failures`` times (with an MLflow-like ``error_code``), then returns "ok"."""

    def __init__(self, failures: int, error_code: str | None = None) -> None:
        self.failures, self.error_code, self.calls = failures, error_code, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            error = RuntimeError(f"failure {self.calls}")
            error.error_code = self.error_code  # type: ignore[attr-defined]
            raise error
        return "ok"


def test_a_registry_call_that_fails_twice_then_succeeds_is_retried_with_doubling_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEURACRM_ALERT_WEBHOOK_RETRIES", "3")
    monkeypatch.setenv("NEURACRM_ALERT_WEBHOOK_BACKOFF_SECONDS", "0.25")
    reset_settings()
    slept: list[float] = []
    flaky = _Flaky(2, "TEMPORARILY_UNAVAILABLE")
    assert rollout_state.retry_registry(flaky, what="set alias", sleep=slept.append) == "ok"
    assert (flaky.calls, slept) == (3, [0.25, 0.5])

    slept.clear()
    always = _Flaky(5)
    with pytest.raises(RuntimeError, match="failure 3"):
        rollout_state.retry_registry(always, what="set alias", sleep=slept.append)
    assert (always.calls, slept) == (3, [0.25, 0.5])

    permanent = _Flaky(1, "RESOURCE_DOES_NOT_EXIST")  # a retry cannot fix it
    with pytest.raises(RuntimeError, match="failure 1"):
        rollout_state.retry_registry(permanent, what="set alias", sleep=slept.append)
    assert permanent.calls == 1


def test_failpoints_are_named_per_move_and_unknown_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {
        "promote:after_champion_alias",
        "rollback:after_champion_alias",
        "canary:after_weight",
    } <= FAILPOINTS
    assert "reject:after_pending" in FAILPOINTS and "canary:before_done" in FAILPOINTS
    with pytest.raises(ValueError, match="unknown rollout failpoint"):
        rollout_state.failpoint("promote:after_lunch")
    monkeypatch.setenv("NEURACRM_ROLLOUT_FAILPOINT", "promote:before_done")
    reset_settings()
    rollout_state.failpoint("promote:after_pending")  # another point: nothing happens
