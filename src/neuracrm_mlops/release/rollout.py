"""Canary rollout and rollback: the thin callers around the pure decisions of ``rollout_decisions``.

State lives where serving reads it: the MLflow aliases (``champion``, ``challenger``, ``previous``)
and registered-model tags (``canary_weight``, ``canary_started_at`` for the rollout,
``canary_step_started_at`` for the current step). Every alias or weight change is written to the
promotion ledger with the actor, the reason and the numbers behind it, atomically: each move runs
under the per-model lock, commits its ledger row ``pending`` before its registry calls and marks it
``done`` after them; a move a crash cut short is finished or reverted by
``rollout_state.reconcile_pending`` (``rollout_state`` has the rules).

- ``start_rollout``: the challenger gets the first step's weight (10% by default). A model with no
  champion yet has nothing to compare with: its challenger is promoted at once (ledger says so).
- ``bake_status``: whether both versions have enough labelled outcomes to judge the current step,
  and whether the step's deadline passed (the rollout DAG's sensor waits on this).
- ``judge_step``: gathers live numbers (challenger: since the step started; champion: since the
  rollout started, since at 100% it serves nothing new), calls ``decide_rollout_step`` and carries
  the decision out: next weight, promote, reject (weight 0, ``status=rejected`` with the reason,
  an alert), or hold (an alert once the deadline passed; an inconclusive rollout never promotes).
- ``promote`` / ``abort`` / ``rollback``: the same moves for the CLI and the monitor. ``rollback``
  only moves the champion if it is still the version the caller judged (read under the lock), so two
  monitors at once cannot both roll back. Its target is read from the champion
  alias history in the ledger (``plan_rollback``; the rules are in ``rollout_decisions``).
- Alert texts (``runbook_*``) name the versions and give the exact command for this model
  (``rollback_command``, ``train_command``): an alert never says something happened that did not.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.errors import NeuraCRMError
from neuracrm_mlops.families import families_with, find_family
from neuracrm_mlops.release import state as rollout_state
from neuracrm_mlops.release.decisions import (
    RollbackTarget,
    RolloutDecision,
    RolloutPolicy,
    choose_rollback_target,
    decide_rollout_step,
)
from neuracrm_mlops.release.live_stats import family_of, version_stats
from neuracrm_mlops.store import ledger, registry
from neuracrm_mlops.store.alerts import raise_alert
from neuracrm_mlops.store.db.schema import utcnow
from neuracrm_mlops.store.ledger import ChampionMove, champion_history_of

log = logging.getLogger(__name__)

STARTED_TAG = "canary_started_at"
STEP_STARTED_TAG = "canary_step_started_at"
COHORT_TAG = "canary_cohort_entered_at"  # forecasts: when the organization joined the canary cohort
RUNBOOK_CANARY_FAILED = (
    "The challenger was taken out of traffic and tagged rejected; the champion serves everything. "
    "Read the reason and the numbers, fix the model or the data, retrain; nothing else to undo."
)
MONITOR_DAG_ACTOR = "dag:monitor_models/"  # monitor passes whose DAG requests retraining after a rollback


def cli_model_args(name: str) -> str:
    """How the CLI names a registered model: ``lead_scoring``, or ``sales_forecast --org 7``."""
    organization = organization_of(name)
    return name if organization is None else f"{family_of(name)} --org {organization}"


def rollback_command(name: str, version: str | None) -> str:
    """The exact command that makes ``version`` champion of ``name`` (``VERSION`` when unknown)."""
    return f"neuracrm-mlops rollback {cli_model_args(name)} --to {version or 'VERSION'}"


def train_command(name: str) -> str:
    """The exact command that trains a new version of ``name``."""
    return f"neuracrm-mlops train {cli_model_args(name)}"


def runbook_canary_hold(name: str) -> str:
    """What to do about a canary held past its deadline, with the command that exists for ``name``
    (cohort rollouts have no CLI abort: they hold until the actuals arrive)."""
    family = find_family(name)
    if family is not None and family.rollout_strategy == "organization_cohort":
        return (
            "Not enough actuals to judge the organizations in the cohort before the deadline, so the "
            "cohort holds at its weight and nothing is promoted. Check that monthly sales are imported "
            f"for the organizations listed, then re-run the rollout_{family.name} DAG or "
            f"`neuracrm-mlops rollout {family.name} step`."
        )
    return (
        "Not enough labelled outcomes to judge the canary before the deadline, so it holds at its "
        "weight and nothing is promoted. Check that outcomes flow (simulate or import them), then "
        f"re-run the rollout_{family_of(name)} DAG or `neuracrm-mlops rollout {name} step`; to drop the "
        f"challenger instead: `neuracrm-mlops rollout {name} abort`."
    )


def retraining_line(name: str, actor: str) -> str:
    """Whether a rollback by ``actor`` starts retraining: only the monitor_models DAG requests it, with
    the asset event ``neuracrm://monitor/<family>/retrain`` that the family's training DAG is scheduled on."""
    if actor.startswith(MONITOR_DAG_ACTOR):
        family = family_of(name)
        return (
            f"retraining is requested by this monitor_models run "
            f"(asset neuracrm://monitor/{family}/retrain starts DAG train_{family})"
        )
    return f"retraining was not started (not run by the monitor_models DAG): `{train_command(name)}`"


