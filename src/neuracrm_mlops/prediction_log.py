"""The durable prediction log: every served prediction becomes a row of ``predictions``.

Requests only append to an in-memory queue; a background thread writes batches (every
``flush_seconds`` or ``batch_rows`` rows, whichever comes first) in one transaction each. When the
database cannot be reached the rows stay queued and the write is retried; ``close()`` (called on a
graceful shutdown) flushes what is left, and if the database is still unreachable then, the rows are
written to a JSON-lines spill file under ``NEURACRM_HOME/prediction-spill/`` that ``replay_spill``
loads at the next start. Nothing is dropped.

No row can stop the log for everyone: NUL characters (which PostgreSQL refuses in text and JSON) are
replaced by U+FFFD when a row is made, and when the database refuses a batch for its content (a
``DataError``/``IntegrityError``, not a lost connection) the batch is split until the refused rows are
found; they go to a ``predictions-rejected-*.jsonl`` file with the database's reason and the other
rows are written. ``replay_spill`` does the same, so one bad spilled row never blocks the good ones.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.db.schema import Prediction

log = logging.getLogger(__name__)

COLUMNS = (
    "created_at",
    "model_name",
    "model_version",
    "route",
    "request_id",
    "organization_id",
    "entity_id",
    "features",
    "output",
    "latency_ms",
    "fallback",
    "error",
)


NUL_REPLACEMENT = "\ufffd"


def storable(value: Any) -> Any:
    """``value`` with every NUL character in its strings (keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def refused_for_content(exc: BaseException) -> bool:
    """Whether the database (or the driver) refused the rows themselves, so that retrying cannot help,
    as opposed to a lost connection or a database that is down."""
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):  # OperationalError, InterfaceError, ...: retry later
        return False
    cause = exc.orig if isinstance(exc, sa.exc.StatementError) else exc
    return isinstance(cause, ValueError | TypeError)


@dataclass
class IsolatedInsert:
    """What ``insert_isolating`` did: rows refused for their content (with the reason), and the rows
    not written because the database became unreachable (``error``), in their order."""

    refused: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    unwritten: list[dict[str, Any]] = field(default_factory=list)
    error: Exception | None = None


