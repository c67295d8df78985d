"""Canary rollout and rollback of voice scenarios (prompts in MLflow's prompt registry).

The models' rollout (``release.rollout``) works on MLflow's *model* registry, which does not see
prompts; this module applies the same rules to a scenario (``voice_scenario.<scenario>``), judged on
**call success**: the share of analysed calls (``call_analyzed`` events, an ``outcomes`` row
``successful`` / ``unsuccessful``) among the calls a version answered (``predictions`` rows of
``POST /voice/context``, routes ``champion`` / ``challenger``), joined on the context id.

- :func:`call_success`: analysed calls and success rate of one version since a time.
- :func:`start`: the challenger (registered at weight 0) gets the first step's weight
  (``NEURACRM_ROLLOUT_STEPS``); ledger ``canary``.
- :func:`bake_status`: whether the running step can be judged: both versions have
  ``NEURACRM_MIN_OUTCOMES`` analysed calls in their windows (those :func:`judge` uses), or the
  step's ``NEURACRM_BAKE_DEADLINE_HOURS`` passed (the rollout DAG's sensor waits on it).
- :func:`judge`: ``decisions.decide_rollout_step`` on the two versions' call success (challenger
  since its step began, champion since the rollout began: the start times are the ``canary``
  ledger rows); the same floor, tolerance and ``NEURACRM_MIN_OUTCOMES`` bake rule as the models.
  ``next_step`` (ledger ``canary``), ``promote`` (ledger ``promote``), ``reject`` (ledger ``reject``,
  version tagged ``status=rejected``, a ``canary_failed`` alert) or ``wait`` (not baked: nothing
  moves, no ledger row; past ``NEURACRM_BAKE_DEADLINE_HOURS`` a ``canary_inconclusive`` alert).
  When the next step is the final one and the family needs a reviewer (``voice_scenario`` in
  ``NEURACRM_ROLLOUT_APPROVAL``): ``awaiting_approval``, nothing moves (no ledger row, as ``wait``).
- :func:`raise_to_final_step` / :func:`abort`: what the rollout DAG does after the reviewer
  approved (the final step's weight; ledger ``canary``) or rejected (the challenger out of traffic;
  ledger ``reject`` with the version tagged ``status=rejected``, or ``abort``).
- :func:`monitor`: the champion's call success over ``NEURACRM_MONITOR_WINDOW_HOURS``
  (``decisions.decide_live_accuracy`` against ``floor_for("voice_scenario")``). Below the floor it
  rolls back to ``previous`` only when previous's own recorded success rate (all its analysed calls,
  at least ``NEURACRM_MIN_OUTCOMES``) is not worse (ledger ``rollback``; the left version tagged
  ``status=rolled_back`` with the reason; ``previous`` removed); else the champion keeps serving.
  Either way one critical ``accuracy_below_floor`` alert per champion version (``dedup_key``): a
  repeat pass counts it up, it does not page again.

Every move is atomic as the models' are (``release.state``): it runs under the scenario's lock
(``locked_model``, which first repairs a move of the scenario a crash left pending), plans its
prompt-registry calls (``RegistryPlan``) and carries them out with its ledger row (``run_move``:
the row committed ``pending`` with the plan, the calls made, the row marked ``done``). A move a
crash cut short is finished (promote, reject, abort, rollback) or reverted (a canary weight) by
``state.reconcile_pending``, with a ``rollout_reconciled`` alert. Call order keeps every
half-made move safe to serve: a promote sets ``previous`` before it moves ``champion`` (the
rollback target never names a version older than the one just replaced), a reject or abort sets the
weight to 0 before it removes the challenger alias, a rollback moves ``champion`` before it
removes ``previous``.

Callers: the rollout_voice_scenario DAG (one run for every scenario: :func:`start`,
:func:`bake_status`, :func:`judge`, the reviewer's :func:`raise_to_final_step` / :func:`abort`) and
the monitor_models DAG (:func:`monitor`, after ``state.reconcile_pending``), through
``ops.pipelines``; and the CLI (``neuracrm-mlops scenario rollout|monitor``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.release import state as rollout_state
from neuracrm_mlops.release.decisions import (
    RolloutPolicy,
    VersionLiveStats,
    decide_live_accuracy,
    decide_rollout_step,
)
from neuracrm_mlops.release.rollout import approval_required as family_needs_approval
from neuracrm_mlops.release.rollout import canary_alert
from neuracrm_mlops.store import ledger
from neuracrm_mlops.store import prompt_registry as prompts
from neuracrm_mlops.store.alerts import raise_alert
from neuracrm_mlops.store.db.schema import Outcome, Prediction, utcnow

FAMILY = "voice_scenario"
SUCCESSFUL, UNSUCCESSFUL = "successful", "unsuccessful"
ROUTES = ("champion", "challenger")
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
STATUS_TAG = "status"
REASON_TAG = "reason"
REJECTED = "rejected"
ROLLED_BACK = "rolled_back"
_EPS = 1e-9


@dataclass(frozen=True)
class CallSuccess:
    """Analysed calls of one version since ``since`` and the share that succeeded (None: no calls)."""

    version: str
    calls: int
    successful: int
    requests: int  # every call the version answered since ``since``, analysed or not
    since: dt.datetime | None

    @property
    def rate(self) -> float | None:
        return self.successful / self.calls if self.calls else None

    def live_stats(self) -> VersionLiveStats:
        """As the canary decisions take it (call success as the accuracy; voice answers have no
        per-version error rate or model latency to compare)."""
        return VersionLiveStats(self.version, self.calls, self.rate, 0.0, None, self.requests)


@dataclass(frozen=True)
class ScenarioRolloutResult:
    scenario: str
    # start | next_step | promote | reject | abort | wait | awaiting_approval | noop | ok |
    # insufficient_data | rollback | keep
    action: str
    champion: str | None
    challenger: str | None
    weight: float
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)
    alert_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScenarioRolloutError(ValueError):
    """A rollout command that cannot be carried out (the message says what is missing)."""


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def call_success(
    engine: sa.Engine, scenario: str, version: str | int, since: dt.datetime | None
) -> CallSuccess:
    """Calls ``version`` of ``scenario`` answered (routes champion / challenger) since ``since``
    (None: ever), and how many of those were analysed (an outcome row) and successful."""
    name = prompts.prompt_name(scenario)
    p, o = Prediction.__table__, Outcome.__table__
    served = [p.c.model_name == name, p.c.model_version == str(version), p.c.route.in_(ROUTES)]
    if since is not None:
        served.append(p.c.created_at >= since)
    joined = p.join(
        o,
        sa.and_(
            o.c.model_name == p.c.model_name,
            o.c.organization_id == p.c.organization_id,
            o.c.entity_id == p.c.entity_id,
            o.c.label.in_((SUCCESSFUL, UNSUCCESSFUL)),
        ),
    )
    success = sa.func.sum(sa.case((o.c.label == SUCCESSFUL, 1), else_=0))
    with engine.connect() as conn:
        requests = conn.scalar(sa.select(sa.func.count()).select_from(p).where(*served)) or 0
        calls, successful = conn.execute(
            sa.select(sa.func.count(), success).select_from(joined).where(*served)
        ).one()
    return CallSuccess(str(version), int(calls or 0), int(successful or 0), int(requests), since)


def approval_required() -> bool:
    """Whether a scenario's rollout waits for a reviewer before its final step: the family
    ``voice_scenario`` is listed in NEURACRM_ROLLOUT_APPROVAL (one rollout DAG for every scenario)."""
    return family_needs_approval(FAMILY)


def policy() -> RolloutPolicy:
    """The models' canary rules with the scenario family's floor and the bake size."""
    settings = get_settings()
    return RolloutPolicy(
        steps=settings.rollout_steps,
        accuracy_floor=settings.floor_for(FAMILY, None),
        min_outcomes=settings.min_outcomes,
        min_requests=settings.min_outcomes,
    )


def _canary_rows(engine: sa.Engine, name: str, challenger: str) -> list[ledger.LedgerEntry]:
    """The ``canary`` rows of the running rollout of ``challenger``, newest first: only ``done`` rows
    (a move a crash left ``pending``, or that reconcile ``reverted``, never started a step); holds
    skipped; any other move ends the run."""
    rows: list[ledger.LedgerEntry] = []
    for entry in ledger.latest_entries(engine, model_name=name, limit=1_000):
        if entry.action == "hold" or entry.state != ledger.DONE:
            continue
        if entry.action != "canary" or entry.to_version != challenger:
            break
        rows.append(entry)
    return rows


@dataclass(frozen=True)
class _Step:
    """The running canary step as the ledger and the call log have it."""

    started_at: dt.datetime  # the step's ``canary`` row
    rollout_started_at: dt.datetime  # the rollout's first ``canary`` row
    challenger: CallSuccess  # since the step began
    champion: CallSuccess  # since the rollout began
    deadline: dt.datetime  # the step's start + NEURACRM_BAKE_DEADLINE_HOURS

    @property
    def deadline_passed(self) -> bool:
        return utcnow() >= self.deadline


def _running(live: prompts.LiveScenario) -> bool:
    return live.challenger is not None and live.champion is not None and live.canary_weight > 0


def _step(engine: sa.Engine, live: prompts.LiveScenario) -> _Step | None:
    """The current step of ``live``'s running canary; None when no ``canary`` row starts it."""
    assert live.champion is not None and live.challenger is not None
    name = prompts.prompt_name(live.scenario)
    rows = _canary_rows(engine, name, live.challenger.version)
    if not rows:
        return None
    step_start, rollout_start = _aware(rows[0].created_at), _aware(rows[-1].created_at)
    return _Step(
        step_start,
        rollout_start,
        call_success(engine, live.scenario, live.challenger.version, step_start),
        call_success(engine, live.scenario, live.champion.version, rollout_start),
        step_start + dt.timedelta(hours=get_settings().bake_deadline_hours),
    )


