"""Canary rollout, live-accuracy and rollback-target decisions, branch by branch."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from neuracrm_mlops.release.decisions import (
    CohortDecision,
    CohortMember,
    LiveVerdict,
    PreviousMeasurement,
    RolloutDecision,
    RolloutPolicy,
    VersionLiveStats,
    choose_rollback_target,
    decide_cohort_step,
    decide_live_accuracy,
    decide_rollback_target,
    decide_rollout_step,
    should_alert,
)
from neuracrm_mlops.store.ledger import ChampionHistory, ChampionMove
from neuracrm_mlops.store.ledger import champion_history_of as champion_history

POLICY = RolloutPolicy()


def stats(
    version: str = "2",
    *,
    outcomes: int = 500,
    accuracy: float | None = 0.88,
    error_rate: float = 0.01,
    p95: float | None = 100.0,
    requests: int = 1000,
) -> VersionLiveStats:
    return VersionLiveStats(version, outcomes, accuracy, error_rate, p95, requests)


CHAMPION = stats("1", accuracy=0.87)


def decide(
    challenger: VersionLiveStats,
    champion: VersionLiveStats | None = CHAMPION,
    *,
    weight: float = 0.10,
    deadline_passed: bool = False,
    policy: RolloutPolicy = POLICY,
) -> RolloutDecision:
    return decide_rollout_step(policy, weight, champion, challenger, deadline_passed=deadline_passed)


# --- policy -------------------------------------------------------------------------------------------


def test_default_policy_matches_the_design() -> None:
    assert POLICY.steps == (0.10, 0.50, 1.00)
    assert POLICY.accuracy_floor == 0.80
    assert POLICY.min_outcomes == 100
    assert POLICY.accuracy_tolerance == 0.02
    assert POLICY.max_error_rate_increase == 0.02


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps": ()}, "steps"),
        ({"steps": (0.5, 0.1, 1.0)}, "steps must be strictly increasing"),
        ({"steps": (0.1, 0.1, 1.0)}, "steps must be strictly increasing"),
        ({"steps": (0.1, 0.5)}, "steps must end with 1.0"),
        ({"steps": (0.0, 1.0)}, "steps must all be in"),
        ({"steps": (0.5, 1.5)}, "steps must all be in"),
        ({"steps": (-0.1, 1.0)}, "steps must all be in"),
        ({"steps": (float("nan"), 1.0)}, "steps must all be in"),
        ({"accuracy_floor": 1.2}, "accuracy_floor"),
        ({"accuracy_floor": -0.1}, "accuracy_floor"),
        ({"accuracy_floor": float("nan")}, "accuracy_floor"),
        ({"min_outcomes": 0}, "min_outcomes"),
        ({"min_outcomes": 10.5}, "min_outcomes"),
        ({"min_requests": 0}, "min_requests"),
        ({"accuracy_tolerance": -0.01}, "accuracy_tolerance"),
        ({"max_error_rate_increase": 2.0}, "max_error_rate_increase"),
        ({"max_p95_ratio": 0.9}, "max_p95_ratio"),
        ({"max_p95_ratio": float("inf")}, "max_p95_ratio"),
        ({"p95_slack_ms": -1.0}, "p95_slack_ms"),
    ],
)
def test_invalid_policy_is_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RolloutPolicy(**kwargs)  # type: ignore[arg-type]


def test_single_step_policy_goes_straight_to_full_traffic() -> None:
    policy = RolloutPolicy(steps=(1.0,))
    assert policy.next_weight(0.0) == 1.0
    assert policy.next_weight(1.0) is None


def test_steps_given_as_a_list_are_stored_as_a_tuple() -> None:
    assert RolloutPolicy(steps=[0.2, 1.0]).steps == (0.2, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"outcomes": -1}, "outcomes"),
        ({"requests": -5}, "requests"),
        ({"accuracy": 1.5}, "accuracy"),
        ({"accuracy": float("nan")}, "accuracy"),
        ({"error_rate": -0.1}, "error_rate"),
        ({"p95": -3.0}, "p95_latency_ms"),
        ({"p95": float("inf")}, "p95_latency_ms"),
    ],
)
def test_invalid_live_stats_are_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        stats(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [-0.1, 1.1, float("nan")])
def test_weight_outside_zero_to_one_is_refused(weight: float) -> None:
    with pytest.raises(ValueError, match="current_weight"):
        decide(stats(), weight=weight)


# --- hold ---------------------------------------------------------------------------------------------


def test_challenger_without_enough_outcomes_holds_at_the_current_weight() -> None:
    decision = decide(stats(outcomes=40), weight=0.5)
    assert decision.action == "hold"
    assert decision.next_weight == 0.5
    assert "challenger 2 has 40 of 100 labelled outcomes needed" in decision.reason
    assert "deadline" not in decision.reason
    assert not should_alert(decision)


def test_champion_without_enough_outcomes_holds_too() -> None:
    decision = decide(stats(), stats("1", outcomes=99))
    assert decision.action == "hold"
    assert "champion 1 has 99 of 100 labelled outcomes needed" in decision.reason
    assert "challenger" not in decision.reason.split(":", 1)[1]


def test_hold_names_both_versions_when_both_lack_outcomes() -> None:
    decision = decide(stats(outcomes=3), stats("1", outcomes=7))
    assert decision.action == "hold"
    assert "3 of 100" in decision.reason
    assert "7 of 100" in decision.reason


def test_hold_after_the_deadline_says_so_and_alerts() -> None:
    decision = decide(stats(outcomes=40), deadline_passed=True)
    assert decision.action == "hold"
    assert decision.next_weight == 0.10
    assert decision.reason.startswith("deadline passed with no verdict")
    assert "40 of 100" in decision.reason
    assert "never promotes" in decision.reason
    assert should_alert(decision)
    assert decision.alert


@pytest.mark.parametrize("deadline_passed", [False, True])
@pytest.mark.parametrize("weight", [0.0, 0.10, 0.50, 1.0])
def test_no_data_never_promotes_nor_advances(weight: float, deadline_passed: bool) -> None:
    no_data = stats(outcomes=0, accuracy=None, requests=0, p95=None)
    decision = decide(no_data, weight=weight, deadline_passed=deadline_passed)
    assert decision.action == "hold"
    assert decision.next_weight == weight


def test_first_rollout_without_data_holds() -> None:
    decision = decide(stats(outcomes=10, accuracy=0.99), None, weight=1.0, deadline_passed=True)
    assert decision.action == "hold"
    assert should_alert(decision)


def test_outcomes_without_an_accuracy_hold() -> None:
    decision = decide(stats(accuracy=None))
    assert decision.action == "hold"
    assert "500 outcomes but no accuracy" in decision.reason


def test_exactly_min_outcomes_is_enough() -> None:
    assert decide(stats(outcomes=100), stats("1", outcomes=100)).action == "next_step"


# --- rollback -----------------------------------------------------------------------------------------


def test_challenger_below_the_floor_rolls_back_to_weight_zero() -> None:
    decision = decide(stats(accuracy=0.79), stats("1", accuracy=0.75), weight=0.5)
    assert decision.action == "rollback"
    assert decision.next_weight == 0.0
    assert "accuracy 0.790 is below the floor 0.80" in decision.reason
    assert should_alert(decision)


def test_challenger_worse_than_champion_beyond_tolerance_rolls_back() -> None:
    decision = decide(stats(accuracy=0.84), stats("1", accuracy=0.87))
    assert decision.action == "rollback"
    assert "worse than the champion's 0.870 by more than the tolerance 0.020" in decision.reason
    assert "floor" not in decision.reason


def test_challenger_exactly_at_the_tolerance_passes() -> None:
    assert decide(stats(accuracy=0.85), stats("1", accuracy=0.87)).action == "next_step"
    # 0.52 - 0.05 is 0.47000000000000003 in binary floating point: still "exactly at" the tolerance
    policy = RolloutPolicy(accuracy_floor=0.40, accuracy_tolerance=0.05)
    assert decide(stats(accuracy=0.47), stats("1", accuracy=0.52), policy=policy).action == "next_step"
    assert decide(stats(accuracy=0.4699), stats("1", accuracy=0.52), policy=policy).action == "rollback"


def test_challenger_exactly_at_the_floor_passes() -> None:
    assert decide(stats(accuracy=0.80), stats("1", accuracy=0.81)).action == "next_step"


def test_error_rate_increase_beyond_the_limit_rolls_back() -> None:
    decision = decide(stats(error_rate=0.04), stats("1", error_rate=0.01))
    assert decision.action == "rollback"
    assert "error rate 0.040 exceeds the champion's 0.010 + 0.020 = 0.030" in decision.reason


def test_error_rate_exactly_at_the_limit_passes() -> None:
    assert decide(stats(error_rate=0.03), stats("1", error_rate=0.01)).action == "next_step"
    # 0.7 + 0.1 is 0.7999999999999999 in binary floating point
    policy = RolloutPolicy(max_error_rate_increase=0.1)
    assert decide(stats(error_rate=0.8), stats("1", error_rate=0.7), policy=policy).action == "next_step"


def test_p95_beyond_the_ratio_rolls_back_for_a_slow_champion() -> None:
    # champion 200 ms: allowance max(300, 220) = 300 ms
    assert decide(stats(p95=300.0), stats("1", p95=200.0)).action == "next_step"
    decision = decide(stats(p95=301.0), stats("1", p95=200.0))
    assert decision.action == "rollback"
    assert "p95 latency 301.0 ms exceeds the allowance 300.0 ms" in decision.reason


def test_p95_slack_protects_a_fast_champion_from_jitter() -> None:
    # champion 10 ms: allowance max(15, 30) = 30 ms, so 25 ms passes where the ratio alone would not
    assert decide(stats(p95=25.0), stats("1", p95=10.0)).action == "next_step"
    decision = decide(stats(p95=31.0), stats("1", p95=10.0))
    assert decision.action == "rollback"
    assert "allowance 30.0 ms" in decision.reason


def test_unknown_latency_is_not_compared() -> None:
    assert decide(stats(p95=None), stats("1", p95=50.0)).action == "next_step"
    assert decide(stats(p95=5000.0), stats("1", p95=None)).action == "next_step"


def test_every_failing_check_is_named() -> None:
    decision = decide(stats(accuracy=0.70, error_rate=0.20, p95=900.0), stats("1", accuracy=0.90))
    assert decision.action == "rollback"
    for says in ("below the floor", "worse than the champion's", "error rate 0.200", "p95 latency 900.0"):
        assert says in decision.reason


def test_error_rate_blowup_rolls_back_before_outcomes_arrive() -> None:
    failing = stats(outcomes=5, error_rate=0.30, requests=400)
    decision = decide(failing, stats("1", outcomes=5, requests=4000))
    assert decision.action == "rollback"
    assert "error rate 0.300" in decision.reason
    assert "before the accuracy verdict (challenger 2 has 5 of 100" in decision.reason


def test_early_operational_check_waits_for_enough_requests() -> None:
    failing = stats(outcomes=5, error_rate=0.30, requests=199)
    assert decide(failing, stats("1", outcomes=5, requests=4000)).action == "hold"


def test_operational_checks_run_at_the_verdict_even_with_few_requests() -> None:
    policy = RolloutPolicy(min_requests=10_000)
    assert decide(stats(error_rate=0.30), policy=policy).action == "rollback"


def test_rollback_applies_after_the_deadline_as_usual() -> None:
    decision = decide(stats(accuracy=0.5), deadline_passed=True)
    assert decision.action == "rollback"
    assert decision.deadline_passed
    assert "deadline" not in decision.reason


# --- next step and promotion --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "following"),
    [(0.0, 0.10), (0.10, 0.50), (0.25, 0.50), (0.50, 1.0), (0.75, 1.0), (0.1 + 1e-12, 0.50)],
)
def test_passing_step_moves_to_the_next_step_above_the_weight(weight: float, following: float) -> None:
    decision = decide(stats(), weight=weight)
    assert decision.action == "next_step"
    assert decision.next_weight == following
    assert f"to {following:.2f}" in decision.reason
    assert not should_alert(decision)


def test_passing_at_full_traffic_promotes() -> None:
    decision = decide(stats(), weight=1.0)
    assert decision.action == "promote"
    assert decision.next_weight is None
    assert decision.reason.startswith("promote challenger 2 at weight 1.00")
    assert "champion 1 0.870" in decision.reason
    assert not should_alert(decision)


def test_passing_after_the_deadline_still_advances() -> None:
    decision = decide(stats(), weight=0.5, deadline_passed=True)
    assert decision.action == "next_step"
    assert not should_alert(decision)


def test_custom_steps_are_followed() -> None:
    policy = RolloutPolicy(steps=(0.05, 0.25, 1.0))
    assert decide(stats(), weight=0.05, policy=policy).next_weight == 0.25
    assert decide(stats(), weight=0.25, policy=policy).next_weight == 1.0
    assert decide(stats(), weight=1.0, policy=policy).action == "promote"


def test_first_rollout_is_judged_against_the_floor_alone() -> None:
    # an error rate and latency that would fail against a champion do not matter without one
    challenger = stats(accuracy=0.81, error_rate=0.5, p95=9000.0)
    decision = decide(challenger, None)
    assert decision.action == "next_step"
    assert "no champion yet" in decision.reason
    assert decide(challenger, None, weight=1.0).action == "promote"
    below = decide(stats(accuracy=0.79), None)
    assert below.action == "rollback"
    assert "below the floor 0.80" in below.reason


def test_decision_metrics_carry_the_numbers_and_are_json_safe() -> None:
    decision = decide(stats(p95=120.0), stats("1", accuracy=0.87, p95=100.0), weight=0.5)
    metrics = decision.metrics
    assert metrics["challenger_accuracy"] == 0.88
    assert metrics["champion_accuracy"] == 0.87
    assert metrics["max_p95_latency_ms"] == 150.0
    assert metrics["max_error_rate"] == pytest.approx(0.03)
    assert metrics["min_accuracy_vs_champion"] == pytest.approx(0.85)
    assert metrics["current_weight"] == 0.5
    json.dumps(metrics, allow_nan=False)
    assert "champion_version" not in decide(stats(), None).metrics


# --- should_alert -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "deadline_passed", "alert"),
    [
        ("rollback", False, True),
        ("rollback", True, True),
        ("hold", True, True),
        ("hold", False, False),
        ("next_step", True, False),
        ("promote", False, False),
    ],
)
def test_should_alert(action: str, deadline_passed: bool, alert: bool) -> None:
    decision = RolloutDecision(action, None, "r", {}, deadline_passed)  # type: ignore[arg-type]
    assert should_alert(decision) is alert


# --- live accuracy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accuracy", "outcomes", "verdict", "says"),
    [
        (0.75, 500, "below_floor", "live accuracy 0.750 over 500 outcomes is below the floor 0.80"),
        (0.80, 500, "ok", "live accuracy 0.800 over 500 outcomes >= floor 0.80"),
        (0.95, 100, "ok", ">= floor"),
        (0.10, 99, "insufficient_data", "99 of 100 labelled outcomes needed"),
        (0.10, 99, "insufficient_data", "accuracy so far 0.100"),
        (None, 0, "insufficient_data", "0 of 100"),
        (None, 300, "insufficient_data", "could not be computed"),
        (float("nan"), 300, "insufficient_data", "could not be computed"),
    ],
)
def test_live_accuracy_verdict(accuracy: float | None, outcomes: int, verdict: str, says: str) -> None:
    result = decide_live_accuracy(accuracy, outcomes, floor=0.80, min_outcomes=100)
    assert isinstance(result, LiveVerdict)
    assert result.verdict == verdict
    assert says in result.reason
    assert result.below_floor is (verdict == "below_floor")


def test_live_accuracy_just_below_the_floor_with_float_noise_is_ok() -> None:
    assert decide_live_accuracy(0.7 + 0.1, 200, floor=0.80, min_outcomes=100).verdict == "ok"
    assert decide_live_accuracy(0.7999, 200, floor=0.80, min_outcomes=100).verdict == "below_floor"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0.9, 10, 1.5, 100), "floor"),
        ((0.9, 10, 0.8, 0), "min_outcomes"),
        ((0.9, -1, 0.8, 100), "outcomes"),
        ((1.2, 10, 0.8, 100), "accuracy"),
    ],
)
def test_live_accuracy_refuses_invalid_arguments(args: tuple[float, int, float, int], field: str) -> None:
    accuracy, outcomes, floor, min_outcomes = args
    with pytest.raises(ValueError, match=field):
        decide_live_accuracy(accuracy, outcomes, floor=floor, min_outcomes=min_outcomes)


# --- rollback target: the champion alias history --------------------------------------------------


def _promote(frm: str | None, to: str) -> ChampionMove:
    return ("promote", frm, to)


def _rollback(frm: str, to: str) -> ChampionMove:
    return ("rollback", frm, to)


def _earlier(moves: list[ChampionMove], current: str) -> list[tuple[str, bool]]:
    return [(e.version, e.rolled_back) for e in champion_history(moves, current).earlier]


PROMOTED_1_2_3 = [_promote(None, "1"), _promote("1", "2"), _promote("2", "3")]


def test_promotions_give_the_earlier_champions_most_recent_first() -> None:
    history = champion_history(PROMOTED_1_2_3, "3")
    assert history.known and history.previous == "2"
    assert _earlier(PROMOTED_1_2_3, "3") == [("2", False), ("1", False)]


def test_the_runbooks_undo_restores_the_history_before_the_rollback() -> None:
    """promote v2, promote v3, rollback (-> v2), rollback --to 3 (-> v3): v3's previous is v2."""
    moves = [_promote(None, "2"), _promote("2", "3"), _rollback("3", "2"), _rollback("2", "3")]
    assert champion_history(moves, "3").previous == "2"
    assert _earlier(moves, "3") == [("2", False)]  # the undo blames neither version
    with_v1 = [
        _promote(None, "1"),
        _promote("1", "2"),
        _promote("2", "3"),
        _rollback("3", "2"),
        _rollback("2", "3"),
    ]
    assert _earlier(with_v1, "3") == [("2", False), ("1", False)]