def insert_isolating(engine: sa.Engine, rows: list[dict[str, Any]]) -> IsolatedInsert:
    """Insert ``rows``; when the database refuses some for their content, split until they are found.

    The other rows are written, each part in its own transaction. When the connection fails instead,
    it stops and returns the rows not written yet (never ones already written: no duplicates)."""
    result = IsolatedInsert()
    parts = [rows] if rows else []
    while parts:
        part = parts.pop(0)
        try:
            with engine.begin() as conn:
                conn.execute(sa.insert(Prediction), part)
        except Exception as exc:
            if not refused_for_content(exc):
                result.unwritten = [row for p in (part, *parts) for row in p]
                result.error = exc
                return result
            if len(part) == 1:
                result.refused.append((part[0], f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
            else:
                middle = len(part) // 2
                parts[0:0] = [part[:middle], part[middle:]]
    return result


def _jsonable_row(row: dict[str, Any]) -> dict[str, Any]:
    created = row.get("created_at")
    return {**row, "created_at": created.isoformat() if isinstance(created, dt.datetime) else created}


def write_rejected(spill_dir: Path, refused: list[tuple[dict[str, Any], str]]) -> Path:
    """The refused rows and why, as JSON lines (kept for inspection, never replayed)."""
    spill_dir.mkdir(parents=True, exist_ok=True)
    name = f"predictions-rejected-{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
    path = spill_dir / name
    with path.open("w", encoding="utf-8") as handle:
        for row, reason in refused:
            handle.write(json.dumps({"reason": reason, "row": _jsonable_row(row)}, default=str) + "\n")
    log.error(
        "the database refused %d prediction rows for their content; kept them in %s", len(refused), path
    )
    return path


def prediction_row(
    *,
    model_name: str,
    model_version: str | None,
    route: str,
    request_id: str,
    organization_id: int | None,
    entity_id: str | None,
    features: dict[str, Any],
    output: dict[str, Any],
    latency_ms: float,
    fallback: bool,
    error: str | None = None,
    created_at: dt.datetime | None = None,
) -> dict[str, Any]:
    return {
        "created_at": created_at or dt.datetime.now(dt.UTC),
        "model_name": model_name,
        "model_version": model_version,
        "route": route,
        "request_id": storable(request_id),
        "organization_id": organization_id,
        "entity_id": storable(entity_id),
        "features": storable(features),
        "output": storable(output),
        "latency_ms": round(latency_ms, 3),
        "fallback": fallback,
        "error": storable(error),
    }


class PredictionLogWriter:
    """Batches prediction rows off the request path into the ``predictions`` table."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        spill_dir: Path,
        flush_seconds: float = 0.5,
        batch_rows: int = 1_000,
        retry_seconds: float = 2.0,
    ) -> None:
        self._engine = engine
        self.spill_dir = spill_dir
        self._flush_seconds = flush_seconds
        self._batch_rows = batch_rows
        self._retry_seconds = retry_seconds
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self.written = 0
        self.failed_writes = 0
        self.rejected = 0  # rows the database refused for their content (kept in a rejected file)
        self.last_error: str | None = None

    # -- request path ----------------------------------------------------------------------------
    def append(self, rows: list[dict[str, Any]]) -> None:
        self._queue.extend(rows)
        if len(self._queue) >= self._batch_rows:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue) + self._in_flight

    # -- background ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="neuracrm-prediction-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            if not self._write_pending():
                self._stopping.wait(self._retry_seconds)

    def _take(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while self._queue and len(rows) < self._batch_rows:
            rows.append(self._queue.popleft())
        self._in_flight = len(rows)
        return rows

    def _write_pending(self) -> bool:
        """Write everything queued; False (rows put back, in order) when the database refused."""
        while self._queue:
            rows = self._take()
            result = insert_isolating(self._engine, rows)
            self._in_flight = 0
            if result.refused:
                write_rejected(self.spill_dir, result.refused)
                self.rejected += len(result.refused)
            self.written += len(rows) - len(result.refused) - len(result.unwritten)
            if result.error is not None:
                self._queue.extendleft(reversed(result.unwritten))
                self.failed_writes += 1
                message = f"{type(result.error).__name__}: {str(result.error).splitlines()[0]}"
                if message != self.last_error:
                    log.error(
                        "cannot write %d prediction rows, will retry: %s", len(result.unwritten), message
                    )
                self.last_error = message
                return False
            self.last_error = None
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Write what is queued now (from the caller's thread); True when the queue is empty."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            if not self._write_pending():
                time.sleep(min(0.2, self._retry_seconds))
        return not self._queue

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and flush; rows the database still refuses go to the spill file."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.flush(timeout):
            return
        path = self._spill(list(self._queue))
        self._queue.clear()
        log.error("the database refused the last prediction rows; kept them in %s", path)

    def _spill(self, rows: list[dict[str, Any]]) -> Path:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"predictions-{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(_jsonable_row(row), default=str) + "\n")
        return path


def replay_spill(engine: sa.Engine, spill_dir: Path) -> int:
    """Load spilled prediction rows into the database (at service start); returns how many.

    Rows the database refuses for their content go to a ``predictions-rejected-*`` file (with the
    reason) instead of blocking the others; a file is removed once every row is written or kept."""
    if not spill_dir.is_dir():
        return 0
    total = 0
    for path in sorted(spill_dir.glob("predictions-*.jsonl")):
        if path.name.startswith("predictions-rejected-"):
            continue
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = storable(json.loads(line))
                row["created_at"] = dt.datetime.fromisoformat(row["created_at"])
                rows.append(row)
        result = insert_isolating(engine, rows)
        if result.refused:
            write_rejected(spill_dir, result.refused)
        if result.error is not None:  # keep what was not written for the next start, then report
            with path.open("w", encoding="utf-8") as handle:
                for row in result.unwritten:
                    handle.write(json.dumps(_jsonable_row(row), default=str) + "\n")
            raise result.error
        path.unlink()
        written = len(rows) - len(result.refused)
        total += written
        log.info("replayed %d spilled prediction rows from %s", written, path.name)
    return total
