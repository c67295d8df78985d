"""Voice-agent scenarios (Retell AI): one registered *prompt* per scenario (``voice_scenario.<scenario>``,
MLflow's prompt registry), "trained" by registering the scenario files in git, rolled out by share of
calls (sticky by contact) and judged on call success: the share of analysed calls Retell marked
successful (``POST /voice/events``).

Training here is registration: ``validate`` checks every file of NEURACRM_SCENARIOS_DIR (the
repository's ``scenarios/`` by default) strictly, all before any is registered; ``train`` registers
each file whose content changed (a first version becomes champion, a later one challenger at canary
weight 0, which starts rollout_voice_scenario). A rollback below the floor asks for no retraining:
a scenario's prompt changes only when a person edits its file.
"""

from __future__ import annotations

from typing import Any

from neuracrm_mlops.families.base import CliTrain, FamilySpec, MonitoringChecks, TrainRequest

NAME = "voice_scenario"
SUCCESSFUL, UNSUCCESSFUL = "successful", "unsuccessful"


def validate(run_id: str) -> dict[str, Any]:
    """Every scenario file read and checked (fields, variables); ScenarioFileError names each bad one."""
    from neuracrm_mlops.training.scenarios import scenario_files_summary

    return scenario_files_summary(run_id)


def train(request: TrainRequest) -> dict[str, Any]:
    """Register every changed scenario file; counts by outcome (``challenger`` announces a rollout)."""
    from neuracrm_mlops.store.ledger import actor_for_cli, actor_for_dag
    from neuracrm_mlops.training.scenarios import register_scenario_files

    run = request.lineage.dag_run_id
    actor = actor_for_cli() if run == "cli" else actor_for_dag(f"train_{NAME}", run)
    return register_scenario_files(actor=actor)


FAMILY = FamilySpec(
    name=NAME,
    dataset="scenarios",  # the scenario files in git, not a CRM dataset: checked by ``validate``
    validation_suite="scenario_files",
    naming="per_scenario",
    model_prefix="voice_scenario.",  # store.prompt_registry.PROMPT_PREFIX
    fallback="no scenario version: the Retell agent's own prompt",
    rollout_strategy="call_share",
    accuracy_measure="call_success",
    trainer=train,
    validator=validate,
    outcome_labels=(SUCCESSFUL, UNSUCCESSFUL),
    # what CRM exports (and Retell's call_analysis.call_successful) write for a call's outcome
    outcome_aliases={
        **dict.fromkeys(("true", "1", "yes", "y", "t", "success"), SUCCESSFUL),
        **dict.fromkeys(("false", "0", "no", "n", "f", "failure", "failed"), UNSUCCESSFUL),
    },
    # no served features (drift) or bias attribute, no model latency: call success is the measure
    checks=MonitoringChecks(drift=False, bias=False, health=False, retrain_after_rollback=False),
    cli_train=CliTrain(),
)
