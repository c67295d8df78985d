"""Pure canary-rollout and live-accuracy decisions: metrics in, a decision with its reason out.

No I/O here: the rollout and monitoring DAGs gather the numbers, call these functions and carry out
the result (alias and weight moves, ledger rows, alerts). The rules, with the defaults of
:class:`RolloutPolicy`:

**Rollout step** (:func:`decide_rollout_step`), evaluated in this order:

1. *Early operational rollback* (while labelled outcomes are still missing): when the challenger
   and the champion have each served at least ``min_requests`` (200) requests, the challenger is
   rolled back if
   - its error rate (errors and fallbacks over its requests) exceeds the champion's by more than
     ``max_error_rate_increase`` (0.02, absolute: 0.010 -> at most 0.030), or
   - its p95 latency exceeds ``max(champion_p95 * max_p95_ratio, champion_p95 + p95_slack_ms)``
     (1.5 and 20 ms: the ratio governs slow models, the slack keeps millisecond jitter on fast ones
     from aborting a rollout; a 10 ms champion allows 30 ms, a 200 ms champion 300 ms).
   Latency is compared only when both p95 values are known (batch forecasts have none).
2. *Hold* while either version has fewer than ``min_outcomes`` (100) labelled outcomes, or its
   accuracy is unknown. Holding keeps the weight. If the deadline has passed the reason says so and
   :func:`should_alert` is true; an inconclusive rollout never promotes.
3. *Rollback* (weight 0, challenger rejected) if the challenger's accuracy is below
   ``accuracy_floor`` (0.80), or below the champion's by more than ``accuracy_tolerance`` (0.02),
   or the operational checks of step 1 fail (they always run once the outcomes are in, whatever
   the request counts). Every failing check is named in the reason.
4. *Pass*: below the last step -> ``next_step`` to the smallest step above the current weight
   (a weight between steps moves to the step above it; weight 0 moves to the first step); at the
   last step (1.0) -> ``promote`` (challenger becomes champion, the old champion ``previous``).

First rollout (no champion at all): the challenger is judged against the floor alone (there is no
baseline for error rate or latency; the rest of the traffic is answered by the fallback).

Comparisons allow a float slack of 1e-9, so a value exactly at a limit passes (0.85 against a 0.87
champion with tolerance 0.02 passes; exactly at the floor passes).

Windows: pass each version's numbers over the same window, typically since the rollout started.
At weight 1.0 the champion serves no new traffic, so its numbers must come from the window in which
it last served (the cumulative window does that); a champion with no outcomes holds the rollout.

**Cohort step** (:func:`decide_cohort_step`, the forecasts' strategy: the weight is a share of
organizations): each organization in the cohort is judged on its own numbers with
:func:`decide_rollout_step` and its own policy; a rollback rejects that organization's challenger
alone. Any organization still short of actuals holds the family (an alert once the step's deadline
passed; never promotes); otherwise the family moves to the next step, or at the last step promotes
every running organization that was not rejected.

**Live accuracy** (:func:`decide_live_accuracy`, the monitor's 80% rule): ``insufficient_data``
with fewer than ``min_outcomes`` outcomes or no accuracy, ``below_floor`` when accuracy < floor,
otherwise ``ok`` (exactly at the floor is ok).

**Rollback target** (:func:`neuracrm_mlops.store.ledger.champion_history_of`, :func:`choose_rollback_target`,
:func:`decide_rollback_target`): the version a rollback restores is read from the history of the
``champion`` alias (the promotion ledger's ``promote`` and ``rollback`` rows, whoever made them: a
rollout, the monitor, ``rollback``, ``rollback --to``, the health page). Walking that history back
from the current champion, the earlier champions are offered most recent first, each once:

- a ``rollback`` away from a version counts against it ("rolled back"), until a later move makes it
  champion again (a promotion, or ``rollback --to`` it);
- a ``rollback`` that returns to the version the previous move rolled back is an *undo* (the
  runbook's ``rollback --to``): it restores the history as it was before that rollback, so after
  promote v2, promote v3, rollback (v3 -> v2), rollback --to 3, the version before v3 is v2 again;
- versions the registry refuses (rejected, not servable, deleted) are skipped;
- a version still "rolled back" is offered only when nothing else is left, and then the monitor
  restores it only when it is measured better on the same live outcomes (its recorded holdout
  does not count: live data already contradicted it), and a plain ``rollback`` refuses it and names
  the ``--to`` command. So repeated degradations never ping-pong between two bad versions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from neuracrm_mlops.store.ledger import ChampionHistory  # the alias history's rules live with the ledger

Action = Literal["next_step", "promote", "hold", "rollback"]
ACTIONS: tuple[Action, ...] = get_args(Action)
LiveVerdictKind = Literal["ok", "below_floor", "insufficient_data"]

# Float slack for limit comparisons: a value exactly at a limit must pass despite binary rounding.
_EPS = 1e-9

MetricValue = float | int | str | bool | None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_unit_interval(name: str, value: float) -> None:
    if not _is_number(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


@dataclass(frozen=True)
class VersionLiveStats:
    """One model version's live numbers over the rollout window.

    ``accuracy`` is over ``outcomes`` labelled outcomes (None when there are none); ``error_rate``
    is the share of its ``requests`` that errored or fell back; ``p95_latency_ms`` is None when no
    latency was recorded.
    """

    version: str
    outcomes: int
    accuracy: float | None
    error_rate: float
    p95_latency_ms: float | None
    requests: int

    def __post_init__(self) -> None:
        for name in ("outcomes", "requests"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(
                    f"{name} must be a whole number >= 0, got {value!r} (version {self.version})"
                )
        if self.accuracy is not None:
            _check_unit_interval("accuracy", self.accuracy)
        _check_unit_interval("error_rate", self.error_rate)
        if self.p95_latency_ms is not None and (
            not _is_number(self.p95_latency_ms)
            or not math.isfinite(self.p95_latency_ms)
            or self.p95_latency_ms < 0
        ):
            raise ValueError(f"p95_latency_ms must be a number >= 0 or None, got {self.p95_latency_ms!r}")


@dataclass(frozen=True)
class RolloutPolicy:
    """Steps and limits of a canary rollout; see the module docstring for how they are applied."""

    steps: tuple[float, ...] = (0.10, 0.50, 1.00)
    accuracy_floor: float = 0.80
    min_outcomes: int = 100
    accuracy_tolerance: float = 0.02
    max_error_rate_increase: float = 0.02
    max_p95_ratio: float = 1.5
    p95_slack_ms: float = 20.0
    min_requests: int = 200

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        if not steps:
            raise ValueError("steps must not be empty: give the canary weights, ending with 1.0")
        for step in steps:
            if not _is_number(step) or not math.isfinite(step) or not 0.0 < step <= 1.0:
                raise ValueError(f"steps must all be in (0, 1], got {step!r} in {steps}")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must be strictly increasing, got {steps}")
        if steps[-1] != 1.0:
            raise ValueError(f"steps must end with 1.0 (full traffic before promotion), got {steps}")
        object.__setattr__(self, "steps", steps)
        _check_unit_interval("accuracy_floor", self.accuracy_floor)
        _check_unit_interval("accuracy_tolerance", self.accuracy_tolerance)
        _check_unit_interval("max_error_rate_increase", self.max_error_rate_increase)
        for name in ("min_outcomes", "min_requests"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if (
            not _is_number(self.max_p95_ratio)
            or not math.isfinite(self.max_p95_ratio)
            or self.max_p95_ratio < 1.0
        ):
            raise ValueError(f"max_p95_ratio must be a number >= 1.0, got {self.max_p95_ratio!r}")
        if not _is_number(self.p95_slack_ms) or not math.isfinite(self.p95_slack_ms) or self.p95_slack_ms < 0:
            raise ValueError(f"p95_slack_ms must be a number >= 0, got {self.p95_slack_ms!r}")

    def next_weight(self, current_weight: float) -> float | None:
        """The smallest step above ``current_weight``; None at (or beyond) the last step."""
        for step in self.steps:
            if step > current_weight + _EPS:
                return step
        return None

    def p95_allowance_ms(self, champion_p95_ms: float) -> float:
        """The highest challenger p95 accepted against a champion p95."""
        return max(champion_p95_ms * self.max_p95_ratio, champion_p95_ms + self.p95_slack_ms)


@dataclass(frozen=True)
class RolloutDecision:
    """What to do with the canary: ``next_weight`` is the weight to set (the current one on hold,
    0.0 on rollback, the next step on next_step) and None on promote (no canary any more)."""

    action: Action
    next_weight: float | None
    reason: str
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    deadline_passed: bool = False

    @property
    def alert(self) -> bool:
        return should_alert(self)


def should_alert(decision: RolloutDecision) -> bool:
    """True for a rollback, and for a hold once the deadline has passed (an inconclusive rollout)."""
    return decision.action == "rollback" or (decision.action == "hold" and decision.deadline_passed)


def _fmt_ms(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} ms"


def _operational_failures(
    policy: RolloutPolicy, champion: VersionLiveStats, challenger: VersionLiveStats
) -> list[str]:
    failures: list[str] = []
    error_limit = champion.error_rate + policy.max_error_rate_increase
    if challenger.error_rate > error_limit + _EPS:
        failures.append(
            f"error rate {challenger.error_rate:.3f} exceeds the champion's {champion.error_rate:.3f} "
            f"+ {policy.max_error_rate_increase:.3f} = {error_limit:.3f}"
        )
    if challenger.p95_latency_ms is not None and champion.p95_latency_ms is not None:
        allowance = policy.p95_allowance_ms(champion.p95_latency_ms)
        if challenger.p95_latency_ms > allowance + _EPS:
            failures.append(
                f"p95 latency {challenger.p95_latency_ms:.1f} ms exceeds the allowance {allowance:.1f} ms "
                f"(champion {champion.p95_latency_ms:.1f} ms x {policy.max_p95_ratio:g} "
                f"or + {policy.p95_slack_ms:g} ms, whichever is higher)"
            )
    return failures


def _metrics(
    policy: RolloutPolicy,
    current_weight: float,
    champion: VersionLiveStats | None,
    challenger: VersionLiveStats,
    deadline_passed: bool,
) -> dict[str, MetricValue]:
    metrics: dict[str, MetricValue] = {
        "current_weight": current_weight,
        "deadline_passed": deadline_passed,
        "accuracy_floor": policy.accuracy_floor,
        "min_outcomes": policy.min_outcomes,
        "challenger_version": challenger.version,
        "challenger_outcomes": challenger.outcomes,
        "challenger_accuracy": challenger.accuracy,
        "challenger_error_rate": challenger.error_rate,
        "challenger_p95_latency_ms": challenger.p95_latency_ms,
        "challenger_requests": challenger.requests,
    }
    if champion is not None:
        metrics.update(
            {
                "champion_version": champion.version,
                "champion_outcomes": champion.outcomes,
                "champion_accuracy": champion.accuracy,
                "champion_error_rate": champion.error_rate,
                "champion_p95_latency_ms": champion.p95_latency_ms,
                "champion_requests": champion.requests,
                "max_error_rate": champion.error_rate + policy.max_error_rate_increase,
                "max_p95_latency_ms": (
                    None
                    if champion.p95_latency_ms is None
                    else policy.p95_allowance_ms(champion.p95_latency_ms)
                ),
            }
        )
        if champion.accuracy is not None:
            metrics["min_accuracy_vs_champion"] = champion.accuracy - policy.accuracy_tolerance
    return metrics


def _missing_data(policy: RolloutPolicy, role: str, stats: VersionLiveStats) -> str | None:
    if stats.outcomes < policy.min_outcomes:
        needed = policy.min_outcomes
        return f"{role} {stats.version} has {stats.outcomes} of {needed} labelled outcomes needed"
    if stats.accuracy is None:
        return f"{role} {stats.version} has {stats.outcomes} outcomes but no accuracy"
    return None


def decide_rollout_step(
    policy: RolloutPolicy,
    current_weight: float,
    champion: VersionLiveStats | None,
    challenger: VersionLiveStats,
    *,
    deadline_passed: bool,
) -> RolloutDecision:
    """Hold, roll back, take the next step or promote; the rules are in the module docstring."""
    if not _is_number(current_weight) or not math.isfinite(current_weight) or not 0 <= current_weight <= 1:
        raise ValueError(f"current_weight must be a number in [0, 1], got {current_weight!r}")
    metrics = _metrics(policy, current_weight, champion, challenger, deadline_passed)
    subject = f"challenger {challenger.version}"

    def decision(action: Action, weight: float | None, reason: str) -> RolloutDecision:
        return RolloutDecision(action, weight, reason, metrics, deadline_passed)

    def rollback(failures: list[str]) -> RolloutDecision:
        return decision(
            "rollback",
            0.0,
            f"roll back {subject} at weight {current_weight:.2f}: " + "; ".join(failures),
        )

    missing = [
        gap
        for gap in (
            _missing_data(policy, "challenger", challenger),
            None if champion is None else _missing_data(policy, "champion", champion),
        )
        if gap is not None
    ]
    # 1. While outcomes are missing: operational checks once both versions served enough requests.
    if (
        missing
        and champion is not None
        and challenger.requests >= policy.min_requests
        and champion.requests >= policy.min_requests
    ):
        failures = _operational_failures(policy, champion, challenger)
        if failures:
            return rollback([*failures, f"before the accuracy verdict ({'; '.join(missing)})"])

    # 2. Not enough labelled outcomes: hold (never promote on an inconclusive rollout).
    if missing:
        gaps = "; ".join(missing)
        if deadline_passed:
            reason = (
                f"deadline passed with no verdict: {gaps}; holding {subject} at weight "
                f"{current_weight:.2f} (an inconclusive rollout never promotes)"
            )
        else:
            reason = f"hold {subject} at weight {current_weight:.2f}: {gaps}"
        return decision("hold", current_weight, reason)

    # 3. Verdict on accuracy (and the operational checks, whatever the request counts).
    accuracy = challenger.accuracy
    assert accuracy is not None  # _missing_data guarantees it
    failures = []
    # every figure names its count and window: the challenger's since its step began, the champion's
    # since the rollout began
    measured = f"over {challenger.outcomes:,} outcomes since this step began"
    if accuracy < policy.accuracy_floor - _EPS:
        failures.append(
            f"accuracy {accuracy:.3f} is below the floor {policy.accuracy_floor:.2f} ({measured})"
        )
    if champion is not None:
        assert champion.accuracy is not None
        if accuracy < champion.accuracy - policy.accuracy_tolerance - _EPS:
            failures.append(
                f"accuracy {accuracy:.3f} is worse than the champion's {champion.accuracy:.3f} "
                f"by more than the tolerance {policy.accuracy_tolerance:.3f} ({measured}; the champion's "
                f"over {champion.outcomes:,} since the rollout began)"
            )
        failures.extend(_operational_failures(policy, champion, challenger))
    if failures:
        return rollback(failures)

    # 4. Pass.
    if champion is None:
        summary = (
            f"accuracy {accuracy:.3f} >= floor {policy.accuracy_floor:.2f} over {challenger.outcomes} "
            f"outcomes; no champion yet (judged against the floor alone)"
        )
    else:
        assert champion.accuracy is not None
        summary = (
            f"accuracy {accuracy:.3f} over {challenger.outcomes} outcomes vs champion {champion.version} "
            f"{champion.accuracy:.3f} over {champion.outcomes} (floor {policy.accuracy_floor:.2f}, "
            f"tolerance {policy.accuracy_tolerance:.3f}); error rate {challenger.error_rate:.3f} vs "
            f"{champion.error_rate:.3f}; p95 {_fmt_ms(challenger.p95_latency_ms)} vs "
            f"{_fmt_ms(champion.p95_latency_ms)}"
        )
    following = policy.next_weight(current_weight)
    if following is None:
        return decision("promote", None, f"promote {subject} at weight {current_weight:.2f}: {summary}")
    return decision(
        "next_step",
        following,
        f"raise {subject} from weight {current_weight:.2f} to {following:.2f}: {summary}",
    )


CohortAction = Literal["next_step", "promote", "hold"]


@dataclass(frozen=True)
class CohortMember:
    """One organization in a cohort rollout (forecasts): its champion's and challenger's live numbers
    and its own policy (its floor may differ from the family's; None: the family's policy)."""

    organization_id: int
    champion: VersionLiveStats
    challenger: VersionLiveStats
    policy: RolloutPolicy | None = None


@dataclass(frozen=True)
class CohortDecision:
    """The verdict on one step of a cohort rollout.

    ``verdicts`` holds each cohort organization's own :func:`decide_rollout_step` decision;
    ``rejected`` (their challengers fail: reject them, whatever the family does), ``holding`` (short
    of actuals) and ``passed`` split the cohort in its order. ``next_weight`` is the share of
    organizations to set on ``next_step``, the current one on ``hold`` and None on ``promote``, where
    ``promote`` lists every running organization not rejected. ``alert``: a hold past the deadline.
    """

    action: CohortAction
    weight: float
    next_weight: float | None
    reason: str
    verdicts: dict[int, RolloutDecision] = field(default_factory=dict)
    passed: tuple[int, ...] = ()
    rejected: tuple[int, ...] = ()
    holding: tuple[int, ...] = ()
    promote: tuple[int, ...] = ()
    deadline_passed: bool = False

    @property
    def alert(self) -> bool:
        return self.action == "hold" and self.deadline_passed


def decide_cohort_step(
    policy: RolloutPolicy,
    weight: float,
    cohort: Sequence[CohortMember],
    *,
    running: Sequence[int] | None = None,
    deadline_passed: bool = False,
) -> CohortDecision:
    """The cohort strategy's step (forecasts: the weight is a share of organizations).

    Each organization in ``cohort`` is judged on its own numbers with :func:`decide_rollout_step`
    (its own policy, never "deadline passed": an organization short of actuals holds, it is not
    judged inconclusive on its own). A rollback rejects that organization's challenger only. Then,
    for the family (``policy``):

    - any organization still short of actuals -> ``hold`` at ``weight`` (``deadline_passed``, the
      step's deadline for any cohort organization: the reason says so and :attr:`alert` is true;
      it never promotes);
    - else at the last step -> ``promote`` every organization of ``running`` (every organization
      with a canary at a weight above 0; default: the cohort's) that was not rejected;
    - else ``next_step`` to the policy's next step above ``weight``.
    """
    _check_unit_interval("weight", weight)
    organizations = [member.organization_id for member in cohort]
    if len(set(organizations)) != len(organizations):
        raise ValueError(f"an organization appears twice in the cohort: {organizations}")
    verdicts: dict[int, RolloutDecision] = {}
    passed: list[int] = []
    rejected: list[int] = []
    holding: list[int] = []
    for member in cohort:
        verdict = decide_rollout_step(
            member.policy or policy, weight, member.champion, member.challenger, deadline_passed=False
        )
        verdicts[member.organization_id] = verdict
        if verdict.action == "rollback":
            rejected.append(member.organization_id)
        elif verdict.action == "hold":
            holding.append(member.organization_id)
        else:
            passed.append(member.organization_id)
    lists = {"passed": tuple(passed), "rejected": tuple(rejected), "holding": tuple(holding)}
    if holding:
        reason = (
            f"{len(holding)} organization(s) in the {weight:.0%} cohort lack actuals "
            f"({policy.min_outcomes} months needed): holding"
        )
        if deadline_passed:
            reason = "deadline passed with no verdict: " + reason + " (never promotes)"
        return CohortDecision(
            "hold", weight, weight, reason, verdicts, **lists, deadline_passed=deadline_passed
        )
    following = policy.next_weight(weight)
    if following is None:
        everyone = organizations if running is None else list(running)
        promote = tuple(org for org in everyone if org not in rejected)
        reason = f"{len(promote)} organization(s) promoted, {len(rejected)} rejected"
        return CohortDecision(
            "promote",
            weight,
            None,
            reason,
            verdicts,
            **lists,
            promote=promote,
            deadline_passed=deadline_passed,
        )
    reason = (
        f"{len(passed)} organization(s) in the {weight:.0%} cohort passed, {len(rejected)} "
        f"rejected: moving to {following:.0%} of organizations"
    )
    return CohortDecision(
        "next_step", weight, following, reason, verdicts, **lists, deadline_passed=deadline_passed
    )


@dataclass(frozen=True)
class LiveVerdict:
    """The monitor's verdict on a model's live accuracy; ``below_floor`` triggers the rollback task."""

    verdict: LiveVerdictKind
    reason: str
    accuracy: float | None
    outcomes: int
    floor: float
    min_outcomes: int

    @property
    def below_floor(self) -> bool:
        return self.verdict == "below_floor"


def decide_live_accuracy(
    accuracy: float | None, outcomes: int, *, floor: float, min_outcomes: int
) -> LiveVerdict:
    """``below_floor`` only with at least ``min_outcomes`` outcomes and accuracy < floor."""
    _check_unit_interval("floor", floor)
    if not isinstance(min_outcomes, int) or isinstance(min_outcomes, bool) or min_outcomes < 1:
        raise ValueError(f"min_outcomes must be a whole number >= 1, got {min_outcomes!r}")
    if not isinstance(outcomes, int) or isinstance(outcomes, bool) or outcomes < 0:
        raise ValueError(f"outcomes must be a whole number >= 0, got {outcomes!r}")
    if accuracy is not None and not (_is_number(accuracy) and (math.isnan(accuracy) or 0 <= accuracy <= 1)):
        raise ValueError(f"accuracy must be a number in [0, 1] or None, got {accuracy!r}")

    def verdict(kind: LiveVerdictKind, reason: str) -> LiveVerdict:
        return LiveVerdict(kind, reason, accuracy, outcomes, floor, min_outcomes)

    if outcomes < min_outcomes:
        shown = "" if accuracy is None or math.isnan(accuracy) else f" (accuracy so far {accuracy:.3f})"
        return verdict(
            "insufficient_data",
            f"{outcomes} of {min_outcomes} labelled outcomes needed to judge live accuracy{shown}",
        )
    if accuracy is None or math.isnan(accuracy):
        return verdict(
            "insufficient_data", f"{outcomes} labelled outcomes but accuracy could not be computed"
        )
    if accuracy < floor - _EPS:
        return verdict(
            "below_floor",
            f"live accuracy {accuracy:.3f} over {outcomes} outcomes is below the floor {floor:.2f}",
        )
    return verdict("ok", f"live accuracy {accuracy:.3f} over {outcomes} outcomes >= floor {floor:.2f}")


@dataclass(frozen=True)
class PreviousMeasurement:
    """How the rollback target did: on the champion's own outcomes, or on its recorded holdout.

    ``rolled_back_before``: the target was itself rolled back as champion and never reinstated (it
    is offered only because no other earlier champion is left); see :func:`decide_rollback_target`.
    """

    version: str
    accuracy: float | None
    basis: str  # "same_outcomes" | "recorded_holdout" | "unmeasured"
    outcomes: int = 0
    rolled_back_before: bool = False


@dataclass(frozen=True)
class RollbackVerdict:
    roll_back: bool
    reason: str


def decide_rollback_target(
    champion_accuracy: float, previous: PreviousMeasurement | None, *, min_outcomes: int
) -> RollbackVerdict:
    """Roll back below the floor only to a version measured better than the failing champion.

    The measure is the previous version's accuracy on the same outcomes (its own logged predictions
    for the entities the champion was judged on) when it has at least ``min_outcomes`` of them, else
    its recorded holdout accuracy. Unmeasured or not better: the champion keeps serving (on-call is
    paged by the caller). A target that was itself rolled back as champion before
    (``rolled_back_before``) counts only on the same outcomes: its recorded holdout already failed
    live once, and trusting it again would ping-pong between two degraded versions."""
    if previous is None:
        return RollbackVerdict(False, "there is no previous version to roll back to")
    basis = previous.basis
    if basis == "same_outcomes" and previous.outcomes < min_outcomes:
        basis = "unmeasured"
    if previous.accuracy is None or math.isnan(previous.accuracy) or basis == "unmeasured":
        return RollbackVerdict(False, f"previous v{previous.version} could not be measured")
    where = (
        f"on the same {previous.outcomes} outcomes" if basis == "same_outcomes" else "on its recorded holdout"
    )
    if previous.rolled_back_before and basis != "same_outcomes":
        return RollbackVerdict(
            False,
            f"v{previous.version}, the only earlier champion left, was itself rolled back as champion "
            f"before; it measured {previous.accuracy:.3f} {where} only, which live outcomes already "
            f"contradicted once, so it is not restored automatically (at least {min_outcomes} of its "
            f"own predictions on the champion's outcomes would be needed)",
        )
    again = " (it was rolled back as champion before)" if previous.rolled_back_before else ""
    if previous.accuracy > champion_accuracy + _EPS:
        return RollbackVerdict(
            True,
            f"previous v{previous.version} measured {previous.accuracy:.3f} {where}, better than the "
            f"champion's live {champion_accuracy:.3f}{again}",
        )
    return RollbackVerdict(
        False,
        f"previous v{previous.version} measured {previous.accuracy:.3f} {where}, no better than the "
        f"champion's live {champion_accuracy:.3f}{again}",
    )


@dataclass(frozen=True)
class RollbackTarget:
    """The version a rollback of ``current`` would restore (None: none can be), and why.

    ``rolled_back_before``: the target is a last resort, itself rolled back as champion before;
    ``skipped``: earlier champions passed over, each with the registry's reason."""

    current: str
    version: str | None
    rolled_back_before: bool
    reason: str
    skipped: tuple[str, ...] = ()


