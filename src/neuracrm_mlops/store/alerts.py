"""Persisted alerts: one open row per incident (``dedup_key``); a repeat raises its count, not a new page.

Every alert says what broke (title, message, the numbers), what was already done (``action_taken``),
what to do next (``runbook``) and where to look (``links``: DAG run, MLflow version, GX report).

Delivery: a new alert is always logged and, when ``NEURACRM_ALERT_WEBHOOK_URL`` is set, posted to
that webhook as Slack-compatible JSON (``{"text": ..., "blocks": [...]}``), with a few attempts and a
short backoff. Every attempt is recorded on the alert row (``delivery_status``, ``delivery_attempts``,
``last_delivery_error``, ``delivered_at``); a webhook failure never raises to the caller. A repeat of
an open incident only raises its count (no second page), unless its earlier delivery failed.

Lifecycle: opened (``raise_alert``), deduplicated (a repeat of an open incident counts up),
escalated (a critical alert still ``open`` after ``NEURACRM_ALERT_ESCALATE_MINUTES`` is re-delivered
once, marked ESCALATED: ``escalate_overdue``, run on a schedule), acknowledged (``acknowledge``) and
resolved, always with a ``resolution_note`` saying why:

- by a person (``resolve``);
- automatically when the condition it reports has cleared on a later monitor pass
  (``resolve_cleared``: e.g. the next drift check of the version finds no drift);
- automatically when the version it is about no longer serves (``resolve_not_serving``: rolled back,
  replaced, its canary stopped): a *condition* of a version (``CONDITION_KINDS``: drift, bias, serving
  health, a check that could not run, live accuracy below the floor when nothing was done about it)
  stops mattering with the version. Alerts that report an *action taken* (a rollback, a failed
  canary stopped) stay open until someone acknowledges and resolves them: see ``is_condition``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.errors import NeuraCRMError, NotFoundError
from neuracrm_mlops.store.db.schema import Alert, utcnow
from neuracrm_mlops.store.ledger import json_safe

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "critical")
STATUSES = ("open", "acknowledged", "resolved")
# alerts about a condition of a model version (auto-resolved when it clears or the version stops
# serving); accuracy_below_floor only when the pass took no action (see is_condition)
CONDITION_KINDS = frozenset({"data_drift", "bias", "serving_health", "check_failed", "accuracy_below_floor"})
AUTO_RESOLVER = "monitor"
DELIVERY_STATUSES = ("pending", "delivered", "failed", "log_only")

_SEVERITY_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
_BY_MAX = 128  # acked_by / resolved_by are VARCHAR(128)
# Slack block limits: header text 150, section text 3000, field text 2000, at most 10 fields
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELD_MAX = 2000
_THRESHOLD_SUFFIXES = ("_threshold", "_floor", "_ceiling", "_limit")


class AlertStateError(NeuraCRMError):
    """The alert is in a state that does not allow the requested change (e.g. already resolved)."""


@dataclass(frozen=True)
class AlertRef:
    id: int
    new: bool  # False when an open alert for the same incident was found and counted again
    occurrences: int


@dataclass(frozen=True)
class AlertRow:
    """One stored alert, as read back from the ``alerts`` table."""

    id: int
    dedup_key: str
    severity: str
    kind: str
    status: str
    title: str
    message: str
    model_name: str | None
    model_version: str | None
    organization_id: int | None
    metrics: dict[str, Any]
    action_taken: str | None
    runbook: str | None
    links: dict[str, Any]
    occurrences: int
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    acked_at: dt.datetime | None
    acked_by: str | None
    escalated_at: dt.datetime | None
    resolved_at: dt.datetime | None
    resolved_by: str | None
    resolution_note: str | None
    delivery_status: str
    delivery_attempts: int
    last_delivery_error: str | None
    delivered_at: dt.datetime | None


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
    deliver: bool = True,
    page_repeat: bool = False,
) -> AlertRef:
    """Open an alert, or count a repeat of the open one with the same ``dedup_key``.

    A repeat takes this occurrence's title, message, numbers, ``action_taken``, ``runbook`` and
    links: the stored alert (and an escalation page) always says what the latest occurrence found
    and did, never an earlier occurrence's action as if it were current.

    With ``deliver`` (the default) a new alert is delivered at once (see ``deliver``); a repeat is not
    delivered again unless its earlier delivery failed, or ``page_repeat`` says this occurrence did
    something new (e.g. moved the champion). Delivery problems are logged, never raised.
    """
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
        "metrics": json_safe(metrics or {}),
        "action_taken": action_taken,
        "runbook": runbook,
        "links": json_safe(links or {}),
    }
    try:
        ref, undelivered = _open_or_count(engine, dedup_key, values)
    except sa.exc.IntegrityError:
        # another process opened the same incident between our read and our insert: count it
        ref, undelivered = _open_or_count(engine, dedup_key, values)
    log_method = log.error if severity == "critical" else log.warning if severity == "warning" else log.info
    log_method("alert %s [%s] %s: %s", ref.id, severity, title, message)
    if deliver and (ref.new or undelivered or page_repeat):
        _deliver_quietly(engine, ref.id)
    return ref


def _open_or_count(engine: sa.Engine, dedup_key: str, values: dict[str, Any]) -> tuple[AlertRef, bool]:
    """The alert, and whether it is a repeat whose earlier delivery failed (so nobody was paged)."""
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
                delivery_status="pending",
                delivery_attempts=0,
                **values,
            )
            .returning(Alert.id)
        )
        assert alert_id is not None
        return AlertRef(alert_id, True, 1), False


def _count_repeat(
    conn: sa.Connection, dedup_key: str, values: dict[str, Any]
) -> tuple[AlertRef, bool] | None:
    row = conn.execute(
        sa.select(Alert.id, Alert.occurrences, Alert.delivery_status)
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
            title=values["title"],
            message=values["message"],
            metrics=values["metrics"],
            action_taken=values["action_taken"],
            runbook=values["runbook"],
            links=values["links"],
        )
    )
    return AlertRef(row.id, False, occurrences), row.delivery_status == "failed"


# --- reading -------------------------------------------------------------------------------------


def _row(row: sa.Row[Any]) -> AlertRow:
    return AlertRow(
        id=row.id,
        dedup_key=row.dedup_key,
        severity=row.severity,
        kind=row.kind,
        status=row.status,
        title=row.title,
        message=row.message,
        model_name=row.model_name,
        model_version=row.model_version,
        organization_id=row.organization_id,
        metrics=dict(row.metrics or {}),
        action_taken=row.action_taken,
        runbook=row.runbook,
        links=dict(row.links or {}),
        occurrences=row.occurrences,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        acked_at=row.acked_at,
        acked_by=row.acked_by,
        escalated_at=row.escalated_at,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution_note=row.resolution_note,
        delivery_status=row.delivery_status,
        delivery_attempts=row.delivery_attempts,
        last_delivery_error=row.last_delivery_error,
        delivered_at=row.delivered_at,
    )


def _select_alert(conn: sa.Connection, alert_id: int, *, for_update: bool = False) -> AlertRow:
    query = sa.select(Alert.__table__).where(Alert.id == alert_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise NotFoundError(f"no alert with id {alert_id}")
    return _row(row)


def get_alert(engine: sa.Engine, alert_id: int) -> AlertRow:
    """The alert ``alert_id``; NotFoundError when there is none."""
    with engine.connect() as conn:
        return _select_alert(conn, alert_id)


def list_alerts(engine: sa.Engine, *, open_only: bool = False, limit: int = 50) -> list[AlertRow]:
    """The last ``limit`` alerts, newest first; ``open_only`` keeps those not resolved yet
    (``open`` and ``acknowledged``)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    query = sa.select(Alert.__table__).order_by(Alert.id.desc()).limit(limit)
    if open_only:
        query = query.where(Alert.status != "resolved")
    with engine.connect() as conn:
        return [_row(row) for row in conn.execute(query)]


