"""Two prediction service replicas behind one address behave as one service.

Two `bentoml serve` replicas on different ports, each in its own working directory (its own
BENTOML_HOME and NEURACRM_HOME: its own prediction journal), against one PostgreSQL CRM store, one
MLflow registry and one Redis database, during a lead scoring canary:

- every entity gets the same route on both replicas (and the route the library computes in this
  process), and the challenger's share of entities is near the canary weight;
- a forecast computed on one replica is a cache hit on the other (Redis, seen in /status/ counters);
- both replicas' predictions land in the one ``predictions`` table, each row naming its replica;
- /status/ and every answer (``X-NeuraCRM-Replica``) name the replica: one by NEURACRM_REPLICA_NAME,
  the other by its default, ``<hostname>:<port>``.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from pg_databases import create_pg_database, drop_pg_database
from serving_support import ServerProcess, ServingStore, environment

from neuracrm_mlops.inference.forecast_cache import cache_key
from neuracrm_mlops.inference.routing import choose_route

# one store and two `bentoml serve` for the module: one xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("serving_replicas")]

LEAD = {
    "industry": "Software",
    "company_employees": 250,
    "email_opens": 6,
    "website_visits": 9,
    "seniority": "vp",
    "timeline": "this_quarter",
    "description": "Asked for a quote and a pilot next month",
    "region": "emea",
}
WEIGHT = 0.3  # the challenger's canary weight
CANARY_ORGS = (1, 2)
LEADS_PER_ORG = 400
REPLICA_A = "replica-a"
REPLICA_HEADER = "x-neuracrm-replica"
# Redis databases this module may claim (test_serving.py and test_prediction_log.py use 15)
REDIS_DATABASES = (14, 13, 12, 11, 10)
REDIS_CLAIM_KEY = "neuracrm-test:claimed-by:test_serving_replicas"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis database of this module's own: the first empty one of REDIS_DATABASES, claimed with a key
    (SET NX: two runs never share one), flushed afterwards."""
    for number in REDIS_DATABASES:
        client = redis.Redis(host="127.0.0.1", port=6379, db=number)
        try:
            claimed = client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, str(uuid.uuid4()), nx=True)
        except redis.ConnectionError as exc:
            pytest.fail(f"Redis at 127.0.0.1:6379 is needed for this test and is not reachable: {exc}")
        if claimed:
            break
        client.close()
    else:
        pytest.fail(f"no empty Redis database among {REDIS_DATABASES} for this test")
    try:
        yield f"redis://127.0.0.1:6379/{number}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[ServingStore]:
    """4 seeded organizations on PostgreSQL; lead v1 champion, v2 (the same artifacts) challenger at
    WEIGHT; a forecast champion for organization 1."""
    home = tmp_path_factory.mktemp("replicas-store") / "home"
    db_url = create_pg_database()
    env = {
        "NEURACRM_HOME": str(home),
        "NEURACRM_DB_URL": db_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.sqlite'}",
        "NEURACRM_ACCURACY_FLOOR": "0.5",
        "NEURACRM_MODEL_POLL_SECONDS": "1",
        "NEURACRM_REDIS_URL": redis_url,
    }
    store = ServingStore(home, env)
    try:
        with environment(env):
            from neuracrm_mlops.store import registry
            from neuracrm_mlops.store.db.engine import get_engine
            from neuracrm_mlops.store.db.migrate import upgrade
            from neuracrm_mlops.store.seeding import seed_database
            from neuracrm_mlops.training.forecasts import train_forecasts_for
            from neuracrm_mlops.training.train import Lineage, train_lead_scoring

            engine = get_engine()
            upgrade(engine)
            seed_database(4, 36, 13, leads_per_org=60, engine=engine, api_keys_file=home / "api_keys.csv")
            lead = train_lead_scoring(Lineage.for_cli("lead_scoring"), engine=engine)
            forecast = train_forecasts_for(1, Lineage.for_cli("sales_forecast"), engine=engine)
            assert lead.version, lead
            client = registry.configure_mlflow()
            client.set_registered_model_alias(registry.LEAD_MODEL, "champion", lead.version)
            org1 = forecast.organizations[0]
            client.set_registered_model_alias(registry.forecast_model_name(1), "champion", org1["version"])
            challenger = store.copy_version(registry.LEAD_MODEL, lead.version)
            client.set_registered_model_alias(registry.LEAD_MODEL, "challenger", challenger)
            registry.set_canary_weight(client, registry.LEAD_MODEL, WEIGHT)
        store.load_api_keys()
        yield store
    finally:
        drop_pg_database(db_url)


