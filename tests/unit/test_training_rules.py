"""The registration gate, the time split and the shared accuracy definition."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from neuracrm_mlops.evaluation import classification_accuracy, evaluate, forecast_accuracy, wape
from neuracrm_mlops.training import decide_registration, time_split


@pytest.mark.parametrize(
    ("accuracy", "champion", "passed", "says"),
    [
        (0.85, None, True, "no champion yet"),
        (0.85, 0.86, True, "champion 0.860"),  # within the 0.02 tolerance
        (0.85, 0.87, True, "champion 0.870"),  # exactly at the tolerance
        (0.85, 0.88, False, "worse than the champion's 0.880"),
        (0.79, None, False, "below the floor 0.80"),
        (0.79, 0.70, False, "below the floor"),  # beating a bad champion does not excuse the floor
        (0.80, None, True, ">= floor"),
        (float("nan"), None, False, "could not be computed"),
    ],
)
def test_registration_gate(accuracy: float, champion: float | None, passed: bool, says: str) -> None:
    decision = decide_registration(accuracy, floor=0.80, champion_accuracy=champion, tolerance=0.02 + 1e-12)
    assert decision.passed is passed
    assert says in decision.reason


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
    metrics = evaluate("lead_scoring", [1, 0, 1, 0], [1, 0, 0, 0], probabilities=[0.9, 0.2, 0.4, 0.1])
    assert metrics["accuracy"] == 0.75
    assert metrics["roc_auc"] == 1.0
    assert metrics["precision"] == 1.0 and metrics["recall"] == 0.5


def test_evaluate_names_an_unknown_family() -> None:
    with pytest.raises(ValueError, match="unknown model family 'churn'"):
        evaluate("churn", [1], [1])
