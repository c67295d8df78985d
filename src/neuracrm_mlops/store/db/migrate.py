"""Create or migrate the schema (``neuracrm-mlops db upgrade``) with Alembic."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from neuracrm_mlops.errors import SchemaNotReadyError
from neuracrm_mlops.store.db.engine import check_connection, get_engine, redact_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine | None = None, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to ``revision``; returns (revision before, revision after)."""
    engine = engine or get_engine()
    check_connection(engine)
    before = current_revision(engine)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return before, current_revision(engine) or ""


def require_current_schema(engine: sa.Engine) -> None:
    """Fail with a clear message when the schema is missing or older than the code."""
    check_connection(engine)
    current = current_revision(engine)
    if current != head_revision():
        state = "has no schema yet" if current is None else f"is at schema revision {current}"
        raise SchemaNotReadyError(
            f"the database {redact_url(engine.url.render_as_string(False))} {state}; "
            "run `neuracrm-mlops db upgrade` first"
        )


def downgrade(engine: sa.Engine, revision: str) -> str | None:
    """Migrate down to ``revision`` (``base`` drops everything); returns the revision after."""
    check_connection(engine)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
    return current_revision(engine)
