"""One settings object, read from the environment when first used (never at import time).

Every knob has an embedded default so that a fresh checkout runs with no setup: SQLite files and
local MLflow artifacts under ``NEURACRM_HOME`` (default ``./.neuracrm``). Production points the
same variables at PostgreSQL, an MLflow server and Redis (see ``.env.example``).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from neuracrm_mlops.errors import ConfigurationError

# Every environment variable that Settings.from_environment reads (tests/unit/test_compose.py checks
# this list against the code, and docker-compose.yml against this list).
ENVIRONMENT_VARIABLES: tuple[str, ...] = (
    "NEURACRM_HOME",
    "NEURACRM_DB_URL",
    "MLFLOW_TRACKING_URI",
    "AIRFLOW_HOME",
    "NEURACRM_REDIS_URL",
    "NEURACRM_ALERT_WEBHOOK_URL",
    "NEURACRM_RETELL_API_KEY",
    "NEURACRM_RETELL_BASE_URL",
    "NEURACRM_ACCURACY_FLOOR",
    "NEURACRM_ACCURACY_FLOORS",
    "NEURACRM_IMPORT_CHUNK_ROWS",
    "NEURACRM_IMPORT_MAX_FIELD_BYTES",
    "NEURACRM_IMPORT_PROGRESS_SECONDS",
    "NEURACRM_FORECAST_CHUNK_SIZE",
    "NEURACRM_FORECAST_MAX_CHUNKS",
    "NEURACRM_FORECAST_CHUNK_CONCURRENCY",
    "NEURACRM_MODEL_POLL_SECONDS",
    # abuse limits of the prediction service (request_limits.py)
    "NEURACRM_MAX_REQUEST_BYTES",
    "NEURACRM_RATE_LIMIT_KEY_PER_SECOND",
    "NEURACRM_RATE_LIMIT_KEY_BURST",
    "NEURACRM_RATE_LIMIT_ADDRESS_PER_SECOND",
    "NEURACRM_RATE_LIMIT_ADDRESS_BURST",
    "NEURACRM_AUTH_FAILURES_PER_SECOND",
    "NEURACRM_AUTH_FAILURE_BURST",
    "NEURACRM_ABUSE_HOLD_SECONDS",
    "NEURACRM_ABUSE_HOLD_MAX",
    "NEURACRM_PREDICTION_LOG_FLUSH_SECONDS",
    # the prediction journal (prediction_log.PredictionJournal): on/off, fsync interval, size bound
    "NEURACRM_PREDICTION_JOURNAL",
    "NEURACRM_PREDICTION_JOURNAL_FSYNC_SECONDS",
    "NEURACRM_PREDICTION_JOURNAL_MAX_MB",
    "NEURACRM_FORECAST_CACHE_TTL_SECONDS",
    "NEURACRM_ALERT_ESCALATE_MINUTES",
    "NEURACRM_ALERT_WEBHOOK_RETRIES",
    "NEURACRM_ALERT_WEBHOOK_BACKOFF_SECONDS",
    "NEURACRM_ALERT_WEBHOOK_TIMEOUT_SECONDS",
    "NEURACRM_ROLLOUT_STEPS",
    "NEURACRM_MIN_OUTCOMES",
    "NEURACRM_FORECAST_MIN_OUTCOMES",
    "NEURACRM_BAKE_DEADLINE_HOURS",
    "NEURACRM_BAKE_POKE_SECONDS",
    "NEURACRM_MONITOR_WINDOW_HOURS",
    "NEURACRM_MLFLOW_UI_URL",
    "NEURACRM_BIAS_ATTRIBUTE",
    "NEURACRM_SHADOW_CANARY",
    "NEURACRM_ROLLOUT_APPROVAL",
    # degraded modes: how long the prediction service waits on each dependency
    "NEURACRM_MLFLOW_TIMEOUT_SECONDS",
    "NEURACRM_MLFLOW_MAX_RETRIES",
    "NEURACRM_DB_CONNECT_TIMEOUT_SECONDS",
    "NEURACRM_DB_STATEMENT_TIMEOUT_SECONDS",
    "NEURACRM_DB_POOL_TIMEOUT_SECONDS",
    "NEURACRM_REDIS_TIMEOUT_SECONDS",
    "NEURACRM_DEPENDENCY_WAIT_SECONDS",
    "NEURACRM_FORECAST_LOAD_WAIT_SECONDS",
    "NEURACRM_RETRY_AFTER_SECONDS",
    "NEURACRM_TENANT_CACHE_TTL_SECONDS",
    "NEURACRM_TENANT_UNKNOWN_TTL_SECONDS",
    "NEURACRM_TENANT_CACHE_MAX_ENTRIES",
    "NEURACRM_TENANT_STALE_GRACE_SECONDS",
    # Airflow tasks: the delay between retries of a failed task
    "NEURACRM_RETRY_DELAY_SECONDS",
    # the Airflow REST API that `import` announces new CRM data to (asset events); unset: no announcement
    "NEURACRM_AIRFLOW_API_URL",
    "NEURACRM_AIRFLOW_API_USERNAME",
    "NEURACRM_AIRFLOW_API_PASSWORD",
    "NEURACRM_AIRFLOW_API_TOKEN",
    # testing only: the process exits at this named point of an alias move (rollout_state.py)
    "NEURACRM_ROLLOUT_FAILPOINT",
    # the CLI's log level (read leniently first thing: see log_level_from_environment)
    "NEURACRM_LOG_LEVEL",
    # the code version recorded with every MLflow run (registry.git_commit)
    "NEURACRM_GIT_COMMIT",
    # the Great Expectations context (validation.gx_context_root; read on each use)
    "NEURACRM_GX_ROOT",
    "NEURACRM_SCENARIOS_DIR",
    # BentoML worker processes of the prediction service (read when serving/service.py is imported)
    "NEURACRM_SERVING_WORKERS",
    # the prediction service replica's name (/status/, X-NeuraCRM-Replica, predictions.replica)
    "NEURACRM_REPLICA_NAME",
    # every DAG's start_date (dag_support; read through settings_for_dag_parsing)
    "NEURACRM_DAG_START_DATE",
)

LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_LOG_LEVEL = "WARNING"
DEFAULT_DAG_START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _env_float(name: str, default: float, *, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a number (accepted: a number between {low} and {high})"
        ) from None
    if not low <= value <= high:  # also refuses nan
        raise ConfigurationError(f"{name}={raw!r} must be between {low} and {high}")
    return value


def _env_switch(name: str, default: bool) -> bool:
    """An on/off setting: on, true, yes, 1 / off, false, no, 0 (any case); empty is the default."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ConfigurationError(f"{name}={raw!r} must be on or off (or true/false, yes/no, 1/0)")


