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

import contextlib
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.errors import NeuraCRMError
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.db.engine import get_engine
from neuracrm_mlops.store.db.migrate import require_current_schema
from neuracrm_mlops.store.db.schema import Organization
from neuracrm_mlops.store.orgs import resolve_organization
from neuracrm_mlops.store.snapshots import content_hash_digest, load_sales_history
from neuracrm_mlops.training.backtest_chart import save_backtest_chart
from neuracrm_mlops.training.train import (
    DEFAULT_TOLERANCE,
    Incumbent,
    Lineage,
    decide_registration,
    incumbent_of,
    lineage_tags,
    pip_requirements,
    raise_below_floor_alert,
)

EXPERIMENT = "sales_forecast"


class ForecastWorkerError(NeuraCRMError):
    """A process fitting forecasts for ``train sales_forecast --workers`` died (killed, out of memory)."""


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
    below_floor: bool = False


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


def chunk_ids(ids: Sequence[int], chunk_size: int, max_chunks: int) -> list[list[int]]:
    """``ids`` in order, in ``ceil(len / size)`` chunks of near-equal size (they differ by at most one),
    where ``size = max(chunk_size, ceil(len / max_chunks))``: chunks of ``chunk_size`` until that would
    make more than ``max_chunks`` of them, then larger ones. 1,000 organizations at 50: 20 chunks of
    50; 100,000 at 50 with at most 1,000: 1,000 chunks of 100."""
    if chunk_size < 1 or max_chunks < 1:
        raise ValueError(f"chunk_size and max_chunks must be at least 1, got {chunk_size} and {max_chunks}")
    if not ids:
        return []
    size = max(chunk_size, math.ceil(len(ids) / max_chunks))
    count = math.ceil(len(ids) / size)
    base, extra = divmod(len(ids), count)
    chunks, start = [], 0
    for index in range(count):
        end = start + base + (1 if index < extra else 0)
        chunks.append(list(ids[start:end]))
        start = end
    return chunks


def plan_forecast_chunks(
    chunk_size: int | None = None, *, max_chunks: int | None = None, engine: sa.Engine | None = None
) -> list[list[int]]:
    """Organization ids in chunks: one mapped task each (1,000 organizations -> 20 tasks at 50).

    The chunk size defaults to NEURACRM_FORECAST_CHUNK_SIZE (50), the most chunks to
    NEURACRM_FORECAST_MAX_CHUNKS (1,000; the DAG also caps it at Airflow's ``max_map_length``); see
    :func:`chunk_ids`. Also makes sure the MLflow store and the experiment exist before the chunks fan
    out: on a fresh database-backed store, two tasks creating MLflow's tables at once failed one of
    them (duplicate ``alembic_version``).
    """
    settings = get_settings()
    chunk_size = chunk_size or settings.forecast_chunk_size
    max_chunks = max_chunks or settings.forecast_max_chunks
    if chunk_size < 1 or max_chunks < 1:
        raise ValueError(f"chunk_size and max_chunks must be at least 1, got {chunk_size} and {max_chunks}")
    engine = engine or get_engine()
    require_current_schema(engine)
    registry.ensure_experiment(EXPERIMENT)
    with engine.connect() as conn:
        ids = list(conn.scalars(sa.select(Organization.id).order_by(Organization.id)))
    return chunk_ids(ids, chunk_size, max_chunks)


@dataclass
class FittedOrganization:
    """One organization's fitted forecaster, its pyfunc already saved under the chunk's staging
    directory (``org_<id>``): what a fitting worker hands back for registration."""

    organization_id: int
    fitted: Any  # models.forecasting_model.FittedForecaster
    months_filled_with_zero: int
    data_hash: str
    seconds: float


@dataclass
class FittedChunk:
    fits: list[FittedOrganization] = field(default_factory=list)
    without_history: list[int] = field(default_factory=list)