def test_undoing_the_undo_is_the_rollback_again() -> None:
    moves = [*PROMOTED_1_2_3, _rollback("3", "2"), _rollback("2", "3"), _rollback("3", "2")]
    assert _earlier(moves, "2") == [("3", True), ("1", False)]
    assert champion_history(moves, "2").previous == "1"


def test_a_rollback_to_an_older_version_blames_the_one_left_not_the_ones_skipped() -> None:
    moves = [*PROMOTED_1_2_3, _rollback("3", "1")]  # rollback --to 1
    assert _earlier(moves, "1") == [("3", True), ("2", False)]
    assert champion_history(moves, "1").previous == "2"


def test_a_version_rolled_back_twice_in_a_row_leaves_only_rolled_back_versions() -> None:
    moves = [*PROMOTED_1_2_3, _rollback("3", "2"), _rollback("2", "1")]
    history = champion_history(moves, "1")
    assert _earlier(moves, "1") == [("2", True), ("3", True)]
    assert history.previous is None
    assert [e.version for e in history.candidates] == ["2", "3"]  # the last resort, most recent first


def test_a_version_made_champion_again_is_no_longer_rolled_back() -> None:
    # reinstated by an explicit rollback --to (not an undo: v1 came in between)
    moves = [*PROMOTED_1_2_3, _rollback("3", "2"), _rollback("2", "1"), _rollback("1", "3")]
    assert _earlier(moves, "3") == [("1", True), ("2", True)]
    # and by a new promotion of the same version
    promoted_again = [_promote(None, "2"), _promote("2", "3"), _rollback("3", "2"), _promote("2", "3")]
    assert _earlier(promoted_again, "3") == [("2", False)]


