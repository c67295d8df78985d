"""Roll a challenger out to traffic in canary steps (10% -> 50% -> 100% by default), one DAG per model
family: rollout_lead_scoring, rollout_sentiment and rollout_sales_forecast (one factory, this file).

Each runs when train_<family> registered a challenger (asset ``neuracrm://registry/<family>/challenger``)
and daily at 06:00 UTC as a safety net (with no challenger waiting the run ends at once).

start_canary: the challenger gets the first step's weight (a model with no champion is promoted
at once). Then, per step: bake_step_N waits (a sensor in reschedule mode: no worker slot is held)
until both versions have NEURACRM_MIN_OUTCOMES labelled outcomes or the step's deadline passes;
judge_step_N compares challenger and champion on live accuracy, error rate and p95 latency and
acts: next step, promote at 100% (the old champion keeps alias ``previous``), reject (weight 0,
tagged rejected, alert), or hold (alert after the deadline; never promotes). Anything but "next
step" ends the run. Every change is in the promotion ledger. For the families listed in
NEURACRM_ROLLOUT_APPROVAL (none by default) a reviewer approves or rejects the final step in the
Airflow UI or over its REST API (approval_gate -> approve_final_step, Airflow's human-in-the-loop
operator with the options "Approve" and "Reject"; no answer by the deadline rejects) ->
raise_after_approval (on "Approve") / handle_rejection (on "Reject"); the others go straight on.
Forecasts roll out by cohorts of organizations (the weight is the share of organizations), each
organization judged on its own new actuals (``neuracrm_mlops.release.forecast_cohorts``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import DAG, PokeReturnValue, dag, task

from neuracrm_mlops.ops.dag_support import (
    FAMILIES,
    START_DATE,
    bake_poke_seconds,
    bake_timeout_seconds,
    default_args,
    rollout_schedule,
    rollout_step_count,
)


def _carry_out_review(family: str, context: Any, *, approved: bool) -> dict[str, Any]:
    """raise_after_approval (``approved``) or handle_rejection: carry out the reviewer's answer when it
    is this task's case (no answer by the deadline counts as "Reject"), else skip this task."""
    from airflow.exceptions import AirflowSkipException
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from neuracrm_mlops.ops.pipelines import apply_review
    from neuracrm_mlops.store.ledger import actor_for_dag

    review = dict(context["ti"].xcom_pull(task_ids="approve_final_step") or {})
    chosen = list(review.get("chosen_options") or [])
    if (chosen == [ApprovalOperator.APPROVE]) != approved:
        raise AirflowSkipException(f"the reviewer answered {chosen or 'nothing'}: not this task's case")
    who = review.get("responded_by_user")
    if isinstance(who, dict):  # {"id": ..., "name": ...}: the ledger names the reviewer
        review["responded_by_user"] = who.get("name") or who.get("id")
    return apply_review(family, review, actor=actor_for_dag(context))


def rollout_dag(family: str) -> DAG:
    """The rollout DAG of one model family (dag id ``rollout_<family>``)."""

    @dag(
        dag_id=f"rollout_{family}",
        schedule=rollout_schedule(family),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["neuracrm", "rollout", family],
        default_args=default_args(),
        doc_md=__doc__,
    )
    def rollout() -> None:
        @task.short_circuit
        def start_canary(**context: Any) -> bool:
            from neuracrm_mlops.ops.pipelines import start_canary
            from neuracrm_mlops.store.ledger import actor_for_dag

            result = start_canary(family, actor=actor_for_dag(context))
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
            def bake() -> PokeReturnValue:
                from neuracrm_mlops.ops.pipelines import canary_baked

                ready, detail = canary_baked(family)
                print(detail)
                return PokeReturnValue(is_done=ready, xcom_value=detail)

            @task.short_circuit(task_id=f"judge_step_{step}")
            def judge(**context: Any) -> bool:
                from neuracrm_mlops.ops.pipelines import judge_canary
                from neuracrm_mlops.store.ledger import actor_for_dag

                result = judge_canary(family, actor=actor_for_dag(context))
                print(result)
                return result["action"] in ("next_step", "awaiting_approval")

            baked = bake()
            if final:
                # optional human approval before the final step (NEURACRM_ROLLOUT_APPROVAL lists the
                # families). The HITL operator with the ApprovalOperator's two options, not the
                # ApprovalOperator itself: on "Reject" that one skips its downstream tasks by raising
                # before it returns, so the answer never reaches XCom (nobody to name in the ledger)
                # and, on Airflow 3.3.2, the resumed task could end up waiting for input again. Here
                # the answer is always returned, and each review task acts on its own case.
                approve = HITLOperator(
                    task_id="approve_final_step",
                    subject=f"Promote {family}'s challenger to all traffic?",
                    options=[ApprovalOperator.APPROVE, ApprovalOperator.REJECT],
                    body=(
                        f"The canary of {family} passed every step so far on live accuracy, error rate "
                        "and p95 latency (see the promotion ledger and the judge_step logs). Approve to give "
                        "it the final step's traffic; reject to take it out of traffic and tag it rejected."
                    ),
                    defaults=ApprovalOperator.REJECT,
                    response_timeout=dt.timedelta(seconds=bake_timeout_seconds()),
                )

                @task.branch
                def approval_gate(final_bake: str = f"bake_step_{step}") -> str:
                    from neuracrm_mlops.release.rollout import approval_required

                    return "approve_final_step" if approval_required(family) else final_bake

                @task
                def raise_after_approval(**context: Any) -> dict[str, Any]:
                    return _carry_out_review(family, context, approved=True)

                @task
                def handle_rejection(**context: Any) -> dict[str, Any]:
                    return _carry_out_review(family, context, approved=False)

                gate = approval_gate()
                previous >> gate >> [approve, baked]
                approve >> [raise_after_approval(), handle_rejection()] >> baked
            else:
                previous >> baked
            judged = judge()
            baked >> judged
            previous = judged

    return rollout()


for _family in FAMILIES:
    rollout_dag(_family)
