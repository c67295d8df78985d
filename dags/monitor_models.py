"""Watch every served model: live accuracy, drift, bias, serving health; roll back below 80%.

monitor_<model>: one monitoring pass (``neuracrm_mlops.monitoring.monitor_model``); forecasts get
one pass per organization's champion (monitor_sales_forecasts, rollback per organization). Accuracy
below NEURACRM_ACCURACY_FLOOR with enough outcomes puts the previous champion back (under a lock:
two runs at once cannot both roll back), writes the ledger and one critical alert; drift, bias
and health breaches raise warning alerts. needs_retraining_<model> -> retrain_<model> triggers the
model's training DAG after a rollback. escalate_alerts re-pages unacknowledged critical alerts.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from neuracrm_mlops.dag_support import START_DATE, default_args

MODELS = ("lead_scoring", "sentiment")


@dag(
    dag_id="monitor_models",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["neuracrm", "monitoring"],
    default_args=default_args(),
    doc_md=__doc__,
)
def monitor_models() -> None:
    for model in MODELS:

        @task(task_id=f"monitor_{model}")
        def monitor(model_name: str, **context: Any) -> dict[str, Any]:
            from neuracrm_mlops.ledger import actor_for_dag
            from neuracrm_mlops.monitoring import monitor_model

            report = monitor_model(model_name, actor=actor_for_dag(context))
            print(report.reason, report.warnings)
            return {
                "verdict": report.verdict,
                "retrain": report.retrain,
                "rolled_back_to": report.rolled_back_to,
            }

        @task.short_circuit(task_id=f"needs_retraining_{model}")
        def needs_retraining(report: dict[str, Any]) -> bool:
            return bool(report["retrain"])

        retrain = TriggerDagRunOperator(
            task_id=f"retrain_{model}",
            trigger_dag_id=f"train_{model}",
            conf={"reason": "live accuracy below the floor: automatic rollback"},
        )
        needs_retraining(monitor(model)) >> retrain

    @task
    def monitor_sales_forecasts(**context: Any) -> dict[str, Any]:
        from neuracrm_mlops.ledger import actor_for_dag
        from neuracrm_mlops.monitoring import monitor_forecasts

        summary = monitor_forecasts(actor=actor_for_dag(context))
        print(summary.as_dict())
        return summary.as_dict()

    @task.short_circuit
    def needs_retraining_sales_forecast(summary: dict[str, Any]) -> bool:
        return bool(summary["retrain"])

    retrain_forecasts = TriggerDagRunOperator(
        task_id="retrain_sales_forecast",
        trigger_dag_id="train_sales_forecast",
        conf={"reason": "forecast accuracy below the floor: automatic rollback"},
    )
    needs_retraining_sales_forecast(monitor_sales_forecasts()) >> retrain_forecasts

    @task
    def escalate_alerts() -> list[int]:
        from neuracrm_mlops.alerts import escalate_overdue
        from neuracrm_mlops.db.engine import get_engine

        return escalate_overdue(get_engine())

    escalate_alerts()


monitor_models()
