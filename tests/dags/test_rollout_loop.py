"""The whole safety loop for real: `airflow dags test` runs of rollout_model and monitor_models, a real
MLflow registry, PostgreSQL, and `bentoml serve` answering traffic while the canary bakes.

1. v1 and v2 (copies of one trained version) are promoted by hand: v2 champion, v1 `previous`;
2. v3 (worse on live outcomes) fails its canary: weight 0, tagged rejected, an alert, v2 stays;
3. v2's live outcomes degrade below 80%: the monitor rolls back to v1, the service serves v1 within
   its poll interval, exactly one critical alert after repeated runs, retraining is triggered;
4. the ledger shows every step with its reason.
The promotion path through every canary step is the demo's (tests/dags/test_demo.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from airflow_harness import AirflowHarness
from pg_databases import create_pg_database, drop_pg_database
from serving_support import ServerProcess, ServingStore, environment

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LEAD = {
    "industry": "Software",
    "company_employees": 250,
    "email_opens": 6,
    "website_visits": 9,
    "seniority": "vp",
    "timeline": "this_quarter",
    "budget_signal": "approved",
    "region": "emea",
}
MIN_OUTCOMES = "30"


@pytest.fixture(scope="module")
def loop_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStore]:
    home = tmp_path_factory.mktemp("loop") / "home"
    db_url = create_pg_database()
    env = {
        "NEURACRM_HOME": str(home),
        "NEURACRM_DB_URL": db_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.sqlite'}",
        "NEURACRM_MODEL_POLL_SECONDS": "1",
        "NEURACRM_MIN_OUTCOMES": MIN_OUTCOMES,
        "NEURACRM_BAKE_POKE_SECONDS": "1",
        "NEURACRM_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/unreachable",  # a webhook that is down
        "NEURACRM_ALERT_WEBHOOK_RETRIES": "2",
        "NEURACRM_ALERT_WEBHOOK_BACKOFF_SECONDS": "0",
    }
    store = ServingStore(home, env)
    with environment(env):
        from neuracrm_mlops.db.engine import get_engine
        from neuracrm_mlops.db.migrate import upgrade
        from neuracrm_mlops.seeding import seed_database

        engine = get_engine()
        upgrade(engine)
        seed_database(25, 24, 5, leads_per_org=120, engine=engine, api_keys_file=home / "api_keys.csv")
    store.load_api_keys()
    yield store
    drop_pg_database(db_url)


def train_version(store: ServingStore) -> str:
    with environment(store.env):
        from neuracrm_mlops.training import Lineage, train_lead_scoring

        outcome = train_lead_scoring(Lineage.for_cli(f"lead_scoring {uuid.uuid4().hex[:8]}"))
        assert outcome.status == "challenger" and outcome.version, outcome
        return outcome.version


class Traffic:
    """Leads scored over HTTP and outcomes simulated for them, until stopped."""

    def __init__(self, server: ServerProcess, store: ServingStore, degrade: tuple[str, ...] = ()) -> None:
        self.server, self.store, self.degrade = server, store, degrade
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)

    def _run(self) -> None:
        from neuracrm_mlops.db.engine import create_engine
        from neuracrm_mlops.outcomes import simulate_outcomes

        engine = create_engine(self.store.env["NEURACRM_DB_URL"])
        key = self.store.api_keys[1]
        try:
            with httpx.Client(timeout=30) as client:
                while not self.stop.is_set():
                    leads = [{**LEAD, "lead_id": f"L-{uuid.uuid4().hex[:12]}"} for _ in range(100)]
                    response = client.post(
                        f"{self.server.url}/score",
                        json={"leads": leads},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    self.statuses.append(response.status_code)
                    time.sleep(0.8)  # the prediction log flushes every 0.5 s
                    simulate_outcomes(engine, "lead_scoring", agree=1.0, degrade=self.degrade)
        except Exception as exc:  # reported by the test, not swallowed
            self.errors.append(repr(exc))
        finally:
            engine.dispose()


def wait_until_accuracy_below(store: ServingStore, version: str, level: float, timeout: float = 180) -> None:
    import datetime as dt

    from neuracrm_mlops.db.engine import create_engine
    from neuracrm_mlops.live_stats import version_stats

    engine = create_engine(store.env["NEURACRM_DB_URL"])
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    deadline = time.monotonic() + timeout
    try:
        while True:
            stats = version_stats(engine, "lead_scoring", [version], since=since)[version]
            if stats.accuracy is not None and stats.accuracy < level:
                return
            assert time.monotonic() < deadline, f"v{version} still at {stats}"
            time.sleep(2)
    finally:
        engine.dispose()


def run(airflow: AirflowHarness, store: ServingStore, dag_id: str, **extra_env: str) -> str:
    env = airflow.env(store.home, **{**store.env, **extra_env})
    state, log = airflow.run_dag(dag_id, env, timeout=600)
    assert state == "success", log[-6000:]
    return log


def aliases(store: ServingStore) -> dict[str, str]:
    model = store.mlflow().get_registered_model("lead_scoring")
    return {a: str(v) for a, v in model.aliases.items()}


def ledger_rows(store: ServingStore) -> list[Any]:
    engine = store.engine()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT action, from_version, to_version, weight, reason, actor FROM promotion_ledger"
                " WHERE model_name = 'lead_scoring' ORDER BY id"
            )
        ).all()
    engine.dispose()
    return list(rows)


def alerts_of(store: ServingStore, kind: str) -> list[Any]:
    engine = store.engine()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, severity, occurrences, model_version, action_taken, delivery_status"
                " FROM alerts WHERE kind = :kind ORDER BY id"
            ),
            {"kind": kind},
        ).all()
    engine.dispose()
    return list(rows)


def promote_through_library(store: ServingStore, version: str) -> None:
    """Make ``version`` champion as an operator would by hand (the demo's test runs the DAG path)."""
    with environment(store.env):
        from neuracrm_mlops import rollout

        store.mlflow().set_registered_model_alias("lead_scoring", "challenger", version)
        started = rollout.start_rollout("lead_scoring", actor="test:setup")
        if started.action != "promote":  # a champion exists: a canary started; promote it by hand
            rollout.promote("lead_scoring", actor="test:setup", reason="set-up for the loop test")


def test_failed_canary_and_automatic_rollback_through_real_dag_runs(
    airflow: AirflowHarness, loop_env: ServingStore
) -> None:
    """The promotion path (10% -> 50% -> 100% under traffic) is `tests/dags/test_demo.py`; here the
    paths that end in a rejection or a rollback, from v1 (previous) and v2 (champion), both copies of
    one trained version."""
    store = loop_env
    v1 = train_version(store)
    promote_through_library(store, v1)
    v2 = store.copy_version("lead_scoring", v1)
    promote_through_library(store, v2)
    assert aliases(store) == {"champion": v2, "previous": v1}

    server = ServerProcess(store)
    try:
        server.wait_ready()
        # v3 is worse on live outcomes: its canary fails at the first step
        v3 = store.copy_version("lead_scoring", v1)
        store.mlflow().set_registered_model_alias("lead_scoring", "challenger", v3)
        with Traffic(server, store, degrade=(v3,)):
            run(airflow, store, "rollout_model")
        assert aliases(store) == {"champion": v2, "previous": v1}
        version = store.mlflow().get_model_version("lead_scoring", v3)
        assert version.tags["status"] == "rejected" and "accuracy" in version.tags["reason"]
        failed = alerts_of(store, "canary_failed")
        assert [a.model_version for a in failed] == [v3]
        assert failed[0].delivery_status == "failed"  # the webhook is down and nothing broke

        # v2's live outcomes degrade until its accuracy over the monitoring window is below 0.80
        # (its good canary outcomes are in the window too): the monitor rolls back to v1
        with Traffic(server, store, degrade=(v2,)):
            wait_until_accuracy_below(store, v2, 0.78)
        log = run(airflow, store, "monitor_models")
        assert "retrain_lead_scoring" in log
        assert aliases(store)["champion"] == v1
        server.wait_for(lambda s: s["models"]["lead_scoring"]["champion"] == v1, timeout=15)
        run(airflow, store, "monitor_models")
        critical = alerts_of(store, "accuracy_below_floor")
        assert len(critical) == 1 and critical[0].severity == "critical"
        assert critical[0].model_version == v2 and "rolled back" in critical[0].action_taken
        response = httpx.post(
            f"{server.url}/score",
            json={"lead": LEAD},
            headers={"Authorization": f"Bearer {store.api_keys[1]}"},
            timeout=30,
        )
        assert response.json()["results"][0]["model"]["version"] == v1
    finally:
        server.stop()

    # the ledger tells the story, each step with its reason
    rows = ledger_rows(store)
    story = [(r.action, r.from_version, r.to_version, r.weight) for r in rows if r.action != "hold"]
    assert story == [
        ("promote", None, v1, 0.0),
        ("canary", v1, v2, 0.1),
        ("promote", v1, v2, 0.0),
        ("canary", v2, v3, 0.1),
        ("reject", v3, None, 0.0),
        ("rollback", v2, v1, 0.0),
    ]
    assert all(r.reason for r in rows)
    assert all(r.actor.startswith("dag:") for r in rows if r.actor != "test:setup")
    assert [r.action for r in rows if r.actor == "test:setup"] == ["promote", "canary", "promote"]
    runs = airflow.list_runs(store.env, "train_lead_scoring")
    assert runs, "retraining was not triggered"
