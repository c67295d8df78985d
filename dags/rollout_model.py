"""Roll a challenger out to traffic in canary steps (10% -> 50% -> 100% by default).

start_canary: the challenger gets the first step's weight (a model with no champion is promoted
at once). Then, per step: bake_step_N waits (a sensor in reschedule mode: no worker slot is held)
until both versions have NEURACRM_MIN_OUTCOMES labelled outcomes or the step's deadline passes;
judge_step_N compares challenger and champion on live accuracy, error rate and p95 latency and
acts: next step, promote at 100% (the old champion keeps alias ``previous``), reject (weight 0,
tagged rejected, alert), or hold (alert after the deadline; never promotes). Anything but "next
step" ends the run. Every change is in the promotion ledger. For the families listed in
NEURACRM_ROLLOUT_APPROVAL (none by default) a reviewer approves or rejects the final step in the
Airflow UI (approve_final_step, Airflow's human-in-the-loop ApprovalOperator; no answer by the
deadline rejects); the others go straight on. Runs daily at 06:00 UTC for the model
in its ``model`` param (default lead_scoring; with no challenger waiting the run ends at once), and
by hand with ``{"model": "sentiment"}`` or ``{"model": "sales_forecast"}``: forecasts roll out by
cohorts of organizations (the weight is the share of organizations), each organization judged on
its own new actuals (``neuracrm_mlops.forecast_rollout``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import CronTriggerTimetable, Param, PokeReturnValue, dag, task

from neuracrm_mlops.dag_support import (
    START_DATE,
    bake_poke_seconds,
    bake_timeout_seconds,
    default_args,
    rollout_step_count,
)


@dag(
    dag_id="rollout_model",
    schedule=CronTriggerTimetable("0 6 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["neuracrm", "rollout"],
    default_args=default_args(),
    params={"model": Param("lead_scoring", enum=["lead_scoring", "sentiment", "sales_forecast"])},
    doc_md=__doc__,
)
def rollout_model() -> None:
    @task.short_circuit
    def start_canary(params: dict[str, Any], **context: Any) -> bool:
        from neuracrm_mlops.ledger import actor_for_dag
        from neuracrm_mlops.pipelines import start_canary

        result = start_canary(params["model"], actor=actor_for_dag(context))
        print(result)
        return bool(result["running"])

    previous = start_canary()
    steps = rollout_step_count()
    for step in range(1, steps + 1):
        final = step == steps and steps > 1

        @task.sensor(
            task_id=f"bake_step_{step}",
            mode="reschedule",
            poke_interval=dt.timedelta(seconds=bake_poke_seconds()),
            timeout=dt.timedelta(seconds=bake_timeout_seconds()),
            trigger_rule="none_failed_min_one_success" if final else "all_success",
        )
        def bake(params: dict[str, Any]) -> PokeReturnValue:
            from neuracrm_mlops.pipelines import canary_baked

            ready, detail = canary_baked(params["model"])
            print(detail)
            return PokeReturnValue(is_done=ready, xcom_value=detail)

        @task.short_circuit(task_id=f"judge_step_{step}")
        def judge(params: dict[str, Any], **context: Any) -> bool:
            from neuracrm_mlops.ledger import actor_for_dag
            from neuracrm_mlops.pipelines import judge_canary

            result = judge_canary(params["model"], actor=actor_for_dag(context))
            print(result)
            return result["action"] in ("next_step", "awaiting_approval")

        baked = bake()
        if final:
            # optional human approval before the final step (NEURACRM_ROLLOUT_APPROVAL lists the families)
            approve = ApprovalOperator(
                task_id="approve_final_step",
                subject="Promote {{ params.model }}'s challenger to all traffic?",
                body=(
                    "The canary of {{ params.model }} passed every step so far on live accuracy, error rate "
                    "and p95 latency (see the promotion ledger and the judge_step logs). Approve to give it "
                    "the final step's traffic; reject to take it out of traffic and tag it rejected."
                ),
                defaults="Reject",
                response_timeout=dt.timedelta(seconds=bake_timeout_seconds()),
            )

            @task.branch
            def approval_gate(params: dict[str, Any], final_bake: str = f"bake_step_{step}") -> str:
                from neuracrm_mlops.rollout import approval_required

                return "approve_final_step" if approval_required(params["model"]) else final_bake

            @task
            def raise_after_approval(params: dict[str, Any], **context: Any) -> dict[str, Any]:
                from neuracrm_mlops.ledger import actor_for_dag
                from neuracrm_mlops.pipelines import apply_review

                review = context["ti"].xcom_pull(task_ids="approve_final_step")
                return apply_review(params["model"], review, actor=actor_for_dag(context))

            @task(trigger_rule="all_skipped")
            def handle_rejection(params: dict[str, Any], **context: Any) -> dict[str, Any]:
                from neuracrm_mlops.ledger import actor_for_dag
                from neuracrm_mlops.pipelines import apply_review

                review = context["ti"].xcom_pull(task_ids="approve_final_step")
                return apply_review(params["model"], review, actor=actor_for_dag(context))

            gate = approval_gate()
            raised = raise_after_approval()
            rejected = handle_rejection()
            previous >> gate >> [approve, baked]
            approve >> raised >> rejected >> baked
        else:
            previous >> baked
        judged = judge()
        baked >> judged
        previous = judged


rollout_model()
