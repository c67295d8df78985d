"""Register the voice scenarios: the files in git become versions in MLflow's prompt registry.

validate_scenario_files: every file of NEURACRM_SCENARIOS_DIR (the repository's ``scenarios/``) read and
checked strictly (fields, types, ranges, template variables the platform can fill), all of them before
any is registered; one bad file fails the run (no retry: a bad file does not fix itself) and nothing is
registered. register_scenario_versions: each file whose content changed becomes a new prompt version
with its semantic version (major: variables, minor: settings or words, patch: wording); a scenario's
first version becomes champion, a later one challenger at canary weight 0; every alias move is in the
promotion ledger (``neuracrm-mlops scenario register FILE`` does the same for one file).
challenger_registered -> announce_challenger: emits ``neuracrm://registry/voice_scenario/challenger``
(which starts rollout_voice_scenario) only when a challenger was registered.
Runs hourly (at :10 UTC); unchanged files register nothing.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task

from neuracrm_mlops.ops.dag_support import (
    START_DATE,
    announce_challenger,
    default_args,
    registration_schedule,
    run_key,
)


@dag(
    dag_id="train_voice_scenario",
    schedule=registration_schedule("10 * * * *"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["neuracrm", "training", "voice_scenario"],
    default_args=default_args(),
    doc_md=__doc__,
)
def train_voice_scenario() -> None:
    @task
    def validate_scenario_files(**context: Any) -> dict[str, Any]:
        from airflow.exceptions import AirflowFailException

        from neuracrm_mlops.errors import NeuraCRMError
        from neuracrm_mlops.families import get_family

        try:
            return get_family("voice_scenario").validate(context["run_id"])
        except NeuraCRMError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def register_scenario_versions(validation: dict[str, Any], **context: Any) -> dict[str, Any]:
        from neuracrm_mlops.ops.pipelines import train_family

        return train_family(
            "voice_scenario", run_key=run_key(context), dag_run_id=context["run_id"], validation=validation
        )

    announce_challenger("voice_scenario", register_scenario_versions(validate_scenario_files()))


train_voice_scenario()
