"""Voice-agent calls (Retell AI): the context a call starts with, and what its webhooks report back.

``POST /voice/context`` (``VoiceContexts.context``): for a scenario (``voice_scenario.<scenario>`` in
MLflow's prompt registry, ``store.prompt_registry``) and a contact (a lead id, else the caller's
number), which scenario version talks (sticky A/B routing by contact with the challenger's canary
weight, ``routing.choose_route``) and the call's dynamic variables: exactly the keys of
``prompt_registry.CONTEXT_VARIABLES``, each filled from the CRM or else its documented default (the
lead's score, tier and top factors from the served lead scoring model, its last five interactions, its
deal stage, the organization's name). The answer has the shape Retell's inbound-call webhook expects
(``{"call_inbound": {"dynamic_variables": ..., "metadata": ...}}``), and the metadata carries the
context id (the prediction's ``entity_id``) so that the call's outcome can be joined back.

``POST /voice/events`` (``record_call_event``): Retell's ``call_ended`` and ``call_analyzed``
webhooks, verified by their ``x-retell-signature`` and recorded once per (call, event)
(``voice_call_events``): the transcript as an ``interactions`` row (channel ``voice``), the call's
success as the outcome of its context prediction, the caller's sentiment as the interaction's label.

``LiveScenarios`` keeps the served scenario versions current the way ``LiveModels`` keeps models: a
poll every ``NEURACRM_MODEL_POLL_SECONDS``; when MLflow cannot be read the last known state serves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.inference.routing import CHALLENGER_ROUTE, CHAMPION_ROUTE, FALLBACK_ROUTE, choose_route
from neuracrm_mlops.store import prompt_registry
from neuracrm_mlops.store.db.engine import DependencyState, one_line_error
from neuracrm_mlops.store.db.schema import Interaction, Lead, Organization, Outcome, VoiceCallEvent, utcnow
from neuracrm_mlops.store.prompt_registry import CONTEXT_VARIABLES, LiveScenario, ScenarioVersion
from neuracrm_mlops.store.tenancy import Tenant

log = logging.getLogger(__name__)

# -- the CRM lookup ----------------------------------------------------------------------------------

# keys of leads.attributes that may hold a lead's phone number (compared as digits, see same_number)
PHONE_ATTRIBUTE_KEYS = (
    "phone",
    "phone_number",
    "mobile",
    "mobile_phone",
    "mobile_number",
    "telephone",
    "tel",
)
# keys of leads.attributes that may hold the deal stage, first found wins
DEAL_STAGE_ATTRIBUTE_KEYS = ("deal_stage", "stage")
WON_STAGE = "won"
RECENT_INTERACTIONS = 5
INTERACTION_SUMMARY_CHARS = 160
MIN_PHONE_DIGITS = 5  # fewer digits than this is no usable number (an extension, "anonymous")
# the lead fields the lead scoring model takes (the /score request's LeadIn fields)
LEAD_FEATURE_COLUMNS = (
    "industry",
    "company_employees",
    "company_revenue",
    "email_opens",
    "website_visits",
    "pages_viewed",
    "time_on_site_seconds",
    "days_since_last_activity",
    "job_title",
    "seniority",
    "timeline",
    "budget_signal",
    "description",
    "source",
    "region",
)
# the longest a context waits for the CRM lookup before it answers with the defaults (Retell's
# inbound webhook gives up after 10 s)
LOOKUP_WAIT_SECONDS = 5.0


def phone_digits(number: object) -> str | None:
    """A phone number as its digits (``+1 (415) 555-0100`` -> ``14155550100``, a leading international
    ``00`` dropped), or None when it has fewer than ``MIN_PHONE_DIGITS`` digits."""
    if not isinstance(number, str | int) or isinstance(number, bool):
        return None
    digits = re.sub(r"\D", "", str(number))
    if str(number).strip().startswith("00"):
        digits = digits[2:]
    return digits if len(digits) >= MIN_PHONE_DIGITS else None


def same_number(a: str, b: str) -> bool:
    """Whether two digit strings are the same phone number: equal, or (a CRM number stored without
    its country code) one ends with the other and the shorter has at least 10 digits."""
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= 10 and long.endswith(short)


@dataclass(frozen=True)
class CrmContact:
    """What the CRM knows about a call's contact (a lead found by external id or phone number)."""

    lead: dict[str, Any] | None = None  # the leads row (columns + attributes), None: no lead found
    found_by: str | None = None  # "lead_id" | "phone"
    interactions: tuple[dict[str, Any], ...] = ()  # newest first, at most RECENT_INTERACTIONS
    error: str | None = None  # why the lookup failed (the defaults answer)

    @property
    def lead_external_id(self) -> str | None:
        return str(self.lead["external_id"]) if self.lead else None


