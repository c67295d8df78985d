"""Retrain the lead scoring model.

validate_leads: the Great Expectations ``leads`` suite; a failed critical expectation fails the run
(no retry: bad data does not fix itself), writes an alert and leaves the champion untouched.
train_and_register_lead_model: calibrated gradient boosting vs the rule baseline and the champion on
a time-based holdout; registers a version (alias ``challenger`` when it passes the gates).
challenger_registered -> announce_challenger: emits ``neuracrm://registry/lead_scoring/challenger``
(which starts rollout_lead_scoring) only when the run registered a challenger.
Runs nightly (02:00 UTC), whenever new leads are announced (asset ``neuracrm://crm/leads``, emitted by
``neuracrm-mlops import leads``) and when monitor_models asks for a retraining after a rollback
(asset ``neuracrm://monitor/lead_scoring/retrain``).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task

from neuracrm_mlops.ops.dag_support import (
    START_DATE,
    announce_challenger,
    default_args,
    run_key,
    training_schedule,
)


@dag(
    dag_id="train_lead_scoring",
    schedule=training_schedule("0 2 * * *", "leads", "lead_scoring"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["neuracrm", "training", "lead_scoring"],
    default_args=default_args(),
    doc_md=__doc__,
)
def train_lead_scoring() -> None:
    @task
    def validate_leads(**context: Any) -> dict[str, Any]:
        from airflow.exceptions import AirflowFailException

        from neuracrm_mlops.errors import NeuraCRMError
        from neuracrm_mlops.ops.pipelines import validate_for_training

        try:
            return validate_for_training("leads", run_id=context["run_id"])
        except NeuraCRMError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def train_and_register_lead_model(validation: dict[str, Any], **context: Any) -> dict[str, Any]:
        from neuracrm_mlops.ops.pipelines import train_family

        return train_family(
            "lead_scoring", run_key=run_key(context), dag_run_id=context["run_id"], validation=validation
        )

    announce_challenger("lead_scoring", train_and_register_lead_model(validate_leads()))


train_lead_scoring()
