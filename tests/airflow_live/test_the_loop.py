"""The loop closed by asset events in the real Airflow (scheduler, LocalExecutor, api-server): no DAG
is triggered by hand anywhere here (no `airflow dags trigger`, no ``POST .../dagRuns``); DAGs are only
unpaused (and paused again at the end).

1. `neuracrm-mlops import leads` (a subprocess, as an operator runs it) announces the rows ->
   train_lead_scoring runs from that asset event -> registers the first version as challenger and
   announces it -> rollout_lead_scoring runs from the registry asset and promotes it.
2. rollout_sentiment (sentiment needs a reviewer's approval in this stack; steps 50% -> 100%; 5
   outcomes per step) runs from a registry asset event up to approve_final_step, where a reviewer
   approves over Airflow's REST API (HITL endpoints): the challenger becomes champion. A second
   challenger's run is rejected there: it is taken out of traffic and tagged rejected.

Runs after the other modules of this directory (file order): it starts each family's registry from
scratch, since the health page's versions have no artifacts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from crm_files import lead_rows, write_csv

from airflow_live.conftest import LiveAirflow
from neuracrm_mlops.inference.prediction_log import PredictionLogWriter, prediction_row
from neuracrm_mlops.ops.airflow_events import AirflowApi
from neuracrm_mlops.release import rollout
from neuracrm_mlops.release.outcomes import OutcomeIn, record_outcomes
from neuracrm_mlops.store import ledger, registry
from neuracrm_mlops.store.alerts import list_alerts
from neuracrm_mlops.store.db.engine import get_engine
from neuracrm_mlops.store.db.schema import Organization

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("airflow_live")]

CLI = Path(sys.executable).parent / "neuracrm-mlops"
T = TypeVar("T")
ASSET_TRIGGERED = "asset_triggered"


def _until(condition: Callable[[], T | None], what: str, stack: LiveAirflow, timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.assert_running()
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _ok(response: Any, *codes: int) -> Any:
    assert response.status_code in (codes or (200,)), (
        f"{response.request.method} {response.url}: {response.text}"
    )
    return response.json()


def _runs(stack: LiveAirflow, dag_id: str) -> list[dict[str, Any]]:
    body = _ok(stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100}))
    return sorted(body["dag_runs"], key=lambda run: run["run_after"])


def _tasks(stack: LiveAirflow, dag_id: str, run_id: str) -> dict[str, str | None]:
    body = _ok(
        stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    )
    return {t["task_id"]: t["state"] for t in body["task_instances"]}


def _new_run(stack: LiveAirflow, dag_id: str, before: int, timeout: float = 120) -> dict[str, Any]:
    """The first run of ``dag_id`` after the ``before`` it had: the scheduler made it."""

    def made() -> dict[str, Any] | None:
        runs = _runs(stack, dag_id)
        return runs[before] if len(runs) > before else None

    return _until(made, f"a new run of {dag_id}", stack, timeout)


def _finished(stack: LiveAirflow, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = _ok(stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))
        return run if run["state"] in ("success", "failed") else None

    run = _until(done, f"{dag_id} run {run_id} to finish", stack, timeout)
    assert run["state"] == "success", f"{dag_id} {run_id}: {_tasks(stack, dag_id, run_id)}"
    return run


def _task_state(
    stack: LiveAirflow, dag_id: str, run_id: str, task_id: str, *states: str
) -> Callable[[], bool]:
    def reached() -> bool:
        tasks = _tasks(stack, dag_id, run_id)
        assert all(state != "failed" for state in tasks.values()), tasks
        return tasks.get(task_id) in states

    return reached


@pytest.fixture
def unpaused(airflow_live: LiveAirflow) -> Iterator[Callable[[str], None]]:
    """Unpause DAGs for one test (waiting until the DAG processor has them); paused again after it."""
    dag_ids: list[str] = []

    def unpause(dag_id: str) -> None:
        _until(
            lambda: airflow_live.api("GET", f"/api/v2/dags/{dag_id}").status_code == 200,
            f"{dag_id} parsed (import errors: {airflow_live.api('GET', '/api/v2/importErrors').text})",
            airflow_live,
            120,
        )
        body = _ok(airflow_live.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}))
        assert body["is_paused"] is False
        dag_ids.append(dag_id)

    yield unpause
    for dag_id in dag_ids:
        airflow_live.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": True})


def _fresh_registry(name: str) -> Any:
    """Forget ``name``'s versions from earlier modules (the health page's have no artifacts)."""
    client = registry.configure_mlflow()
    if client.search_registered_models(f"name = '{name}'"):
        client.delete_registered_model(name)
    return client


def _organization() -> int:
    with get_engine().connect() as conn:
        org = conn.scalar(sa.select(sa.func.min(Organization.id)))
    assert org is not None
    return int(org)


def test_an_import_trains_and_rolls_out_through_asset_events_alone(
    airflow_live: LiveAirflow, unpaused: Callable[[str], None], tmp_path: Path
) -> None:
    stack = airflow_live
    client = _fresh_registry("lead_scoring")
    for dag_id in ("train_lead_scoring", "rollout_lead_scoring"):
        unpaused(dag_id)
    trained_before, rolled_before = (
        len(_runs(stack, "train_lead_scoring")),
        len(_runs(stack, "rollout_lead_scoring")),
    )
    leads = write_csv(tmp_path / "new-leads.csv", lead_rows(30, start=90_001))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NEURACRM", "MLFLOW"))},
        **stack.neuracrm_env,
        "NEURACRM_AIRFLOW_API_URL": stack.url,
        "NEURACRM_AIRFLOW_API_USERNAME": "oncall",
        "NEURACRM_AIRFLOW_API_PASSWORD": stack.passwords["oncall"],
    }
    org = _organization()
    imported = subprocess.run(
        [str(CLI), "import", "leads", str(leads), "--org", str(org)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "30 rows read" in imported.stdout and "asset event neuracrm://crm/leads #" in imported.stdout

    # the import's event started the training: an asset-triggered run that consumed it
    train = _new_run(stack, "train_lead_scoring", trained_before)
    assert train["run_type"] == ASSET_TRIGGERED, train
    train = _finished(stack, "train_lead_scoring", train["dag_run_id"], timeout=600)
    consumed = _ok(
        stack.api("GET", f"/api/v2/dags/train_lead_scoring/dagRuns/{train['dag_run_id']}/upstreamAssetEvents")
    )["asset_events"]
    assert [e["uri"] for e in consumed] == ["neuracrm://crm/leads"]
    extra = consumed[0]["extra"]
    assert extra["file"] == str(leads) and extra["organization_id"] == org and extra["import_batch_id"]
    assert extra["rows_imported"] + extra["rows_updated"] == 30 and len(extra["file_sha256"]) == 64
    tasks = _tasks(stack, "train_lead_scoring", train["dag_run_id"])
    assert tasks["challenger_registered"] == "success" and tasks["announce_challenger"] == "success", tasks
    [version] = [
        v
        for v in client.search_model_versions("name = 'lead_scoring'")
        if v.tags.get("dag_run_id") == train["dag_run_id"]
    ]
    assert version.tags["status"] == "challenger", dict(version.tags)

    # ... whose registry event started the rollout: the first version is promoted at once
    roll = _new_run(stack, "rollout_lead_scoring", rolled_before)
    assert roll["run_type"] == ASSET_TRIGGERED, roll
    roll = _finished(stack, "rollout_lead_scoring", roll["dag_run_id"], timeout=300)
    consumed = _ok(
        stack.api(
            "GET", f"/api/v2/dags/rollout_lead_scoring/dagRuns/{roll['dag_run_id']}/upstreamAssetEvents"
        )
    )["asset_events"]
    assert [(e["uri"], e["source_dag_id"], e["source_run_id"]) for e in consumed] == [
        ("neuracrm://registry/lead_scoring/challenger", "train_lead_scoring", train["dag_run_id"])
    ]
    assert consumed[0]["extra"]["version"] == str(version.version)
    champion = registry.alias_version(client, "lead_scoring", registry.CHAMPION)
    assert champion is not None and str(champion.version) == str(version.version)
    [entry] = ledger.latest_entries(get_engine(), model_name="lead_scoring", limit=1)
    assert (entry.action, entry.to_version) == ("promote", str(version.version))
    assert entry.actor == f"dag:rollout_lead_scoring/{roll['dag_run_id']}"
    # and nothing was triggered by hand or by the clock
    for dag_id in ("train_lead_scoring", "rollout_lead_scoring"):
        assert {r["run_type"] for r in _runs(stack, dag_id)[-1:]} == {ASSET_TRIGGERED}


# -- approval -------------------------------------------------------------------------------------


def _register(client: Any, name: str) -> str:
    """A version without artifacts: rollouts and reviews never load a model."""
    registry.ensure_registered_model(client, name, "the loop test")
    version = client.create_model_version(
        name, "file:///nonexistent", tags={"status": "test", "servable": "true"}
    )
    return str(version.version)


def _serve(stack: LiveAirflow, org: int, version: str, route: str, tag: str, n: int = 6) -> None:
    """``n`` logged predictions of sentiment ``version`` on ``route``, each with a matching outcome."""
    engine = get_engine()
    writer = PredictionLogWriter(engine, spill_dir=Path(stack.neuracrm_env["NEURACRM_HOME"]) / "spill")
    entities = [f"loop-{tag}-v{version}-{i}" for i in range(n)]
    writer.append(
        [
            prediction_row(
                model_name="sentiment",
                model_version=version,
                route=route,
                request_id=entity,
                organization_id=org,
                entity_id=entity,
                features={"text": "great support, thanks"},
                output={"label": "positive"},
                latency_ms=20.0,
                fallback=False,
            )
            for entity in entities
        ]
    )
    assert writer.flush(), writer.last_error
    assert (
        record_outcomes(engine, "sentiment", [OutcomeIn(org, e, "positive") for e in entities], source="crm")
        == n
    )


def _weight() -> float:
    return rollout.registered_state(registry.configure_mlflow(), "sentiment").weight


def _scheduler_saw_the_worker_exit(stack: LiveAirflow, run_id: str) -> Callable[[], bool]:
    """Whether the scheduler has processed the executor's event for the worker that asked the question.

    On Airflow 3.3 an answer resumes the task at once (AWAITING_INPUT -> SCHEDULED -> QUEUED, same try
    number); when the asking worker's exit reaches the scheduler only after that, the scheduler takes
    the queued task for one "killed externally" (a "state mismatch" event), puts it up for retry and the
    retry asks again: the answer is lost. A reviewer answers in minutes; a test answers in a second, so
    it waits for the scheduler's own "TaskInstance Finished" line for this asking try first.
    """
    marker = f"TaskInstance Finished: dag_id=rollout_sentiment, task_id=approve_final_step, run_id={run_id},"

    def seen() -> bool:
        log = stack.logs["scheduler"].read_text(errors="replace")
        return any(marker in line and "state=awaiting_input" in line for line in log.splitlines())

    return seen


def _review(stack: LiveAirflow, run_id: str, answer: str) -> dict[str, Any]:
    """Wait for approve_final_step to ask, then answer it over the REST API as ``oncall``."""
    path = f"/api/v2/dags/rollout_sentiment/dagRuns/{run_id}/taskInstances/approve_final_step/-1/hitlDetails"
    _until(
        _task_state(stack, "rollout_sentiment", run_id, "approve_final_step", "awaiting_input", "deferred"),
        "approve_final_step waiting for a reviewer",
        stack,
        240,
    )
    _until(_scheduler_saw_the_worker_exit(stack, run_id), "the scheduler seeing the asker exit", stack, 120)
    asked = _ok(stack.api("GET", path))
    assert asked["options"] == ["Approve", "Reject"] and asked["response_received"] is False, asked
    assert asked["subject"] == "Promote sentiment's challenger to all traffic?"
    return dict(_ok(stack.api("PATCH", path, json={"chosen_options": [answer]})))


def _announce(stack: LiveAirflow, version: str) -> None:
    """What train_sentiment's announce_challenger emits, sent as an external producer would."""
    with AirflowApi(stack.url, username="oncall", password=stack.passwords["oncall"]) as api:
        api.emit("neuracrm://registry/sentiment/challenger", {"family": "sentiment", "version": version})


