"""What is in the store: row counts per table and per organization (``neuracrm-mlops status``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.db.schema import (
    Alert,
    Interaction,
    Lead,
    MonthlySales,
    Organization,
    Outcome,
    Prediction,
    PromotionLedgerEntry,
    QuarantinedRow,
)

COUNTED_TABLES = (
    Organization,
    Lead,
    MonthlySales,
    Interaction,
    Prediction,
    Outcome,
    Alert,
    PromotionLedgerEntry,
    QuarantinedRow,
)


@dataclass(frozen=True)
class OrganizationCounts:
    id: int
    name: str
    ai_enabled: bool
    leads: int
    sales_months: int
    interactions: int
    quarantined: int


@dataclass(frozen=True)
class CRMStatus:
    table_counts: dict[str, int]
    organization_count: int
    organizations: list[OrganizationCounts]


def _counts_by_org(
    conn: sa.Connection, model: type[Lead | MonthlySales | Interaction | QuarantinedRow], org_ids: list[int]
) -> dict[int, int]:
    column = model.organization_id
    rows = conn.execute(sa.select(column, sa.func.count()).where(column.in_(org_ids)).group_by(column))
    return dict(rows.tuples().all())


def crm_status(engine: sa.Engine, *, max_organizations: int = 20) -> CRMStatus:
    with engine.connect() as conn:
        table_counts = {
            model.__tablename__: conn.scalar(sa.select(sa.func.count()).select_from(model)) or 0
            for model in COUNTED_TABLES
        }
        orgs = conn.execute(
            sa.select(Organization.id, Organization.name, Organization.feature_flags)
            .order_by(Organization.id)
            .limit(max_organizations)
        ).all()
        ids = [row.id for row in orgs]
        leads, sales, interactions, quarantined = (
            _counts_by_org(conn, model, ids) for model in (Lead, MonthlySales, Interaction, QuarantinedRow)
        )
    return CRMStatus(
        table_counts=table_counts,
        organization_count=table_counts["organizations"],
        organizations=[
            OrganizationCounts(
                id=row.id,
                name=row.name,
                ai_enabled=bool((row.feature_flags or {}).get("ai_enabled", True)),
                leads=leads.get(row.id, 0),
                sales_months=sales.get(row.id, 0),
                interactions=interactions.get(row.id, 0),
                quarantined=quarantined.get(row.id, 0),
            )
            for row in orgs
        ],
    )


# -- what users get: a model or a fallback, and why ---------------------------------------------

FALLBACK_OF = {
    "lead_scoring": "rule fallback (lead_scoring_rules)",
    "sentiment": "VADER",
    "sales_forecast": "seasonal naive",
}


@dataclass(frozen=True)
class ServedAnswer:
    """Who answers one family (for one organization, forecasts): a model version or the fallback."""

    family: str
    organization_id: int | None
    answered_by: str  # "model" | "fallback"
    version: str | None
    why: str  # e.g. "champion", "below floor", "rejected: ...", "not servable: ...", "no history"

    @property
    def short_why(self) -> str:
        """The reason without its details, for counting: champion, below floor, rejected, no history..."""
        return self.why.split(":", 1)[0]


def _why_no_champion(versions: list[object]) -> str:
    """Why a model without a champion answers with the fallback, from its newest version's tags."""
    if not versions:
        return "never trained"
    newest = max(versions, key=lambda v: int(getattr(v, "version", 0)))
    tags = dict(getattr(newest, "tags", {}) or {})
    number = getattr(newest, "version", "?")
    status = tags.get("status", "")
    reason = tags.get("reason", "")
    if tags.get("servable") == "false" or reason.startswith("not servable"):
        return f"not servable: v{number} {reason.removeprefix('not servable: ')}"[:160]
    if status == "rejected":
        return f"rejected: v{number} {reason}"[:160]
    if status in ("challenger", "checking"):
        return f"awaiting rollout: v{number} is {status}"
    return f"no champion: v{number} is {status or 'untagged'}"


def _served(family: str, org: int | None, champion: object | None, versions: list[object]) -> ServedAnswer:
    if champion is not None:
        tags = dict(getattr(champion, "tags", {}) or {})
        number = str(getattr(champion, "version", ""))
        why = "below floor: best available" if tags.get("below_floor") == "true" else "champion"
        return ServedAnswer(family, org, "model", number, why)
    return ServedAnswer(family, org, "fallback", None, _why_no_champion(versions))


def served_answers(
    engine: sa.Engine, *, client: Any = None, champions: Mapping[str, str | None] | None = None
) -> list[ServedAnswer]:
    """Per family, and per organization for forecasts, whether a model or a fallback answers and why.

    ``champions``: registered model name -> its champion version (None: registered without one), when
    the caller already read the aliases (the health page); else they are read here. The versions are
    read in bulk (one search per 100 models), so 1,000 organizations cost a few requests."""
    from neuracrm_mlops import registry

    client = client or registry.configure_mlflow()
    if champions is None:
        champions = {}
        for name in (registry.LEAD_MODEL, registry.SENTIMENT_MODEL):
            try:
                aliases = client.get_registered_model(name).aliases or {}
            except Exception:  # not registered (yet)
                continue
            champions[name] = aliases.get(registry.CHAMPION)
        for model in registry.models_with_prefix(client):
            champions[model.name] = (model.aliases or {}).get(registry.CHAMPION)
    versions = registry.versions_by_name(client, list(champions)) if champions else {}

    def champion_of(name: str) -> Any:
        number = champions.get(name)
        return next((v for v in versions.get(name, []) if str(v.version) == str(number)), None)

    answers = [
        _served(family, None, champion_of(name), versions.get(name, []))
        for family, name in (("lead_scoring", registry.LEAD_MODEL), ("sentiment", registry.SENTIMENT_MODEL))
    ]
    with engine.connect() as conn:
        orgs = conn.execute(
            sa.select(Organization.id, Organization.feature_flags).order_by(Organization.id)
        ).all()
        with_history = set(conn.scalars(sa.select(MonthlySales.organization_id).distinct()))
    for org in orgs:
        name = registry.forecast_model_name(org.id)
        if not bool((org.feature_flags or {}).get("ai_enabled", True)):
            answers.append(
                ServedAnswer("sales_forecast", org.id, "fallback", None, "AI off for this organization")
            )
        elif name in champions:
            answers.append(_served("sales_forecast", org.id, champion_of(name), versions.get(name, [])))
        else:
            why = "never trained" if org.id in with_history else "no history: no sales months imported"
            answers.append(ServedAnswer("sales_forecast", org.id, "fallback", None, why))
    return answers
