"""The registration gate, the time split and the shared accuracy definition."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from neuracrm_mlops.config import get_settings, reset_settings
from neuracrm_mlops.errors import ConfigurationError
from neuracrm_mlops.release.decisions import PreviousMeasurement, decide_rollback_target
from neuracrm_mlops.training.evaluation import classification_accuracy, evaluate, forecast_accuracy, wape
from neuracrm_mlops.training.train import Incumbent, decide_registration, incumbent_of, time_split


@pytest.mark.parametrize(
    ("accuracy", "incumbent", "passed", "below_floor", "says"),
    [
        (0.85, None, True, False, "no champion yet"),
        (0.85, Incumbent("champion v1", 0.86), True, False, "champion v1 0.860"),  # within the tolerance
        (0.85, Incumbent("champion v1", 0.87), True, False, "champion v1 0.870"),  # exactly at it
        (0.85, Incumbent("champion v1", 0.88), False, False, "worse than champion v1's 0.880"),
        # above the floor but worse than the fallback users get today: never served
        (0.85, Incumbent("the fallback", 0.90, is_fallback=True), False, False, "worse than the fallback's"),
        (0.79, None, False, False, "below the floor 0.80"),
        (0.79, Incumbent("the fallback", None, is_fallback=True), False, False, "below the floor"),
        # below the floor but the best available: served, tagged below_floor
        (0.77, Incumbent("the VADER fallback", 0.51, is_fallback=True), True, True, "best available"),
        (0.79, Incumbent("champion v2", 0.70), True, True, "beats champion v2's 0.700"),
        # below the floor and not better than the incumbent by the margin: rejected
        (0.52, Incumbent("the VADER fallback", 0.51, is_fallback=True), False, False, "does not beat"),
        (0.60, Incumbent("the fallback", 0.70, is_fallback=True), False, False, "does not beat"),
        (0.80, None, True, False, ">= floor"),
        (float("nan"), None, False, False, "could not be computed"),
    ],
)
def test_registration_gate_never_serves_worse_than_the_incumbent(
    accuracy: float, incumbent: Incumbent | None, passed: bool, below_floor: bool, says: str
) -> None:
    decision = decide_registration(accuracy, floor=0.80, incumbent=incumbent, tolerance=0.02 + 1e-12)
    assert decision.passed is passed
    assert decision.below_floor is below_floor
    assert says in decision.reason


def test_incumbent_is_the_champion_when_there_is_one_else_the_fallback() -> None:
    assert incumbent_of(("3", 0.81), ("VADER", 0.5)) == Incumbent("champion v3", 0.81)
    assert incumbent_of(None, ("VADER", 0.5)) == Incumbent("VADER", 0.5, is_fallback=True)
    assert incumbent_of(None, None) is None


@pytest.mark.parametrize(
    ("champion", "previous", "roll_back", "says"),
    [
        (0.70, PreviousMeasurement("1", 0.85, "recorded_holdout"), True, "on its recorded holdout"),
        (0.70, PreviousMeasurement("1", 0.90, "same_outcomes", 150), True, "on the same 150 outcomes"),
        (0.70, PreviousMeasurement("1", 0.65, "same_outcomes", 150), False, "no better"),
        (0.70, PreviousMeasurement("1", 0.70, "recorded_holdout"), False, "no better"),
        # too few shared outcomes to measure it on: not measured, never assumed better
        (0.70, PreviousMeasurement("1", 0.99, "same_outcomes", 10), False, "could not be measured"),
        (0.70, PreviousMeasurement("1", None, "unmeasured"), False, "could not be measured"),
        (0.70, None, False, "no previous version"),
    ],
)
def test_rollback_goes_only_to_a_previous_measured_better(
    champion: float, previous: PreviousMeasurement | None, roll_back: bool, says: str
) -> None:
    verdict = decide_rollback_target(champion, previous, min_outcomes=100)
    assert verdict.roll_back is roll_back
    assert says in verdict.reason


def test_floors_per_family_and_organization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURACRM_ACCURACY_FLOOR", "0.8")
    monkeypatch.setenv("NEURACRM_ACCURACY_FLOORS", "sentiment=0.75, sales_forecast:12=0.6")
    reset_settings()
    settings = get_settings()
    assert settings.floor_for("sentiment") == 0.75
    assert settings.floor_for("sentiment", 12) == 0.75
    assert settings.floor_for("sales_forecast", 12) == 0.6
    assert settings.floor_for("sales_forecast", 13) == 0.8
    assert settings.floor_for("lead_scoring") == 0.8
    monkeypatch.setenv("NEURACRM_ACCURACY_FLOORS", "sentiment=high")
    reset_settings()
    with pytest.raises(ConfigurationError, match="NEURACRM_ACCURACY_FLOORS"):
        get_settings()


def test_time_split_trains_on_the_past_and_holds_out_the_newest() -> None:
    frame = pd.DataFrame({"t": [5, 1, 4, 2, 3, 6, 8, 7, 9, 10]})
    train, holdout = time_split(frame, "t", 0.2)
    assert list(train["t"]) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert list(holdout["t"]) == [9, 10]
    with pytest.raises(ValueError, match="holdout_share"):
        time_split(frame, "t", 1.0)


def test_forecast_accuracy_is_one_minus_wape_floored_at_zero() -> None:
    assert wape([100, 200], [110, 170]) == pytest.approx(40 / 300)
    assert forecast_accuracy([100, 200], [110, 170]) == pytest.approx(1 - 40 / 300)
    assert forecast_accuracy([10, 10], [100, 100]) == 0.0
    assert wape([0, 0], [0, 0]) == 0.0
    assert math.isinf(wape([0, 0], [1, 0]))


def test_classification_accuracy_is_the_share_of_correct_labels() -> None:
    assert classification_accuracy(["a", "b", "c", "a"], ["a", "b", "a", "a"]) == 0.75
    metrics = evaluate([1, 0, 1, 0], [1, 0, 0, 0], probabilities=[0.9, 0.2, 0.4, 0.1])
    assert metrics["accuracy"] == 0.75
    assert metrics["roc_auc"] == 1.0
    assert metrics["precision"] == 1.0 and metrics["recall"] == 0.5


def test_evaluate_refuses_labels_and_predictions_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        evaluate([1, 0], [1])