def _lead_by_phone(conn: sa.Connection, organization_id: int, digits: str) -> sa.Row[Any] | None:
    """The organization's lead whose phone attribute is ``digits`` (the most recently updated one when
    several are). The JSON text is first narrowed by the number's last four digits (portable SQL on
    SQLite and PostgreSQL), then each candidate's attributes are compared as digits."""
    tail = digits[-4:]
    candidates = conn.execute(
        sa.select(Lead)
        .where(Lead.organization_id == organization_id)
        .where(sa.cast(Lead.attributes, sa.Text).like(f"%{tail}%"))
        .order_by(Lead.updated_at.desc(), Lead.id.desc())
        .limit(500)
    ).all()
    for row in candidates:
        attributes = row.attributes if isinstance(row.attributes, dict) else {}
        for key, value in attributes.items():
            if str(key).lower() in PHONE_ATTRIBUTE_KEYS:
                stored = phone_digits(value)
                if stored and same_number(stored, digits):
                    return row
    return None


def lookup_contact(
    engine: sa.Engine, organization_id: int, *, lead_id: str | None, caller_digits: str | None
) -> CrmContact:
    """The contact's lead (by external id, else by phone number) and its last interactions; a database
    error is returned as ``error`` (the caller answers with the defaults), never raised."""
    try:
        with engine.connect() as conn:
            row, found_by = None, None
            if lead_id:
                row = conn.execute(
                    sa.select(Lead).where(
                        Lead.organization_id == organization_id, Lead.external_id == lead_id
                    )
                ).first()
                found_by = "lead_id" if row is not None else None
            if row is None and caller_digits:
                row = _lead_by_phone(conn, organization_id, caller_digits)
                found_by = "phone" if row is not None else None
            if row is None:
                return CrmContact()
            lead = dict(row._mapping)
            interactions = conn.execute(
                sa.select(
                    Interaction.created_at,
                    Interaction.channel,
                    Interaction.text,
                    Interaction.sentiment_label,
                )
                .where(
                    Interaction.organization_id == organization_id,
                    Interaction.lead_external_id == lead["external_id"],
                )
                .order_by(Interaction.created_at.desc(), Interaction.id.desc())
                .limit(RECENT_INTERACTIONS)
            ).all()
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        return CrmContact(error=one_line_error(exc))
    return CrmContact(lead, found_by, tuple(dict(i._mapping) for i in interactions))


def lead_record(lead: Mapping[str, Any]) -> dict[str, Any]:
    """A leads row as the lead scoring model's input (what ``POST /score`` takes), phone numbers left out."""
    record = {name: lead[name] for name in LEAD_FEATURE_COLUMNS if lead.get(name) is not None}
    attributes = lead.get("attributes")
    if isinstance(attributes, dict):
        kept = {
            str(k): v
            for k, v in attributes.items()
            if str(k).lower() not in PHONE_ATTRIBUTE_KEYS and not str(k).startswith("_")
            if v is None or isinstance(v, str | int | float | bool)
        }
        if kept:
            record["attributes"] = kept
    return record


