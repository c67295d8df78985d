"""The serving library on real stores, without HTTP: the prediction log (batches, spill, dead letters,
journals) on SQLite and PostgreSQL, the Redis forecast cache, the tenant directory's key cache, and a
forecast answered from the history in the database while the registry is down."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from serving_fakes import FakeRegistry, forecast_predictor

from neuracrm_mlops.inference.forecast_cache import ForecastCache
from neuracrm_mlops.inference.prediction_log import (
    PredictionJournal,
    PredictionLogWriter,
    insert_isolating,
    prediction_row,
    replay_dead_letters,
    replay_journals,
    replay_spill,
)
from neuracrm_mlops.store.db.schema import MonthlySales, Prediction, PredictionDeadLetter
from neuracrm_mlops.store.orgs import create_organization
from neuracrm_mlops.store.tenancy import Tenant, TenantDirectory

# -- the prediction log ----------------------------------------------------------------------------


def _rows(n: int, request_id: str = "r") -> list[dict[str, Any]]:
    return [
        prediction_row(
            model_name="lead_scoring",
            model_version="1",
            route="champion",
            request_id=f"{request_id}-{i}",
            organization_id=1,
            entity_id=f"lead-{i}",
            features={"industry": "Software"},
            output={"probability": 0.5},
            latency_ms=1.5,
            fallback=False,
        )
        for i in range(n)
    ]


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(Prediction)) or 0)


def test_the_log_writer_batches_rows_into_the_database_and_close_flushes_the_rest(
    engine: sa.Engine, tmp_path: Path
) -> None:
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", flush_seconds=60, batch_rows=100)
    writer.start()
    writer.append(_rows(250))
    writer.close()
    assert _count(engine) == 250 and writer.pending == 0
    assert not (tmp_path / "spill").exists()


def test_rows_the_database_refuses_are_spilled_on_close_and_replayed_later(
    engine: sa.Engine, tmp_path: Path
) -> None:
    dead = sa.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    writer = PredictionLogWriter(
        dead, spill_dir=tmp_path / "spill", journal=None, flush_seconds=0.05, retry_seconds=0.05
    )
    writer.start()
    writer.append(_rows(30))
    writer.close(timeout=1.0)
    spilled = list((tmp_path / "spill").glob("*.jsonl"))
    assert len(spilled) == 1 and len(spilled[0].read_text().splitlines()) == 30
    assert replay_spill(engine, tmp_path / "spill") == 30
    assert _count(engine) == 30 and not list((tmp_path / "spill").glob("*.jsonl"))


def test_a_nul_character_in_a_request_is_logged_not_a_poison_pill(engine: sa.Engine, tmp_path: Path) -> None:
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", flush_seconds=60)
    poisoned = prediction_row(
        model_name="lead_scoring",
        model_version="1",
        route="champion",
        request_id="r-nul",
        organization_id=1,
        entity_id="x\u0000y",
        features={"description": "a\u0000b", "attributes": {"k\u0000": "v"}},
        output={"probability": 0.5},
        latency_ms=1.0,
        fallback=False,
    )
    writer.append([*_rows(5), poisoned, *_rows(5)])
    assert writer.flush() and writer.rejected == 0 and writer.written == 11
    with engine.connect() as conn:
        row = conn.execute(sa.select(Prediction).where(Prediction.request_id == "r-nul")).one()
    assert row.entity_id == "x\ufffdy" and row.features["description"] == "a\ufffdb"
    assert row.features["attributes"] == {"k\ufffd": "v"}
    assert row.storage_note == (
        "U+FFFD for NUL or unpaired surrogate characters in: entity_id, features.description,"
        " features.attributes.k\ufffd (key)"
    )


def test_rows_the_database_refuses_for_their_content_are_set_aside_and_the_rest_written(
    engine: sa.Engine, tmp_path: Path
) -> None:
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", flush_seconds=60, batch_rows=100)
    bad = {**_rows(1)[0], "model_name": None}  # NOT NULL: refused however often it is retried
    writer.append([*_rows(40), bad, *_rows(40)])
    assert writer.flush(timeout=5) and writer.pending == 0
    assert _count(engine) == 80 and (writer.written, writer.rejected) == (80, 1)
    (letter,) = _dead_letters(engine)
    assert letter.row_uid == bad["row_uid"] and "IntegrityError" in letter.reason
    assert json.loads(letter.row)["model_name"] is None and letter.replayed_at is None
    # a spill file with the same bad row replays the good ones and keeps the bad one (once)
    spill = tmp_path / "spill" / "predictions-1-1-abc.jsonl"
    spill.parent.mkdir()
    spill.write_text(
        "\n".join(json.dumps({**r, "created_at": r["created_at"].isoformat()}) for r in [*_rows(3), bad])
    )
    assert replay_spill(engine, tmp_path / "spill") == 3
    assert _count(engine) == 83 and not spill.exists() and len(_dead_letters(engine)) == 1
    assert not list((tmp_path / "spill").glob("predictions-rejected-*.jsonl"))


def test_a_connection_lost_while_isolating_a_bad_row_never_writes_a_row_twice(engine: sa.Engine) -> None:
    rows = [*_rows(4, "a"), {**_rows(1, "bad")[0], "model_name": None}, *_rows(4, "b")]
    inserts = {"n": 0}

    def drop_the_third_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PREDICTIONS"):
            inserts["n"] += 1
            if inserts["n"] == 3:
                raise RuntimeError("connection lost")

    sa.event.listen(engine, "before_cursor_execute", drop_the_third_insert)
    # 1: the whole batch (refused: the bad row), 2: the first half (written), 3: the second half (lost)
    first = insert_isolating(engine, rows)
    sa.event.remove(engine, "before_cursor_execute", drop_the_third_insert)
    assert first.error is not None and first.refused == []
    assert [r["request_id"] for r in first.unwritten] == [r["request_id"] for r in rows[4:]]
    assert _count(engine) == 4
    again = insert_isolating(engine, first.unwritten)
    assert again.error is None and [r["request_id"] for r, _ in again.refused] == ["bad-0"]
    assert _count(engine) == 8  # every good row once


def _dead_letters(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(PredictionDeadLetter).order_by(PredictionDeadLetter.id)).all())


def _row_uids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [str(uid) for uid in conn.scalars(sa.select(Prediction.row_uid))]


def test_unpaired_surrogates_and_non_finite_numbers_are_stored_and_the_row_says_so(
    engine: sa.Engine, tmp_path: Path
) -> None:
    row = prediction_row(
        model_name="lead_scoring",
        model_version="1",
        route="champion",
        request_id="r-odd",
        organization_id=1,
        entity_id="lead-\ud800",  # a JSON body may carry "\ud800"; UTF-8 cannot encode it
        features={"company_revenue": float("inf"), "scores": [1.0, float("nan")]},
        output={"probability": 0.5},
        latency_ms=1.0,
        fallback=False,
    )
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", journal=None)
    writer.append([row, *_rows(3)])
    assert writer.flush() and (writer.written, writer.rejected) == (4, 0)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(Prediction).where(Prediction.request_id == "r-odd")).one()
    assert stored.entity_id == "lead-\ufffd"
    assert stored.features == {"company_revenue": None, "scores": [1.0, None]}
    assert stored.storage_note == (
        "U+FFFD for NUL or unpaired surrogate characters in: entity_id;"
        " null for non-finite numbers in: features.company_revenue, features.scores[1]"
    )
    assert _rows(1)[0]["storage_note"] is None


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # the engine fixture, PostgreSQL only
@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("entity_id", "L" * 200, "value too long for type character varying(128)"),
        ("organization_id", 2**31, "integer out of range"),
    ],
)
def test_a_row_postgresql_refuses_goes_to_the_dead_letters_and_its_neighbours_land(
    engine: sa.Engine, tmp_path: Path, column: str, value: Any, reason: str
) -> None:
    # a caller that does not validate like the HTTP API does (a batch job, a future endpoint)
    bad = {**_rows(1, "bad")[0], column: value}
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", batch_rows=500)
    writer.append([*_rows(60, "a"), bad, *_rows(60, "b")])
    assert writer.flush() and (writer.written, writer.rejected) == (120, 1)
    assert _count(engine) == 120 and bad["row_uid"] not in _row_uids(engine)
    (letter,) = _dead_letters(engine)
    assert (letter.row_uid, letter.model_name) == (bad["row_uid"], "lead_scoring")
    assert reason in letter.reason and "DataError" in letter.reason
    assert json.loads(letter.row)[column] == value and letter.created_at is not None
    assert not (tmp_path / "spill").exists()  # nothing fell back to a file
    # on-call fixes the row and replays it: it lands once, and the letter says when
    with engine.begin() as conn:
        conn.execute(
            sa.update(PredictionDeadLetter).values(
                row=json.dumps({**json.loads(letter.row), column: _rows(1)[0][column]})
            )
        )
    assert replay_dead_letters(engine).landed == [letter.id]
    assert _count(engine) == 121 and bad["row_uid"] in _row_uids(engine)
    assert _dead_letters(engine)[0].replayed_at is not None
    assert replay_dead_letters(engine).landed == []  # replayed letters are not replayed again


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from neuracrm_mlops.store.db.engine import create_engine
from neuracrm_mlops.inference.prediction_log import (
    PredictionJournal, PredictionLogWriter, insert_isolating, prediction_row
)
url, root, committed, total = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
engine = create_engine(url)
journal = PredictionJournal(root / "journal", fsync_seconds=0.05, segment_bytes=20_000)
writer = PredictionLogWriter(engine, spill_dir=root / "spill", journal=journal, flush_seconds=3600)
rows = [
    prediction_row(model_name="lead_scoring", model_version="1", route="champion", request_id=f"k-{i}",
                   organization_id=1, entity_id=f"lead-{i}", features={}, output={"probability": 0.5},
                   latency_ms=1.0, fallback=False)
    for i in range(total)
]
for i in range(0, total, 7):
    writer.append(rows[i : i + 7])
# the crash window: rows committed, the journal not yet told so
assert insert_isolating(engine, rows[:committed]).error is None
print(journal.directory, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_journal_left_by_a_killed_process_is_replayed_once_and_a_torn_last_line_dropped(
    engine: sa.Engine, tmp_path: Path
) -> None:
    import subprocess
    import sys

    url = engine.url.render_as_string(hide_password=False)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, url, str(tmp_path), "150", "400"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    directory = Path(killed.stdout.strip())
    segments = sorted(directory.glob("*.jsonl"))
    assert len(segments) > 1 and sum(len(p.read_text().splitlines()) for p in segments) == 400
    with segments[-1].open("a") as handle:  # the process died inside a write: half a line
        handle.write('{"model_name": "lead_sc')
    assert _count(engine) == 150
    # a live writer's own journal is never replayed by another
    live = PredictionJournal(tmp_path / "journal")
    live.open()
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", journal=live, flush_seconds=0.05)
    writer.start()
    writer.append(_rows(5, "live"))
    assert writer.flush()
    deadline = time.monotonic() + 30
    # the replay removes the journal, then counts what it replayed: wait for both
    while (directory.exists() or writer.replayed < 400) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not directory.exists() and writer.replayed == 400
    assert _count(engine) == 405 and len(set(_row_uids(engine))) == 405
    assert replay_journals(engine, tmp_path / "journal", tmp_path / "spill").live == 1  # the live one
    writer.close()
    assert not list((tmp_path / "journal").iterdir())


def test_the_journal_holds_exactly_the_rows_not_in_the_database_and_empties_when_they_land(
    engine: sa.Engine, tmp_path: Path
) -> None:
    dead = sa.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    journal = PredictionJournal(tmp_path / "journal", fsync_seconds=0, segment_bytes=10_000)
    down = PredictionLogWriter(dead, spill_dir=tmp_path / "spill", journal=journal, retry_seconds=0.01)
    down.append(_rows(100))
    assert not down.flush(timeout=0.2) and down.pending == 100
    assert journal.directory is not None
    lines = [
        json.loads(line)
        for p in sorted(journal.directory.glob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    assert [r["request_id"] for r in lines] == [f"r-{i}" for i in range(100)]
    # a graceful stop with the database down leaves the journal (not a spill file) for the next start
    down.close(timeout=0.2)
    assert not (tmp_path / "spill").exists() and journal.directory is None
    up = PredictionLogWriter(
        engine, spill_dir=tmp_path / "spill", journal=PredictionJournal(tmp_path / "journal")
    )
    assert up.replay_orphans() and up.replayed == 100 and _count(engine) == 100
    # rows that land are released: segments deleted, the current one emptied
    journal = PredictionJournal(tmp_path / "journal", segment_bytes=10_000)
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", journal=journal, batch_rows=50)
    for _ in range(10):
        writer.append(_rows(30))
        assert writer.flush()
        assert journal.health()["bytes"] == 0 and journal.health()["segments"] == 1
    assert _count(engine) == 400
    up.close()
    writer.close()


def test_a_journal_that_cannot_be_written_never_fails_a_request(engine: sa.Engine, tmp_path: Path) -> None:
    (tmp_path / "not-a-directory").write_text("")
    journal = PredictionJournal(tmp_path / "not-a-directory" / "journal")
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", journal=journal)
    writer.append(_rows(3))
    writer.append(_rows(2))
    assert journal.health()["unjournaled_rows"] == 5 and not journal.complete
    assert writer.flush() and _count(engine) == 5


def test_at_its_bound_the_journal_stops_and_a_graceful_stop_spills_every_queued_row(
    engine: sa.Engine, tmp_path: Path
) -> None:
    dead = sa.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    journal = PredictionJournal(tmp_path / "journal", max_bytes=20_000)
    writer = PredictionLogWriter(dead, spill_dir=tmp_path / "spill", journal=journal, retry_seconds=0.01)
    rows = _rows(200)
    for i in range(0, 200, 10):
        writer.append(rows[i : i + 10])
    health = journal.health()
    assert health["full"] and 0 < health["bytes"] <= 20_000 and 0 < health["unjournaled_rows"] < 200
    assert not journal.complete
    writer.close(timeout=0.2)  # the journal does not hold every row: all of them go to a spill file
    (spill,) = (tmp_path / "spill").glob("predictions-*.jsonl")
    assert len(spill.read_text().splitlines()) == 200 and not list((tmp_path / "journal").iterdir())
    assert replay_spill(engine, tmp_path / "spill") == 200 and _count(engine) == 200


def test_the_redis_cache_is_shared_and_a_dead_redis_only_means_misses() -> None:
    import uuid

    key = f"neuracrm:test:{uuid.uuid4().hex}"
    writer, reader = ForecastCache("redis://127.0.0.1:6379/15"), ForecastCache("redis://127.0.0.1:6379/15")
    writer.put(key, {"points": [3]})
    assert reader.get(key) == {"points": [3]} and reader.backend == "redis"
    dead = ForecastCache("redis://127.0.0.1:1/0", backoff_seconds=60)
    dead.put(key, {"points": [3]})
    assert dead.get(key) is None and dead.get(key) is None
    assert dead.redis_errors == 1  # after the first failure Redis is left alone for the backoff


def test_tenant_keys_are_cached_bounded_least_recently_used_first_including_unknown_keys(
    engine: sa.Engine,
) -> None:
    keys = []
    with engine.begin() as conn:
        for name in ("A", "B", "C"):
            keys.append(create_organization(conn, name)[1])
    directory = TenantDirectory(engine, max_entries=2, unknown_ttl_seconds=60)
    first = directory.lookup(keys[0])
    assert first is not None and first.name == "A"
    assert directory.lookup("nk_not-a-key") is None
    assert directory.cached("nk_not-a-key") == (True, None)  # the negative answer is cached too
    directory.cached(keys[0])  # A is now the most recently used
    directory.lookup(keys[1])  # the cache is full: the unknown key, least recently used, goes
    assert len(directory) == 2
    assert directory.cached("nk_not-a-key") == (False, None)
    assert directory.cached(keys[0])[0] and directory.cached(keys[1])[0]
    assert directory.database.ok and directory.database.last_success_at is not None


def test_with_the_registry_down_a_forecast_answers_the_flagged_seasonal_naive_from_history(
    engine: sa.Engine, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        org = create_organization(conn, "Shop")[0].id
        conn.execute(
            sa.insert(MonthlySales),
            [
                {
                    "organization_id": org,
                    "month": dt.date(2023 + m // 12, m % 12 + 1, 1),
                    "revenue": 1000.0 + 10 * m,
                    "attributes": {},
                    "content_hash": f"h{m}",
                }
                for m in range(24)
            ],
        )
    fake = FakeRegistry()
    fake.down = True
    predictor = forecast_predictor(engine, fake, tmp_path)
    try:
        answer = predictor.forecast(Tenant(org, "Shop", True), 3)
        assert answer.fallback and answer.model.name == "seasonal_naive" and answer.model.route == "fallback"
        assert f"no forecast model is loaded for organization {org}" in (answer.fallback_reason or "")
        assert "model registry cannot be reached" in (answer.fallback_reason or "")
        assert len(answer.output["points"]) == 3
        dependencies = predictor.health()["dependencies"]
        assert dependencies["model_registry"]["ok"] is False
        assert "registry unreachable" in dependencies["model_registry"]["last_error"]
        assert dependencies["database"]["ok"] is True and dependencies["redis"] == {"configured": False}
    finally:
        predictor.live.stop()