# --- acknowledging and resolving -----------------------------------------------------------------


def _who(by: str) -> str:
    if not by or not by.strip():
        raise ValueError("say who is acting on the alert (by=...)")
    return by.strip()[:_BY_MAX]


def _when(at: dt.datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "an unknown time"


def acknowledge(engine: sa.Engine, alert_id: int, *, by: str) -> AlertRow:
    """Mark an open alert acknowledged by ``by`` (it stops escalating); returns the stored alert.

    Acknowledging an acknowledged alert changes nothing. NotFoundError for an unknown id,
    AlertStateError for a resolved alert.
    """
    who = _who(by)
    with engine.begin() as conn:
        alert = _select_alert(conn, alert_id, for_update=True)
        if alert.status == "resolved":
            raise AlertStateError(
                f"alert {alert_id} is already resolved (by {alert.resolved_by or 'unknown'} at "
                f"{_when(alert.resolved_at)}); nothing to acknowledge"
            )
        if alert.status == "open":
            conn.execute(
                sa.update(Alert)
                .where(Alert.id == alert_id)
                .values(status="acknowledged", acked_at=utcnow(), acked_by=who)
            )
        alert = _select_alert(conn, alert_id)
    log.info("alert %s acknowledged by %s", alert_id, alert.acked_by)
    return alert


def resolve(engine: sa.Engine, alert_id: int, *, by: str, note: str | None = None) -> AlertRow:
    """Close an alert (``resolved`` by ``by``, with ``note`` saying why); the next occurrence of the
    incident opens a new alert.

    NotFoundError for an unknown id, AlertStateError when it is already resolved.
    """
    who = _who(by)
    with engine.begin() as conn:
        alert = _select_alert(conn, alert_id, for_update=True)
        if alert.status == "resolved":
            raise AlertStateError(
                f"alert {alert_id} is already resolved (by {alert.resolved_by or 'unknown'} at "
                f"{_when(alert.resolved_at)})"
            )
        conn.execute(
            sa.update(Alert)
            .where(Alert.id == alert_id)
            .values(
                status="resolved",
                resolved_at=utcnow(),
                resolved_by=who,
                resolution_note=(note or f"resolved by {who}").strip(),
            )
        )
        alert = _select_alert(conn, alert_id)
    log.info("alert %s resolved by %s: %s", alert_id, who, alert.resolution_note)
    return alert


def is_condition(kind: str, metrics: dict[str, Any]) -> bool:
    """Whether an alert reports a condition of its version (resolved when the condition clears or the
    version stops serving) rather than an action taken (open until acknowledged and resolved)."""
    if kind == "accuracy_below_floor":
        return not metrics.get("rolled_back_to")
    return kind in CONDITION_KINDS


def _auto_resolve(conn: sa.Connection, alert_id: int, *, by: str, note: str) -> bool:
    result = conn.execute(
        sa.update(Alert)
        .where(Alert.id == alert_id, Alert.status != "resolved")
        .values(status="resolved", resolved_at=utcnow(), resolved_by=_who(by), resolution_note=note)
    )
    return bool(result.rowcount)


def resolve_cleared(engine: sa.Engine, dedup_key: str, *, note: str, by: str = AUTO_RESOLVER) -> int | None:
    """Resolve the open (or acknowledged) condition alert of ``dedup_key``: a later check found the
    condition cleared, ``note`` says what it found. Returns the resolved alert's id (None: none open,
    or it reports an action taken, which stays open until resolved by a person)."""
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(Alert.id, Alert.kind, Alert.metrics)
            .where(Alert.dedup_key == dedup_key, Alert.status != "resolved")
            .with_for_update()
        ).first()
        if row is None or not is_condition(row.kind, dict(row.metrics or {})):
            return None
        resolved = _auto_resolve(conn, row.id, by=by, note=note)
    if resolved:
        log.info("alert %s resolved automatically: %s", row.id, note)
    return row.id if resolved else None


