"""Voice-agent calls on the real prediction service: `bentoml serve` on PostgreSQL and a real MLflow prompt
registry. ``POST /voice/context`` (sticky A/B of scenario versions, the call's variables from the CRM, the
flagged fallback, the prediction log) and ``POST /voice/events`` (Retell's signed call webhooks, recorded
once). No lead model is registered: leads are scored by the served scoring path's rule-based fallback,
which keeps the module fast (one server, no training)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pg_databases import create_pg_database, drop_pg_database
from retell.lib.webhook_auth import symmetric
from serving_support import ServerProcess, ServingStore, environment

from neuracrm_mlops.inference import voice
from neuracrm_mlops.inference.routing import choose_route
from neuracrm_mlops.store.prompt_registry import CONTEXT_VARIABLES

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("voice_service")]

SCENARIO = "sales_outbound"
PROMPT = "voice_scenario.sales_outbound"
RETELL_KEY = "key_test_retell_webhook_secret"
TEMPLATE = (
    "You call for {{organization_name}}. Lead {{lead_id}} scores {{lead_score}} ({{lead_tier}}): "
    "{{lead_top_factors}}. Stage: {{deal_stage}}. Earlier: {{recent_interactions}}. Caller {{caller_number}}."
)
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
HOT_LEAD = {
    "industry": "Software",
    "company_employees": 250,
    "company_revenue": 2.5e7,
    "email_opens": 6,
    "website_visits": 9,
    "pages_viewed": 31,
    "time_on_site_seconds": 840.0,
    "days_since_last_activity": 2,
    "job_title": "VP of Sales",
    "seniority": "vp",
    "timeline": "this_quarter",
    "budget_signal": "approved",
    "description": "Asked for a quote and a pilot next month",
    "source": "webinar",
    "region": "emea",
}
# L-100's interactions, oldest first: the context must list the last five, newest first
INTERACTIONS = [f"Conversation number {i} about the pilot" for i in range(1, 7)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStore]:
    """One organization on PostgreSQL with two leads (L-100 with a phone, a deal stage and six
    interactions; L-200 converted, its phone stored without the country code); sales_outbound v1
    champion and v2 challenger at 10% in MLflow's prompt registry; no lead model registered."""
    home = tmp_path_factory.mktemp("voice") / "home"
    db_url = create_pg_database()
    env = {
        "NEURACRM_HOME": str(home),
        "NEURACRM_DB_URL": db_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.sqlite'}",
        "NEURACRM_MODEL_POLL_SECONDS": "1",
    }
    store = ServingStore(home, env)
    with environment(env):
        from neuracrm_mlops.store import prompt_registry, registry
        from neuracrm_mlops.store.db.engine import get_engine
        from neuracrm_mlops.store.db.migrate import upgrade
        from neuracrm_mlops.store.db.schema import Interaction, Lead
        from neuracrm_mlops.store.orgs import create_organization

        engine = get_engine()
        upgrade(engine)
        with engine.begin() as conn:
            org, key = create_organization(conn, "Acme Robotics")
            leads = [
                {
                    **HOT_LEAD,
                    "external_id": "L-100",
                    "attributes": {"phone": "+1 (415) 555-0100", "deal_stage": "negotiation"},
                    "converted": None,
                },
                {
                    "external_id": "L-200",
                    "industry": "Retail",
                    "attributes": {"mobile": "415-555-0199"},
                    "converted": True,
                },
            ]
            for lead in leads:
                conn.execute(
                    sa.insert(Lead).values(
                        organization_id=org.id, created_at=NOW, content_hash="x", updated_at=NOW, **lead
                    )
                )
            for i, text in enumerate(INTERACTIONS, start=1):
                conn.execute(
                    sa.insert(Interaction).values(
                        organization_id=org.id,
                        external_id=f"I-{i}",
                        lead_external_id="L-100",
                        channel="email",
                        text=text,
                        created_at=NOW - dt.timedelta(days=10 - i),
                        sentiment_label="positive" if i % 2 else None,
                        attributes={},
                        content_hash="x",
                        updated_at=NOW,
                    )
                )
        client = registry.configure_mlflow()
        for version in (1, 2):
            client.register_prompt(
                name=PROMPT,
                template=TEMPLATE + ("" if version == 1 else " Be brief."),
                tags={prompt_registry.SEMVER_TAG: f"1.{version - 1}.0"},
                model_config={"retell_agent_id": "agent_sales"},
            )
        client.set_prompt_version_tag(PROMPT, "2", "neuracrm.retell_agent_version", "7")
        prompt_registry.set_alias(client, SCENARIO, "champion", 1)
        prompt_registry.set_alias(client, SCENARIO, "challenger", 2)
        prompt_registry.set_canary_weight(client, SCENARIO, 0.1)
    store.api_keys = {org.id: key}
    yield store
    drop_pg_database(db_url)