def fit_organizations(
    organization_ids: list[int],
    staging: Path,
    *,
    engine: sa.Engine | None = None,
    config: Any = None,
    plots: bool = True,
) -> FittedChunk:
    """Fit each organization's forecaster and save its pyfunc (and backtest chart) under
    ``staging/org_<id>``: the CPU-bound half of training, no MLflow server or registry involved, so
    that it can run in worker processes while another process registers."""
    import joblib
    import mlflow.pyfunc

    from neuracrm_mlops.models import forecasting_model
    from neuracrm_mlops.models.pyfunc_wrappers import ForecastPyfunc
    from neuracrm_mlops.training import packaging as model_packaging

    engine = engine or get_engine()
    config = config or forecasting_model.ForecastConfig()
    chunk = FittedChunk()
    requirements = pip_requirements()
    signature = model_packaging.forecast_signature()
    example = model_packaging.forecast_input_example()
    with engine.connect() as conn, _without_uv_project_files():
        for organization_id in organization_ids:
            started = time.perf_counter()
            history, filled, data_hash = load_sales_history(conn, organization_id)
            if history.empty:
                chunk.without_history.append(organization_id)
                continue
            fitted = forecasting_model.train(history, config)
            model_dir = staging / f"org_{organization_id}"
            state = staging / f"state_{organization_id}.joblib"
            joblib.dump(fitted, state)
            mlflow.pyfunc.save_model(
                str(model_dir),
                python_model=ForecastPyfunc(),
                artifacts={"model": str(state)},
                pip_requirements=requirements,
                signature=signature,
                input_example=example,
            )
            state.unlink()
            if plots:
                save_backtest_chart(model_dir / "backtest.svg", history, fitted)
            chunk.fits.append(
                FittedOrganization(organization_id, fitted, filled, data_hash, time.perf_counter() - started)
            )
    return chunk


@contextlib.contextmanager
def _without_uv_project_files() -> Iterator[None]:
    """MLflow copies uv.lock and pyproject.toml (~400 KB here) into every saved model when it runs in a
    uv project: 1,000 copies per forecast run. The chunk's run logs them once instead
    (``environment/``); each version keeps its pinned pip requirements."""
    previous = os.environ.get("MLFLOW_LOG_UV_FILES")
    os.environ["MLFLOW_LOG_UV_FILES"] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_LOG_UV_FILES", None)
        else:
            os.environ["MLFLOW_LOG_UV_FILES"] = previous


def fit_organizations_in_worker(
    organization_ids: list[int], staging: str, db_url: str, config: Any, plots: bool
) -> FittedChunk:
    """:func:`fit_organizations` in a worker process of ``train_forecasts_for`` (spawned: its own
    engine, from the URL the parent uses)."""
    registry.configure_mlflow()  # MLflow's loggers as quiet as in the parent
    return fit_organizations(
        organization_ids, Path(staging), engine=get_engine(db_url), config=config, plots=plots
    )


def _split_existing(
    client: Any, organization_ids: list[int], lineage: Lineage, summary: ForecastTrainingSummary
) -> list[int]:
    """Organizations still to train; those with a version for this run key go to ``summary``."""
    pending = []
    names = {
        registry.forecast_model_name(organization_id): organization_id for organization_id in organization_ids
    }
    versions = registry.versions_by_name(client, list(names))
    for name, organization_id in names.items():
        existing = registry.version_with_run_key(versions[name], lineage.run_key)
        if existing is None:
            pending.append(organization_id)
            continue
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
    return pending


def train_forecast_chunk(
    organization_ids: list[int],
    lineage: Lineage,
    *,
    engine: sa.Engine | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    config: Any = None,
    plots: bool = True,
) -> ForecastTrainingSummary:
    """Train and register the forecasts of ``organization_ids`` in one MLflow run (one DAG task)."""
    from neuracrm_mlops.models import forecasting_model

    started = time.perf_counter()
    engine = engine or get_engine()
    require_current_schema(engine)
    config = config or forecasting_model.ForecastConfig()
    client = registry.configure_mlflow()
    summary = ForecastTrainingSummary(model_name=f"{registry.FORECAST_MODEL_PREFIX}*")
    pending = _split_existing(client, organization_ids, lineage, summary)
    with tempfile.TemporaryDirectory() as tmp:
        chunk = fit_organizations(pending, Path(tmp), engine=engine, config=config, plots=plots)
        register_fitted_chunk(client, chunk, Path(tmp), lineage, config, summary, tolerance=tolerance)
    summary.seconds = time.perf_counter() - started
    return summary