@pytest.fixture(scope="module")
def replicas(
    store: ServingStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Replica A (named by NEURACRM_REPLICA_NAME) and replica B (its default name), started together,
    each in its own working directory with its own NEURACRM_HOME."""
    root = tmp_path_factory.mktemp("replicas")
    started: list[ServerProcess] = []
    try:
        for name, extra in (("a", {"NEURACRM_REPLICA_NAME": REPLICA_A}), ("b", {})):
            started.append(
                ServerProcess(
                    store,
                    cwd=root / name,
                    NEURACRM_HOME=str(root / name / "home"),
                    # the forecasts are asserted to come from the model: wait for its load however busy
                    # the machine (the default wait answers the flagged fallback after 5 s)
                    NEURACRM_FORECAST_LOAD_WAIT_SECONDS="25",
                    **extra,
                )
            )
        for server in started:
            server.wait_ready()
        a, b = started
        yield a, b
    finally:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda server: server.stop(), started))


def call(
    server: ServerProcess, path: str, body: Any, key: str, request_id: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if request_id:
        headers["X-Request-ID"] = request_id
    return httpx.post(f"{server.url}{path}", content=json.dumps(body), headers=headers, timeout=60)


def canary_is_served(status: dict[str, Any]) -> bool:
    served = status["models"].get("lead_scoring", {})
    return bool(served.get("champion") and served.get("challenger")) and served.get("canary_weight") == WEIGHT


def test_status_and_every_answer_name_the_replica_that_gave_it(
    replicas: tuple[ServerProcess, ServerProcess], store: ServingStore
) -> None:
    a, b = replicas
    names = {a: REPLICA_A, b: f"{socket.gethostname()}:{b.port}"}
    assert names[a] != names[b]
    for server, name in names.items():
        status = httpx.get(f"{server.url}/status/", timeout=10)
        assert status.status_code == 200, status.text
        assert status.json()["replica"] == name and status.headers[REPLICA_HEADER] == name
        for path in ("/readyz", "/healthz", "/metrics", "/docs.json"):
            assert httpx.get(f"{server.url}{path}", timeout=10).headers[REPLICA_HEADER] == name, path
        answered = call(server, "/score", {"lead": LEAD}, store.api_keys[3])
        assert answered.status_code == 200 and answered.headers[REPLICA_HEADER] == name, answered.text
        invalid = call(server, "/forecast", {"months": 0}, store.api_keys[3])
        assert invalid.status_code == 400 and invalid.headers[REPLICA_HEADER] == name, invalid.text
        refused = call(server, "/score", {"lead": LEAD}, "ncrm_" + "x" * 40)
        assert refused.status_code == 401 and refused.headers[REPLICA_HEADER] == name, refused.text


def test_every_entity_gets_the_same_route_on_every_replica_and_the_challenger_its_weight(
    replicas: tuple[ServerProcess, ServerProcess], store: ServingStore
) -> None:
    a, b = replicas
    status = a.wait_for(canary_is_served)
    b.wait_for(canary_is_served)
    champion = status["models"]["lead_scoring"]["champion"]
    challenger = status["models"]["lead_scoring"]["challenger"]
    leads = {org: [{**LEAD, "lead_id": f"R-{org}-{i}"} for i in range(LEADS_PER_ORG)] for org in CANARY_ORGS}

    def routes(targets: list[ServerProcess], chunk: int) -> dict[tuple[int, str], str]:
        """(organization, lead id) -> route, sending chunks of ``chunk`` leads to ``targets`` in turn."""
        seen: dict[tuple[int, str], str] = {}
        turn = 0
        for org, org_leads in leads.items():
            for start in range(0, len(org_leads), chunk):
                server = targets[turn % len(targets)]
                turn += 1
                response = call(
                    server, "/score", {"leads": org_leads[start : start + chunk]}, store.api_keys[org]
                )
                assert response.status_code == 200, response.text
                for result in response.json()["results"]:
                    version = {"champion": champion, "challenger": challenger}[result["model"]["route"]]
                    assert result["model"]["version"] == version and not result["fallback"], result
                    seen[(org, result["lead_id"])] = result["model"]["route"]
        return seen

    on_a, on_b = routes([a], LEADS_PER_ORG), routes([b], LEADS_PER_ORG)
    balanced = routes([a, b], 25)  # as a round-robin balancer would spread them
    assert len(on_a) == len(CANARY_ORGS) * LEADS_PER_ORG
    assert on_a == on_b == balanced
    expected = {
        (org, lead_id): choose_route(org, lead_id, WEIGHT, has_challenger=True) for org, lead_id in on_a
    }
    assert on_a == expected
    share = Counter(on_a.values())["challenger"] / len(on_a)
    assert abs(share - WEIGHT) <= 0.06, share


def test_a_forecast_computed_on_one_replica_is_a_cache_hit_on_the_other(
    replicas: tuple[ServerProcess, ServerProcess], store: ServingStore, redis_url: str
) -> None:
    a, b = replicas
    months = 7  # no other test asks for it: the first call is a miss
    before_a, before_b = a.status()["forecast_cache"], b.status()["forecast_cache"]
    assert before_a["backend"] == before_b["backend"] == "redis"

    first = call(a, "/forecast", {"months": months}, store.api_keys[1])
    assert first.status_code == 200, first.text
    computed = first.json()
    assert computed["model"]["route"] == "champion" and not computed["fallback"], computed
    after_a = a.status()["forecast_cache"]
    assert (after_a["misses"], after_a["hits"]) == (before_a["misses"] + 1, before_a["hits"])
    key = cache_key(1, f"v{computed['model']['version']}", months)
    assert redis.Redis.from_url(redis_url).exists(key), key

    second = call(b, "/forecast", {"months": months}, store.api_keys[1])
    assert second.status_code == 200, second.text
    after_b = b.status()["forecast_cache"]
    assert (after_b["hits"], after_b["misses"]) == (before_b["hits"] + 1, before_b["misses"]), after_b
    cached = second.json()
    assert cached["model"] == computed["model"]
    assert (cached["points"], cached["weights"]) == (computed["points"], computed["weights"])


def test_both_replicas_log_their_predictions_to_the_one_table_naming_themselves(
    replicas: tuple[ServerProcess, ServerProcess], store: ServingStore
) -> None:
    a, b = replicas
    run = uuid.uuid4().hex[:8]
    sent: dict[str, str] = {}
    for server in (a, b):
        name = server.status()["replica"]
        for path, body in (
            ("/score", {"lead": LEAD}),
            ("/sentiment", {"text": "Great demo"}),
            ("/forecast", {"months": 2}),
        ):
            request_id = f"replicas-{run}-{len(sent)}"
            response = call(server, path, body, store.api_keys[2], request_id)
            assert response.status_code == 200, response.text
            sent[request_id] = name
    engine = store.engine()
    try:
        deadline = time.monotonic() + 30
        while True:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT request_id, replica FROM predictions WHERE request_id LIKE :run"),
                    {"run": f"replicas-{run}-%"},
                ).all()
            if len(rows) >= len(sent) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        with engine.connect() as conn:
            per_replica = dict(
                conn.execute(sa.text("SELECT replica, count(*) FROM predictions GROUP BY replica")).all()
            )
    finally:
        engine.dispose()
    assert {row.request_id: row.replica for row in rows} == sent
    assert len(rows) == len(sent)
    # every prediction either replica made is in the table under its name, none without one
    assert set(per_replica) == set(sent.values()), per_replica