def runbook_after_rollback(name: str, *, rolled_back: str, restored: str) -> str:
    """The runbook of an alert whose pass did roll the champion back, from ``rolled_back`` to
    ``restored``: what serves now, what to look at, and the exact undo."""
    return (
        f"v{restored} serves now (each service replica switches at its next registry poll, "
        f"NEURACRM_MODEL_POLL_SECONDS). Look for "
        f"the cause of v{rolled_back}'s drop: drift alerts, recent imports, the outcomes "
        f"(`neuracrm-mlops status`, the model health page); a fixed model comes back only through "
        f"a new rollout. To undo this rollback: `{rollback_command(name, rolled_back)}`."
    )


def runbook_without_rollback(name: str, *, champion: str, candidate: str | None) -> str:
    """The runbook of an alert whose pass changed nothing: ``champion`` still serves; ``candidate``
    is the earlier champion that could be restored by hand (None: there is none)."""
    by_hand = (
        f"To restore v{candidate} by hand anyway: `{rollback_command(name, candidate)}`."
        if candidate
        else f"No earlier champion can be restored; to serve another registered version: "
        f"`{rollback_command(name, None)}` with its number."
    )
    return (
        f"Nothing was changed: v{champion} keeps serving below the floor and no retraining was "
        f"started. Find the cause (drift alerts, recent imports, outcomes), then retrain: "
        f"`{train_command(name)}` and roll the new version out. {by_hand}"
    )


class RolloutError(NeuraCRMError):
    """A rollout command that cannot be carried out (says what is missing and what to do)."""


@dataclass(frozen=True)
class RolloutResult:
    model_name: str
    action: str  # start | next_step | promote | hold | rollback | abort | noop
    champion: str | None
    challenger: str | None
    weight: float
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)
    alert_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BakeStatus:
    ready: bool
    deadline_passed: bool
    detail: str


def organization_of(name: str) -> int | None:
    """The organization of a per-organization model (forecasts), None for shared models."""
    for family in families_with(naming="per_organization"):
        if name.startswith(family.model_prefix):
            return int(name[len(family.model_prefix) :])
    return None


def min_outcomes_for(name: str) -> int:
    """Labelled outcomes before a verdict, per family: NEURACRM_MIN_OUTCOMES (100) for leads and
    sentiment, NEURACRM_FORECAST_MIN_OUTCOMES (3 months with actuals) for a forecast."""
    from neuracrm_mlops.config import get_settings

    settings = get_settings()
    family = find_family(name)
    if family is not None and family.accuracy_measure == "one_minus_wape":  # outcomes are months
        return settings.forecast_min_outcomes
    return settings.min_outcomes


def floor_of(name: str) -> float:
    """The accuracy floor of a registered model: its family's, or its organization's own."""
    from neuracrm_mlops.config import get_settings

    return get_settings().floor_for(family_of(name), organization_of(name))


