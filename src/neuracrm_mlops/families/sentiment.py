"""Sentiment of interactions: one model for every organization, VADER as its fallback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neuracrm_mlops.families.base import FamilySpec, MonitoringChecks, TrainRequest


def train(request: TrainRequest) -> dict[str, Any]:
    from neuracrm_mlops.training import train as training

    outcome: dict[str, Any] = training.train_sentiment(request.lineage).as_dict()
    return outcome


def predicted_label(output: Mapping[str, Any]) -> str | None:
    label = output.get("label")
    return str(label) if label is not None else None


FAMILY = FamilySpec(
    name="sentiment",
    dataset="interactions",
    validation_suite="interactions",
    naming="shared",
    fallback="VADER",
    rollout_strategy="traffic_share",
    accuracy_measure="label_match",
    trainer=train,
    label_of=predicted_label,
    outcome_labels=("negative", "neutral", "positive"),
    checks=MonitoringChecks(bias=False),  # the bias check reads converted / not converted labels
)
