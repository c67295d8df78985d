"""The rollout and monitoring library on SQLite and the real PostgreSQL, with a real MLflow registry:
live numbers from the prediction log, holds without data, and rollbacks that cannot happen twice."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.inference.prediction_log import prediction_row
from neuracrm_mlops.release import rollout
from neuracrm_mlops.release.live_stats import version_stats
from neuracrm_mlops.release.outcomes import simulate_outcomes
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.db.schema import Alert, Prediction, PromotionLedgerEntry


def _register(versions: int) -> Any:
    """``lead_scoring`` with ``versions`` versions (no artifacts: these tests never load them)."""
    client = registry.configure_mlflow()
    registry.ensure_registered_model(client, "lead_scoring", "test")
    for _ in range(versions):
        client.create_model_version(
            "lead_scoring", "file:///nonexistent", tags={"status": "test", "servable": "true"}
        )
    return client


def _log(
    engine: sa.Engine,
    version: str,
    n: int,
    *,
    probability: float,
    fallback: bool = False,
    route: str = "champion",
    prefix: str | None = None,
) -> None:
    rows = [
        prediction_row(
            model_name="lead_scoring",
            model_version=version,
            route="fallback" if fallback else route,
            request_id=f"r-{version}-{i}",
            organization_id=1,
            entity_id=f"{prefix or 'v' + version}-lead-{i}{'-fb' if fallback else ''}",
            features={"region": "emea"},
            output={"probability": probability},
            latency_ms=5.0 + i,
            fallback=fallback,
        )
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(Prediction), rows)


def test_live_stats_join_logged_predictions_with_their_outcomes(engine: sa.Engine) -> None:
    import datetime as dt

    _log(engine, "1", 40, probability=0.9)
    _log(engine, "2", 40, probability=0.9)
    _log(engine, "2", 10, probability=0.3, fallback=True)  # v2 failed 10 times: the fallback answered
    summary = simulate_outcomes(engine, "lead_scoring", degrade=["2"], agree=1.0, degraded_agree=0.0)
    assert (summary.written, summary.degraded) == (80, 40)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    stats = version_stats(engine, "lead_scoring", ["1", "2"], since=since)
    assert (stats["1"].accuracy, stats["1"].outcomes, stats["1"].error_rate) == (1.0, 40, 0.0)
    assert (stats["2"].accuracy, stats["2"].outcomes, stats["2"].requests) == (0.0, 40, 50)
    assert stats["2"].error_rate == pytest.approx(0.2)
    assert stats["1"].p95_latency_ms == pytest.approx(5.0 + 39 * 0.95 + 0.0, abs=0.1)
    again = simulate_outcomes(engine, "lead_scoring", agree=1.0)
    assert again.written == 0  # outcomes are written once per entity


def test_a_rollout_without_outcomes_holds_alerts_after_the_deadline_and_never_promotes(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURACRM_BAKE_DEADLINE_HOURS", "0")
    reset_settings()
    client = _register(2)
    client.set_registered_model_alias("lead_scoring", "champion", "1")
    client.set_registered_model_alias("lead_scoring", "challenger", "2")
    started = rollout.start_rollout("lead_scoring", actor="cli:test", engine=engine)
    assert (started.action, started.weight) == ("start", 0.1)
    assert rollout.bake_status("lead_scoring", engine=engine).deadline_passed
    for attempt in (1, 2):
        held = rollout.judge_step("lead_scoring", actor="cli:test", engine=engine)
        assert held.action == "hold" and held.alert_id is not None, held
        assert "deadline" in held.reason
        with engine.connect() as conn:
            alert = conn.execute(
                sa.select(Alert.kind, Alert.occurrences).where(Alert.id == held.alert_id)
            ).one()
        assert alert.kind == "canary_inconclusive" and alert.occurrences == attempt
    state = rollout.model_state("lead_scoring")
    assert (state["champion"], state["challenger"], state["canary_weight"]) == ("1", "2", 0.1)


def test_two_rollbacks_at_once_move_the_champion_only_once(engine: sa.Engine, tmp_path: Path) -> None:
    from neuracrm_mlops.store import ledger

    client = _register(2)
    client.set_registered_model_alias("lead_scoring", "champion", "1")
    ledger.record_change(
        engine,
        actor="cli:test",
        model_name="lead_scoring",
        action="promote",
        alias="champion",
        to_version="1",
        reason="v1",
    )
    client.set_registered_model_alias("lead_scoring", "champion", "2")
    ledger.record_change(
        engine,
        actor="cli:test",
        model_name="lead_scoring",
        action="promote",
        alias="champion",
        from_version="1",
        to_version="2",
        reason="v2",
    )
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def monitor_run(i: int) -> None:
        try:
            barrier.wait()
            result = rollout.rollback(
                "lead_scoring",
                actor=f"dag:monitor_models/run-{i}",
                reason="live accuracy below the floor",
                expected_champion="2",
                engine=engine,
            )
            results.append(result.action)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=monitor_run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(results) == ["noop", "rollback"]
    assert rollout.model_state("lead_scoring")["champion"] == "1"
    with engine.connect() as conn:
        actions = conn.scalars(sa.select(PromotionLedgerEntry.action).order_by(PromotionLedgerEntry.id)).all()
    assert actions == ["promote", "promote", "rollback"]


@pytest.mark.parametrize("answer", ["Approve", "Reject"])
def test_a_rollout_needing_approval_waits_before_the_final_step_then_follows_the_review(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    from neuracrm_mlops.ops.pipelines import apply_review

    monkeypatch.setenv("NEURACRM_ROLLOUT_APPROVAL", "lead_scoring")
    monkeypatch.setenv("NEURACRM_ROLLOUT_STEPS", "50,100")
    monkeypatch.setenv("NEURACRM_MIN_OUTCOMES", "5")
    reset_settings()
    client = _register(2)
    client.set_registered_model_alias("lead_scoring", "champion", "1")
    client.set_registered_model_alias("lead_scoring", "challenger", "2")
    assert rollout.start_rollout("lead_scoring", actor="cli:test", engine=engine).weight == 0.5
    _log(engine, "1", 10, probability=0.9)
    _log(engine, "2", 10, probability=0.9)
    simulate_outcomes(engine, "lead_scoring", agree=1.0)
    waiting = rollout.judge_step("lead_scoring", actor="dag:rollout_model/run", engine=engine)
    assert waiting.action == "awaiting_approval" and waiting.weight == 0.5
    assert "awaiting a reviewer's approval" in waiting.reason
    assert rollout.model_state("lead_scoring")["canary_weight"] == 0.5  # nothing moved yet

    review = {"chosen_options": [answer], "responded_by_user": "alice"}
    done = apply_review("lead_scoring", review, actor="dag:rollout_model/run")
    state = rollout.model_state("lead_scoring")
    if answer == "Approve":
        assert (done["action"], state["challenger"], state["canary_weight"]) == ("next_step", "2", 1.0)
    else:
        assert (done["action"], state["challenger"], state["canary_weight"]) == ("abort", None, 0.0)
        assert client.get_model_version("lead_scoring", "2").tags["status"] == "rejected"
    with engine.connect() as conn:
        last = conn.execute(
            sa.select(PromotionLedgerEntry.action, PromotionLedgerEntry.reason).order_by(
                PromotionLedgerEntry.id.desc()
            )
        ).first()
    assert last is not None and "alice" in last.reason
    assert last.action == ("canary" if answer == "Approve" else "reject")
    assert apply_review("lead_scoring", None, actor="x")["action"] == "none"  # no review was asked


def test_shadow_predictions_are_judged_on_the_champions_entities_and_never_decide_the_outcome(
    engine: sa.Engine,
) -> None:
    import datetime as dt

    _log(engine, "1", 30, probability=0.9, prefix="same")  # served by the champion
    _log(engine, "2", 30, probability=0.1, prefix="same", route="shadow")  # the challenger, in shadow
    summary = simulate_outcomes(engine, "lead_scoring", agree=1.0)
    assert summary.written == 30  # one outcome per entity, from the served prediction
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    stats = version_stats(engine, "lead_scoring", ["1", "2"], since=since)
    assert (stats["1"].accuracy, stats["1"].outcomes) == (1.0, 30)
    assert (stats["2"].accuracy, stats["2"].outcomes) == (0.0, 30)  # same entities, opposite labels


@pytest.mark.slow
def test_monitoring_flags_drift_against_the_training_reference_and_bias_across_regions(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.monitoring.monitor import monitor_model
    from neuracrm_mlops.store.seeding import seed_database
    from neuracrm_mlops.training.train import Lineage, train_lead_scoring

    monkeypatch.setenv("NEURACRM_ACCURACY_FLOOR", "0.5")
    monkeypatch.setenv("NEURACRM_MIN_OUTCOMES", "20")
    reset_settings()
    seed_database(20, 12, 3, leads_per_org=60, engine=engine)
    trained = train_lead_scoring(Lineage.for_cli("lead_scoring"), engine=engine)
    assert trained.version, trained
    client = registry.configure_mlflow()
    client.set_registered_model_alias("lead_scoring", "champion", trained.version)
    # live traffic unlike the training data (every lead from a huge company with 500 email opens),
    # and a model that says "converts" for every EMEA lead and never for an APAC one
    rows = [
        prediction_row(
            model_name="lead_scoring",
            model_version=trained.version,
            route="champion",
            request_id=f"drift-{i}",
            organization_id=1,
            entity_id=f"drift-lead-{i}",
            features={"company_employees": 90_000, "email_opens": 500, "region": region},
            output={"probability": 0.9 if region == "emea" else 0.1},
            latency_ms=4.0,
            fallback=False,
        )
        for i, region in enumerate(["emea", "apac"] * 60)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(Prediction), rows)
    simulate_outcomes(engine, "lead_scoring", agree=1.0)
    report = monitor_model("lead_scoring", actor="cli:test", engine=engine)
    assert report.verdict == "ok" and report.outcomes == 120
    assert report.drift is not None
    assert {"company_employees", "email_opens"} <= set(report.drift["drifted_features"])
    assert report.bias is not None and report.bias["breaches"]
    assert "demographic parity" in " ".join(report.bias["breaches"]).lower()
    with engine.connect() as conn:
        kinds = set(conn.scalars(sa.select(Alert.kind)).all())
    assert {"data_drift", "bias"} <= kinds


# --- the runbook's undo, then a degradation: the rollback target comes from the alias history -------


def _promote_through_the_library(client: Any, engine: sa.Engine, version: str) -> None:
    client.set_registered_model_alias("lead_scoring", "challenger", version)
    rollout.promote(
        "lead_scoring", actor="dag:rollout_model/test", reason=f"v{version} passed", engine=engine
    )


def _degrade(engine: sa.Engine, version: str, prefix: str, n: int = 30) -> None:
    """``n`` served predictions of ``version`` whose outcomes all say the opposite (live accuracy 0)."""
    _log(engine, version, n, probability=0.9, prefix=prefix)
    simulate_outcomes(engine, "lead_scoring", degrade=[version], agree=1.0, degraded_agree=0.0)


@pytest.fixture
def two_versions_promoted(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> Any:
    """v2 then v3 promoted through the library (v1 never served); v2's recorded holdout is 0.91."""
    monkeypatch.setenv("NEURACRM_MIN_OUTCOMES", "20")
    reset_settings()
    client = _register(3)
    client.set_model_version_tag("lead_scoring", "2", "holdout_accuracy", "0.910000")
    _promote_through_the_library(client, engine, "2")
    _promote_through_the_library(client, engine, "3")
    return client


