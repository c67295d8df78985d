"""What is in the store: row counts per table and per organization (``neuracrm-mlops status``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.families import FAMILIES, families_with
from neuracrm_mlops.store.db.schema import (
    Alert,
    Interaction,
    Lead,
    MonthlySales,
    Organization,
    Outcome,
    Prediction,
    PromotionLedgerEntry,
    QuarantinedRow,
)

COUNTED_TABLES = (
    Organization,
    Lead,
    MonthlySales,
    Interaction,
    Prediction,
    Outcome,
    Alert,
    PromotionLedgerEntry,
    QuarantinedRow,
)


@dataclass(frozen=True)
class OrganizationCounts:
    id: int
    name: str
    ai_enabled: bool
    leads: int
    sales_months: int
    interactions: int
    quarantined: int


@dataclass(frozen=True)
class CRMStatus:
    table_counts: dict[str, int]
    organization_count: int
    organizations: list[OrganizationCounts]


def _counts_by_org(
    conn: sa.Connection, model: type[Lead | MonthlySales | Interaction | QuarantinedRow], org_ids: list[int]
) -> dict[int, int]:
    column = model.organization_id
    rows = conn.execute(sa.select(column, sa.func.count()).where(column.in_(org_ids)).group_by(column))
    return dict(rows.tuples().all())


def crm_status(engine: sa.Engine, *, max_organizations: int = 20) -> CRMStatus:
    with engine.connect() as conn:
        table_counts = {
            model.__tablename__: conn.scalar(sa.select(sa.func.count()).select_from(model)) or 0
            for model in COUNTED_TABLES
        }
        orgs = conn.execute(
            sa.select(Organization.id, Organization.name, Organization.feature_flags)
            .order_by(Organization.id)
            .limit(max_organizations)
        ).all()
        ids = [row.id for row in orgs]
        leads, sales, interactions, quarantined = (
            _counts_by_org(conn, model, ids) for model in (Lead, MonthlySales, Interaction, QuarantinedRow)
        )
    return CRMStatus(
        table_counts=table_counts,
        organization_count=table_counts["organizations"],
        organizations=[
            OrganizationCounts(
                id=row.id,
                name=row.name,
                ai_enabled=bool((row.feature_flags or {}).get("ai_enabled", True)),
                leads=leads.get(row.id, 0),
                sales_months=sales.get(row.id, 0),
                interactions=interactions.get(row.id, 0),
                quarantined=quarantined.get(row.id, 0),
            )
            for row in orgs
        ],
    )


# -- what users get: a model or a fallback, and why ---------------------------------------------

FALLBACK_OF = {name: family.fallback for name, family in FAMILIES.items()}  # who answers without a model


@dataclass(frozen=True)
class ServedAnswer:
    """Who answers one family (for one organization, forecasts): a model version or the fallback."""

    family: str
    organization_id: int | None
    answered_by: str  # "model" | "fallback"
    version: str | None
    why: str  # e.g. "champion", "below floor", "rejected: ...", "not servable: ...", "no history"

    @property
    def short_why(self) -> str:
        """The reason without its details, for counting: champion, below floor, rejected, no history..."""
        return self.why.split(":", 1)[0]


def _why_no_champion(versions: list[object]) -> str:
    """Why a model without a champion answers with the fallback, from its newest version's tags."""
    if not versions:
        return "never trained"
    newest = max(versions, key=lambda v: int(getattr(v, "version", 0)))
    tags = dict(getattr(newest, "tags", {}) or {})
    number = getattr(newest, "version", "?")
    status = tags.get("status", "")
    reason = tags.get("reason", "")
    if tags.get("servable") == "false" or reason.startswith("not servable"):
        return f"not servable: v{number} {reason.removeprefix('not servable: ')}"[:160]
    if status == "rejected":
        return f"rejected: v{number} {reason}"[:160]
    if status in ("challenger", "checking"):
        return f"awaiting rollout: v{number} is {status}"
    return f"no champion: v{number} is {status or 'untagged'}"


def _served(family: str, org: int | None, champion: object | None, versions: list[object]) -> ServedAnswer:
    if champion is not None:
        tags = dict(getattr(champion, "tags", {}) or {})
        number = str(getattr(champion, "version", ""))
        why = "below floor: best available" if tags.get("below_floor") == "true" else "champion"
        return ServedAnswer(family, org, "model", number, why)
    return ServedAnswer(family, org, "fallback", None, _why_no_champion(versions))