def test_a_reviewer_approves_one_sentiment_challenger_and_rejects_the_next_over_the_rest_api(
    airflow_live: LiveAirflow, unpaused: Callable[[str], None]
) -> None:
    stack, engine, org = airflow_live, get_engine(), _organization()
    client = _fresh_registry("sentiment")
    champion = _register(client, "sentiment")
    client.set_registered_model_alias("sentiment", registry.CHALLENGER, champion)
    assert rollout.start_rollout("sentiment", actor="cli:loop-test", engine=engine).action == "promote"
    unpaused("rollout_sentiment")
    before = len(_runs(stack, "rollout_sentiment"))

    # approved: 50% -> (reviewer) -> 100% -> promoted
    approved = _register(client, "sentiment")
    client.set_registered_model_alias("sentiment", registry.CHALLENGER, approved)
    _announce(stack, approved)
    run = _new_run(stack, "rollout_sentiment", before)
    assert run["run_type"] == ASSET_TRIGGERED, run
    _until(lambda: _weight() == 0.5, "the canary at 50%", stack, 180)
    _serve(stack, org, champion, "champion", "a")
    _serve(stack, org, approved, "challenger", "a")
    answer = _review(stack, run["dag_run_id"], "Approve")
    assert answer["chosen_options"] == ["Approve"] and answer["responded_by"]["name"] == "oncall"
    try:
        _until(lambda: _weight() == 1.0, "the final step after the approval", stack, 180)
    except AssertionError as exc:
        mismatches = stack.api("GET", "/api/v2/eventLogs", params={"event": "state mismatch"}).text
        tasks = _tasks(stack, "rollout_sentiment", run["dag_run_id"])
        raise AssertionError(f"{exc}; tasks {tasks}; state mismatch events: {mismatches}") from exc
    _serve(stack, org, approved, "challenger", "b")  # the final step bakes on its own outcomes
    _finished(stack, "rollout_sentiment", run["dag_run_id"], timeout=300)
    tasks = _tasks(stack, "rollout_sentiment", run["dag_run_id"])
    assert tasks["raise_after_approval"] == "success" and tasks["handle_rejection"] == "skipped", tasks
    aliases = {a: str(v) for a, v in client.get_registered_model("sentiment").aliases.items()}
    assert aliases["champion"] == approved and aliases.get("previous") == champion
    assert registry.CHALLENGER not in aliases
    actor = f"dag:rollout_sentiment/{run['dag_run_id']}"
    entries = [e for e in ledger.latest_entries(engine, model_name="sentiment", limit=20) if e.actor == actor]
    assert [(e.action, e.weight) for e in reversed(entries) if e.action != "hold"] == [
        ("canary", 0.5),
        ("canary", 1.0),
        ("promote", 0.0),
    ]
    assert any(e.action == "hold" and "awaiting a reviewer's approval" in e.reason for e in entries)
    assert any("approved by" in e.reason and "oncall" in e.reason for e in entries)
    assert not [a for a in list_alerts(engine) if a.model_name == "sentiment"]

    # rejected: 50% -> (reviewer rejects) -> out of traffic, tagged rejected; the champion stays
    rejected = _register(client, "sentiment")
    client.set_registered_model_alias("sentiment", registry.CHALLENGER, rejected)
    _announce(stack, rejected)
    run = _new_run(stack, "rollout_sentiment", before + 1)
    assert run["run_type"] == ASSET_TRIGGERED, run
    _until(lambda: _weight() == 0.5, "the second canary at 50%", stack, 180)
    _serve(stack, org, approved, "champion", "c")
    _serve(stack, org, rejected, "challenger", "c")
    answer = _review(stack, run["dag_run_id"], "Reject")
    assert answer["chosen_options"] == ["Reject"]
    _finished(stack, "rollout_sentiment", run["dag_run_id"], timeout=300)
    tasks = _tasks(stack, "rollout_sentiment", run["dag_run_id"])
    assert tasks["raise_after_approval"] == "skipped" and tasks["handle_rejection"] == "success", tasks
    review = stack.api(
        "GET",
        f"/api/v2/dags/rollout_sentiment/dagRuns/{run['dag_run_id']}/taskInstances/handle_rejection"
        "/xcomEntries/return_value",
    ).text
    aliases = {a: str(v) for a, v in client.get_registered_model("sentiment").aliases.items()}
    assert aliases["champion"] == approved and registry.CHALLENGER not in aliases, (aliases, review)
    assert _weight() == 0.0
    tags = client.get_model_version("sentiment", rejected).tags
    assert tags["status"] == "rejected" and "final step rejected by" in tags["reason"], dict(tags)
    actor = f"dag:rollout_sentiment/{run['dag_run_id']}"
    entries = [e for e in ledger.latest_entries(engine, model_name="sentiment", limit=20) if e.actor == actor]
    [refusal] = [e for e in entries if e.action not in ("canary", "hold")]
    assert refusal.from_version == rejected and "final step rejected by" in refusal.reason
    assert "oncall" in refusal.reason
    assert not [a for a in list_alerts(engine) if a.model_name == "sentiment"]  # a decision, not a failure
