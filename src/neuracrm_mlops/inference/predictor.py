"""The serving core behind the BentoML endpoints: route, predict, fall back, describe, log.

Everything here is plain Python over plain data so that it is tested without HTTP; the BentoML
service (``neuracrm_mlops.serving.service``) only parses requests, authenticates and calls in.

- Routing is sticky (``routing.choose_route``) between the champion and the challenger of a
  ``ModelSlots`` snapshot taken once per batch.
- A missing model, a model that raises, or one that returns a non-finite number never fails a
  valid request: the rule-based scorer, VADER, or a seasonal naive forecast answers, flagged
  ``fallback: true`` with the reason. An organization with AI switched off gets the same, flagged.
- Every answer names the model that gave it (``name``, ``version``, ``route``).
- Degraded modes answer fast and say so: a forecast never waits on MLflow for long (the model loads
  in the background and the flagged fallback answers meanwhile), a database that cannot give the
  sales history is a ``DependencyUnavailableError`` (503 with ``Retry-After``), and ``health()``
  shows each dependency's last success and last error.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import logging
import math
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from neuracrm_mlops.config import REPLICA_NAME_MAX_CHARS
from neuracrm_mlops.inference.forecast_cache import ForecastCache, cache_key
from neuracrm_mlops.inference.live_models import LiveModels, LoadedModel, ModelSlots
from neuracrm_mlops.inference.prediction_log import PredictionLogWriter, prediction_row
from neuracrm_mlops.inference.routing import CHAMPION_ROUTE, FALLBACK_ROUTE, SHADOW_ROUTE, choose_route
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.db.engine import DependencyState, one_line_error
from neuracrm_mlops.store.tenancy import Tenant

log = logging.getLogger(__name__)

BUILTIN_VERSION = "builtin"
MAX_LOGGED_TEXT = 2_000
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str | None
    route: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "route": self.route}


@dataclass
class Answer:
    """One prediction as returned to the caller and written to the log."""

    entity_id: str
    output: dict[str, Any]
    model: ModelRef
    fallback_reason: str | None = None
    features: dict[str, Any] = field(default_factory=dict)
    # the served version that failed (raised or answered NaN) when the fallback answered instead
    failed_version: str | None = None
    # the challenger's answer for the same entity, logged (route "shadow") but never returned
    shadow: Answer | None = None

    @property
    def fallback(self) -> bool:
        return self.fallback_reason is not None

    def public(self) -> dict[str, Any]:
        return {
            **self.output,
            "model": self.model.as_dict(),
            "fallback": self.fallback,
            "fallback_reason": self.fallback_reason,
        }


def content_entity_id(value: Any) -> str:
    """A stable id for an input that names no entity (routing stays sticky by content)."""
    return "sha1:" + hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finite(values: Sequence[float]) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


@dataclass(frozen=True)
class ScoreItem:
    tenant: Tenant
    entity_id: str
    lead: dict[str, Any]


class MicroBatcher(Generic[T, R]):
    """Adaptive batching on the event loop: while one batch runs, new requests queue; the next batch
    takes everything queued (up to ``max_items``). Light load gets batches of one and no added wait;
    heavy load gets bigger batches. It never refuses work (no load shedding)."""

    def __init__(self, fn: Callable[[list[T]], list[R]], executor: Executor, *, max_items: int = 256) -> None:
        self._fn = fn
        self._executor = executor
        self._max_items = max_items
        self._queue: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, items: list[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[R]] = loop.create_future()
        self._queue.append((items, future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            jobs: list[tuple[list[T], asyncio.Future[list[R]]]] = []
            count = 0
            while self._queue and (not jobs or count + len(self._queue[0][0]) <= self._max_items):
                job = self._queue.pop(0)
                jobs.append(job)
                count += len(job[0])
            flat = [item for items, _ in jobs for item in items]
            self.batches += 1
            self.items += len(flat)
            try:
                results = await loop.run_in_executor(self._executor, self._fn, flat)
            except Exception as exc:  # the batch function handles model errors; this is a bug guard
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for items, future in jobs:
                if not future.done():
                    future.set_result(results[start : start + len(items)])
                start += len(items)


class Predictor:
    """Lead scores, forecasts and sentiment for authenticated tenants, with fallbacks and logging."""

    def __init__(
        self,
        *,
        engine: sa.Engine,
        live: LiveModels,
        log_writer: PredictionLogWriter,
        cache: ForecastCache,
        rule_scorer: Any,
        vader: Any,
        shadow_canary: bool = False,
        forecast_load_wait_seconds: float = 0.0,
        retry_after_seconds: int = 5,
        database: DependencyState | None = None,
    ) -> None:
        self.engine = engine
        self.forecast_load_wait_seconds = forecast_load_wait_seconds
        self.retry_after_seconds = retry_after_seconds
        # the database as a dependency (the serving engine reports into it, see track_database_health)
        self.database = database or DependencyState("database")
        self.shadow_canary = shadow_canary
        self.live = live
        self.log_writer = log_writer
        self.cache = cache
        self._builtin_rules = rule_scorer
        self._builtin_vader = vader

    # -- lead scoring ----------------------------------------------------------------------------
    def _rules(self) -> tuple[Any, ModelRef]:
        slots = self.live.slots(registry.LEAD_RULES_MODEL)
        if slots is not None and slots.champion is not None:
            return slots.champion.model, ModelRef(
                registry.LEAD_RULES_MODEL, slots.champion.version, FALLBACK_ROUTE
            )
        return self._builtin_rules, ModelRef(registry.LEAD_RULES_MODEL, BUILTIN_VERSION, FALLBACK_ROUTE)

    @staticmethod
    def _predict_leads(model: Any, leads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = model.predict(leads)
        if len(results) != len(leads) or not _finite([r["probability"] for r in results]):
            raise ValueError("the model returned a non-finite or missing probability")
        return results

    def score_batch(self, items: list[ScoreItem]) -> list[Answer]:
        """Score leads of any tenants together (one model call per served version)."""
        slots = self.live.slots(registry.LEAD_MODEL)
        groups: dict[int, tuple[LoadedModel, str, list[int]]] = {}
        fallback: dict[int, str] = {}
        failed: dict[int, str] = {}
        for i, item in enumerate(items):
            if not item.tenant.ai_enabled:
                fallback[i] = "AI features are switched off for this organization"
                continue
            if slots is None or slots.champion is None:
                fallback[i] = "no lead scoring model is loaded"
                continue
            route = choose_route(
                item.tenant.organization_id,
                item.entity_id,
                slots.weight,
                has_challenger=slots.challenger is not None,
            )
            loaded = slots.for_route(route) or slots.champion
            groups.setdefault(id(loaded), (loaded, route, []))[2].append(i)
        answers: dict[int, Answer] = {}
        for loaded, route, indices in groups.values():
            try:
                results = self._predict_leads(loaded.model, [items[i].lead for i in indices])
            except Exception as exc:
                reason = f"{loaded.name} v{loaded.version} failed: {type(exc).__name__}: {exc}"
                log.error("lead scoring: %s; answering with the rule-based scorer", reason)
                fallback.update(dict.fromkeys(indices, reason))
                failed.update(dict.fromkeys(indices, loaded.version))
                continue
            ref = ModelRef(loaded.name, loaded.version, route)
            for i, result in zip(indices, results, strict=True):
                answers[i] = Answer(items[i].entity_id, result, ref, features=items[i].lead)
            if route == CHAMPION_ROUTE and self.shadow_canary and slots is not None:
                self._shadow_leads(slots, items, indices, answers)
        if fallback:
            rules, ref = self._rules()
            indices = sorted(fallback)
            leads = [items[i].lead for i in indices]
            try:
                results = self._predict_leads(rules, leads)
            except Exception:  # a broken registered rule model: the built-in one cannot fail on valid input
                log.exception("the registered rule scorer failed; using the built-in one")
                ref = ModelRef(registry.LEAD_RULES_MODEL, BUILTIN_VERSION, FALLBACK_ROUTE)
                results = self._predict_leads(self._builtin_rules, leads)
            for i, result in zip(indices, results, strict=True):
                answers[i] = Answer(
                    items[i].entity_id, result, ref, fallback[i], items[i].lead, failed.get(i)
                )
        return [answers[i] for i in range(len(items))]

    def _shadow_leads(
        self, slots: ModelSlots, items: list[ScoreItem], indices: list[int], answers: dict[int, Answer]
    ) -> None:
        """During a canary, the challenger also scores the champion's leads (logged, not served), so
        that both versions are judged on the same entities. Its failures never touch the answers."""
        challenger = slots.challenger
        if challenger is None or slots.weight <= 0.0:
            return
        try:
            results = self._predict_leads(challenger.model, [items[i].lead for i in indices])
        except Exception as exc:
            log.warning("shadow scoring by %s v%s failed: %s", challenger.name, challenger.version, exc)
            return
        ref = ModelRef(challenger.name, challenger.version, SHADOW_ROUTE)
        for i, result in zip(indices, results, strict=True):
            answers[i].shadow = Answer(items[i].entity_id, result, ref, features=items[i].lead)

    # -- forecasts -------------------------------------------------------------------------------
    def forecast(self, tenant: Tenant, months: int) -> Answer:
        """The organization's forecast (blocking: loads the model or history on first use)."""
        org = tenant.organization_id
        entity = str(org)
        reason: str | None = None
        if not tenant.ai_enabled:
            reason = "AI features are switched off for this organization"
        else:
            name = registry.forecast_model_name(org)
            # never held by MLflow: the load runs in the background, waited for only a bounded time
            lazy = self.live.ensure(name, self.forecast_load_wait_seconds)
            slots = lazy.slots
            if slots is None or slots.champion is None:
                why = lazy.why_not or (self.live.load_errors.get(f"{name}@{registry.CHAMPION}") or "")
                reason = f"no forecast model is loaded for organization {org}" + (f": {why}" if why else "")
            else:
                route = choose_route(org, entity, slots.weight, has_challenger=slots.challenger is not None)
                loaded = slots.for_route(route) or slots.champion
                try:
                    output = self._cached_forecast(org, loaded, months)
                    return Answer(entity, output, ModelRef(name, loaded.version, route))
                except Exception as exc:
                    reason = f"{name} v{loaded.version} failed: {type(exc).__name__}: {exc}"
                    log.error("forecast: %s; answering with a seasonal naive forecast", reason)
        output, history_ref = self._naive_forecast(org, months)
        return Answer(entity, output, ModelRef("seasonal_naive", history_ref, FALLBACK_ROUTE), reason)

    def _cached_forecast(self, org: int, loaded: LoadedModel, months: int) -> dict[str, Any]:
        key = cache_key(org, f"v{loaded.version}", months)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        output = forecast_output(loaded.model.predict(months))
        self.cache.put(key, output)
        return output

    def _naive_forecast(self, org: int, months: int) -> tuple[dict[str, Any], str]:
        from neuracrm_mlops.models.forecasting_model import seasonal_naive_forecast
        from neuracrm_mlops.store.snapshots import load_sales_history

        if not self.database.should_try():  # down, and another request is probing it: answer now
            raise self._history_unavailable(org, self.database.last_error or "not answering")
        try:
            with self.engine.connect() as conn:
                history, _, data_hash = load_sales_history(conn, org)
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            self.database.failed(exc)
            raise self._history_unavailable(org, one_line_error(exc)) from None
        if history.empty:
            raise NoHistoryError(
                f"organization {org} has no monthly sales yet, so no forecast can be made: "
                "import its sales history first"
            )
        key = cache_key(org, f"naive-{data_hash[:12]}", months)
        cached = self.cache.get(key)
        if cached is None:
            cached = forecast_output(seasonal_naive_forecast(history, months))
            self.cache.put(key, cached)
        return cached, f"history-{data_hash[:12]}"

    def _history_unavailable(self, org: int, reason: str) -> DependencyUnavailableError:
        return DependencyUnavailableError(
            f"no forecast model is loaded for organization {org} and its sales history cannot be read "
            f"(the database is unavailable: {reason}); retry in {self.retry_after_seconds} s",
            self.retry_after_seconds,
        )

    # -- sentiment -------------------------------------------------------------------------------
    def sentiment(self, tenant: Tenant, texts: list[str], entity_ids: list[str]) -> list[Answer]:
        slots = self.live.slots(registry.SENTIMENT_MODEL)
        org = tenant.organization_id
        answers: dict[int, Answer] = {}
        fallback: dict[int, str] = {}
        failed: dict[int, str] = {}
        groups: dict[int, tuple[LoadedModel, str, list[int]]] = {}
        for i, entity in enumerate(entity_ids):
            if not tenant.ai_enabled:
                fallback[i] = "AI features are switched off for this organization"
            elif slots is None or slots.champion is None:
                fallback[i] = "no sentiment model is loaded"
            else:
                route = choose_route(org, entity, slots.weight, has_challenger=slots.challenger is not None)
                loaded = slots.for_route(route) or slots.champion
                groups.setdefault(id(loaded), (loaded, route, []))[2].append(i)
        for loaded, route, indices in groups.values():
            try:
                results = loaded.model.predict([texts[i] for i in indices])
                if len(results) != len(indices) or not _finite([r["score"] for r in results]):
                    raise ValueError("the model returned a non-finite or missing score")
            except Exception as exc:
                reason = f"{loaded.name} v{loaded.version} failed: {type(exc).__name__}: {exc}"
                log.error("sentiment: %s; answering with VADER", reason)
                fallback.update(dict.fromkeys(indices, reason))
                failed.update(dict.fromkeys(indices, loaded.version))
                continue
            ref = ModelRef(loaded.name, loaded.version, route)
            for i, result in zip(indices, results, strict=True):
                answers[i] = Answer(
                    entity_ids[i], _sentiment_output(result), ref, features=_text_features(texts[i])
                )
        if fallback:
            indices = sorted(fallback)
            results = self._builtin_vader.predict([texts[i] for i in indices])
            ref = ModelRef("sentiment_vader", BUILTIN_VERSION, FALLBACK_ROUTE)
            for i, result in zip(indices, results, strict=True):
                answers[i] = Answer(
                    entity_ids[i],
                    _sentiment_output(result),
                    ref,
                    fallback[i],
                    features=_text_features(texts[i]),
                    failed_version=failed.get(i),
                )
        return [answers[i] for i in range(len(texts))]

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the log writer (it replays, in the background, what dead processes left: their journals
        and spill files) and the model poll."""
        self.log_writer.start()
        self.live.start()

    def stop(self) -> None:
        """Graceful stop: no more polling, and every queued prediction row written (or spilled)."""
        self.live.stop()
        self.log_writer.close()

    def dependencies(self) -> dict[str, dict[str, Any]]:
        """Each dependency's last success and last error (epoch seconds and age), and whether it is ok."""
        now = time.time()
        writer = self.log_writer
        last_written_at, last_write_error_at, log_error = (
            writer.last_success_at,
            writer.last_error_at,
            writer.last_error,
        )

        def age(at: Any) -> float | None:
            return round(max(now - float(at), 0.0), 1) if isinstance(at, int | float) else None

        registry_state = self.live.registry.describe(now)
        staleness = self.live.poll_staleness(now)
        if staleness is not None:
            registry_state["ok"] = False
            registry_state["stale"] = staleness[0]
        redis_state: dict[str, Any] = (
            self.cache.redis_state.describe(now) if self.cache.backend == "redis" else {"configured": False}
        )
        return {
            "model_registry": registry_state,
            "database": self.database.describe(now),
            "redis": redis_state,
            "prediction_log_writer": {
                "ok": log_error is None,
                "last_success_at": last_written_at,
                "last_success_age_seconds": age(last_written_at),
                "last_error": log_error,
                "last_error_at": last_write_error_at,
                "last_error_age_seconds": age(last_write_error_at),
                "pending": writer.pending,
                "written": writer.written,
            },
        }

    def readiness(self) -> dict[str, Any]:
        """What ``/readyz`` shows: ready or not (models loaded), and each dependency's state."""
        return {"ready": self.live.ready, "dependencies": self.dependencies()}

    def health(self) -> dict[str, Any]:
        return {
            **self.live.health(),
            "dependencies": self.dependencies(),
            "prediction_log": {
                "pending": self.log_writer.pending,
                "written": self.log_writer.written,
                "last_error": self.log_writer.last_error,
                "journal": self.log_writer.journal_health(),
            },
            "forecast_cache": {
                "backend": self.cache.backend,
                "hits": self.cache.hits,
                "misses": self.cache.misses,
                "redis_errors": self.cache.redis_errors,
            },
        }

    # -- the prediction log ----------------------------------------------------------------------
    def record(
        self,
        family_model: str,
        tenant: Tenant,
        answers: list[Answer],
        request_id: str,
        latency_ms: float,
        *,
        replica: str | None = None,
    ) -> None:
        """Queue one prediction row per answer, and one per shadow answer (route ``shadow``), written in
        batches off the request path; ``replica``: the name of the replica that answered."""
        logged = [a for answer in answers for a in (answer, answer.shadow) if a is not None]
        self.log_writer.append(
            [
                prediction_row(
                    # rows are kept per family model; a fallback row names the version that failed
                    # (so that its error rate counts it) or else what answered, as name:version
                    model_name=family_model,
                    model_version=a.model.version
                    if not a.fallback
                    else a.failed_version or f"{a.model.name}:{a.model.version}"[:32],
                    route=a.model.route,
                    request_id=request_id,
                    organization_id=tenant.organization_id,
                    entity_id=a.entity_id,
                    features=a.features,
                    output=a.output,
                    latency_ms=latency_ms,
                    fallback=a.fallback,
                    error=a.fallback_reason,
                    replica=replica,
                )
                for a in logged
            ]
        )


