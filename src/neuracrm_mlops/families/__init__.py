"""The registry of model families: the one place that lists them.

Adding a family is one module (a ``FamilySpec``, see ``base``) plus one line in ``FAMILIES``. The
CLI, the DAG factories, rollout, monitoring and the health page read this registry instead of
branching on family names.
"""

from __future__ import annotations

from neuracrm_mlops.families import lead_scoring, sales_forecast, sentiment, voice_scenario
from neuracrm_mlops.families.base import (
    CliTrain,
    FamilySpec,
    ModelFamily,
    MonitoringChecks,
    RolloutStrategy,
    TrainRequest,
)

__all__ = [
    "FAMILIES",
    "CliTrain",
    "FamilySpec",
    "ModelFamily",
    "MonitoringChecks",
    "RolloutStrategy",
    "TrainRequest",
    "UnknownFamilyError",
    "families_with",
    "family_names",
    "family_of_model",
    "find_family",
    "get_family",
]

# In this order everywhere a list of families is shown (CLI choices, DAGs, the health page).
FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        lead_scoring.FAMILY,
        sentiment.FAMILY,
        sales_forecast.FAMILY,
        voice_scenario.FAMILY,
    )
}


class UnknownFamilyError(ValueError):
    """A name that is no registered family (or no registered model of one)."""


def family_names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def get_family(name: str) -> ModelFamily:
    """The family called ``name``; UnknownFamilyError (a ValueError) names the registered ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamilyError(f"unknown model family {name!r}: use one of {', '.join(FAMILIES)}") from None


def find_family(registered_model_name: str) -> ModelFamily | None:
    """The family a registered model belongs to (``sales_forecast_org_7`` -> sales_forecast), or None."""
    for family in FAMILIES.values():
        if family.owns(registered_model_name):
            return family
    return None


def family_of_model(registered_model_name: str) -> ModelFamily:
    """``find_family``, raising UnknownFamilyError for a model of no registered family."""
    family = find_family(registered_model_name)
    if family is None:
        raise UnknownFamilyError(f"{registered_model_name!r} is no registered model of a model family")
    return family


def families_with(
    *, naming: str | None = None, rollout_strategy: RolloutStrategy | None = None
) -> tuple[ModelFamily, ...]:
    """The registered families with the given naming and/or rollout strategy, in registry order."""
    return tuple(
        family
        for family in FAMILIES.values()
        if (naming is None or family.naming == naming)
        and (rollout_strategy is None or family.rollout_strategy == rollout_strategy)
    )
