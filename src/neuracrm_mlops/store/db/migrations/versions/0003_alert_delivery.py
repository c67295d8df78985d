"""Alert delivery: webhook delivery status, attempts, last error and time; who resolved an alert.

Alerts that exist before this migration were only ever logged: they are marked ``log_only``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("delivery_status", sa.String(length=16), server_default="pending", nullable=False)
        )
        batch_op.add_column(sa.Column("delivery_attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_delivery_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE alerts SET delivery_status = 'log_only'")


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_column("delivered_at")
        batch_op.drop_column("last_delivery_error")
        batch_op.drop_column("delivery_attempts")
        batch_op.drop_column("delivery_status")
        batch_op.drop_column("resolved_by")