def test_after_the_runbooks_undo_a_degraded_champion_is_rolled_back_to_the_version_before_it(
    engine: sa.Engine, two_versions_promoted: Any
) -> None:
    from neuracrm_mlops.monitoring.monitor import monitor_model
    from neuracrm_mlops.store.alerts import get_alert

    manual = rollout.rollback("lead_scoring", actor="cli:oncall", reason="v3 looks off", engine=engine)
    assert manual.champion == "2"
    undo = rollout.rollback(
        "lead_scoring", actor="cli:oncall", reason="false alarm", to_version="3", engine=engine
    )
    assert undo.champion == "3"
    _degrade(engine, "3", "after-undo")

    report = monitor_model("lead_scoring", actor="dag:monitor_models/test", engine=engine)

    assert report.verdict == "below_floor" and report.accuracy == 0.0
    assert report.rolled_back_to == "2" and report.retrain, report
    assert rollout.model_state("lead_scoring")["champion"] == "2"
    [alert_id] = report.alerts
    alert = get_alert(engine, alert_id)
    action, runbook = str(alert.action_taken), str(alert.runbook)
    assert action.startswith("champion rolled back from v3 to v2 automatically"), action
    # the numbers behind it: v3's live accuracy against the floor, v2's measure
    assert re.search(r"live accuracy 0\.000 over (the last )?30 (labelled )?outcomes", action), action
    assert "floor 0.80" in action
    assert "v2 measured 0.910 on its recorded holdout" in action
    assert "`neuracrm-mlops rollback lead_scoring --to 3`" in runbook  # the exact undo
    assert "rollback MODEL" not in runbook and "--to VERSION" not in runbook  # no placeholders
    with engine.connect() as conn:
        moves = conn.execute(
            sa.select(
                PromotionLedgerEntry.action,
                PromotionLedgerEntry.from_version,
                PromotionLedgerEntry.to_version,
            )
            .where(PromotionLedgerEntry.alias == "champion")
            .order_by(PromotionLedgerEntry.id)
        ).all()
    assert [tuple(m) for m in moves] == [
        ("promote", None, "2"),
        ("promote", "2", "3"),
        ("rollback", "3", "2"),
        ("rollback", "2", "3"),
        ("rollback", "3", "2"),
    ]