def _result(live: prompts.LiveScenario, action: str, reason: str, **extra: Any) -> ScenarioRolloutResult:
    return ScenarioRolloutResult(
        live.scenario,
        action,
        live.champion.version if live.champion else None,
        extra.pop("challenger", live.challenger.version if live.challenger else None),
        extra.pop("weight", live.canary_weight),
        reason,
        **extra,
    )


def _client(client: Any) -> Any:
    from neuracrm_mlops.store import registry

    return client or registry.configure_mlflow()


def _engine(engine: sa.Engine | None) -> sa.Engine:
    from neuracrm_mlops.store.db.engine import get_engine

    return engine or get_engine()


# -- moves (release.state: planned, ledger row pending first, then the prompt-registry calls) ------


def _move_weight(
    engine: sa.Engine,
    client: Any,
    live: prompts.LiveScenario,
    weight: float,
    *,
    actor: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
) -> None:
    """The challenger's share of calls to ``weight``; ledger ``canary`` (champion -> challenger),
    whose time starts the step. Reverted by reconcile when a crash cuts it short."""
    assert live.champion is not None and live.challenger is not None
    plan = rollout_state.RegistryPlan.read(client, prompts.prompt_name(live.scenario), "canary")
    plan.weight(weight)
    rollout_state.run_move(
        engine,
        plan,
        actor=actor,
        reason=reason,
        alias=CHALLENGER,
        from_version=live.champion.version,
        to_version=live.challenger.version,
        weight=weight,
        metrics=metrics,
    )


