"""Atomic rollout state: every alias or weight move is written to the ledger before it is made, and a
move a crash cut short is finished or undone by ``reconcile_pending``.

A move (start, step, promote, abort, reject, rollback, the raise after approval; per organization
for forecasts) is several MLflow calls. To keep the ledger and the registry agreeing:

1. it runs under the per-model lock (:func:`locked_model`: PostgreSQL session-level advisory lock on
   a connection of its own; SQLite: an ``flock`` on a file beside the database), and first repairs
   any move of the same model a crash left ``pending``, so it reads a consistent state;
2. it plans its registry calls (:class:`RegistryPlan`: each call with the value it replaces);
3. :func:`run_move` writes the ledger row ``pending`` with that plan and commits it on its own
   transaction, makes the calls (each retried with :func:`retry_registry`, each idempotent: setting
   a value twice is harmless, deleting an absent alias or tag is done), then marks the row ``done``.

A crash (or a registry call that still fails after its retries: the error propagates) leaves the
row ``pending``. :func:`reconcile_pending` (the first task of the monitor_models DAG, and every move
of the same model before it starts) takes the model lock, so a move in progress is never touched,
and per action either finishes the move or reverts it (see ``REPAIR``), marks the row ``done`` or
``reverted``, and raises one warning alert per row (kind ``rollout_reconciled``). Only ``done`` rows
are alias history (``ledger.champion_moves``). Running it again finds nothing to do.

The same protocol serves registered models and voice scenarios (prompts in MLflow's prompt registry,
``voice_scenario.<scenario>``, whose moves are ``release.scenario_rollout``'s). MLflow's model calls
do not see prompts, so every registry read and write goes through a :class:`RegistryAccess` chosen
by name (:func:`registry_access`): the model registry, or ``prompt_registry.PromptRegistryAccess``
for a scenario's prompt (canary weight in its ``neuracrm.canary_weight`` tag). The ledger rows and
their registry plans look the same for both.

Failpoints (testing only): ``NEURACRM_ROLLOUT_FAILPOINT`` names one of :data:`FAILPOINTS`; the
process exits at once (``os._exit``) when a move reaches it, as a crash would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.store import ledger, prompt_registry, registry

log = logging.getLogger(__name__)

T = TypeVar("T")

# -- failpoints -------------------------------------------------------------------------------------

# the labels of the registry calls of each move (the ledger action); a failpoint follows each call
MOVE_CALLS: dict[str, tuple[str, ...]] = {
    "canary": ("started_tag", "weight", "step_started_tag", "cohort_tag"),
    "promote": (
        "champion_alias",
        "previous_alias",
        "old_champion_status",
        "challenger_alias",
        "champion_status",
        "weight",
        "started_tag",
        "step_started_tag",
        "cohort_tag",
    ),
    "abort": ("weight", "started_tag", "step_started_tag", "cohort_tag", "challenger_alias"),
    "reject": (
        "weight",
        "started_tag",
        "step_started_tag",
        "cohort_tag",
        "challenger_alias",
        "rejected_status",
        "reason_tag",
    ),
    "rollback": ("champion_alias", "champion_status", "left_status", "reason_tag", "previous_alias"),
}
FAILPOINTS: frozenset[str] = frozenset(
    {f"{action}:after_{label}" for action, labels in MOVE_CALLS.items() for label in labels}
    | {f"{action}:{point}" for action in MOVE_CALLS for point in ("after_pending", "before_done")}
)
FAILPOINT_EXIT_CODE = 86


def failpoint(name: str) -> None:
    """Exit the process at once (``os._exit``, no cleanup, as a crash) when NEURACRM_ROLLOUT_FAILPOINT
    names this point. ValueError for a name not in :data:`FAILPOINTS` (a programming error)."""
    if name not in FAILPOINTS:
        raise ValueError(f"unknown rollout failpoint {name!r}")
    if get_settings().rollout_failpoint == name:
        os.write(2, f"NEURACRM_ROLLOUT_FAILPOINT: exiting at {name}\n".encode())
        os._exit(FAILPOINT_EXIT_CODE)


# -- registry calls: retried, idempotent ------------------------------------------------------------

# MLflow error codes that a retry cannot fix (the request itself is wrong, or the thing is gone)
PERMANENT_ERRORS = frozenset(
    {
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_PARAMETER_VALUE",
        "INVALID_STATE",
        "BAD_REQUEST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    }
)


def _error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "error_code", None)
    return str(code) if code else None


def retry_registry(call: Callable[[], T], *, what: str, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, retried like the alert webhook: NEURACRM_ALERT_WEBHOOK_RETRIES attempts (the first
    included) with a backoff doubling from NEURACRM_ALERT_WEBHOOK_BACKOFF_SECONDS (at most 30 s).
    An MLflow error a retry cannot fix (:data:`PERMANENT_ERRORS`) is raised at once, and so is the
    last attempt's error: the caller's ledger row stays pending and reconcile repairs it."""
    settings = get_settings()
    attempts = settings.alert_webhook_retries
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if _error_code(exc) in PERMANENT_ERRORS or attempt >= attempts:
                raise
            log.warning("registry call %s failed (attempt %d/%d): %s", what, attempt, attempts, exc)
            sleep(min(settings.alert_webhook_backoff_seconds * 2 ** (attempt - 1), 30.0))
    raise AssertionError("unreachable")  # pragma: no cover


