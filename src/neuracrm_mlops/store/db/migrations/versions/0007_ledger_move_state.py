"""Atomic rollout moves: a ledger row is written ``pending`` before its registry calls, then finished.

``promotion_ledger.state``: ``pending`` (the move's registry calls may be under way, or were cut
short by a crash), ``done`` (they were all made) or ``reverted`` (reconcile put the registry back as
it was before the move). Rows written before this migration are ``done``. ``registry_plan`` holds the
registry calls of the move with the value each one replaced, so that ``rollout_state.reconcile_pending``
can finish or undo a move a crash interrupted (NULL on older rows and on rows that moved nothing).

The ledger stays append-only: the triggers of migration 0001 are narrowed so that the one UPDATE
allowed is ``state`` going from ``pending`` to ``done`` or ``reverted`` with every other column
unchanged; any other UPDATE, and every DELETE, is still refused (on PostgreSQL and SQLite).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# every column of promotion_ledger but ``state`` (SQLite compares them one by one; ``IS`` is NULL-safe)
_FIXED_COLUMNS = (
    "id",
    "created_at",
    "actor",
    "model_name",
    "organization_id",
    "action",
    "alias",
    "from_version",
    "to_version",
    "weight",
    "reason",
    "metrics",
    "registry_plan",
)
_FINISHING = "OLD.state = 'pending' AND NEW.state IN ('done', 'reverted')"

GUARD_POSTGRESQL = [
    f"""CREATE OR REPLACE FUNCTION promotion_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'UPDATE' AND {_FINISHING}
            AND (to_jsonb(NEW) - 'state') = (to_jsonb(OLD) - 'state') THEN
           RETURN NEW;
         END IF;
         RAISE EXCEPTION 'promotion_ledger is append-only';
       END $$""",
]
GUARD_SQLITE = [
    "DROP TRIGGER IF EXISTS promotion_ledger_no_update",
    f"""CREATE TRIGGER promotion_ledger_no_update BEFORE UPDATE ON promotion_ledger
       WHEN NOT ({_FINISHING} AND {" AND ".join(f"NEW.{c} IS OLD.{c}" for c in _FIXED_COLUMNS)})
       BEGIN SELECT RAISE(ABORT, 'promotion_ledger is append-only'); END""",
]
# migration 0001's guards, put back by the downgrade
GUARD_POSTGRESQL_0001 = [
    """CREATE OR REPLACE FUNCTION promotion_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'promotion_ledger is append-only'; END $$""",
]
GUARD_SQLITE_0001 = [
    "DROP TRIGGER IF EXISTS promotion_ledger_no_update",
    "DROP TRIGGER IF EXISTS promotion_ledger_no_delete",
    """CREATE TRIGGER promotion_ledger_no_update BEFORE UPDATE ON promotion_ledger
       BEGIN SELECT RAISE(ABORT, 'promotion_ledger is append-only'); END""",
    """CREATE TRIGGER promotion_ledger_no_delete BEFORE DELETE ON promotion_ledger
       BEGIN SELECT RAISE(ABORT, 'promotion_ledger is append-only'); END""",
]


def upgrade() -> None:
    # plain ALTER TABLE ADD COLUMN (no batch copy of the table, which would drop SQLite's triggers)
    op.add_column(
        "promotion_ledger",
        sa.Column("state", sa.String(length=16), server_default="done", nullable=False),
    )
    op.add_column(
        "promotion_ledger",
        sa.Column("registry_plan", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
    )
    op.create_index(
        "ix_promotion_ledger_pending",
        "promotion_ledger",
        ["model_name"],
        unique=False,
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    guards = GUARD_POSTGRESQL if op.get_bind().dialect.name == "postgresql" else GUARD_SQLITE
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if not postgres:
        op.execute("DROP TRIGGER IF EXISTS promotion_ledger_no_update")
        op.execute("DROP TRIGGER IF EXISTS promotion_ledger_no_delete")
    op.drop_index("ix_promotion_ledger_pending", table_name="promotion_ledger")
    with op.batch_alter_table("promotion_ledger", schema=None) as batch_op:
        batch_op.drop_column("registry_plan")
        batch_op.drop_column("state")
    for statement in GUARD_POSTGRESQL_0001 if postgres else GUARD_SQLITE_0001:
        op.execute(statement)
