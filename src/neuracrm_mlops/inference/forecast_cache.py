"""Forecast answers cached per (organization, model version, months).

Redis when ``NEURACRM_REDIS_URL`` is set (shared by every replica), an in-process LRU otherwise.
Redis is an optimisation, never a dependency: when it fails, the cache answers "miss", stops asking
Redis for ``backoff_seconds``, and the service computes the forecast itself. Every Redis call is
bounded by ``timeout_seconds`` (``NEURACRM_REDIS_TIMEOUT_SECONDS``); ``redis_state`` keeps the last
success and error for ``/status/``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from neuracrm_mlops.store.db.engine import DependencyState

log = logging.getLogger(__name__)


def cache_key(organization_id: int, model_version: str, months: int) -> str:
    return f"neuracrm:forecast:{organization_id}:{model_version}:{months}"


class ForecastCache:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        ttl_seconds: int = 3_600,
        max_entries: int = 10_000,
        backoff_seconds: float = 30.0,
        timeout_seconds: float = 0.05,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._max_entries = max_entries
        self._backoff_seconds = backoff_seconds
        self._local: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self._redis: Any = None
        self._redis_down_until = 0.0
        self.hits = self.misses = self.redis_errors = 0
        self.redis_state = DependencyState("redis")
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(
                redis_url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
            )

    @property
    def backend(self) -> str:
        return "redis" if self._redis is not None else "memory"

    def _redis_usable(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._redis_down_until

    def _redis_failed(self, exc: Exception) -> None:
        self.redis_errors += 1
        self.redis_state.failed(exc)
        self._redis_down_until = time.monotonic() + self._backoff_seconds
        log.warning(
            "forecast cache: Redis failed (%s); computing forecasts without it for %.0f s",
            exc,
            self._backoff_seconds,
        )

    def get(self, key: str) -> dict[str, Any] | None:
        value: dict[str, Any] | None = None
        if self._redis is not None:
            if self._redis_usable():
                try:
                    raw = self._redis.get(key)
                    self.redis_state.succeeded()
                    value = json.loads(raw) if raw is not None else None
                except Exception as exc:
                    self._redis_failed(exc)
        else:
            with self._lock:
                entry = self._local.get(key)
                if entry is not None and entry[0] > time.monotonic():
                    self._local.move_to_end(key)
                    value = entry[1]
                elif entry is not None:
                    del self._local[key]
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self._redis is not None:
            if self._redis_usable():
                try:
                    self._redis.set(key, json.dumps(value), ex=self.ttl_seconds)
                    self.redis_state.succeeded()
                except Exception as exc:
                    self._redis_failed(exc)
            return
        with self._lock:
            self._local[key] = (time.monotonic() + self.ttl_seconds, value)
            self._local.move_to_end(key)
            while len(self._local) > self._max_entries:
                self._local.popitem(last=False)
