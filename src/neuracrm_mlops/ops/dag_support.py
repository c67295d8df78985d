"""What the DAG files share: schedules (time or an asset event), the loop's assets, default args, run keys.

The loop, as asset events (README, "The loop in Airflow"):
``neuracrm://crm/<dataset>`` (``neuracrm-mlops import``) -> train_<family> ->
``neuracrm://registry/<family>/challenger`` (train_<family>, only when a challenger was registered) ->
rollout_<family>; monitor_models -> ``neuracrm://monitor/<family>/retrain`` (after a rollback) ->
train_<family>.

Imports only the Airflow task SDK, so DAG files stay cheap to parse.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, AssetAny, AssetOrTimeSchedule, CronTriggerTimetable, task

from neuracrm_mlops.families import FAMILIES as FAMILY_REGISTRY


def dag_start_date() -> dt.datetime:
    """Every DAG's ``start_date``: NEURACRM_DAG_START_DATE (an ISO date or time, UTC unless it says
    otherwise), default 2026-01-01. No time-based run is scheduled before it, while asset-triggered runs
    (which have no logical date) run at once: set it in the future to deploy the DAGs driven by asset
    events only (the live-Airflow tests do, so that unpausing a DAG starts no cron run). A bad value
    falls back to the default (DAG files must parse; the first task names the bad value)."""
    from neuracrm_mlops.config import settings_for_dag_parsing

    return settings_for_dag_parsing().dag_start_date


START_DATE = dag_start_date()
OWNER = "ml-platform"

# the model families, from the family registry (``neuracrm_mlops.families``): a DAG per family
FAMILIES = tuple(FAMILY_REGISTRY)
# the CRM dataset each family trains on (`neuracrm-mlops import DATASET ...`)
FAMILY_DATASETS = {name: family.dataset for name, family in FAMILY_REGISTRY.items()}

# An import (or any producer) that emits one of these asset events triggers the matching training.
CRM_ASSETS = {
    "leads": Asset("neuracrm://crm/leads"),
    "sales": Asset("neuracrm://crm/monthly_sales"),
    "interactions": Asset("neuracrm://crm/interactions"),
}
# train_<family> emits it when the run registered a challenger; it triggers rollout_<family>.
REGISTRY_ASSETS = {family: Asset(f"neuracrm://registry/{family}/challenger") for family in FAMILIES}
# monitor_models emits it after an automatic rollback; it triggers train_<family>.
RETRAIN_ASSETS = {family: Asset(f"neuracrm://monitor/{family}/retrain") for family in FAMILIES}

ROLLOUT_CRON = "0 6 * * *"  # the rollout DAGs' daily safety net (UTC)


def training_schedule(cron: str, dataset: str, family: str) -> AssetOrTimeSchedule:
    """Run on ``cron`` (UTC), and also whenever new ``dataset`` data is announced or the monitor asks
    for a retraining of ``family`` (either asset event is enough)."""
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(cron, timezone="UTC"),
        assets=AssetAny(CRM_ASSETS[dataset], RETRAIN_ASSETS[family]),
    )


def registration_schedule(cron: str) -> CronTriggerTimetable:
    """train_voice_scenario: on ``cron`` (UTC) only. Its input is the scenario files deployed with the
    code, announced by no asset, and registering unchanged files registers nothing."""
    return CronTriggerTimetable(cron, timezone="UTC")


def rollout_schedule(family: str) -> AssetOrTimeSchedule:
    """Run when train_<family> registered a challenger, and daily at 06:00 UTC as a safety net
    (a challenger registered outside Airflow, a run that ended early)."""
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(ROLLOUT_CRON, timezone="UTC"), assets=[REGISTRY_ASSETS[family]]
    )


def challenger_registered(outcome: dict[str, Any]) -> bool:
    """Whether a training task's result (``TrainingOutcome.as_dict()``, or the forecast DAG's counts per
    status) registered a challenger: only then is the registry asset event emitted."""
    if "status" in outcome:
        return bool(outcome["status"] == "challenger")
    return int(outcome.get("challenger", 0)) > 0


def announce_challenger(family: str, outcome: Any) -> Any:
    """After a training task: ``challenger_registered`` (a short-circuit) -> ``announce_challenger``,
    whose outlet is ``neuracrm://registry/<family>/challenger``. A task emits its outlets' events
    whenever it succeeds, so the event is made conditional by skipping the announcing task: a run that
    registered a rejected version (or nothing new) succeeds without emitting, and rollout_<family>
    is not triggered. ``outcome`` is the training task's result (an XComArg)."""
    asset = REGISTRY_ASSETS[family]

    @task.short_circuit(task_id="challenger_registered")
    def registered(result: dict[str, Any]) -> bool:
        found = challenger_registered(result)
        print(f"{family}: {'a challenger was registered' if found else 'no challenger registered'}: {result}")
        return found

    @task(task_id="announce_challenger", outlets=[asset])
    def announce(result: dict[str, Any], **context: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {"family": family, "dag_run_id": context["run_id"]}
        if "status" in result:
            extra |= {"version": result.get("version"), "semver": result.get("semver")}
        else:
            extra |= {"status_counts": result}
        context["outlet_events"][asset].extra = extra
        print(f"asset event {asset.uri}: {extra}")
        return extra

    announced = announce(outcome)
    registered(outcome) >> announced
    return announced


def default_args() -> dict[str, Any]:
    """retries >= 2; the delay is configurable (NEURACRM_RETRY_DELAY_SECONDS, default 300); a task
    that fails for good raises a critical NeuraCRM alert carrying its error (delivered, deduplicated)."""
    from neuracrm_mlops.config import settings_for_dag_parsing
    from neuracrm_mlops.monitoring.notifier import NeuraCRMAlertNotifier

    return {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=settings_for_dag_parsing().retry_delay_seconds),
        "on_failure_callback": [NeuraCRMAlertNotifier()],
    }


def rollout_step_count() -> int:
    """How many canary steps the rollout DAG chains (NEURACRM_ROLLOUT_STEPS, default 10,50,100).

    The settings are read when the DAG file is parsed (environment only, no I/O); the weights
    themselves are read by the library at run time, so only the count shapes the DAG.
    """
    from neuracrm_mlops.config import settings_for_dag_parsing

    return len(settings_for_dag_parsing().rollout_steps)


def forecast_chunk_concurrency() -> int:
    """How many train_forecast_chunk tasks of one run run at once (NEURACRM_FORECAST_CHUNK_CONCURRENCY,
    default 2; on the CeleryExecutor: the workers' total concurrency), read when the DAG is parsed."""
    from neuracrm_mlops.config import settings_for_dag_parsing

    return settings_for_dag_parsing().forecast_chunk_concurrency


def bake_poke_seconds() -> float:
    from neuracrm_mlops.config import settings_for_dag_parsing

    return settings_for_dag_parsing().bake_poke_seconds


def bake_timeout_seconds() -> float:
    """The sensor gives up an hour after the bake deadline (the library answers 'deadline passed' first)."""
    from neuracrm_mlops.config import settings_for_dag_parsing

    return settings_for_dag_parsing().bake_deadline_hours * 3600 + 3600


def run_key(context: Any) -> str:
    """The idempotency key of a DAG run: the DAG and its logical date (or run id when there is none)."""
    dag_id = context["dag"].dag_id
    logical_date = context.get("logical_date")
    return f"{dag_id}/{logical_date.isoformat() if logical_date else context['run_id']}"
