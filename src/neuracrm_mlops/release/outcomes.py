"""Outcomes: what really happened to the entities the models predicted, joined back by the monitor.

``record_outcomes`` stores real outcomes (a lead converted or not, an interaction's true label);
one row per (model, organization, entity), a repeat updates it.

``simulate_outcomes`` drives the loop on demand (demo, tests, drills). It is a simulation, said so
in every row (``source = 'simulated'``): for each logged prediction without an outcome, the world
agrees with the served prediction with probability ``agree`` (default 0.90), decided by a hash of
the entity and ``seed`` so that reruns give the same outcomes. ``degrade`` names versions whose
predictions the world now disagrees with more often (agreement ``degraded_agree``, default 0.55):
a concept drift that makes that version's live accuracy fall, as it would in production.
An entity predicted by several versions gets one outcome, judged against its first served
prediction (shadow predictions never decide the outcome: they are judged against it).

Forecasts (``sales_forecast_org_<id>``): each forecast month without an actual gets one, the
forecast times ``1 + u * noise`` (``u`` uniform in [-1, 1] from the hash, ``noise`` 0.10: about 95%
accuracy); for a degraded version the world comes in 50% above it (``1.5 + u * noise``, about 67%).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from neuracrm_mlops.families import FAMILIES, find_family
from neuracrm_mlops.release.live_stats import SERVED_ROUTES, predicted_label
from neuracrm_mlops.store.db.schema import Outcome, Prediction, utcnow

ANSWERED_ROUTES = ("champion", "challenger")  # what callers got; "shadow" rows were only logged
# the labels an outcome of each labelled family may carry (families whose outcomes are values have none)
LABELS = {family.name: family.outcome_labels for family in FAMILIES.values() if family.outcome_labels}


@dataclass(frozen=True)
class OutcomeIn:
    organization_id: int | None
    entity_id: str
    label: str | None = None
    value: float | None = None
    observed_at: dt.datetime | None = None


@dataclass(frozen=True)
class SimulationSummary:
    model_name: str
    written: int
    degraded: int
    already_known: int


def normalise_label(model_name: str, label: object) -> str:
    """An outcome's label as its family names it (a lead's ``true``/``1``/``yes`` -> ``converted``);
    a label of no family's (or of a model of no family) is kept as written."""
    text = str(label).strip().lower()
    family = find_family(model_name)
    if family is None or not family.outcome_labels:
        return text
    text = family.outcome_aliases.get(text, text)
    if text in family.outcome_labels:
        return text
    raise ValueError(
        f"{label!r} is not an outcome of {model_name}: use one of {', '.join(family.outcome_labels)}"
    )


def record_outcomes(engine: sa.Engine, model_name: str, outcomes: Iterable[OutcomeIn], *, source: str) -> int:
    """Insert or update outcomes (one per model, organization and entity); returns how many."""
    rows = [
        {
            "model_name": model_name,
            "organization_id": o.organization_id,
            "entity_id": o.entity_id,
            "label": normalise_label(model_name, o.label) if o.label is not None else None,
            "value": o.value,
            "observed_at": o.observed_at or utcnow(),
            "source": source,
        }
        for o in outcomes
    ]
    if not rows:
        return 0
    with engine.begin() as conn:
        existing = {
            (r.organization_id, r.entity_id): r.id
            for r in conn.execute(
                sa.select(Outcome.id, Outcome.organization_id, Outcome.entity_id).where(
                    Outcome.model_name == model_name,
                    Outcome.entity_id.in_({row["entity_id"] for row in rows}),
                )
            )
        }
        new = [r for r in rows if (r["organization_id"], r["entity_id"]) not in existing]
        if new:
            conn.execute(sa.insert(Outcome), new)
        for row in rows:
            outcome_id = existing.get((row["organization_id"], row["entity_id"]))
            if outcome_id is not None:
                conn.execute(
                    sa.update(Outcome)
                    .where(Outcome.id == outcome_id)
                    .values(label=row["label"], value=row["value"], observed_at=row["observed_at"])
                )
    return len(rows)