def test_a_version_not_champion_now_is_answered_as_when_it_last_became_champion() -> None:
    moves = [*PROMOTED_1_2_3, _rollback("3", "2")]
    assert champion_history(moves, "3").previous == "2"
    assert champion_history(moves, "2").previous == "1"
    assert champion_history(moves, "1").previous is None


def test_a_history_that_starts_mid_way_counts_the_version_left() -> None:
    assert champion_history([_promote("8", "9")], "9").previous == "8"
    # a rollback to a version the history never saw as champion
    assert _earlier([_promote(None, "1"), _promote("1", "2"), _rollback("2", "5")], "5") == [
        ("2", True),
        ("1", False),
    ]


def test_an_unknown_version_has_no_history() -> None:
    history = champion_history(PROMOTED_1_2_3, "42")
    assert not history.known and history.earlier == () and history.previous is None
    assert champion_history([], 1) == ChampionHistory("1", False, ())


def _refusals(**why: str) -> Callable[[str], str | None]:
    return lambda version: why.get(f"v{version}")


def test_the_target_skips_versions_the_registry_refuses_and_says_so() -> None:
    history = champion_history(PROMOTED_1_2_3, "3")
    target = choose_rollback_target(history, _refusals(v2="rejected: canary failed"))
    assert (target.version, target.rolled_back_before) == ("1", False)
    assert target.reason == "v1 was champion before v3; passed over v2 (rejected: canary failed)"
    nothing = choose_rollback_target(history, _refusals(v2="not servable", v1="deleted from the registry"))
    assert nothing.version is None
    assert nothing.reason == (
        "no earlier champion of v3 can be served: v2 (not servable), v1 (deleted from the registry)"
    )


