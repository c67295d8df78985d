"""A DAG run through the real scheduler and LocalExecutor (not `dag.test()`): triggered over the REST
API, its tasks queued by the scheduler and run by executor workers, and its effect real: a new
sentiment version in MLflow whose lineage names the run."""

from __future__ import annotations

import time

import pytest

from airflow_live.conftest import LiveAirflow
from neuracrm_mlops.store import registry

# one real Airflow for the directory (tests/airflow_live/conftest.py): one worker runs it
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("airflow_live")]

DAG_ID = "train_sentiment"  # the cheapest DAG with a real effect: validate, then train and register
RUN_TIMEOUT_SECONDS = 240


def _wait_for_dag(stack: LiveAirflow, dag_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.assert_running()
        if stack.api("GET", f"/api/v2/dags/{dag_id}").status_code == 200:
            return
        time.sleep(1)
    errors = stack.api("GET", "/api/v2/importErrors").text
    raise AssertionError(f"{dag_id} was not parsed within {timeout} s; import errors: {errors}")


def test_a_dag_triggered_over_the_api_runs_through_the_scheduler_and_registers_a_version(
    airflow_live: LiveAirflow,
) -> None:
    _wait_for_dag(airflow_live, DAG_ID)
    unpaused = airflow_live.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    assert unpaused.status_code == 200 and unpaused.json()["is_paused"] is False, unpaused.text
    triggered = airflow_live.api(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "note": "airflow_live test"}
    )
    assert triggered.status_code == 200, triggered.text
    run_id = triggered.json()["dag_run_id"]

    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    run = triggered.json()
    while run["state"] not in ("success", "failed") and time.monotonic() < deadline:
        airflow_live.assert_running()
        time.sleep(2)
        run = airflow_live.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()
    tasks = airflow_live.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()
    states = {t["task_id"]: (t["state"], t["try_number"]) for t in tasks["task_instances"]}
    assert run["state"] == "success", f"run {run_id} ended {run['state']!r}; tasks {states}"
    assert run["run_type"] == "manual" and run["triggered_by"] == "rest_api", run

    # queued by the scheduler, run by executor worker processes on this host: not dag.test()
    assert {t["task_id"] for t in tasks["task_instances"]} == {
        "validate_interactions",
        "train_and_register_sentiment_model",
        "challenger_registered",
        "announce_challenger",  # skipped unless a challenger was registered (checked below)
    }
    for task in tasks["task_instances"]:
        if task["task_id"] == "announce_challenger":
            continue
        assert task["state"] == "success", task
        assert task["queued_when"] and task["start_date"] and task["end_date"], task
        assert task["hostname"] and task["pid"], task
        assert task["executor"] in (None, "LocalExecutor"), task
    train = next(t for t in tasks["task_instances"] if t["task_id"] == "train_and_register_sentiment_model")
    validate = next(t for t in tasks["task_instances"] if t["task_id"] == "validate_interactions")
    assert train["start_date"] >= validate["end_date"]  # the dependency held

    health = airflow_live.api("GET", "/api/v2/monitor/health", user=None).json()
    assert health["scheduler"]["status"] == "healthy", health
    assert health["dag_processor"]["status"] == "healthy", health

    client = registry.configure_mlflow()
    versions = [
        v for v in client.search_model_versions("name = 'sentiment'") if v.tags.get("dag_run_id") == run_id
    ]
    assert len(versions) == 1, [dict(v.tags) for v in client.search_model_versions("name = 'sentiment'")]
    tags = versions[0].tags
    assert tags["run_key"].startswith(f"{DAG_ID}/")
    assert tags["status"] in ("challenger", "rejected") and tags["reason"]
    announced = next(t for t in tasks["task_instances"] if t["task_id"] == "announce_challenger")
    assert announced["state"] == ("success" if tags["status"] == "challenger" else "skipped"), announced
    assert tags["validation_run_id"] and tags["data_snapshot_hash"] and tags["gx_report"].endswith(".html")