def resolve_not_serving(
    engine: sa.Engine,
    model_name: str,
    serving: set[str],
    *,
    note_for: Callable[[str], str],
    by: str = AUTO_RESOLVER,
) -> list[int]:
    """Resolve the open condition alerts of ``model_name`` about versions not in ``serving`` (the
    champion and the challenger now), each with ``note_for(version)``; alerts reporting an action
    taken stay open. Returns the resolved ids."""
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(Alert.id, Alert.kind, Alert.metrics, Alert.model_version)
            .where(
                Alert.model_name == model_name,
                Alert.model_version.is_not(None),
                Alert.status != "resolved",
            )
            .order_by(Alert.id)
            .with_for_update()
        ).all()
        stale = [
            row
            for row in rows
            if row.model_version not in serving and is_condition(row.kind, dict(row.metrics or {}))
        ]
        notes = {version: note_for(version) for version in {row.model_version for row in stale}}
        resolved = [
            row.id for row in stale if _auto_resolve(conn, row.id, by=by, note=notes[row.model_version])
        ]
    for alert_id in resolved:
        log.info("alert %s resolved automatically: its version no longer serves", alert_id)
    return resolved


# --- escalation ----------------------------------------------------------------------------------


def escalate_overdue(engine: sa.Engine, *, now: dt.datetime | None = None, deliver: bool = True) -> list[int]:
    """Escalate critical alerts still ``open`` (not acknowledged) ``NEURACRM_ALERT_ESCALATE_MINUTES``
    after they were first seen: set ``escalated_at`` and re-deliver them marked ESCALATED. Each alert
    escalates once (concurrent runs claim it with a conditional update). Returns the escalated ids."""
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: pass a UTC-aware time")
    cutoff = now - dt.timedelta(minutes=get_settings().alert_escalate_after_minutes)
    claimed: list[int] = []
    with engine.begin() as conn:
        candidates = conn.scalars(
            sa.select(Alert.id)
            .where(
                Alert.severity == "critical",
                Alert.status == "open",
                Alert.escalated_at.is_(None),
                Alert.first_seen_at <= cutoff,
            )
            .order_by(Alert.id)
        ).all()
        for alert_id in candidates:
            result = conn.execute(
                sa.update(Alert)
                .where(Alert.id == alert_id, Alert.status == "open", Alert.escalated_at.is_(None))
                .values(escalated_at=now)
            )
            if result.rowcount == 1:
                claimed.append(alert_id)
    for alert_id in claimed:
        log.error("alert %s escalated: critical and unacknowledged since before %s", alert_id, cutoff)
        if deliver:
            _deliver_quietly(engine, alert_id, escalated=True)
    return claimed