def test_the_target_prefers_any_version_in_good_standing_over_one_rolled_back() -> None:
    moves = [*PROMOTED_1_2_3, _rollback("3", "2")]
    assert choose_rollback_target(champion_history(moves, "2"), _refusals()).version == "1"
    last_resort = choose_rollback_target(champion_history(moves, "2"), _refusals(v1="not servable"))
    assert (last_resort.version, last_resort.rolled_back_before) == ("3", True)
    assert "v3 is the only earlier champion of v2 left" in last_resort.reason


def test_the_previous_alias_counts_only_when_the_history_does_not_know_the_champion() -> None:
    unknown = champion_history([], "7")
    assert choose_rollback_target(unknown, _refusals(), previous_alias="6").version == "6"
    assert choose_rollback_target(unknown, _refusals(v6="not servable"), previous_alias="6").version is None
    assert (
        "no champion before v7 and no previous alias" in choose_rollback_target(unknown, _refusals()).reason
    )
    first = champion_history([_promote(None, "1")], "1")
    # the ledger knows v1 was the first champion: a hand-set alias does not override it
    target = choose_rollback_target(first, _refusals(), previous_alias="0")
    assert target.version is None and "first champion" in target.reason


@pytest.mark.parametrize(
    ("previous", "roll_back", "says"),
    [
        # a last resort rolled back before: its recorded holdout is no evidence any more
        (PreviousMeasurement("3", 0.95, "recorded_holdout", rolled_back_before=True), False, "not restored"),
        (PreviousMeasurement("3", 0.95, "same_outcomes", 50, rolled_back_before=True), False, "measured"),
        # on the champion's own outcomes it may come back, and the reason says it was rolled back before
        (PreviousMeasurement("3", 0.90, "same_outcomes", 150, rolled_back_before=True), True, "before)"),
        (PreviousMeasurement("3", 0.60, "same_outcomes", 150, rolled_back_before=True), False, "no better"),
        # in good standing the holdout counts as before
        (PreviousMeasurement("3", 0.95, "recorded_holdout"), True, "on its recorded holdout, better"),
    ],
)
def test_a_version_rolled_back_before_is_restored_only_on_the_same_live_outcomes(
    previous: PreviousMeasurement, roll_back: bool, says: str
) -> None:
    verdict = decide_rollback_target(0.70, previous, min_outcomes=100)
    assert verdict.roll_back is roll_back
    assert says in verdict.reason


