"""The durable prediction log: every served prediction becomes a row of ``predictions``.

Requests only append to an in-memory queue; a background thread writes batches (every
``flush_seconds`` or ``batch_rows`` rows, whichever comes first) in one transaction each. When the
database cannot be reached the rows stay queued and the write is retried.

**Nothing answered is lost.** Before ``PredictionLogWriter.append`` returns (the service calls it
before the answer leaves), the rows are written to this process's journal
(``PredictionJournal``: ``NEURACRM_HOME/prediction-journal/<pid>-<random>/``, append-only JSON lines,
fsynced every ``NEURACRM_PREDICTION_JOURNAL_FSYNC_SECONDS``). Journal segments are deleted once
their rows are in the database. A process killed with ``kill -9`` leaves its journal behind, unlocked
(the journal holds an ``flock`` while its process lives): the next writer to start, or to reconnect
after an outage, replays it. Each row carries a unique ``row_uid`` and is inserted with ON CONFLICT DO
NOTHING, so rows already committed before the crash are not written twice. A graceful stop with the
database down leaves the journal for the next start too (or, with the journal off or full, writes the
rows to a spill file under ``NEURACRM_HOME/prediction-spill/``, replayed the same way).

**No row can stop the log for everyone.** Values are made storable when a row is made: NUL and
unpaired surrogate characters (PostgreSQL, and UTF-8, refuse them) become U+FFFD and non-finite
numbers in the JSON columns become null, and the row's ``storage_note`` says what was changed. When
the database still refuses a batch for its content (a ``DataError``/``IntegrityError``, not a lost
connection) the batch is split until the refused rows are found; they go to the
``prediction_dead_letters`` table with the database's reason and their neighbours are written. Only
when the dead-letter table cannot be written either do they go to a ``predictions-rejected-*.jsonl``
file in the spill directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from neuracrm_mlops.store.db.schema import Prediction, PredictionDeadLetter

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
    "row_uid",
    "storage_note",
    "replica",
)


NUL_REPLACEMENT = "\ufffd"
_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
MAX_NOTED_PATHS = 20


@dataclass
class StorableChanges:
    """Where ``make_storable`` changed a value: characters replaced, non-finite numbers nulled."""

    replaced_characters: list[str] = field(default_factory=list)
    nulled_numbers: list[str] = field(default_factory=list)

    def note(self) -> str | None:
        """The row's ``storage_note`` (None: nothing was changed)."""
        parts = []
        if self.replaced_characters:
            parts.append(
                "U+FFFD for NUL or unpaired surrogate characters in: " + _paths(self.replaced_characters)
            )
        if self.nulled_numbers:
            parts.append("null for non-finite numbers in: " + _paths(self.nulled_numbers))
        return "; ".join(parts) or None


def _paths(paths: list[str]) -> str:
    shown = ", ".join(paths[:MAX_NOTED_PATHS])
    return shown + (f" (and {len(paths) - MAX_NOTED_PATHS} more)" if len(paths) > MAX_NOTED_PATHS else "")


def _storable_text(text: str) -> str:
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE_CHARACTERS.sub(NUL_REPLACEMENT, text)


