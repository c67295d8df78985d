"""Every DAG file imports cleanly and follows the conventions: dag_id = file stem (the rollout factory:
one DAG per family from rollout_model.py), tags, an explicit schedule, retries >= 2 on every task,
docs; and the loop is wired through assets: import -> train_<family> -> registry asset ->
rollout_<family>; monitor_models -> retrain asset -> train_<family>."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow_harness import REPO, AirflowHarness

# the session's migrated Airflow metadata (tests/dags/conftest.py), made once: one worker
pytestmark = pytest.mark.xdist_group("airflow_dags")

FAMILIES = ("lead_scoring", "sentiment", "sales_forecast")  # trained on CRM data, retrained after a rollback
ALL_FAMILIES = (*FAMILIES, "voice_scenario")
ROLLOUT_DAGS = {f"rollout_{family}": "rollout_model" for family in ALL_FAMILIES}  # dag id -> file stem
DAG_FILES = sorted(p.stem for p in (REPO / "dags").glob("*.py"))
DAG_IDS = sorted({stem for stem in DAG_FILES if stem != "rollout_model"} | set(ROLLOUT_DAGS))
DATASETS = {"lead_scoring": "leads", "sentiment": "interactions", "sales_forecast": "monthly_sales"}


@pytest.fixture(scope="module")
def dag_info(airflow: AirflowHarness, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return airflow.inspect_dags(airflow.env(tmp_path_factory.mktemp("home")))


def test_dag_folder_imports_without_errors(dag_info: dict[str, object]) -> None:
    assert dag_info["errors"] == {}
    assert sorted(dag_info["dags"]) == DAG_IDS  # type: ignore[call-overload]


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_follows_the_conventions(dag_info: dict[str, dict[str, dict[str, object]]], dag_id: str) -> None:
    dag = dag_info["dags"][dag_id]
    assert dag["file_stem"] == ROLLOUT_DAGS.get(dag_id, dag_id)
    assert dag["tags"] and "neuracrm" in dag["tags"]  # type: ignore[operator]
    assert dag["schedule"] != "NullTimetable"
    assert dag["doc"] is True
    assert dag["catchup"] is False
    assert all(retries >= 2 for retries in dag["retries"].values())  # type: ignore[attr-defined]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_loop_is_wired_through_assets(
    dag_info: dict[str, dict[str, dict[str, Any]]], family: str
) -> None:
    dags = dag_info["dags"]
    registry_asset = f"neuracrm://registry/{family}/challenger"
    retrain_asset = f"neuracrm://monitor/{family}/retrain"
    # training: on new data (import) OR a retraining request (monitor) OR its cron
    train = dags[f"train_{family}"]
    assert train["schedule"] == "AssetOrTimeSchedule" and train["schedule_condition"] == "AssetAny"
    assert train["schedule_assets"] == sorted([f"neuracrm://crm/{DATASETS[family]}", retrain_asset])
    assert train["cron"]
    # ... announces a challenger from a task behind a short-circuit: skipped when none was registered
    assert train["outlets"] == {"announce_challenger": [registry_asset]}
    assert "challenger_registered" in train["upstream"]["announce_challenger"]
    # rollout: on that announcement OR 06:00 UTC daily, the family fixed (no model param)
    rollout = dags[f"rollout_{family}"]
    assert rollout["schedule"] == "AssetOrTimeSchedule" and rollout["schedule_assets"] == [registry_asset]
    assert rollout["cron"] == "0 6 * * *" and rollout["params"] == [] and family in rollout["tags"]
    assert rollout["outlets"] == {}
    steps = sum(1 for task in rollout["upstream"] if task.startswith("bake_step_"))
    assert {f"bake_step_{n}" for n in range(1, steps + 1)} | {
        f"judge_step_{n}" for n in range(1, steps + 1)
    } | {
        "start_canary",
        "approval_gate",
        "approve_final_step",
        "raise_after_approval",
        "handle_rejection",
    } == set(rollout["upstream"])
    assert rollout["upstream"]["approve_final_step"] == ["approval_gate"]
    assert rollout["upstream"]["raise_after_approval"] == ["approve_final_step"]
    assert rollout["upstream"]["handle_rejection"] == ["approve_final_step"]
    assert sorted(rollout["upstream"][f"bake_step_{steps}"]) == [
        "approval_gate",
        "handle_rejection",
        "raise_after_approval",
    ]
    # monitoring asks for a retraining through the retrain asset (no TriggerDagRunOperator)
    monitor = dags["monitor_models"]
    assert monitor["outlets"][f"retrain_{family}"] == [retrain_asset]
    assert f"needs_retraining_{family}" in monitor["upstream"][f"retrain_{family}"]


def test_monitor_models_reconciles_rollout_state_before_any_monitoring(
    dag_info: dict[str, dict[str, dict[str, Any]]],
) -> None:
    upstream = dag_info["dags"]["monitor_models"]["upstream"]
    assert upstream["reconcile_rollout_state"] == []
    monitors = [task for task in upstream if task.startswith("monitor_")]
    assert sorted(monitors) == [
        "monitor_lead_scoring",
        "monitor_sales_forecasts",
        "monitor_sentiment",
        "monitor_voice_scenarios",
    ]
    assert all(upstream[task] == ["reconcile_rollout_state"] for task in monitors)
    # every asset is produced by exactly one task and consumed by exactly one DAG
    produced = [uri for dag in dag_info["dags"].values() for uris in dag["outlets"].values() for uri in uris]
    consumed = [uri for dag in dag_info["dags"].values() for uri in dag["schedule_assets"]]
    assert sorted(produced) == sorted(set(produced)) and sorted(consumed) == sorted(set(consumed))
    assert set(produced) < set(consumed)  # the crm/* assets come from `neuracrm-mlops import`
    assert set(consumed) - set(produced) == {f"neuracrm://crm/{d}" for d in DATASETS.values()}


def test_voice_scenarios_are_registered_hourly_rolled_out_on_announcement_and_not_retrained(
    dag_info: dict[str, dict[str, dict[str, Any]]],
) -> None:
    dags = dag_info["dags"]
    registry_asset = "neuracrm://registry/voice_scenario/challenger"
    train = dags["train_voice_scenario"]
    assert train["schedule_assets"] == [] and train["cron"] == "10 * * * *"
    assert train["outlets"] == {"announce_challenger": [registry_asset]}
    assert train["upstream"]["register_scenario_versions"] == ["validate_scenario_files"]
    rollout = dags["rollout_voice_scenario"]
    assert rollout["schedule_assets"] == [registry_asset] and "voice_scenario" in rollout["tags"]
    assert set(rollout["upstream"]) == set(dags["rollout_lead_scoring"]["upstream"])  # the same factory
    monitor = dags["monitor_models"]
    assert monitor["upstream"]["monitor_voice_scenarios"] == ["reconcile_rollout_state"]
    assert not any("voice_scenario" in task for task in monitor["outlets"])  # a prompt is not retrained


def test_a_registry_event_is_emitted_only_for_a_registered_challenger() -> None:
    from neuracrm_mlops.ops.dag_support import challenger_registered

    assert challenger_registered({"status": "challenger", "version": "3"})
    assert not challenger_registered({"status": "rejected", "version": "3"})
    assert not challenger_registered({"status": "existing", "version": "2"})
    assert challenger_registered({"challenger": 2, "rejected": 5})  # forecasts: counts per status
    assert not challenger_registered({"rejected": 5, "skipped": 1})


def test_no_bare_imports_of_top_level_folders() -> None:
    offenders = []
    sources = [
        *REPO.glob("dags/*.py"),
        *REPO.glob("models/*.py"),
        *REPO.glob("serving/*.py"),
        *REPO.glob("src/**/*.py"),
    ]
    bare = ("import models", "from models", "import serving", "from serving", "from .")
    for path in sources:
        for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
            stripped = line.strip()
            if stripped.startswith(bare):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {stripped}")
    assert offenders == []