def served_answers(
    engine: sa.Engine, *, client: Any = None, champions: Mapping[str, str | None] | None = None
) -> list[ServedAnswer]:
    """Per family, and per organization for forecasts, whether a model or a fallback answers and why.

    ``champions``: registered model name -> its champion version (None: registered without one), when
    the caller already read the aliases (the health page); else they are read here. The versions are
    read in bulk (one search per 100 models), so 1,000 organizations cost a few requests."""
    from neuracrm_mlops.store import registry

    client = client or registry.configure_mlflow()
    if champions is None:
        champions = {}
        for name in (registry.LEAD_MODEL, registry.SENTIMENT_MODEL):
            try:
                aliases = client.get_registered_model(name).aliases or {}
            except Exception:  # not registered (yet)
                continue
            champions[name] = aliases.get(registry.CHAMPION)
        for model in registry.models_with_prefix(client):
            champions[model.name] = (model.aliases or {}).get(registry.CHAMPION)
    versions = registry.versions_by_name(client, list(champions)) if champions else {}

    def champion_of(name: str) -> Any:
        number = champions.get(name)
        return next((v for v in versions.get(name, []) if str(v.version) == str(number)), None)

    answers = [
        _served(family, None, champion_of(name), versions.get(name, []))
        for family, name in ((f.name, f.registered_name()) for f in families_with(naming="shared"))
    ]
    with engine.connect() as conn:
        orgs = conn.execute(
            sa.select(Organization.id, Organization.feature_flags).order_by(Organization.id)
        ).all()
        with_history = set(conn.scalars(sa.select(MonthlySales.organization_id).distinct()))
    for org in orgs:
        name = registry.forecast_model_name(org.id)
        if not bool((org.feature_flags or {}).get("ai_enabled", True)):
            answers.append(
                ServedAnswer("sales_forecast", org.id, "fallback", None, "AI off for this organization")
            )
        elif name in champions:
            answers.append(_served("sales_forecast", org.id, champion_of(name), versions.get(name, [])))
        else:
            why = "never trained" if org.id in with_history else "no history: no sales months imported"
            answers.append(ServedAnswer("sales_forecast", org.id, "fallback", None, why))
    return answers


# -- served models, the ledger, open alerts, and the whole report as one JSON document -------------

SERVED_MODELS = tuple(f.registered_name() for f in families_with(naming="shared"))  # one for every org
# `status --json`: bumped when a key is removed or changes meaning (adding keys keeps the version)
STATUS_FORMAT_VERSION = 1


def iso(value: dt.datetime | None) -> str | None:
    """A timestamp as full ISO-8601 in UTC, to the second (``2026-12-05T07:01:02+00:00``); a naive one
    is taken as UTC (the platform stores UTC)."""
    if value is None:
        return None
    aware = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return aware.isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelRollout:
    """The aliases and canary weight of one served model (registered False: not in MLflow yet)."""

    name: str
    registered: bool
    champion: str | None = None
    challenger: str | None = None
    previous: str | None = None
    canary_weight: float = 0.0
    canary_started_at: str | None = None


def served_models(names: tuple[str, ...] = SERVED_MODELS) -> list[ModelRollout]:
    from neuracrm_mlops.release.rollout import RolloutError, model_state

    models = []
    for name in names:
        try:
            state = model_state(name)
        except RolloutError:
            models.append(ModelRollout(name, registered=False))
            continue
        started = state["canary_started_at"]
        models.append(
            ModelRollout(
                name,
                registered=True,
                champion=state["champion"],
                challenger=state["challenger"],
                previous=state["previous"],
                canary_weight=float(state["canary_weight"] or 0.0),
                canary_started_at=iso(dt.datetime.fromisoformat(started)) if started else None,
            )
        )
    return models


def open_alert_count(engine: sa.Engine) -> int:
    """Alerts not resolved yet (open or acknowledged)."""
    with engine.connect() as conn:
        return int(
            conn.scalar(sa.select(sa.func.count()).select_from(Alert).where(Alert.status != "resolved")) or 0
        )


def ledger_state(entry: Any) -> str:
    """A ledger entry's state: pending, done or reverted (entries written before states were kept: done)."""
    return str(getattr(entry, "state", None) or "done")


def ledger_record(entry: Any) -> dict[str, Any]:
    """One promotion ledger entry (ledger.LedgerEntry) as plain JSON, its time as full ISO-8601."""
    return {
        "id": entry.id,
        "created_at": iso(entry.created_at),
        "model_name": entry.model_name,
        "organization_id": entry.organization_id,
        "action": entry.action,
        "state": ledger_state(entry),
        "alias": entry.alias,
        "from_version": entry.from_version,
        "to_version": entry.to_version,
        "weight": entry.weight,
        "actor": entry.actor,
        "reason": entry.reason,
    }


def alert_record(alert: Any) -> dict[str, Any]:
    """One stored alert (alerts.AlertRow) as plain JSON, its times as full ISO-8601."""
    return {
        "id": alert.id,
        "severity": alert.severity,
        "status": alert.status,
        "kind": alert.kind,
        "title": alert.title,
        "message": alert.message,
        "model_name": alert.model_name,
        "model_version": alert.model_version,
        "organization_id": alert.organization_id,
        "occurrences": alert.occurrences,
        "first_seen_at": iso(alert.first_seen_at),
        "last_seen_at": iso(alert.last_seen_at),
        "acked_at": iso(alert.acked_at),
        "acked_by": alert.acked_by,
        "resolved_at": iso(alert.resolved_at),
        "action_taken": alert.action_taken,
    }


# -- voice scenarios (prompts in MLflow's prompt registry) ------------------------------------------


@dataclass(frozen=True)
class ScenarioVersionRef:
    """A scenario version under an alias: its prompt version and the semver it was registered with."""

    version: str
    semver: str | None


