"""Organizations, their API keys (stored as SHA-256 hashes) and feature flags."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.errors import NeuraCRMError, NotFoundError
from neuracrm_mlops.store.db.schema import ApiKey, Organization, utcnow

API_KEY_PREFIX = "ncrm_"
DEFAULT_FEATURE_FLAGS = {"ai_enabled": True}


def ai_enabled(feature_flags: Mapping[str, Any] | None) -> bool:
    """Whether an organization's models answer (off: the fallback answers, flagged)."""
    return bool((feature_flags or {}).get("ai_enabled", True))


@dataclass(frozen=True)
class OrganizationRef:
    id: int
    name: str


def hash_api_key(api_key: str) -> str:
    """Keys are 256-bit random tokens, so a plain SHA-256 is enough (no brute force is feasible)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_row(organization_id: int, api_key: str, label: str = "default") -> dict[str, object]:
    return {
        "organization_id": organization_id,
        "key_prefix": api_key[:12],
        "key_hash": hash_api_key(api_key),
        "label": label,
        "created_at": utcnow(),
    }


def create_organization(
    conn: sa.Connection, name: str, *, ai_enabled: bool = True
) -> tuple[OrganizationRef, str]:
    """Create an organization and its first API key; returns the key in clear text, the only time."""
    name = name.strip()
    if not name:
        raise NeuraCRMError("organization name must not be empty")
    exists = conn.scalar(sa.select(Organization.id).where(Organization.name == name))
    if exists is not None:
        raise NeuraCRMError(f"organization {name!r} already exists (id {exists})")
    org_id = conn.scalar(
        sa.insert(Organization)
        .values(
            name=name, feature_flags={**DEFAULT_FEATURE_FLAGS, "ai_enabled": ai_enabled}, created_at=utcnow()
        )
        .returning(Organization.id)
    )
    assert org_id is not None
    api_key = new_api_key()
    conn.execute(sa.insert(ApiKey).values(**api_key_row(org_id, api_key)))
    return OrganizationRef(org_id, name), api_key


def resolve_organization(conn: sa.Connection, ref: str | int) -> OrganizationRef:
    """Find an organization by numeric id or exact name; NotFoundError names what was asked for."""
    text = str(ref).strip()
    query = sa.select(Organization.id, Organization.name)
    if text.isdigit():
        row = conn.execute(query.where(Organization.id == int(text))).first()
    else:
        row = conn.execute(query.where(Organization.name == text)).first()
    if row is None:
        raise NotFoundError(
            f"unknown organization {text!r}: `neuracrm-mlops org list` shows the ones that exist"
        )
    return OrganizationRef(row.id, row.name)


def organization_for_api_key(conn: sa.Connection, api_key: str) -> OrganizationRef | None:
    """The organization a (non-revoked) key belongs to, or None."""
    row = conn.execute(
        sa.select(Organization.id, Organization.name)
        .join(ApiKey, ApiKey.organization_id == Organization.id)
        .where(ApiKey.key_hash == hash_api_key(api_key), ApiKey.revoked_at.is_(None))
    ).first()
    return OrganizationRef(row.id, row.name) if row else None
