"""Voice-agent scenarios (Retell AI): A/B rollout and monitoring by call success rate, hourly.

monitor_scenarios: each scenario champion's call success over the monitor window against the family's
floor (NEURACRM_ACCURACY_FLOORS ``voice_scenario``, else NEURACRM_ACCURACY_FLOOR); below it, the
previous champion is put back when it did not do worse on record, and one critical alert pages.
roll_out_scenarios: each scenario with a challenger (``neuracrm-mlops scenario register`` makes one
at weight 0) gets its canary started (10% of calls), or its running step judged on call success
against the champion with the models' rules (enough analysed calls per version, the floor, the
tolerance): next step (10 -> 50 -> 100%), promote at the last one, reject when worse, or wait.
The same calls as ``neuracrm-mlops scenario monitor|rollout NAME`` (``release.scenario_rollout``).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task

from neuracrm_mlops.ops.dag_support import START_DATE, default_args


@dag(
    dag_id="voice_scenarios",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["neuracrm", "voice_scenario", "rollout", "monitoring"],
    default_args=default_args(),
    doc_md=__doc__,
)
def voice_scenarios() -> None:
    @task
    def monitor_scenarios(**context: Any) -> list[dict[str, Any]]:
        from neuracrm_mlops.ops.pipelines import monitor_scenarios as monitor
        from neuracrm_mlops.store.ledger import actor_for_dag

        return monitor(actor=actor_for_dag(context))

    @task
    def roll_out_scenarios(**context: Any) -> list[dict[str, Any]]:
        from neuracrm_mlops.ops.pipelines import roll_out_scenarios as roll_out
        from neuracrm_mlops.store.ledger import actor_for_dag

        return roll_out(actor=actor_for_dag(context))

    monitor_scenarios() >> roll_out_scenarios()


voice_scenarios()
