"""Persisted alerts: one open row per incident (``dedup_key``); a repeat raises its count, not a new page.

Every alert says what broke (title, message, the numbers), what was already done (``action_taken``),
what to do next (``runbook``) and where to look (``links``: DAG run, MLflow version, GX report).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.db.schema import Alert, utcnow

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class AlertRef:
    id: int
    new: bool  # False when an open alert for the same incident was found and counted again
    occurrences: int


def raise_alert(
    engine: sa.Engine,
    *,
    kind: str,
    severity: str,
    title: str,
    message: str,
    dedup_key: str,
    model_name: str | None = None,
    model_version: str | None = None,
    organization_id: int | None = None,
    metrics: dict[str, Any] | None = None,
    action_taken: str | None = None,
    runbook: str | None = None,
    links: dict[str, Any] | None = None,
) -> AlertRef:
    """Open an alert, or count a repeat of the open one with the same ``dedup_key``."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    values = {
        "kind": kind,
        "severity": severity,
        "title": title[:300],
        "message": message,
        "model_name": model_name,
        "model_version": model_version,
        "organization_id": organization_id,
        "metrics": metrics or {},
        "action_taken": action_taken,
        "runbook": runbook,
        "links": links or {},
    }
    try:
        ref = _open_or_count(engine, dedup_key, values)
    except sa.exc.IntegrityError:
        # another process opened the same incident between our read and our insert: count it
        ref = _open_or_count(engine, dedup_key, values)
    log_method = log.error if severity == "critical" else log.warning if severity == "warning" else log.info
    log_method("alert %s [%s] %s: %s", ref.id, severity, title, message)
    return ref


def _open_or_count(engine: sa.Engine, dedup_key: str, values: dict[str, Any]) -> AlertRef:
    with engine.begin() as conn:
        repeat = _count_repeat(conn, dedup_key, values)
        if repeat is not None:
            return repeat
        now = utcnow()
        alert_id = conn.scalar(
            sa.insert(Alert)
            .values(
                dedup_key=dedup_key,
                status="open",
                occurrences=1,
                first_seen_at=now,
                last_seen_at=now,
                **values,
            )
            .returning(Alert.id)
        )
        assert alert_id is not None
        return AlertRef(alert_id, True, 1)


def _count_repeat(conn: sa.Connection, dedup_key: str, values: dict[str, Any]) -> AlertRef | None:
    row = conn.execute(
        sa.select(Alert.id, Alert.occurrences)
        .where(Alert.dedup_key == dedup_key, Alert.status != "resolved")
        .with_for_update()
    ).first()
    if row is None:
        return None
    occurrences = row.occurrences + 1
    conn.execute(
        sa.update(Alert)
        .where(Alert.id == row.id)
        .values(
            occurrences=occurrences,
            last_seen_at=utcnow(),
            message=values["message"],
            metrics=values["metrics"],
            links=values["links"],
        )
    )
    return AlertRef(row.id, False, occurrences)
