"""The prediction API: ``POST /score``, ``/forecast``, ``/sentiment`` on BentoML 1.4.

Thin on purpose: requests are parsed by pydantic models (``schemas``), the caller's organization
comes from its API key (``TenantAuthMiddleware``), and all model work (loading by alias, sticky
canary routing, fallbacks, the prediction log, the forecast cache) happens in
``neuracrm_mlops.predictor``.

Run it: ``bentoml serve neuracrm_mlops.serving.service:PredictionService --port 3000``.
Besides the APIs: ``/healthz`` (alive), ``/readyz`` (models loaded), ``/metrics`` (Prometheus),
``/status`` (loaded versions, canary weights, poll and log state, as JSON) and ``/docs`` (OpenAPI).
"""

from __future__ import annotations

import os

# one OpenMP thread per worker: gradient-boosting predictions spin badly on busy small machines
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import asyncio
import gc
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import anyio
import bentoml
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neuracrm_mlops import registry
from neuracrm_mlops.predictor import (
    Answer,
    MicroBatcher,
    NoHistoryError,
    Predictor,
    ScoreItem,
    build_predictor,
    content_entity_id,
    elapsed_ms,
)
from neuracrm_mlops.serving.schemas import (
    ForecastRequest,
    ForecastResponse,
    ScoreRequest,
    ScoreResponse,
    SentimentRequest,
    SentimentResponse,
)
from neuracrm_mlops.tenancy import AuthError, Tenant, TenantDirectory, require_same_organization

log = logging.getLogger("neuracrm_mlops.serving")

PROTECTED_PATHS = frozenset({"/score", "/forecast", "/sentiment"})
REQUEST_ID_HEADER = "x-request-id"


class _Runtime:
    """What the middleware and the status page need from this worker's service instance."""

    tenants: TenantDirectory | None = None
    predictor: Predictor | None = None


RUNTIME = _Runtime()


