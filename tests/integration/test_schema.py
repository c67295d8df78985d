"""The schema on SQLite and on the real PostgreSQL: migrations, guards and types."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from neuracrm_mlops.errors import DatabaseUnavailableError, SchemaNotReadyError
from neuracrm_mlops.store.db.engine import check_connection, create_engine
from neuracrm_mlops.store.db.migrate import (
    downgrade,
    head_revision,
    require_current_schema,
    upgrade,
)
from neuracrm_mlops.store.db.schema import Alert, Lead, PromotionLedgerEntry, metadata
from neuracrm_mlops.store.orgs import create_organization


def test_migrations_build_exactly_the_schema_the_models_describe(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_upgrade_is_idempotent_and_reports_head(engine: sa.Engine) -> None:
    before, after = upgrade(engine)
    assert before == after == head_revision()
    require_current_schema(engine)


def test_commands_refuse_a_database_without_schema(db_url: str) -> None:
    engine = create_engine(db_url)
    with pytest.raises(SchemaNotReadyError, match="db upgrade"):
        require_current_schema(engine)


def test_downgrade_to_base_removes_every_table(engine: sa.Engine) -> None:
    assert downgrade(engine, "base") is None
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}


def test_promotion_ledger_is_append_only(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(PromotionLedgerEntry).values(
                actor="cli:test",
                model_name="lead_scoring",
                action="promote",
                to_version="2",
                reason="canary passed",
                metrics={"accuracy": 0.91},
            )
        )
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.update(PromotionLedgerEntry).values(reason="rewritten"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.delete(PromotionLedgerEntry))
    with engine.connect() as conn:
        assert conn.scalar(sa.select(PromotionLedgerEntry.reason)) == "canary passed"


def test_only_one_open_alert_per_incident(engine: sa.Engine) -> None:
    alert = {
        "dedup_key": "accuracy:lead_scoring",
        "severity": "critical",
        "kind": "accuracy_below_floor",
        "title": "accuracy 0.71 < 0.80",
        "message": "rolled back",
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(Alert).values(**alert, status="resolved"))
        conn.execute(sa.insert(Alert).values(**alert, status="open"))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.insert(Alert).values(**alert, status="acknowledged"))


def test_timestamps_round_trip_as_aware_utc(engine: sa.Engine) -> None:
    created = dt.datetime(2026, 3, 14, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with engine.begin() as conn:
        org, _ = create_organization(conn, "Acme")
        conn.execute(
            sa.insert(Lead).values(
                organization_id=org.id,
                external_id="L-1",
                created_at=created,
                content_hash="x",
                attributes={"a": 1},
            )
        )
    with engine.connect() as conn:
        stored = conn.scalar(sa.select(Lead.created_at))
    assert stored == created
    assert stored.utcoffset() == dt.timedelta(0)


def test_naive_timestamps_are_refused(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), engine.begin() as conn:
        org, _ = create_organization(conn, "Acme")
        conn.execute(
            sa.insert(Lead).values(
                organization_id=org.id,
                external_id="L-1",
                created_at=dt.datetime(2026, 1, 1),
                content_hash="x",
            )
        )


def test_unreachable_postgresql_gives_a_one_line_reason() -> None:
    engine = create_engine("postgresql://nobody:secret@127.0.0.1:1/nothing")
    with pytest.raises(DatabaseUnavailableError) as caught:
        check_connection(engine)
    message = str(caught.value)
    assert "cannot reach the database at postgresql+psycopg://nobody:***@127.0.0.1:1/nothing" in message
    assert "secret" not in message
    assert "\n" not in message