def summarise_interactions(interactions: Sequence[Mapping[str, Any]]) -> str | None:
    """The interactions (newest first) as short lines: ``2026-01-05 email (positive): text...``."""
    lines = []
    for item in interactions:
        created = item.get("created_at")
        day = created.date().isoformat() if isinstance(created, dt.datetime) else "undated"
        channel = str(item.get("channel") or "interaction")
        label = f" ({item['sentiment_label']})" if item.get("sentiment_label") else ""
        text = " ".join(str(item.get("text") or "").split())
        if len(text) > INTERACTION_SUMMARY_CHARS:
            text = text[: INTERACTION_SUMMARY_CHARS - 3].rstrip() + "..."
        lines.append(f"{day} {channel}{label}: {text}")
    return "\n".join(lines) or None


def deal_stage(lead: Mapping[str, Any]) -> tuple[str | None, str]:
    """The lead's deal stage and where it came from: ``attributes.<key>``, ``converted`` (``won``), or
    None (the default answers)."""
    attributes = lead.get("attributes")
    if isinstance(attributes, dict):
        lowered = {str(k).lower(): v for k, v in attributes.items()}
        for key in DEAL_STAGE_ATTRIBUTE_KEYS:
            value = lowered.get(key)
            if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value).strip():
                return str(value).strip(), f"attributes.{key}"
    if lead.get("converted") is True:
        return WON_STAGE, "converted"
    return None, "default"


# -- the live scenarios ------------------------------------------------------------------------------


class LiveScenarios:
    """Every scenario's served versions (champion, challenger, canary weight), read from the prompt
    registry by a background poll; the last known state serves while MLflow cannot be read (a scenario
    that fails to read keeps its last state; one removed from the registry is dropped)."""

    def __init__(self, client_factory: Callable[[], Any], *, poll_seconds: float = 10.0) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self.poll_seconds = poll_seconds
        self._scenarios: dict[str, LiveScenario] = {}
        self.registry = DependencyState("prompt_registry")
        self.last_poll_at: float | None = None
        self.last_poll_error: str | None = None
        self.first_poll_done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, scenario: str) -> LiveScenario | None:
        return self._scenarios.get(scenario)

    def poll_once(self) -> None:
        try:
            if self._client is None:
                self._client = self._client_factory()
            client = self._client
            names = prompt_registry.list_scenarios(client)
            current = dict(self._scenarios)
            updated: dict[str, LiveScenario] = {}
            errors = []
            for name in names:
                try:
                    updated[name] = prompt_registry.live_scenario(client, name)
                except Exception as exc:  # this scenario keeps its last known state
                    errors.append(f"{name}: {one_line_error(exc)}")
                    if name in current:
                        updated[name] = current[name]
        except Exception as exc:
            self.registry.failed(exc)
            message = one_line_error(exc)
            if message != self.last_poll_error:
                log.warning("prompt registry poll failed, serving the last known scenarios: %s", message)
            self.last_poll_error = message
        else:
            self._scenarios = updated  # one assignment: readers see the old or the new state
            if errors:
                self.last_poll_error = "; ".join(errors)
                self.registry.failed(self.last_poll_error)
            else:
                self.registry.succeeded()
                self.last_poll_error = None
            self.last_poll_at = time.time()
        finally:
            self.first_poll_done.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="neuracrm-scenario-poll", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_seconds)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def health(self) -> dict[str, Any]:
        return {
            "last_poll_at": self.last_poll_at,
            "last_poll_error": self.last_poll_error,
            "scenarios": {
                name: {
                    "champion": s.champion.version if s.champion else None,
                    "challenger": s.challenger.version if s.challenger else None,
                    "canary_weight": s.canary_weight,
                }
                for name, s in sorted(self._scenarios.items())
            },
        }


# -- the context of a call ---------------------------------------------------------------------------