def make_storable(value: Any, changes: StorableChanges | None = None, path: str = "") -> Any:
    """``value`` as every store accepts it: NUL and unpaired surrogate characters in its strings (keys
    included) replaced by U+FFFD, non-finite floats (JSON has no NaN or Infinity) replaced by None.
    What was changed is added to ``changes`` by path (``features.description``)."""
    if isinstance(value, str):
        fixed = _storable_text(value)
        if changes is not None and fixed is not value and fixed != value:
            changes.replaced_characters.append(path or "value")
        return fixed
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if changes is not None:
            changes.nulled_numbers.append(path or "value")
        return None
    if isinstance(value, dict):
        fixed_dict = {}
        for key, item in value.items():
            fixed_key = _storable_text(key) if isinstance(key, str) else key
            item_path = f"{path}.{fixed_key}" if path else str(fixed_key)
            if changes is not None and fixed_key != key:
                changes.replaced_characters.append(f"{item_path} (key)")
            fixed_dict[fixed_key] = make_storable(item, changes, item_path)
        return fixed_dict
    if isinstance(value, list | tuple):
        return [make_storable(item, changes, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def storable(value: Any) -> Any:
    """``value`` made storable (see ``make_storable``), without recording what changed."""
    return make_storable(value)


def refused_for_content(exc: BaseException) -> bool:
    """Whether the database (or the driver) refused the rows themselves, so that retrying cannot help,
    as opposed to a lost connection or a database that is down."""
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):  # OperationalError, InterfaceError, ...: retry later
        return False
    cause = exc.orig if isinstance(exc, sa.exc.StatementError) else exc
    return isinstance(cause, ValueError | TypeError)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def idempotent_insert(engine: sa.Engine) -> Any:
    """INSERT into ``predictions`` that skips a row whose ``row_uid`` is already stored (a journal
    replayed after a crash may hold rows committed before it)."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(Prediction).on_conflict_do_nothing(index_elements=["row_uid"])
    if engine.dialect.name == "sqlite":
        return sqlite.insert(Prediction).on_conflict_do_nothing(index_elements=["row_uid"])
    return sa.insert(Prediction)


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
    it stops and returns the rows not written yet, a suffix of ``rows`` (never ones already written).
    Rows whose ``row_uid`` is already stored are skipped, so inserting a row twice is harmless."""
    result = IsolatedInsert()
    statement = idempotent_insert(engine)
    parts = [rows] if rows else []
    while parts:
        part = parts.pop(0)
        try:
            with engine.begin() as conn:
                conn.execute(statement, part)
        except Exception as exc:
            if not refused_for_content(exc):
                result.unwritten = [row for p in (part, *parts) for row in p]
                result.error = exc
                return result
            if len(part) == 1:
                result.refused.append((part[0], _one_line(exc)))
            else:
                middle = len(part) // 2
                parts[0:0] = [part[:middle], part[middle:]]
    return result


def _jsonable_row(row: dict[str, Any]) -> dict[str, Any]:
    created = row.get("created_at")
    return {**row, "created_at": created.isoformat() if isinstance(created, dt.datetime) else created}


def row_from_json(record: dict[str, Any]) -> dict[str, Any]:
    """A row read back from a journal, spill or dead-letter JSON line, ready to insert."""
    row = {name: record.get(name) for name in COLUMNS}
    raw_created = record.get("created_at")
    created = (
        dt.datetime.fromisoformat(raw_created) if isinstance(raw_created, str) else dt.datetime.now(dt.UTC)
    )
    row["created_at"] = created if created.tzinfo is not None else created.replace(tzinfo=dt.UTC)
    for name in ("features", "output"):
        row[name] = row[name] if isinstance(row[name], dict) else {}
    row["fallback"] = bool(row["fallback"])
    changes = StorableChanges()
    fixed = make_storable(row, changes)
    note = changes.note()
    if note:
        fixed["storage_note"] = "; ".join(filter(None, (fixed.get("storage_note"), note)))
    return dict(fixed)


def _row_json(row: dict[str, Any]) -> str:
    """One row as a line of ASCII JSON (every string fits a text column and a UTF-8 file)."""
    return json.dumps(_jsonable_row(row), default=str, ensure_ascii=True)


# -- the dead letters ------------------------------------------------------------------------------


def write_dead_letters(engine: sa.Engine, refused: list[tuple[dict[str, Any], str]]) -> None:
    """Keep refused rows in ``prediction_dead_letters`` with the database's reason (raises when the
    database cannot take them either; a row already kept, by ``row_uid``, is not kept twice)."""
    now = dt.datetime.now(dt.UTC)
    values = [
        {
            "created_at": now,
            "row_uid": _storable_text(str(row["row_uid"]))[:32] if row.get("row_uid") else None,
            "model_name": _storable_text(str(row["model_name"]))[:128] if row.get("model_name") else None,
            "reason": _storable_text(reason),
            "row": _row_json(row),
            "replayed_at": None,
        }
        for row, reason in refused
    ]
    if engine.dialect.name == "postgresql":
        statement: Any = postgresql.insert(PredictionDeadLetter).on_conflict_do_nothing(
            index_elements=["row_uid"]
        )
    elif engine.dialect.name == "sqlite":
        statement = sqlite.insert(PredictionDeadLetter).on_conflict_do_nothing(index_elements=["row_uid"])
    else:
        statement = sa.insert(PredictionDeadLetter)
    with engine.begin() as conn:
        conn.execute(statement, values)
    log.error(
        "the database refused %d prediction rows for their content; kept them in prediction_dead_letters"
        " (%s)",
        len(refused),
        refused[0][1],
    )


def write_rejected(spill_dir: Path, refused: list[tuple[dict[str, Any], str]]) -> Path:
    """The refused rows and why, as JSON lines: the last resort when the dead-letter table cannot be
    written either (kept for inspection, never replayed automatically)."""
    spill_dir.mkdir(parents=True, exist_ok=True)
    name = f"predictions-rejected-{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
    path = spill_dir / name
    with path.open("w", encoding="utf-8") as handle:
        for row, reason in refused:
            handle.write(json.dumps({"reason": reason, "row": _jsonable_row(row)}, default=str) + "\n")
    log.error(
        "the database refused %d prediction rows for their content and the dead-letter table could not be"
        " written; kept them in %s",
        len(refused),
        path,
    )
    return path


def keep_refused(engine: sa.Engine, spill_dir: Path, refused: list[tuple[dict[str, Any], str]]) -> None:
    """Dead-letter ``refused`` in the database, or else in a rejected file: never drop them."""
    if not refused:
        return
    try:
        write_dead_letters(engine, refused)
    except Exception as exc:
        log.error("cannot write prediction_dead_letters: %s", _one_line(exc))
        write_rejected(spill_dir, refused)


@dataclass
class DeadLetterReplay:
    """What ``replay_dead_letters`` did: ids now in ``predictions``, and ids refused again (why)."""

    landed: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


def replay_dead_letters(engine: sa.Engine, ids: list[int] | None = None) -> DeadLetterReplay:
    """Insert dead-lettered rows (``ids``, or all not replayed yet) into ``predictions`` again, after
    on-call fixed the cause (a migration, or an edited ``row``); the rows that land get
    ``replayed_at``, the others stay with the new reason."""
    query = sa.select(PredictionDeadLetter.id, PredictionDeadLetter.row).where(
        PredictionDeadLetter.replayed_at.is_(None)
    )
    if ids is not None:
        query = query.where(PredictionDeadLetter.id.in_(ids))
    with engine.connect() as conn:
        letters = conn.execute(query.order_by(PredictionDeadLetter.id)).all()
    outcome = DeadLetterReplay()
    statement = idempotent_insert(engine)
    for letter_id, text in letters:
        try:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise ValueError(f"the dead letter's row is JSON {type(record).__name__}, not an object")
            row = row_from_json(record)
            with engine.begin() as conn:
                conn.execute(statement, [row])
                conn.execute(
                    sa.update(PredictionDeadLetter)
                    .where(PredictionDeadLetter.id == letter_id)
                    .values(replayed_at=dt.datetime.now(dt.UTC))
                )
            outcome.landed.append(letter_id)
        except Exception as exc:
            if not refused_for_content(exc):  # ValueError (JSONDecodeError too) counts as content
                raise
            reason = _storable_text(_one_line(exc))
            outcome.refused[letter_id] = reason
            with engine.begin() as conn:
                conn.execute(
                    sa.update(PredictionDeadLetter)
                    .where(PredictionDeadLetter.id == letter_id)
                    .values(reason=reason)
                )
    return outcome


# -- rows ------------------------------------------------------------------------------------------


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
    replica: str | None = None,
) -> dict[str, Any]:
    """One ``predictions`` row, made storable (``storage_note`` says what was changed), with a new
    ``row_uid``; ``replica`` names the prediction service replica that answered."""
    changes = StorableChanges()
    return {
        "created_at": created_at or dt.datetime.now(dt.UTC),
        "model_name": model_name,
        "model_version": model_version,
        "route": route,
        "request_id": make_storable(request_id, changes, "request_id"),
        "organization_id": organization_id,
        "entity_id": make_storable(entity_id, changes, "entity_id"),
        "features": make_storable(features, changes, "features"),
        "output": make_storable(output, changes, "output"),
        "latency_ms": round(latency_ms, 3),
        "fallback": fallback,
        "error": make_storable(error, changes, "error"),
        "row_uid": uuid.uuid4().hex,
        "storage_note": changes.note(),
        "replica": replica,
    }