def test_a_repeat_of_the_incident_after_the_undo_says_what_this_pass_did_not_what_an_earlier_one_did(
    engine: sa.Engine, two_versions_promoted: Any
) -> None:
    from neuracrm_mlops.monitoring.monitor import monitor_model
    from neuracrm_mlops.store.alerts import get_alert

    client = two_versions_promoted
    _degrade(engine, "3", "first-drop")
    first = monitor_model("lead_scoring", actor="dag:monitor_models/test", engine=engine)
    assert first.rolled_back_to == "2"
    # on-call undoes the automatic rollback with the command the alert gave, leaving the alert open
    undo = get_alert(engine, first.alerts[0]).runbook
    assert undo is not None and "`neuracrm-mlops rollback lead_scoring --to 3`" in undo
    rollout.rollback("lead_scoring", actor="cli:oncall", reason="undo", to_version="3", engine=engine)
    assert client.get_model_version("lead_scoring", "2").tags["status"] == "previous"  # not blamed
    client.delete_model_version_tag("lead_scoring", "2", "holdout_accuracy")  # v2 cannot be measured now
    _degrade(engine, "3", "second-drop")

    second = monitor_model("lead_scoring", actor="dag:monitor_models/test", engine=engine)

    assert second.rolled_back_to is None and not second.retrain
    assert rollout.model_state("lead_scoring")["champion"] == "3"
    assert second.alerts == first.alerts  # the same open incident, counted again
    alert = get_alert(engine, second.alerts[0])
    action, runbook = str(alert.action_taken), str(alert.runbook)
    assert alert.occurrences == 2
    assert action.startswith("no automatic rollback: v2 was champion before v3;"), action
    assert "previous v2 could not be measured; v3 keeps serving" in action
    assert "rolled back from" not in action and "moved back" not in runbook and "serves now" not in runbook
    assert "Nothing was changed: v3 keeps serving" in runbook
    assert "`neuracrm-mlops train lead_scoring`" in runbook
    assert "`neuracrm-mlops rollback lead_scoring --to 2`" in runbook