def error_response(status: int, message: str, request_id: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if request_id:
        headers["X-Request-ID"] = request_id
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class TenantAuthMiddleware:
    """Resolve ``Authorization: Bearer <key>`` to the organization before the body is read.

    401 for a missing, malformed or unknown key; the tenant and a request id are put in the request
    state for the API methods; the request id is echoed in ``X-Request-ID``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PROTECTED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = (headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex)[:64]
        tenants = RUNTIME.tenants
        if tenants is None:
            await error_response(503, "the service is starting", request_id)(scope, receive, send)
            return
        try:
            tenant = await _authenticate(tenants, headers.get("authorization"))
        except AuthError as exc:
            await error_response(exc.status, exc.message, request_id)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["tenant"] = tenant
        state["request_id"] = request_id

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_request_id)


async def _authenticate(tenants: TenantDirectory, authorization: str | None) -> Tenant:
    from neuracrm_mlops.tenancy import bearer_token

    token = bearer_token(authorization)
    hit, tenant = tenants.cached(token)
    if not hit:
        tenant = await anyio.to_thread.run_sync(tenants.lookup, token)
    if tenant is None:
        raise AuthError(401, "unknown or revoked API key")
    return tenant


async def status_page(_: Request) -> JSONResponse:
    predictor = RUNTIME.predictor
    if predictor is None:
        return JSONResponse({"ready": False, "detail": "starting"}, status_code=503)
    return JSONResponse(predictor.health())


status_app = Starlette(routes=[Route("/", status_page)])


class ServingMetrics:
    """Prometheus series per model, version and route (created in the worker, after BentoML set up
    the multiprocess directory)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        labels = ["family", "model", "version", "route"]
        self.predictions = Counter("neuracrm_predictions_total", "Predictions served", labels)
        self.fallbacks = Counter("neuracrm_fallbacks_total", "Predictions answered by a fallback", labels)
        self.errors = Counter(
            "neuracrm_request_errors_total", "Requests that failed inside the service", ["endpoint"]
        )
        self.model_errors = Counter(
            "neuracrm_model_errors_total",
            "Predictions a served version failed (raised or answered NaN); the fallback answered",
            ["family", "version"],
        )
        self.latency = Histogram(
            "neuracrm_request_latency_seconds",
            "Time inside the service per request",
            ["endpoint", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )

    def observe(self, family: str, endpoint: str, answers: list[Answer], seconds: float) -> None:
        routes = set()
        for answer in answers:
            labels = (family, answer.model.name, answer.model.version or "", answer.model.route)
            self.predictions.labels(*labels).inc()
            if answer.fallback:
                self.fallbacks.labels(*labels).inc()
            if answer.failed_version:
                self.model_errors.labels(family, answer.failed_version).inc()
            routes.add(answer.model.route)
        self.latency.labels(endpoint, routes.pop() if len(routes) == 1 else "mixed").observe(seconds)


def refuse(ctx: bentoml.Context, status: int, message: str, request_id: str) -> JSONResponse:
    """An error answer from inside an API method. BentoML copies ``ctx.response.status_code`` onto
    whatever a method returns (and masks the message of its own 401/403 exceptions), so both are set."""
    ctx.response.status_code = status
    return error_response(status, message, request_id)


def _caller(ctx: bentoml.Context, requested_organization: int | None) -> tuple[Tenant, str] | JSONResponse:
    """The tenant (from the middleware) and request id, or a 403 when the body names another
    organization than the key's."""
    tenant, request_id = _tenant_and_request_id(ctx)
    try:
        require_same_organization(tenant, requested_organization)
    except AuthError as exc:
        return refuse(ctx, exc.status, exc.message, request_id)
    return tenant, request_id


def _tenant_and_request_id(ctx: bentoml.Context) -> tuple[Tenant, str]:
    state = ctx.request.state
    return cast(Tenant, state.tenant), cast(str, state.request_id)


@bentoml.asgi_app(status_app, path="/status")
@bentoml.service(
    name="neuracrm_predictions",
    # BentoML reads service configuration when this module is imported, so the worker count is the
    # one setting read here: NEURACRM_SERVING_WORKERS (default 1; one process per core)
    workers=int(os.environ.get("NEURACRM_SERVING_WORKERS", "1")),
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},
)
class PredictionService:
    def __init__(self) -> None:
        for noisy in ("mlflow", "alembic", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from neuracrm_mlops.db.engine import get_engine

        self.predictor = build_predictor()
        self.predictor.start()
        self.tenants = TenantDirectory(get_engine())
        self.compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuracrm-predict")
        self.lead_batcher: MicroBatcher[ScoreItem, Answer] = MicroBatcher(
            self.predictor.score_batch, self.compute, max_items=256
        )
        self.metrics = ServingMetrics()
        RUNTIME.tenants, RUNTIME.predictor = self.tenants, self.predictor
        # Everything imported and loaded so far lives as long as the worker: move it out of the
        # garbage collector's view, so full collections stop walking MLflow's and scikit-learn's
        # objects (they showed up as 100+ ms pauses in the p99 latency)
        self.predictor.live.first_poll_done.wait(60)
        gc.collect()
        gc.freeze()
        # requests allocate many short-lived containers that reference counting frees anyway:
        # collect the young generation less often (Python's default is every 700 allocations)
        gc.set_threshold(50_000, 20, 20)

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        """Graceful stop: stop polling and write every queued prediction row."""
        self.predictor.stop()
        self.compute.shutdown(wait=True)

    def __is_ready__(self) -> bool:
        return self.predictor.live.ready

    def _log_and_count(
        self,
        model_name: str,
        family: str,
        endpoint: str,
        tenant: Tenant,
        answers: list[Answer],
        request_id: str,
        started: float,
    ) -> None:
        """Queue the prediction rows and update the metrics (latency measured up to here)."""
        took = elapsed_ms(started)
        self.predictor.record(model_name, tenant, answers, request_id, took)
        self.metrics.observe(family, endpoint, answers, took / 1000)

    @bentoml.api(route="/score")
    async def score(self, request: ScoreRequest, /, ctx: bentoml.Context) -> ScoreResponse:
        """Score one lead or up to 1,000: probability, 0-100 score, tier, top-3 factors, and the model."""
        started = time.perf_counter()
        caller = _caller(ctx, request.organization_id)
        if isinstance(caller, JSONResponse):
            return cast(ScoreResponse, caller)
        tenant, request_id = caller
        items = []
        leads = request.all_leads()
        for lead in leads:
            record = lead.model_dump(exclude={"lead_id"}, exclude_none=True)
            entity = lead.lead_id or content_entity_id(record)
            items.append(ScoreItem(tenant, entity, record))
        answers = await self.lead_batcher.submit(items)
        self._log_and_count("lead_scoring", "lead_scoring", "score", tenant, answers, request_id, started)
        return ScoreResponse.model_validate(
            {
                "request_id": request_id,
                "organization_id": tenant.organization_id,
                "results": [
                    {"lead_id": lead.lead_id, **a.public()} for lead, a in zip(leads, answers, strict=True)
                ],
            }
        )

    @bentoml.api(route="/forecast")
    async def forecast(self, request: ForecastRequest, /, ctx: bentoml.Context) -> ForecastResponse:
        """The organization's monthly revenue forecast with 80% and 95% bounds (org from the API key)."""
        started = time.perf_counter()
        caller = _caller(ctx, request.organization_id)
        if isinstance(caller, JSONResponse):
            return cast(ForecastResponse, caller)
        tenant, request_id = caller
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                None, self.predictor.forecast, tenant, request.months
            )
        except NoHistoryError as exc:
            return cast(ForecastResponse, refuse(ctx, 404, str(exc), request_id))
        model_name = registry.forecast_model_name(tenant.organization_id)
        self._log_and_count(model_name, "sales_forecast", "forecast", tenant, [answer], request_id, started)
        return ForecastResponse.model_validate(
            {
                "request_id": request_id,
                "organization_id": tenant.organization_id,
                "months": request.months,
                **answer.public(),
            }
        )

    @bentoml.api(route="/sentiment")
    async def sentiment(self, request: SentimentRequest, /, ctx: bentoml.Context) -> SentimentResponse:
        """Label (negative / neutral / positive) and score for one text or up to 1,000."""
        started = time.perf_counter()
        caller = _caller(ctx, request.organization_id)
        if isinstance(caller, JSONResponse):
            return cast(SentimentResponse, caller)
        tenant, request_id = caller
        items = request.all_items()
        texts = [item.text for item in items]
        entities = [item.interaction_id or content_entity_id(item.text) for item in items]
        answers = await asyncio.get_running_loop().run_in_executor(
            self.compute, self.predictor.sentiment, tenant, texts, entities
        )
        self._log_and_count("sentiment", "sentiment", "sentiment", tenant, answers, request_id, started)
        return SentimentResponse.model_validate(
            {
                "request_id": request_id,
                "organization_id": tenant.organization_id,
                "results": [
                    {"interaction_id": item.interaction_id, **a.public()}
                    for item, a in zip(items, answers, strict=True)
                ],
            }
        )


cast(bentoml.Service[PredictionService], PredictionService).add_asgi_middleware(TenantAuthMiddleware)

__all__ = ["PredictionService", "ServingMetrics", "TenantAuthMiddleware"]