def _absent_is_done(call: Callable[[], Any]) -> None:
    """A delete whose target is already gone has nothing left to do."""
    try:
        call()
    except Exception as exc:
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise


# -- registry access: the model registry, or the prompt registry for a scenario --------------------


class RegistryAccess(Protocol):
    """The registry reads and writes of a move, on one kind of registered thing (a registered model
    or a registered prompt); ``name`` is its registered name, versions are numbers as text. Calls are
    made once (the callers retry them); deleting an absent alias or tag is no error."""

    @property
    def weight_tag(self) -> str:
        """The registered thing's tag holding the challenger's traffic share."""
        ...

    def weight_value(self, weight: float) -> str:
        """That tag's text for a share (0..1); ValueError outside it."""
        ...

    def read(self, client: Any, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """(alias -> version, tags of the registered thing)."""
        ...

    def version_tags(self, client: Any, name: str, version: str) -> dict[str, str]:
        """The tags of a version (``RESOURCE_DOES_NOT_EXIST`` when it is not registered)."""
        ...

    def set_alias(self, client: Any, name: str, alias: str, version: str) -> None: ...

    def delete_alias(self, client: Any, name: str, alias: str) -> None: ...

    def set_tag(self, client: Any, name: str, key: str, value: str) -> None: ...

    def delete_tag(self, client: Any, name: str, key: str) -> None: ...

    def set_version_tag(self, client: Any, name: str, version: str, key: str, value: str) -> None: ...

    def delete_version_tag(self, client: Any, name: str, version: str, key: str) -> None: ...

    def links(self, name: str, version: str | None) -> dict[str, str]:
        """Where on-call looks at a version (alert links)."""
        ...


class ModelRegistryAccess:
    """:class:`RegistryAccess` on MLflow's model registry (every registered model's family)."""

    weight_tag = registry.CANARY_WEIGHT_TAG

    def weight_value(self, weight: float) -> str:
        return registry.canary_weight_value(weight)

    def read(self, client: Any, name: str) -> tuple[dict[str, str], dict[str, str]]:
        model = client.get_registered_model(name)
        return {a: str(v) for a, v in (model.aliases or {}).items()}, dict(model.tags or {})

    def version_tags(self, client: Any, name: str, version: str) -> dict[str, str]:
        return dict(client.get_model_version(name, version).tags or {})

    def set_alias(self, client: Any, name: str, alias: str, version: str) -> None:
        client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, client: Any, name: str, alias: str) -> None:
        client.delete_registered_model_alias(name, alias)

    def set_tag(self, client: Any, name: str, key: str, value: str) -> None:
        client.set_registered_model_tag(name, key, value)

    def delete_tag(self, client: Any, name: str, key: str) -> None:
        client.delete_registered_model_tag(name, key)

    def set_version_tag(self, client: Any, name: str, version: str, key: str, value: str) -> None:
        client.set_model_version_tag(name, version, key, value)

    def delete_version_tag(self, client: Any, name: str, version: str, key: str) -> None:
        client.delete_model_version_tag(name, version, key)

    def links(self, name: str, version: str | None) -> dict[str, str]:
        return registry.version_links(name, version)


