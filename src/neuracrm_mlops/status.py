"""What is in the store: row counts per table and per organization (``neuracrm-mlops status``)."""

from __future__ import annotations

from dataclasses import dataclass

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
