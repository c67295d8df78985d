"""Models loaded by alias from the MLflow registry, kept current by a background poll, swapped atomically.

For every registered model the serving layer uses, ``LiveModels`` holds an immutable ``ModelSlots``
snapshot: the loaded champion and challenger and the canary weight. A poll (every
``NEURACRM_MODEL_POLL_SECONDS``, default 10) reads the aliases and the ``canary_weight`` tag; a
version that changed is loaded and smoke-tested off the request path, then a new snapshot replaces the
old one in a single assignment. Requests read one snapshot and keep it for their whole life, so a
swap never fails a request and never mixes two versions in one answer.

When a new version cannot be loaded or fails its smoke test, the last good version keeps serving
(and the failure is reported in ``health()``). When MLflow cannot be reached, everything loaded
keeps serving. Forecast models (one per organization) are loaded on first use and then polled too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from neuracrm_mlops import registry

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
    ) -> None:
        self._loader = loader
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

    def health(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "last_poll_at": self.last_poll_at,
            "last_poll_error": self.last_poll_error,
            "load_errors": dict(self.load_errors),
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
    def ensure(self, name: str) -> ModelSlots | None:
        """The slots for ``name``, loading it now if it was never asked for (blocking: call off-loop)."""
        slots = self._slots.get(name)
        if slots is not None:
            return slots
        if self._absent_until.get(name, 0.0) > time.monotonic():
            return None
        with self._load_lock:
            slots = self._slots.get(name)
            if slots is not None:
                return slots
            try:
                view = self._read_registry(self._mlflow(), name)
            except Exception as exc:  # MLflow down: answer with the fallback, retry at the next ask
                self._note_poll_error(exc)
                return None
            self._apply(name, view)
            if name not in self._slots:
                self._absent_until[name] = time.monotonic() + self.poll_seconds
            return self._slots.get(name)

    # -- polling ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Poll once now (so that a fresh server is ready as soon as it can be), then in the background."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="neuracrm-model-poll", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_seconds)

    def poll_once(self) -> None:
        """Read aliases and weights for every served model; load and swap in what changed."""
        try:
            client = self._mlflow()
            views = {name: self._read_registry(client, name) for name in self._eager}
            self._registered_eager = any(v.aliases for v in views.values())
            lazy_loaded = [n for n in self._slots if n not in views]
            if lazy_loaded:
                views.update(self._read_lazy(client, set(lazy_loaded)))
        except Exception as exc:
            self._note_poll_error(exc)
        else:
            for name, view in views.items():
                with self._load_lock:
                    self._apply(name, view)
            self.last_poll_error = None
            self.last_poll_at = time.time()
        finally:
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