@pytest.fixture(scope="module")
def server(store: ServingStore) -> Iterator[ServerProcess]:
    server = ServerProcess(store, NEURACRM_RETELL_API_KEY=RETELL_KEY, NEURACRM_SERVING_WORKERS="1")
    try:
        server.wait_ready()
        server.wait_for(lambda s: SCENARIO in s.get("voice_scenarios", {}).get("scenarios", {}))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def org(store: ServingStore) -> int:
    return next(iter(store.api_keys))


@pytest.fixture(scope="module")
def http(server: ServerProcess, store: ServingStore) -> Iterator[httpx.Client]:
    key = next(iter(store.api_keys.values()))
    with httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def engine(store: ServingStore) -> Iterator[sa.Engine]:
    engine = store.engine()
    yield engine
    engine.dispose()


def context(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/voice/context", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """``check()`` once it is truthy (prediction rows are written in batches, off the request path)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def prediction(engine: sa.Engine, context_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT * FROM predictions WHERE entity_id = :e"), {"e": context_id}
        ).first()
    return dict(row._mapping) if row else None


def counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: int(conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)
            for table in ("voice_call_events", "interactions", "outcomes")
        }


def signed(body: dict[str, Any], *, key: str = RETELL_KEY, age_seconds: float = 0.0) -> tuple[bytes, str]:
    raw = json.dumps(body, separators=(",", ":"))
    timestamp = int((time.time() - age_seconds) * 1000)
    return raw.encode(), symmetric["sign"](raw, key, timestamp)


def post_event(server: ServerProcess, raw: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["x-retell-signature"] = signature
    return httpx.post(f"{server.url}/voice/events", content=raw, headers=headers, timeout=30)


# -- pure parts ---------------------------------------------------------------------------------------


def test_phone_numbers_compare_as_digits_with_or_without_the_country_code() -> None:
    assert voice.phone_digits("+1 (415) 555-0100") == "14155550100"
    assert voice.phone_digits("0044 20 7946 0958") == "442079460958"
    assert voice.phone_digits("anonymous") is None and voice.phone_digits("123") is None
    assert voice.same_number("14155550199", "4155550199")
    assert not voice.same_number("14155550199", "5550199")  # too short to be told apart safely


def test_retell_sentiments_map_onto_the_sentiment_familys_labels() -> None:
    from neuracrm_mlops.families import FAMILIES

    assert set(voice.SENTIMENT_LABELS.values()) == set(FAMILIES["sentiment"].outcome_labels)


def test_call_events_are_recorded_once_on_both_databases(db_url: str) -> None:
    """The library behind /voice/events on SQLite (the embedded default) and PostgreSQL."""
    from neuracrm_mlops.store.db.engine import create_engine
    from neuracrm_mlops.store.db.migrate import upgrade
    from neuracrm_mlops.store.orgs import create_organization

    engine = create_engine(db_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            org, _ = create_organization(conn, "Embedded")
        metadata = {"organization_id": org.id, "context_id": "c" * 32, "scenario": SCENARIO, "lead_id": "L-1"}
        body = {
            "event": "call_analyzed",
            "call": {
                "call_id": "call-db",
                "metadata": metadata,
                "transcript": "User: yes",
                "call_analysis": {"call_successful": False, "user_sentiment": "Negative"},
            },
        }
        raw, signature = signed(body)
        first = voice.record_call_event(engine, raw, signature, RETELL_KEY)
        assert first.status == 200 and first.body["status"] == "recorded", first.body
        assert first.body["outcome"]["label"] == "unsuccessful"
        again = voice.record_call_event(engine, raw, signature, RETELL_KEY)
        assert again.body["status"] == "duplicate"
        assert voice.record_call_event(engine, raw, signature, None).status == 401
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM voice_call_events")) == 1
            assert conn.scalar(sa.text("SELECT sentiment_label FROM interactions")) == "negative"
            assert conn.scalar(sa.text("SELECT count(*) FROM outcomes")) == 1
    finally:
        engine.dispose()


# -- POST /voice/context ------------------------------------------------------------------------------


def test_a_thousand_callers_split_about_ten_percent_to_the_challenger_and_each_stays_put(
    http: httpx.Client, org: int, engine: sa.Engine
) -> None:
    numbers = [f"+1 212 555 {i:04d}" for i in range(1_000)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: context(http, {"scenario": SCENARIO, "caller_number": n}), numbers))
    routes = Counter(a["route"] for a in answers)
    # binomial(1000, 0.1): sd 9.5; +-40 is over 4 sd, and the exact assignment is checked below anyway
    assert 60 <= routes["challenger"] <= 140 and routes["champion"] == 1_000 - routes["challenger"], routes
    for number, answer in zip(numbers, answers, strict=True):
        expected = choose_route(org, f"phone:{voice.phone_digits(number)}", 0.1, has_challenger=True)
        assert answer["route"] == expected, (number, answer["route"])
        assert answer["version"] == ("2" if expected == "challenger" else "1")
        assert answer["call_inbound"]["metadata"]["scenario_version"] == answer["version"]
        assert not answer["fallback"] and answer["model"]["name"] == PROMPT
    # v2 was published as Retell agent version 7: its calls ask for it; v1 names no agent version
    challenger = next(a for a in answers if a["route"] == "challenger")
    assert challenger["call_inbound"]["override_agent_id"] == "agent_sales"
    assert challenger["call_inbound"]["override_agent_version"] == 7
    champion = next(a for a in answers if a["route"] == "champion")
    assert "override_agent_id" not in champion["call_inbound"] and champion["semver"] == "1.0.0"
    # the same contact always meets the same version (another format of the same number too)
    for number, answer in list(zip(numbers, answers, strict=True))[:: 1_000 // 40]:
        again = context(http, {"scenario": SCENARIO, "caller_number": number.replace(" ", "-")})
        assert (again["route"], again["version"]) == (answer["route"], answer["version"])
        assert again["context_id"] != answer["context_id"]
    # every answer is a predictions row keyed by its context id
    ids = [a["context_id"] for a in answers]

    def logged() -> int:
        with engine.connect() as conn:
            return int(
                conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM predictions WHERE model_name = :m AND organization_id = :o "
                        "AND entity_id = ANY(:ids)"
                    ),
                    {"m": PROMPT, "o": org, "ids": ids},
                )
                or 0
            )

    assert wait_until(lambda: logged() == 1_000) and logged() == 1_000
    row = prediction(engine, challenger["context_id"])
    assert row is not None
    assert (row["model_version"], row["route"], row["fallback"]) == ("2", "challenger", False)
    assert row["output"] == challenger["call_inbound"]["dynamic_variables"]


