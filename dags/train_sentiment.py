"""Retrain the sentiment model.

validate_interactions: the Great Expectations ``interactions`` suite; a failed critical expectation fails
the run (no retry: bad data does not fix itself), writes an alert and leaves the champion untouched.
train_and_register_sentiment_model: TF-IDF + logistic regression (VADER while labels are too few) vs the
champion on a time-based holdout; registers a version (alias ``challenger`` when it passes the gates).
challenger_registered -> announce_challenger: emits ``neuracrm://registry/sentiment/challenger``
(which starts rollout_sentiment) only when the run registered a challenger.
Runs nightly (02:30 UTC), whenever new interactions are announced (asset ``neuracrm://crm/interactions``,
emitted by ``neuracrm-mlops import interactions``) and when monitor_models asks for a retraining after
a rollback (asset ``neuracrm://monitor/sentiment/retrain``).
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
    dag_id="train_sentiment",
    schedule=training_schedule("30 2 * * *", "interactions", "sentiment"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["neuracrm", "training", "sentiment"],
    default_args=default_args(),
    doc_md=__doc__,
)
def train_sentiment() -> None:
    @task
    def validate_interactions(**context: Any) -> dict[str, Any]:
        from airflow.exceptions import AirflowFailException

        from neuracrm_mlops.errors import NeuraCRMError
        from neuracrm_mlops.ops.pipelines import validate_for_training

        try:
            return validate_for_training("interactions", run_id=context["run_id"])
        except NeuraCRMError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def train_and_register_sentiment_model(validation: dict[str, Any], **context: Any) -> dict[str, Any]:
        from neuracrm_mlops.ops.pipelines import train_family

        return train_family(
            "sentiment", run_key=run_key(context), dag_run_id=context["run_id"], validation=validation
        )

    announce_challenger("sentiment", train_and_register_sentiment_model(validate_interactions()))


train_sentiment()
