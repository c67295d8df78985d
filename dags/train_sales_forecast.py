"""Retrain every organization's sales forecast (ARIMA + Prophet + linear regression ensemble, with
Theta and ETS where the backtest says they help).

validate_sales: the Great Expectations ``monthly_sales`` suite; a failed critical expectation fails
the run (no retry), writes an alert and leaves every champion untouched.
plan_forecast_chunks: organization ids in near-equal chunks of about NEURACRM_FORECAST_CHUNK_SIZE (50),
never more than ``max_map_length`` of them (chunks grow instead; README: Production and scaling).
train_forecast_chunk (mapped, NEURACRM_FORECAST_CHUNK_CONCURRENCY at once): rolling-origin
backtest, accuracy-weighted ensemble, gates, one MLflow run per chunk and one registered model version
per organization.
summarize_forecast_training: counts per status, for the log and the run's XCom.
challenger_registered -> announce_challenger: emits ``neuracrm://registry/sales_forecast/challenger``
(which starts rollout_sales_forecast) only when some organization got a challenger.
Runs monthly (the 2nd, 03:00 UTC), whenever new sales are announced (asset
``neuracrm://crm/monthly_sales``, emitted by ``neuracrm-mlops import sales``) and when monitor_models
asks for a retraining after a rollback (asset ``neuracrm://monitor/sales_forecast/retrain``).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task

from neuracrm_mlops.ops.dag_support import (
    START_DATE,
    announce_challenger,
    default_args,
    forecast_chunk_concurrency,
    run_key,
    training_schedule,
)


@dag(
    dag_id="train_sales_forecast",
    schedule=training_schedule("0 3 2 * *", "sales", "sales_forecast"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["neuracrm", "training", "sales_forecast"],
    default_args=default_args(),
    doc_md=__doc__,
)
def train_sales_forecast() -> None:
    @task
    def validate_sales(**context: Any) -> dict[str, Any]:
        from airflow.exceptions import AirflowFailException

        from neuracrm_mlops.errors import NeuraCRMError
        from neuracrm_mlops.ops.pipelines import validate_for_training

        try:
            return validate_for_training("sales", run_id=context["run_id"])
        except NeuraCRMError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def plan_forecast_chunks(validation: dict[str, Any]) -> list[list[int]]:
        from airflow.configuration import conf

        from neuracrm_mlops.config import get_settings
        from neuracrm_mlops.training.forecasts import plan_forecast_chunks as plan

        # never more mapped tasks than Airflow accepts ([core] max_map_length, 1,024 by default)
        return plan(max_chunks=min(get_settings().forecast_max_chunks, conf.getint("core", "max_map_length")))

    @task(max_active_tis_per_dagrun=forecast_chunk_concurrency())
    def train_forecast_chunk(
        organization_ids: list[int], validation: dict[str, Any], **context: Any
    ) -> dict[str, Any]:
        from neuracrm_mlops.ops.pipelines import train_forecast_chunk as train_chunk

        return train_chunk(
            organization_ids, run_key=run_key(context), dag_run_id=context["run_id"], validation=validation
        )

    @task
    def summarize_forecast_training(results: list[dict[str, Any]]) -> dict[str, int]:
        from neuracrm_mlops.ops.pipelines import summarize_forecast_chunks

        return summarize_forecast_chunks(list(results))

    validation = validate_sales()
    chunks = plan_forecast_chunks(validation)
    results = train_forecast_chunk.partial(validation=validation).expand(organization_ids=chunks)
    announce_challenger("sales_forecast", summarize_forecast_training(results))


train_sales_forecast()
