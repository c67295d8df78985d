"""Per-organization sales forecasts: train, gate and register, in chunks of organizations.

One registered model per organization (``sales_forecast_org_<id>``). The DAG fans out one mapped
task per chunk (``plan_forecast_chunks``); each chunk is one MLflow run holding every organization's
pyfunc under ``forecasts/org_<id>``, and each organization gets its own model version with lineage
tags. An organization with no sales history gets no model (serving answers with its fallback).

Champion comparison for forecasts: a forecaster's accuracy is its rolling-origin backtest
accuracy, recorded on every version as ``backtest_accuracy``; the gate compares the new version's
with the champion's, within the tolerance.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops import registry
from neuracrm_mlops.config import get_settings
from neuracrm_mlops.db.engine import get_engine
from neuracrm_mlops.db.migrate import require_current_schema
from neuracrm_mlops.db.schema import MonthlySales, Organization
from neuracrm_mlops.orgs import resolve_organization
from neuracrm_mlops.training import (
    DEFAULT_TOLERANCE,
    Lineage,
    decide_registration,
    lineage_tags,
    pip_requirements,
    save_plot,
    snapshot_hash,
)

EXPERIMENT = "sales_forecast"


@dataclass
class OrganizationForecastOutcome:
    organization_id: int
    model_name: str
    status: str  # challenger | rejected | existing | skipped
    reason: str
    version: str | None = None
    accuracy: float | None = None
    best_model: str | None = None
    chain_used: str | None = None
    seconds: float = 0.0


@dataclass
class ForecastTrainingSummary:
    model_name: str
    organizations: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status_counts(self) -> dict[str, int]:
        return dict(Counter(o["status"] for o in self.organizations))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status_counts": self.status_counts}


def plan_forecast_chunks(
    chunk_size: int | None = None, *, engine: sa.Engine | None = None
) -> list[list[int]]:
    """Organization ids in chunks: one mapped task each (1,000 organizations -> 20 tasks at 50).

    The chunk size defaults to NEURACRM_FORECAST_CHUNK_SIZE (50).
    """
    chunk_size = chunk_size or get_settings().forecast_chunk_size
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    engine = engine or get_engine()
    require_current_schema(engine)
    with engine.connect() as conn:
        ids = list(conn.scalars(sa.select(Organization.id).order_by(Organization.id)))
    return [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]


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
        return pd.Series(dtype=float), 0, snapshot_hash(pd.Series(dtype=str))
    series = pd.Series([r.revenue for r in rows], index=pd.PeriodIndex([r.month for r in rows], freq="M"))
    full = pd.period_range(series.index.min(), series.index.max(), freq="M")
    filled = len(full) - len(series)
    return (
        series.reindex(full, fill_value=0.0),
        filled,
        snapshot_hash(pd.Series([r.content_hash for r in rows])),
    )


def _backtest_plot(path: Path, history: pd.Series, fitted: Any) -> Path:
    result = fitted.predict(fitted.max_horizon)

    def draw(axes: Any) -> None:
        actual_months = pd.PeriodIndex(history.index).to_timestamp()
        axes.plot(actual_months, history.to_numpy(), label="actual", color="black", linewidth=1)
        months = pd.to_datetime(result.months)
        axes.plot(months, result.point, label="ensemble forecast", color="tab:blue")
        axes.fill_between(months, result.lower_95, result.upper_95, alpha=0.15, color="tab:blue", label="95%")
        axes.fill_between(months, result.lower_80, result.upper_80, alpha=0.3, color="tab:blue", label="80%")
        ensemble = fitted.backtest.ensemble
        accuracy = f"{ensemble.accuracy:.3f}" if ensemble else "n/a"
        axes.set(title=f"backtest accuracy {accuracy} ({fitted.backtest.chain_used})", ylabel="revenue")
        axes.legend(fontsize=7)

    return save_plot(path, draw)


def train_forecast_chunk(
    organization_ids: list[int],
    lineage: Lineage,
    *,
    engine: sa.Engine | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    config: Any = None,
    plots: bool = True,
) -> ForecastTrainingSummary:
    """Train and register the forecasts of ``organization_ids`` in one MLflow run."""
    from neuracrm_mlops.models import forecasting_model

    started = time.perf_counter()
    engine = engine or get_engine()
    require_current_schema(engine)
    config = config or forecasting_model.ForecastConfig()
    client = registry.configure_mlflow()
    floor = get_settings().accuracy_floor
    summary = ForecastTrainingSummary(model_name=f"{registry.FORECAST_MODEL_PREFIX}*")
    trained: list[tuple[OrganizationForecastOutcome, Any, pd.Series, dict[str, str]]] = []
    with engine.connect() as conn:
        for organization_id in organization_ids:
            org_started = time.perf_counter()
            name = registry.forecast_model_name(organization_id)
            existing = registry.find_version_by_run_key(client, name, lineage.run_key)
            if existing is not None:
                summary.organizations.append(
                    asdict(
                        OrganizationForecastOutcome(
                            organization_id,
                            name,
                            "existing",
                            f"version {existing.version} was already registered for {lineage.run_key}",
                            version=str(existing.version),
                        )
                    )
                )
                continue
            history, filled, data_hash = load_sales_history(conn, organization_id)
            if history.empty:
                summary.organizations.append(
                    asdict(OrganizationForecastOutcome(organization_id, name, "skipped", "no sales history"))
                )
                continue
            fitted = forecasting_model.train(history, config)
            backtest = fitted.backtest
            accuracy = backtest.ensemble.accuracy if backtest.ensemble else float("nan")
            champion = registry.alias_version(client, name, registry.CHAMPION)
            champion_accuracy = float(champion.tags["backtest_accuracy"]) if champion else None
            decision = decide_registration(
                accuracy, floor=floor, champion_accuracy=champion_accuracy, tolerance=tolerance
            )
            outcome = OrganizationForecastOutcome(
                organization_id,
                name,
                registry.CHALLENGER if decision.passed else "rejected",
                decision.reason,
                accuracy=accuracy if math.isfinite(accuracy) else None,
                best_model=backtest.best_model,
                chain_used=backtest.chain_used,
                seconds=time.perf_counter() - org_started,
            )
            tags = {
                **lineage_tags(lineage, data_hash),
                "organization_id": str(organization_id),
                "backtest_accuracy": f"{accuracy:.6f}",
                "best_model": backtest.best_model,
                "chain_used": backtest.chain_used,
                "months_filled_with_zero": str(filled),
            }
            trained.append((outcome, fitted, history, tags))

        if trained:
            _register_chunk(client, trained, lineage, config, plots=plots)
    summary.organizations.extend(asdict(outcome) for outcome, *_ in trained)
    summary.seconds = time.perf_counter() - started
    return summary


def _register_chunk(
    client: Any,
    trained: list[tuple[OrganizationForecastOutcome, Any, pd.Series, dict[str, str]]],
    lineage: Lineage,
    config: Any,
    *,
    plots: bool,
) -> None:
    """One MLflow run for the chunk; a model version (and the challenger alias if it passed) per org."""
    import joblib
    import mlflow

    from neuracrm_mlops.models.pyfunc_wrappers import ForecastPyfunc

    mlflow.set_experiment(experiment_id=registry.ensure_experiment(EXPERIMENT))
    first, last = trained[0][0].organization_id, trained[-1][0].organization_id
    params = {k: str(v) for k, v in asdict(config).items()}
    params_hash = registry.stable_hash(params)
    schema_hash = registry.stable_hash(["month", "revenue"])
    with (
        tempfile.TemporaryDirectory() as tmp,
        mlflow.start_run(run_name=f"forecasts orgs {first}-{last}") as run,
    ):
        staging = Path(tmp) / "forecasts"
        for outcome, fitted, history, _ in trained:
            model_dir = staging / f"org_{outcome.organization_id}"
            state = Path(tmp) / f"state_{outcome.organization_id}.joblib"
            joblib.dump(fitted, state)
            mlflow.pyfunc.save_model(
                str(model_dir),
                python_model=ForecastPyfunc(),
                artifacts={"model": str(state)},
                pip_requirements=pip_requirements(),
            )
            if plots:
                _backtest_plot(model_dir / "backtest.png", history, fitted)
        mlflow.log_params({**params, "organizations": len(trained), "first_org": first, "last_org": last})
        metrics: dict[str, float] = {}
        for outcome, fitted, _, _ in trained:
            for model, score in fitted.backtest.models.items():
                metrics[f"org_{outcome.organization_id}/{model}_accuracy"] = score.accuracy
            if outcome.accuracy is not None:
                metrics[f"org_{outcome.organization_id}/accuracy"] = outcome.accuracy
        mlflow.log_metrics(metrics)
        mlflow.log_dict(lineage.validation or {}, "validation/gx_result.json")
        mlflow.set_tags({k: v for k, v in lineage_tags(lineage, "").items() if k != "data_snapshot_hash"})
        mlflow.log_artifacts(str(staging), "forecasts")
        for outcome, _, _, tags in trained:
            registry.ensure_registered_model(
                client,
                outcome.model_name,
                f"Monthly revenue forecast of organization {outcome.organization_id}.",
            )
            semver = registry.next_semantic_version(client, outcome.model_name, schema_hash, params_hash)
            version = client.create_model_version(
                outcome.model_name,
                f"{run.info.artifact_uri}/forecasts/org_{outcome.organization_id}",
                run_id=run.info.run_id,
                tags={
                    **tags,
                    "status": outcome.status,
                    "reason": outcome.reason,
                    "semver": semver,
                    "schema_hash": schema_hash,
                    "params_hash": params_hash,
                },
            )
            outcome.version = str(version.version)
            if outcome.status == registry.CHALLENGER:
                client.set_registered_model_alias(outcome.model_name, registry.CHALLENGER, version.version)


def train_forecasts_for(
    organization: str | int | None,
    lineage: Lineage,
    *,
    engine: sa.Engine | None = None,
    chunk_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ForecastTrainingSummary:
    """The CLI's path: one organization, or every organization chunk by chunk.

    ``progress(organizations done, organizations in all)`` is called after each chunk.
    """
    engine = engine or get_engine()
    if organization is not None:
        with engine.connect() as conn:
            chunks = [[resolve_organization(conn, organization).id]]
    else:
        chunks = plan_forecast_chunks(chunk_size, engine=engine)
    started = time.perf_counter()
    total = ForecastTrainingSummary(model_name=f"{registry.FORECAST_MODEL_PREFIX}*")
    in_all = sum(len(chunk) for chunk in chunks)
    for chunk in chunks:
        part = train_forecast_chunk(chunk, lineage, engine=engine)
        total.organizations.extend(part.organizations)
        if progress:
            progress(len(total.organizations), in_all)
    total.seconds = time.perf_counter() - started
    return total
