"""Models loaded by alias from the MLflow registry, kept current by a background poll, swapped atomically.

For every registered model the serving layer uses, ``LiveModels`` holds an immutable ``ModelSlots``
snapshot: the loaded champion and challenger and the canary weight. A poll (every
``NEURACRM_MODEL_POLL_SECONDS``, default 10) reads the aliases and the ``canary_weight`` tag; a
version that changed is loaded and smoke-tested off the request path, then a new snapshot replaces the
old one in a single assignment. Requests read one snapshot and keep it for their whole life, so a
swap never fails a request and never mixes two versions in one answer.

When a new version cannot be loaded or fails its smoke test, the last good version keeps serving
(and the failure is reported in ``health()``). When MLflow cannot be reached, everything loaded
keeps serving. Forecast models (one per organization) are loaded on first use, by a background
loader (a request waits for it only a bounded time, and not at all while the registry is failing),
and then polled too.

A poll that fails, or has not completed for more than two poll intervals (MLflow hanging), is
reported as ``last_poll_error`` and ``poll_stale``; a watchdog thread calls ``on_stale`` once per
such outage (the service raises a ``serving_health`` alert).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from neuracrm_mlops.store import registry
from neuracrm_mlops.store.db.engine import DependencyState, one_line_error

log = logging.getLogger(__name__)

Loader = Callable[[str, str], Any]
"""(registered model name, version) -> the object that will serve (loaded, prepared, smoke-tested)."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    model: Any
    loaded_at: float


@dataclass(frozen=True)
class ModelSlots:
    """One registered model as served right now: an immutable snapshot."""

    name: str
    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None
    weight: float = 0.0
    # what the registry said at the last successful poll (alias -> version)
    aliases: dict[str, str] = field(default_factory=dict)

    def for_route(self, route: str) -> LoadedModel | None:
        return self.challenger if route == registry.CHALLENGER else self.champion


