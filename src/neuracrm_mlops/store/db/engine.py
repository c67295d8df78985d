"""Engines for the CRM store: SQLite (embedded default) or PostgreSQL through psycopg 3.

The prediction service uses its own engine (``get_serving_engine``) whose every wait is bounded well
under a client's patience (connecting, one statement, a free pooled connection; see the
``NEURACRM_DB_*_TIMEOUT_SECONDS`` settings), so that a database that is down or hanging makes a
request fail fast instead of holding it for half a minute. ``DependencyState`` records the last
success and last error of such a dependency for ``/status/`` and ``/readyz``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.errors import DatabaseUnavailableError

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(url: str) -> sa.Engine:
    """A new engine for ``url`` (no connection is made yet)."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(
            url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args={"connect_timeout": 5}
        )
    raise DatabaseUnavailableError(
        f"unsupported database URL {redact_url(url)}: use sqlite:///PATH or postgresql://..."
    )


def create_serving_engine(url: str) -> sa.Engine:
    """An engine for the request path of the prediction service: every wait on the database bounded.

    PostgreSQL: ``connect_timeout``, a server-side ``statement_timeout``, TCP keepalives and
    ``tcp_user_timeout`` (a peer that vanished is noticed), and ``pool_timeout`` for a free connection.
    SQLite: the busy wait is the statement timeout (SQLite cannot be "down", only locked).
    """
    settings = get_settings()
    url = normalize_url(url)
    parsed = make_url(url)
    statement_ms = int(settings.db_statement_timeout_seconds * 1000)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": settings.db_statement_timeout_seconds})
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        sa.event.listen(engine, "connect", _sqlite_busy_timeout(statement_ms))
        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            pool_timeout=settings.db_pool_timeout_seconds,
            connect_args={
                "connect_timeout": settings.db_connect_timeout_seconds,
                "options": f"-c statement_timeout={statement_ms}",
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 2,
                "tcp_user_timeout": settings.db_connect_timeout_seconds * 1000,
            },
        )
    return create_engine(url)  # the same clear error for an unsupported URL


def _sqlite_busy_timeout(milliseconds: int) -> Any:
    def set_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={milliseconds}")
        cursor.close()

    return set_busy_timeout


def get_serving_engine(url: str | None = None) -> sa.Engine:
    """The shared serving engine for ``url`` (default: NEURACRM_DB_URL), created on first use."""
    url = normalize_url(url or get_settings().db_url)
    with _lock:
        engine = _engines.get(f"serving:{url}")
        if engine is None:
            engine = _engines[f"serving:{url}"] = create_serving_engine(url)
        return engine


class DependencyState:
    """The last success and the last error of one external dependency (the database, the model
    registry, Redis): what ``/status/`` and ``/readyz`` show, so that an operator sees at a glance
    which dependency is failing, since when, and why.

    It is also a small circuit breaker (``should_try``): while the dependency is failing, requests do
    not call it (they fail fast instead of each waiting for the dependency's timeout); at most once per
    ``probe_interval_seconds`` it is tried again, by ``probe`` on a background thread when one is set
    (so no request waits for the probe), else by the one caller let through."""

    def __init__(
        self,
        name: str,
        *,
        probe_interval_seconds: float = 1.0,
        probe: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.probe_interval_seconds = probe_interval_seconds
        self.probe = probe
        self._probing = False
        self.last_success_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._last_probe = float("-inf")
        self._lock = threading.Lock()

    def succeeded(self) -> None:
        self.last_success_at = time.time()

    def failed(self, error: BaseException | str) -> None:
        self.last_error = error if isinstance(error, str) else one_line_error(error)
        self.last_error_at = time.time()

    @property
    def ok(self) -> bool:
        """No error yet, or a success since the last error."""
        if self.last_error_at is None:
            return True
        return self.last_success_at is not None and self.last_success_at >= self.last_error_at

    def should_try(self) -> bool:
        """Whether to call the dependency now: always while it is ok; while it is failing, no (a
        background probe is started once per probe interval), or, without a probe, for one caller per
        probe interval (whose success or failure updates the state)."""
        if self.ok:
            return True
        with self._lock:
            now = time.monotonic()
            if self._probing or now - self._last_probe < self.probe_interval_seconds:
                return False
            self._last_probe = now
            if self.probe is None:
                return True
            self._probing = True
        threading.Thread(target=self._run_probe, name=f"neuracrm-probe-{self.name}", daemon=True).start()
        return False

    def _run_probe(self) -> None:
        assert self.probe is not None
        try:
            self.probe()
        except Exception as exc:
            self.failed(exc)
        else:
            self.succeeded()
        finally:
            self._probing = False

    def describe(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now

        def age(at: float | None) -> float | None:
            return None if at is None else round(max(now - at, 0.0), 1)

        return {
            "ok": self.ok,
            "last_success_at": self.last_success_at,
            "last_success_age_seconds": age(self.last_success_at),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_error_age_seconds": age(self.last_error_at),
        }


def one_line_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (a driver's error without SQL or the background link)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def track_database_health(engine: sa.Engine, state: DependencyState) -> DependencyState:
    """Record in ``state`` every connection the engine hands out (a success: the pre-ping passed) and
    every error that says the database cannot be reached or answered too late (connect failures, lost
    connections, timeouts); errors about the data itself (e.g. a refused value) do not count."""

    def on_checkout(*_: Any) -> None:
        state.succeeded()

    def on_error(context: sa.engine.ExceptionContext) -> None:
        error = context.sqlalchemy_exception or context.original_exception
        if context.is_disconnect or isinstance(
            error, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError
        ):
            state.failed(error)

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    sa.event.listen(engine.pool, "checkout", on_checkout)
    sa.event.listen(engine, "handle_error", on_error)
    if state.probe is None:
        state.probe = ping
    return state


def get_engine(url: str | None = None) -> sa.Engine:
    """The shared engine for ``url`` (default: NEURACRM_DB_URL), created on first use."""
    url = normalize_url(url or get_settings().db_url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_engine(url)
        return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def check_connection(engine: sa.Engine) -> None:
    """Raise DatabaseUnavailableError with a one-line reason if the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailableError(
            f"cannot reach the database at {redact_url(str(engine.url.render_as_string(False)))}: {reason}"
        ) from None
