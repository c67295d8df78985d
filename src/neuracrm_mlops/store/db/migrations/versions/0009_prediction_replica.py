"""Prediction rows name the replica that answered: ``predictions.replica``.

With several prediction service replicas behind one address, every replica writes to the one
``predictions`` table; ``replica`` is the answering replica's name (``NEURACRM_REPLICA_NAME``, default
``<hostname>:<port>``). Rows logged before this migration, and rows written by other code than the
service, keep NULL.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replica", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("replica")
