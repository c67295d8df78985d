"""Helpers for tests: build import files and snapshot row counts."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.store.db.schema import metadata

LEAD_HEADER = [
    "lead_id",
    "created_at",
    "industry",
    "company_employees",
    "company_revenue",
    "email_opens",
    "website_visits",
    "pages_viewed",
    "time_on_site_seconds",
    "days_since_last_activity",
    "job_title",
    "seniority",
    "timeline",
    "budget_signal",
    "description",
    "source",
    "region",
    "converted",
    "converted_at",
]


def table_counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per table: compare before and after to show that a failure wrote nothing."""
    with engine.connect() as conn:
        return {
            name: conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0
            for name, table in metadata.tables.items()
        }


def lead_rows(count: int, *, start: int = 1) -> list[dict[str, Any]]:
    base = dt.datetime(2025, 1, 1, 9, 0, tzinfo=dt.UTC)
    rows = []
    for i in range(start, start + count):
        rows.append(
            {
                "lead_id": f"L-{i:05d}",
                "created_at": (base + dt.timedelta(hours=7 * i)).isoformat(),
                "industry": ["software", "finance", "retail"][i % 3],
                "company_employees": str(10 + i % 500),
                "company_revenue": f"{(10 + i % 500) * 150000.5:.2f}",
                "email_opens": str(i % 13),
                "website_visits": str(i % 7),
                "pages_viewed": str(i % 21),
                "time_on_site_seconds": f"{(i % 50) * 12.5}",
                "days_since_last_activity": str(i % 30),
                "job_title": "VP of Sales" if i % 4 == 0 else "Analyst",
                "seniority": "vp" if i % 4 == 0 else "individual_contributor",
                "timeline": "this_quarter",
                "budget_signal": "exploring",
                "description": f"Lead {i}, evaluating CRM tools",
                "source": "web",
                "region": "europe",
                "converted": ["true", "false", ""][i % 3],
                "converted_at": (base + dt.timedelta(hours=7 * i, days=20)).isoformat() if i % 3 == 0 else "",
            }
        )
    return rows


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], header: list[str] | None = None) -> Path:
    rows = list(rows)
    header = header or list(rows[0])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def csv_bytes(rows: Iterable[Mapping[str, Any]], header: list[str] | None = None) -> bytes:
    """The UTF-8 bytes of a CSV file of ``rows`` (lines end in "\\n"): for tests that put hostile bytes
    (NUL, Latin-1, over-long cells) at a known place before writing the file."""
    rows = list(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header or list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