def rollout_policy(name: str, *, below_floor: bool = False) -> RolloutPolicy:
    """The canary policy for ``name`` (a registered model, or the family ``sales_forecast``).

    ``below_floor``: the challenger was registered as the best available below the floor; its canary
    compares it with the champion only (the floor is what monitoring pages on)."""
    from neuracrm_mlops.config import get_settings

    settings = get_settings()
    minimum = min_outcomes_for(name)
    return RolloutPolicy(
        steps=settings.rollout_steps,
        accuracy_floor=0.0 if below_floor else floor_of(name),
        min_outcomes=minimum,
        min_requests=minimum,
    )


def _engine(engine: sa.Engine | None) -> sa.Engine:
    from neuracrm_mlops.store.db.engine import get_engine

    return engine or get_engine()


def _now_iso() -> str:
    return utcnow().isoformat()


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class RolloutState:
    """Aliases, canary weight and rollout times of one registered model."""

    champion: str | None
    challenger: str | None
    previous: str | None
    weight: float
    started_at: dt.datetime | None
    step_started_at: dt.datetime | None


def registered_model(client: Any, name: str) -> Any:
    """The registered model ``name`` (one registry request, retried); RolloutError when it is not
    registered."""
    from mlflow.exceptions import MlflowException

    try:
        return rollout_state.retry_registry(lambda: client.get_registered_model(name), what=f"read {name}")
    except MlflowException as exc:
        raise RolloutError(f"no registered model {name!r} in MLflow: train it first") from exc


def registered_state(client: Any, name: str) -> RolloutState:
    """The rollout state of ``name`` (one registry request); RolloutError when it is not registered."""
    return state_of(registered_model(client, name))


def state_of(model: Any) -> RolloutState:
    """The rollout state of a registered model as MLflow returns it (from a get or a search)."""
    aliases = {a: str(v) for a, v in (model.aliases or {}).items()}
    tags = dict(model.tags or {})
    return RolloutState(
        champion=aliases.get(registry.CHAMPION),
        challenger=aliases.get(registry.CHALLENGER),
        previous=aliases.get(registry.PREVIOUS),
        weight=registry.canary_weight_of(tags),
        started_at=parse_time(tags.get(STARTED_TAG)),
        step_started_at=parse_time(tags.get(STEP_STARTED_TAG)),
    )


def _record_hold(
    engine: sa.Engine,
    actor: str,
    name: str,
    state: RolloutState,
    reason: str,
    *,
    metrics: dict[str, Any] | None = None,
) -> None:
    """A ledger row about a canary held at its weight (nothing moves in the registry)."""
    ledger.record_change(
        engine,
        actor=actor,
        model_name=name,
        organization_id=organization_of(name),
        action="hold",
        alias=registry.CHALLENGER,
        from_version=state.champion,
        to_version=state.challenger,
        weight=state.weight,
        reason=reason,
        metrics=metrics or {},
    )