def _env_int(name: str, default: int, *, low: int, high: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a whole number (accepted: a whole number between {low} and {high})"
        ) from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name}={raw!r} must be between {low} and {high}")
    return value


def _env_steps(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """Canary weights as percentages or shares, comma-separated: ``10,50,100`` or ``0.1,0.5,1``."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        values = [float(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} must be comma-separated numbers, e.g. 10,50,100") from None
    if values and max(values) > 1.0:
        values = [v / 100.0 for v in values]
    if (
        not values
        or values[-1] != 1.0
        or any(not 0 < v <= 1 for v in values)
        or values != sorted(set(values))
    ):
        raise ConfigurationError(f"{name}={raw!r} must rise strictly to 100 (e.g. 10,50,100)")
    return tuple(values)


FloorKey = tuple[str, int | None]


def _env_floors(name: str) -> dict[FloorKey, float]:
    """Floors per family and per organization: ``sentiment=0.75,sales_forecast:12=0.6`` (family,
    optionally ``:organization id``, ``=`` a number in [0, 1])."""
    raw = os.environ.get(name, "")
    floors: dict[FloorKey, float] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        family, _, org = key.strip().partition(":")
        try:
            floor = float(value)
            organization = int(org) if org.strip() else None
        except ValueError:
            floor, organization = float("nan"), None
        if not sep or not family.strip() or not 0.0 <= floor <= 1.0:
            raise ConfigurationError(
                f"{name}: {part!r} must read FAMILY=FLOOR or FAMILY:ORG_ID=FLOOR with FLOOR in [0, 1] "
                "(e.g. sentiment=0.75,sales_forecast:12=0.6)"
            )
        floors[(family.strip(), organization)] = floor
    return floors


def log_level_from_environment() -> tuple[str, str | None]:
    """NEURACRM_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR or CRITICAL, any case; default WARNING) and, when
    the value is not one of those, a one-line note saying so. Never raises: the CLI needs its log level
    before anything else, and a bad one falls back to WARNING rather than failing every command."""
    raw = os.environ.get("NEURACRM_LOG_LEVEL")
    if raw is None or raw.strip() == "":
        return DEFAULT_LOG_LEVEL, None
    level = raw.strip().upper()
    if level in LOG_LEVELS:
        return level, None
    return DEFAULT_LOG_LEVEL, (
        f"NEURACRM_LOG_LEVEL={raw!r} is not a log level (accepted: {', '.join(LOG_LEVELS)}); "
        f"using {DEFAULT_LOG_LEVEL}"
    )


def gx_root_from_environment() -> Path | None:
    """NEURACRM_GX_ROOT as an absolute path (None: unset, the repository's ``expectations/``). Read on
    each call, not cached: validation.gx_context_root checks that the folder holds a GX context."""
    raw = os.environ.get("NEURACRM_GX_ROOT", "").strip()
    return Path(raw).expanduser().resolve() if raw else None


def serving_workers_from_environment() -> int:
    """NEURACRM_SERVING_WORKERS, BentoML worker processes of the prediction service (1 to 256, default 1).
    serving/service.py reads it alone when it is imported (BentoML takes its configuration then), so a
    bad value in another variable fails the service's start-up with that variable's error instead."""
    return _env_int("NEURACRM_SERVING_WORKERS", 1, low=1, high=256)


def _env_git_commit(name: str) -> str | None:
    """The code version recorded with MLflow runs: a commit id or tag, no spaces, at most 100 characters
    (unset or empty: None, the checkout's HEAD is used)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if len(raw) > 100 or any(ch.isspace() or not ch.isprintable() for ch in raw):
        raise ConfigurationError(
            f"{name}={raw[:120]!r} must be a commit id or tag (accepted: up to 100 printable characters "
            "without spaces, e.g. the output of `git rev-parse HEAD`; empty: the checkout's HEAD)"
        )
    return raw


REPLICA_NAME_MAX_CHARS = 128


def _env_replica_name(name: str) -> str | None:
    """The prediction service replica's name: 1 to 128 visible ASCII characters, no spaces (it goes into
    an HTTP header and the ``predictions.replica`` column). Unset or empty: None, the service names itself
    ``<hostname>:<port>`` (``neuracrm_mlops.inference.predictor.replica_name``)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if len(raw) > REPLICA_NAME_MAX_CHARS or any(not "!" <= ch <= "~" for ch in raw):
        raise ConfigurationError(
            f"{name}={raw[:140]!r} must be a replica name (accepted: 1 to {REPLICA_NAME_MAX_CHARS} visible "
            "ASCII characters without spaces, e.g. the pod name or host:port; empty: <hostname>:<port>)"
        )
    return raw


def _env_datetime(name: str, default: dt.datetime) -> dt.datetime:
    """An ISO-8601 date or time, UTC unless it names its offset; empty is the default."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        parsed = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not an ISO date or time (accepted: e.g. 2026-01-01 or 2026-01-01T06:00+00:00)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    mlflow_tracking_uri: str
    airflow_home: Path
    redis_url: str | None
    alert_webhook_url: str | None
    accuracy_floor: float
    import_chunk_rows: int = 5_000
    # the longest CSV or Parquet cell import accepts, in UTF-8 bytes: a row with a longer one is
    # quarantined (Python's csv module would refuse the whole file past 131,072 characters)
    import_max_field_bytes: int = 4 * 1024 * 1024
    # `import` without a terminal (piped, in a log): a progress line at most this often (0: every chunk)
    import_progress_seconds: float = 5.0
    forecast_chunk_size: int = 50
    # the most mapped train_forecast_chunk tasks one run makes: chunks grow past forecast_chunk_size to
    # stay under it (Airflow refuses more than [core] max_map_length, 1,024, mapped task instances)
    forecast_max_chunks: int = 1_000
    # how many train_forecast_chunk tasks of one run may run at once (the DAG's
    # max_active_tis_per_dagrun, read when the DAG is parsed): 2 keeps a 2-core LocalExecutor machine
    # busy; on the CeleryExecutor set it to the workers' total concurrency (README: Production and scaling)
    forecast_chunk_concurrency: int = 2
    # Retell AI (voice scenarios): the API key signs Retell's webhooks (x-retell-signature, verified by
    # /voice/events) and authorizes `scenario publish`; None: /voice/events refuses every event and
    # publishing says what to set. The base URL is Retell's API (a stand-in server in the tests).
    retell_api_key: str | None = field(default=None, repr=False)
    retell_base_url: str = "https://api.retellai.com"
    model_poll_seconds: float = 10.0
    # prediction service abuse limits (request_limits.py; rates and buckets are per worker process).
    # The largest request body accepted: 1,000 realistic leads are ~0.55 MB, 1,000 leads or texts at
    # the 5,000-character field limit ~5.5 MB; a larger body gets 413 before it is parsed
    max_request_bytes: int = 8 * 1024 * 1024
    # requests per second and burst per API key and per client address (0: no limit)
    rate_limit_key_per_second: float = 1_000.0
    rate_limit_key_burst: int = 2_000
    rate_limit_address_per_second: float = 2_000.0
    rate_limit_address_burst: int = 4_000
    # key lookups that found no key, per client address: past the burst, a key not in the cache gets
    # 429 without a database lookup (0: no limit)
    auth_failures_per_second: float = 1.0
    auth_failure_burst: int = 20
    # a 429 for a client address over its rate or its budget of unknown keys is answered after this
    # many seconds (at most its Retry-After), so that a client flooding on keep-alive connections is
    # slowed to one request per connection and hold; at most abuse_hold_max held at once per worker,
    # past that a refusal is answered at once (0 seconds: no hold)
    abuse_hold_seconds: float = 1.0
    abuse_hold_max: int = 1_000
    forecast_cache_ttl_seconds: int = 3_600
    prediction_log_flush_seconds: float = 0.5
    # every prediction row is appended to a local journal before its answer leaves (kill -9 loses
    # none); fsynced every this many seconds (0: before each answer, power loss loses none either);
    # past max_mb per process while the database is down, rows are kept in memory only (logged)
    prediction_journal: bool = True
    prediction_journal_fsync_seconds: float = 0.2
    prediction_journal_max_mb: int = 1_024
    # unacknowledged critical alerts are re-delivered as ESCALATED after this long
    alert_escalate_after_minutes: float = 30.0
    # webhook delivery: attempts per delivery (the first try included), backoff doubling from the base
    alert_webhook_retries: int = 3
    alert_webhook_backoff_seconds: float = 0.5
    alert_webhook_timeout_seconds: float = 5.0
    # canary rollout and monitoring
    rollout_steps: tuple[float, ...] = (0.10, 0.50, 1.00)
    min_outcomes: int = 100
    forecast_min_outcomes: int = 3
    bake_deadline_hours: float = 72.0
    bake_poke_seconds: float = 300.0
    monitor_window_hours: float = 168.0
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    bias_attribute: str = "region"
    # model families whose rollout waits for a reviewer's approval before the final step
    rollout_approval: tuple[str, ...] = ()
    # during a canary the challenger also scores the champion's leads (logged as route "shadow")
    shadow_canary: bool = False
    # accuracy floors per (family, organization id or None) overriding accuracy_floor
    accuracy_floors: tuple[tuple[FloorKey, float], ...] = ()
    # degraded modes: every dependency call on the prediction service's request path is bounded well
    # under the client's 30 s. MLflow HTTP calls (per request, and how many retries) ...
    mlflow_timeout_seconds: int = 5
    mlflow_max_retries: int = 1
    # ... PostgreSQL for the serving engine: connecting, one statement, waiting for a pooled connection
    db_connect_timeout_seconds: int = 3
    db_statement_timeout_seconds: float = 10.0
    db_pool_timeout_seconds: float = 2.0
    # ... Redis (the forecast cache: a miss when it is slower than this)
    redis_timeout_seconds: float = 0.05
    # the longest a request waits on the database (key lookup, sales history) before answering 503
    dependency_wait_seconds: float = 2.0
    # the longest a forecast waits for its organization's model to load while the registry is healthy
    # (0 when the registry is failing: the flagged seasonal-naive fallback answers at once)
    forecast_load_wait_seconds: float = 5.0
    # the Retry-After of a 503 answered because a dependency is down
    retry_after_seconds: int = 5
    # API keys: how long an answer is cached (unknown keys shorter), how many are kept, and how long past
    # its expiry a cached answer keeps working while the database cannot be reached
    tenant_cache_ttl_seconds: float = 30.0
    tenant_unknown_ttl_seconds: float = 5.0
    tenant_cache_max_entries: int = 100_000
    tenant_stale_grace_seconds: float = 300.0
    # Airflow: the delay between a failed task's retries (DAG default_args)
    retry_delay_seconds: int = 300
    # the Airflow REST API (e.g. http://airflow:8080) that `import` sends asset events to, and its
    # credentials: a token, or a user and password exchanged for one at ``POST /auth/token``
    airflow_api_url: str | None = None
    airflow_api_username: str | None = None
    airflow_api_password: str | None = None
    airflow_api_token: str | None = None
    # testing only (off by default): the name of a point inside an alias move where the process exits
    # at once, as a crash would (rollout_state.FAILPOINTS lists the names)
    rollout_failpoint: str | None = None
    # the CLI's log level (DEBUG .. CRITICAL); a bad value means WARNING (see log_level_from_environment)
    log_level: str = DEFAULT_LOG_LEVEL
    # the code version recorded with every MLflow run; None: the checkout's `git rev-parse HEAD`
    git_commit: str | None = None
    # the Great Expectations context folder; None: the repository's expectations/
    gx_root: Path | None = None
    # the voice scenario files `train voice_scenario` (the train_voice_scenario DAG) registers;
    # None: the repository's scenarios/
    scenarios_dir: Path | None = None
    # BentoML worker processes of the prediction service
    serving_workers: int = 1
    # the prediction service replica's name, in /status/, the X-NeuraCRM-Replica header and each
    # predictions row; None: <hostname>:<port> (the port the replica listens on)
    replica_name: str | None = None
    # every DAG's start_date: no time-based run is scheduled before it (asset-triggered runs run at once)
    dag_start_date: dt.datetime = DEFAULT_DAG_START_DATE

    def floor_for(self, family: str, organization_id: int | None = None) -> float:
        """The accuracy floor of ``family`` (for one organization when given): the organization's own
        floor, else the family's, else NEURACRM_ACCURACY_FLOOR."""
        floors = dict(self.accuracy_floors)
        if organization_id is not None and (family, organization_id) in floors:
            return floors[(family, organization_id)]
        return floors.get((family, None), self.accuracy_floor)

    @classmethod
    def from_environment(cls) -> Settings:
        home = Path(os.environ.get("NEURACRM_HOME") or ".neuracrm").expanduser().resolve()
        db_url = os.environ.get("NEURACRM_DB_URL") or _sqlite_url(home / "crm.sqlite")
        mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI") or _sqlite_url(home / "mlflow.sqlite")
        airflow_home = Path(os.environ.get("AIRFLOW_HOME") or home / "airflow").expanduser()
        return cls(
            home=home,
            db_url=db_url,
            mlflow_tracking_uri=mlflow_uri,
            airflow_home=airflow_home,
            redis_url=os.environ.get("NEURACRM_REDIS_URL") or None,
            alert_webhook_url=os.environ.get("NEURACRM_ALERT_WEBHOOK_URL") or None,
            accuracy_floor=_env_float("NEURACRM_ACCURACY_FLOOR", 0.80, low=0.0, high=1.0),
            accuracy_floors=tuple(_env_floors("NEURACRM_ACCURACY_FLOORS").items()),
            import_chunk_rows=_env_int("NEURACRM_IMPORT_CHUNK_ROWS", 5_000, low=1, high=10_000_000),
            import_max_field_bytes=_env_int(
                "NEURACRM_IMPORT_MAX_FIELD_BYTES", 4 * 1024 * 1024, low=1024, high=1024 * 1024 * 1024
            ),
            import_progress_seconds=_env_float(
                "NEURACRM_IMPORT_PROGRESS_SECONDS", 5.0, low=0.0, high=3_600.0
            ),
            forecast_chunk_size=_env_int("NEURACRM_FORECAST_CHUNK_SIZE", 50, low=1, high=100_000),
            forecast_max_chunks=_env_int("NEURACRM_FORECAST_MAX_CHUNKS", 1_000, low=1, high=100_000),
            forecast_chunk_concurrency=_env_int("NEURACRM_FORECAST_CHUNK_CONCURRENCY", 2, low=1, high=10_000),
            retell_api_key=os.environ.get("NEURACRM_RETELL_API_KEY") or None,
            retell_base_url=(os.environ.get("NEURACRM_RETELL_BASE_URL") or "https://api.retellai.com").rstrip(
                "/"
            ),
            model_poll_seconds=_env_float("NEURACRM_MODEL_POLL_SECONDS", 10.0, low=0.1, high=3_600.0),
            max_request_bytes=_env_int(
                "NEURACRM_MAX_REQUEST_BYTES", 8 * 1024 * 1024, low=1_024, high=1024 * 1024 * 1024
            ),
            rate_limit_key_per_second=_env_float(
                "NEURACRM_RATE_LIMIT_KEY_PER_SECOND", 1_000.0, low=0.0, high=1_000_000.0
            ),
            rate_limit_key_burst=_env_int("NEURACRM_RATE_LIMIT_KEY_BURST", 2_000, low=1, high=10_000_000),
            rate_limit_address_per_second=_env_float(
                "NEURACRM_RATE_LIMIT_ADDRESS_PER_SECOND", 2_000.0, low=0.0, high=1_000_000.0
            ),
            rate_limit_address_burst=_env_int(
                "NEURACRM_RATE_LIMIT_ADDRESS_BURST", 4_000, low=1, high=10_000_000
            ),
            auth_failures_per_second=_env_float(
                "NEURACRM_AUTH_FAILURES_PER_SECOND", 1.0, low=0.0, high=1_000_000.0
            ),
            auth_failure_burst=_env_int("NEURACRM_AUTH_FAILURE_BURST", 20, low=1, high=10_000_000),
            abuse_hold_seconds=_env_float("NEURACRM_ABUSE_HOLD_SECONDS", 1.0, low=0.0, high=30.0),
            abuse_hold_max=_env_int("NEURACRM_ABUSE_HOLD_MAX", 1_000, low=0, high=1_000_000),
            prediction_log_flush_seconds=_env_float(
                "NEURACRM_PREDICTION_LOG_FLUSH_SECONDS", 0.5, low=0.01, high=3_600.0
            ),
            prediction_journal=_env_switch("NEURACRM_PREDICTION_JOURNAL", True),
            prediction_journal_fsync_seconds=_env_float(
                "NEURACRM_PREDICTION_JOURNAL_FSYNC_SECONDS", 0.2, low=0.0, high=60.0
            ),
            prediction_journal_max_mb=_env_int(
                "NEURACRM_PREDICTION_JOURNAL_MAX_MB", 1_024, low=1, high=1_048_576
            ),
            forecast_cache_ttl_seconds=int(
                _env_float("NEURACRM_FORECAST_CACHE_TTL_SECONDS", 3_600, low=1, high=7 * 86_400)
            ),
            alert_escalate_after_minutes=_env_float(
                "NEURACRM_ALERT_ESCALATE_MINUTES", 30.0, low=0.0, high=7 * 24 * 60.0
            ),
            alert_webhook_retries=_env_int("NEURACRM_ALERT_WEBHOOK_RETRIES", 3, low=1, high=10),
            alert_webhook_backoff_seconds=_env_float(
                "NEURACRM_ALERT_WEBHOOK_BACKOFF_SECONDS", 0.5, low=0.0, high=60.0
            ),
            alert_webhook_timeout_seconds=_env_float(
                "NEURACRM_ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0, low=0.1, high=120.0
            ),
            rollout_steps=_env_steps("NEURACRM_ROLLOUT_STEPS", (0.10, 0.50, 1.00)),
            min_outcomes=_env_int("NEURACRM_MIN_OUTCOMES", 100, low=1, high=10_000_000),
            forecast_min_outcomes=_env_int("NEURACRM_FORECAST_MIN_OUTCOMES", 3, low=1, high=240),
            bake_deadline_hours=_env_float("NEURACRM_BAKE_DEADLINE_HOURS", 72.0, low=0.0, high=24 * 90.0),
            bake_poke_seconds=_env_float("NEURACRM_BAKE_POKE_SECONDS", 300.0, low=1.0, high=86_400.0),
            monitor_window_hours=_env_float(
                "NEURACRM_MONITOR_WINDOW_HOURS", 168.0, low=0.01, high=24 * 365.0
            ),
            mlflow_ui_url=os.environ.get("NEURACRM_MLFLOW_UI_URL") or "http://127.0.0.1:5000",
            bias_attribute=os.environ.get("NEURACRM_BIAS_ATTRIBUTE") or "region",
            shadow_canary=_env_switch("NEURACRM_SHADOW_CANARY", False),
            rollout_approval=tuple(
                part.strip()
                for part in os.environ.get("NEURACRM_ROLLOUT_APPROVAL", "").split(",")
                if part.strip()
            ),
            mlflow_timeout_seconds=_env_int("NEURACRM_MLFLOW_TIMEOUT_SECONDS", 5, low=1, high=120),
            mlflow_max_retries=_env_int("NEURACRM_MLFLOW_MAX_RETRIES", 1, low=0, high=10),
            db_connect_timeout_seconds=_env_int("NEURACRM_DB_CONNECT_TIMEOUT_SECONDS", 3, low=2, high=120),
            db_statement_timeout_seconds=_env_float(
                "NEURACRM_DB_STATEMENT_TIMEOUT_SECONDS", 10.0, low=0.1, high=3_600.0
            ),
            db_pool_timeout_seconds=_env_float("NEURACRM_DB_POOL_TIMEOUT_SECONDS", 2.0, low=0.1, high=120.0),
            redis_timeout_seconds=_env_float("NEURACRM_REDIS_TIMEOUT_SECONDS", 0.05, low=0.001, high=10.0),
            dependency_wait_seconds=_env_float("NEURACRM_DEPENDENCY_WAIT_SECONDS", 2.0, low=0.05, high=25.0),
            forecast_load_wait_seconds=_env_float(
                "NEURACRM_FORECAST_LOAD_WAIT_SECONDS", 5.0, low=0.0, high=25.0
            ),
            retry_after_seconds=_env_int("NEURACRM_RETRY_AFTER_SECONDS", 5, low=1, high=3_600),
            tenant_cache_ttl_seconds=_env_float(
                "NEURACRM_TENANT_CACHE_TTL_SECONDS", 30.0, low=0.0, high=86_400.0
            ),
            tenant_unknown_ttl_seconds=_env_float(
                "NEURACRM_TENANT_UNKNOWN_TTL_SECONDS", 5.0, low=0.0, high=86_400.0
            ),
            tenant_cache_max_entries=_env_int(
                "NEURACRM_TENANT_CACHE_MAX_ENTRIES", 100_000, low=1, high=10_000_000
            ),
            tenant_stale_grace_seconds=_env_float(
                "NEURACRM_TENANT_STALE_GRACE_SECONDS", 300.0, low=0.0, high=86_400.0
            ),
            retry_delay_seconds=_env_int("NEURACRM_RETRY_DELAY_SECONDS", 300, low=0, high=86_400),
            airflow_api_url=(os.environ.get("NEURACRM_AIRFLOW_API_URL") or "").strip().rstrip("/") or None,
            airflow_api_username=os.environ.get("NEURACRM_AIRFLOW_API_USERNAME") or None,
            airflow_api_password=os.environ.get("NEURACRM_AIRFLOW_API_PASSWORD") or None,
            airflow_api_token=os.environ.get("NEURACRM_AIRFLOW_API_TOKEN") or None,
            rollout_failpoint=(os.environ.get("NEURACRM_ROLLOUT_FAILPOINT") or "").strip() or None,
            log_level=log_level_from_environment()[0],
            git_commit=_env_git_commit("NEURACRM_GIT_COMMIT"),
            gx_root=gx_root_from_environment(),
            scenarios_dir=(
                Path(raw).expanduser().resolve()
                if (raw := os.environ.get("NEURACRM_SCENARIOS_DIR", "").strip())
                else None
            ),
            serving_workers=serving_workers_from_environment(),
            replica_name=_env_replica_name("NEURACRM_REPLICA_NAME"),
            dag_start_date=_env_datetime("NEURACRM_DAG_START_DATE", DEFAULT_DAG_START_DATE),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_environment()


_DAG_PARSING_WARNED: set[str] = set()


def settings_for_dag_parsing() -> Settings:
    """The settings a DAG file needs while it is parsed (step counts, retry delay), never raising.

    A bad value must not break the import of every DAG: here it falls back to the embedded defaults
    (the DAG processor's log says which value is bad), and the first task that calls
    :func:`get_settings` fails with the clear error instead."""
    try:
        return get_settings()
    except ConfigurationError as exc:
        if str(exc) not in _DAG_PARSING_WARNED:  # once per bad value, not once per DAG
            _DAG_PARSING_WARNED.add(str(exc))
            import logging

            logging.getLogger(__name__).warning("using default settings to parse the DAGs: %s", exc)
        return Settings(
            home=Path(".neuracrm").resolve(),
            db_url="",
            mlflow_tracking_uri="",
            airflow_home=Path(".neuracrm/airflow").resolve(),
            redis_url=None,
            alert_webhook_url=None,
            accuracy_floor=0.80,
        )


def reset_settings() -> None:
    """Forget the cached settings (tests and long-lived processes that change the environment)."""
    get_settings.cache_clear()