def replica_name(configured: str | None, port: int | None) -> str:
    """This prediction service replica's name: ``NEURACRM_REPLICA_NAME`` when set, else
    ``<hostname>:<port>`` with the port the replica listens on (the hostname alone when the port is not
    known), cut to 128 visible ASCII characters (it goes into a header and ``predictions.replica``).

    Every worker process of one ``bentoml serve`` gets the same name; two replicas on one host differ by
    their port, replicas in containers by their hostname."""
    if configured:
        return configured
    host = "".join(ch if "!" <= ch <= "~" else "-" for ch in socket.gethostname()) or "localhost"
    suffix = f":{port}" if port else ""
    return host[: REPLICA_NAME_MAX_CHARS - len(suffix)] + suffix


class NoHistoryError(Exception):
    """No model and no sales history: nothing can be forecast (the caller gets a 404 that says so)."""


class DependencyUnavailableError(Exception):
    """A dependency the answer needs cannot answer now (e.g. the database, for a fallback forecast's
    history): the caller gets a 503 with ``Retry-After: retry_after`` at once, not a timeout."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def forecast_output(result: Any) -> dict[str, Any]:
    """A ForecastResult as the JSON the API returns (checked finite)."""
    for series in (result.point, result.lower_80, result.upper_80, result.lower_95, result.upper_95):
        if not _finite(series):
            raise ValueError("the forecast has non-finite values")
    points = [
        {
            "month": month.strftime("%Y-%m"),
            "forecast": round(float(p), 2),
            "lower_80": round(float(l80), 2),
            "upper_80": round(float(u80), 2),
            "lower_95": round(float(l95), 2),
            "upper_95": round(float(u95), 2),
        }
        for month, p, l80, u80, l95, u95 in zip(
            result.months,
            result.point,
            result.lower_80,
            result.upper_80,
            result.lower_95,
            result.upper_95,
            strict=True,
        )
    ]
    return {
        "points": points,
        "weights": {k: round(float(v), 4) for k, v in result.weights.items()},
        "best_model": result.best_model,
    }


def _sentiment_output(result: dict[str, Any]) -> dict[str, Any]:
    return {"label": result["label"], "score": float(result["score"])}


def _text_features(text: str) -> dict[str, Any]:
    return {"text": text[:MAX_LOGGED_TEXT], "chars": len(text)}


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


SMOKE_TEXT = "Thanks, the demo went well and we would like a quote."


def _prepare_lead_scorer(scorer: Any) -> Any:
    # the trained model and the rules get the lean request path; any other scorer saved with the lead
    # scoring wrapper (it must take dict records) serves as it is
    from neuracrm_mlops.models import lead_scoring_model

    servable = (
        lead_scoring_model.compile_scorer(scorer)
        if isinstance(scorer, lead_scoring_model.LeadScoringModel | lead_scoring_model.RuleScorer)
        else scorer
    )
    reference = getattr(scorer, "reference", {}) or {}
    Predictor._predict_leads(servable, [dict(reference), {}])
    return servable


def _prepare_sentiment_model(model: Any) -> Any:
    results = model.predict([SMOKE_TEXT])
    if not _finite([r["score"] for r in results]):
        raise ValueError("the sentiment model returned a non-finite score on a smoke test")
    return model


def _prepare_forecaster(forecaster: Any) -> Any:
    forecast_output(forecaster.predict(1))
    return forecaster


def _preparers() -> tuple[tuple[type[Any], Callable[[Any], Any]], ...]:
    """Each family's pyfunc wrapper and how what it wraps is made ready to serve."""
    from neuracrm_mlops.models.pyfunc_wrappers import ForecastPyfunc, LeadScoringPyfunc, SentimentPyfunc

    return (
        (LeadScoringPyfunc, _prepare_lead_scorer),
        (SentimentPyfunc, _prepare_sentiment_model),
        (ForecastPyfunc, _prepare_forecaster),
    )


