"""The DAG task bodies, as plain functions: each DAG task is one call into this module.

They return small JSON-friendly dicts (XCom-sized) and raise on failure; the CLI calls the same
functions, so nothing here needs Airflow.
"""

from __future__ import annotations

from typing import Any

from neuracrm_mlops.families import FAMILIES, TrainRequest, get_family
from neuracrm_mlops.training.train import Lineage

# the CRM dataset each family trains on, from the family registry
FAMILY_DATASETS = {name: family.dataset for name, family in FAMILIES.items()}
VALIDATION_SUMMARY_KEYS = (
    "dataset",
    "organization_id",
    "row_count",
    "success",
    "run_row_id",
    "data_docs_path",
    "snapshot_hash",
    "critical_failures",
    "warning_failures",
)


def validate_for_training(dataset: str, *, run_id: str, organization_id: int | None = None) -> dict[str, Any]:
    """Validate ``dataset`` with its Great Expectations suite; raise ValidationFailedError when critical.

    Alerts are written by the validation library in both cases (critical: training blocked;
    warning: training goes on). Returns the validation summary that training logs as lineage.
    """
    from neuracrm_mlops.quality.validation import require_valid, validate_dataset

    report = validate_dataset(dataset, organization_id, run_id=run_id)
    require_valid(report)
    full = report.as_dict()
    return {key: full[key] for key in VALIDATION_SUMMARY_KEYS if key in full}


def train_family(
    family: str,
    *,
    run_key: str,
    dag_run_id: str,
    validation: dict[str, Any],
    organization: str | int | None = None,
) -> dict[str, Any]:
    """Train, gate and register one model family (per-organization families: every organization, or
    ``organization``) with the family's trainer (``families``)."""
    trained = get_family(family)  # UnknownFamilyError (a ValueError) names the registered families
    lineage = Lineage(run_key=run_key, dag_run_id=dag_run_id, validation=validation)
    return trained.train(TrainRequest(lineage, organization=organization))


def train_forecast_chunk(
    organization_ids: list[int], *, run_key: str, dag_run_id: str, validation: dict[str, Any]
) -> dict[str, Any]:
    """One mapped task of the forecast DAG: train and register a chunk of organizations."""
    from neuracrm_mlops.training.forecasts import train_forecast_chunk as train_chunk

    lineage = Lineage(run_key=run_key, dag_run_id=dag_run_id, validation=validation)
    summary: dict[str, Any] = train_chunk(organization_ids, lineage).as_dict()
    return summary


def summarize_forecast_chunks(results: list[dict[str, Any]]) -> dict[str, int]:
    """Organizations per status over every chunk of a forecast DAG run."""
    counts: dict[str, int] = {}
    for result in results:
        for status, count in result["status_counts"].items():
            counts[status] = counts.get(status, 0) + count
    return counts


# -- rollout (the rollout_<family> DAGs; forecasts roll out by cohorts of organizations) ----------


def _by_cohort(model: str) -> bool:
    """Whether ``model`` names a family that rolls out by organization cohorts (``forecast_rollout``);
    anything else rolls out by traffic share (``rollout``)."""
    family = FAMILIES.get(model)
    return family is not None and family.rollout_strategy == "organization_cohort"


def start_canary(model: str, *, actor: str) -> dict[str, Any]:
    """Start the canary of ``model`` (a family, e.g. lead_scoring or sales_forecast); ``running`` says
    whether there is a canary to bake (False: nothing to roll out, or promoted at once)."""
    from neuracrm_mlops.release import forecast_cohorts as forecast_rollout
    from neuracrm_mlops.release import rollout
    from neuracrm_mlops.store.db.engine import get_engine

    try:
        if _by_cohort(model):
            cohort = forecast_rollout.start(actor=actor, engine=get_engine(), family=model)
            return {**cohort.as_dict(), "running": cohort.weight > 0}
        result = rollout.start_rollout(model, actor=actor)
    except rollout.RolloutError as exc:
        return {"action": "none", "reason": str(exc), "running": False}
    return {**result.as_dict(), "running": result.action in ("start", "noop") and result.weight > 0}


def canary_baked(model: str) -> tuple[bool, str]:
    """Whether the current step has enough outcomes to judge (or its deadline passed)."""
    from neuracrm_mlops.release import forecast_cohorts as forecast_rollout
    from neuracrm_mlops.release import rollout
    from neuracrm_mlops.store.db.engine import get_engine

    if _by_cohort(model):
        return forecast_rollout.bake_ready(engine=get_engine(), family=model)
    status = rollout.bake_status(model)
    return status.ready, status.detail


def judge_canary(model: str, *, actor: str) -> dict[str, Any]:
    """Judge the current step and act on it; ``action`` is next_step when the rollout goes on."""
    from neuracrm_mlops.release import forecast_cohorts as forecast_rollout
    from neuracrm_mlops.release import rollout
    from neuracrm_mlops.store.db.engine import get_engine

    if _by_cohort(model):
        return forecast_rollout.judge(actor=actor, engine=get_engine(), family=model).as_dict()
    return rollout.judge_step(model, actor=actor).as_dict()


def apply_review(model: str, review: dict[str, Any] | None, *, actor: str) -> dict[str, Any]:
    """Carry out a reviewer's answer before the final step: approve -> the final weight, reject ->
    the challenger out of traffic and tagged rejected. ``None`` (no review asked): nothing."""
    from neuracrm_mlops.release import rollout

    if not review:
        return {"action": "none", "reason": "no review was asked"}
    chosen = list(review.get("chosen_options") or [])
    who = review.get("responded_by_user") or review.get("responded_by") or "a reviewer"
    if chosen == ["Approve"]:
        result = rollout.raise_to_final_step(model, actor=actor, reason=f"final step approved by {who}")
    else:
        result = rollout.abort(
            model, actor=actor, reason=f"final step rejected by {who} ({chosen or 'no answer'})", reject=True
        )
    return result.as_dict()


# -- voice scenarios (the voice_scenarios DAG; the same calls as `scenario rollout|monitor`) --------


def roll_out_scenarios(*, actor: str) -> list[dict[str, Any]]:
    """For every scenario with a challenger: start its canary (at weight 0) or judge the running step
    on call success (``release.scenario_rollout``); scenarios without a challenger are left alone."""
    from neuracrm_mlops.release import scenario_rollout
    from neuracrm_mlops.store import prompt_registry
    from neuracrm_mlops.store.registry import configure_mlflow

    client = configure_mlflow()
    results = []
    for scenario in prompt_registry.list_scenarios(client):
        live = prompt_registry.live_scenario(client, scenario)
        if live.challenger is None or live.champion is None:
            continue
        step = scenario_rollout.judge if live.canary_weight > 0 else scenario_rollout.start
        results.append(step(scenario, actor, client=client).as_dict())
    return results


def monitor_scenarios(*, actor: str) -> list[dict[str, Any]]:
    """Every scenario champion's call success against the family's floor: rollback (never to a
    version that did worse) and one paging alert below it (``scenario_rollout.monitor``)."""
    from neuracrm_mlops.release import scenario_rollout
    from neuracrm_mlops.store import prompt_registry
    from neuracrm_mlops.store.registry import configure_mlflow

    client = configure_mlflow()
    return [
        scenario_rollout.monitor(scenario, actor, client=client).as_dict()
        for scenario in prompt_registry.list_scenarios(client)
        if prompt_registry.version_by_alias(client, scenario, "champion") is not None
    ]
