"""Sticky canary routing: which version answers for an entity, from a hash and the canary weight.

An entity (a lead, an interaction, an organization for forecasts) is hashed with its organization
into a bucket in [0, 1). The challenger answers when the bucket is below the canary weight, so:
- the same entity always meets the same version while the weight stays put;
- raising the weight only moves entities from champion to challenger, never back;
- over many entities the challenger's share converges to the weight.
"""

from __future__ import annotations

import hashlib

CHAMPION_ROUTE, CHALLENGER_ROUTE, FALLBACK_ROUTE, SHADOW_ROUTE = (
    "champion",
    "challenger",
    "fallback",
    "shadow",
)
_BUCKETS = float(1 << 64)


def bucket(organization_id: int | None, entity_id: str) -> float:
    """A stable, uniform number in [0, 1) for ``organization + entity`` (the same in every process)."""
    digest = hashlib.blake2b(f"{organization_id}:{entity_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _BUCKETS


def choose_route(organization_id: int | None, entity_id: str, weight: float, *, has_challenger: bool) -> str:
    """``challenger`` when a challenger is loaded and the entity's bucket falls under ``weight``."""
    if not has_challenger or weight <= 0.0:
        return CHAMPION_ROUTE
    return CHALLENGER_ROUTE if bucket(organization_id, entity_id) < weight else CHAMPION_ROUTE


def canary_cohort(organization_ids: list[int], weight: float) -> set[int]:
    """The organizations a forecast rollout at ``weight`` covers: those whose bucket is under it.

    Forecasts are per organization, so their canary weight is a share of organizations; this is
    the same rule as ``choose_route`` with the organization as the entity.
    """
    return {org for org in organization_ids if bucket(org, str(org)) < weight}