# a scenario version's Retell agent (set by publishing, ``release.retell_publish``): its id and the agent
# version it was published as, from the version's tags, else its model config; when both are known the
# answer asks Retell for that agent version (``override_agent_id`` / ``override_agent_version``)
RETELL_AGENT_ID_KEYS = ("neuracrm.retell_agent_id", "retell_agent_id")
RETELL_AGENT_VERSION_KEYS = ("neuracrm.retell_agent_version", "retell_agent_version")


def _retell_agent(version: ScenarioVersion) -> tuple[str | None, int | None]:
    def first(keys: tuple[str, ...]) -> Any:
        for key in keys:
            for source in (version.tags, version.config):
                value = source.get(key)
                if value not in (None, ""):
                    return value
        return None

    agent_id, agent_version = first(RETELL_AGENT_ID_KEYS), first(RETELL_AGENT_VERSION_KEYS)
    try:
        number = int(agent_version) if agent_version is not None else None
    except (TypeError, ValueError):
        number = None
    return (str(agent_id) if agent_id is not None else None), number


@dataclass(frozen=True)
class ContextQuery:
    """One ``POST /voice/context``: the scenario and who the call is with."""

    scenario: str
    lead_id: str | None = None
    caller_number: str | None = None
    call: Mapping[str, Any] = field(default_factory=dict)  # Retell's call_inbound object, if sent


@dataclass
class VoiceContext:
    """The answer to a context request, and what is logged as its prediction row."""

    context_id: str
    organization_id: int
    scenario: str
    model_name: str
    version: str | None
    semver: str | None
    route: str
    fallback_reason: str | None
    lead_id: str | None
    variables: dict[str, str]
    metadata: dict[str, str | int | None]
    features: dict[str, Any]
    agent_id: str | None = None
    agent_version: int | None = None

    @property
    def fallback(self) -> bool:
        return self.fallback_reason is not None

    def call_inbound(self) -> dict[str, Any]:
        """What Retell's inbound-call webhook takes back (the override only when the version names one)."""
        answer: dict[str, Any] = {"dynamic_variables": dict(self.variables), "metadata": dict(self.metadata)}
        # only a version published as a Retell agent version can be asked for: an agent id alone would
        # make Retell use that agent's current version, whatever the route says
        if self.agent_id is not None and self.agent_version is not None:
            answer["override_agent_id"] = self.agent_id
            answer["override_agent_version"] = self.agent_version
        return answer

    def public(self) -> dict[str, Any]:
        return {
            "context_id": self.context_id,
            "scenario": self.scenario,
            "version": self.version,
            "semver": self.semver,
            "route": self.route,
            "model": {"name": self.model_name, "version": self.version, "route": self.route},
            "fallback": self.fallback,
            "fallback_reason": self.fallback_reason,
            "lead_id": self.lead_id,
            "call_inbound": self.call_inbound(),
        }


ScoreFunction = Callable[[Tenant, str, dict[str, Any]], Awaitable[Any]]
"""(tenant, lead external id, lead record) -> the lead scoring ``Answer`` (``predictor.Answer``)."""


def contact_key(lead_id: str | None, caller_digits: str | None) -> str | None:
    """The routing entity of a call: the lead, else the caller's number (None: neither is known)."""
    if lead_id:
        return f"lead:{lead_id}"
    if caller_digits:
        return f"phone:{caller_digits}"
    return None


def choose_scenario_version(
    live: LiveScenario | None, organization_id: int, contact: str | None
) -> tuple[str, ScenarioVersion | None, str | None]:
    """(route, version, fallback reason): the champion, or the challenger for contacts whose bucket
    falls under its canary weight; the fallback route when the scenario has no champion. A call with
    no known contact (no lead, no number) meets the champion."""
    if live is None:
        return (
            FALLBACK_ROUTE,
            None,
            "the scenario is not registered (or not read from the prompt registry yet)",
        )
    if live.champion is None:
        return FALLBACK_ROUTE, None, "the scenario has no champion version"
    if contact is None:
        return CHAMPION_ROUTE, live.champion, None
    route = choose_route(
        organization_id, contact, live.canary_weight, has_challenger=live.challenger is not None
    )
    version = live.challenger if route == CHALLENGER_ROUTE else live.champion
    return route, version or live.champion, None


