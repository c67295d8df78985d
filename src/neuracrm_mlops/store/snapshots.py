"""What a training run reads, as it reads it: the digest of the rows' content hashes (the versions'
``data_snapshot_hash``) and an organization's monthly sales history. Shared by training, which
records them, and the serving core, which compares a forecast's history with today's."""

from __future__ import annotations

import hashlib

import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops.store.db.schema import MonthlySales


def content_hash_digest(values: pd.Series) -> str:
    """A hash of the training data: the rows' content hashes, order-independent."""
    digest = hashlib.sha256()
    for value in sorted(values.astype(str)):
        digest.update(value.encode())
    return digest.hexdigest()


def load_sales_history(conn: sa.Connection, organization_id: int) -> tuple[pd.Series, int, str]:
    """Monthly revenue as a month-indexed series; months missing inside the range count as 0.

    Returns (series, number of months filled with 0, hash of the stored rows).
    """
    rows = conn.execute(
        sa.select(MonthlySales.month, MonthlySales.revenue, MonthlySales.content_hash)
        .where(MonthlySales.organization_id == organization_id)
        .order_by(MonthlySales.month)
    ).all()
    if not rows:
        return pd.Series(dtype=float), 0, content_hash_digest(pd.Series(dtype=str))
    series = pd.Series([r.revenue for r in rows], index=pd.PeriodIndex([r.month for r in rows], freq="M"))
    full = pd.period_range(series.index.min(), series.index.max(), freq="M")
    filled = len(full) - len(series)
    return (
        series.reindex(full, fill_value=0.0),
        filled,
        content_hash_digest(pd.Series([r.content_hash for r in rows])),
    )
