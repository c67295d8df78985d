"""Atomic moves of voice scenarios (release.scenario_rollout through release.state) on the real
PostgreSQL with a real MLflow prompt registry: a scenario move that dies between its prompt-registry
calls leaves its ledger row pending, and ``reconcile_pending`` finishes it (a promote) or reverts it
(a canary step), with one ``rollout_reconciled`` alert whose runbook gives the scenario's commands;
a second reconcile finds nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from voice_scenarios import PROMPT, SCENARIO, log_calls, register_two_versions

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.release import scenario_rollout
from neuracrm_mlops.release.state import FAILPOINT_EXIT_CODE, reconcile_pending
from neuracrm_mlops.store import ledger, prompt_registry
from neuracrm_mlops.store.alerts import list_alerts
from neuracrm_mlops.store.registry import configure_mlflow

# the CRM store on PostgreSQL only (its advisory locks are the production ones; the models' reconcile
# tests cover SQLite's file locks)
pytestmark = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

ACTOR = "test:scenario_reconcile"
MIN = 2


@pytest.fixture
def stores(
    engine: sa.Engine,
    neuracrm_home: Path,
    empty_stores: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[sa.Engine, Any]:
    """The CRM store on PostgreSQL (NEURACRM_DB_URL, which the crashing subprocess inherits), an
    empty MLflow registry at NEURACRM_HOME; v1 champion and v2 challenger at weight 0."""
    monkeypatch.setenv("NEURACRM_MIN_OUTCOMES", str(MIN))
    reset_settings()
    neuracrm_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(empty_stores[1], neuracrm_home / "mlflow.sqlite")
    client = configure_mlflow()
    register_two_versions(engine, tmp_path, actor=ACTOR)
    return engine, client


def _judge_crashing_at(failpoint: str) -> None:
    """``scenario_rollout.judge`` in a fresh process (the same stores) that dies at ``failpoint``."""
    env = {**os.environ, "NEURACRM_ROLLOUT_FAILPOINT": failpoint}
    code = (
        "from neuracrm_mlops.release import scenario_rollout\n"
        f"scenario_rollout.judge({SCENARIO!r}, 'dag:rollout_voice_scenario/r1')\n"
        "raise SystemExit('the failpoint was not reached')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == FAILPOINT_EXIT_CODE, done.stderr[-3000:]
    assert f"exiting at {failpoint}" in done.stderr


def _aliases(client: Any) -> tuple[str | None, ...]:
    """(champion, challenger, previous) versions."""
    live = prompt_registry.live_scenario(client, SCENARIO)
    return tuple(v.version if v else None for v in (live.champion, live.challenger, live.previous))


def _weight_tag(client: Any) -> str | None:
    return dict(client.get_prompt(PROMPT).tags).get(prompt_registry.CANARY_WEIGHT_TAG)


def _rows(engine: sa.Engine) -> list[tuple[str, str]]:
    return [(e.action, e.state) for e in reversed(ledger.latest_entries(engine, model_name=PROMPT))]


def _reconciled(engine: sa.Engine) -> list[Any]:
    return [a for a in list_alerts(engine) if a.kind == "rollout_reconciled"]


def test_a_scenario_promote_cut_after_its_first_call_is_finished_by_reconcile(
    stores: tuple[sa.Engine, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, client = stores
    monkeypatch.setenv("NEURACRM_ROLLOUT_STEPS", "100")  # one step: the first judgement promotes
    reset_settings()
    assert scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client).weight == 1.0
    log_calls(engine, "1", "champion", MIN, 0)
    log_calls(engine, "2", "challenger", MIN, 0)

    _judge_crashing_at("promote:after_previous_alias")

    # previous moved first: serving is unchanged (v2 at 100% as challenger), the ledger row pending
    assert _aliases(client) == ("1", "2", "1")
    assert _weight_tag(client) == "1"
    assert _rows(engine)[-1] == ("promote", "pending")
    [pending] = ledger.pending_entries(engine)
    assert [c["label"] for c in pending.registry_plan or []] == [
        "previous_alias",
        "champion_alias",
        "challenger_alias",
        "weight",
    ]
    assert ledger.champion_moves(engine, PROMPT) == [("promote", None, "1")]  # pending is not history

    report = reconcile_pending(actor="dag:monitor_models/m1", engine=engine).as_dict()

    assert (report["pending"], report["finished"], report["reverted"], report["failed"]) == (1, 1, 0, [])
    assert _aliases(client) == ("2", None, "1")
    assert _weight_tag(client) == "0"
    assert _rows(engine)[-1] == ("promote", "done")
    assert ledger.champion_moves(engine, PROMPT)[-1] == ("promote", "1", "2")
    [alert] = _reconciled(engine)
    assert (alert.severity, alert.model_name, alert.model_version) == ("warning", PROMPT, "2")
    assert alert.dedup_key == f"rollout_reconciled:{pending.id}"
    assert "an interrupted promote was finished" in alert.title
    assert "1 of its 4 registry calls had been made (alias previous -> v1)" in alert.message
    assert str(alert.action_taken).startswith("the move was finished by dag:monitor_models/m1")
    assert "alias champion -> v2" in str(alert.action_taken)
    runbook = str(alert.runbook)
    assert "`neuracrm-mlops status`" in runbook
    assert f"`neuracrm-mlops scenario monitor {SCENARIO}`" in runbook
    assert "neuracrm-mlops rollback" not in runbook and "neuracrm-mlops train" not in runbook
    assert alert.links["mlflow_prompt"].endswith(f"/#/prompts/{PROMPT}")

    again = reconcile_pending(actor="dag:monitor_models/m2", engine=engine).as_dict()
    assert (again["pending"], again["repaired"]) == (0, [])
    assert len(_reconciled(engine)) == 1
    # the next monitor pass judges v2 as champion
    assert scenario_rollout.monitor(SCENARIO, ACTOR, engine=engine, client=client).action == "ok"


def test_a_scenario_canary_step_cut_after_its_weight_is_reverted_and_the_rollout_goes_on(
    stores: tuple[sa.Engine, Any],
) -> None:
    engine, client = stores
    scenario_rollout.start(SCENARIO, ACTOR, engine=engine, client=client)
    log_calls(engine, "1", "champion", MIN, 0)
    log_calls(engine, "2", "challenger", MIN, 0)

    _judge_crashing_at("canary:after_weight")

    # serving sends v2 half the calls, but the ledger never started the 50% step
    assert _weight_tag(client) == "0.5"
    assert _rows(engine)[-2:] == [("canary", "done"), ("canary", "pending")]
    ready, detail = scenario_rollout.bake_status(SCENARIO, engine=engine, client=client)
    assert ready and f"{MIN}/{MIN} analysed calls since the step began" in detail, detail

    report = reconcile_pending(actor="dag:monitor_models/m1", engine=engine).as_dict()

    assert (report["pending"], report["finished"], report["reverted"]) == (1, 0, 1)
    assert _weight_tag(client) == "0.1"  # back where the interrupted step started
    assert _aliases(client) == ("1", "2", None)
    assert _rows(engine)[-1] == ("canary", "reverted")
    [alert] = _reconciled(engine)
    assert "an interrupted canary was undone" in alert.title
    assert "tag neuracrm.canary_weight = 0.1" in str(alert.action_taken)
    assert f"`neuracrm-mlops scenario rollout {SCENARIO}`" in str(alert.runbook)
    assert "rollout_voice_scenario DAG" in str(alert.runbook)
    assert reconcile_pending(actor="dag:monitor_models/m2", engine=engine).as_dict()["pending"] == 0

    # the step is judged again on the same window (the reverted row started nothing) and moves on
    step = scenario_rollout.judge(SCENARIO, ACTOR, engine=engine, client=client)
    assert (step.action, step.weight) == ("next_step", 0.5), step.reason
    assert _rows(engine)[-1] == ("canary", "done") and _weight_tag(client) == "0.5"
    assert len(_reconciled(engine)) == 1