def test_a_known_lead_gets_its_score_tier_factors_last_five_interactions_and_stage(
    http: httpx.Client, org: int, engine: sa.Engine
) -> None:
    answer = context(http, {"scenario": SCENARIO, "lead_id": "L-100"})
    variables = answer["call_inbound"]["dynamic_variables"]
    assert set(variables) == set(CONTEXT_VARIABLES)
    assert all(isinstance(v, str) for v in variables.values())
    # the same score as POST /score gives the lead (the same scoring path and routing entity)
    scored = http.post("/score", json={"lead": {**HOT_LEAD, "lead_id": "L-100"}}).json()["results"][0]
    assert variables["lead_score"] == str(scored["score"]) and variables["lead_tier"] == scored["tier"]
    assert variables["lead_top_factors"] == "; ".join(f["text"] for f in scored["factors"][:3])
    lines = variables["recent_interactions"].splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == INTERACTIONS[:0:-1]  # 6, 5, 4, 3, 2
    assert lines[0].startswith("2026-02-25 email: ") and lines[1].startswith("2026-02-24 email (positive): ")
    assert variables["deal_stage"] == "negotiation"
    assert variables["organization_name"] == "Acme Robotics" and variables["lead_id"] == "L-100"
    assert variables["caller_number"] == CONTEXT_VARIABLES["caller_number"]
    assert answer["lead_id"] == "L-100" and answer["call_inbound"]["metadata"]["lead_id"] == "L-100"
    row = wait_until(lambda: prediction(engine, answer["context_id"]))
    assert row is not None and row["features"]["lead_found_by"] == "lead_id"
    assert row["features"]["lead_score_model"]["route"] == "fallback"  # no lead model: the rules scored