class VoiceContexts:
    """Builds the context of a call (``context``) from the live scenarios and the CRM."""

    def __init__(
        self,
        engine: sa.Engine,
        scenarios: LiveScenarios,
        *,
        lookup_wait_seconds: float = LOOKUP_WAIT_SECONDS,
        database: DependencyState | None = None,
    ) -> None:
        self.engine = engine
        self.scenarios = scenarios
        self.lookup_wait_seconds = lookup_wait_seconds
        self.database = database

    async def context(self, tenant: Tenant, query: ContextQuery, score: ScoreFunction) -> VoiceContext:
        """The call's context: never raises for missing data (each variable falls back to its default)."""
        org = tenant.organization_id
        caller = query.caller_number or _text(query.call.get("from_number"))
        caller_digits = phone_digits(caller) if caller else None
        live = self.scenarios.get(query.scenario)
        features: dict[str, Any] = {
            "scenario": query.scenario,
            "requested_lead_id": query.lead_id,
            "caller_digits": caller_digits,
        }
        if query.call:
            features["call_inbound"] = {
                k: query.call.get(k)
                for k in ("call_id", "agent_id", "agent_version", "to_number")
                if k in query.call
            }
        variables = dict(CONTEXT_VARIABLES)
        variables["organization_name"] = tenant.name or CONTEXT_VARIABLES["organization_name"]
        if caller:
            variables["caller_number"] = caller
        if query.lead_id:
            variables["lead_id"] = query.lead_id
        # the contact as asked (routing must not depend on whether the CRM answered in time)
        route, version, reason = choose_scenario_version(live, org, contact_key(query.lead_id, caller_digits))
        lead_id = query.lead_id
        if reason is None:
            try:
                contact = await asyncio.wait_for(
                    asyncio.get_running_loop().run_in_executor(
                        None,
                        lambda: lookup_contact(
                            self.engine, org, lead_id=query.lead_id, caller_digits=caller_digits
                        ),
                    ),
                    self.lookup_wait_seconds,
                )
            except TimeoutError:
                contact = CrmContact(error=f"the CRM lookup took longer than {self.lookup_wait_seconds:g} s")
            if contact.error and self.database is not None:
                self.database.failed(contact.error)
            lead_id = lead_id or contact.lead_external_id
            await self._fill_from_crm(tenant, contact, variables, features, score)
        context_id = uuid.uuid4().hex
        metadata: dict[str, str | int | None] = {
            "organization_id": org,
            "context_id": context_id,
            "scenario": query.scenario,
            "scenario_version": version.version if version else None,
            "route": route,
            "lead_id": lead_id,
        }
        agent_id, agent_version = _retell_agent(version) if version else (None, None)
        return VoiceContext(
            context_id=context_id,
            organization_id=org,
            scenario=query.scenario,
            model_name=prompt_registry.prompt_name(query.scenario),
            version=version.version if version else None,
            semver=version.semver if version else None,
            route=route,
            fallback_reason=None
            if reason is None
            else f"scenario {query.scenario!r}: {reason}; "
            "Retell's own agent answers with the default variables",
            lead_id=lead_id,
            variables=variables,
            metadata=metadata,
            features=features,
            agent_id=agent_id,
            agent_version=agent_version,
        )

    @staticmethod
    async def _fill_from_crm(
        tenant: Tenant,
        contact: CrmContact,
        variables: dict[str, str],
        features: dict[str, Any],
        score: ScoreFunction,
    ) -> None:
        features["lead_found_by"] = contact.found_by
        if contact.error:
            features["lookup_error"] = contact.error
        lead = contact.lead
        if lead is None:
            return
        external_id = str(lead["external_id"])
        variables["lead_id"] = external_id
        features["lead_external_id"] = external_id
        stage, stage_source = deal_stage(lead)
        if stage:
            variables["deal_stage"] = stage
        features["deal_stage_source"] = stage_source
        summary = summarise_interactions(contact.interactions)
        if summary:
            variables["recent_interactions"] = summary
        features["interactions"] = len(contact.interactions)
        record = lead_record(lead)
        try:
            answer = await score(tenant, external_id, record)
        except Exception as exc:  # the defaults answer; the scoring path has its own fallbacks
            log.exception("voice context: scoring lead %s failed", external_id)
            features["lead_score_error"] = f"{type(exc).__name__}: {exc}"
            return
        output = answer.output
        factors = [
            str(f.get("text")) for f in output.get("factors") or [] if isinstance(f, dict) and f.get("text")
        ]
        if output.get("score") is not None:
            variables["lead_score"] = str(output["score"])
        if output.get("tier"):
            variables["lead_tier"] = str(output["tier"])
        if factors:
            variables["lead_top_factors"] = "; ".join(factors[:3])
        features["lead"] = record
        features["lead_score_model"] = {**answer.model.as_dict(), "fallback": answer.fallback}


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


