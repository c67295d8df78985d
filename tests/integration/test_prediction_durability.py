"""The prediction log under faults, for real: `bentoml serve` on PostgreSQL, killed with SIGKILL, its
database made unreachable, fed NUL characters.

The service here has no trained model registered: the built-in rule scorer and VADER answer (flagged
fallbacks), and every answer is logged like any other. Each test runs its servers on a home of its
own, so one test's journals are never replayed by another's server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pg_databases import PG_ADMIN_URL, create_pg_database, drop_pg_database
from serving_support import (
    KillableServer,
    ServingStore,
    environment,
    listeners,
    port_is_free,
    process_alive,
)

# one store for the module, servers killed and restarted on one port: one worker
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("prediction_durability")]

LEAD = {"industry": "Software", "company_employees": 250, "email_opens": 6, "seniority": "vp"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStore]:
    """3 seeded organizations on PostgreSQL and an empty MLflow registry."""
    home = tmp_path_factory.mktemp("durability") / "home"
    db_url = create_pg_database()
    env = {
        "NEURACRM_HOME": str(home),
        "NEURACRM_DB_URL": db_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.sqlite'}",
        "NEURACRM_MODEL_POLL_SECONDS": "2",
    }
    store = ServingStore(home, env)
    with environment(env):
        from neuracrm_mlops.store.db.engine import get_engine
        from neuracrm_mlops.store.db.migrate import upgrade
        from neuracrm_mlops.store.seeding import seed_database

        engine = get_engine()
        upgrade(engine)
        seed_database(3, 12, 5, leads_per_org=5, engine=engine, api_keys_file=home / "api_keys.csv")
    store.load_api_keys()
    yield store
    drop_pg_database(db_url)


def start(store: ServingStore, home: Path, *, port: int | None = None, **env: str) -> KillableServer:
    server = KillableServer(store, port=port, NEURACRM_HOME=str(home), **env)
    server.wait_ready()
    return server


def post(
    client: httpx.Client, server: KillableServer, key: str, request_id: str, path: str, body: Any
) -> httpx.Response:
    return client.post(
        f"{server.url}{path}",
        content=json.dumps(body),
        headers={
            "Authorization": f"Bearer {key}",
            "X-Request-ID": request_id,
            "Content-Type": "application/json",
        },
        timeout=30,
    )


def one_prediction(i: int) -> tuple[str, dict[str, Any]]:
    """A request that is answered with exactly one logged row."""
    if i % 2:
        return "/sentiment", {"text": f"thanks, the pilot went well ({i})"}
    return "/score", {"lead": {**LEAD, "lead_id": f"lead-{i}"}}


def logged(store: ServingStore, prefix: str) -> Counter[str]:
    """Rows in ``predictions`` per request id starting with ``prefix``."""
    engine = store.engine()
    try:
        with engine.connect() as conn:
            ids = conn.scalars(
                sa.text("SELECT request_id FROM predictions WHERE request_id LIKE :p"), {"p": f"{prefix}%"}
            ).all()
    finally:
        engine.dispose()
    return Counter(ids)


def journal_lines(home: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (home / "prediction-journal").glob("*/*.jsonl"))


def journals(home: Path) -> set[str]:
    root = home / "prediction-journal"
    return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


@dataclass
class Traffic:
    """Threads sending one-row predictions until stopped: which were answered 200, which were sent and
    got no answer (the connection failed, e.g. the service was killed meanwhile)."""

    server: KillableServer
    key: str
    prefix: str
    threads: int = 4
    answered: set[str] = field(default_factory=set)
    unanswered: set[str] = field(default_factory=set)
    other_status: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    running: threading.Event = field(default_factory=threading.Event)  # cleared: paused between requests
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        self.running.set()
        for t in range(self.threads):
            worker = threading.Thread(target=self._send, args=(t,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _send(self, thread: int) -> None:
        with httpx.Client() as client:
            i = 0
            while not self.stop.is_set():
                self.running.wait()
                if self.stop.is_set():
                    return
                request_id = f"{self.prefix}-{thread}-{i}"
                path, body = one_prediction(i)
                i += 1
                try:
                    response = post(client, self.server, self.key, request_id, path, body)
                except httpx.HTTPError:
                    with self._lock:
                        self.unanswered.add(request_id)
                    if self.stop.wait(0.05):
                        return
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.answered.add(request_id)
                    else:
                        self.other_status.append(response.status_code)

    def pause(self) -> None:
        """Stop sending new requests (those in flight are still answered)."""
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def finish(self) -> None:
        self.stop.set()
        self.running.set()
        for worker in self._workers:
            worker.join(60)


# -- poison --------------------------------------------------------------------------------------


def test_a_nul_request_is_answered_and_every_later_prediction_still_lands(
    store: ServingStore, tmp_path: Path
) -> None:
    server = start(store, tmp_path / "home")
    key = store.api_keys[1]
    try:
        with httpx.Client() as client:
            poisoned = [
                ("/score", {"lead": {**LEAD, "lead_id": "x\u0000y", "description": "quote\u0000pilot"}}),
                ("/sentiment", {"text": "great\u0000product", "interaction_id": "i\u0000d"}),
            ]
            for i, (path, body) in enumerate(poisoned):
                response = post(client, server, key, f"poison-bad-{i}", path, body)
                assert response.status_code == 200, response.text
            for i in range(30):
                response = post(client, server, key, f"poison-after-{i}", *one_prediction(i))
                assert response.status_code == 200, response.text
        status = server.wait_for(lambda s: s["prediction_log"]["pending"] == 0)
        assert status["prediction_log"]["last_error"] is None
    finally:
        server.stop()
    assert logged(store, "poison-after-") == Counter({f"poison-after-{i}": 1 for i in range(30)})
    engine = store.engine()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT request_id, entity_id, features, storage_note FROM predictions"
                " WHERE request_id LIKE 'poison-bad-%' ORDER BY request_id"
            )
        ).all()
        dead_letters = conn.scalar(sa.text("SELECT count(*) FROM prediction_dead_letters"))
    engine.dispose()
    assert [r.entity_id for r in rows] == ["x\ufffdy", "i\ufffdd"]
    assert rows[0].features["description"] == "quote\ufffdpilot"
    assert all(r.storage_note and r.storage_note.startswith("U+FFFD for NUL") for r in rows)
    assert dead_letters == 0


# -- crashes -------------------------------------------------------------------------------------


def test_kill_9_of_the_service_under_traffic_loses_no_answered_prediction_and_duplicates_none(
    store: ServingStore, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # no timed flush: the writer writes when 1,000 rows are queued (and drains the queue then), so at
    # the kill the first 1,000 or more rows are in the database and the last 200 or more only in the
    # journal: the replay must skip the first and write the others
    server = start(store, home, NEURACRM_PREDICTION_LOG_FLUSH_SECONDS="600")
    traffic = Traffic(server, store.api_keys[2], "kill9").start()
    try:
        wait_until(lambda: len(traffic.answered) >= 1_300, 300, "1,300 answered requests")
        # the first size-triggered write has committed (on a busy machine it may still be running when
        # 1,300 are answered): the count is at least 1,000 and holds still for a second. Traffic pauses
        # meanwhile: on a busy machine that second let 1,000 more rows queue (seen here), and their
        # write would leave nothing in the journal alone
        traffic.pause()
        counts: list[int] = []

        def first_write_committed() -> bool:
            counts.append(sum(logged(store, "kill9-").values()))
            return counts[-1] >= 1_000 and counts[-6:].count(counts[-1]) == 6

        wait_until(first_write_committed, 300, "the first write of 1,000 or more rows")
        committed = counts[-1]
        traffic.resume()

        def journaled_only() -> bool:  # 200 more answered, well short of the next write (1,000 more)
            if len(traffic.answered) < committed + 200:
                return False
            traffic.pause()
            return True

        wait_until(journaled_only, 300, "200 more answered requests")
        killed_journals = journals(home)
        traffic.resume()  # the kill lands under traffic: requests in flight get no answer
        time.sleep(0.05)
        server.kill_all()
    finally:
        traffic.finish()
        server.kill_leftovers()
    answered = set(traffic.answered)
    before_restart = set(logged(store, "kill9-"))
    assert traffic.other_status == [] and killed_journals
    assert len(before_restart) >= 1_000 and len(answered - before_restart) >= 100
    restarted = start(store, home, port=server.port)
    try:
        wait_until(lambda: not journals(home) & killed_journals, 120, "the replay of the killed journal")
        after = logged(store, "kill9-")
    finally:
        restarted.stop()
    assert all(count == 1 for count in after.values()), "a row was written twice"
    assert answered <= set(after), f"{len(answered - set(after))} answered predictions were lost"
    # beyond the answered ones, only requests the service was killed in the middle of (journaled, the
    # answer never left): at most one per client thread
    in_flight = set(after) - answered
    assert in_flight <= traffic.unanswered and len(in_flight) <= traffic.threads
    assert sum(after[r] for r in answered) == len(answered)


def test_kill_9_of_the_supervisor_ends_its_worker_and_frees_the_port(
    store: ServingStore, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    server = start(store, home)
    workers: list[int] = []
    try:
        with httpx.Client() as client:
            for i in range(10):
                assert (
                    post(client, server, store.api_keys[1], f"orphan-{i}", *one_prediction(i)).status_code
                    == 200
                )
        workers = server.worker_pids()
        assert workers, "bentoml serve has no worker process"
        server.kill_supervisor()
        wait_until(lambda: not any(process_alive(pid) for pid in workers), 20, "the orphaned workers' exit")
        # the listening socket closes with the last process holding it (on a busy machine not always by
        # the time the worker reads as ended); a port still taken after 10 s fails with its holders
        deadline = time.monotonic() + 10
        while not port_is_free(server.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert port_is_free(server.port), listeners(server.port)
    finally:
        server.kill_leftovers()
        for pid in workers:  # a failed test leaves no orphan either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    restarted = start(store, home, port=server.port)
    try:
        with httpx.Client() as client:
            assert (
                post(client, restarted, store.api_keys[1], "orphan-after", *one_prediction(0)).status_code
                == 200
            )
        restarted.wait_for(lambda s: s["prediction_log"]["pending"] == 0)
    finally:
        restarted.stop()
    # the orphan flushed its rows before it ended (or the restart replayed its journal): none lost
    assert logged(store, "orphan-") == Counter({**{f"orphan-{i}": 1 for i in range(10)}, "orphan-after": 1})


# -- the database down -----------------------------------------------------------------------------


def set_database_reachable(store: ServingStore, reachable: bool) -> None:
    """Let PostgreSQL accept connections to the store's database, or refuse them and end every open one
    (as when the database is down for the service; the server itself keeps running)."""
    name = sa.make_url(store.env["NEURACRM_DB_URL"]).database
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(reachable).lower()}'))
            if not reachable:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
    finally:
        admin.dispose()


def test_predictions_answered_while_the_database_is_down_are_journaled_and_land_when_it_is_back(
    store: ServingStore, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    server = start(store, home, NEURACRM_PREDICTION_LOG_FLUSH_SECONDS="0.2")
    key = store.api_keys[3]
    try:
        with httpx.Client() as client:
            assert (
                post(client, server, key, "outage-warm", *one_prediction(0)).status_code == 200
            )  # key cached
            server.wait_for(lambda s: s["prediction_log"]["pending"] == 0)
            # 1. down, then back while the service runs: the rows land on reconnect
            set_database_reachable(store, False)
            try:
                for i in range(40):
                    response = post(client, server, key, f"outage-a-{i}", *one_prediction(i))
                    assert response.status_code == 200, response.text
                server.wait_for(lambda s: s["prediction_log"]["last_error"] is not None)
                assert journal_lines(home) >= 40
            finally:
                set_database_reachable(store, True)
            status = server.wait_for(lambda s: s["prediction_log"]["pending"] == 0, timeout=60)
            assert status["prediction_log"]["last_error"] is None
            assert logged(store, "outage-a-") == Counter({f"outage-a-{i}": 1 for i in range(40)})
            # 2. down, and the service is killed before the database is back: the restart replays
            set_database_reachable(store, False)
            try:
                for i in range(40):
                    response = post(client, server, key, f"outage-b-{i}", *one_prediction(i))
                    assert response.status_code == 200, response.text
                killed_journals = journals(home)
                server.kill_all()
            finally:
                set_database_reachable(store, True)
    finally:
        server.kill_leftovers()
    assert logged(store, "outage-b-") == Counter()
    restarted = start(store, home, port=server.port)
    try:
        wait_until(lambda: not journals(home) & killed_journals, 120, "the replay of the killed journal")
    finally:
        restarted.stop()
    assert logged(store, "outage-b-") == Counter({f"outage-b-{i}": 1 for i in range(40)})
