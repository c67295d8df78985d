"""Write the synthetic CRM (``neuracrm_mlops.store.synthetic``) into the store: ``neuracrm-mlops seed``."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops.errors import SeedError
from neuracrm_mlops.store.db.engine import get_engine
from neuracrm_mlops.store.db.migrate import require_current_schema
from neuracrm_mlops.store.db.schema import ApiKey, Interaction, Lead, MonthlySales, Organization, utcnow
from neuracrm_mlops.store.ingest import DATASETS, content_hash, row_content
from neuracrm_mlops.store.orgs import API_KEY_PREFIX, api_key_row
from neuracrm_mlops.store.synthetic import DEFAULT_END_MONTH, generate_crm

INSERT_BATCH_ROWS = 10_000
StepCallback = Callable[[str], None]


@dataclass
class SeedSummary:
    organizations: int
    leads: int
    monthly_sales: int
    interactions: int
    seconds: float
    api_keys_file: Path | None


def seeded_api_key(seed: int, organization_name: str) -> str:
    """Seeded keys are derived from the seed so that a demo can be replayed; never use them in production."""
    digest = hmac.new(str(seed).encode(), organization_name.encode(), hashlib.sha256).hexdigest()
    return f"{API_KEY_PREFIX}seed_{digest[:40]}"


def _plain(value: Any) -> Any:
    """pandas/numpy scalars to what both database drivers accept."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def _records(frame: pd.DataFrame, org_ids: dict[int, int], dataset: str) -> Iterator[dict[str, Any]]:
    spec = DATASETS[dataset]
    now = utcnow()
    columns = [c for c in frame.columns if c != "org_index"]
    for org_index, *values in frame[["org_index", *columns]].itertuples(index=False, name=None):
        record = {name: _plain(value) for name, value in zip(columns, values, strict=True)}
        record.setdefault("attributes", {})
        content = row_content(spec, record)
        yield {
            **content,
            "content_hash": content_hash(content),
            "organization_id": org_ids[int(org_index)],
            "updated_at": now,
        }


def _batched(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def seed_database(
    n_orgs: int,
    months: int,
    seed: int,
    *,
    leads_per_org: int = 40,
    end_month: dt.date = DEFAULT_END_MONTH,
    api_keys_file: Path | None = None,
    engine: sa.Engine | None = None,
    step: StepCallback | None = None,
) -> SeedSummary:
    """Generate a synthetic CRM and write it in one transaction into an empty store."""
    engine = engine or get_engine()
    require_current_schema(engine)
    say = step or (lambda _message: None)
    started = time.perf_counter()
    with engine.connect() as conn:
        existing = conn.scalar(sa.select(sa.func.count()).select_from(Organization))
    if existing:
        raise SeedError(
            f"the database already has {existing} organizations; seed only fills an empty store "
            "(point NEURACRM_HOME or NEURACRM_DB_URL at a new one)"
        )
    try:
        say(f"generating {n_orgs} organizations x {months} months (seed {seed})")
        crm = generate_crm(n_orgs, months, seed, end_month=end_month, leads_per_org=leads_per_org)
    except ValueError as exc:
        raise SeedError(str(exc)) from None

    keys: list[tuple[int, str, str]] = []
    with engine.begin() as conn:
        say("writing organizations and API keys")
        org_ids: dict[int, int] = {}
        now = utcnow()
        for org in crm.organizations.to_dict("records"):
            name = str(org["name"])
            org_id = conn.scalar(
                sa.insert(Organization)
                .values(
                    name=name,
                    feature_flags={
                        "ai_enabled": bool(org["ai_enabled"]),
                        "sales_profile": str(org["sales_profile"]),
                    },
                    created_at=now,
                )
                .returning(Organization.id)
            )
            assert org_id is not None
            org_ids[int(org["org_index"])] = org_id
            keys.append((org_id, name, seeded_api_key(seed, name)))
        conn.execute(sa.insert(ApiKey), [api_key_row(org_id, key, "seed") for org_id, _, key in keys])
        for dataset, frame, table in (
            ("leads", crm.leads, Lead),
            ("sales", crm.monthly_sales, MonthlySales),
            ("interactions", crm.interactions, Interaction),
        ):
            say(f"writing {len(frame):,} {dataset} rows")
            for batch in _batched(_records(frame, org_ids, dataset), INSERT_BATCH_ROWS):
                conn.execute(sa.insert(table), batch)
    if api_keys_file is not None:
        api_keys_file.parent.mkdir(parents=True, exist_ok=True)
        with api_keys_file.open("w", newline="") as handle:
            # "\n", not csv's default "\r\n": the README reads a key with `sed | cut`, and a key
            # ending in "\r" is refused (400) by every endpoint
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["organization_id", "organization_name", "api_key"])
            writer.writerows(keys)
        api_keys_file.chmod(0o600)
    return SeedSummary(
        organizations=len(org_ids),
        leads=len(crm.leads),
        monthly_sales=len(crm.monthly_sales),
        interactions=len(crm.interactions),
        seconds=time.perf_counter() - started,
        api_keys_file=api_keys_file,
    )