def _promote(
    engine: sa.Engine,
    client: Any,
    live: prompts.LiveScenario,
    *,
    actor: str,
    reason: str,
    metrics: dict[str, Any],
) -> None:
    """The challenger becomes champion, the old champion ``previous``; weight 0; ledger ``promote``.

    ``previous`` first: until ``champion`` moves, serving is unchanged (the canary at its weight) and
    the rollback target never names anything but the version about to be replaced."""
    assert live.champion is not None and live.challenger is not None
    old, new = live.champion.version, live.challenger.version
    plan = rollout_state.RegistryPlan.read(client, prompts.prompt_name(live.scenario), "promote")
    plan.alias(PREVIOUS, old, "previous_alias")
    plan.alias(CHAMPION, new, "champion_alias")
    plan.alias(CHALLENGER, None, "challenger_alias")
    plan.weight(0.0)
    rollout_state.run_move(
        engine,
        plan,
        actor=actor,
        reason=reason,
        alias=CHAMPION,
        from_version=old,
        to_version=new,
        weight=0.0,
        metrics=metrics,
    )


def _take_out(
    engine: sa.Engine,
    client: Any,
    live: prompts.LiveScenario,
    *,
    actor: str,
    reason: str,
    reject: bool,
    metrics: dict[str, Any] | None = None,
) -> None:
    """The challenger out of traffic: weight 0 first (serving stops sending it calls), then its alias
    removed; ``reject`` also tags the version ``status=rejected`` with the reason. Ledger ``reject``
    or ``abort`` (champion -> challenger, as the canary rows)."""
    assert live.champion is not None and live.challenger is not None
    challenger = live.challenger.version
    action = "reject" if reject else "abort"
    plan = rollout_state.RegistryPlan.read(client, prompts.prompt_name(live.scenario), action)
    plan.weight(0.0)
    plan.alias(CHALLENGER, None, "challenger_alias")
    if reject:
        plan.version_tag(challenger, STATUS_TAG, REJECTED, "rejected_status")
        plan.version_tag(challenger, REASON_TAG, reason[:5000], "reason_tag")
    rollout_state.run_move(
        engine,
        plan,
        actor=actor,
        reason=reason,
        alias=CHALLENGER,
        from_version=live.champion.version,
        to_version=challenger,
        weight=0.0,
        metrics=metrics,
    )