MODEL_REGISTRY: RegistryAccess = ModelRegistryAccess()
PROMPT_REGISTRY: RegistryAccess = prompt_registry.PromptRegistryAccess()


def registry_access(name: str) -> RegistryAccess:
    """Where ``name`` lives: a voice scenario's prompt (``voice_scenario.<scenario>``) in the prompt
    registry, anything else in the model registry."""
    return PROMPT_REGISTRY if prompt_registry.scenario_of(name) is not None else MODEL_REGISTRY


ALIAS, MODEL_TAG, VERSION_TAG = "alias", "model_tag", "version_tag"


@dataclass(frozen=True)
class RegistryCall:
    """One registry write of a move: ``key`` (an alias, or a tag of the registered model or prompt,
    or of its ``version``) set to ``value`` (None: deleted); ``before`` is what it held when the move
    was planned."""

    target: str  # alias | model_tag (the registered model's or prompt's own tag) | version_tag
    key: str
    value: str | None
    before: str | None
    label: str  # names the failpoint after it: "<action>:after_<label>"
    version: str | None = None  # version tags only

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryCall:
        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            target=str(data["target"]),
            key=str(data["key"]),
            value=text("value"),
            before=text("before"),
            label=str(data["label"]),
            version=text("version"),
        )

    def describe(self, value: str | None) -> str:
        """``alias champion -> v3``, ``tag canary_weight = 0.5``, ``v2 tag status removed``."""
        if self.target == ALIAS:
            return f"alias {self.key} " + (f"-> v{value}" if value is not None else "removed")
        where = "tag" if self.target == MODEL_TAG else f"v{self.version} tag"
        return f"{where} {self.key} " + (f"= {value}" if value is not None else "removed")

    def apply(self, client: Any, name: str, value: str | None) -> None:
        """Make the registry hold ``value`` for this call's target (retried; idempotent: deleting
        what is absent is done, and so is tagging a version deleted from the registry)."""
        what = f"{name}: {self.describe(value)}"
        key, version = self.key, str(self.version)
        access = registry_access(name)
        if value is None:
            delete: Callable[[], Any] = {
                ALIAS: lambda: access.delete_alias(client, name, key),
                MODEL_TAG: lambda: access.delete_tag(client, name, key),
                VERSION_TAG: lambda: access.delete_version_tag(client, name, version, key),
            }[self.target]
            retry_registry(lambda: _absent_is_done(delete), what=what)
            return
        setter: Callable[[], Any] = {
            ALIAS: lambda: access.set_alias(client, name, key, value),
            MODEL_TAG: lambda: access.set_tag(client, name, key, value),
            VERSION_TAG: lambda: access.set_version_tag(client, name, version, key, value),
        }[self.target]
        try:
            retry_registry(setter, what=what)
        except Exception as exc:
            if self.target != VERSION_TAG or _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise
            log.warning("%s: v%s was deleted from the registry; nothing to tag", name, version)