# -- Retell's call webhooks --------------------------------------------------------------------------

HANDLED_EVENTS = ("call_ended", "call_analyzed")
INTERACTION_PREFIX = "retell-call-"
VOICE_CHANNEL = "voice"
SUCCESSFUL, UNSUCCESSFUL = "successful", "unsuccessful"
OUTCOME_SOURCE = "retell"
# Retell's user_sentiment -> the sentiment family's labels (its outcome_labels); "Unknown": no label
SENTIMENT_LABELS = {"positive": "positive", "negative": "negative", "neutral": "neutral"}
MAX_TRANSCRIPT_CHARS = 100_000


@dataclass(frozen=True)
class EventAnswer:
    status: int
    body: dict[str, Any]


def _refused(message: str) -> EventAnswer:
    return EventAnswer(401, {"error": message})


def verify_signature(raw: bytes, signature: str | None, api_key: str | None) -> str | None:
    """Why the webhook is refused (None: Retell signed ``raw`` with ``api_key`` within 5 minutes)."""
    if not api_key:
        return "call events cannot be verified: NEURACRM_RETELL_API_KEY is not set on the prediction service"
    if not signature:
        return "missing x-retell-signature header"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8, so its signature cannot match"
    from retell.lib.webhook_auth import verify

    if not verify(text, api_key, signature.strip()):  # type: ignore[no-untyped-call]
        return (
            "invalid or stale x-retell-signature (it must be Retell's signature of this body, made "
            "within 5 minutes)"
        )
    return None


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _timestamp(ms: object) -> dt.datetime | None:
    if isinstance(ms, int | float) and not isinstance(ms, bool) and 0 < ms < 10**14:
        return dt.datetime.fromtimestamp(ms / 1000.0, dt.UTC)
    return None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _insert(conn: sa.Connection, table: Any) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def record_call_event(
    engine: sa.Engine,
    raw: bytes,
    signature: str | None,
    api_key: str | None,
    *,
    now: dt.datetime | None = None,
) -> EventAnswer:
    """One Retell webhook, verified, then recorded once (everything of one event in one transaction)."""
    refusal = verify_signature(raw, signature, api_key)
    if refusal:
        return _refused(refusal)
    try:
        body = json.loads(raw)
    except ValueError:
        return EventAnswer(400, {"error": "the body is not JSON"})
    if not isinstance(body, dict):
        return EventAnswer(400, {"error": "the body must be a JSON object with 'event' and 'call'"})
    event = body.get("event")
    if event not in HANDLED_EVENTS:
        return EventAnswer(
            200,
            {
                "status": "ignored",
                "event": event if isinstance(event, str) else None,
                "reason": f"only {' and '.join(HANDLED_EVENTS)} are recorded",
            },
        )
    call = body.get("call")
    call_id = call.get("call_id") if isinstance(call, dict) else None
    if (
        not isinstance(call, dict)
        or not isinstance(call_id, str)
        or not call_id.strip()
        or len(call_id) > 128
    ):
        return EventAnswer(
            400, {"error": f"{event}: 'call.call_id' (a string, at most 128 characters) is missing"}
        )
    now = now or utcnow()
    metadata = _mapping(call.get("metadata"))
    org = _int(metadata.get("organization_id"))
    context_id = _text(metadata.get("context_id"))
    context_id = context_id if context_id and len(context_id) <= 64 else None
    try:
        return _record(engine, raw, event, call, call_id, metadata, org, context_id, now)
    except sa.exc.IntegrityError:
        # another delivery of this call (the other event) wrote its interaction meanwhile: once more
        return _record(engine, raw, event, call, call_id, metadata, org, context_id, now)