def _roll_back(
    engine: sa.Engine,
    client: Any,
    live: prompts.LiveScenario,
    *,
    actor: str,
    reason: str,
    metrics: dict[str, Any],
) -> None:
    """``previous`` becomes champion again (first: serving leaves the failing version at once), the
    left version is tagged ``status=rolled_back`` with the reason, and ``previous`` is removed
    (nothing earlier is known good now: no automatic rollback further back, no ping-pong)."""
    assert live.champion is not None and live.previous is not None
    bad, restored = live.champion.version, live.previous.version
    plan = rollout_state.RegistryPlan.read(client, prompts.prompt_name(live.scenario), "rollback")
    plan.alias(CHAMPION, restored, "champion_alias")
    plan.version_tag(bad, STATUS_TAG, ROLLED_BACK, "left_status")
    plan.version_tag(bad, REASON_TAG, reason[:5000], "reason_tag")
    plan.alias(PREVIOUS, None, "previous_alias")
    rollout_state.run_move(
        engine,
        plan,
        actor=actor,
        reason=reason,
        alias=CHAMPION,
        from_version=bad,
        to_version=restored,
        weight=None,  # a rollback leaves any canary as it is
        metrics=metrics,
    )


# -- start, bake, judge -----------------------------------------------------------------------------


def start(
    scenario: str, actor: str, *, engine: sa.Engine | None = None, client: Any = None
) -> ScenarioRolloutResult:
    """The challenger at weight 0 gets the first step's weight; ledger ``canary``."""
    engine, client = _engine(engine), _client(client)
    name = prompts.prompt_name(scenario)
    with rollout_state.locked_model(engine, name, actor=actor):
        live = prompts.live_scenario(client, scenario)
        if live.challenger is None:
            raise ScenarioRolloutError(
                f"{name} has no challenger to roll out: register a changed scenario file first "
                f"(`neuracrm-mlops scenario register scenarios/{scenario}.yaml`)"
            )
        if live.champion is None:
            raise ScenarioRolloutError(f"{name} has a challenger but no champion: nothing to compare with")
        if live.canary_weight > 0:
            return _result(
                live,
                "noop",
                f"a rollout of v{live.challenger.version} is already at {live.canary_weight:.0%}",
            )
        steps = policy().steps
        weight = steps[0]
        reason = (
            f"canary started: v{live.challenger.version} gets {weight:.0%} of calls against champion "
            f"v{live.champion.version}"
        )
        _move_weight(engine, client, live, weight, actor=actor, reason=reason, metrics={"steps": list(steps)})
    return _result(live, "start", reason, weight=weight)