# --- cohort step (forecasts: the weight is a share of organizations) -----------------------------------

FORECAST_POLICY = RolloutPolicy(min_outcomes=3)


def member(
    org: int, *, accuracy: float | None = 0.9, outcomes: int = 6, policy: RolloutPolicy | None = None
) -> CohortMember:
    champion = stats("1", outcomes=6, accuracy=0.88, p95=None, requests=10)
    challenger = stats("2", outcomes=outcomes, accuracy=accuracy, p95=None, requests=10)
    return CohortMember(org, champion, challenger, policy)


def cohort_step(
    cohort: list[CohortMember],
    *,
    weight: float = 0.10,
    running: list[int] | None = None,
    deadline_passed: bool = False,
) -> CohortDecision:
    return decide_cohort_step(
        FORECAST_POLICY, weight, cohort, running=running, deadline_passed=deadline_passed
    )


def test_cohort_that_passes_moves_to_the_next_share_of_organizations() -> None:
    decision = cohort_step([member(3), member(8)])
    assert decision.action == "next_step"
    assert decision.next_weight == 0.50
    assert decision.passed == (3, 8) and decision.rejected == () and decision.holding == ()
    assert (
        decision.reason
        == "2 organization(s) in the 10% cohort passed, 0 rejected: moving to 50% of organizations"
    )
    assert not decision.alert
    assert {org: v.action for org, v in decision.verdicts.items()} == {3: "next_step", 8: "next_step"}