class RegistryPlan:
    """The registry calls of one move of ``name`` (ledger action ``action``), planned from the
    registry as read under the lock; calls that would change nothing are left out.

    ``model``: the registered model as the caller read it (``client.get_registered_model``); None
    (or :meth:`read`): read now through ``name``'s :func:`registry_access`, which is the only way for
    a scenario's prompt (the model registry does not see prompts)."""

    def __init__(self, client: Any, name: str, action: str, model: Any = None) -> None:
        if action not in MOVE_CALLS:
            raise ValueError(f"no registry move is recorded as {action!r}")
        self.client, self.name, self.action = client, name, action
        self.access = registry_access(name)
        if model is None:
            access = self.access
            self._aliases, self._tags = retry_registry(lambda: access.read(client, name), what=f"read {name}")
        else:
            self._aliases = {a: str(v) for a, v in (model.aliases or {}).items()}
            self._tags = dict(model.tags or {})
        self._version_tags: dict[str, dict[str, str]] = {}
        self.calls: list[RegistryCall] = []

    @classmethod
    def read(cls, client: Any, name: str, action: str) -> RegistryPlan:
        """A plan for ``name`` (a registered model or a scenario's prompt), read from the registry now."""
        return cls(client, name, action)

    def _add(
        self, target: str, key: str, value: str | None, before: str | None, label: str, **kw: Any
    ) -> None:
        if label not in MOVE_CALLS[self.action]:
            raise ValueError(f"a {self.action} has no registry call {label!r} (rollout_state.MOVE_CALLS)")
        if value != before:
            self.calls.append(RegistryCall(target, key, value, before, label, **kw))

    def alias(self, alias: str, version: str | None, label: str) -> None:
        before = self._aliases.get(alias)
        self._add(ALIAS, alias, version, before, label)
        self._remember(self._aliases, alias, version)

    def model_tag(self, tag: str, value: str | None, label: str) -> None:
        before = self._tags.get(tag)
        self._add(MODEL_TAG, tag, value, before, label)
        self._remember(self._tags, tag, value)

    def weight(self, weight: float, label: str = "weight") -> None:
        """The challenger's traffic share, in the tag ``name``'s registry keeps it in (models:
        ``canary_weight``; scenarios: ``neuracrm.canary_weight``, as ``prompt_registry`` writes it)."""
        self.model_tag(self.access.weight_tag, self.access.weight_value(weight), label)

    def version_tag(self, version: str, tag: str, value: str | None, label: str) -> None:
        tags = self._tags_of(version)
        before = tags.get(tag)
        self._add(VERSION_TAG, tag, value, before, label, version=version)
        self._remember(tags, tag, value)

    def _tags_of(self, version: str) -> dict[str, str]:
        if version not in self._version_tags:
            access, client, name = self.access, self.client, self.name
            self._version_tags[version] = retry_registry(
                lambda: access.version_tags(client, name, version), what=f"{name} v{version}"
            )
        return self._version_tags[version]

    @staticmethod
    def _remember(values: dict[str, str], key: str, value: str | None) -> None:
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value


# -- the per-model lock -----------------------------------------------------------------------------

_held = threading.local()


def _held_keys() -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] | None = getattr(_held, "keys", None)
    if keys is None:
        keys = _held.keys = set()
    return keys


def _lock_key(engine: sa.Engine, name: str) -> tuple[str, str]:
    return engine.url.render_as_string(hide_password=True), name


def holds_lock(engine: sa.Engine, name: str) -> bool:
    """Whether this thread holds ``name``'s lock (taken again, the lock is re-entered, not waited on)."""
    return _lock_key(engine, name) in _held_keys()


@contextlib.contextmanager
def _postgresql_lock(engine: sa.Engine, name: str) -> Iterator[None]:
    """A session-level advisory lock on a connection of its own (autocommit): writes on other
    connections commit while it is held, and the server drops it when the process dies."""
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
    conn = engine.connect()
    try:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            except Exception:  # closing the session releases the lock with it
                conn.invalidate()
                raise
    finally:
        conn.close()


