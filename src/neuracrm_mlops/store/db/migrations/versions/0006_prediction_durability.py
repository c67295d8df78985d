"""Prediction log durability: a unique identity per prediction row, a note when a row was changed to
be storable, and the dead-letter table for rows the database refuses.

``predictions.row_uid`` lets a journal replayed after a crash insert each row once (ON CONFLICT DO
NOTHING on the unique index); rows logged before this migration keep NULL (a unique index allows
any number of NULLs on both databases). ``prediction_dead_letters`` keeps each refused row with the
database's reason instead of a file on one host.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("row_uid", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("storage_note", sa.Text(), nullable=True))
        batch_op.create_index("uq_predictions_row_uid", ["row_uid"], unique=True)
    op.create_table(
        "prediction_dead_letters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("row_uid", sa.String(length=32), nullable=True),
        sa.Column("model_name", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("row", sa.Text(), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_dead_letters")),
    )
    with op.batch_alter_table("prediction_dead_letters", schema=None) as batch_op:
        batch_op.create_index("uq_prediction_dead_letters_row_uid", ["row_uid"], unique=True)
        batch_op.create_index("ix_prediction_dead_letters_created", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("prediction_dead_letters", schema=None) as batch_op:
        batch_op.drop_index("ix_prediction_dead_letters_created")
        batch_op.drop_index("uq_prediction_dead_letters_row_uid")
    op.drop_table("prediction_dead_letters")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("uq_predictions_row_uid")
        batch_op.drop_column("storage_note")
        batch_op.drop_column("row_uid")