def bake_status(scenario: str, *, engine: sa.Engine | None = None, client: Any = None) -> tuple[bool, str]:
    """(ready, detail): whether the running canary step can be judged: both versions have at least
    NEURACRM_MIN_OUTCOMES analysed calls in the windows :func:`judge` uses (challenger: since the
    step began; champion: since the rollout began), or the step's deadline passed. Ready when no
    canary runs (there is nothing to wait for: judge says so)."""
    engine, client = _engine(engine), _client(client)
    name = prompts.prompt_name(scenario)
    live = prompts.live_scenario(client, scenario)
    if not _running(live):
        return True, f"{name}: no canary running"
    step = _step(engine, live)
    if step is None:
        return True, f"{name}: no canary ledger row for the challenger: nothing to wait for"
    needed = policy().min_outcomes
    counts = (
        f"challenger v{step.challenger.version}: {step.challenger.calls}/{needed} analysed calls "
        f"since the step began, champion v{step.champion.version}: {step.champion.calls}/{needed} "
        f"since the rollout began"
    )
    deadline = f"{step.deadline.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
    if step.challenger.calls >= needed and step.champion.calls >= needed:
        return True, f"{name} at {live.canary_weight:.0%}: baked ({counts})"
    if step.deadline_passed:
        return True, f"{name} at {live.canary_weight:.0%}: the step's deadline {deadline} passed ({counts})"
    return False, f"{name} at {live.canary_weight:.0%}: baking ({counts}); deadline {deadline}"


def judge(
    scenario: str, actor: str, *, engine: sa.Engine | None = None, client: Any = None
) -> ScenarioRolloutResult:
    """Judge the current step on call success and carry the decision out (see the module docstring)."""
    engine, client = _engine(engine), _client(client)
    name = prompts.prompt_name(scenario)
    rules = policy()
    with rollout_state.locked_model(engine, name, actor=actor):
        live = prompts.live_scenario(client, scenario)
        if not _running(live):
            return _result(live, "noop", f"{name} has no canary running")
        assert live.champion is not None and live.challenger is not None
        champion, challenger = live.champion.version, live.challenger.version
        step = _step(engine, live)
        if step is None:
            return _result(live, "noop", f"{name}: no canary ledger row for v{challenger}: start it first")
        decision = decide_rollout_step(
            rules,
            live.canary_weight,
            step.champion.live_stats(),
            step.challenger.live_stats(),
            deadline_passed=step.deadline_passed,
        )
        metrics = {
            **decision.metrics,
            "challenger_calls": step.challenger.calls,
            "challenger_success_rate": step.challenger.rate,
            "champion_calls": step.champion.calls,
            "champion_success_rate": step.champion.rate,
            "step_started_at": step.started_at,
            "rollout_started_at": step.rollout_started_at,
        }
        reason = _call_wording(decision.reason)
        final = rules.steps[-1]
        if decision.action == "next_step" and decision.next_weight == final and approval_required():
            # the rollout DAG asks a reviewer, then calls raise_to_final_step or abort
            reason = f"{reason}; awaiting a reviewer's approval before {final:.0%}"
            return _result(live, "awaiting_approval", reason, metrics=metrics)
        if decision.action == "next_step":
            assert decision.next_weight is not None
            _move_weight(
                engine, client, live, decision.next_weight, actor=actor, reason=reason, metrics=metrics
            )
            return _result(live, "next_step", reason, weight=decision.next_weight, metrics=metrics)
        if decision.action == "promote":
            _promote(engine, client, live, actor=actor, reason=reason, metrics=metrics)
            return ScenarioRolloutResult(scenario, "promote", challenger, None, 0.0, reason, metrics)
        if decision.action == "rollback":
            _take_out(engine, client, live, actor=actor, reason=reason, reject=True, metrics=metrics)
            alert = canary_alert(
                engine,
                name,
                challenger,
                "canary_failed",
                f"{name}: canary v{challenger} failed and was stopped",
                reason,
                metrics,
                f"weight set to 0, challenger alias removed, v{challenger} tagged rejected; "
                f"v{champion} answers every call",
                runbook_canary_failed(scenario),
            )
            return ScenarioRolloutResult(
                scenario, "reject", champion, None, 0.0, reason, metrics, alert_id=alert
            )
        alert_id = None
        if decision.alert:  # not baked before the deadline
            alert_id = canary_alert(
                engine,
                name,
                challenger,
                "canary_inconclusive",
                f"{name}: canary v{challenger} is inconclusive at {live.canary_weight:.0%}",
                reason,
                metrics,
                f"held at {live.canary_weight:.0%}; not promoted",
                f"Not enough analysed calls to judge v{challenger} before the deadline. Check that "
                f"Retell sends call_analyzed events to POST /voice/events, then judge again.",
            )
        return _result(live, "wait", reason, metrics=metrics, alert_id=alert_id)


