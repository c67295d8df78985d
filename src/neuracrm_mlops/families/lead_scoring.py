"""Lead scoring: one model for every organization, judged by the share of leads labelled right."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neuracrm_mlops.families.base import FamilySpec, MonitoringChecks, TrainRequest

CONVERTED, NOT_CONVERTED = "converted", "not_converted"


def train(request: TrainRequest) -> dict[str, Any]:
    from neuracrm_mlops.training import train as training

    outcome: dict[str, Any] = training.train_lead_scoring(request.lineage).as_dict()
    return outcome


def predicted_label(output: Mapping[str, Any]) -> str | None:
    """``converted`` when the logged probability is at least 0.5."""
    probability = output.get("probability")
    if probability is None:
        return None
    return CONVERTED if float(probability) >= 0.5 else NOT_CONVERTED


FAMILY = FamilySpec(
    name="lead_scoring",
    dataset="leads",
    validation_suite="leads",
    naming="shared",
    fallback="rule fallback (lead_scoring_rules)",
    rollout_strategy="traffic_share",
    accuracy_measure="label_match",
    trainer=train,
    label_of=predicted_label,
    outcome_labels=(CONVERTED, NOT_CONVERTED),
    # what CRM exports write for a lead's outcome: booleans, 1/0, yes/no
    outcome_aliases={
        **dict.fromkeys(("true", "1", "yes", "y", "t"), CONVERTED),
        **dict.fromkeys(("false", "0", "no", "n", "f"), NOT_CONVERTED),
    },
    checks=MonitoringChecks(),  # health, drift and bias (across NEURACRM_BIAS_ATTRIBUTE)
)