def test_repeated_degradations_do_not_ping_pong_into_a_version_rolled_back_before(
    engine: sa.Engine, two_versions_promoted: Any
) -> None:
    from neuracrm_mlops.monitoring.monitor import monitor_model
    from neuracrm_mlops.store.alerts import get_alert

    client = two_versions_promoted
    client.set_model_version_tag("lead_scoring", "3", "holdout_accuracy", "0.950000")
    _degrade(engine, "3", "v3-drop")
    assert monitor_model("lead_scoring", actor="cli:oncall", engine=engine).rolled_back_to == "2"
    _degrade(engine, "2", "v2-drop")

    report = monitor_model("lead_scoring", actor="cli:oncall", engine=engine)

    # v3 is the only earlier champion left and it failed live already: its 0.95 holdout is no evidence
    assert report.verdict == "below_floor" and report.rolled_back_to is None
    assert rollout.model_state("lead_scoring")["champion"] == "2"
    alert = get_alert(engine, report.alerts[-1])
    assert alert.model_version == "2"
    action, runbook = str(alert.action_taken), str(alert.runbook)
    assert action.startswith("no automatic rollback: v3 is the only earlier champion of v2 left"), action
    assert "was itself rolled back as champion before" in action
    assert "`neuracrm-mlops rollback lead_scoring --to 3`" in runbook
    # a plain rollback refuses it too, naming the command that restores it on purpose
    with pytest.raises(rollout.RolloutError, match="`neuracrm-mlops rollback lead_scoring --to 3`"):
        rollout.rollback("lead_scoring", actor="cli:oncall", reason="try", engine=engine)
    assert rollout.rollback_target("lead_scoring", "2", engine=engine) is None


def test_after_a_rollback_to_an_older_version_a_degradation_goes_to_the_one_never_rolled_back(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.monitoring.monitor import monitor_model

    monkeypatch.setenv("NEURACRM_MIN_OUTCOMES", "20")
    reset_settings()
    client = _register(3)
    for version in ("1", "2", "3"):
        client.set_model_version_tag("lead_scoring", version, "holdout_accuracy", "0.900000")
        _promote_through_the_library(client, engine, version)
    older = rollout.rollback(
        "lead_scoring", actor="cli:oncall", reason="back to v1", to_version="1", engine=engine
    )
    assert older.champion == "1" and "to undo: `neuracrm-mlops rollback lead_scoring --to 3`" in older.reason
    assert rollout.model_state("lead_scoring")["previous"] == "2"
    _degrade(engine, "1", "v1-drop")

    report = monitor_model("lead_scoring", actor="cli:oncall", engine=engine)

    assert report.rolled_back_to == "2"  # v3 was rolled back; v2 never was
    with pytest.raises(rollout.RolloutError, match="already the champion"):
        rollout.rollback("lead_scoring", actor="cli:oncall", reason="x", to_version="2", engine=engine)
