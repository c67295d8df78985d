"""What the DAG files share: schedules (time or a new-data asset event), default args, run keys.

Imports only the Airflow task SDK, so DAG files stay cheap to parse.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable

START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
OWNER = "ml-platform"

# An import (or any producer) that emits one of these asset events triggers the matching training.
CRM_ASSETS = {
    "leads": Asset("neuracrm://crm/leads"),
    "sales": Asset("neuracrm://crm/monthly_sales"),
    "interactions": Asset("neuracrm://crm/interactions"),
}


def training_schedule(cron: str, dataset: str) -> AssetOrTimeSchedule:
    """Run on ``cron`` (UTC), and also whenever new ``dataset`` data is announced as an asset event."""
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=[CRM_ASSETS[dataset]]
    )


def default_args() -> dict[str, Any]:
    """retries >= 2; the delay is configurable (NEURACRM_RETRY_DELAY_SECONDS, default 300); a task
    that fails for good raises a critical NeuraCRM alert carrying its error (delivered, deduplicated)."""
    from neuracrm_mlops.alert_notifier import NeuraCRMAlertNotifier
    from neuracrm_mlops.config import settings_for_dag_parsing

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