def _draw(seed: int, organization_id: int | None, entity_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{organization_id}:{entity_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / float(1 << 64)


def simulate_outcomes(
    engine: sa.Engine,
    model_name: str,
    *,
    degrade: Iterable[str] = (),
    agree: float = 0.90,
    degraded_agree: float = 0.55,
    seed: int = 0,
    forecast_noise: float = 0.10,
) -> SimulationSummary:
    """Write simulated outcomes for logged predictions of ``model_name`` that have none yet."""
    family = find_family(model_name)
    if family is not None and not family.outcome_labels:  # outcomes are values: forecast actuals
        return simulate_forecast_actuals(engine, model_name, degrade=degrade, seed=seed, noise=forecast_noise)
    if model_name not in LABELS:
        raise ValueError(
            f"outcomes can be simulated for {', '.join(LABELS)}; {model_name!r} is not one of them"
        )
    for name, share in (("agree", agree), ("degraded_agree", degraded_agree)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {share}")
    degraded_versions = set(degrade)
    with engine.connect() as conn:
        known = {
            (r.organization_id, r.entity_id)
            for r in conn.execute(
                sa.select(Outcome.organization_id, Outcome.entity_id).where(Outcome.model_name == model_name)
            )
        }
        predictions = conn.execute(
            sa.select(
                Prediction.organization_id, Prediction.entity_id, Prediction.model_version, Prediction.output
            )
            .where(
                Prediction.model_name == model_name,
                Prediction.route.in_(ANSWERED_ROUTES),
                Prediction.fallback.is_(False),
                Prediction.entity_id.is_not(None),
            )
            .order_by(Prediction.id)
        ).all()
    labels = LABELS[model_name]
    first: dict[tuple[int | None, str], tuple[str, str]] = {}
    already = 0
    for row in predictions:
        key = (row.organization_id, row.entity_id)
        if key in known:
            already += 1
            continue
        label = predicted_label(model_name, row.output)
        if label is not None and key not in first:
            first[key] = (str(row.model_version), label)
    outcomes = []
    degraded = 0
    for (org, entity), (version, label) in first.items():
        bad = version in degraded_versions
        degraded += bad
        if _draw(seed, org, entity) < (degraded_agree if bad else agree):
            truth = label
        else:
            others = [candidate for candidate in labels if candidate != label]
            truth = others[int(_draw(seed + 1, org, entity) * len(others))]
        outcomes.append(OutcomeIn(org, entity, truth))
    written = record_outcomes(engine, model_name, outcomes, source="simulated")
    return SimulationSummary(model_name, written, degraded, already)


def simulate_forecast_actuals(
    engine: sa.Engine, model_name: str, *, degrade: Iterable[str] = (), seed: int = 0, noise: float = 0.10
) -> SimulationSummary:
    """Simulated actual revenue for the months served forecasts of ``model_name`` covered."""
    degraded_versions = set(degrade)
    with engine.connect() as conn:
        known = set(conn.scalars(sa.select(Outcome.entity_id).where(Outcome.model_name == model_name)).all())
        predictions = conn.execute(
            sa.select(Prediction.organization_id, Prediction.model_version, Prediction.output)
            .where(
                Prediction.model_name == model_name,
                Prediction.route.in_(SERVED_ROUTES),
                Prediction.fallback.is_(False),
            )
            .order_by(Prediction.id)
        ).all()
    first: dict[str, tuple[int | None, str, float]] = {}
    for row in predictions:
        for point in (row.output or {}).get("points", []):
            month = str(point["month"])
            if month not in known and month not in first:
                first[month] = (row.organization_id, str(row.model_version), float(point["forecast"]))
    outcomes = []
    degraded = 0
    for month, (org, version, forecast) in first.items():
        bad = version in degraded_versions
        degraded += bad
        error = (2 * _draw(seed, org, month) - 1) * noise
        outcomes.append(OutcomeIn(org, month, value=forecast * ((1.5 if bad else 1.0) + error)))
    written = record_outcomes(engine, model_name, outcomes, source="simulated")
    return SimulationSummary(model_name, written, degraded, len(known))