# -- the journal -----------------------------------------------------------------------------------

JOURNAL_LOCK = "owner.lock"
SEGMENT_BYTES = 4 * 1024 * 1024


@dataclass
class _Segment:
    path: Path
    fd: int
    first_seq: int  # the sequence number of its first row
    end_seq: int  # one past its last row
    size: int = 0


class PredictionJournal:
    """This process's append-only journal of prediction rows, so that a crash loses none.

    A directory ``<root>/<pid>-<random>/`` holds ``owner.lock`` (``flock``-ed while this process lives:
    a journal whose lock can be taken belongs to a dead process and is replayed) and numbered
    segments of JSON lines. Every row appended gets the next sequence number; ``release_through(n)``
    (rows before ``n`` are in the database) deletes segments holding only such rows, and empties the
    current one when all of its rows are. Appends reach the OS before ``append`` returns (what a
    ``kill -9`` needs); they reach the disk within ``fsync_seconds`` (a background fsync; 0 fsyncs
    in ``append``), which is what a power loss needs.

    Bound: at ``max_bytes`` of segments (the database has been down a long time), rows are not
    journaled any more, only queued in memory, until the database takes rows again; this is logged
    and counted (``unjournaled_rows``), and a graceful stop then spills the queue to a file.
    """

    def __init__(
        self,
        root: Path,
        *,
        fsync_seconds: float = 0.2,
        max_bytes: int = 1024 * 1024 * 1024,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.root = root
        self.fsync_seconds = fsync_seconds
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max_bytes)
        self.directory: Path | None = None
        self._lock_fd: int | None = None
        self._segments: list[_Segment] = []
        self._next_segment = 1
        self._appended = 0  # rows given to append (journaled or not): the next sequence number
        self._released = 0  # rows before this are in the database
        self._missing: list[tuple[int, int]] = []  # [first, end) sequence ranges not journaled
        self._total_bytes = 0
        self._write_error: str | None = None
        self._unsynced: list[_Segment] = []  # segments written to since their last fsync
        self._directory_unsynced = False
        self._full = False
        self.unjournaled_rows = 0
        self._lock = threading.Lock()
        self._stop_syncing = threading.Event()
        self._sync_thread: threading.Thread | None = None

    @classmethod
    def configured(cls) -> PredictionJournal | None:
        """The journal the settings describe (``NEURACRM_PREDICTION_JOURNAL*``), or None when off."""
        from neuracrm_mlops.config import get_settings

        settings = get_settings()
        if not settings.prediction_journal:
            return None
        return cls(
            settings.home / "prediction-journal",
            fsync_seconds=settings.prediction_journal_fsync_seconds,
            max_bytes=settings.prediction_journal_max_mb * 1024 * 1024,
        )

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.directory is not None

    def open(self) -> None:
        """Create this process's journal directory and take its lock (built under a hidden name and
        renamed, so that no replay ever sees it unlocked)."""
        if self.directory is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        building = self.root / f".{name}"
        building.mkdir()
        lock_fd = os.open(building / JOURNAL_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        directory = self.root / name
        building.rename(directory)
        _fsync_directory(self.root)
        self._lock_fd, self.directory = lock_fd, directory
        with self._lock:
            self._segments = [self._new_segment()]
        if self.fsync_seconds > 0:
            self._stop_syncing.clear()
            self._sync_thread = threading.Thread(
                target=self._sync_loop, name="neuracrm-prediction-journal-fsync", daemon=True
            )
            self._sync_thread.start()
        log.info("prediction journal: %s", directory)

    def close(self, *, keep: bool) -> None:
        """Stop journaling. ``keep``: leave the files (rows not in the database yet) for the next start
        to replay; otherwise remove the directory. The lock is released either way."""
        if self.directory is None:
            return
        self._stop_syncing.set()
        if self._sync_thread is not None:
            self._sync_thread.join(5)
            self._sync_thread = None
        with self._lock:
            for segment in self._segments:
                if keep:
                    os.fsync(segment.fd)
                os.close(segment.fd)
            self._segments = []
            directory, self.directory = self.directory, None
            if keep:
                _fsync_directory(directory)
            else:
                shutil.rmtree(directory, ignore_errors=True)
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def _new_segment(self) -> _Segment:
        assert self.directory is not None
        path = self.directory / f"{self._next_segment:08d}.jsonl"
        self._next_segment += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if self.fsync_seconds == 0:
            _fsync_directory(self.directory)
        else:
            self._directory_unsynced = True
        return _Segment(path, fd, self._appended, self._appended)

    # -- the request path ------------------------------------------------------------------------
    def append(self, rows: list[dict[str, Any]]) -> bool:
        """Write ``rows`` to the current segment (one ``write`` call); False when they were not
        journaled (the bound is reached). Call in the order the rows are queued."""
        if not rows:
            return True
        data = "".join(_row_json(row) + "\n" for row in rows).encode("ascii")
        with self._lock:
            first = self._appended
            self._appended += len(rows)
            if not self._segments or self._full or self._total_bytes + len(data) > self.max_bytes:
                self._skip(first, len(rows), None)
                return False
            segment = self._segments[-1]
            try:
                _write_all(segment.fd, data)
            except OSError as exc:  # e.g. the disk is full: cut a partial line, keep serving
                with contextlib.suppress(OSError):
                    os.ftruncate(segment.fd, segment.size)
                self._skip(first, len(rows), exc)
                return False
            segment.end_seq = self._appended
            segment.size += len(data)
            self._total_bytes += len(data)
            if self.fsync_seconds == 0:
                os.fsync(segment.fd)
            elif segment not in self._unsynced:
                self._unsynced.append(segment)
            if segment.size >= self.segment_bytes:
                self._segments.append(self._new_segment())
            return True

    def note_unjournaled(self, count: int, error: OSError) -> None:
        """Rows queued without being journaled because the journal could not be opened."""
        with self._lock:
            first = self._appended
            self._appended += count
            self._skip(first, count, error)

    def _skip(self, first: int, count: int, error: OSError | None) -> None:
        if count and self._missing and self._missing[-1][1] == first:
            self._missing[-1] = (self._missing[-1][0], first + count)
        elif count:
            self._missing.append((first, first + count))
        self.unjournaled_rows += count
        if error is not None:
            message = f"{type(error).__name__}: {error}"
            if message != self._write_error:
                log.error(
                    "cannot write the prediction journal under %s (%s): rows are kept in memory only",
                    self.root,
                    message,
                )
            self._write_error = message
            return
        if not self._full:
            self._full = True
            log.error(
                "the prediction journal %s reached its bound (%g MB; the database has not taken rows for a"
                " while): new rows are kept in memory only until it does",
                self.directory,
                self.max_bytes / (1024 * 1024),
            )

    # -- the writer's side -----------------------------------------------------------------------
    def release_through(self, done: int) -> None:
        """Rows with a sequence number below ``done`` are in the database (or dead-lettered): delete
        the segments that hold only such rows, empty the current one when all of its rows are, and
        start a new segment when the current one is large."""
        with self._lock:
            self._released = max(self._released, done)
            self._missing = [(a, b) for a, b in self._missing if b > self._released]
            if not self._segments:
                return
            *sealed, current = self._segments
            kept = []
            for segment in sealed:
                if segment.end_seq <= self._released:
                    os.close(segment.fd)
                    segment.path.unlink(missing_ok=True)
                    self._total_bytes -= segment.size
                else:
                    kept.append(segment)
            if current.size and current.end_seq <= self._released:
                os.ftruncate(current.fd, 0)
                self._total_bytes -= current.size
                current.size, current.first_seq = 0, self._appended
            self._segments = [*kept, current]
            self._unsynced = [segment for segment in self._unsynced if segment in self._segments]
            if self._full and self._total_bytes + self.segment_bytes <= self.max_bytes:
                self._full = False
                log.warning("the prediction journal %s journals rows again", self.directory)

    @property
    def complete(self) -> bool:
        """Whether every row appended and not yet in the database is in the journal files."""
        with self._lock:
            return not self._missing

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {
                "directory": str(self.directory) if self.directory else None,
                "bytes": self._total_bytes,
                "segments": len(self._segments),
                "full": self._full,
                "unjournaled_rows": self.unjournaled_rows,
            }

    def _sync_loop(self) -> None:
        while not self._stop_syncing.wait(self.fsync_seconds):
            self.sync()

    def sync(self) -> None:
        """fsync the segments (and the directory) written to since the last time."""
        with self._lock:
            if not self._unsynced and not self._directory_unsynced:
                return
            # fsync duplicates outside the lock: appends never wait on the disk
            fds = [os.dup(segment.fd) for segment in self._unsynced]
            directory = self.directory if self._directory_unsynced else None
            self._unsynced, self._directory_unsynced = [], False
        try:
            for fd in fds:
                os.fsync(fd)
            if directory is not None:
                _fsync_directory(directory)
        finally:
            for fd in fds:
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class JournalReplay:
    """What ``replay_journals`` did: rows inserted (or found already stored), rows dead-lettered,
    journals replayed and removed, journals skipped because their process lives."""

    rows: int = 0
    refused: int = 0
    journals: int = 0
    live: int = 0


def _journal_lines(directory: Path) -> Iterator[tuple[str, bool]]:
    """(line, is the very last line) over a journal's segments in order."""
    segments = sorted(directory.glob("*.jsonl"))
    for i, segment in enumerate(segments):
        lines = segment.read_bytes().decode("ascii", errors="replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
            torn_tail = False
        else:
            torn_tail = True  # the file does not end with a newline: its last write was cut short
        for j, line in enumerate(lines):
            if line.strip():
                yield line, torn_tail and j == len(lines) - 1 and i == len(segments) - 1


def replay_journals(
    engine: sa.Engine, root: Path, spill_dir: Path, *, own: Path | None = None, batch_rows: int = 1_000
) -> JournalReplay:
    """Insert the rows of every journal under ``root`` whose process is dead (its lock can be taken),
    then remove it. Rows already stored (by ``row_uid``) are skipped; refused rows are dead-lettered;
    a torn last line (the process died inside a write, before that answer left) is dropped. Raises
    when the database cannot be reached (the journal stays for the next attempt)."""
    report = JournalReplay()
    if not root.is_dir():
        return report
    for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if own is not None and directory == own:
            continue
        try:
            lock_fd = os.open(directory / JOURNAL_LOCK, os.O_RDWR)
        except FileNotFoundError:
            continue  # being removed by another replay
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    report.live += 1
                    continue
                raise
            if not directory.is_dir():
                continue
            rows, refused = _replay_one_journal(engine, directory, spill_dir, batch_rows)
            shutil.rmtree(directory, ignore_errors=True)
            report.rows += rows
            report.refused += refused
            report.journals += 1
            log.info(
                "replayed %d prediction rows from the journal %s (a process that died)", rows, directory.name
            )
        finally:
            os.close(lock_fd)
    return report


def _replay_one_journal(
    engine: sa.Engine, directory: Path, spill_dir: Path, batch_rows: int
) -> tuple[int, int]:
    rows: list[dict[str, Any]] = []
    unreadable: list[tuple[dict[str, Any], str]] = []
    for line, last in _journal_lines(directory):
        try:
            rows.append(row_from_json(json.loads(line)))
        except (ValueError, TypeError, AttributeError) as exc:
            if last:
                log.warning(
                    "dropped the torn last line of the journal %s (its write was cut short)", directory
                )
                continue
            unreadable.append(({"model_name": None, "journal_line": line}, f"unreadable journal line: {exc}"))
    written = refused = 0
    for start in range(0, len(rows), batch_rows):
        result = insert_isolating(engine, rows[start : start + batch_rows])
        keep_refused(engine, spill_dir, result.refused)
        if result.error is not None:
            raise result.error
        written += len(rows[start : start + batch_rows]) - len(result.refused)
        refused += len(result.refused)
    keep_refused(engine, spill_dir, unreadable)
    return written, refused + len(unreadable)


# -- the writer ------------------------------------------------------------------------------------


class PredictionLogWriter:
    """Batches prediction rows off the request path into the ``predictions`` table, journaling them
    first (``journal``: ``"configured"``, the default, is ``PredictionJournal.configured()``; None: no
    journal, a crash loses the queued rows)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        spill_dir: Path,
        journal: PredictionJournal | Literal["configured"] | None = "configured",
        flush_seconds: float = 0.5,
        batch_rows: int = 1_000,
        retry_seconds: float = 2.0,
    ) -> None:
        self._engine = engine
        self.spill_dir = spill_dir
        self.journal = PredictionJournal.configured() if journal == "configured" else journal
        self._flush_seconds = flush_seconds
        self._batch_rows = batch_rows
        self._retry_seconds = retry_seconds
        self._queue: deque[dict[str, Any]] = deque()
        self._append_lock = threading.Lock()  # journal order == queue order
        self._write_lock = threading.Lock()  # one batch at a time: finished rows stay a prefix
        self._close_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._in_flight = 0
        self._finished = 0  # rows written or dead-lettered, always the first ones appended
        self._replay_needed = True  # journals of dead processes and spill files, at start and reconnect
        self._replay_error: str | None = None
        self._thread: threading.Thread | None = None
        self.written = 0
        self.failed_writes = 0
        self.rejected = 0  # rows the database refused for their content (dead-lettered)
        self.replayed = 0  # rows replayed from dead processes' journals and spill files
        self.last_error: str | None = None
        self.last_success_at: float | None = None  # epoch seconds of the last batch written
        self.last_error_at: float | None = None  # epoch seconds of the last write the database refused

    # -- request path ----------------------------------------------------------------------------
    def append(self, rows: list[dict[str, Any]]) -> None:
        """Queue ``rows``; they are in the journal (written to the OS) when this returns."""
        with self._append_lock:
            if self.journal is not None:
                self._journal(rows)
            self._queue.extend(rows)
        if len(self._queue) >= self._batch_rows:
            self._wake.set()

    def _journal(self, rows: list[dict[str, Any]]) -> None:
        """Journal ``rows`` (the caller holds the append lock). A journal that cannot be opened (a
        read-only or missing NEURACRM_HOME) must not fail the request: the rows are queued anyway, counted
        as not journaled, and the error is logged once."""
        assert self.journal is not None
        try:
            if not self.journal.is_open:
                self.journal.open()
        except OSError as exc:
            self.journal.note_unjournaled(len(rows), exc)
            return
        self.journal.append(rows)

    @property
    def pending(self) -> int:
        return len(self._queue) + self._in_flight

    def journal_health(self) -> dict[str, Any]:
        """The journal's state for /status (``enabled: false`` when there is none)."""
        if self.journal is None:
            return {"enabled": False}
        return {
            "enabled": True,
            **self.journal.health(),
            "replayed_rows": self.replayed,
            "dead_lettered": self.rejected,
        }

    # -- background ------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the journal and start the background thread (which first replays what dead processes
        left: their journals and spill files)."""
        if self.journal is not None and not self.journal.is_open:
            with self._append_lock:
                self._journal([])
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="neuracrm-prediction-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self._replay_needed and not self.replay_orphans():
                self._stopping.wait(self._retry_seconds)
            if not self._write_pending():
                self._stopping.wait(self._retry_seconds)
                continue
            self._wake.wait(self._flush_seconds)
            self._wake.clear()

    def replay_orphans(self) -> bool:
        """Replay the journals of dead processes and the spill files into the database; False (and
        tried again after the next successful write) when the database cannot be reached."""
        try:
            if self.journal is not None:
                report = replay_journals(
                    self._engine, self.journal.root, self.spill_dir, own=self.journal.directory
                )
                self.replayed += report.rows
                self.rejected += report.refused
            self.replayed += replay_spill(self._engine, self.spill_dir)
        except (sa.exc.DBAPIError, sa.exc.StatementError) as exc:  # the database is down: retry later
            message = f"cannot replay prediction journals or spill files yet: {_one_line(exc)}"
            if message != self._replay_error:
                log.warning(message)
            self._replay_error, self._replay_needed = message, True
            return False
        except Exception:  # not the database: retrying at once would not help, writing must go on
            log.exception("could not replay prediction journals or spill files; they stay on disk")
        self._replay_error, self._replay_needed = None, False
        return True

    def _take(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while self._queue and len(rows) < self._batch_rows:
            rows.append(self._queue.popleft())
        self._in_flight = len(rows)
        return rows

    def _write_pending(self) -> bool:
        """Write everything queued; False (rows put back, in order) when the database refused."""
        with self._write_lock:
            while self._queue:
                rows = self._take()
                result = insert_isolating(self._engine, rows)
                if result.refused:
                    keep_refused(self._engine, self.spill_dir, result.refused)
                    self.rejected += len(result.refused)
                finished = len(rows) - len(result.unwritten)
                self.written += finished - len(result.refused)
                if result.error is not None:
                    self._queue.extendleft(reversed(result.unwritten))
                self._in_flight = 0
                self._finished += finished
                if self.journal is not None and finished:
                    self.journal.release_through(self._finished)
                if result.error is not None:
                    self.failed_writes += 1
                    message = _one_line(result.error)
                    if message != self.last_error:
                        log.error(
                            "cannot write %d prediction rows, will retry (they are in the journal): %s",
                            len(result.unwritten),
                            message,
                        )
                    self.last_error, self.last_error_at = message, time.time()
                    self._replay_needed = True  # on reconnect, also replay what others left
                    return False
                self.last_error, self.last_success_at = None, time.time()
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Write what is queued now (from the caller's thread); True when the queue is empty."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            if not self._write_pending():
                time.sleep(min(0.2, self._retry_seconds))
        return not self._queue

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and flush. Rows the database still refuses stay in the journal for the next
        start (or, when the journal is off or did not hold all of them, go to a spill file)."""
        with self._close_lock:
            self._stopping.set()
            self._wake.set()
            if self._thread is not None:
                self._thread.join(timeout)
                self._thread = None
            if self.flush(timeout):
                if self.journal is not None:
                    self.journal.close(keep=False)
                return
            with self._append_lock:
                rows = list(self._queue)
                if self.journal is not None and self.journal.is_open and self.journal.complete:
                    self.journal.close(keep=True)
                    log.error(
                        "the database refused the last %d prediction rows; they stay in the journal %s for"
                        " the next start",
                        len(rows),
                        self.journal.root,
                    )
                    return
                path = self._spill(rows)
                self._queue.clear()
                if self.journal is not None:
                    self.journal.close(keep=False)
            log.error("the database refused the last %d prediction rows; kept them in %s", len(rows), path)

    def _spill(self, rows: list[dict[str, Any]]) -> Path:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"predictions-{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(_row_json(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return path


def replay_spill(engine: sa.Engine, spill_dir: Path) -> int:
    """Load spilled prediction rows into the database (at start and on reconnect); returns how many.

    Each file is locked while it is replayed (two workers never replay one file at once); rows
    already stored (by ``row_uid``) are skipped; rows the database refuses for their content are
    dead-lettered instead of blocking the others; a file is removed once every row is written or kept.
    Raises when the database cannot be reached (the rows not written stay in the file)."""
    if not spill_dir.is_dir():
        return 0
    total = 0
    for path in sorted(spill_dir.glob("predictions-*.jsonl")):
        if path.name.startswith("predictions-rejected-"):
            continue
        try:
            handle = path.open("r+", encoding="utf-8")
        except FileNotFoundError:
            continue
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another worker is replaying it
            if not path.exists():
                continue
            rows = [row_from_json(json.loads(line)) for line in handle.read().splitlines() if line.strip()]
            result = insert_isolating(engine, rows)
            keep_refused(engine, spill_dir, result.refused)
            if result.error is not None:  # keep what was not written for the next attempt, then report
                handle.seek(0)
                handle.truncate()
                for row in result.unwritten:
                    handle.write(_row_json(row) + "\n")
                raise result.error
            path.unlink()
        written = len(rows) - len(result.refused)
        total += written
        log.info("replayed %d spilled prediction rows from %s", written, path.name)
    return total
