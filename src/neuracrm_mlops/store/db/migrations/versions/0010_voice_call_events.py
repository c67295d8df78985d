"""Retell call webhooks are recorded once: ``voice_call_events``.

``POST /voice/events`` (the prediction service) accepts Retell's ``call_ended`` and ``call_analyzed``
webhooks; Retell retries a webhook that was not answered in time, so each accepted (call, event) is
kept as one row, unique on ``(call_id, event)``, written in the same transaction as what the event
wrote (the call's interaction, the outcome of its context prediction). A replay finds the row and
changes nothing.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voice_call_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=True),
        sa.Column("context_id", sa.String(length=64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voice_call_events")),
        sa.UniqueConstraint("call_id", "event", name=op.f("uq_voice_call_events_call_id_event")),
    )
    with op.batch_alter_table("voice_call_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_voice_call_events_org_context", ["organization_id", "context_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("voice_call_events", schema=None) as batch_op:
        batch_op.drop_index("ix_voice_call_events_org_context")
    op.drop_table("voice_call_events")