def prepare_servable(python_model: Any) -> Any:
    """Turn a loaded version (its pyfunc wrapper, which says which family's object it holds) into
    what serves, and smoke-test it: a version that cannot answer a typical input (raises, or returns
    NaN) is refused here, so the last good one keeps serving."""
    for wrapper, prepare in _preparers():
        if isinstance(python_model, wrapper):
            return prepare(python_model.model)
    raise ValueError(f"no serving preparation for a {type(python_model).__name__} (not a family's pyfunc)")


def load_servable(name: str, version: str) -> Any:
    """The LiveModels loader: fetch ``name`` version ``version`` from MLflow and prepare it."""
    return prepare_servable(registry.load_python_model(name, version))


RUNBOOK_LOAD_FAILED = (
    "The prediction service could not load this version. A champion that fails keeps the last good "
    "version serving (or the fallback answers, flagged); a challenger gets no traffic. Read the error, "
    "then roll back (`neuracrm-mlops rollback MODEL --to VERSION`) or abort the rollout "
    "(`neuracrm-mlops rollout MODEL abort`), and retrain."
)


def alert_load_failure(engine: sa.Engine, name: str, alias: str, version: str, reason: str) -> None:
    """The service could not load ``name@alias`` v``version``: critical for the champion, else warning."""
    from neuracrm_mlops.store.alerts import raise_alert

    champion = alias == registry.CHAMPION
    raise_alert(
        engine,
        kind="model_load_failed",
        severity="critical" if champion else "warning",
        title=f"{name} v{version} ({alias}) cannot be loaded by the prediction service",
        message=reason,
        dedup_key=f"model_load_failed:{name}:{alias}:{version}",
        model_name=name,
        model_version=version,
        metrics={"alias": alias},
        action_taken=(
            "the last good champion (or the fallback) keeps answering"
            if champion
            else "the challenger gets no traffic; the champion answers"
        ),
        runbook=RUNBOOK_LOAD_FAILED,
        links=registry.version_links(name, version),
    )


