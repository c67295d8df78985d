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


def validate_for_training(dataset: str, *, run_id: str, organization_id: int | None = None) -> dict[str, Any]:
    """Validate ``dataset`` with its Great Expectations suite (``quality.validation``, imported here
    when called: it is heavy); raise ValidationFailedError when critical. The lineage summary."""
    from neuracrm_mlops.quality import validation

    return validation.validate_for_training(dataset, run_id=run_id, organization_id=organization_id)


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


# -- rollout (the rollout_<family> DAGs, one per family, dispatched on the family's rollout strategy) --
# traffic_share: one registered model (``release.rollout``); organization_cohort: a share of the
# organizations' forecast models (``release.forecast_cohorts``); call_share: every voice scenario with a
# challenger, each on its own share of calls (``release.scenario_rollout``), in one run of the DAG.


def _strategy(model: str) -> str:
    """The rollout strategy of ``model`` (a family name); anything else rolls out by traffic share."""
    family = FAMILIES.get(model)
    return family.rollout_strategy if family is not None else "traffic_share"


def _by_cohort(model: str) -> bool:
    """Whether ``model`` names a family that rolls out by organization cohorts (``forecast_rollout``)."""
    return _strategy(model) == "organization_cohort"


def start_canary(model: str, *, actor: str) -> dict[str, Any]:
    """Start the canary of ``model`` (a family, e.g. lead_scoring or sales_forecast); ``running`` says
    whether there is a canary to bake (False: nothing to roll out, or promoted at once)."""
    from neuracrm_mlops.release import forecast_cohorts as forecast_rollout
    from neuracrm_mlops.release import rollout
    from neuracrm_mlops.store.db.engine import get_engine

    strategy = _strategy(model)
    if strategy == "call_share":
        return _start_scenario_canaries(actor)
    try:
        if strategy == "organization_cohort":
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

    strategy = _strategy(model)
    if strategy == "call_share":
        return _scenario_canaries_baked()
    if strategy == "organization_cohort":
        return forecast_rollout.bake_ready(engine=get_engine(), family=model)
    status = rollout.bake_status(model)
    return status.ready, status.detail


def judge_canary(model: str, *, actor: str) -> dict[str, Any]:
    """Judge the current step and act on it; ``action`` is next_step when the rollout goes on."""
    from neuracrm_mlops.release import forecast_cohorts as forecast_rollout
    from neuracrm_mlops.release import rollout
    from neuracrm_mlops.store.db.engine import get_engine

    strategy = _strategy(model)
    if strategy == "call_share":
        return _judge_scenario_canaries(actor)
    if strategy == "organization_cohort":
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
    approved = chosen == ["Approve"]
    reason = (
        f"final step approved by {who}"
        if approved
        else f"final step rejected by {who} ({chosen or 'no answer'})"
    )
    if _strategy(model) == "call_share":
        return _review_scenario_canaries(approved, actor=actor, reason=reason)
    if approved:
        result = rollout.raise_to_final_step(model, actor=actor, reason=reason)
    else:
        result = rollout.abort(model, actor=actor, reason=reason, reject=True)
    return result.as_dict()


# -- voice scenarios (strategy call_share): every scenario's canary in one rollout_voice_scenario run --


def _scenarios(client: Any) -> list[Any]:
    """Every registered scenario's aliases and canary weight (``prompt_registry.LiveScenario``)."""
    from neuracrm_mlops.store import prompt_registry

    return [prompt_registry.live_scenario(client, name) for name in prompt_registry.list_scenarios(client)]


def _running(live: Any) -> bool:
    return live.champion is not None and live.challenger is not None and live.canary_weight > 0


def _family_result(action: str, results: list[dict[str, Any]], reason: str, **extra: Any) -> dict[str, Any]:
    return {"action": action, "reason": reason, "scenarios": results, **extra}


def _start_scenario_canaries(actor: str) -> dict[str, Any]:
    """Start the canary of every scenario whose challenger waits at weight 0; ``running``: whether any
    scenario has a canary to bake now (started here, or by an earlier run and not finished)."""
    from neuracrm_mlops.release import scenario_rollout
    from neuracrm_mlops.store.registry import configure_mlflow

    client = configure_mlflow()
    results = [
        scenario_rollout.start(live.scenario, actor, client=client).as_dict()
        for live in _scenarios(client)
        if live.champion is not None and live.challenger is not None and live.canary_weight <= 0
    ]
    running = [live.scenario for live in _scenarios(client) if _running(live)]
    started = [r["scenario"] for r in results if r["action"] == "start"]
    reason = (
        f"canaries running: {', '.join(running)}"
        + (f" (started now: {', '.join(started)})" if started else "")
        if running
        else "no scenario has a challenger to roll out"
    )
    return _family_result(
        "start" if started else "noop" if running else "none", results, reason, running=bool(running)
    )