def _move_canary(
    engine: sa.Engine,
    actor: str,
    plan: rollout_state.RegistryPlan,
    state: RolloutState,
    weight: float,
    reason: str,
    *,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Carry out a canary weight move (``plan``) with its ledger row, champion -> challenger."""
    rollout_state.run_move(
        engine,
        plan,
        actor=actor,
        reason=reason,
        alias=registry.CHALLENGER,
        from_version=state.champion,
        to_version=state.challenger,
        weight=weight,
        metrics=metrics,
        organization_id=organization_of(plan.name),
    )


def _plan_step(plan: rollout_state.RegistryPlan, weight: float) -> None:
    """A new canary step: the weight, and the step's start time."""
    plan.weight(weight)
    plan.model_tag(STEP_STARTED_TAG, _now_iso(), "step_started_tag")


def _clear_canary(plan: rollout_state.RegistryPlan) -> None:
    """The challenger out of traffic: weight 0, the rollout's times removed."""
    plan.weight(0.0)
    for tag, label in (
        (STARTED_TAG, "started_tag"),
        (STEP_STARTED_TAG, "step_started_tag"),
        (COHORT_TAG, "cohort_tag"),
    ):
        plan.model_tag(tag, None, label)


def model_state(name: str) -> dict[str, Any]:
    """Aliases, weight and rollout times of one registered model (for status and the CLI)."""
    state = registered_state(registry.configure_mlflow(), name)
    return {
        "champion": state.champion,
        "challenger": state.challenger,
        "previous": state.previous,
        "canary_weight": state.weight,
        "canary_started_at": state.started_at.isoformat() if state.started_at else None,
    }


# -- starting, baking, judging --------------------------------------------------------------------


def start_rollout(name: str, *, actor: str, engine: sa.Engine | None = None) -> RolloutResult:
    """Give the challenger the first step's weight (or promote it when there is no champion yet)."""
    engine = _engine(engine)
    client = registry.configure_mlflow()
    with rollout_state.locked_model(engine, name, actor=actor):
        model = registered_model(client, name)
        state = state_of(model)
        if state.challenger is None:
            raise RolloutError(f"{name} has no challenger to roll out: train a version that passes the gates")
        try:
            require_servable(client, name, state.challenger)
        except RolloutError as exc:  # the alias comes off through abort, so the ledger records it
            abort(name, actor=actor, reason=str(exc), engine=engine, reject=True)
            raise
        if state.champion is None:
            return promote(
                name, actor=actor, reason="first version: no champion to compare with", engine=engine
            )
        if state.weight > 0 and state.started_at is not None:
            return RolloutResult(
                name,
                "noop",
                state.champion,
                state.challenger,
                state.weight,
                f"a rollout of v{state.challenger} is already running at {state.weight:.0%}",
            )
        policy = rollout_policy(name)
        weight = policy.steps[0]
        plan = rollout_state.RegistryPlan(client, name, "canary", model)
        plan.model_tag(STARTED_TAG, _now_iso(), "started_tag")
        _plan_step(plan, weight)
        reason = (
            f"canary started: v{state.challenger} gets {weight:.0%} of traffic against champion "
            f"v{state.champion}"
        )
        _move_canary(engine, actor, plan, state, weight, reason, metrics={"steps": list(policy.steps)})
    return RolloutResult(name, "start", state.champion, state.challenger, weight, reason)


def require_servable(client: Any, name: str, version: str) -> None:
    """Refuse a version that is rejected or failed (or never finished) its servability check.

    Versions registered before the check existed (no ``servable`` tag) are loaded here the way the
    service loads them; the result is recorded on the version. Callers take a refused challenger out
    with ``abort(..., reject=True)``, which tags it and writes the ledger row."""
    from neuracrm_mlops.training import servability

    tags = dict(client.get_model_version(name, version).tags or {})
    if tags.get("status") == "rejected":
        raise RolloutError(f"{name} v{version} is rejected ({tags.get('reason', 'no reason recorded')})")
    servable = tags.get(servability.SERVABLE_TAG)
    if servable == "true":
        return
    if servable == "false":
        raise RolloutError(f"{name} v{version} is not servable: {tags.get('reason', '')}")
    if tags.get("status") == "checking":
        raise RolloutError(
            f"{name} v{version} has not finished its servability check (training stopped before it?): retrain"
        )
    try:
        servability.check_loadable(name, version)
    except servability.NotServableError as exc:
        client.set_model_version_tag(name, version, servability.SERVABLE_TAG, "false")
        raise RolloutError(f"{name} v{version} is not servable: {exc}") from exc
    client.set_model_version_tag(name, version, servability.SERVABLE_TAG, "true")


def _deadline(step_started_at: dt.datetime | None) -> dt.datetime | None:
    from neuracrm_mlops.config import get_settings

    if step_started_at is None:
        return None
    return step_started_at + dt.timedelta(hours=get_settings().bake_deadline_hours)


def _live(engine: sa.Engine, name: str, state: RolloutState) -> tuple[Any, Any]:
    assert state.challenger is not None
    rollout_start = state.started_at or utcnow() - dt.timedelta(days=7)
    step_start = state.step_started_at or rollout_start
    challenger = version_stats(engine, name, [state.challenger], since=step_start)[state.challenger]
    champion = (
        version_stats(engine, name, [state.champion], since=rollout_start)[state.champion]
        if state.champion
        else None
    )
    return champion, challenger


def bake_status(name: str, *, engine: sa.Engine | None = None) -> BakeStatus:
    """Ready when both versions have enough outcomes for the current step, or its deadline passed."""
    engine = _engine(engine)
    state = registered_state(registry.configure_mlflow(), name)
    if state.challenger is None or state.weight <= 0:
        return BakeStatus(True, False, f"{name} has no canary running")
    policy = rollout_policy(name)
    champion, challenger = _live(engine, name, state)
    counts = f"challenger v{challenger.version}: {challenger.outcomes}/{policy.min_outcomes} outcomes"
    if champion is not None:
        counts += f", champion v{champion.version}: {champion.outcomes}/{policy.min_outcomes}"
    enough = challenger.outcomes >= policy.min_outcomes and (
        champion is None or champion.outcomes >= policy.min_outcomes
    )
    deadline = _deadline(state.step_started_at)
    passed = deadline is not None and utcnow() >= deadline
    return BakeStatus(enough or passed, passed and not enough, counts)


def approval_required(name: str) -> bool:
    """Whether ``name``'s rollout waits for a reviewer before its final step (NEURACRM_ROLLOUT_APPROVAL)."""
    from neuracrm_mlops.config import get_settings

    return name in get_settings().rollout_approval


def judge_step(name: str, *, actor: str, engine: sa.Engine | None = None) -> RolloutResult:
    """Judge the current canary step and carry out the decision.

    When the model's rollout needs approval and the decision is to move to the final step, the
    weight stays put and the result is ``awaiting_approval`` (the DAG asks a reviewer, then calls
    ``raise_to_final_step`` or ``abort``)."""
    engine = _engine(engine)
    client = registry.configure_mlflow()
    with rollout_state.locked_model(engine, name, actor=actor):
        model = registered_model(client, name)
        state = state_of(model)
        if state.challenger is None or state.weight <= 0:
            return RolloutResult(
                name, "noop", state.champion, state.challenger, state.weight, f"{name} has no canary running"
            )
        challenger_version = state.challenger
        version = rollout_state.retry_registry(
            lambda: client.get_model_version(name, challenger_version),
            what=f"read {name} v{challenger_version}",
        )
        policy = rollout_policy(name, below_floor=version.tags.get("below_floor") == "true")
        champion, challenger = _live(engine, name, state)
        deadline = _deadline(state.step_started_at)
        decision = decide_rollout_step(
            policy,
            state.weight,
            champion,
            challenger,
            deadline_passed=deadline is not None and utcnow() >= deadline,
        )
        return _carry_out(engine, client, model, state, decision, actor)


def _carry_out(
    engine: sa.Engine, client: Any, model: Any, state: RolloutState, decision: RolloutDecision, actor: str
) -> RolloutResult:
    name = str(model.name)
    metrics = dict(decision.metrics)
    final = rollout_policy(name).steps[-1]
    if decision.action == "next_step" and decision.next_weight == final and approval_required(name):
        reason = f"{decision.reason}; awaiting a reviewer's approval before {final:.0%}"
        _record_hold(engine, actor, name, state, reason, metrics=metrics)
        return RolloutResult(
            name, "awaiting_approval", state.champion, state.challenger, state.weight, reason, metrics
        )
    if decision.action == "next_step":
        assert decision.next_weight is not None
        plan = rollout_state.RegistryPlan(client, name, "canary", model)
        _plan_step(plan, decision.next_weight)
        _move_canary(engine, actor, plan, state, decision.next_weight, decision.reason, metrics=metrics)
        return RolloutResult(
            name,
            "next_step",
            state.champion,
            state.challenger,
            decision.next_weight,
            decision.reason,
            metrics,
        )
    if decision.action == "promote":
        return promote(name, actor=actor, reason=decision.reason, metrics=metrics, engine=engine)
    if decision.action == "rollback":
        result = abort(name, actor=actor, reason=decision.reason, metrics=metrics, engine=engine, reject=True)
        failed_alert = canary_alert(
            engine,
            name,
            state.challenger,
            "canary_failed",
            f"{name}: canary v{state.challenger} failed and was stopped",
            decision.reason,
            metrics,
            f"weight set to 0, v{state.challenger} tagged rejected; v{state.champion} serves all",
            RUNBOOK_CANARY_FAILED,
        )
        return RolloutResult(**{**result.as_dict(), "action": "rollback", "alert_id": failed_alert})
    # hold
    alert_id: int | None = None
    _record_hold(engine, actor, name, state, decision.reason, metrics=metrics)
    if decision.alert:
        alert_id = canary_alert(
            engine,
            name,
            state.challenger,
            "canary_inconclusive",
            f"{name}: canary v{state.challenger} is inconclusive at {state.weight:.0%}",
            decision.reason,
            metrics,
            f"held at {state.weight:.0%}; not promoted",
            runbook_canary_hold(name),
        )
    return RolloutResult(
        name, "hold", state.champion, state.challenger, state.weight, decision.reason, metrics, alert_id
    )


def canary_alert(
    engine: sa.Engine,
    name: str,
    challenger: str | None,
    kind: str,
    title: str,
    reason: str,
    metrics: dict[str, Any],
    action_taken: str,
    runbook: str,
) -> int:
    """A warning about a challenger's canary, one open alert per model (or scenario prompt), version
    and kind; its links point where ``name`` is registered (``state.registry_access``)."""
    return raise_alert(
        engine,
        kind=kind,
        severity="warning",
        title=title,
        message=reason,
        dedup_key=f"{kind}:{name}:{challenger}",
        model_name=name,
        organization_id=organization_of(name),
        model_version=challenger,
        metrics=metrics,
        action_taken=action_taken,
        runbook=runbook,
        links=rollout_state.registry_access(name).links(name, challenger),
    ).id


# -- alias moves (CLI, DAGs, monitor) -------------------------------------------------------------


def promote(
    name: str,
    *,
    actor: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
    engine: sa.Engine | None = None,
) -> RolloutResult:
    """The challenger becomes champion; the old champion keeps alias ``previous``.

    A crash part-way is finished by ``rollout_state.reconcile_pending`` (the canary passed)."""
    engine = _engine(engine)
    client = registry.configure_mlflow()
    with rollout_state.locked_model(engine, name, actor=actor):
        model = registered_model(client, name)
        state = state_of(model)
        if state.challenger is None:
            raise RolloutError(f"{name} has no challenger to promote")
        new, old = state.challenger, state.champion
        plan = rollout_state.RegistryPlan(client, name, "promote", model)
        plan.alias(registry.CHAMPION, new, "champion_alias")
        if old is not None and old != new:
            plan.alias(registry.PREVIOUS, old, "previous_alias")
            plan.version_tag(old, "status", registry.PREVIOUS, "old_champion_status")
        plan.alias(registry.CHALLENGER, None, "challenger_alias")
        plan.version_tag(new, "status", registry.CHAMPION, "champion_status")
        _clear_canary(plan)
        rollout_state.run_move(
            engine,
            plan,
            actor=actor,
            reason=reason,
            alias=registry.CHAMPION,
            from_version=old,
            to_version=new,
            weight=0.0,
            metrics=metrics,
            organization_id=organization_of(name),
        )
    return RolloutResult(name, "promote", new, None, 0.0, reason, metrics or {})


def abort(
    name: str,
    *,
    actor: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
    engine: sa.Engine | None = None,
    reject: bool = False,
) -> RolloutResult:
    """Take the challenger out of traffic (weight 0, alias removed); ``reject`` tags it rejected.

    A crash part-way is finished by ``rollout_state.reconcile_pending`` (out of traffic is safe)."""
    engine = _engine(engine)
    client = registry.configure_mlflow()
    action = "reject" if reject else "abort"
    with rollout_state.locked_model(engine, name, actor=actor):
        model = registered_model(client, name)
        state = state_of(model)
        if state.challenger is None:
            raise RolloutError(f"{name} has no challenger to abort")
        plan = rollout_state.RegistryPlan(client, name, action, model)
        _clear_canary(plan)
        plan.alias(registry.CHALLENGER, None, "challenger_alias")
        if reject:
            plan.version_tag(state.challenger, "status", "rejected", "rejected_status")
            plan.version_tag(state.challenger, "reason", reason[:5000], "reason_tag")
        rollout_state.run_move(
            engine,
            plan,
            actor=actor,
            reason=reason,
            alias=registry.CHALLENGER,
            from_version=state.challenger,
            to_version=None,
            weight=0.0,
            metrics=metrics,
            organization_id=organization_of(name),
        )
    return RolloutResult(name, "abort", state.champion, None, 0.0, reason, metrics or {})


def registry_refusal(client: Any, name: str) -> Callable[[str], str | None]:
    """``refusal_of(version)``: why the registry cannot serve ``name``'s ``version`` as champion
    (rejected, not servable, deleted), None when it can. Registry outages raise (they are not a
    reason to skip a version)."""
    from mlflow.exceptions import MlflowException

    from neuracrm_mlops.training import servability

    def refusal_of(version: str) -> str | None:
        try:
            tags = dict(client.get_model_version(name, version).tags or {})
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return "deleted from the registry"
            raise
        if tags.get("status") == "rejected":
            return f"rejected: {tags.get('reason', 'no reason recorded')[:200]}"
        if tags.get(servability.SERVABLE_TAG) == "false":
            return "not servable"
        return None

    return refusal_of


def plan_rollback(
    name: str,
    champion: str,
    *,
    engine: sa.Engine | None = None,
    connection: sa.Connection | None = None,
    client: Any | None = None,
    moves: list[ChampionMove] | None = None,
) -> RollbackTarget:
    """The version a rollback from ``champion`` restores when none is named, and why.

    Read from the champion alias history in the ledger (``ledger.champion_history_of``),
    whatever moved the alias; versions the registry refuses are skipped; the ``previous`` alias only
    when the ledger never saw ``champion`` become champion. ``moves`` replaces the ledger read (the
    history as it will stand after a move about to be recorded)."""
    client = client or registry.configure_mlflow()
    if moves is None:
        moves = ledger.champion_moves(connection if connection is not None else _engine(engine), name)
    history = champion_history_of(moves, champion)
    previous_alias = None if history.known else registered_state(client, name).previous
    return choose_rollback_target(history, registry_refusal(client, name), previous_alias=previous_alias)


def rollback_target(name: str, champion: str, *, engine: sa.Engine | None = None) -> str | None:
    """The version ``rollback(name)`` would restore from ``champion`` (None when it would refuse)."""
    plan = plan_rollback(name, champion, engine=engine)
    return None if plan.rolled_back_before else plan.version


def rollback(
    name: str,
    *,
    actor: str,
    reason: str,
    to_version: str | None = None,
    expected_champion: str | None = None,
    metrics: dict[str, Any] | None = None,
    engine: sa.Engine | None = None,
) -> RolloutResult:
    """Put the previous champion (or ``to_version``) back as champion.

    Without ``to_version`` the target is :func:`plan_rollback`'s: the latest earlier champion in the
    alias history that was not rolled back since and that the registry can serve. A version that was
    itself rolled back as champion is never restored without naming it (``--to``): the error gives
    the command. ``to_version`` may be any registered version but the champion and one that is not
    servable. ``expected_champion``: only act if the champion is still this version (the monitor
    passes the version it judged; a concurrent rollback that already moved it makes this a no-op).

    Afterwards the ``previous`` alias names the new champion's own rollback target (or is removed),
    the left version is tagged ``rolled_back`` (``previous`` when the move undid a rollback), and
    the ledger row (pending before the registry calls, done after) records the move. All of it runs
    under the per-model lock; a crash part-way is finished by ``rollout_state.reconcile_pending``.
    """
    engine = _engine(engine)
    client = registry.configure_mlflow()
    with rollout_state.locked_model(engine, name, actor=actor):
        model = registered_model(client, name)
        state = state_of(model)
        if state.champion is None:
            raise RolloutError(f"{name} has no champion to roll back")
        if expected_champion is not None and state.champion != expected_champion:
            return RolloutResult(
                name,
                "noop",
                state.champion,
                state.challenger,
                state.weight,
                f"champion is already v{state.champion}, not v{expected_champion}: nothing to roll back",
            )
        bad = state.champion
        moves = ledger.champion_moves(engine, name)
        if to_version is not None:
            target = _named_target(client, name, bad, str(to_version).strip())
        else:
            plan = plan_rollback(name, bad, client=client, moves=moves)
            if plan.version is None:
                raise RolloutError(
                    f"{name} has nothing to roll back to from v{bad}: {plan.reason}. To serve a known "
                    f"good version: `{rollback_command(name, None)}`"
                )
            if plan.rolled_back_before:
                raise RolloutError(
                    f"{name}: {plan.reason}, so it is not restored without naming it. To restore it "
                    f"anyway: `{rollback_command(name, plan.version)}`"
                )
            target = plan.version
        after = [*moves, ("rollback", bad, target)]
        history = champion_history_of(after, target)
        left_rolled_back = any(e.version == bad and e.rolled_back for e in history.earlier)
        earlier = choose_rollback_target(history, registry_refusal(client, name))
        calls = rollout_state.RegistryPlan(client, name, "rollback", model)
        calls.alias(registry.CHAMPION, target, "champion_alias")
        calls.version_tag(target, "status", registry.CHAMPION, "champion_status")
        if left_rolled_back:
            calls.version_tag(bad, "status", "rolled_back", "left_status")
            calls.version_tag(bad, "reason", reason[:5000], "reason_tag")
        else:  # the move undid a rollback: the version left is an earlier champion in good standing
            calls.version_tag(bad, "status", registry.PREVIOUS, "left_status")
        keep_previous = earlier.version is not None and not earlier.rolled_back_before
        calls.alias(registry.PREVIOUS, earlier.version if keep_previous else None, "previous_alias")
        rollout_state.run_move(
            engine,
            calls,
            actor=actor,
            reason=reason,
            alias=registry.CHAMPION,
            from_version=bad,
            to_version=target,
            weight=state.weight,
            metrics=metrics,
            organization_id=organization_of(name),
        )
    log.warning("%s: champion rolled back from v%s to v%s (%s)", name, bad, target, reason)
    done = f"{reason} (champion v{bad} -> v{target}; to undo: `{rollback_command(name, bad)}`)"
    return RolloutResult(name, "rollback", target, state.challenger, state.weight, done, metrics or {})


def _named_target(client: Any, name: str, champion: str, version: str) -> str:
    """``version`` as an explicit rollback target (``--to``): registered, servable, not the champion."""
    from mlflow.exceptions import MlflowException

    if version == champion:
        raise RolloutError(f"{name} v{version} is already the champion: nothing to roll back")
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise RolloutError(f"{name} has no version {version}") from exc
    refusal = registry_refusal(client, name)(version)
    if refusal == "not servable":
        raise RolloutError(
            f"{name} v{version} is not servable (tag servable=false): the service could not load it"
        )
    return version


def raise_to_final_step(
    name: str, *, actor: str, reason: str, engine: sa.Engine | None = None
) -> RolloutResult:
    """After a reviewer approved: the challenger gets the final step's weight (100% by default)."""
    engine = _engine(engine)
    client = registry.configure_mlflow()
    with rollout_state.locked_model(engine, name, actor=actor):
        model = registered_model(client, name)
        state = state_of(model)
        if state.challenger is None or state.weight <= 0:
            raise RolloutError(f"{name} has no canary running to raise")
        final = rollout_policy(name).steps[-1]
        plan = rollout_state.RegistryPlan(client, name, "canary", model)
        _plan_step(plan, final)
        _move_canary(engine, actor, plan, state, final, reason)
    return RolloutResult(name, "next_step", state.champion, state.challenger, final, reason)
