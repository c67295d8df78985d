"""Forecast rollouts by cohorts of organizations.

A forecast is one registered model per organization (``sales_forecast_org_<id>``), so the canary
weight is a share of organizations: every organization model with a challenger carries the family's
weight in its ``canary_weight`` tag, and serving routes the organization to its challenger when
``routing.bucket(org, org)`` falls under it (``routing.canary_cohort``). Raising the weight only adds
organizations to the cohort, never moves one back.

Each organization in the cohort is judged on its own new actuals: its challenger's accuracy
(``max(0, 1 - WAPE)``) over the months it forecast since the organization entered the cohort,
against its champion's over the monitoring window before, with ``decide_rollout_step`` and
NEURACRM_FORECAST_MIN_OUTCOMES (3) months; the family's verdict is the pure
``rollout_decisions.decide_cohort_step``, and this module only gathers its numbers and carries it
out. An organization whose challenger fails is rejected on its
own (weight 0, tagged rejected, one warning alert per organization); the others go on. The family
moves to the next step once every organization in the cohort passed; one still short of actuals
holds it (an alert once the step's deadline passed). At 100%, every organization that passed is
promoted (its old champion keeps ``previous``). An organization with no champion is promoted at once.

Every move is per organization model and atomic (``rollout_state``): under that model's lock, its
ledger row is committed ``pending`` before the registry calls and marked ``done`` after them; a crash
part-way leaves the row pending for ``rollout_state.reconcile_pending`` (a cohort weight move is
reverted to the organization's earlier weight, a promotion or rejection is finished).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.families import families_with, find_family, get_family
from neuracrm_mlops.inference.routing import bucket
from neuracrm_mlops.release import rollout
from neuracrm_mlops.release import state as rollout_state
from neuracrm_mlops.release.decisions import CohortMember, RolloutDecision, decide_cohort_step
from neuracrm_mlops.release.live_stats import load_outcomes, load_predictions, stats_from, version_stats
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.alerts import raise_alert
from neuracrm_mlops.store.db.schema import utcnow

log = logging.getLogger(__name__)

# the default cohort family (the registry's first family that rolls out by organization cohorts:
# sales_forecast); ``start``, ``judge`` and ``bake_ready`` take any cohort family's name
FAMILY = families_with(rollout_strategy="organization_cohort")[0].name
COHORT_TAG = rollout.COHORT_TAG


@dataclass
class CohortResult:
    action: str  # start | next_step | promote | hold | noop
    weight: float
    reason: str
    promoted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    holding: list[int] = field(default_factory=list)
    passed: list[int] = field(default_factory=list)
    alert_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _models_with_challenger(
    client: Any, family: str = FAMILY
) -> list[tuple[int, str, dict[str, str], dict[str, str]]]:
    """(organization, name, aliases, tags) of every organization model of ``family`` with a challenger."""
    prefix = get_family(family).model_prefix
    found = []
    for model in registry.models_with_prefix(client, prefix):
        aliases = {a: str(v) for a, v in (model.aliases or {}).items()}
        if registry.CHALLENGER in aliases:
            found.append((_organization_of(model.name), model.name, aliases, dict(model.tags or {})))
    return sorted(found)


def _organization_of(name: str) -> int:
    """The organization of a per-organization model (``sales_forecast_org_7`` -> 7)."""
    family = find_family(name)
    assert family is not None and family.naming == "per_organization", name
    return int(name[len(family.model_prefix) :])


def _in_cohort(organization: int, weight: float) -> bool:
    return bucket(organization, str(organization)) < weight


def _cohort_times(tags: dict[str, str], now: dt.datetime) -> tuple[dt.datetime, dt.datetime, bool]:
    """When the organization joined the cohort, when the rollout started, and whether the current
    step's deadline (NEURACRM_BAKE_DEADLINE_HOURS) has passed."""
    from neuracrm_mlops.config import get_settings

    entered = rollout.parse_time(tags.get(COHORT_TAG)) or now
    started = rollout.parse_time(tags.get(rollout.STARTED_TAG)) or entered
    step_started = rollout.parse_time(tags.get(rollout.STEP_STARTED_TAG)) or entered
    deadline = step_started + dt.timedelta(hours=get_settings().bake_deadline_hours)
    return entered, started, now >= deadline


