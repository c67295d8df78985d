"""Category profiles: the categorical values validation has accepted, per dataset and scope.

Validation compares categorical columns (industry, source, region, channel, ...) with this learned
profile instead of a fixed vocabulary. No rows are written here: the first validation run of each
scope after the upgrade learns its values.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "category_profiles",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("dataset", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=True),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("value_counts", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("validation_run_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_category_profiles_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_category_profiles")),
    )
    with op.batch_alter_table("category_profiles", schema=None) as batch_op:
        batch_op.create_index(
            "uq_category_profiles_dataset_org",
            ["dataset", "organization_id"],
            unique=True,
            sqlite_where=sa.text("organization_id IS NOT NULL"),
            postgresql_where=sa.text("organization_id IS NOT NULL"),
        )
        batch_op.create_index(
            "uq_category_profiles_dataset_all",
            ["dataset"],
            unique=True,
            sqlite_where=sa.text("organization_id IS NULL"),
            postgresql_where=sa.text("organization_id IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("category_profiles", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_category_profiles_dataset_all",
            sqlite_where=sa.text("organization_id IS NULL"),
            postgresql_where=sa.text("organization_id IS NULL"),
        )
        batch_op.drop_index(
            "uq_category_profiles_dataset_org",
            sqlite_where=sa.text("organization_id IS NOT NULL"),
            postgresql_where=sa.text("organization_id IS NOT NULL"),
        )
    op.drop_table("category_profiles")