RUNBOOK_REGISTRY_STALE = (
    "The prediction service cannot read the model registry (MLflow). Loaded models keep serving; an "
    "organization whose forecast model is not loaded gets the seasonal-naive forecast, flagged "
    "(fallback: true, with the reason); new versions and alias moves are not picked up. Check the MLflow "
    "server at MLFLOW_TRACKING_URI (is it up, can it reach its database?) and the service's /status/ "
    "(dependencies.model_registry). The service picks changes up by itself once MLflow answers."
)


def alert_registry_stale(engine: sa.Engine, message: str, seconds: float) -> None:
    """The registry poll is stale (failing or hanging for more than two poll intervals): one
    ``serving_health`` warning per outage (the watchdog calls this once; replicas count as repeats)."""
    from neuracrm_mlops.config import get_settings
    from neuracrm_mlops.store.alerts import raise_alert

    raise_alert(
        engine,
        kind="serving_health",
        severity="warning",
        title="prediction service: the model registry poll is stale",
        message=message,
        dedup_key="serving_health:model_registry_poll",
        metrics={
            "seconds_since_last_poll": round(seconds, 1),
            "poll_seconds": get_settings().model_poll_seconds,
        },
        action_taken=(
            "none needed to keep answering: loaded models keep serving and unloaded forecasts answer "
            "the flagged seasonal-naive fallback"
        ),
        runbook=RUNBOOK_REGISTRY_STALE,
    )