def test_a_caller_is_found_by_the_phone_number_on_the_lead_and_a_converted_lead_is_won(
    http: httpx.Client, org: int
) -> None:
    by_phone = context(http, {"scenario": SCENARIO, "caller_number": "+14155550100"})
    assert by_phone["lead_id"] == "L-100"
    assert by_phone["call_inbound"]["dynamic_variables"]["deal_stage"] == "negotiation"
    # routing stays by the contact as asked (the number), so it does not depend on the CRM lookup
    assert by_phone["route"] == choose_route(org, "phone:14155550100", 0.1, has_challenger=True)
    won = context(http, {"scenario": SCENARIO, "caller_number": "+1 415 555 0199"})
    assert won["lead_id"] == "L-200"
    assert won["call_inbound"]["dynamic_variables"]["deal_stage"] == "won"
    assert (
        won["call_inbound"]["dynamic_variables"]["recent_interactions"]
        == CONTEXT_VARIABLES["recent_interactions"]
    )


def test_an_unknown_caller_gets_the_documented_defaults_not_an_error(http: httpx.Client) -> None:
    answer = context(http, {"scenario": SCENARIO, "caller_number": "+44 20 7946 0000"})
    variables = answer["call_inbound"]["dynamic_variables"]
    expected = {
        **CONTEXT_VARIABLES,
        "organization_name": "Acme Robotics",
        "caller_number": "+44 20 7946 0000",
    }
    assert variables == expected
    assert answer["lead_id"] is None and not answer["fallback"]
    unknown_lead = context(http, {"scenario": SCENARIO, "lead_id": "no-such-lead"})
    assert unknown_lead["call_inbound"]["dynamic_variables"]["lead_score"] == CONTEXT_VARIABLES["lead_score"]


def test_retells_inbound_webhook_body_is_accepted_with_the_scenario_added(
    http: httpx.Client,
) -> None:
    body = {
        "event": "call_inbound",
        "call_inbound": {
            "from_number": "+14155550100",
            "to_number": "+14155559999",
            "agent_id": "agent_sales",
        },
    }
    answer = context(http, {**body, "scenario": SCENARIO})
    assert answer["lead_id"] == "L-100" and answer["scenario"] == SCENARIO
    assert answer["call_inbound"]["dynamic_variables"]["caller_number"] == "+14155550100"
    missing = http.post("/voice/context", json=body)
    assert missing.status_code == 400 and "scenario" in missing.json()["error"], missing.text
    bad_name = http.post("/voice/context", json={**body, "scenario": "Sales Outbound"})
    assert bad_name.status_code == 400 and bad_name.json()["detail"][0]["loc"] == ["scenario"], bad_name.text
    no_contact = http.post("/voice/context", json={"scenario": SCENARIO})
    assert no_contact.status_code == 400, no_contact.text


def test_a_scenario_that_is_not_registered_gets_the_flagged_fallback_with_default_variables(
    http: httpx.Client, engine: sa.Engine
) -> None:
    answer = context(http, {"scenario": "billing_followup", "lead_id": "L-100"})
    assert answer["fallback"] and answer["route"] == "fallback" and answer["version"] is None
    assert "billing_followup" in answer["fallback_reason"]
    assert "override_agent_id" not in answer["call_inbound"]
    variables = answer["call_inbound"]["dynamic_variables"]
    assert variables == {**CONTEXT_VARIABLES, "organization_name": "Acme Robotics", "lead_id": "L-100"}
    row = wait_until(lambda: prediction(engine, answer["context_id"]))
    assert row is not None and row["fallback"] and row["route"] == "fallback"
    assert row["model_name"] == "voice_scenario.billing_followup" and row["error"]


# -- POST /voice/events -------------------------------------------------------------------------------


def call_body(event: str, context_answer: dict[str, Any], call_id: str, **extra: Any) -> dict[str, Any]:
    started = int(NOW.timestamp() * 1000)
    return {
        "event": event,
        "call": {
            "call_id": call_id,
            "agent_id": "agent_sales",
            "direction": "inbound",
            "from_number": "+14155550100",
            "to_number": "+14155559999",
            "metadata": context_answer["call_inbound"]["metadata"],
            "retell_llm_dynamic_variables": context_answer["call_inbound"]["dynamic_variables"],
            "transcript": "Agent: Hello from Acme.\nUser: Hi, yes, send the contract please.",
            "start_timestamp": started,
            "end_timestamp": started + 95_000,
            **extra,
        },
    }