def limit_mlflow_http(timeout_seconds: int, max_retries: int) -> None:
    """Bound every MLflow HTTP call of this process: ``timeout_seconds`` per request and ``max_retries``
    quick retries (MLflow's defaults, 120 s and 7 retries with exponential backoff, made a registry
    outage hold a request for minutes). MLflow reads these variables at each call."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(timeout_seconds))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(int(max_retries))
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0"


@dataclass(frozen=True)
class LazyAnswer:
    """What a request gets for a lazily loaded model: the slots, or None and why not."""

    slots: ModelSlots | None
    why_not: str | None = None


@dataclass
class _RegistryView:
    aliases: dict[str, str]
    weight: float


class LiveModels:
    """Loaded model versions by alias, refreshed by ``poll_once`` (or the background thread)."""

    SERVED_ALIASES = (registry.CHAMPION, registry.CHALLENGER)

    def __init__(
        self,
        loader: Loader,
        *,
        eager_names: Iterable[str],
        lazy_prefix: str | None = registry.FORECAST_MODEL_PREFIX,
        poll_seconds: float = 10.0,
        client_factory: Callable[[], Any] = registry.configure_mlflow,
        on_load_error: Callable[[str, str, str, str], None] | None = None,
        on_stale: Callable[[str, float], None] | None = None,
        stale_floor_seconds: float = 0.0,
    ) -> None:
        self._loader = loader
        # a poll is stale after two intervals, and never sooner than this: a busy worker (a big model
        # loading in another thread) delays a short poll by seconds without MLflow being at fault
        self.stale_floor_seconds = stale_floor_seconds
        # on_load_error(name, alias, version, reason): e.g. raise an alert; its own failures are logged
        self._on_load_error = on_load_error
        self._eager = tuple(eager_names)
        self._lazy_prefix = lazy_prefix
        self.poll_seconds = poll_seconds
        self._client_factory = client_factory
        self._client: Any = None
        self._slots: dict[str, ModelSlots] = {}
        self._absent_until: dict[str, float] = {}  # lazy names known to have no served alias
        self._load_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.first_poll_done = threading.Event()
        self.last_poll_at: float | None = None
        self.last_poll_error: str | None = None
        self.load_errors: dict[str, str] = {}  # "name@alias" -> why the new version is not served
        self.swaps = 0
        self._failed: dict[str, tuple[str, float]] = {}  # "name@alias" -> (version, when it failed)
        self.retry_failed_seconds = 60.0
        self._registered_eager = False  # whether any eagerly served model has an alias at all
        # the registry as a dependency: last success and error of any call (poll or lazy load)
        self.registry = DependencyState("model_registry")
        self._started_at: float | None = None
        self.last_poll_started_at: float | None = None
        self._poll_running = False
        self._registry_read_at: float | None = None  # when a poll last read the registry completely
        # on_stale(message, seconds since the last successful poll): once per outage, from a watchdog
        self._on_stale = on_stale
        self._stale_reported = False
        self._watchdog: threading.Thread | None = None
        # the background loader of lazily served models (forecasts): name -> set when its load ends
        self._load_queue: queue.Queue[str | None] = queue.Queue()  # None: stop
        self._loading: dict[str, threading.Event] = {}
        self._retry_lazy_at: dict[str, float] = {}  # lazy names whose load failed: not before then
        self._loader_thread: threading.Thread | None = None

    # -- reading (request path: dictionary reads only) ------------------------------------------
    def slots(self, name: str) -> ModelSlots | None:
        return self._slots.get(name)

    def loaded_names(self) -> list[str]:
        return sorted(self._slots)

    @property
    def ready(self) -> bool:
        """Ready once the first poll finished and at least one model is loaded (or none is registered)."""
        if not self.first_poll_done.is_set():
            return False
        loaded = any(s.champion or s.challenger for s in self._slots.values())
        return loaded or (self.last_poll_error is None and not self._registered_eager)

    @property
    def stale_after_seconds(self) -> float:
        return max(2 * self.poll_seconds, self.stale_floor_seconds)

    def poll_staleness(self, now: float | None = None) -> tuple[str, float] | None:
        """(why, seconds since the last successful poll) when no poll has succeeded for more than two
        poll intervals (polls failing, or one hanging), else None."""
        now = time.time() if now is None else now
        if not self.first_poll_done.is_set():
            return None  # the first poll (a cold process importing MLflow) reports its own failure
        # a poll that read the registry but is still loading a big new version is not stale
        started = self.last_poll_started_at
        if self._poll_running and started is not None and (self._registry_read_at or 0.0) >= started:
            return None
        # since the last successful poll ended (its loads can take long), else its registry read
        succeeded = [t for t in (self.last_poll_at, self._registry_read_at) if t is not None]
        since = max(succeeded) if succeeded else self._started_at
        if since is None or now - since <= self.stale_after_seconds:
            return None
        age = now - since
        what = "the last successful registry poll" if self._registry_read_at else "the service start"
        if self._poll_running and self.last_poll_started_at is not None:
            running = now - self.last_poll_started_at
            why = f"a registry poll has not completed for {running:.0f} s (MLflow is not answering)"
        else:
            why = f"registry polls are failing: {self.last_poll_error or self.registry.last_error}"
        return f"stale: {age:.0f} s since {what} (more than {self.stale_after_seconds:g} s); {why}", age

    def health(self) -> dict[str, Any]:
        staleness = self.poll_staleness()
        return {
            "ready": self.ready,
            "last_poll_at": self.last_poll_at,
            "last_poll_error": self.last_poll_error or (staleness[0] if staleness else None),
            "poll_stale": staleness is not None,
            "poll_running_seconds": round(time.time() - self.last_poll_started_at, 1)
            if self._poll_running and self.last_poll_started_at is not None
            else None,
            "load_errors": dict(self.load_errors),
            "loading": sorted(name for name, done in list(self._loading.items()) if not done.is_set()),
            "models": {
                name: {
                    "champion": s.champion.version if s.champion else None,
                    "challenger": s.challenger.version if s.challenger else None,
                    "canary_weight": s.weight,
                }
                for name, s in sorted(self._slots.items())
            },
        }

    # -- lazy loading (forecasts) ------------------------------------------------------------------
    def ensure(self, name: str, wait_seconds: float = 0.0) -> LazyAnswer:
        """The slots for ``name``; if it was never loaded, its load starts in the background and this
        waits for it at most ``wait_seconds`` (not at all while the registry is failing), so a request
        is never held by MLflow. Safe to call from many threads."""
        slots = self._slots.get(name)
        if slots is not None:
            return LazyAnswer(slots)
        now = time.monotonic()
        if self._absent_until.get(name, 0.0) > now:
            return LazyAnswer(None, "none is registered")
        registry_failing = not self.registry.ok or self.poll_staleness() is not None
        done = self._start_lazy_load(name, now)
        if done is None:  # a recent load failed because of the registry: do not wait for another
            return LazyAnswer(None, self._registry_down_reason())
        if not registry_failing and wait_seconds > 0:
            done.wait(wait_seconds)
        slots = self._slots.get(name)
        if slots is not None:
            return LazyAnswer(slots)
        if self._absent_until.get(name, 0.0) > time.monotonic():
            return LazyAnswer(None, "none is registered")
        if registry_failing or (done.is_set() and not self.registry.ok):
            return LazyAnswer(None, self._registry_down_reason())
        return LazyAnswer(None, "it is still loading in the background")

    def _registry_down_reason(self) -> str:
        return (
            f"the model registry cannot be reached ({self.registry.last_error or 'not answering'}); "
            "loading is retried in the background"
        )

    def _start_lazy_load(self, name: str, now: float) -> threading.Event | None:
        """Queue a background load of ``name`` (once); its completion event, or None while a failed
        attempt's retry time has not come."""
        with self._queue_lock:
            event = self._loading.get(name)
            if event is not None and not event.is_set():
                return event
            if self._retry_lazy_at.get(name, 0.0) > now:
                return None
            event = self._loading[name] = threading.Event()
            self._load_queue.put(name)
            if self._loader_thread is None or not self._loader_thread.is_alive():
                self._loader_thread = threading.Thread(
                    target=self._run_loader, name="neuracrm-model-load", daemon=True
                )
                self._loader_thread.start()
            return event

    def _run_loader(self) -> None:
        while not self._stop.is_set():
            name = self._load_queue.get()
            if name is None:
                return
            try:
                self.load_lazy_now(name)
            finally:
                event = self._loading.get(name)
                if event is not None:
                    event.set()

    def load_lazy_now(self, name: str) -> ModelSlots | None:
        """Read ``name``'s aliases and load them, now, on this thread (the background loader's work)."""
        if name in self._slots:
            return self._slots[name]
        try:
            view = self._read_registry(self._mlflow(), name)
        except Exception as exc:  # MLflow down: the fallback answers; retried after a poll interval
            self.registry.failed(exc)
            self._retry_lazy_at[name] = time.monotonic() + self.poll_seconds
            log.warning("cannot load %s now, the model registry failed: %s", name, one_line_error(exc))
            return None
        self.registry.succeeded()
        self._retry_lazy_at.pop(name, None)
        with self._load_lock:
            self._apply(name, view)
        if name not in self._slots:
            self._absent_until[name] = time.monotonic() + self.poll_seconds
        return self._slots.get(name)

    # -- polling ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Poll once now (so that a fresh server is ready as soon as it can be), then in the background;
        a watchdog reports a poll that stays stale."""
        if self._thread is not None:
            return
        self._started_at = time.time()
        self._thread = threading.Thread(target=self._run, name="neuracrm-model-poll", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="neuracrm-poll-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._load_queue.put(None)
        for thread in (self._thread, self._watchdog, self._loader_thread):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._watchdog = self._loader_thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_seconds)

    def _watch(self) -> None:
        while not self._stop.wait(min(self.poll_seconds, 5.0)):
            self.check_stale()

    def check_stale(self, now: float | None = None) -> bool:
        """Call ``on_stale`` when the poll is stale and this outage was not reported yet (it is retried
        at the next check if reporting fails, e.g. while the database is down too); True if reported."""
        staleness = self.poll_staleness(now)
        if staleness is None:
            self._stale_reported = False
            return False
        if self._stale_reported or self._on_stale is None:
            return False
        try:
            self._on_stale(*staleness)
        except Exception as exc:
            log.warning("could not report the stale registry poll (retried): %s", one_line_error(exc))
            return False
        self._stale_reported = True
        return True

    def poll_once(self) -> None:
        """Read aliases and weights for every served model; load and swap in what changed."""
        self.last_poll_started_at = time.time()
        self._poll_running = True
        try:
            client = self._mlflow()
            views = {name: self._read_registry(client, name) for name in self._eager}
            self._registered_eager = any(v.aliases for v in views.values())
            lazy_loaded = [n for n in self._slots if n not in views]
            if lazy_loaded:
                views.update(self._read_lazy(client, set(lazy_loaded)))
        except Exception as exc:
            self.registry.failed(exc)
            self._note_poll_error(exc)
        else:
            self.registry.succeeded()
            self._registry_read_at = time.time()
            for name, view in views.items():
                with self._load_lock:
                    self._apply(name, view)
            self.last_poll_error = None
            self.last_poll_at = time.time()
        finally:
            self._poll_running = False
            self.first_poll_done.set()

    def _mlflow(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _note_poll_error(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if message != self.last_poll_error:
            log.warning("model registry poll failed, serving what is loaded: %s", message)
        self.last_poll_error = message

    def _read_registry(self, client: Any, name: str) -> _RegistryView:
        from mlflow.exceptions import MlflowException

        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return _RegistryView({}, 0.0)
            raise
        return _RegistryView(
            {a: str(v) for a, v in (model.aliases or {}).items() if a in self.SERVED_ALIASES},
            registry.canary_weight_of(dict(model.tags or {})),
        )

    def _read_lazy(self, client: Any, names: set[str]) -> dict[str, _RegistryView]:
        """One paged search for all per-organization models instead of one call each."""
        views = {name: _RegistryView({}, 0.0) for name in names}
        for model in registry.models_with_prefix(client, self._lazy_prefix or ""):
            if model.name in views:
                views[model.name] = _RegistryView(
                    {a: str(v) for a, v in (model.aliases or {}).items() if a in self.SERVED_ALIASES},
                    registry.canary_weight_of(dict(model.tags or {})),
                )
        return views

    def _load(self, name: str, alias: str, version: str, current: LoadedModel | None) -> LoadedModel | None:
        """The model for ``alias`` after this poll: the new version, or the last good one if it fails."""
        if current is not None and current.version == version:
            return current
        key = f"{name}@{alias}"
        failed = self._failed.get(key)
        if failed and failed[0] == version and time.monotonic() - failed[1] < self.retry_failed_seconds:
            # this version failed recently: do not retry it every poll
            return current if alias == registry.CHAMPION else None
        started = time.perf_counter()
        try:
            model = self._loader(name, version)
        except Exception as exc:
            reason = f"v{version}: {type(exc).__name__}: {exc}"
            self.load_errors[key] = reason
            self._failed[key] = (version, time.monotonic())
            # a champion that cannot load leaves the last good champion serving; a challenger that
            # cannot load gets no traffic (its share goes to the champion)
            keep = current if alias == registry.CHAMPION else None
            log.error(
                "cannot serve %s version %s (%s); %s",
                key,
                version,
                reason,
                f"keeping version {keep.version}" if keep else "its traffic goes elsewhere",
            )
            if self._on_load_error is not None:
                try:
                    self._on_load_error(name, alias, version, reason)
                except Exception:
                    log.exception("reporting the load failure of %s failed", key)
            return keep
        self.load_errors.pop(key, None)
        self._failed.pop(key, None)
        log.info("loaded %s version %s in %.1f s", key, version, time.perf_counter() - started)
        return LoadedModel(name, version, model, time.time())

    def _apply(self, name: str, view: _RegistryView) -> None:
        current = self._slots.get(name) or ModelSlots(name)
        champion_version = view.aliases.get(registry.CHAMPION)
        challenger_version = view.aliases.get(registry.CHALLENGER)
        champion = (
            self._load(name, registry.CHAMPION, champion_version, current.champion)
            if champion_version
            else None
        )
        challenger = None
        if challenger_version:
            reuse = champion if champion and champion.version == challenger_version else current.challenger
            challenger = self._load(name, registry.CHALLENGER, challenger_version, reuse)
        updated = replace(
            current, champion=champion, challenger=challenger, weight=view.weight, aliases=view.aliases
        )
        if updated == current:
            return
        if champion is None and challenger is None and not view.aliases:
            self._slots.pop(name, None)
            return
        if (updated.champion, updated.challenger) != (current.champion, current.challenger):
            self.swaps += 1
        self._slots[name] = updated  # the atomic swap: readers see the old or the new snapshot