def test_an_organization_whose_challenger_fails_is_rejected_alone() -> None:
    decision = cohort_step([member(3), member(5, accuracy=0.70), member(8)])
    assert decision.rejected == (5,)
    assert decision.verdicts[5].action == "rollback"
    assert "below the floor 0.80" in decision.verdicts[5].reason
    # the others go on
    assert decision.action == "next_step" and decision.passed == (3, 8)
    assert "2 organization(s) in the 10% cohort passed, 1 rejected" in decision.reason


def test_an_organization_short_of_actuals_holds_the_family() -> None:
    decision = cohort_step([member(3), member(4, outcomes=2, accuracy=0.95), member(6, accuracy=0.5)])
    assert decision.action == "hold"
    assert decision.next_weight == 0.10
    assert decision.holding == (4,) and decision.passed == (3,) and decision.rejected == (6,)
    assert decision.reason == "1 organization(s) in the 10% cohort lack actuals (3 months needed): holding"
    assert not decision.alert
    # each organization is judged without the deadline: short of actuals is a hold, never a verdict
    assert not decision.verdicts[4].deadline_passed


def test_a_hold_past_the_deadline_alerts_and_never_promotes() -> None:
    decision = cohort_step(
        [member(3), member(4, outcomes=0, accuracy=None)], weight=1.0, deadline_passed=True
    )
    assert decision.action == "hold"
    assert decision.promote == ()
    assert decision.alert
    assert decision.reason.startswith("deadline passed with no verdict: 1 organization(s) in the 100% cohort")
    assert decision.reason.endswith("(never promotes)")