def test_signed_call_events_write_the_interaction_outcome_and_sentiment_once(
    server: ServerProcess, http: httpx.Client, org: int, engine: sa.Engine
) -> None:
    answer = context(http, {"scenario": SCENARIO, "lead_id": "L-100"})
    context_id = answer["context_id"]
    ended = post_event(server, *signed(call_body("call_ended", answer, "call-1")))
    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == "recorded" and ended.json()["interaction"] == "retell-call-call-1"
    with engine.connect() as conn:
        interaction = conn.execute(
            sa.text("SELECT * FROM interactions WHERE external_id = 'retell-call-call-1'")
        ).one()
    assert (interaction.organization_id, interaction.lead_external_id, interaction.channel) == (
        org,
        "L-100",
        "voice",
    )
    assert "send the contract" in interaction.text and interaction.created_at == NOW
    assert interaction.sentiment_label is None and interaction.attributes["context_id"] == context_id

    analysis = {"call_successful": True, "user_sentiment": "Positive", "call_summary": "Wants the contract."}
    raw, signature = signed(call_body("call_analyzed", answer, "call-1", call_analysis=analysis))
    analyzed = post_event(server, raw, signature)
    assert analyzed.status_code == 200 and analyzed.json()["status"] == "recorded", analyzed.text
    assert wait_until(lambda: prediction(engine, context_id))
    with engine.connect() as conn:
        joined = conn.execute(
            sa.text(
                "SELECT o.label, p.model_version, p.route FROM outcomes o JOIN predictions p "
                "ON p.model_name = o.model_name AND p.organization_id = o.organization_id "
                "AND p.entity_id = o.entity_id WHERE o.entity_id = :e"
            ),
            {"e": context_id},
        ).one()
        label = conn.scalar(
            sa.text("SELECT sentiment_label FROM interactions WHERE external_id = 'retell-call-call-1'")
        )
    assert joined.label == "successful"
    assert (joined.model_version, joined.route) == (answer["version"], answer["route"])
    assert label == "positive"

    # Retell retries: the same event again changes nothing
    before = counts(engine)
    with engine.connect() as conn:
        row_before = dict(
            conn.execute(sa.text("SELECT * FROM interactions WHERE external_id = 'retell-call-call-1'"))
            .one()
            ._mapping
        )
    replay = post_event(server, raw, signature)
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate", replay.text
    resigned = post_event(
        server,
        *signed(call_body("call_analyzed", answer, "call-1", call_analysis={"call_successful": False})),
    )
    assert resigned.json()["status"] == "duplicate"
    assert counts(engine) == before
    with engine.connect() as conn:
        row_after = dict(
            conn.execute(sa.text("SELECT * FROM interactions WHERE external_id = 'retell-call-call-1'"))
            .one()
            ._mapping
        )
        assert (
            conn.scalar(sa.text("SELECT label FROM outcomes WHERE entity_id = :e"), {"e": context_id})
            == "successful"
        )
    assert row_after == row_before


def test_forged_stale_and_missing_signatures_are_401_and_write_nothing(
    server: ServerProcess, http: httpx.Client, engine: sa.Engine
) -> None:
    answer = context(http, {"scenario": SCENARIO, "lead_id": "L-100"})
    body = call_body("call_analyzed", answer, "call-forged", call_analysis={"call_successful": False})
    before = counts(engine)
    raw, _ = signed(body)
    attempts = {
        "forged": signed(body, key="not-the-retell-key"),
        "stale": signed(body, age_seconds=6 * 60),
        "another body": (raw.replace(b"call-forged", b"call-forgex"), signed(body)[1]),
        "missing": (raw, None),
        "malformed": (raw, "sha256=abc"),
    }
    for name, (content, signature) in attempts.items():
        response = post_event(server, content, signature)
        assert response.status_code == 401, (name, response.text)
        assert "error" in response.json()
    assert counts(engine) == before


def test_events_without_our_metadata_are_recorded_as_received_and_other_events_ignored(
    server: ServerProcess, engine: sa.Engine
) -> None:
    before = counts(engine)
    foreign = {
        "event": "call_ended",
        "call": {"call_id": "call-foreign", "transcript": "hello", "metadata": {"crm": "x"}},
    }
    response = post_event(server, *signed(foreign))
    assert response.status_code == 200 and response.json()["status"] == "recorded", response.text
    assert "metadata" in response.json()["reason"]
    after = counts(engine)
    assert after == {**before, "voice_call_events": before["voice_call_events"] + 1}
    with engine.connect() as conn:
        status = conn.scalar(sa.text("SELECT status FROM voice_call_events WHERE call_id = 'call-foreign'"))
    assert status == "no_context"
    started = post_event(server, *signed({"event": "call_started", "call": {"call_id": "call-x"}}))
    assert started.status_code == 200 and started.json()["status"] == "ignored", started.text
    assert counts(engine) == after
