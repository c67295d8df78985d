"""The prediction service for real: `bentoml serve` in a subprocess, over HTTP, on PostgreSQL and a
real MLflow registry with trained models."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from flaky_models import EXPLODE_INDUSTRY, NAN_INDUSTRY, FlakyLeadScorer, UnloadableLeadScorer
from pg_databases import create_pg_database, drop_pg_database
from serving_support import ServerProcess, ServingStore, environment

# one store and one `bentoml serve` for the module (and Redis db 15): one worker
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("serving")]

LEAD = {
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
POLL = "1"  # seconds between alias polls in the test servers


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStore]:
    """8 seeded organizations on PostgreSQL; lead v1 champion and v2 (same artifacts) registered,
    sentiment v1 champion, a forecast champion for organization 1, organization 3 with AI off."""
    home = tmp_path_factory.mktemp("serving") / "home"
    db_url = create_pg_database()
    env = {
        "NEURACRM_HOME": str(home),
        "NEURACRM_DB_URL": db_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.sqlite'}",
        "NEURACRM_ACCURACY_FLOOR": "0.5",
        "NEURACRM_MODEL_POLL_SECONDS": POLL,
        "NEURACRM_REDIS_URL": "redis://127.0.0.1:6379/15",
    }
    store = ServingStore(home, env)
    with environment(env):
        from neuracrm_mlops.store import registry
        from neuracrm_mlops.store.db.engine import get_engine
        from neuracrm_mlops.store.db.migrate import upgrade
        from neuracrm_mlops.store.db.schema import Organization
        from neuracrm_mlops.store.seeding import seed_database
        from neuracrm_mlops.training.forecasts import train_forecasts_for
        from neuracrm_mlops.training.train import (
            Lineage,
            ensure_rule_baseline,
            train_lead_scoring,
            train_sentiment,
        )

        engine = get_engine()
        upgrade(engine)
        seed_database(8, 36, 11, leads_per_org=60, engine=engine, api_keys_file=home / "api_keys.csv")
        with engine.begin() as conn:
            conn.execute(
                sa.update(Organization)
                .where(Organization.id == 3)
                .values(feature_flags={"ai_enabled": False})
            )
        lead = train_lead_scoring(Lineage.for_cli("lead_scoring"), engine=engine)
        sentiment = train_sentiment(Lineage.for_cli("sentiment"), engine=engine)
        forecast = train_forecasts_for(1, Lineage.for_cli("sales_forecast"), engine=engine)
        ensure_rule_baseline()
        client = registry.configure_mlflow()
        assert lead.version and sentiment.version, (lead, sentiment)
        client.set_registered_model_alias(registry.LEAD_MODEL, "champion", lead.version)
        client.delete_registered_model_alias(registry.LEAD_MODEL, "challenger")
        client.set_registered_model_alias(registry.SENTIMENT_MODEL, "champion", sentiment.version)
        org1 = forecast.organizations[0]
        client.set_registered_model_alias(registry.forecast_model_name(1), "champion", org1["version"])
    store.copy_version(registry.LEAD_MODEL, lead.version)
    store.load_api_keys()
    yield store
    drop_pg_database(db_url)


@pytest.fixture(scope="module")
def server(store: ServingStore) -> Iterator[ServerProcess]:
    # the first forecast of org 1 is asserted to come from its model: wait for the load however busy the
    # machine (the default bounded wait answers the flagged fallback after 5 s)
    server = ServerProcess(store, NEURACRM_FORECAST_LOAD_WAIT_SECONDS="25")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def call(server: ServerProcess, path: str, body: Any, key: str | None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    headers["Content-Type"] = "application/json"
    return httpx.post(f"{server.url}{path}", content=content, headers=headers, timeout=30, **kwargs)


def set_lead_aliases(store: ServingStore, *, champion: str, challenger: str | None, weight: float) -> None:
    from neuracrm_mlops.store import registry

    client = store.mlflow()
    client.set_registered_model_alias("lead_scoring", "champion", champion)
    if challenger is None:
        client.delete_registered_model_alias("lead_scoring", "challenger")
    else:
        client.set_registered_model_alias("lead_scoring", "challenger", challenger)
    registry.set_canary_weight(client, "lead_scoring", weight)


def lead_model_is(champion: str, challenger: str | None, weight: float) -> Any:
    def check(status: dict[str, Any]) -> bool:
        served = status["models"].get("lead_scoring", {})
        return (served.get("champion"), served.get("challenger"), served.get("canary_weight")) == (
            champion,
            challenger,
            weight,
        )

    return check


def test_every_endpoint_answers_a_good_request_and_names_its_model(
    server: ServerProcess, store: ServingStore
) -> None:
    key = store.api_keys[1]
    one = call(server, "/score", {"lead": {**LEAD, "lead_id": "L-1"}}, key)
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["organization_id"] == 1 and one.headers["x-request-id"] == body["request_id"]
    result = body["results"][0]
    assert 0 <= result["probability"] <= 1 and result["score"] == round(100 * result["probability"])
    assert result["tier"] in {"hot", "warm", "cold"} and len(result["factors"]) == 3
    assert result["model"] == {"name": "lead_scoring", "version": "1", "route": "champion"}
    assert result["fallback"] is False and result["lead_id"] == "L-1"

    batch = call(server, "/score", {"leads": [{**LEAD, "lead_id": f"B-{i}"} for i in range(50)]}, key)
    assert batch.status_code == 200 and len(batch.json()["results"]) == 50

    forecast = call(server, "/forecast", {"months": 6}, key)
    assert forecast.status_code == 200, forecast.text
    fc = forecast.json()
    champion = {"name": "sales_forecast_org_1", "version": "1", "route": "champion"}
    assert fc["model"] == champion, (fc["fallback_reason"], server.status())
    assert len(fc["points"]) == 6 and not fc["fallback"]
    for point in fc["points"]:
        assert (
            point["lower_95"]
            <= point["lower_80"]
            <= point["forecast"]
            <= point["upper_80"]
            <= point["upper_95"]
        )
    assert abs(sum(fc["weights"].values()) - 1) < 1e-3 and fc["best_model"]

    sentiment = call(
        server,
        "/sentiment",
        {
            "items": [
                {"text": "Love the product, the team was great"},
                {"text": "Terrible support, cancel now"},
            ]
        },
        key,
    )
    assert sentiment.status_code == 200, sentiment.text
    labels = [r["label"] for r in sentiment.json()["results"]]
    assert labels == ["positive", "negative"]
    assert sentiment.json()["results"][0]["model"]["name"] == "sentiment"

    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200
    readiness = httpx.get(f"{server.url}/readyz", timeout=10).json()
    assert readiness["ready"] is True
    dependencies = readiness["dependencies"]
    assert set(dependencies) == {"model_registry", "database", "redis", "prediction_log_writer"}
    assert dependencies["database"]["ok"] and dependencies["model_registry"]["last_error"] is None
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert (
        'neuracrm_predictions_total{family="lead_scoring",model="lead_scoring",route="champion",version="1"}'
        in metrics
    )
    assert "neuracrm_request_latency_seconds_bucket" in metrics


def test_an_organization_without_a_forecast_model_gets_a_flagged_seasonal_naive_forecast(
    server: ServerProcess, store: ServingStore
) -> None:
    response = call(server, "/forecast", {"months": 13}, store.api_keys[2])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fallback"] is True and body["model"]["route"] == "fallback"
    assert "no forecast model" in body["fallback_reason"] and len(body["points"]) == 13


def test_an_organization_with_ai_switched_off_gets_the_rule_based_answer_flagged(
    server: ServerProcess, store: ServingStore
) -> None:
    key = store.api_keys[3]
    score = call(server, "/score", {"lead": LEAD}, key).json()["results"][0]
    assert score["fallback"] is True and score["model"]["name"] == "lead_scoring_rules"
    assert "switched off" in score["fallback_reason"] and len(score["factors"]) == 3
    sentiment = call(server, "/sentiment", {"text": "Great call today"}, key).json()["results"][0]
    assert sentiment["fallback"] is True and sentiment["model"]["name"] == "sentiment_vader"


BAD_REQUESTS = [
    ("malformed JSON", "/score", '{"lead": {', "key1", 400, "json"),
    ("missing field", "/forecast", {}, "key1", 400, "months"),
    ("wrong type", "/score", {"lead": {"email_opens": "lots"}}, "key1", 400, "email_opens"),
    ("months 0", "/forecast", {"months": 0}, "key1", 400, "months"),
    ("months 25", "/forecast", {"months": 25}, "key1", 400, "months"),
    ("oversize batch", "/score", {"leads": [LEAD] * 1001}, "key1", 400, "leads"),
    ("empty text", "/sentiment", {"text": ""}, "key1", 400, "text must not be empty"),
    (
        "empty text in a batch",
        "/sentiment",
        {"items": [{"text": "   "}]},
        "key1",
        400,
        "text must not be empty",
    ),
    ("unknown field", "/score", {"lead": {"industy": "Software"}}, "key1", 400, "industy"),
    ("neither lead nor leads", "/score", {"organization_id": 1}, "key1", 400, "either 'lead'"),
    ("no key", "/score", {"lead": LEAD}, None, 401, "missing API key"),
    ("unknown key", "/score", {"lead": LEAD}, "ncrm_not_a_key", 401, "unknown or revoked API key"),
    ("not a bearer header", "/forecast", {"months": 3}, "Basic abc", 401, "Bearer"),
    (
        "another organization's forecast",
        "/forecast",
        {"months": 3, "organization_id": 2},
        "key1",
        403,
        "organization 2",
    ),
    (
        "another organization's leads",
        "/score",
        {"lead": LEAD, "organization_id": 5},
        "key1",
        403,
        "organization 5",
    ),
]


@pytest.mark.parametrize(
    ("case", "path", "body", "key", "status", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_requests_get_the_right_4xx_with_a_message_naming_the_problem(
    server: ServerProcess,
    store: ServingStore,
    case: str,
    path: str,
    body: Any,
    key: str | None,
    status: int,
    message: str,
) -> None:
    headers_key = store.api_keys[1] if key == "key1" else key
    if key and key.startswith("Basic"):
        response = httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": key}, timeout=30)
    else:
        response = call(server, path, body, headers_key)
    assert response.status_code == status, response.text
    assert message.lower() in response.text.lower(), response.text


def _hammer(server: ServerProcess, key: str, stop: threading.Event, seen: list[tuple[int, str]]) -> None:
    with httpx.Client(timeout=30) as client:
        i = 0
        while not stop.is_set():
            i += 1
            response = client.post(
                f"{server.url}/score",
                json={"lead": {**LEAD, "lead_id": f"hammer-{threading.get_ident()}-{i}"}},
                headers={"Authorization": f"Bearer {key}"},
            )
            version = response.json()["results"][0]["model"]["version"] if response.status_code == 200 else ""
            seen.append((response.status_code, version))


def test_an_alias_change_is_picked_up_under_load_without_a_restart_or_a_failed_request(
    server: ServerProcess, store: ServingStore
) -> None:
    set_lead_aliases(store, champion="1", challenger=None, weight=0.0)
    server.wait_for(lead_model_is("1", None, 0.0))
    stop = threading.Event()
    seen: list[tuple[int, str]] = []
    workers = [
        threading.Thread(target=_hammer, args=(server, store.api_keys[1], stop, seen)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1.5)
        set_lead_aliases(store, champion="2", challenger=None, weight=0.0)
        server.wait_for(lead_model_is("2", None, 0.0))
        time.sleep(1.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        set_lead_aliases(store, champion="1", challenger=None, weight=0.0)
    statuses = Counter(status for status, _ in seen)
    versions = [version for _, version in seen]
    assert statuses == {200: len(seen)}, statuses
    assert versions[0] == "1" and versions[-1] == "2"
    assert "1" in versions and "2" in versions and len(seen) > 20


def test_the_challenger_gets_its_weight_of_entities_and_each_entity_keeps_its_route(
    server: ServerProcess, store: ServingStore
) -> None:
    set_lead_aliases(store, champion="1", challenger="2", weight=0.1)
    server.wait_for(lead_model_is("1", "2", 0.1))
    key = store.api_keys[4]
    leads = [{**LEAD, "lead_id": f"canary-{i}"} for i in range(2_400)]

    def routes() -> dict[str, str]:
        out = {}
        for start in range(0, len(leads), 600):
            response = call(server, "/score", {"leads": leads[start : start + 600]}, key)
            assert response.status_code == 200, response.text
            out.update({r["lead_id"]: r["model"]["route"] for r in response.json()["results"]})
        return out

    try:
        first, second = routes(), routes()
    finally:
        set_lead_aliases(store, champion="1", challenger=None, weight=0.0)
    share = sum(route == "challenger" for route in first.values()) / len(first)
    assert 0.07 <= share <= 0.13, share
    assert first == second
    assert set(first.values()) == {"champion", "challenger"}


def test_a_broken_model_gives_flagged_fallback_answers_and_an_unloadable_one_is_never_served(
    server: ServerProcess, store: ServingStore
) -> None:
    flaky = store.register_object("lead_scoring", FlakyLeadScorer())
    unloadable = store.register_object("lead_scoring", UnloadableLeadScorer())
    key = store.api_keys[1]
    try:
        set_lead_aliases(store, champion=flaky, challenger=None, weight=0.0)
        server.wait_for(lead_model_is(flaky, None, 0.0))
        fine = call(server, "/score", {"lead": LEAD}, key).json()["results"][0]
        assert fine["model"]["version"] == flaky and not fine["fallback"]
        for industry, problem in ((EXPLODE_INDUSTRY, "simulated model crash"), (NAN_INDUSTRY, "non-finite")):
            response = call(server, "/score", {"leads": [{**LEAD, "industry": industry}, LEAD]}, key)
            assert response.status_code == 200, response.text
            for result in response.json()["results"]:
                assert result["fallback"] is True and result["model"]["route"] == "fallback"
                assert (
                    result["model"]["name"] == "lead_scoring_rules" and problem in result["fallback_reason"]
                )
                assert 0 <= result["probability"] <= 1
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert f'neuracrm_model_errors_total{{family="lead_scoring",version="{flaky}"}} 4.0' in metrics

        set_lead_aliases(store, champion=unloadable, challenger=None, weight=0.0)
        status = server.wait_for(lambda s: "lead_scoring@champion" in s["load_errors"])
        assert f"v{unloadable}" in status["load_errors"]["lead_scoring@champion"]
        assert status["models"]["lead_scoring"]["champion"] == flaky  # the last good version
        kept = call(server, "/score", {"lead": LEAD}, key).json()["results"][0]
        assert kept["model"]["version"] == flaky
    finally:
        set_lead_aliases(store, champion="1", challenger=None, weight=0.0)
        server.wait_for(lead_model_is("1", None, 0.0))


def test_every_prediction_is_logged_even_when_the_service_stops_before_a_flush(store: ServingStore) -> None:
    # a flush interval far beyond the test: rows can only reach the database through the graceful stop
    server = ServerProcess(store, NEURACRM_PREDICTION_LOG_FLUSH_SECONDS="600")
    request_ids = [f"durable-{i}" for i in range(40)]
    try:
        server.wait_ready()
        for i, request_id in enumerate(request_ids):
            path, body = [
                ("/score", {"lead": LEAD}),
                ("/sentiment", {"text": "fine"}),
                ("/forecast", {"months": 2}),
            ][i % 3]
            response = httpx.post(
                f"{server.url}{path}",
                json=body,
                headers={"Authorization": f"Bearer {store.api_keys[1]}", "X-Request-ID": request_id},
                timeout=30,
            )
            assert response.status_code == 200, response.text
    finally:
        exit_code = server.stop()
    assert exit_code == 0, server.log_text()[-3000:]
    engine = store.engine()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT request_id, model_name, route, latency_ms FROM predictions"
                " WHERE request_id LIKE 'durable-%'"
            )
        ).all()
    engine.dispose()
    assert sorted(r.request_id for r in rows) == sorted(request_ids)
    assert all(r.latency_ms > 0 and r.route in {"champion", "fallback"} for r in rows)
