"""Watch every served model and scenario: live accuracy, drift, bias, serving health; roll back below 80%.

reconcile_rollout_state runs first: an alias move a crash left half-done is finished (or undone)
before any model is judged (``neuracrm_mlops.release.state.reconcile_pending``). Then, per family of
the family registry: monitor_<model> for a model shared by every organization (one pass,
``neuracrm_mlops.monitoring.monitor.monitor_model``), monitor_<family>s for the others: one pass per
organization's forecast champion (monitor_sales_forecasts, rollback per organization) and per voice
scenario champion on call success (monitor_voice_scenarios) (``ops.pipelines.monitor_family``).
Accuracy below the family's floor (NEURACRM_ACCURACY_FLOORS, else NEURACRM_ACCURACY_FLOOR) with enough
outcomes puts the previous champion back when it did not do worse (under a lock: two runs at once
cannot both roll back), writes the ledger and one critical alert; drift, bias and health breaches
raise warning alerts. needs_retraining_<family> -> retrain_<family> emits the asset
``neuracrm://monitor/<family>/retrain`` after a rollback, which starts train_<family> (not for voice
scenarios: a prompt is fixed by a person, not retrained). escalate_alerts re-pages unacknowledged
critical alerts.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, dag, task

from neuracrm_mlops.families import FAMILIES
from neuracrm_mlops.ops.dag_support import RETRAIN_ASSETS, START_DATE, default_args

# a monitoring pass per shared model; per-organization and per-scenario families get one task each
MODELS = tuple(f.registered_name() for f in FAMILIES.values() if f.naming == "shared")
OTHER_FAMILIES = tuple(f for f in FAMILIES.values() if f.naming != "shared")


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

    for family in OTHER_FAMILIES:

        @task(task_id=f"monitor_{family.name}s")
        def monitor_family(family_name: str, **context: Any) -> dict[str, Any]:
            from neuracrm_mlops.ops.pipelines import monitor_family
            from neuracrm_mlops.store.ledger import actor_for_dag

            summary = monitor_family(family_name, actor=actor_for_dag(context))
            print(summary)
            return summary

        summary = monitor_family(family.name)
        reconciled >> summary
        if family.checks.retrain_after_rollback:

            @task.short_circuit(task_id=f"needs_retraining_{family.name}")
            def needs_family_retraining(summary: dict[str, Any]) -> bool:
                return bool(summary["retrain"])

            retrain = retrain_task(family.name, "accuracy below the floor: automatic rollback")
            needs_family_retraining(summary) >> retrain(summary)

    @task
    def escalate_alerts() -> list[int]:
        from neuracrm_mlops.store.alerts import escalate_overdue
        from neuracrm_mlops.store.db.engine import get_engine

        return escalate_overdue(get_engine())

    escalate_alerts()


monitor_models()