def register_fitted_chunk(
    client: Any,
    chunk: FittedChunk,
    staging: Path,
    lineage: Lineage,
    config: Any,
    summary: ForecastTrainingSummary,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> None:
    """Gate each fit against its champion, then one MLflow run for the chunk and a model version
    (with the challenger alias when it passed) per organization; outcomes go to ``summary``."""
    settings = get_settings()
    for organization_id in chunk.without_history:
        summary.organizations.append(
            asdict(
                OrganizationForecastOutcome(
                    organization_id,
                    registry.forecast_model_name(organization_id),
                    "skipped",
                    "no sales history",
                )
            )
        )
    trained: list[tuple[OrganizationForecastOutcome, Any, dict[str, str]]] = []
    below_floor: list[tuple[OrganizationForecastOutcome, Incumbent | None]] = []
    for fit in chunk.fits:
        name = registry.forecast_model_name(fit.organization_id)
        backtest = fit.fitted.backtest
        accuracy = backtest.ensemble.accuracy if backtest.ensemble else float("nan")
        champion = registry.alias_version(client, name, registry.CHAMPION)
        fallback_name, fallback_accuracy = fallback_backtest_accuracy(backtest)
        incumbent = incumbent_of(
            (str(champion.version), float(champion.tags["backtest_accuracy"])) if champion else None,
            (fallback_name, fallback_accuracy) if fallback_name else None,
        )
        decision = decide_registration(
            accuracy,
            floor=settings.floor_for("sales_forecast", fit.organization_id),
            incumbent=incumbent,
            tolerance=tolerance,
        )
        outcome = OrganizationForecastOutcome(
            fit.organization_id,
            name,
            registry.CHALLENGER if decision.passed else "rejected",
            decision.reason,
            accuracy=accuracy if math.isfinite(accuracy) else None,
            best_model=backtest.best_model,
            chain_used=backtest.chain_used,
            seconds=fit.seconds,
            below_floor=decision.below_floor,
        )
        tags = {
            **lineage_tags(lineage, fit.data_hash),
            "organization_id": str(fit.organization_id),
            "backtest_accuracy": f"{accuracy:.6f}",
            "best_model": backtest.best_model,
            "chain_used": backtest.chain_used,
            "months_filled_with_zero": str(fit.months_filled_with_zero),
        }
        if incumbent is not None:
            tags["incumbent"] = incumbent.label
            if incumbent.measured:
                tags["incumbent_accuracy"] = f"{incumbent.accuracy:.6f}"
        if decision.below_floor:
            tags["below_floor"] = "true"
            below_floor.append((outcome, incumbent))
        trained.append((outcome, fit.fitted, tags))
    if trained:
        _register_chunk(client, trained, staging, lineage, config)
    summary.organizations.extend(asdict(outcome) for outcome, *_ in trained)
    served_below = [(o, i) for o, i in below_floor if o.status == registry.CHALLENGER]
    if served_below:
        first, incumbent = served_below[0]
        more = (
            f" (and {len(served_below) - 1} more organizations in this chunk)"
            if len(served_below) > 1
            else ""
        )
        raise_below_floor_alert(
            f"{registry.FORECAST_MODEL_PREFIX}*",
            "sales_forecast",
            None,
            float(first.accuracy or 0.0),
            incumbent,
            served=f"organization {first.organization_id}'s v{first.version}{more}",
        )


def fallback_backtest_accuracy(backtest: Any) -> tuple[str | None, float | None]:
    """The serving fallback's accuracy in the same backtest: seasonal naive, or naive for a series too
    short for it (None when neither was backtested)."""
    for model, label in (("seasonal_naive", "the seasonal-naive fallback"), ("naive", "the naive fallback")):
        score = backtest.models.get(model)
        if score is not None and math.isfinite(score.accuracy):
            return label, float(score.accuracy)
    return None, None


FORECAST_ENVIRONMENT = "environment"  # the chunk run's shared files: uv.lock, pyproject.toml, the wheel


def _log_forecast_model(
    client: Any, run_id: str, model_dir: Path, organization_id: int, tags: dict[str, str]
) -> str:
    """The staged pyfunc of one organization as a LoggedModel of the chunk's run; its model id."""
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    model = mlflow.initialize_logged_model(
        name=f"org_{organization_id}", source_run_id=run_id, tags=tags, model_type="sales_forecast"
    )
    try:
        metadata = Model.load(str(model_dir / "MLmodel"))
        metadata.model_id = model.model_id
        metadata.save(str(model_dir / "MLmodel"))
        client.log_model_artifacts(model.model_id, str(model_dir))
    except BaseException:
        mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return str(model.model_id)


def _log_chunk_training_data(trained: list[tuple[OrganizationForecastOutcome, Any, dict[str, str]]]) -> None:
    """``mlflow.log_input`` of the chunk's sales histories: one row per organization with its
    snapshot hash (the versions' ``data_snapshot_hash``); the digest is the hash of those."""
    from neuracrm_mlops.training.packaging import log_training_data

    frame = pd.DataFrame(
        {
            "organization_id": [outcome.organization_id for outcome, *_ in trained],
            "data_snapshot_hash": [tags["data_snapshot_hash"] for *_, tags in trained],
            "months_filled_with_zero": [int(tags["months_filled_with_zero"]) for *_, tags in trained],
        }
    )
    first, last = trained[0][0].organization_id, trained[-1][0].organization_id
    log_training_data(
        frame, f"monthly_sales_orgs_{first}-{last}", content_hash_digest(frame["data_snapshot_hash"])
    )


def _register_chunk(
    client: Any,
    trained: list[tuple[OrganizationForecastOutcome, Any, dict[str, str]]],
    staging: Path,
    lineage: Lineage,
    config: Any,
) -> None:
    """One MLflow run for the chunk; per organization a LoggedModel (``models:/m-...``) and a model
    version registered from it (with the challenger alias if it passed). The project's wheel is
    logged once per run (``environment/``), each version names it in its ``code_wheel`` tag."""
    import mlflow

    from neuracrm_mlops.training import packaging as model_packaging

    mlflow.set_experiment(experiment_id=registry.ensure_experiment(EXPERIMENT))
    first, last = trained[0][0].organization_id, trained[-1][0].organization_id
    params = {k: str(v) for k, v in asdict(config).items()}
    params_hash = registry.stable_hash(params)
    schema_hash = registry.stable_hash(["month", "revenue"])
    with mlflow.start_run(run_name=f"forecasts orgs {first}-{last}") as run:
        mlflow.log_params({**params, "organizations": len(trained), "first_org": first, "last_org": last})
        metrics: dict[str, float] = {}
        for outcome, fitted, _ in trained:
            for model, score in fitted.backtest.models.items():
                metrics[f"org_{outcome.organization_id}/{model}_accuracy"] = score.accuracy
            if outcome.accuracy is not None:
                metrics[f"org_{outcome.organization_id}/accuracy"] = outcome.accuracy
        mlflow.log_metrics(metrics)
        mlflow.log_dict(lineage.validation or {}, "validation/gx_result.json")
        mlflow.set_tags({k: v for k, v in lineage_tags(lineage, "").items() if k != "data_snapshot_hash"})
        _log_chunk_training_data(trained)
        for project_file in ("uv.lock", "pyproject.toml"):  # once per run, not in every model
            if (Path.cwd() / project_file).is_file():
                mlflow.log_artifact(str(Path.cwd() / project_file), FORECAST_ENVIRONMENT)
        wheel = model_packaging.project_wheel()
        mlflow.log_artifact(str(wheel), FORECAST_ENVIRONMENT)
        wheel_uri = f"runs:/{run.info.run_id}/{FORECAST_ENVIRONMENT}/{wheel.name}"
        versions = registry.versions_by_name(client, [outcome.model_name for outcome, *_ in trained])
        for outcome, fitted, tags in trained:
            if not versions[outcome.model_name]:  # else registered already
                registry.ensure_registered_model(
                    client,
                    outcome.model_name,
                    f"Monthly revenue forecast of organization {outcome.organization_id}.",
                )
            semver = registry.semantic_version_after(versions[outcome.model_name], schema_hash, params_hash)
            model_id = _log_forecast_model(
                client,
                run.info.run_id,
                staging / f"org_{outcome.organization_id}",
                outcome.organization_id,
                {"organization_id": str(outcome.organization_id), model_packaging.WHEEL_ARTIFACT: wheel_uri},
            )
            version = client.create_model_version(
                outcome.model_name,
                f"models:/{model_id}",
                run_id=run.info.run_id,
                model_id=model_id,
                tags={
                    **tags,
                    "status": "checking" if outcome.status == registry.CHALLENGER else outcome.status,
                    "reason": outcome.reason,
                    "semver": semver,
                    "schema_hash": schema_hash,
                    "params_hash": params_hash,
                    model_packaging.WHEEL_ARTIFACT: wheel_uri,
                },
            )
            outcome.version = str(version.version)
            _check_servable(client, outcome, fitted)
            if outcome.status == registry.CHALLENGER:
                client.set_registered_model_alias(outcome.model_name, registry.CHALLENGER, version.version)


SERVABILITY_HORIZONS = (1, 12)


def _check_servable(client: Any, outcome: OrganizationForecastOutcome, fitted: Any) -> None:
    """Load the version the way the service does and compare its forecasts with the fitted ones; a
    version that fails becomes ``rejected`` with the exception as the reason."""
    from neuracrm_mlops.inference.predictor import forecast_output
    from neuracrm_mlops.training import servability

    assert outcome.version is not None
    expected = [forecast_output(fitted.predict(h)) for h in SERVABILITY_HORIZONS]
    try:
        servability.verify(
            outcome.model_name, outcome.version, servability.forecast_answers(SERVABILITY_HORIZONS), expected
        )
    except servability.NotServableError as exc:
        outcome.status, outcome.reason = "rejected", f"not servable: {exc}"
        client.set_model_version_tag(outcome.model_name, outcome.version, servability.SERVABLE_TAG, "false")
    else:
        client.set_model_version_tag(outcome.model_name, outcome.version, servability.SERVABLE_TAG, "true")
    client.set_model_version_tag(outcome.model_name, outcome.version, "status", outcome.status)
    client.set_model_version_tag(outcome.model_name, outcome.version, "reason", outcome.reason[:5000])


def train_forecasts_for(
    organization: str | int | None,
    lineage: Lineage,
    *,
    engine: sa.Engine | None = None,
    chunk_size: int | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> ForecastTrainingSummary:
    """The CLI's path: one organization, or every organization chunk by chunk.

    With ``workers`` > 1, that many spawned processes fit the chunks (the CPU-bound part) while this
    process registers each chunk as it comes back, so the registry sees one writer, as with one
    worker. ``progress(organizations done, organizations in all)`` is called after each chunk.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    from neuracrm_mlops.models import forecasting_model

    engine = engine or get_engine()
    require_current_schema(engine)
    if organization is not None:
        with engine.connect() as conn:
            chunks = [[resolve_organization(conn, organization).id]]
    else:
        chunks = plan_forecast_chunks(chunk_size, engine=engine)
    started = time.perf_counter()
    total = ForecastTrainingSummary(model_name=f"{registry.FORECAST_MODEL_PREFIX}*")
    in_all = sum(len(chunk) for chunk in chunks)
    config = forecasting_model.ForecastConfig()
    client = registry.configure_mlflow()
    workers = min(workers, len(chunks))

    def finish(chunk_summary: ForecastTrainingSummary) -> None:
        total.organizations.extend(chunk_summary.organizations)
        if progress:
            progress(len(total.organizations), in_all)

    if workers == 1:
        for chunk in chunks:
            finish(train_forecast_chunk(chunk, lineage, engine=engine, config=config))
    else:
        _train_chunks_in_workers(chunks, lineage, engine, config, client, workers, finish)
    total.seconds = time.perf_counter() - started
    return total


def _train_chunks_in_workers(
    chunks: list[list[int]],
    lineage: Lineage,
    engine: sa.Engine,
    config: Any,
    client: Any,
    workers: int,
    finish: Callable[[ForecastTrainingSummary], None],
) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    db_url = engine.url.render_as_string(hide_password=False)
    queue = iter(enumerate(chunks))
    running: dict[Future[FittedChunk], tuple[list[int], ForecastTrainingSummary, Path]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):

        def submit_next() -> None:
            index, chunk = next(queue, (-1, []))
            if index < 0:
                return
            summary = ForecastTrainingSummary(model_name=f"{registry.FORECAST_MODEL_PREFIX}*")
            pending = _split_existing(client, chunk, lineage, summary)
            staging = Path(tmp) / f"chunk_{index}"
            staging.mkdir()
            future = pool.submit(fit_organizations_in_worker, pending, str(staging), db_url, config, True)
            running[future] = (chunk, summary, staging)

        try:
            for _ in range(workers + 1):  # one chunk queued behind the busy workers
                submit_next()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    organization_ids, summary, staging = running.pop(future)
                    try:
                        chunk = future.result()
                    except BrokenProcessPool as exc:
                        raise ForecastWorkerError(
                            f"a forecast worker process died while fitting organizations "
                            f"{organization_ids[0]}-{organization_ids[-1]} (out of memory? see dmesg); "
                            "the chunks registered before it stay registered: run `train sales_forecast` "
                            "again, with fewer --workers if memory is short"
                        ) from exc
                    submit_next()  # keep the workers busy while this process registers
                    started = time.perf_counter()
                    register_fitted_chunk(client, chunk, staging, lineage, config, summary)
                    summary.seconds = time.perf_counter() - started
                    shutil.rmtree(staging, ignore_errors=True)
                    finish(summary)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