# --- delivery ------------------------------------------------------------------------------------


def _deliver_quietly(engine: sa.Engine, alert_id: int, *, escalated: bool = False) -> None:
    try:
        deliver(alert_id, engine=engine, escalated=escalated)
    except Exception:
        log.exception("alert %s could not be delivered (the alert itself is stored)", alert_id)


def deliver(alert_id: int, *, engine: sa.Engine | None = None, escalated: bool = False) -> str:
    """Log the alert and post it to the webhook (``NEURACRM_ALERT_WEBHOOK_URL``); returns the
    delivery status: ``delivered``, ``failed`` (every attempt failed) or ``log_only`` (no webhook).

    Up to ``NEURACRM_ALERT_WEBHOOK_RETRIES`` attempts (the first included) with a backoff doubling
    from ``NEURACRM_ALERT_WEBHOOK_BACKOFF_SECONDS``; network errors, 429 and 5xx are retried, other
    4xx are not (the request itself is wrong). Each attempt is recorded on the alert row as it
    happens. Webhook failures never raise; NotFoundError for an unknown id.
    """
    if engine is None:
        from neuracrm_mlops.store.db.engine import get_engine

        engine = get_engine()
    alert = get_alert(engine, alert_id)
    settings = get_settings()
    text = render_text(alert, escalated=escalated)
    log.log(_LOG_LEVEL.get(alert.severity, logging.WARNING), "alert %s delivery:\n%s", alert_id, text)
    url = settings.alert_webhook_url
    if not url:
        _record_outcome(engine, alert_id, status="log_only")
        return "log_only"

    import httpx

    payload = build_payload(alert, escalated=escalated)
    target = _redact_webhook(url)
    attempts = settings.alert_webhook_retries
    with httpx.Client(timeout=settings.alert_webhook_timeout_seconds) as client:
        for attempt in range(1, attempts + 1):
            retryable = True
            try:
                response = client.post(url, json=payload)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}".replace(url, target)
            else:
                if response.is_success:
                    _record_attempt(engine, alert_id, error=None)
                    _record_outcome(engine, alert_id, status="delivered")
                    log.info("alert %s delivered to %s (attempt %d/%d)", alert_id, target, attempt, attempts)
                    return "delivered"
                error = f"HTTP {response.status_code}: {response.text[:200].strip()}"
                retryable = response.status_code == 429 or response.status_code >= 500
            error = f"attempt {attempt}/{attempts} to {target}: {error}"[:2000]
            _record_attempt(engine, alert_id, error=error)
            log.warning("alert %s webhook delivery failed: %s", alert_id, error)
            if not retryable:
                break
            if attempt < attempts:
                time.sleep(min(settings.alert_webhook_backoff_seconds * 2 ** (attempt - 1), 30.0))
    _record_outcome(engine, alert_id, status="failed")
    log.error(
        "alert %s was NOT delivered to the webhook %s; it is in the log and the alerts table",
        alert_id,
        target,
    )
    return "failed"