def _scenario_canaries_baked() -> tuple[bool, str]:
    """Ready when every running scenario canary can be judged (enough analysed calls per arm, or its
    step's deadline passed); the detail names each scenario's numbers."""
    from neuracrm_mlops.release import scenario_rollout
    from neuracrm_mlops.store.registry import configure_mlflow

    client = configure_mlflow()
    statuses = [
        (live.scenario, *scenario_rollout.bake_status(live.scenario, client=client))
        for live in _scenarios(client)
        if _running(live)
    ]
    if not statuses:
        return True, "no scenario canary running"
    return all(ready for _, ready, _ in statuses), "; ".join(
        f"{name}: {detail}" for name, _, detail in statuses
    )


def _judge_scenario_canaries(actor: str) -> dict[str, Any]:
    """Judge every running scenario canary on call success and act on each; ``action`` next_step (the
    DAG goes on) while any scenario moved to its next step, awaiting_approval when any waits for a
    reviewer, else the last scenario's action (promote, reject, wait, noop)."""
    from neuracrm_mlops.release import scenario_rollout
    from neuracrm_mlops.store.registry import configure_mlflow

    client = configure_mlflow()
    results = [
        scenario_rollout.judge(live.scenario, actor, client=client).as_dict()
        for live in _scenarios(client)
        if _running(live)
    ]
    if not results:
        return _family_result("noop", [], "no scenario canary running")
    actions = [r["action"] for r in results]
    action = next((a for a in ("awaiting_approval", "next_step") if a in actions), actions[-1])
    reason = "; ".join(f"{r['scenario']}: {r['action']} ({r['reason']})" for r in results)
    return _family_result(action, results, reason)


def _review_scenario_canaries(approved: bool, *, actor: str, reason: str) -> dict[str, Any]:
    """A reviewer's answer for every running scenario canary: approved -> each to the final step's
    weight; rejected -> each out of traffic, its challenger tagged rejected."""
    from neuracrm_mlops.release import scenario_rollout
    from neuracrm_mlops.store.registry import configure_mlflow

    client = configure_mlflow()
    results = []
    for live in _scenarios(client):
        if not _running(live):
            continue
        if approved:
            done = scenario_rollout.raise_to_final_step(live.scenario, actor, reason=reason, client=client)
        else:
            done = scenario_rollout.abort(live.scenario, actor, reason=reason, reject=True, client=client)
        results.append(done.as_dict())
    action = ("next_step" if approved else "reject") if results else "noop"
    return _family_result(action, results, reason)


# -- monitoring of the families that are not one shared model (monitor_models' monitor_<family>s) -----


def monitor_family(family: str, *, actor: str) -> dict[str, Any]:
    """One monitoring pass over every item of a per-organization or per-scenario family: each
    organization's forecast champion (``monitor_forecasts``) or each scenario champion's call success
    (``scenario_rollout.monitor``), with their rollbacks and alerts. ``retrain``: whether a retraining
    should be asked for (only families with ``checks.retrain_after_rollback``)."""
    trained = get_family(family)
    if trained.naming == "per_scenario":
        return _monitor_scenarios(actor)
    from neuracrm_mlops.monitoring.monitor import monitor_forecasts

    summary = monitor_forecasts(actor=actor).as_dict()
    return {**summary, "retrain": bool(summary["retrain"]) and trained.checks.retrain_after_rollback}


def _monitor_scenarios(actor: str) -> dict[str, Any]:
    from neuracrm_mlops.release import scenario_rollout
    from neuracrm_mlops.store.registry import configure_mlflow

    client = configure_mlflow()
    results = [
        scenario_rollout.monitor(live.scenario, actor, client=client).as_dict()
        for live in _scenarios(client)
        if live.champion is not None
    ]
    by_action: dict[str, list[str]] = {}
    for result in results:
        by_action.setdefault(result["action"], []).append(result["scenario"])
    return {
        "scenarios": len(results),
        "rolled_back": by_action.get("rollback", []),
        "below_floor_kept": by_action.get("keep", []),
        "insufficient_data": by_action.get("insufficient_data", []),
        "results": results,
        "retrain": False,  # a prompt is not retrained: a person fixes the scenario file
    }