def _record(
    engine: sa.Engine,
    raw: bytes,
    event: str,
    call: Mapping[str, Any],
    call_id: str,
    metadata: Mapping[str, Any],
    org: int | None,
    context_id: str | None,
    now: dt.datetime,
) -> EventAnswer:
    with engine.begin() as conn:
        note = _context_problem(conn, org, context_id, metadata)
        inserted = conn.execute(
            _insert(conn, VoiceCallEvent)
            .values(
                call_id=call_id,
                event=event,
                organization_id=org if note is None else None,
                context_id=context_id if note is None else None,
                received_at=now,
                payload_sha256=hashlib.sha256(raw).hexdigest(),
                status="recorded" if note is None else "no_context",
                note=note,
            )
            .on_conflict_do_nothing(index_elements=["call_id", "event"])
            .returning(VoiceCallEvent.id)
        ).first()
        answer: dict[str, Any] = {"event": event, "call_id": call_id}
        if inserted is None:  # (rowcount says nothing here: -1 with RETURNING on psycopg)
            return EventAnswer(
                200,
                {
                    **answer,
                    "status": "duplicate",
                    "reason": "this event of this call was recorded before; nothing changed",
                },
            )
        if note is not None:
            return EventAnswer(
                200, {**answer, "status": "recorded", "reason": note, "interaction": None, "outcome": None}
            )
        assert org is not None and context_id is not None
        interaction_id = _upsert_interaction(conn, org, call, metadata, event, now)
        outcome = (
            _record_outcome(conn, org, context_id, call, metadata, now) if event == "call_analyzed" else None
        )
    return EventAnswer(
        200, {**answer, "status": "recorded", "interaction": interaction_id, "outcome": outcome}
    )


def _context_problem(
    conn: sa.Connection, org: int | None, context_id: str | None, metadata: Mapping[str, Any]
) -> str | None:
    """Why the call's metadata names no context of this platform's (None: it does)."""
    if org is None or context_id is None:
        return (
            "the call's metadata has no organization_id and context_id (not a call started with "
            "POST /voice/context's answer): recorded as received, nothing else written"
        )
    if conn.scalar(sa.select(Organization.id).where(Organization.id == org)) is None:
        return f"the call's metadata names organization {org}, which does not exist: nothing else written"
    scenario = _text(metadata.get("scenario"))
    if scenario is None or not prompt_registry.SCENARIO_NAME.match(scenario):
        return "the call's metadata has no valid scenario: nothing else written"
    return None


