"""Who is calling: the organization behind an API key, with its feature flags, cached briefly.

Keys are looked up by their SHA-256 hash (``orgs.organization_for_api_key``); answers are cached for
``ttl_seconds`` (unknown keys for a shorter time), so a revoked key or a changed feature flag takes
effect within that time without a database query on every request. The cache is bounded
(least-recently-used keys are dropped first), so a flood of random keys cannot grow it without limit.

When the database cannot be reached, a key answered before keeps working for ``stale_grace_seconds``
past its expiry (its last answer is served), and a key never seen gets ``AuthError(503)`` with a
``retry_after`` at once instead of an error after the database's timeouts.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import sqlalchemy as sa

from neuracrm_mlops.store.db.engine import DependencyState, one_line_error
from neuracrm_mlops.store.db.schema import ApiKey, Organization
from neuracrm_mlops.store.orgs import ai_enabled, hash_api_key

BEARER = "bearer "


@dataclass(frozen=True)
class Tenant:
    organization_id: int
    name: str
    ai_enabled: bool


class AuthError(Exception):
    """A request without a usable key (401), acting outside its organization (403), or whose key cannot
    be checked now because the database is down (503, with ``retry_after`` seconds for the client)."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def key_check_unavailable(reason: str, retry_after: int) -> AuthError:
    """The 503 for a key that is not cached while the database cannot answer."""
    return AuthError(
        503,
        f"the API key cannot be checked right now (the database is unavailable: {reason}); "
        f"retry in {retry_after} s",
        retry_after=retry_after,
    )


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <key>`` header; AuthError(401) naming what is wrong."""
    if not authorization or not authorization.strip():
        raise AuthError(401, "missing API key: send 'Authorization: Bearer <your organization's key>'")
    if not authorization.lower().startswith(BEARER):
        raise AuthError(401, "the Authorization header must be 'Bearer <key>'")
    token = authorization[len(BEARER) :].strip()
    if not token:
        raise AuthError(401, "empty API key in the Authorization header")
    return token


@dataclass(frozen=True)
class _Entry:
    expires_at: float  # time.monotonic()
    tenant: Tenant | None


class TenantDirectory:
    """API key -> tenant, cached with a TTL (bounded, least recently used out first); serves the last
    answer for a while when the database is down."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        ttl_seconds: float = 30.0,
        unknown_ttl_seconds: float = 5.0,
        max_entries: int = 100_000,
        stale_grace_seconds: float = 300.0,
        retry_after_seconds: int = 5,
        database: DependencyState | None = None,
    ):
        self._engine = engine
        self._ttl = ttl_seconds
        self._unknown_ttl = unknown_ttl_seconds
        self._max_entries = max_entries
        self._stale_grace = stale_grace_seconds
        self.retry_after_seconds = retry_after_seconds
        self.database = database or DependencyState("database")
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.stale_answers = 0  # answers served past their TTL because the database was down

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, api_key: str) -> tuple[bool, Tenant | None]:
        """(found fresh in the cache, tenant) without touching the database (safe on the event loop)."""
        key_hash = hash_api_key(api_key)
        with self._lock:
            entry = self._cache.get(key_hash)
            if entry is None or entry.expires_at < time.monotonic():
                return False, None
            self._cache.move_to_end(key_hash)
            return True, entry.tenant

    def stale(self, api_key: str) -> tuple[bool, Tenant | None]:
        """(found within the stale grace, tenant): the answer to serve while the database is down."""
        with self._lock:
            entry = self._cache.get(hash_api_key(api_key))
        if entry is None or entry.expires_at + self._stale_grace < time.monotonic():
            return False, None
        self.stale_answers += 1
        return True, entry.tenant

    def unavailable(self, reason: str) -> AuthError:
        return key_check_unavailable(reason, self.retry_after_seconds)

    def lookup(self, api_key: str) -> Tenant | None:
        """The tenant for a key (database on a cache miss: call off the event loop), None if unknown.

        Raises AuthError(503) when the database cannot answer and no answer within the stale grace is
        cached for this key."""
        key_hash = hash_api_key(api_key)
        hit, tenant = self.cached(api_key)
        if hit:
            return tenant
        if not self.database.should_try():  # down, and another request is probing it: answer now
            found, tenant = self.stale(api_key)
            if found:
                return tenant
            raise self.unavailable(self.database.last_error or "not answering")
        try:
            with self._engine.connect() as conn:
                row = conn.execute(
                    sa.select(Organization.id, Organization.name, Organization.feature_flags)
                    .join(ApiKey, ApiKey.organization_id == Organization.id)
                    .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
                ).first()
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            self.database.failed(exc)
            found, tenant = self.stale(api_key)
            if found:
                return tenant
            raise self.unavailable(one_line_error(exc)) from None
        self.database.succeeded()
        tenant = None
        if row is not None:
            tenant = Tenant(row.id, row.name, ai_enabled(row.feature_flags))
        self.remember(key_hash, tenant)
        return tenant

    def remember(self, key_hash: str, tenant: Tenant | None) -> None:
        """Cache an answer (the least recently used one goes when the cache is full)."""
        ttl = self._ttl if tenant else self._unknown_ttl
        with self._lock:
            self._cache[key_hash] = _Entry(time.monotonic() + ttl, tenant)
            self._cache.move_to_end(key_hash)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)

    def authenticate(self, authorization: str | None) -> Tenant:
        tenant = self.lookup(bearer_token(authorization))
        if tenant is None:
            raise AuthError(401, "unknown or revoked API key")
        return tenant


def require_same_organization(tenant: Tenant, requested: int | None) -> None:
    """A key acts for its own organization only: AuthError(403) when the request names another."""
    if requested is not None and requested != tenant.organization_id:
        raise AuthError(
            403,
            f"this API key belongs to organization {tenant.organization_id} and cannot act for "
            f"organization {requested}",
        )
