"""Live numbers per served model version, from the prediction log joined with the outcomes.

The one place that turns logged predictions into what the 80% rule and the canary judge:
- **accuracy** (``evaluation``'s definitions): for lead scoring and sentiment the share of correct
  labels over the entities that have an outcome (a lead's predicted label is ``converted`` when its
  probability is at least 0.5; sentiment's is its label), each entity once per version (its latest
  prediction in the window). For a forecast (``sales_forecast_org_<id>``) ``max(0, 1 - WAPE)`` over
  the months that have an actual (an outcome whose entity is the month, ``YYYY-MM``, and whose value
  is the revenue), each month once per version (its latest forecast); ``outcomes`` counts months.
- **error rate**: the share of a version's requests that it failed (raised or answered NaN), so that
  the fallback answered instead. Fallbacks for other reasons (AI switched off, no model loaded) are
  not the version's fault and are not counted against it.
- **p95 latency** in milliseconds, over the version's served rows.

``since`` bounds the predictions (a canary step's start, or the monitoring window); outcomes may
arrive any time after their prediction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops.families import find_family, lead_scoring
from neuracrm_mlops.release.decisions import VersionLiveStats
from neuracrm_mlops.store.db.schema import Outcome, Prediction
from neuracrm_mlops.training.evaluation import forecast_accuracy

CONVERTED, NOT_CONVERTED = lead_scoring.CONVERTED, lead_scoring.NOT_CONVERTED
SERVED_ROUTES = ("champion", "challenger", "shadow")


def family_of(model_name: str) -> str:
    """The family name of a registered model (``sales_forecast_org_7`` -> ``sales_forecast``); a model
    of no registered family is its own name. A thin alias of ``families.find_family``."""
    family = find_family(model_name)
    return family.name if family is not None else model_name


def predicted_label(model_name: str, output: dict[str, Any]) -> str | None:
    """The label a logged output stands for (None when it has none): the family's ``predicted_label``."""
    family = find_family(model_name)
    return family.predicted_label(output) if family is not None else None


def load_predictions(
    engine: sa.Engine, model_name: str, *, since: dt.datetime, organization_id: int | None = None
) -> pd.DataFrame:
    """Logged predictions of ``model_name`` since ``since`` (one row per prediction)."""
    query = sa.select(
        Prediction.id,
        Prediction.created_at,
        Prediction.model_version,
        Prediction.route,
        Prediction.organization_id,
        Prediction.entity_id,
        Prediction.features,
        Prediction.output,
        Prediction.latency_ms,
        Prediction.fallback,
        Prediction.error,
    ).where(Prediction.model_name == model_name, Prediction.created_at >= since)
    if organization_id is not None:
        query = query.where(Prediction.organization_id == organization_id)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(Prediction.id)).mappings().all()
    return pd.DataFrame(
        [dict(r) for r in rows],
        columns=[
            "id",
            "created_at",
            "model_version",
            "route",
            "organization_id",
            "entity_id",
            "features",
            "output",
            "latency_ms",
            "fallback",
            "error",
        ],
    )


def load_outcomes(engine: sa.Engine, model_name: str) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Outcome.organization_id, Outcome.entity_id, Outcome.label, Outcome.value).where(
                Outcome.model_name == model_name
            )
        ).all()
    return pd.DataFrame(rows, columns=["organization_id", "entity_id", "label", "value"])


def labelled(predictions: pd.DataFrame, outcomes: pd.DataFrame, model_name: str) -> pd.DataFrame:
    """Served, non-fallback predictions (latest per version and entity) with their outcome label."""
    served = predictions[predictions["route"].isin(SERVED_ROUTES) & ~predictions["fallback"].astype(bool)]
    if served.empty or outcomes.empty:
        return pd.DataFrame(columns=["model_version", "organization_id", "entity_id", "predicted", "label"])
    latest = served.drop_duplicates(["model_version", "organization_id", "entity_id"], keep="last").copy()
    latest["predicted"] = [predicted_label(model_name, out) for out in latest["output"]]
    joined = latest.merge(outcomes, on=["organization_id", "entity_id"], how="inner")
    return joined[joined["label"].notna() & joined["predicted"].notna()]