def raise_to_final_step(
    scenario: str, actor: str, *, reason: str, engine: sa.Engine | None = None, client: Any = None
) -> ScenarioRolloutResult:
    """After a reviewer approved: the challenger gets the final step's weight (``NEURACRM_ROLLOUT_STEPS``'
    last, 100% by default); ledger ``canary`` (the final step starts). ``noop`` when no canary runs
    or it is at that weight already."""
    engine, client = _engine(engine), _client(client)
    name = prompts.prompt_name(scenario)
    with rollout_state.locked_model(engine, name, actor=actor):
        live = prompts.live_scenario(client, scenario)
        if not _running(live):
            return _result(live, "noop", f"{name} has no canary running to raise")
        final = policy().steps[-1]
        if abs(live.canary_weight - final) < _EPS:
            return _result(live, "noop", f"{name}: the canary is at the final step's {final:.0%} already")
        _move_weight(engine, client, live, final, actor=actor, reason=reason)
    return _result(live, "next_step", reason, weight=final)


def abort(
    scenario: str,
    actor: str,
    *,
    reason: str,
    reject: bool = True,
    engine: sa.Engine | None = None,
    client: Any = None,
) -> ScenarioRolloutResult:
    """Take the running canary's challenger out of traffic (weight 0, challenger alias removed): with
    ``reject`` (a reviewer rejected the final step) ledger ``reject`` and the version tagged
    ``status=rejected``; without, ledger ``abort`` and no tag. ``noop`` when no canary runs."""
    engine, client = _engine(engine), _client(client)
    name = prompts.prompt_name(scenario)
    with rollout_state.locked_model(engine, name, actor=actor):
        live = prompts.live_scenario(client, scenario)
        if not _running(live):
            return _result(live, "noop", f"{name} has no canary running to stop")
        _take_out(engine, client, live, actor=actor, reason=reason, reject=reject)
    return _result(live, "reject" if reject else "abort", reason, weight=0.0, challenger=None)


def runbook_canary_failed(scenario: str) -> str:
    return (
        "The challenger was taken out of traffic and tagged rejected; the champion answers every call. "
        "Read the reason and the call success numbers, listen to the failed calls, fix the scenario "
        f"file and register it again (`neuracrm-mlops scenario register scenarios/{scenario}.yaml`); "
        "nothing else to undo."
    )


# -- monitoring -------------------------------------------------------------------------------------