def choose_rollback_target(
    history: ChampionHistory,
    refusal_of: Callable[[str], str | None],
    *,
    previous_alias: str | None = None,
) -> RollbackTarget:
    """The first of ``history.candidates`` the registry can serve (``refusal_of(version)`` says why
    it cannot: rejected, not servable, deleted; None when it can).

    When the history never saw ``history.current`` become champion, the registry's ``previous`` alias
    is the only clue and is offered (if servable). The ``reason`` says which version and why, or why
    none: it goes into ledger rows, alerts and error messages as is."""
    current = history.current
    skipped: list[str] = []
    for candidate in history.candidates:
        refusal = refusal_of(candidate.version)
        if refusal is not None:
            skipped.append(f"v{candidate.version} ({refusal})")
            continue
        passed = f"; passed over {', '.join(skipped)}" if skipped else ""
        if candidate.rolled_back:
            reason = (
                f"v{candidate.version} is the only earlier champion of v{current} left, and it was itself "
                f"rolled back as champion before{passed}"
            )
        else:
            reason = f"v{candidate.version} was champion before v{current}{passed}"
        return RollbackTarget(current, candidate.version, candidate.rolled_back, reason, tuple(skipped))
    if not history.known and previous_alias is not None and previous_alias != current:
        refusal = refusal_of(previous_alias)
        if refusal is None:
            return RollbackTarget(
                current,
                previous_alias,
                False,
                f"the promotion ledger has no history of v{current} as champion; the registry's "
                f"previous alias names v{previous_alias}",
            )
        skipped.append(f"v{previous_alias} ({refusal})")
    if not history.known and not skipped:
        reason = f"the promotion ledger has no champion before v{current} and no previous alias is set"
    elif not skipped:
        reason = f"v{current} is the first champion in the promotion ledger: there is none before it"
    else:
        reason = f"no earlier champion of v{current} can be served: {', '.join(skipped)}"
    return RollbackTarget(current, None, False, reason, tuple(skipped))