def _record_attempt(engine: sa.Engine, alert_id: int, *, error: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(Alert)
            .where(Alert.id == alert_id)
            .values(delivery_attempts=Alert.delivery_attempts + 1, last_delivery_error=error)
        )


def _record_outcome(engine: sa.Engine, alert_id: int, *, status: str) -> None:
    values: dict[str, Any] = {"delivery_status": status}
    if status == "delivered":
        values.update(delivered_at=utcnow(), last_delivery_error=None)
    with engine.begin() as conn:
        conn.execute(sa.update(Alert).where(Alert.id == alert_id).values(**values))


def _redact_webhook(url: str) -> str:
    """The webhook without its path (Slack webhook paths are secrets): ``https://hooks.slack.com/…``."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/…" if rest else url


# --- rendering -----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1_000:
            return f"{value:,.2f}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if value else "0"
    if isinstance(value, str):
        return value
    text = json.dumps(value, default=str, separators=(", ", ": "))
    return text if len(text) <= 300 else text[:299] + "…"


def number_lines(metrics: dict[str, Any]) -> list[str]:
    """The alert's numbers, one per line; a metric with its threshold beside it (``accuracy`` and
    ``accuracy_floor`` or ``accuracy_threshold``) reads ``accuracy: 0.71 (floor 0.8)``."""
    limits: dict[str, str] = {}
    for key in metrics:
        for suffix in _THRESHOLD_SUFFIXES:
            if key + suffix in metrics:
                limits[key] = key + suffix
                break
    paired = set(limits.values())
    lines = []
    for key, value in metrics.items():
        if key in paired:
            continue
        line = f"{key}: {_fmt(value)}"
        if key in limits:
            limit_key = limits[key]
            line += f" ({limit_key[len(key) + 1 :]} {_fmt(metrics[limit_key])})"
        lines.append(line)
    return lines


def _model_text(alert: AlertRow) -> str:
    if not alert.model_name:
        return "n/a"
    return alert.model_name + (f" v{alert.model_version}" if alert.model_version else "")


def _headline(alert: AlertRow, *, escalated: bool) -> str:
    prefix = "ESCALATED: " if escalated else ""
    return f"{prefix}[{alert.severity.upper()}] {alert.title}"


def render_text(alert: AlertRow, *, escalated: bool = False) -> str:
    """The alert as plain text (the log line, and the webhook's ``text`` fallback)."""
    lines = [_headline(alert, escalated=escalated)]
    if escalated:
        lines.append(
            f"Unacknowledged for more than {get_settings().alert_escalate_after_minutes:g} minutes "
            f"(first seen {_when(alert.first_seen_at)})."
        )
    lines.append(
        f"Alert #{alert.id} ({alert.kind}), model {_model_text(alert)}, organization "
        f"{alert.organization_id if alert.organization_id is not None else 'all'}, "
        f"seen {alert.occurrences} time(s)"
    )
    lines.append(alert.message)
    if alert.metrics:
        lines.append("Numbers:")
        lines.extend(f"  - {line}" for line in number_lines(alert.metrics))
    lines.append(f"Action already taken: {alert.action_taken or 'none'}")
    lines.append(f"Runbook: {alert.runbook or 'none given'}")
    if alert.status == "resolved":
        lines.append(
            f"Resolved by {alert.resolved_by or 'unknown'} at {_when(alert.resolved_at)}: "
            f"{alert.resolution_note or 'no note'}"
        )
    if alert.links:
        lines.append("Links:")
        lines.extend(f"  - {name}: {_fmt(target)}" for name, target in alert.links.items())
    return "\n".join(lines)


def _esc(text: str) -> str:
    """Escape the three characters Slack's mrkdwn reserves."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _link(name: str, target: Any) -> str:
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        return f"• <{target}|{_esc(name)}>"
    return f"• {_esc(name)}: `{_esc(_fmt(target))}`"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, _SECTION_MAX)}}


def build_payload(alert: AlertRow, *, escalated: bool = False) -> dict[str, Any]:
    """The Slack-compatible webhook body: ``text`` (the whole alert as text, for notifications and
    clients without blocks) and ``blocks`` (header, facts, message, numbers, action, runbook, links)."""
    emoji = _SEVERITY_EMOJI.get(alert.severity, "")
    header = f"{emoji} {_headline(alert, escalated=escalated)}".strip()
    fields = [
        ("Severity", alert.severity.upper() + (" (ESCALATED)" if escalated else "")),
        ("Model", _model_text(alert)),
        ("Organization", str(alert.organization_id) if alert.organization_id is not None else "all"),
        ("Occurrences", f"{alert.occurrences} (first seen {_when(alert.first_seen_at)})"),
        ("Kind", alert.kind),
        ("Status", alert.status),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(header, _HEADER_MAX)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _cut(f"*{name}*\n{_esc(value)}", _FIELD_MAX)}
                for name, value in fields
            ],
        },
        _section(_esc(alert.message) or "(no message)"),
    ]
    if alert.metrics:
        blocks.append(
            _section("*Numbers*\n" + "\n".join(f"• {_esc(n)}" for n in number_lines(alert.metrics)))
        )
    blocks.append(_section(f"*Action already taken*\n{_esc(alert.action_taken or 'none')}"))
    blocks.append(_section(f"*Runbook*\n{_esc(alert.runbook or 'none given')}"))
    if alert.links:
        blocks.append(_section("*Links*\n" + "\n".join(_link(n, t) for n, t in alert.links.items())))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"neuracrm-mlops alert #{alert.id} · dedup key `{_esc(alert.dedup_key)}`",
                }
            ],
        }
    )
    return {"text": _esc(render_text(alert, escalated=escalated)), "blocks": blocks}