def _lock_directory(engine: sa.Engine) -> Path:
    """Where SQLite's model locks live: beside the database file (every process using it sees them)."""
    database = engine.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).resolve()
        return path.with_name(path.name + ".locks")
    return get_settings().home / "locks"


@contextlib.contextmanager
def _file_lock(engine: sa.Engine, name: str) -> Iterator[None]:
    """An exclusive ``flock`` (per open file, so threads exclude each other too); the kernel drops it
    when the process dies. Independent of SQLite's own locks: the ledger writes never wait on it."""
    directory = _lock_directory(engine)
    directory.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100]
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    with open(directory / f"{safe}-{digest}.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def model_lock(engine: sa.Engine, name: str) -> Iterator[None]:
    """Hold ``name``'s exclusive lock (re-entrant in the same thread). Unlike a transaction-level
    lock, it lets a ledger row commit on its own while held: a pending row survives a crash."""
    key = _lock_key(engine, name)
    held = _held_keys()
    if key in held:
        yield
        return
    lock = _postgresql_lock if engine.dialect.name == "postgresql" else _file_lock
    with lock(engine, name):
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)


@contextlib.contextmanager
def locked_model(engine: sa.Engine, name: str, *, actor: str) -> Iterator[None]:
    """The lock every move of ``name`` runs under: taken (unless this thread holds it already), then
    any move of ``name`` a crash left pending is repaired first (:func:`reconcile_pending`'s rules,
    with its alert), so the move reads the registry as the ledger says it is."""
    if holds_lock(engine, name):
        yield
        return
    with model_lock(engine, name):
        _repair_model(engine, None, name, actor=actor, report=None)
        yield


# -- moves ------------------------------------------------------------------------------------------


def run_move(
    engine: sa.Engine,
    plan: RegistryPlan,
    *,
    actor: str,
    reason: str,
    alias: str | None,
    from_version: str | None,
    to_version: str | None,
    weight: float | None,
    metrics: dict[str, Any] | None = None,
    organization_id: int | None = None,
) -> int:
    """Carry out ``plan`` with its ledger row: the row is committed ``pending`` first, then the
    registry calls are made, then the row is marked ``done``; returns its id. Must run under
    ``name``'s lock. A call that still fails after its retries raises and leaves the row pending."""
    name, action = plan.name, plan.action
    if not holds_lock(engine, name):
        raise RuntimeError(f"a move of {name} must run under its lock (rollout_state.locked_model)")
    row: dict[str, Any] = {
        "actor": actor,
        "model_name": name,
        "organization_id": organization_id,
        "action": action,
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "weight": weight,
        "reason": reason,
        "metrics": metrics or {},
    }
    if not plan.calls:  # nothing to move in the registry: the row is the whole change
        return ledger.record_change(engine, **row)
    entry_id = ledger.record_change(
        engine, **row, state=ledger.PENDING, registry_plan=[c.as_dict() for c in plan.calls]
    )
    failpoint(f"{action}:after_pending")
    for call in plan.calls:
        call.apply(plan.client, name, call.value)
        failpoint(f"{action}:after_{call.label}")
    failpoint(f"{action}:before_done")
    ledger.finish_change(engine, entry_id, ledger.DONE)
    return entry_id


# -- reconcile --------------------------------------------------------------------------------------

FINISH, REVERT = "finish", "revert"
# What reconcile does with a move a crash cut short, per ledger action:
# - promote, rollback: finish. The decision was made (a canary passed; a champion was judged bad or
#   on-call chose the version), the champion alias may already serve the new version, and undoing it
#   would put back a version that was judged worse (a rollback) or flip serving twice (a promote).
# - abort, reject: finish. Taking a challenger out of traffic is always safe: the champion serves all.
# - canary (start, next step, raise after approval, forecast cohort weights): revert. A half-made
#   raise would judge the next step on the previous step's window; back at its earlier weight the
#   challenger has less traffic, and the rollout DAG judges (and raises) again on its next run.
REPAIR: dict[str, str] = {
    "promote": FINISH,
    "rollback": FINISH,
    "abort": FINISH,
    "reject": FINISH,
    "canary": REVERT,
}
ALERT_KIND = "rollout_reconciled"