def monitor(
    scenario: str,
    actor: str,
    *,
    engine: sa.Engine | None = None,
    client: Any = None,
    now: dt.datetime | None = None,
) -> ScenarioRolloutResult:
    """The champion's call success over the monitor window against the family floor; below it, roll
    back to ``previous`` when previous's recorded success rate is not worse, else keep and page."""
    engine, client = _engine(engine), _client(client)
    settings = get_settings()
    name = prompts.prompt_name(scenario)
    floor = settings.floor_for(FAMILY, None)
    since = (now or utcnow()) - dt.timedelta(hours=settings.monitor_window_hours)
    with rollout_state.locked_model(engine, name, actor=actor):
        live = prompts.live_scenario(client, scenario)
        if live.champion is None:
            return _result(live, "noop", f"{name} has no champion")
        champion = live.champion.version
        stats = call_success(engine, scenario, champion, since)
        verdict = decide_live_accuracy(
            stats.rate, stats.calls, floor=floor, min_outcomes=settings.min_outcomes
        )
        reason = _call_wording(verdict.reason)
        metrics: dict[str, Any] = {
            "success_rate": stats.rate,
            "calls": stats.calls,
            "floor": floor,
            "window_hours": settings.monitor_window_hours,
            "since": since,
        }
        if not verdict.below_floor:
            return _result(live, verdict.verdict, reason, metrics=metrics)
        assert stats.rate is not None
        previous = live.previous.version if live.previous is not None else None
        recorded = call_success(engine, scenario, previous, None) if previous is not None else None
        metrics |= {
            "previous_version": previous,
            "previous_calls": recorded.calls if recorded else None,
            "previous_success_rate": recorded.rate if recorded else None,
        }
        why, restore = _rollback_verdict(stats.rate, recorded, settings.min_outcomes)
        if restore:
            assert previous is not None
            _roll_back(engine, client, live, actor=actor, reason=f"{reason}; {why}", metrics=metrics)
            action = (
                f"champion rolled back from v{champion} to v{previous} automatically: {why}; "
                f"no earlier version is kept as previous"
            )
            runbook = (
                f"v{previous} answers every call now (each service replica switches at its next poll). "
                f"Find the cause of v{champion}'s drop (listen to failed calls, check recent CRM data); "
                f"a fixed scenario comes back only through a new registration and rollout. To undo: "
                f"set the champion alias of {name} back to {champion} and record it in the ledger."
            )
        else:
            action = f"no automatic rollback: {why}; v{champion} keeps serving"
            runbook = (
                f"Nothing was changed: v{champion} keeps answering calls below the floor. Find the cause "
                f"(listen to failed calls, check recent CRM data), fix scenarios/{scenario}.yaml, register "
                f"it (`neuracrm-mlops scenario register scenarios/{scenario}.yaml`) and roll it out."
            )
        alert = raise_alert(
            engine,
            kind="accuracy_below_floor",
            severity="critical",
            title=f"{name} v{champion}: {reason}",
            message=reason,
            dedup_key=f"accuracy_below_floor:{name}:{champion}",
            model_name=name,
            model_version=champion,
            metrics=metrics,
            action_taken=action,
            runbook=runbook,
            links=prompts.prompt_links(name, champion),
        )
        if restore:
            return ScenarioRolloutResult(
                scenario,
                "rollback",
                previous,
                live.challenger.version if live.challenger else None,
                live.canary_weight,
                f"{reason}; {why}",
                metrics,
                alert.id,
            )
        return _result(live, "keep", f"{reason}; {why}", metrics=metrics, alert_id=alert.id)


def _call_wording(reason: str) -> str:
    """A decision's reason in the scenarios' terms (call success of analysed calls)."""
    return (
        reason.replace("live accuracy", "call success rate")
        .replace("accuracy", "call success rate")
        .replace("labelled outcomes", "analysed calls")
        .replace(" outcomes", " analysed calls")
    )


def _rollback_verdict(
    champion_rate: float, previous: CallSuccess | None, min_outcomes: int
) -> tuple[str, bool]:
    """Whether to restore ``previous``: only when measured (at least ``min_outcomes`` analysed calls
    on record) and not worse than the failing champion's rate. Never roll back to something worse."""
    if previous is None:
        return "there is no previous version to roll back to", False
    if previous.rate is None or previous.calls < min_outcomes:
        return (
            f"previous v{previous.version} has {previous.calls} of {min_outcomes} analysed calls on "
            f"record: its success rate is unknown",
            False,
        )
    measured = f"previous v{previous.version} succeeded on {previous.rate:.3f} of {previous.calls} calls"
    if previous.rate + _EPS < champion_rate:
        return f"{measured}, worse than the champion's {champion_rate:.3f}", False
    return f"{measured}, not worse than the champion's {champion_rate:.3f}", True


__all__ = [
    "CallSuccess",
    "ScenarioRolloutError",
    "ScenarioRolloutResult",
    "abort",
    "approval_required",
    "bake_status",
    "call_success",
    "judge",
    "monitor",
    "policy",
    "raise_to_final_step",
    "start",
]
