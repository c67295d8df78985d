"""Who is calling: the organization behind an API key, with its feature flags, cached briefly.

Keys are looked up by their SHA-256 hash (``orgs.organization_for_api_key``); answers are cached for
``ttl_seconds`` (unknown keys for a shorter time), so a revoked key or a changed feature flag takes
effect within that time without a database query on every request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

from neuracrm_mlops.db.schema import ApiKey, Organization
from neuracrm_mlops.orgs import ai_enabled, hash_api_key

BEARER = "bearer "


@dataclass(frozen=True)
class Tenant:
    organization_id: int
    name: str
    ai_enabled: bool


class AuthError(Exception):
    """A request without a usable key (401) or acting outside its organization (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


class TenantDirectory:
    def __init__(self, engine: sa.Engine, *, ttl_seconds: float = 30.0, unknown_ttl_seconds: float = 5.0):
        self._engine = engine
        self._ttl = ttl_seconds
        self._unknown_ttl = unknown_ttl_seconds
        self._cache: dict[str, tuple[float, Tenant | None]] = {}
        self._lock = threading.Lock()

    def cached(self, api_key: str) -> tuple[bool, Tenant | None]:
        """(found in cache, tenant) without touching the database (safe on the event loop)."""
        entry = self._cache.get(hash_api_key(api_key))
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def lookup(self, api_key: str) -> Tenant | None:
        """The tenant for a key (database on a cache miss: call off the event loop), None if unknown."""
        key_hash = hash_api_key(api_key)
        hit, tenant = self.cached(api_key)
        if hit:
            return tenant
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(Organization.id, Organization.name, Organization.feature_flags)
                .join(ApiKey, ApiKey.organization_id == Organization.id)
                .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
            ).first()
        tenant = None
        if row is not None:
            tenant = Tenant(row.id, row.name, ai_enabled(row.feature_flags))
        ttl = self._ttl if tenant else self._unknown_ttl
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key_hash] = (time.monotonic() + ttl, tenant)
        return tenant

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