def _upsert_interaction(
    conn: sa.Connection,
    org: int,
    call: Mapping[str, Any],
    metadata: Mapping[str, Any],
    event: str,
    now: dt.datetime,
) -> str:
    """The call as an ``interactions`` row (insert, or update the one an earlier event of the call wrote)."""
    external_id = INTERACTION_PREFIX + str(call["call_id"])
    transcript = call.get("transcript")
    text = transcript.strip()[:MAX_TRANSCRIPT_CHARS] if isinstance(transcript, str) else ""
    created = _timestamp(call.get("start_timestamp")) or _timestamp(call.get("end_timestamp")) or now
    attributes = {
        "retell_call_id": call["call_id"],
        "context_id": metadata.get("context_id"),
        "scenario": metadata.get("scenario"),
        "scenario_version": metadata.get("scenario_version"),
        "route": metadata.get("route"),
        "agent_id": call.get("agent_id"),
        "direction": call.get("direction"),
        "duration_ms": call.get("duration_ms"),
        "disconnection_reason": call.get("disconnection_reason"),
    }
    analysis = _mapping(call.get("call_analysis"))
    sentiment = None
    if event == "call_analyzed":
        raw_sentiment = analysis.get("user_sentiment")
        sentiment = (
            SENTIMENT_LABELS.get(raw_sentiment.strip().lower()) if isinstance(raw_sentiment, str) else None
        )
        if isinstance(analysis.get("call_summary"), str):
            attributes["call_summary"] = analysis["call_summary"][:2_000]
        attributes["call_successful"] = analysis.get("call_successful")
        attributes["user_sentiment"] = raw_sentiment
    attributes = {k: v for k, v in attributes.items() if v is not None}
    existing = conn.execute(
        sa.select(Interaction.id, Interaction.text, Interaction.attributes, Interaction.sentiment_label)
        .where(Interaction.organization_id == org, Interaction.external_id == external_id)
        .with_for_update()
    ).first()
    lead_id = _text(metadata.get("lead_id"))
    if existing is None:
        values = {
            "organization_id": org,
            "external_id": external_id,
            "lead_external_id": lead_id,
            "channel": VOICE_CHANNEL,
            "text": text,
            "created_at": created,
            "sentiment_label": sentiment,
            "attributes": attributes,
        }
        conn.execute(
            sa.insert(Interaction).values(**values, content_hash=_content_hash(values), updated_at=now)
        )
        return external_id
    merged = {**(existing.attributes or {}), **attributes}
    values = {
        "lead_external_id": lead_id,
        "channel": VOICE_CHANNEL,
        "text": text or existing.text,
        "created_at": created,
        "sentiment_label": sentiment or existing.sentiment_label,
        "attributes": merged,
    }
    conn.execute(
        sa.update(Interaction)
        .where(Interaction.id == existing.id)
        .values(**values, content_hash=_content_hash({"external_id": external_id, **values}), updated_at=now)
    )
    return external_id


def _content_hash(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def _record_outcome(
    conn: sa.Connection,
    org: int,
    context_id: str,
    call: Mapping[str, Any],
    metadata: Mapping[str, Any],
    now: dt.datetime,
) -> dict[str, Any] | None:
    """``call_analysis.call_successful`` as the outcome of the context prediction (None: not given)."""
    analysis = _mapping(call.get("call_analysis"))
    successful = analysis.get("call_successful")
    if not isinstance(successful, bool):
        return None
    model_name = prompt_registry.prompt_name(str(metadata["scenario"]))
    label = SUCCESSFUL if successful else UNSUCCESSFUL
    observed = _timestamp(call.get("end_timestamp")) or now
    statement = _insert(conn, Outcome).values(
        model_name=model_name,
        organization_id=org,
        entity_id=context_id,
        label=label,
        observed_at=observed,
        source=OUTCOME_SOURCE,
        created_at=now,
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["model_name", "organization_id", "entity_id"],
            set_={"label": label, "observed_at": observed, "source": OUTCOME_SOURCE},
        )
    )
    return {"model_name": model_name, "entity_id": context_id, "label": label}


__all__ = [
    "CONTEXT_VARIABLES",
    "ContextQuery",
    "LiveScenarios",
    "VoiceContext",
    "VoiceContexts",
    "lookup_contact",
    "phone_digits",
    "record_call_event",
    "verify_signature",
]
