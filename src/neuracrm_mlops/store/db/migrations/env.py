"""Alembic environment: runs on the connection handed over by neuracrm_mlops.store.db.migrate."""

from __future__ import annotations

from alembic import context

from neuracrm_mlops.store.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via `alembic` CLI without our wrapper
    raise RuntimeError("run migrations with `neuracrm-mlops db upgrade`, which provides the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