@dataclass
class ReconcileReport:
    """What one :func:`reconcile_pending` found and did (``as_dict`` is XCom-sized)."""

    pending: int = 0  # pending rows found (moves in progress included: they were waited for)
    repaired: list[dict[str, Any]] = field(default_factory=list)  # id, model, action, outcome, alert
    failed: list[dict[str, Any]] = field(default_factory=list)  # model, error (rows stay pending)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "finished": sum(1 for r in self.repaired if r["outcome"] == ledger.DONE),
            "reverted": sum(1 for r in self.repaired if r["outcome"] == ledger.REVERTED),
            "repaired": list(self.repaired),
            "failed": list(self.failed),
        }


def reconcile_pending(*, actor: str, engine: sa.Engine | None = None) -> ReconcileReport:
    """Repair every move a crash left ``pending``: finish it or revert it (``REPAIR``), mark the row
    ``done`` or ``reverted``, raise one warning alert per row (dedup key per ledger row).

    Each model is repaired under its lock, so a move in progress is waited for, not touched (its row
    is ``done`` by then). Registry calls are only made where the registry still holds what the move
    left (``before`` to finish, the move's value to revert); anything changed since by someone else
    is left as found and named in the alert. Idempotent: a second run finds no pending row. A model
    whose repair fails (the registry is down) stays pending and is listed in ``failed``; the others
    are still repaired."""
    if engine is None:
        from neuracrm_mlops.store.db.engine import get_engine

        engine = get_engine()
    report = ReconcileReport()
    names = sorted({entry.model_name for entry in ledger.pending_entries(engine)})
    if not names:
        return report
    client = registry.configure_mlflow()
    for name in names:
        if holds_lock(engine, name):  # this thread is in the middle of a move of it
            continue
        try:
            with model_lock(engine, name):
                _repair_model(engine, client, name, actor=actor, report=report)
        except Exception as exc:
            log.exception("%s: a pending rollout move could not be repaired", name)
            report.failed.append({"model_name": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
    return report


def _repair_model(
    engine: sa.Engine, client: Any | None, name: str, *, actor: str, report: ReconcileReport | None
) -> None:
    """Repair ``name``'s pending rows, oldest first (under its lock); stops at the first failure."""
    entries = ledger.pending_entries(engine, model_name=name)
    if report is not None:
        report.pending += len(entries)
    if entries and client is None:
        client = registry.configure_mlflow()
    for entry in entries:
        outcome, alert_id = _repair(engine, client, entry, actor=actor)
        if report is not None:
            report.repaired.append(
                {
                    "id": entry.id,
                    "model_name": name,
                    "action": entry.action,
                    "outcome": outcome,
                    "alert_id": alert_id,
                }
            )


def _tags_of_version(client: Any, name: str, version: str) -> dict[str, str]:
    """The tags of ``name`` v``version`` ({} when it was deleted from the registry)."""
    access = registry_access(name)
    try:
        return retry_registry(
            lambda: access.version_tags(client, name, version), what=f"read {name} v{version}"
        )
    except Exception as exc:
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
        return {}


def _current_values(client: Any, name: str, calls: Sequence[RegistryCall]) -> list[str | None]:
    """What the registry (``name``'s: models or prompts) holds now for each call's target."""
    access = registry_access(name)
    aliases, tags = retry_registry(lambda: access.read(client, name), what=f"read {name}")
    version_tags: dict[str, dict[str, str]] = {}
    values: list[str | None] = []
    for call in calls:
        if call.target == ALIAS:
            values.append(aliases.get(call.key))
        elif call.target == MODEL_TAG:
            values.append(tags.get(call.key))
        else:
            version = str(call.version)
            if version not in version_tags:
                version_tags[version] = _tags_of_version(client, name, version)
            values.append(version_tags[version].get(call.key))
    return values


def _repair(engine: sa.Engine, client: Any, entry: ledger.LedgerEntry, *, actor: str) -> tuple[str, int]:
    """Finish or revert one pending move; returns (the row's new state, the alert's id)."""
    calls = [RegistryCall.from_dict(c) for c in entry.registry_plan or []]
    mode = REPAIR.get(entry.action, FINISH)
    found = _current_values(client, entry.model_name, calls)
    made = [call for call, now in zip(calls, found, strict=True) if now == call.value]
    changed: list[str] = []
    left: list[str] = []
    order = list(zip(calls, found, strict=True))
    for call, now in order if mode == FINISH else reversed(order):
        start, goal = (call.before, call.value) if mode == FINISH else (call.value, call.before)
        if now == goal:
            continue
        if now != start:  # someone changed it since the move was planned: not ours to overwrite
            left.append(f"{call.describe(now)} (the move wanted {call.describe(goal)})")
            continue
        call.apply(client, entry.model_name, goal)
        changed.append(call.describe(goal))
    state = ledger.DONE if mode == FINISH else ledger.REVERTED
    ledger.finish_change(engine, entry.id, state)
    alert_id = _alert(engine, entry, calls, made, changed, left, state=state, actor=actor)
    log.warning(
        "%s: pending ledger row %s (%s) %s by %s: %s",
        entry.model_name,
        entry.id,
        entry.action,
        "finished" if state == ledger.DONE else "reverted",
        actor,
        "; ".join(changed) or "no registry call was needed",
    )
    return state, alert_id


def _move_text(entry: ledger.LedgerEntry) -> str:
    if entry.action in ("promote", "rollback"):
        return f"champion v{entry.from_version or '-'} -> v{entry.to_version}"
    if entry.action in ("abort", "reject"):
        return f"challenger v{_left_challenger(entry)} out of traffic"
    weight = f"{entry.weight:.0%}" if entry.weight is not None else "?"
    return f"challenger v{entry.to_version} to {weight} of traffic"


def _left_challenger(entry: ledger.LedgerEntry) -> str | None:
    """The challenger an abort or reject took out: a model's row names it as ``from_version``, a
    scenario's (champion -> challenger, as its canary rows) as ``to_version``."""
    return entry.to_version or entry.from_version


def _scenario_runbook(entry: ledger.LedgerEntry, scenario: str) -> str:
    """The runbook of a repaired move of a voice scenario (its commands are ``scenario ...``)."""
    name = entry.model_name
    check = (
        "Check the scenario's aliases and canary weight: `neuracrm-mlops status` (or "
        "`neuracrm-mlops scenario list`, and the prompt's MLflow page)."
    )
    if entry.action in ("promote", "rollback"):
        if not entry.from_version:
            return f"{check} v{entry.to_version} answers calls as champion now (the scenario's first)."
        return (
            f"{check} v{entry.to_version} answers calls as champion now. If v{entry.from_version} "
            f"should answer instead, set the champion alias of {name} back to {entry.from_version} in "
            f"MLflow and record it in the ledger; a champion below the floor is rolled back by "
            f"`neuracrm-mlops scenario monitor {scenario}` (the monitor_models DAG)."
        )
    if entry.action in ("abort", "reject"):
        return (
            f"{check} v{_left_challenger(entry)} answers no calls now; the champion answers all of them. "
            f"To roll a version out again: register the scenario file "
            f"(`neuracrm-mlops scenario register scenarios/{scenario}.yaml`), then "
            f"`neuracrm-mlops scenario rollout {scenario}` (or the rollout_voice_scenario DAG)."
        )
    return (
        f"{check} The canary weight is back where it was before the interrupted step; the rollout goes "
        f"on when the rollout_voice_scenario DAG runs again (or `neuracrm-mlops scenario rollout "
        f"{scenario}`)."
    )


def _runbook(entry: ledger.LedgerEntry, state: str) -> str:
    scenario = prompt_registry.scenario_of(entry.model_name)
    if scenario is not None:  # a prompt, whatever family the registry files it under
        return _scenario_runbook(entry, scenario)

    from neuracrm_mlops.families import get_family
    from neuracrm_mlops.release.live_stats import family_of
    from neuracrm_mlops.release.rollout import cli_model_args, rollback_command

    name = entry.model_name
    family = family_of(name)
    check = "Check the aliases and the canary weight: `neuracrm-mlops status` (and the MLflow page)."
    if entry.action in ("promote", "rollback"):
        return (
            f"{check} v{entry.to_version} is champion now. If v{entry.from_version} should serve "
            f"instead: `{rollback_command(name, entry.from_version)}`."
            if entry.from_version
            else f"{check} v{entry.to_version} is champion now (the model's first)."
        )
    if entry.action in ("abort", "reject"):
        return (
            f"{check} v{entry.from_version} serves no traffic now; the champion serves everything. "
            f"To roll a version out again: train it (`neuracrm-mlops train {cli_model_args(name)}`), "
            f"then run the rollout_{family} DAG."
        )
    # per-organization families roll out by family (`rollout sales_forecast step`), the rest by model
    cli = family if get_family(family).naming == "per_organization" else name
    return (
        f"{check} The canary weight is back where it was before the interrupted step; the rollout "
        f"goes on when the rollout_{family} DAG runs again (or `neuracrm-mlops rollout {cli} step`)."
    )


def _alert(
    engine: sa.Engine,
    entry: ledger.LedgerEntry,
    calls: Sequence[RegistryCall],
    made: Sequence[RegistryCall],
    changed: Sequence[str],
    left: Sequence[str],
    *,
    state: str,
    actor: str,
) -> int:
    from neuracrm_mlops.store.alerts import raise_alert

    when = entry.created_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    verb = "finished" if state == ledger.DONE else "undone"
    found = (
        f"{len(made)} of its {len(calls)} registry calls had been made"
        + (f" ({'; '.join(c.describe(c.value) for c in made)})" if made else "")
        if calls
        else "it had no registry calls"
    )
    message = (
        f"Ledger row {entry.id}, a {entry.action} of {entry.model_name} ({_move_text(entry)}) by "
        f"{entry.actor} at {when}, was left pending: the process stopped during the move. Found: "
        f"{found}."
    )
    if state == ledger.DONE:
        action_taken = f"the move was finished by {actor}: " + (
            "; ".join(changed) if changed else "every call had been made, nothing was left to do"
        )
    else:
        action_taken = f"the move was reverted by {actor}: " + (
            "; ".join(changed) if changed else "none of its calls had been made, nothing to undo"
        )
    action_taken += f"; ledger row {entry.id} is now {state}"
    if left:
        action_taken += f". Left as found (changed since the move): {'; '.join(left)}"
    return raise_alert(
        engine,
        kind=ALERT_KIND,
        severity="warning",
        title=f"{entry.model_name}: an interrupted {entry.action} was {verb} (ledger row {entry.id})",
        message=message,
        dedup_key=f"{ALERT_KIND}:{entry.id}",
        model_name=entry.model_name,
        model_version=entry.to_version or entry.from_version,
        organization_id=entry.organization_id,
        metrics={"ledger_id": entry.id, "calls": len(calls), "made": len(made), "left": len(left)},
        action_taken=action_taken,
        runbook=_runbook(entry, state),
        links=registry_access(entry.model_name).links(
            entry.model_name, entry.to_version or entry.from_version
        ),
    ).id
