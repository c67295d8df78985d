"""Canary rollout and rollback of voice scenarios on call success (release.scenario_rollout), on the
embedded stores: two registered versions, calls logged as POST /voice/context logs them (a
``predictions`` row per context) and analysed as POST /voice/events records them (an ``outcomes`` row
per context, ``successful`` / ``unsuccessful``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from voice_scenarios import log_calls as calls
from voice_scenarios import register_two_versions

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.release import scenario_rollout
from neuracrm_mlops.store import ledger, prompt_registry
from neuracrm_mlops.store.alerts import list_alerts
from neuracrm_mlops.store.registry import configure_mlflow

SCENARIO = "sales_outbound"
PROMPT = "voice_scenario.sales_outbound"
ACTOR = "test:scenario_rollout"
MIN = 10


@pytest.fixture
def stores(home_engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[sa.Engine, Any]:
    """v1 champion, v2 challenger at weight 0 (a changed line), NEURACRM_MIN_OUTCOMES=10."""
    monkeypatch.setenv("NEURACRM_MIN_OUTCOMES", str(MIN))
    reset_settings()
    client = configure_mlflow()
    register_two_versions(home_engine, tmp_path, actor=ACTOR)
    return home_engine, client


def live(client: Any) -> prompt_registry.LiveScenario:
    return prompt_registry.live_scenario(client, SCENARIO)


def actions(engine: sa.Engine) -> list[tuple[str, str | None, float | None]]:
    rows = reversed(ledger.latest_entries(engine, model_name=PROMPT, limit=100))
    return [(e.action, e.to_version, e.weight) for e in rows]


def test_call_success_joins_analysed_calls_of_one_version_since_a_time(stores: tuple[sa.Engine, Any]) -> None:
    engine, _ = stores
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    calls(engine, "1", "champion", 5, 5, at=old)
    calls(engine, "1", "champion", 3, 1, unanalysed=2)
    calls(engine, "2", "challenger", 1, 0)
    calls(engine, "1", "fallback", 4, 0)  # the fallback route is no version's answer
    recent = scenario_rollout.call_success(
        engine, SCENARIO, "1", dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    )
    assert (recent.calls, recent.successful, recent.requests, recent.rate) == (4, 3, 6, 0.75)
    ever = scenario_rollout.call_success(engine, SCENARIO, "1", None)
    assert (ever.calls, ever.successful) == (14, 8)


def test_a_good_challenger_moves_10_50_100_and_is_promoted(stores: tuple[sa.Engine, Any]) -> None:
    engine, client = stores
    calls(engine, "1", "champion", 9, 1, at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))  # before
    started = scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client)
    assert (started.action, started.weight) == ("start", 0.10)
    assert live(client).canary_weight == pytest.approx(0.10)
    assert scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client).action == "noop"

    # not baked: the challenger has too few analysed calls, and calls before the rollout do not count
    calls(engine, "2", "challenger", 5, 0, unanalysed=20)
    calls(engine, "1", "champion", 9, 1)
    waiting = scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client)
    assert waiting.action == "wait", waiting.reason
    assert waiting.metrics["challenger_calls"] == 5 and waiting.metrics["champion_calls"] == 10
    assert live(client).canary_weight == pytest.approx(0.10)

    calls(engine, "2", "challenger", 5, 1)  # 10 of 11 over the step: not worse than 0.9
    step = scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client)
    assert (step.action, step.weight) == ("next_step", 0.50), step.reason
    assert live(client).canary_weight == pytest.approx(0.50)

    # the new step counts from its own start: the 10% calls are not enough for the 50% step
    assert scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client).action == "wait"
    calls(engine, "2", "challenger", 9, 1)
    assert scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client).weight == 1.0
    calls(engine, "2", "challenger", 10, 0)
    promoted = scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client)
    assert promoted.action == "promote", promoted.reason
    assert (promoted.champion, promoted.challenger) == ("2", None)

    now = live(client)
    assert now.champion is not None and now.champion.version == "2"
    assert now.previous is not None and now.previous.version == "1"
    assert now.challenger is None and prompt_registry.canary_weight(client, SCENARIO) == 0.0
    assert actions(engine) == [
        ("promote", "1", None),
        ("register", "2", 0.0),
        ("canary", "2", 0.10),
        ("canary", "2", 0.50),
        ("canary", "2", 1.0),
        ("promote", "2", 0.0),
    ]
    assert ledger.champion_moves(engine, PROMPT)[-1][1:] == ("1", "2")
    assert {e.state for e in ledger.latest_entries(engine, model_name=PROMPT)} == {"done"}
    assert list_alerts(engine) == []


def test_a_degraded_challenger_is_rejected_at_10_percent(stores: tuple[sa.Engine, Any]) -> None:
    engine, client = stores
    scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client)
    calls(engine, "1", "champion", 18, 2)
    calls(engine, "2", "challenger", 4, 8)
    rejected = scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client)
    assert (rejected.action, rejected.weight, rejected.challenger) == ("reject", 0.0, None)
    assert "call success rate 0.333" in rejected.reason
    assert "worse than the champion's 0.900" in rejected.reason

    now = live(client)
    assert now.champion is not None and now.champion.version == "1" and now.challenger is None
    assert prompt_registry.canary_weight(client, SCENARIO) == 0.0
    assert prompt_registry.get_version(client, SCENARIO, "2").tags["status"] == "rejected"
    assert actions(engine)[-1] == ("reject", "2", 0.0)
    [alert] = list_alerts(engine)
    assert (alert.kind, alert.model_name, alert.model_version) == ("canary_failed", PROMPT, "2")
    assert "register" in (alert.runbook or "") and "tagged rejected" in (alert.action_taken or "")
    assert scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client).action == "noop"


def test_bake_status_counts_analysed_calls_in_the_judge_windows_until_the_deadline(
    stores: tuple[sa.Engine, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, client = stores
    ready, detail = scenario_rollout.bake_status(SCENARIO, engine=engine, client=client)
    assert ready and detail.endswith("no canary running"), detail

    calls(engine, "1", "champion", 20, 0, at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))  # before
    scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client)
    calls(engine, "1", "champion", 9, 1)
    calls(engine, "2", "challenger", 4, 0, unanalysed=30)  # answered, mostly not analysed yet
    ready, detail = scenario_rollout.bake_status(SCENARIO, engine=engine, client=client)
    assert not ready, detail
    assert f"challenger v2: 4/{MIN} analysed calls since the step began" in detail
    assert f"champion v1: 10/{MIN} since the rollout began" in detail
    assert "baking" in detail and "deadline" in detail
    # the judge agrees: not baked, nothing moves
    assert scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client).action == "wait"

    calls(engine, "2", "challenger", 6, 0)
    ready, detail = scenario_rollout.bake_status(SCENARIO, engine=engine, client=client)
    assert ready and "baked" in detail and f"10/{MIN}" in detail, detail

    # a new step counts from its own canary row: not baked again until its deadline
    assert scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client).action == "next_step"
    ready, detail = scenario_rollout.bake_status(SCENARIO, engine=engine, client=client)
    assert not ready and f"challenger v2: 0/{MIN}" in detail, detail
    monkeypatch.setenv("NEURACRM_BAKE_DEADLINE_HOURS", "0")
    reset_settings()
    ready, detail = scenario_rollout.bake_status(SCENARIO, engine=engine, client=client)
    assert ready and "deadline" in detail and "passed" in detail, detail


def test_with_approval_the_final_step_waits_for_raise_to_final_step(
    stores: tuple[sa.Engine, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURACRM_ROLLOUT_APPROVAL", "lead_scoring,voice_scenario")
    monkeypatch.setenv("NEURACRM_ROLLOUT_STEPS", "20,100")
    reset_settings()
    assert scenario_rollout.approval_required()
    engine, client = stores
    missing = scenario_rollout.raise_to_final_step(
        SCENARIO, ACTOR, reason="approved", engine=engine, client=client
    )
    assert missing.action == "noop" and "no canary running" in missing.reason
    assert scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client).weight == 0.20
    calls(engine, "1", "champion", 9, 1)
    calls(engine, "2", "challenger", 9, 1)
    before = actions(engine)

    waiting = scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client)
    assert (waiting.action, waiting.weight) == ("awaiting_approval", 0.20), waiting.reason
    assert "awaiting a reviewer's approval before 100%" in waiting.reason
    assert live(client).canary_weight == pytest.approx(0.20) and actions(engine) == before

    raised = scenario_rollout.raise_to_final_step(
        SCENARIO,
        "dag:rollout_voice_scenario/r1",
        reason="final step approved by ana",
        engine=engine,
        client=client,
    )
    assert (raised.action, raised.weight, raised.challenger) == ("next_step", 1.0, "2")
    assert live(client).canary_weight == 1.0
    assert actions(engine)[-1] == ("canary", "2", 1.0)
    [row] = ledger.latest_entries(engine, model_name=PROMPT, limit=1)
    assert (row.actor, row.reason, row.state) == (
        "dag:rollout_voice_scenario/r1",
        "final step approved by ana",
        "done",
    )
    again = scenario_rollout.raise_to_final_step(
        SCENARIO, ACTOR, reason="approved twice", engine=engine, client=client
    )
    assert again.action == "noop" and len(actions(engine)) == len(before) + 1

    # the final step is judged on its own window: it promotes once baked
    assert scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client).action == "wait"
    calls(engine, "2", "challenger", 10, 0)
    assert scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client).action == "promote"


def test_abort_takes_the_challenger_out_and_rejects_it_only_when_asked(stores: tuple[sa.Engine, Any]) -> None:
    engine, client = stores
    nothing = scenario_rollout.abort(SCENARIO, ACTOR, reason="no", engine=engine, client=client)
    assert nothing.action == "noop"  # v2 is registered at weight 0: no canary runs
    assert live(client).challenger is not None

    scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client)
    aborted = scenario_rollout.abort(
        SCENARIO, ACTOR, reason="stopped by on-call", reject=False, engine=engine, client=client
    )
    assert (aborted.action, aborted.weight, aborted.champion, aborted.challenger) == ("abort", 0.0, "1", None)
    now = live(client)
    assert now.challenger is None and prompt_registry.canary_weight(client, SCENARIO) == 0.0
    assert "status" not in prompt_registry.get_version(client, SCENARIO, "2").tags
    assert actions(engine)[-1] == ("abort", "2", 0.0)
    assert (
        scenario_rollout.abort(SCENARIO, ACTOR, reason="again", engine=engine, client=client).action == "noop"
    )

    prompt_registry.set_alias(client, SCENARIO, "challenger", "2")  # rolled out again, then rejected
    scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client)
    rejected = scenario_rollout.abort(
        SCENARIO, ACTOR, reason="final step rejected by ana (Reject)", engine=engine, client=client
    )
    assert (rejected.action, rejected.weight, rejected.challenger) == ("reject", 0.0, None)
    tags = prompt_registry.get_version(client, SCENARIO, "2").tags
    assert (tags["status"], tags["reason"]) == ("rejected", "final step rejected by ana (Reject)")
    assert live(client).challenger is None and prompt_registry.canary_weight(client, SCENARIO) == 0.0
    assert actions(engine)[-3:] == [
        ("abort", "2", 0.0),
        ("canary", "2", 0.10),
        ("reject", "2", 0.0),
    ]
    assert all(e.state == "done" for e in ledger.latest_entries(engine, model_name=PROMPT))
    assert list_alerts(engine) == []  # a reviewer's decision, not a failed canary


def _promote_v2(engine: sa.Engine, client: Any) -> None:
    """v1 answered calls well (on record), then v2 became champion through a full rollout."""
    calls(engine, "1", "champion", 18, 2, at=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client)
    for _ in range(3):
        calls(engine, "1", "champion", 9, 1)
        calls(engine, "2", "challenger", 9, 1)
        scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client)
    champion = live(client).champion
    assert champion is not None and champion.version == "2"


def test_a_champion_below_the_floor_is_rolled_back_with_one_alert(stores: tuple[sa.Engine, Any]) -> None:
    engine, client = stores
    _promote_v2(engine, client)
    first = scenario_rollout.monitor(SCENARIO, ACTOR, engine=engine, client=client)
    assert first.action == "ok", first.reason  # v2's calls during its rollout were good

    calls(engine, "2", "champion", 2, 28)  # v2 drops: 29 of 60 over the window
    rolled = scenario_rollout.monitor(SCENARIO, ACTOR, engine=engine, client=client)
    assert (rolled.action, rolled.champion) == ("rollback", "1"), rolled.reason
    assert "not worse than the champion's" in rolled.reason
    now = live(client)
    assert now.champion is not None and now.champion.version == "1" and now.previous is None
    assert actions(engine)[-1] == ("rollback", "1", None)
    left = prompt_registry.get_version(client, SCENARIO, "2").tags
    assert left["status"] == "rolled_back" and "not worse than the champion's" in left["reason"]
    [alert] = list_alerts(engine)
    assert (alert.kind, alert.severity, alert.model_version) == ("accuracy_below_floor", "critical", "2")
    assert "rolled back from v2 to v1" in (alert.action_taken or "")
    assert "v1 answers every call now" in (alert.runbook or "")

    # the next pass judges v1 (its calls in the window are good): no second alert, no second move
    again = scenario_rollout.monitor(SCENARIO, ACTOR, engine=engine, client=client)
    assert again.action == "ok", again.reason
    assert len(list_alerts(engine)) == 1 and actions(engine)[-1] == ("rollback", "1", None)


def test_a_champion_below_the_floor_is_kept_when_previous_is_worse_and_pages_once(
    stores: tuple[sa.Engine, Any],
) -> None:
    engine, client = stores
    _promote_v2(engine, client)
    calls(engine, "1", "champion", 0, 60, at=dt.datetime.now(dt.UTC) - dt.timedelta(days=60))  # v1 was worse
    calls(engine, "2", "champion", 10, 30)
    kept = scenario_rollout.monitor(SCENARIO, ACTOR, engine=engine, client=client)
    assert (kept.action, kept.champion) == ("keep", "2"), kept.reason
    assert "worse than the champion's" in kept.reason
    before = actions(engine)
    again = scenario_rollout.monitor(SCENARIO, ACTOR, engine=engine, client=client)
    assert again.action == "keep" and again.alert_id == kept.alert_id
    [alert] = list_alerts(engine)
    assert alert.occurrences == 2 and "keeps serving" in (alert.action_taken or "")
    assert "scenario register" in (alert.runbook or "")
    assert actions(engine) == before  # nothing moved
    champion = live(client).champion
    assert champion is not None and champion.version == "2"


def test_monitor_waits_for_enough_calls(stores: tuple[sa.Engine, Any]) -> None:
    engine, client = stores
    calls(engine, "1", "champion", 0, MIN - 1)
    result = scenario_rollout.monitor(SCENARIO, ACTOR, engine=engine, client=client)
    assert result.action == "insufficient_data", result.reason
    assert list_alerts(engine) == []


def test_start_needs_a_challenger(stores: tuple[sa.Engine, Any]) -> None:
    engine, client = stores
    prompt_registry.delete_alias(client, SCENARIO, "challenger")
    with pytest.raises(scenario_rollout.ScenarioRolloutError, match="no challenger"):
        scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client)


def test_the_cli_starts_advances_and_monitors_a_scenario_canary(stores: tuple[sa.Engine, Any]) -> None:
    from click.testing import CliRunner

    from neuracrm_mlops.ops.cli import main

    engine, _ = stores
    runner = CliRunner()
    started = runner.invoke(main, ["scenario", "rollout", SCENARIO])
    assert started.exit_code == 0, started.output
    assert f"{SCENARIO}: start (canary weight 10%)" in started.output
    waiting = runner.invoke(main, ["scenario", "rollout", SCENARIO])
    assert waiting.exit_code == 0 and f"{SCENARIO}: wait" in waiting.output, waiting.output
    calls(engine, "1", "champion", 18, 2)
    calls(engine, "2", "challenger", 4, 8)
    rejected = runner.invoke(main, ["scenario", "rollout", SCENARIO])
    assert rejected.exit_code == 0 and f"{SCENARIO}: reject (canary weight 0%)" in rejected.output
    assert "; alert " in rejected.output
    nothing = runner.invoke(main, ["scenario", "rollout", SCENARIO])  # no challenger left
    assert nothing.exit_code == 1 and "has no challenger to roll out" in nothing.output, nothing.output
    monitored = runner.invoke(main, ["scenario", "monitor", SCENARIO])
    assert monitored.exit_code == 0 and f"{SCENARIO}: ok" in monitored.output, monitored.output
    bad = runner.invoke(main, ["scenario", "monitor", "Sales Outbound"])
    assert bad.exit_code == 1 and "lower-case letters" in bad.output
