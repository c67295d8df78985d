"""Validation runs: one row per Great Expectations run, the baseline for the volume check.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "validation_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dataset", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=True),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("critical_failed", sa.Integer(), nullable=False),
        sa.Column("warning_failed", sa.Integer(), nullable=False),
        sa.Column(
            "failed_expectations", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("report_path", sa.Text(), nullable=True),
        sa.Column("snapshot_hash", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_runs")),
    )
    with op.batch_alter_table("validation_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_validation_runs_dataset_org_created",
            ["dataset", "organization_id", "created_at"],
            unique=False,
        )


def downgrade() -> None:

    with op.batch_alter_table("validation_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_validation_runs_dataset_org_created")

    op.drop_table("validation_runs")