def _move_weight(
    engine: sa.Engine,
    client: Any,
    actor: str,
    name: str,
    weight: float,
    reason: str,
    *,
    now: str,
    start: bool = False,
    new_step: bool = True,
) -> bool:
    """One organization model's part of a family weight move, atomic with its ledger row (under its
    lock): ``start`` marks the rollout's start, ``new_step`` the step's; a model joining the cohort
    gets its entry time. False when it has no challenger any more (promoted or rejected meanwhile)."""
    org = _organization_of(name)
    with rollout_state.locked_model(engine, name, actor=actor):
        model = rollout.registered_model(client, name)
        aliases = {a: str(v) for a, v in (model.aliases or {}).items()}
        if registry.CHALLENGER not in aliases:
            return False
        plan = rollout_state.RegistryPlan(client, name, "canary", model)
        if start:
            plan.model_tag(rollout.STARTED_TAG, now, "started_tag")
        if new_step:
            plan.model_tag(rollout.STEP_STARTED_TAG, now, "step_started_tag")
        plan.weight(weight)
        if _in_cohort(org, weight) and not dict(model.tags or {}).get(COHORT_TAG):
            plan.model_tag(COHORT_TAG, now, "cohort_tag")
        rollout_state.run_move(
            engine,
            plan,
            actor=actor,
            reason=reason,
            alias=registry.CHALLENGER,
            from_version=aliases.get(registry.CHAMPION),
            to_version=aliases[registry.CHALLENGER],
            weight=weight,
            metrics={"in_cohort": _in_cohort(org, weight)},
            organization_id=org,
        )
    return True


def start(*, actor: str, engine: sa.Engine, family: str = FAMILY) -> CohortResult:
    """Promote first versions; give the rest the first step's weight (the first cohort)."""
    client = registry.configure_mlflow()
    models = _models_with_challenger(client, family)
    if not models:
        raise rollout.RolloutError("no forecast model has a challenger: train forecasts first")
    promoted = []
    servable = []
    for model in models:
        org, name, aliases, _ = model
        try:
            rollout.require_servable(client, name, aliases[registry.CHALLENGER])
        except rollout.RolloutError as exc:
            log.error("organization %s: %s; its challenger is not rolled out", org, exc)
            rollout.abort(name, actor=actor, reason=str(exc), engine=engine, reject=True)
            continue
        servable.append(model)
    models = servable
    if not models:
        raise rollout.RolloutError("no forecast challenger can be served (see the log): retrain forecasts")
    for org, name, aliases, _ in models:
        if registry.CHAMPION not in aliases:
            rollout.promote(
                name, actor=actor, reason="first version: no champion to compare with", engine=engine
            )
            promoted.append(org)
    weight = rollout.rollout_policy(family).steps[0]
    now = utcnow().isoformat()
    waiting = [(org, name, aliases) for org, name, aliases, _ in models if registry.CHAMPION in aliases]
    cohort = [org for org, _, _ in waiting if _in_cohort(org, weight)]
    reason = (
        f"forecast canary started at {weight:.0%} of organizations: {len(cohort)} of {len(waiting)} "
        f"organizations with a challenger now forecast with it"
    )
    for _, name, _ in waiting:
        _move_weight(engine, client, actor, name, weight, reason, now=now, start=True)
    return CohortResult("start", weight, reason, promoted=promoted)