def forecast_actuals(predictions: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Served forecasts exploded to months (latest per version and month) with the month's actual.

    With a ``model_name`` column in both frames (several forecast models read together), months and
    actuals are matched per model and the result starts with that column.
    """
    keys = ["model_name"] if "model_name" in predictions.columns and "model_name" in outcomes.columns else []
    served = predictions[predictions["route"].isin(SERVED_ROUTES) & ~predictions["fallback"].astype(bool)]
    names = served["model_name"] if keys else [None] * len(served)
    rows = [
        {
            "model_name": name,
            "id": row_id,
            "model_version": version,
            "month": p["month"],
            "forecast": p["forecast"],
        }
        for name, row_id, version, output in zip(
            names, served["id"], served["model_version"], served["output"], strict=True
        )
        for p in (output or {}).get("points", [])
    ]
    columns = [*keys, "model_version", "month", "forecast", "actual"]
    if not rows or outcomes.empty:
        return pd.DataFrame(columns=columns)
    points = (
        pd.DataFrame(rows).sort_values("id").drop_duplicates([*keys, "model_version", "month"], keep="last")
    )
    actuals = outcomes[outcomes["value"].notna()][[*keys, "entity_id", "value"]].rename(
        columns={"entity_id": "month", "value": "actual"}
    )
    return points.merge(actuals, on=[*keys, "month"], how="inner")[columns]


def version_stats(
    engine: sa.Engine, model_name: str, versions: list[str], *, since: dt.datetime
) -> dict[str, VersionLiveStats]:
    """Live stats for each of ``versions`` of ``model_name`` over predictions since ``since``."""
    predictions = load_predictions(engine, model_name, since=since)
    return stats_from(model_name, versions, predictions, load_outcomes(engine, model_name))


def stats_from(
    model_name: str, versions: list[str], predictions: pd.DataFrame, outcomes: pd.DataFrame
) -> dict[str, VersionLiveStats]:
    """``version_stats`` over frames already loaded (``load_predictions``, ``load_outcomes``)."""
    family = find_family(model_name)
    if family is None:
        raise ValueError(f"no live accuracy for {model_name!r}: not a served model family")
    if family.accuracy_measure == "one_minus_wape":
        months = forecast_actuals(predictions, outcomes)
        return {v: _forecast_stats_for(v, predictions, months) for v in versions}
    joined = labelled(predictions, outcomes, model_name)
    return {v: _stats_for(v, predictions, joined) for v in versions}


def _forecast_stats_for(version: str, predictions: pd.DataFrame, months: pd.DataFrame) -> VersionLiveStats:
    mine = months[months["model_version"] == version]
    accuracy = (
        forecast_accuracy(mine["actual"].to_numpy(float), mine["forecast"].to_numpy(float))
        if len(mine)
        else None
    )
    return _stats_for(version, predictions, pd.DataFrame(), accuracy=accuracy, outcomes=len(mine))


def _stats_for(
    version: str,
    predictions: pd.DataFrame,
    joined: pd.DataFrame,
    *,
    accuracy: float | None = None,
    outcomes: int | None = None,
) -> VersionLiveStats:
    rows = predictions[predictions["model_version"] == version]
    if outcomes is None:
        mine = joined[joined["model_version"] == version]
        outcomes = len(mine)
        accuracy = float((mine["predicted"] == mine["label"]).mean()) if outcomes else None
    requests = len(rows)
    failed = int(rows["fallback"].astype(bool).sum()) if requests else 0
    served = rows[~rows["fallback"].astype(bool)] if requests else rows
    p95 = float(np.percentile(served["latency_ms"].astype(float), 95)) if len(served) else None
    return VersionLiveStats(
        version=version,
        outcomes=outcomes,
        accuracy=accuracy,
        error_rate=failed / requests if requests else 0.0,
        p95_latency_ms=p95,
        requests=requests,
    )