SERVED_FAMILY_MODELS = (registry.LEAD_MODEL, registry.LEAD_RULES_MODEL, registry.SENTIMENT_MODEL)


# the registry poll counts as stale after two poll intervals, but never sooner than this
STALE_POLL_FLOOR_SECONDS = 10.0


def build_predictor(engine: sa.Engine | None = None) -> Predictor:
    """A Predictor on the configured stores, every dependency bounded by the timeout settings;
    ``start()`` begins polling and logging."""
    from neuracrm_mlops.config import get_settings
    from neuracrm_mlops.inference.live_models import limit_mlflow_http
    from neuracrm_mlops.models import lead_scoring_model, sentiment_model
    from neuracrm_mlops.store.db.engine import get_serving_engine, track_database_health

    # imported now, not by the first fallback forecast (a cold import took seconds on a busy machine)
    for module in ("neuracrm_mlops.store.snapshots", "neuracrm_mlops.models.forecasting_model"):
        importlib.import_module(module)

    settings = get_settings()
    limit_mlflow_http(settings.mlflow_timeout_seconds, settings.mlflow_max_retries)
    engine = engine or get_serving_engine()
    database = track_database_health(engine, DependencyState("database"))
    live = LiveModels(
        load_servable,
        eager_names=SERVED_FAMILY_MODELS,
        poll_seconds=settings.model_poll_seconds,
        on_load_error=lambda name, alias, version, reason: alert_load_failure(
            engine, name, alias, version, reason
        ),
        on_stale=lambda message, seconds: alert_registry_stale(engine, message, seconds),
        stale_floor_seconds=STALE_POLL_FLOOR_SECONDS,
    )
    writer = PredictionLogWriter(
        engine,
        spill_dir=settings.home / "prediction-spill",
        flush_seconds=settings.prediction_log_flush_seconds,
    )
    return Predictor(
        engine=engine,
        live=live,
        log_writer=writer,
        cache=ForecastCache(
            settings.redis_url,
            ttl_seconds=settings.forecast_cache_ttl_seconds,
            timeout_seconds=settings.redis_timeout_seconds,
        ),
        rule_scorer=lead_scoring_model.compile_scorer(lead_scoring_model.RuleScorer()),
        vader=sentiment_model.VaderScorer(),
        shadow_canary=settings.shadow_canary,
        forecast_load_wait_seconds=settings.forecast_load_wait_seconds,
        retry_after_seconds=settings.retry_after_seconds,
        database=database,
    )