def judge(
    *, actor: str, engine: sa.Engine, now: dt.datetime | None = None, family: str = FAMILY
) -> CohortResult:
    """Judge every organization in the cohort; reject failures, then advance, promote or hold.

    The verdict is ``rollout_decisions.decide_cohort_step``'s; this function gathers its numbers and
    carries it out (rejections with their alerts, the inconclusive alert, promotions, weight moves)."""
    from neuracrm_mlops.config import get_settings

    settings = get_settings()
    now = now or utcnow()
    client = registry.configure_mlflow()
    models = [m for m in _models_with_challenger(client, family) if registry.canary_weight_of(m[3]) > 0]
    if not models:
        return CohortResult("noop", 0.0, "no forecast canary is running")
    weight = max(registry.canary_weight_of(m[3]) for m in models)
    cohort: list[CohortMember] = []
    deadline_passed = False
    for org, name, aliases, tags in models:
        if not _in_cohort(org, weight):
            continue
        entered, started, past_deadline = _cohort_times(tags, now)
        deadline_passed = deadline_passed or past_deadline
        champion_version, challenger_version = aliases[registry.CHAMPION], aliases[registry.CHALLENGER]
        # one read per organization: the champion's window (the monitoring window before the rollout)
        # holds the challenger's (since the organization joined the cohort)
        predictions = load_predictions(
            engine, name, since=started - dt.timedelta(hours=settings.monitor_window_hours)
        )
        outcomes = load_outcomes(engine, name)
        champion = stats_from(name, [champion_version], predictions, outcomes)[champion_version]
        since_entry = predictions[predictions["created_at"] >= entered]
        challenger = stats_from(name, [challenger_version], since_entry, outcomes)[challenger_version]
        cohort.append(CohortMember(org, champion, challenger, rollout.rollout_policy(name)))
    decision = decide_cohort_step(
        rollout.rollout_policy(family),
        weight,
        cohort,
        running=[m[0] for m in models],
        deadline_passed=deadline_passed,
    )
    result = CohortResult(
        "hold",
        weight,
        decision.reason,
        passed=list(decision.passed),
        holding=list(decision.holding),
    )
    by_org = {org: (name, aliases) for org, name, aliases, _ in models}
    for org in decision.rejected:
        _reject(engine, actor, org, *by_org[org], decision.verdicts[org], result)
    if decision.action == "hold":
        if decision.alert:
            alert = raise_alert(
                engine,
                kind="canary_inconclusive",
                severity="warning",
                title=f"{family}: cohort canary inconclusive at {weight:.0%}",
                message=decision.reason,
                dedup_key=f"canary_inconclusive:{family}:{weight}",
                model_name=family,
                metrics={"holding": list(decision.holding[:50]), "passed": len(decision.passed)},
                action_taken=f"held at {weight:.0%} of organizations; nothing promoted",
                runbook=rollout.runbook_canary_hold(family),
            )
            result.alert_ids.append(alert.id)
        return result
    if decision.action == "promote":
        for org in decision.promote:
            rollout.promote(
                by_org[org][0],
                actor=actor,
                reason=f"forecast canary passed at 100% of organizations on organization {org}'s actuals",
                engine=engine,
            )
            result.promoted.append(org)
        result.action = "promote"
        return result
    assert decision.next_weight is not None
    now_iso = now.isoformat()
    stepping = {by_org[org][0] for org in by_org if org not in decision.rejected}
    # every organization model with a challenger takes the family's weight (one whose challenger
    # arrived during the rollout joins it); only those judged in this rollout start a new step
    for _, name, _, _ in _models_with_challenger(client, family):
        _move_weight(
            engine,
            client,
            actor,
            name,
            decision.next_weight,
            decision.reason,
            now=now_iso,
            new_step=name in stepping,
        )
    result.action, result.weight = "next_step", decision.next_weight
    return result


def _reject(
    engine: sa.Engine,
    actor: str,
    org: int,
    name: str,
    aliases: dict[str, str],
    verdict: RolloutDecision,
    result: CohortResult,
) -> None:
    """Reject one organization's failed challenger (its champion serves it again), with its alert."""
    champion_version, challenger_version = aliases[registry.CHAMPION], aliases[registry.CHALLENGER]
    rollout.abort(
        name, actor=actor, reason=verdict.reason, metrics=dict(verdict.metrics), engine=engine, reject=True
    )
    alert = raise_alert(
        engine,
        kind="canary_failed",
        severity="warning",
        title=f"{name}: forecast canary v{challenger_version} failed for organization {org}",
        message=verdict.reason,
        dedup_key=f"canary_failed:{name}:{challenger_version}",
        model_name=name,
        model_version=challenger_version,
        organization_id=org,
        metrics=dict(verdict.metrics),
        action_taken=f"organization {org} back on champion v{champion_version}; challenger rejected",
        runbook=rollout.RUNBOOK_CANARY_FAILED,
        links=registry.version_links(name, challenger_version),
    )
    result.rejected.append(org)
    result.alert_ids.append(alert.id)


def bake_ready(*, engine: sa.Engine, family: str = FAMILY) -> tuple[bool, str]:
    """For the sensor: every cohort organization has enough actuals, or a step deadline passed."""
    client = registry.configure_mlflow()
    models = [m for m in _models_with_challenger(client, family) if registry.canary_weight_of(m[3]) > 0]
    if not models:
        return True, "no forecast canary is running"
    weight = max(registry.canary_weight_of(m[3]) for m in models)
    minimum = rollout.min_outcomes_for(family)
    short = []
    for org, name, aliases, tags in models:
        if not _in_cohort(org, weight):
            continue
        entered, _, past_deadline = _cohort_times(tags, utcnow())
        if past_deadline:
            return True, "the step's deadline passed"
        stats = version_stats(engine, name, [aliases[registry.CHALLENGER]], since=entered)
        if stats[aliases[registry.CHALLENGER]].outcomes < minimum:
            short.append(org)
    return not short, f"{len(short)} cohort organization(s) below {minimum} months of actuals"