@dataclass(frozen=True)
class ScenarioStatus:
    """What serves one voice scenario, how its champion's calls went over the monitor window
    (``scenario_rollout.call_success``: analysed calls, successful ones, their share) and its open
    alerts (alerts under the prompt's name)."""

    scenario: str
    prompt_name: str
    champion: ScenarioVersionRef | None
    challenger: ScenarioVersionRef | None
    canary_weight: float
    previous: ScenarioVersionRef | None
    calls: int
    successful: int
    success_rate: float | None
    open_alerts: int


@dataclass(frozen=True)
class VoiceScenarios:
    """Every scenario's status; ``readable`` False (and ``error`` why) when MLflow could not be read."""

    readable: bool
    error: str | None
    window_hours: float
    scenarios: list[ScenarioStatus]


def _version_ref(version: Any) -> ScenarioVersionRef | None:
    return None if version is None else ScenarioVersionRef(str(version.version), version.semver)


def _open_alerts_by_model(
    engine: sa.Engine, names: Sequence[str], open_alerts: Sequence[Any] | None
) -> dict[str, int]:
    if open_alerts is not None:
        counts: dict[str, int] = {}
        for alert in open_alerts:
            if alert.model_name in names:
                counts[alert.model_name] = counts.get(alert.model_name, 0) + 1
        return counts
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Alert.model_name, sa.func.count())
            .where(Alert.status != "resolved", Alert.model_name.in_(list(names)))
            .group_by(Alert.model_name)
        )
        return {str(name): int(count) for name, count in rows.tuples().all()}


def voice_scenarios(
    engine: sa.Engine,
    *,
    client: Any = None,
    open_alerts: Sequence[Any] | None = None,
    now: dt.datetime | None = None,
) -> VoiceScenarios:
    """Per scenario (by name): champion, challenger and canary weight, previous, the champion's call
    success over ``NEURACRM_MONITOR_WINDOW_HOURS`` and its open alerts. Never raises for the registry:
    when MLflow cannot be read the result says so (``readable`` False, ``error``).

    Reads: one prompt search, then per scenario its three aliases (and the canary weight when a
    challenger is set) and one call-success query; the open alerts once (or ``open_alerts``, the open
    alerts the caller already read)."""
    from neuracrm_mlops.config import get_settings
    from neuracrm_mlops.release.scenario_rollout import call_success
    from neuracrm_mlops.store import prompt_registry, registry
    from neuracrm_mlops.store.db.schema import utcnow

    window = get_settings().monitor_window_hours
    try:
        client = client or registry.configure_mlflow()
        lives = [prompt_registry.live_scenario(client, s) for s in prompt_registry.list_scenarios(client)]
    except Exception as exc:  # MLflow down or refusing: the rest of the report still shows
        return VoiceScenarios(False, f"{type(exc).__name__}: {exc}"[:300], window, [])
    names = [prompt_registry.prompt_name(live.scenario) for live in lives]
    alerts = _open_alerts_by_model(engine, names, open_alerts) if names else {}
    since = (now or utcnow()) - dt.timedelta(hours=window)
    scenarios = []
    for live, name in zip(lives, names, strict=True):
        champion = live.champion
        calls = call_success(engine, live.scenario, champion.version, since) if champion else None
        scenarios.append(
            ScenarioStatus(
                scenario=live.scenario,
                prompt_name=name,
                champion=_version_ref(champion),
                challenger=_version_ref(live.challenger),
                canary_weight=live.canary_weight,
                previous=_version_ref(live.previous),
                calls=calls.calls if calls else 0,
                successful=calls.successful if calls else 0,
                success_rate=calls.rate if calls else None,
                open_alerts=alerts.get(name, 0),
            )
        )
    return VoiceScenarios(True, None, window, scenarios)


def status_document(
    engine: sa.Engine,
    *,
    database: str,
    schema_revision: str | None,
    ledger_limit: int = 10,
    alert_limit: int = 50,
) -> dict[str, Any]:
    """Everything `neuracrm-mlops status` shows, as one JSON-ready document (`status --json`; the keys
    are listed in the README, "Status for scripts")."""
    from neuracrm_mlops.store.alerts import list_alerts
    from neuracrm_mlops.store.ledger import latest_entries

    crm = crm_status(engine)
    return {
        "format_version": STATUS_FORMAT_VERSION,
        "generated_at": iso(dt.datetime.now(dt.UTC)),
        "database": {"url": database, "schema_revision": schema_revision},
        "crm": {
            "table_counts": crm.table_counts,
            "organization_count": crm.organization_count,
            "organizations": [asdict(row) for row in crm.organizations],
        },
        "models": [asdict(model) for model in served_models()],
        "served_answers": [asdict(answer) for answer in served_answers(engine)],
        "ledger": [ledger_record(entry) for entry in latest_entries(engine, limit=ledger_limit)],
        "alerts": {
            "open_count": open_alert_count(engine),
            "open": [alert_record(a) for a in list_alerts(engine, open_only=True, limit=alert_limit)],
        },
        "voice_scenarios": asdict(voice_scenarios(engine)),
    }
