"""The CRM store and the platform tables (SQLAlchemy 2).

The same schema runs on SQLite (embedded default) and PostgreSQL (psycopg 3); Alembic migrations in
``db/migrations`` create it, and a test checks that the migrations and these models agree.

Conventions:
- timestamps are timezone-aware UTC (``UTCDateTime`` restores the zone on SQLite);
- CRM rows carry their natural key (organization + external id, or organization + month), an
  ``attributes`` JSON for columns the platform does not know, and a ``content_hash`` so that a
  re-import can tell "unchanged" from "updated";
- the promotion ledger is append-only: triggers refuse UPDATE and DELETE on both databases (the one
  UPDATE allowed finishes a pending row: ``state`` pending -> done or reverted, nothing else).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the platform stores UTC-aware timestamps")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# BIGINT primary keys on PostgreSQL; SQLite only auto-increments a column declared INTEGER.
BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    # e.g. {"ai_enabled": true}; read through neuracrm_mlops.store.orgs.feature_enabled
    feature_flags: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An organization's API key, stored as a SHA-256 hash (keys are 256-bit random tokens)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    key_prefix: Mapped[str] = mapped_column(sa.String(16))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    label: Mapped[str] = mapped_column(sa.String(200), default="default")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Lead(Base):
    """A lead with the six factor groups of the lead-scoring design."""

    __tablename__ = "leads"
    __table_args__ = (
        sa.UniqueConstraint("organization_id", "external_id"),
        sa.Index("ix_leads_org_created", "organization_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(sa.String(128))
    # 1. industry
    industry: Mapped[str | None] = mapped_column(sa.String(64))
    # 2. company size
    company_employees: Mapped[int | None] = mapped_column(sa.Integer)
    company_revenue: Mapped[float | None] = mapped_column(sa.Float)
    # 3. engagement
    email_opens: Mapped[int | None] = mapped_column(sa.Integer)
    website_visits: Mapped[int | None] = mapped_column(sa.Integer)
    pages_viewed: Mapped[int | None] = mapped_column(sa.Integer)
    time_on_site_seconds: Mapped[float | None] = mapped_column(sa.Float)
    days_since_last_activity: Mapped[int | None] = mapped_column(sa.Integer)
    # 4. decision maker
    job_title: Mapped[str | None] = mapped_column(sa.String(200))
    seniority: Mapped[str | None] = mapped_column(sa.String(32))
    # 5. urgency
    timeline: Mapped[str | None] = mapped_column(sa.String(32))
    budget_signal: Mapped[str | None] = mapped_column(sa.String(32))
    # 6. text insights
    description: Mapped[str | None] = mapped_column(sa.Text)
    # context and outcome
    source: Mapped[str | None] = mapped_column(sa.String(64))
    region: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    converted: Mapped[bool | None] = mapped_column(sa.Boolean)
    converted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MonthlySales(Base):
    __tablename__ = "monthly_sales"
    __table_args__ = (sa.UniqueConstraint("organization_id", "month"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"))
    month: Mapped[dt.date] = mapped_column(sa.Date)  # first day of the month
    revenue: Mapped[float] = mapped_column(sa.Float)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Interaction(Base):
    __tablename__ = "interactions"
    __table_args__ = (
        sa.UniqueConstraint("organization_id", "external_id"),
        sa.Index("ix_interactions_org_lead", "organization_id", "lead_external_id"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(sa.String(128))
    # the lead's external id; interactions may arrive before their lead is imported
    lead_external_id: Mapped[str | None] = mapped_column(sa.String(128))
    channel: Mapped[str | None] = mapped_column(sa.String(32))
    text: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    sentiment_label: Mapped[str | None] = mapped_column(sa.String(16))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Prediction(Base):
    """One served prediction, logged durably for monitoring."""

    __tablename__ = "predictions"
    __table_args__ = (
        sa.Index("ix_predictions_model_created", "model_name", "created_at"),
        sa.Index("ix_predictions_org_entity", "organization_id", "entity_id"),
        # a row replayed from the journal after a crash is inserted once (ON CONFLICT DO NOTHING)
        sa.Index("uq_predictions_row_uid", "row_uid", unique=True),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    model_name: Mapped[str] = mapped_column(sa.String(128))
    model_version: Mapped[str | None] = mapped_column(sa.String(32))
    route: Mapped[str] = mapped_column(sa.String(16))  # champion | challenger | fallback | shadow
    request_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    organization_id: Mapped[int | None] = mapped_column(sa.Integer)
    entity_id: Mapped[str | None] = mapped_column(sa.String(128))
    features: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    output: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    latency_ms: Mapped[float] = mapped_column(sa.Float)
    fallback: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    error: Mapped[str | None] = mapped_column(sa.Text)
    # the row's identity (a uuid4 hex given when the prediction was served); NULL on rows logged
    # before migration 0006
    row_uid: Mapped[str | None] = mapped_column(sa.String(32))
    # what was changed to make the row storable, e.g. "U+FFFD for NUL or unpaired surrogate
    # characters in: entity_id"; NULL when it is stored exactly as served
    storage_note: Mapped[str | None] = mapped_column(sa.Text)
    # the prediction service replica that answered (NEURACRM_REPLICA_NAME, default <hostname>:<port>);
    # NULL on rows logged before migration 0009 and on rows not logged by the service
    replica: Mapped[str | None] = mapped_column(sa.String(128))


class PredictionDeadLetter(Base):
    """A prediction row the database refused for its content, kept with the reason (never dropped).

    ``row`` is the row as ASCII JSON text (a text column accepts it whatever it holds); on-call fixes
    the cause and replays it with ``neuracrm_mlops.inference.prediction_log.replay_dead_letters``, which sets
    ``replayed_at`` on the rows that land in ``predictions``."""

    __tablename__ = "prediction_dead_letters"
    __table_args__ = (
        # a row refused again when its journal is replayed after a crash is kept once
        sa.Index("uq_prediction_dead_letters_row_uid", "row_uid", unique=True),
        sa.Index("ix_prediction_dead_letters_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)  # when it was refused
    row_uid: Mapped[str | None] = mapped_column(sa.String(32))
    model_name: Mapped[str | None] = mapped_column(sa.String(128))
    reason: Mapped[str] = mapped_column(sa.Text)  # the database's error, first line
    row: Mapped[str] = mapped_column(sa.Text)
    replayed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Outcome(Base):
    """What really happened for an entity a model predicted (conversion, label, actual revenue)."""

    __tablename__ = "outcomes"
    __table_args__ = (sa.UniqueConstraint("model_name", "organization_id", "entity_id"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    model_name: Mapped[str] = mapped_column(sa.String(128))
    organization_id: Mapped[int | None] = mapped_column(sa.Integer)
    entity_id: Mapped[str] = mapped_column(sa.String(128))
    label: Mapped[str | None] = mapped_column(sa.String(64))
    value: Mapped[float | None] = mapped_column(sa.Float)
    observed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(sa.String(32), default="crm")  # crm | simulated


class VoiceCallEvent(Base):
    """One Retell call webhook (``call_ended`` / ``call_analyzed``) the prediction service accepted
    (``POST /voice/events``, signature verified): the idempotency record, one row per (call, event), so
    that Retell's retries change nothing. Written in the same transaction as what the event wrote (the
    call's ``interactions`` row, the context prediction's outcome); ``status`` says what came of it
    (``recorded``, or ``no_context`` for a call without this platform's metadata, ``note`` says why)."""

    __tablename__ = "voice_call_events"
    __table_args__ = (
        sa.UniqueConstraint("call_id", "event"),
        sa.Index("ix_voice_call_events_org_context", "organization_id", "context_id"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    call_id: Mapped[str] = mapped_column(sa.String(128))
    event: Mapped[str] = mapped_column(sa.String(32))  # call_ended | call_analyzed
    # from the call's metadata (what POST /voice/context answered); NULL for calls without it
    organization_id: Mapped[int | None] = mapped_column(sa.Integer)
    context_id: Mapped[str | None] = mapped_column(sa.String(64))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload_sha256: Mapped[str] = mapped_column(sa.String(64))  # of the raw body as signed
    status: Mapped[str] = mapped_column(sa.String(16))  # recorded | no_context
    note: Mapped[str | None] = mapped_column(sa.Text)


class Alert(Base):
    """A persisted alert; one open row per incident (``dedup_key``), repeats raise ``occurrences``."""

    __tablename__ = "alerts"
    __table_args__ = (
        sa.Index(
            "uq_alerts_open_dedup_key",
            "dedup_key",
            unique=True,
            sqlite_where=sa.text("status != 'resolved'"),
            postgresql_where=sa.text("status != 'resolved'"),
        ),
        sa.Index("ix_alerts_status_severity", "status", "severity"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(sa.String(255))
    severity: Mapped[str] = mapped_column(sa.String(16))  # info | warning | critical
    kind: Mapped[str] = mapped_column(sa.String(64))  # e.g. validation_failed, accuracy_below_floor
    status: Mapped[str] = mapped_column(sa.String(16), default="open")  # open | acknowledged | resolved
    title: Mapped[str] = mapped_column(sa.String(300))
    message: Mapped[str] = mapped_column(sa.Text)
    model_name: Mapped[str | None] = mapped_column(sa.String(128))
    model_version: Mapped[str | None] = mapped_column(sa.String(32))
    organization_id: Mapped[int | None] = mapped_column(sa.Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    action_taken: Mapped[str | None] = mapped_column(sa.Text)
    runbook: Mapped[str | None] = mapped_column(sa.Text)
    links: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    occurrences: Mapped[int] = mapped_column(sa.Integer, default=1)
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    acked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    acked_by: Mapped[str | None] = mapped_column(sa.String(128))
    escalated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(sa.String(128))
    resolution_note: Mapped[str | None] = mapped_column(sa.Text)  # why it was resolved (alerts.resolve*)
    # webhook delivery (neuracrm_mlops.store.alerts.deliver): pending | delivered | failed | log_only
    delivery_status: Mapped[str] = mapped_column(sa.String(16), default="pending", server_default="pending")
    delivery_attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")  # all, ever
    last_delivery_error: Mapped[str | None] = mapped_column(sa.Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # last successful webhook post


class PromotionLedgerEntry(Base):
    """Append-only record of every alias or traffic-weight change (UPDATE/DELETE are refused, but for
    ``state`` going from ``pending`` to ``done`` or ``reverted``: migration 0007)."""

    __tablename__ = "promotion_ledger"
    __table_args__ = (
        sa.Index("ix_promotion_ledger_model_created", "model_name", "created_at"),
        sa.Index(  # what reconcile looks for (neuracrm_mlops.release.state)
            "ix_promotion_ledger_pending",
            "model_name",
            sqlite_where=sa.text("state = 'pending'"),
            postgresql_where=sa.text("state = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(200))  # "dag:<dag_id>/<run_id>" or "cli:<user>"
    model_name: Mapped[str] = mapped_column(sa.String(128))
    organization_id: Mapped[int | None] = mapped_column(sa.Integer)
    action: Mapped[str] = mapped_column(
        sa.String(32)
    )  # register | canary | promote | reject | rollback | abort | hold (neuracrm_mlops.store.ledger)
    alias: Mapped[str | None] = mapped_column(sa.String(32))
    from_version: Mapped[str | None] = mapped_column(sa.String(32))
    to_version: Mapped[str | None] = mapped_column(sa.String(32))
    weight: Mapped[float | None] = mapped_column(sa.Float)
    reason: Mapped[str] = mapped_column(sa.Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # pending (written before the move's registry calls) | done | reverted (undone by reconcile);
    # only ``done`` rows are alias history
    state: Mapped[str] = mapped_column(sa.String(16), default="done", server_default="done")
    # the move's registry calls, each with the value it replaced (rollout_state.RegistryCall);
    # NULL when the row moved nothing in the registry
    registry_plan: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)


class ImportBatch(Base):
    """One run of ``import``: what file, what came of it (also the volume baseline for validation)."""

    __tablename__ = "import_batches"
    __table_args__ = (sa.Index("ix_import_batches_org_dataset", "organization_id", "dataset"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    dataset: Mapped[str] = mapped_column(sa.String(32))
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"))
    source_file: Mapped[str] = mapped_column(sa.Text)
    file_sha256: Mapped[str] = mapped_column(sa.String(64))
    file_format: Mapped[str] = mapped_column(sa.String(16))
    rows_read: Mapped[int] = mapped_column(sa.Integer, default=0)
    imported: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated: Mapped[int] = mapped_column(sa.Integer, default=0)
    unchanged: Mapped[int] = mapped_column(sa.Integer, default=0)
    quarantined: Mapped[int] = mapped_column(sa.Integer, default=0)
    # kept rows (imported, updated or unchanged) with an optional field stored empty because it did
    # not parse (raw value in ``attributes["_field_errors"]``); a subset of the three counts above
    rows_with_field_errors: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class QuarantinedRow(Base):
    """A row that failed parsing: kept with its raw values and the reason, never dropped."""

    __tablename__ = "quarantine"
    __table_args__ = (sa.UniqueConstraint("dataset", "organization_id", "file_sha256", "row_number"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    import_batch_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("import_batches.id", ondelete="SET NULL")
    )
    dataset: Mapped[str] = mapped_column(sa.String(32))
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"))
    source_file: Mapped[str] = mapped_column(sa.Text)
    file_sha256: Mapped[str] = mapped_column(sa.String(64))
    row_number: Mapped[int] = mapped_column(sa.Integer)  # 1-based data row, header excluded
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType)
    reason: Mapped[str] = mapped_column(sa.Text)


class ValidationRun(Base):
    """One Great Expectations run over a dataset (optionally one organization's slice of it)."""

    __tablename__ = "validation_runs"
    __table_args__ = (
        sa.Index("ix_validation_runs_dataset_org_created", "dataset", "organization_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    dataset: Mapped[str] = mapped_column(sa.String(32))
    organization_id: Mapped[int | None] = mapped_column(sa.Integer)
    row_count: Mapped[int] = mapped_column(sa.Integer)
    success: Mapped[bool] = mapped_column(sa.Boolean)  # False when a critical expectation failed
    critical_failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    warning_failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed_expectations: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    report_path: Mapped[str | None] = mapped_column(sa.Text)  # the Data Docs HTML page
    snapshot_hash: Mapped[str] = mapped_column(sa.String(64))  # hash of the validated data
    run_id: Mapped[str | None] = mapped_column(sa.String(250))  # the DAG run, or "cli"


class CategoryProfileRow(Base):
    """The categorical values validation has accepted, per dataset and scope (learned, not configured).

    One row per dataset and organization, plus one per dataset for all organizations
    (``organization_id`` NULL). Rewritten by every validation run of that scope (and, for an
    all-organizations run, of each organization in it) whose critical expectations passed: the data
    training accepted. ``value_counts``: ``{column: {value: rows}}`` of that run's batch; values accepted
    earlier and absent now stay known with 0 rows (``neuracrm_mlops.quality.validation``, docs/validation.md).
    """

    __tablename__ = "category_profiles"
    __table_args__ = (
        sa.Index(
            "uq_category_profiles_dataset_org",
            "dataset",
            "organization_id",
            unique=True,
            sqlite_where=sa.text("organization_id IS NOT NULL"),
            postgresql_where=sa.text("organization_id IS NOT NULL"),
        ),
        sa.Index(
            "uq_category_profiles_dataset_all",
            "dataset",
            unique=True,
            sqlite_where=sa.text("organization_id IS NULL"),
            postgresql_where=sa.text("organization_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    dataset: Mapped[str] = mapped_column(sa.String(32))  # leads | sales | interactions
    organization_id: Mapped[int | None] = mapped_column(  # None: all organizations
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    row_count: Mapped[int] = mapped_column(sa.Integer)  # rows of the accepted batch (shares = count / this)
    value_counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    validation_run_id: Mapped[int | None] = mapped_column(
        sa.BigInteger
    )  # the accepted run (validation_runs.id)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)  # first learned
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)  # last accepted run


metadata = Base.metadata
CRM_TABLES = {"leads": Lead.__table__, "sales": MonthlySales.__table__, "interactions": Interaction.__table__}