def test_a_deadline_without_anyone_holding_still_advances() -> None:
    decision = cohort_step([member(3)], weight=0.5, deadline_passed=True)
    assert decision.action == "next_step" and decision.next_weight == 1.0
    assert not decision.alert


def test_at_full_share_every_running_organization_not_rejected_is_promoted() -> None:
    decision = cohort_step([member(3), member(5, accuracy=0.6), member(8)], weight=1.0, running=[3, 5, 8, 9])
    assert decision.action == "promote"
    assert decision.next_weight is None
    assert decision.promote == (3, 8, 9)
    assert decision.reason == "3 organization(s) promoted, 1 rejected"
    # without ``running``: the cohort's organizations
    assert cohort_step([member(3), member(8)], weight=1.0).promote == (3, 8)


def test_each_organization_is_judged_with_its_own_policy() -> None:
    strict = RolloutPolicy(min_outcomes=3, accuracy_floor=0.95)
    decision = cohort_step([member(3), member(4, policy=strict)])
    assert decision.rejected == (4,)
    assert "below the floor 0.95" in decision.verdicts[4].reason
    assert decision.passed == (3,)


def test_an_empty_cohort_moves_on() -> None:
    # no organization's bucket falls under the first share: nobody to judge, the share grows
    decision = cohort_step([], weight=0.10)
    assert decision.action == "next_step" and decision.next_weight == 0.50
    assert decision.reason.startswith("0 organization(s) in the 10% cohort passed")


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_cohort_weight_outside_zero_to_one_is_refused(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        cohort_step([member(3)], weight=weight)


def test_an_organization_twice_in_the_cohort_is_refused() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        cohort_step([member(3), member(3)])
