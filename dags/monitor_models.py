"""Watch every served model: live accuracy, drift, bias, serving health; roll back below 80%.

reconcile_rollout_state runs first: an alias move a crash left half-done is finished (or undone)
before any model is judged (``neuracrm_mlops.release.state.reconcile_pending``). Then
monitor_<model>: one monitoring pass (``neuracrm_mlops.monitoring.monitor.monitor_model``); forecasts get
one pass per organization's champion (monitor_sales_forecasts, rollback per organization). Accuracy
below NEURACRM_ACCURACY_FLOOR with enough outcomes puts the previous champion back (under a lock:
two runs at once cannot both roll back), writes the ledger and one critical alert; drift, bias
and health breaches raise warning alerts. needs_retraining_<model> -> retrain_<model> emits the asset
``neuracrm://monitor/<model>/retrain`` after a rollback, which starts train_<model>.
escalate_alerts re-pages unacknowledged critical alerts.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, dag, task

from neuracrm_mlops.families import FAMILIES
from neuracrm_mlops.ops.dag_support import RETRAIN_ASSETS, START_DATE, default_args

# a monitoring pass per shared model; per-organization families (forecasts) get one task below
MODELS = tuple(f.registered_name() for f in FAMILIES.values() if not f.checks.per_organization)


def retrain_task(family: str, reason: str) -> Any:
    """``retrain_<family>``: emits ``neuracrm://monitor/<family>/retrain`` (train_<family> is scheduled
    on it); it runs only when the monitoring pass asked for a retraining (its upstream short-circuits)."""
    asset: Asset = RETRAIN_ASSETS[family]

    @task(task_id=f"retrain_{family}", outlets=[asset])
    def retrain(report: dict[str, Any], **context: Any) -> dict[str, Any]:
        extra = {
            "reason": reason,
            "rolled_back_to": report.get("rolled_back_to"),
            "dag_run_id": context["run_id"],
        }
        context["outlet_events"][asset].extra = extra
        print(f"asset event {asset.uri}: {extra}")
        return extra

    return retrain


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
    @task
    def reconcile_rollout_state(**context: Any) -> dict[str, Any]:
        from neuracrm_mlops.release.state import reconcile_pending
        from neuracrm_mlops.store.ledger import actor_for_dag

        return reconcile_pending(actor=actor_for_dag(context)).as_dict()

    reconciled = reconcile_rollout_state()
    for model in MODELS:

        @task(task_id=f"monitor_{model}")
        def monitor(model_name: str, **context: Any) -> dict[str, Any]:
            from neuracrm_mlops.monitoring.monitor import monitor_model
            from neuracrm_mlops.store.ledger import actor_for_dag

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

        report = monitor(model)
        reconciled >> report
        needs_retraining(report) >> retrain_task(model, "live accuracy below the floor: automatic rollback")(
            report
        )

    @task
    def monitor_sales_forecasts(**context: Any) -> dict[str, Any]:
        from neuracrm_mlops.monitoring.monitor import monitor_forecasts
        from neuracrm_mlops.store.ledger import actor_for_dag

        summary = monitor_forecasts(actor=actor_for_dag(context))
        print(summary.as_dict())
        return summary.as_dict()

    @task.short_circuit
    def needs_retraining_sales_forecast(summary: dict[str, Any]) -> bool:
        return bool(summary["retrain"])

    summary = monitor_sales_forecasts()
    reconciled >> summary
    retrain_forecasts = retrain_task(
        "sales_forecast", "forecast accuracy below the floor: automatic rollback"
    )
    needs_retraining_sales_forecast(summary) >> retrain_forecasts(summary)

    @task
    def escalate_alerts() -> list[int]:
        from neuracrm_mlops.store.alerts import escalate_overdue
        from neuracrm_mlops.store.db.engine import get_engine

        return escalate_overdue(get_engine())

    escalate_alerts()


monitor_models()
