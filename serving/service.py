"""The prediction API: ``POST /score``, ``/forecast``, ``/sentiment`` on BentoML 1.4.

Thin on purpose: requests are parsed by pydantic models (``schemas``), the caller's organization
comes from its API key (``RequestGate``), and all model work (loading by alias, sticky
canary routing, fallbacks, the prediction log, the forecast cache) happens in
``neuracrm_mlops.inference.predictor``.

Run it: ``bentoml serve neuracrm_mlops.serving.service:PredictionService --port 3000``.
Besides the APIs: ``/healthz`` (alive), ``/readyz`` (models loaded), ``/metrics`` (Prometheus),
``/status/`` (this replica's name, loaded versions, canary weights, poll and log state, as JSON),
``/docs.json`` (the OpenAPI 3.1 document, ``openapi.py``) and ``/`` (BentoML's Swagger UI for it). The
abuse limits (body size, content type, rate limits) are enforced by ``RequestGate``
(``request_limits``). Every answer names the replica that gave it (``X-NeuraCRM-Replica``), so that
replicas behind one address can be told apart.
"""

from __future__ import annotations

import os

# one OpenMP thread per worker: gradient-boosting predictions spin badly on busy small machines
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import asyncio
import gc
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import anyio
import bentoml
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neuracrm_mlops.config import get_settings, serving_workers_from_environment
from neuracrm_mlops.inference.prediction_log import prediction_row
from neuracrm_mlops.inference.predictor import (
    Answer,
    DependencyUnavailableError,
    MicroBatcher,
    NoHistoryError,
    Predictor,
    ScoreItem,
    build_predictor,
    content_entity_id,
    elapsed_ms,
    replica_name,
)
from neuracrm_mlops.inference.request_limits import (
    API_KEY_SHAPE_TEXT,
    RequestLimits,
    json_content_type_problem,
    looks_like_api_key,
    read_body,
    replay_body,
    retry_after_seconds,
    too_large_message,
)
from neuracrm_mlops.inference.voice import (
    ContextQuery,
    EventAnswer,
    LiveScenarios,
    VoiceContexts,
    record_call_event,
)
from neuracrm_mlops.serving.openapi import DOCUMENT_PATH, REPLICA_HEADER
from neuracrm_mlops.serving.schemas import (
    ForecastRequest,
    ForecastResponse,
    ScoreRequest,
    ScoreResponse,
    SentimentRequest,
    SentimentResponse,
    VoiceContextRequest,
    VoiceContextResponse,
)
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.tenancy import (
    AuthError,
    Tenant,
    TenantDirectory,
    bearer_token,
    require_same_organization,
)

log = logging.getLogger("neuracrm_mlops.serving")

PROTECTED_PATHS = frozenset({"/score", "/forecast", "/sentiment", "/voice/context"})
# Retell's call webhooks: authenticated by their signature (x-retell-signature), not by an API key
VOICE_EVENTS_PATH = "/voice/events"
RETELL_SIGNATURE_HEADER = "x-retell-signature"
REQUEST_ID_HEADER = "x-request-id"


class _Runtime:
    """What the middleware and the status page need from this worker's service instance."""

    tenants: TenantDirectory | None = None
    predictor: Predictor | None = None
    scenarios: LiveScenarios | None = None
    metrics: ServingMetrics | None = None
    # this replica's name (replica_of): in /status/, X-NeuraCRM-Replica and every prediction row
    replica: str | None = None


RUNTIME = _Runtime()


def replica_of(scope: Scope) -> str:
    """This replica's name (``predictor.replica_name``), settled on the first request: without
    ``NEURACRM_REPLICA_NAME``, ``<hostname>:<port>`` with the port the request came in on (BentoML hands
    its workers a listening socket, not the port)."""
    name = RUNTIME.replica
    if name is None:
        server = scope.get("server")
        port = server[1] if isinstance(server, tuple | list) and len(server) > 1 else None
        name = RUNTIME.replica = replica_name(get_settings().replica_name, port)
    return name


_REPLICA_HEADER_NAME = REPLICA_HEADER.lower().encode("ascii")


def _replica_sender(send: Send, replica: bytes) -> Send:
    """``send`` that names this replica in every answer (``X-NeuraCRM-Replica``)."""

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (_REPLICA_HEADER_NAME, replica)]
        await send(message)

    return sender


def error_response(
    status: int,
    message: str,
    request_id: str | None = None,
    *,
    retry_after: int | None = None,
    close: bool = False,
) -> JSONResponse:
    """The API's error answer, ``{"error": message}`` (``ErrorResponse`` in the OpenAPI document), with
    ``Retry-After`` when given and ``Connection: close`` when the rest of the request is not read."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if request_id:
        headers["X-Request-ID"] = request_id
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def validation_error_body(raw: bytes) -> bytes | None:
    """BentoML's 400 for a body pydantic refused, in the documented shape, or None to leave it as is.

    BentoML answers ``{"error": "2 validation error for ScoreRequestIODescriptor", "detail": [...]}``
    (an internal class name, and pydantic's documentation URL in every problem). This keeps each
    problem's ``loc``, ``msg`` and ``type`` and makes ``error`` say what the first problem is."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("detail"), list):
        return None
    problems = [
        {
            "loc": list(item.get("loc") or []),
            "msg": str(item.get("msg", "")),
            "type": str(item.get("type", "")),
        }
        for item in data["detail"]
        if isinstance(item, dict)
    ]
    if not problems:
        return None
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"])
    summary = f"the request body is invalid{f' at {where}' if where else ''}: {first['msg']}"
    if len(problems) > 1:
        summary += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''}, see detail)"
    return json.dumps({"error": summary, "detail": problems}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class HeldRefusal:
    """A 429 to send after ``request_limits.AbuseHold`` has held it (at most ``retry_after`` seconds)."""

    response: JSONResponse
    retry_after: int


class RequestGate:
    """Everything decided before a request reaches BentoML, cheapest first, so that hostile traffic costs
    the service little (``request_limits``): the client address's rate (429), the declared body size
    (413), the content type (415), the key's shape (401), the address's budget of unknown keys (429,
    before any lookup), the key itself (401, or 503 while the database cannot check it), the key's rate
    (429). An admitted request carries its tenant and request id in the request state; the body is read
    further in, by ``RequestBodyMiddleware``. ``/docs.json`` answers this service's OpenAPI document
    (``openapi.py``) instead of BentoML's.

    It wraps BentoML's whole application (``_GatedService``), outside BentoML's metrics, tracing and
    timeout middlewares: a refusal there cost about 1 ms of CPU on this machine (most of it tracing and
    metrics), here about 0.2 ms. Refusals are counted in ``neuracrm_requests_refused_total``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.limits = RequestLimits.from_settings(get_settings())
        self._document: JSONResponse | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _replica_sender(send, replica_of(scope).encode("ascii"))
        path = scope["path"]
        if path == DOCUMENT_PATH and scope["method"] in ("GET", "HEAD"):
            await self.document()(scope, receive, send)
            return
        if path == "/readyz" and RUNTIME.predictor is not None:
            # readiness as JSON with each dependency's last success and error (BentoML's is plain text)
            readiness = RUNTIME.predictor.readiness()
            answer = JSONResponse(readiness, status_code=200 if readiness["ready"] else 503)
            await answer(scope, receive, send)
            return
        if path == VOICE_EVENTS_PATH:
            await self.voice_events(scope, receive, send)
            return
        if path not in PROTECTED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = (headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex)[:64]
        try:
            admitted = await self._admit(scope, headers, request_id)
        except AuthError as exc:
            admitted = error_response(exc.status, exc.message, request_id, retry_after=exc_retry_after(exc))
        except Exception:
            # outside BentoML's error handling: answer in the API's error shape, not uvicorn's plain text
            log.exception("request %s: admitting it failed", request_id)
            admitted = error_response(
                500, f"an unexpected error while checking the request (request id {request_id})", request_id
            )
        if isinstance(admitted, HeldRefusal):  # an abusive client's 429 waits before it goes out
            await self.limits.abuse_hold.hold(admitted.retry_after)
            admitted = admitted.response
        if isinstance(admitted, JSONResponse):
            metrics = RUNTIME.metrics
            if metrics is not None:
                metrics.refused.labels(path.lstrip("/"), str(admitted.status_code)).inc()
            await admitted(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["tenant"] = admitted
        state["request_id"] = request_id
        await self.app(scope, receive, send)

    async def _admit(
        self, scope: Scope, headers: Headers, request_id: str
    ) -> Tenant | JSONResponse | HeldRefusal:
        """The caller's tenant, or the error answer (AuthError for 401/403/503 from the key check; a
        HeldRefusal for an abusive client's 429)."""
        limits = self.limits
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        wait = limits.per_address.take(address)
        if wait:
            return self._too_many(
                "too many requests from this client address "
                f"(at most {limits.per_address.rate:g} per second, bursts of {limits.per_address.burst:,})",
                wait,
                request_id,
                hold=True,
            )
        problem = limits.body_too_large(headers.get("content-length"))
        if problem:
            return error_response(413, problem, request_id, close=True)
        problem = json_content_type_problem(headers.get("content-type"))
        if problem:
            return error_response(415, problem, request_id)
        tenants = RUNTIME.tenants
        if tenants is None:
            return error_response(
                503, "the service is starting", request_id, retry_after=get_settings().retry_after_seconds
            )
        authorization = headers.get("authorization")
        token = bearer_token(authorization)
        if not looks_like_api_key(token):
            raise AuthError(401, f"unknown or revoked API key (a NeuraCRM key is {API_KEY_SHAPE_TEXT})")
        # a key not in the cache costs a database lookup: taken from the address's budget of unknown
        # keys first, and given back when the key turns out to exist (or the database did not answer)
        known, _ = tenants.cached(token)
        if not known:
            wait = limits.auth_failures.take(address)
            if wait:
                return self._too_many(
                    "too many unknown API keys from this client address: keys not seen recently are not "
                    "looked up for now",
                    wait,
                    request_id,
                    hold=True,
                )
        try:
            tenant = await _authenticate(tenants, authorization)
        except AuthError as exc:
            if not known and exc.status != 401:
                limits.auth_failures.give_back(address)
            raise
        if not known:
            limits.auth_failures.give_back(address)
        wait = limits.per_key.take(token)
        if wait:
            return self._too_many(
                f"too many requests with this API key (at most {limits.per_key.rate:g} per second, bursts "
                f"of {limits.per_key.burst:,}, per worker process)",
                wait,
                request_id,
            )
        return tenant

    @staticmethod
    def _too_many(
        reason: str, wait: float, request_id: str, *, hold: bool = False
    ) -> JSONResponse | HeldRefusal:
        """429 with ``Retry-After``; ``hold``: the client is abusive, its answer waits (``AbuseHold``)."""
        seconds = retry_after_seconds(wait)
        response = error_response(429, f"{reason}; retry in {seconds} s", request_id, retry_after=seconds)
        return HeldRefusal(response, seconds) if hold else response

    async def voice_events(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /voice/events``: Retell's call webhooks. The address's rate, the body size and the content
        type are checked as for the APIs; then the raw body is read (its signature is over the bytes as
        sent) and ``voice.record_call_event`` verifies and records it, off the event loop."""
        headers = Headers(scope=scope)
        request_id = (headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex)[:64]
        answer = await self._voice_event_answer(scope, receive, headers, request_id)
        metrics = RUNTIME.metrics
        if metrics is not None and answer.status_code != 200:
            metrics.refused.labels("voice/events", str(answer.status_code)).inc()
        await answer(scope, receive, send)

    async def _voice_event_answer(
        self, scope: Scope, receive: Receive, headers: Headers, request_id: str
    ) -> JSONResponse:
        if scope["method"] != "POST":
            answer = error_response(405, "POST Retell's call webhooks here", request_id)
            answer.headers["Allow"] = "POST"
            return answer
        client = scope.get("client")
        wait = self.limits.per_address.take(str(client[0]) if client else "unknown")
        if wait:
            seconds = retry_after_seconds(wait)
            return error_response(
                429,
                f"too many requests from this client address; retry in {seconds} s",
                request_id,
                retry_after=seconds,
            )
        problem = self.limits.body_too_large(headers.get("content-length"))
        if problem:
            return error_response(413, problem, request_id, close=True)
        problem = json_content_type_problem(headers.get("content-type"))
        if problem:
            return error_response(415, problem, request_id)
        settings = get_settings()
        if not settings.retell_api_key:  # refused before the body is read: nothing can be verified
            return error_response(
                401,
                "call events cannot be verified: NEURACRM_RETELL_API_KEY is not set on the prediction "
                "service",
                request_id,
            )
        signature = headers.get(RETELL_SIGNATURE_HEADER)
        if not signature:
            return error_response(401, f"missing {RETELL_SIGNATURE_HEADER} header", request_id)
        body = await read_body(receive, self.limits.max_request_bytes)
        if body is None:
            return error_response(413, self.limits.too_large_message(), request_id, close=True)
        predictor = RUNTIME.predictor
        if predictor is None:
            return error_response(
                503, "the service is starting", request_id, retry_after=settings.retry_after_seconds
            )
        try:
            result: EventAnswer = await anyio.to_thread.run_sync(
                record_call_event, predictor.engine, body, signature, settings.retell_api_key
            )
        except Exception as exc:  # the database: Retell retries, and a replay is recorded once
            log.exception("request %s: recording a Retell call event failed", request_id)
            predictor.database.failed(exc)
            return error_response(
                503,
                "the call event could not be recorded now (the database is unavailable); retry later",
                request_id,
                retry_after=settings.retry_after_seconds,
            )
        if result.status != 200:
            return error_response(result.status, str(result.body.get("error")), request_id)
        return JSONResponse(result.body, headers={"X-Request-ID": request_id})

    def document(self) -> JSONResponse:
        """This service's OpenAPI document (built once per worker, from its settings)."""
        if self._document is None:
            from importlib.metadata import version

            from neuracrm_mlops.serving.openapi import openapi_document

            self._document = JSONResponse(openapi_document(get_settings(), version("neuracrm-mlops")))
        return self._document


class RequestBodyMiddleware:
    """For a request ``RequestGate`` admitted: reads the body, at most ``max_request_bytes`` of it (413
    past that, also for a chunked body without ``Content-Length``; the rest is not read), and hands it
    on; echoes the request id in ``X-Request-ID``; gives BentoML's 400 answers the documented error
    shape (``validation_error_body``). Inside BentoML's timeout middleware: a body that does not arrive
    within the request timeout gets BentoML's 504."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.max_request_bytes = get_settings().max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PROTECTED_PATHS:
            await self.app(scope, receive, send)
            return
        state = scope.get("state") or {}
        request_id = state.get("request_id")
        if "tenant" not in state or not isinstance(request_id, str):
            # only RequestGate admits a request: without it nothing here may run unauthenticated
            await error_response(500, "the request gate is not installed")(scope, receive, send)
            return
        body = await read_body(receive, self.max_request_bytes)
        if body is None:
            refusal = error_response(413, too_large_message(self.max_request_bytes), request_id, close=True)
            await refusal(scope, receive, send)
            return
        await self.app(scope, replay_body(body, receive), _answer_sender(send, request_id))


def exc_retry_after(exc: AuthError) -> int | None:
    """The ``Retry-After`` of a key check the database could not answer (None for 401/403)."""
    retry_after = getattr(exc, "retry_after", None)
    return int(retry_after) if retry_after is not None else None


def _answer_sender(send: Send, request_id: str) -> Send:
    """``send`` that adds ``X-Request-ID`` to the answer and rewrites BentoML's 400 body into the
    documented shape (``validation_error_body``)."""
    held: Message | None = None
    body = bytearray()

    async def sender(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message)["X-Request-ID"] = request_id
            if message["status"] == 400:
                held = message
                return
        elif message["type"] == "http.response.body" and held is not None:
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            rewritten = validation_error_body(bytes(body))
            start, held = held, None
            if rewritten is not None:
                response_headers = MutableHeaders(scope=start)
                response_headers["Content-Length"] = str(len(rewritten))
                response_headers["Content-Type"] = "application/json"
            await send(start)
            await send(
                {"type": "http.response.body", "body": rewritten if rewritten is not None else bytes(body)}
            )
            return
        await send(message)

    return sender


async def _authenticate(tenants: TenantDirectory, authorization: str | None) -> Tenant:
    """The caller's tenant: from the cache, else from the database within a bounded wait (503 with
    ``retry_after`` when the database cannot answer in time and no recent answer is cached)."""
    from neuracrm_mlops.config import get_settings
    from neuracrm_mlops.store.tenancy import bearer_token

    token = bearer_token(authorization)
    hit, tenant = tenants.cached(token)
    if not hit:
        wait = get_settings().dependency_wait_seconds
        with anyio.move_on_after(wait) as waited:
            # abandoned on timeout: the lookup thread ends at the database's own timeouts
            tenant = await anyio.to_thread.run_sync(tenants.lookup, token, abandon_on_cancel=True)
        if waited.cancelled_caught:
            # not answering in time counts as down: the next requests fail fast, a probe checks again
            tenants.database.failed(f"no answer to an API key lookup within {wait:g} s")
            found, tenant = tenants.stale(token)
            if not found:
                raise tenants.unavailable(f"no answer within {wait:g} s")
    if tenant is None:
        raise AuthError(401, "unknown or revoked API key")
    return tenant


async def status_page(request: Request) -> JSONResponse:
    """This replica's name, loaded versions, canary weights, poll state, and each dependency's last
    success and error (computed from memory: answers at once even when every dependency is down)."""
    predictor = RUNTIME.predictor
    replica = replica_of(request.scope)
    if predictor is None:
        return JSONResponse({"replica": replica, "ready": False, "detail": "starting"}, status_code=503)
    scenarios = RUNTIME.scenarios
    voice = {"voice_scenarios": scenarios.health()} if scenarios is not None else {}
    return JSONResponse({"replica": replica, **predictor.health(), **voice})


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
        self.refused = Counter(
            "neuracrm_requests_refused_total",
            "Requests refused before reaching BentoML (rate limits, body size, content type, API key)",
            ["endpoint", "status"],
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
    # one setting read now: NEURACRM_SERVING_WORKERS (default 1; one process per core), alone, so that
    # a bad value elsewhere fails in __init__ (get_settings) with that variable's error
    workers=serving_workers_from_environment(),
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},
)
class PredictionService:
    def __init__(self) -> None:
        for noisy in ("mlflow", "alembic", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # a registry outage is logged once per distinct error by the poll, not per urllib3 retry
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        from neuracrm_mlops.config import get_settings

        settings = get_settings()
        # build_predictor bounds MLflow, PostgreSQL and Redis by the timeout settings
        self.predictor = build_predictor()
        self.predictor.start()
        from neuracrm_mlops.inference.worker_watchdog import (
            start_worker_watchdog,  # orphaned: flush, then exit
        )

        start_worker_watchdog(on_orphaned=self.predictor.stop)
        self.tenants = TenantDirectory(
            self.predictor.engine,
            ttl_seconds=settings.tenant_cache_ttl_seconds,
            unknown_ttl_seconds=settings.tenant_unknown_ttl_seconds,
            max_entries=settings.tenant_cache_max_entries,
            stale_grace_seconds=settings.tenant_stale_grace_seconds,
            retry_after_seconds=settings.retry_after_seconds,
            database=self.predictor.database,
        )
        # a last bound under the client's 30 s; the model load wait and the database timeouts come first
        self.forecast_wait_seconds = min(
            25.0,
            settings.forecast_load_wait_seconds
            + settings.db_connect_timeout_seconds
            + settings.db_statement_timeout_seconds,
        )
        self.compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuracrm-predict")
        self.lead_batcher: MicroBatcher[ScoreItem, Answer] = MicroBatcher(
            self.predictor.score_batch, self.compute, max_items=256
        )
        self.metrics = ServingMetrics()
        # voice scenarios: polled from the prompt registry like the models (same interval)
        self.scenarios = LiveScenarios(registry.configure_mlflow, poll_seconds=settings.model_poll_seconds)
        self.scenarios.start()
        self.voice = VoiceContexts(self.predictor.engine, self.scenarios, database=self.predictor.database)
        RUNTIME.tenants, RUNTIME.predictor = self.tenants, self.predictor
        RUNTIME.scenarios = self.scenarios
        RUNTIME.metrics = self.metrics
        # Everything imported and loaded so far lives as long as the worker: move it out of the
        # garbage collector's view, so full collections stop walking MLflow's and scikit-learn's
        # objects (they showed up as 100+ ms pauses in the p99 latency)
        self.predictor.live.first_poll_done.wait(60)
        self.scenarios.first_poll_done.wait(60)
        gc.collect()
        gc.freeze()
        # requests allocate many short-lived containers that reference counting frees anyway:
        # collect the young generation less often (Python's default is every 700 allocations)
        gc.set_threshold(50_000, 20, 20)

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        """Graceful stop: stop polling and write every queued prediction row."""
        self.scenarios.stop()
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
        self.predictor.record(model_name, tenant, answers, request_id, took, replica=RUNTIME.replica)
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
            # bounded: a model load and the history read never hold the request past this
            answer = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(
                    None, self.predictor.forecast, tenant, request.months
                ),
                self.forecast_wait_seconds,
            )
        except NoHistoryError as exc:
            return cast(ForecastResponse, refuse(ctx, 404, str(exc), request_id))
        except (DependencyUnavailableError, TimeoutError) as exc:
            retry_after = self.predictor.retry_after_seconds
            message = (
                str(exc)
                if isinstance(exc, DependencyUnavailableError)
                else f"the forecast could not be made within {self.forecast_wait_seconds:g} s (a dependency "
                f"is not answering); retry in {retry_after} s"
            )
            unavailable = refuse(ctx, 503, message, request_id)
            unavailable.headers["Retry-After"] = str(retry_after)
            ctx.response.headers["Retry-After"] = str(retry_after)
            return cast(ForecastResponse, unavailable)
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

    async def _score_lead(self, tenant: Tenant, lead_id: str, record: dict[str, object]) -> Answer:
        """One lead through the /score path (the micro-batcher, the served model or its fallback)."""
        return (await self.lead_batcher.submit([ScoreItem(tenant, lead_id, dict(record))]))[0]

    @bentoml.api(route="/voice/context")
    async def voice_context(
        self, request: VoiceContextRequest, /, ctx: bentoml.Context
    ) -> VoiceContextResponse:
        """A voice call's context: scenario version (sticky A/B by contact) and dynamic variables, in the
        shape Retell's inbound-call webhook expects (``call_inbound``), logged as a prediction."""
        started = time.perf_counter()
        caller = _caller(ctx, request.organization_id)
        if isinstance(caller, JSONResponse):
            return cast(VoiceContextResponse, caller)
        tenant, request_id = caller
        inbound = request.call_inbound.model_dump(exclude_none=True) if request.call_inbound else {}
        query = ContextQuery(request.scenario, request.lead_id, request.caller_number, inbound)
        context = await self.voice.context(tenant, query, self._score_lead)
        took = elapsed_ms(started)
        self.predictor.log_writer.append(
            [
                prediction_row(
                    model_name=context.model_name,
                    model_version=context.version,
                    route=context.route,
                    request_id=request_id,
                    organization_id=tenant.organization_id,
                    entity_id=context.context_id,
                    features=context.features,
                    output=dict(context.variables),
                    latency_ms=took,
                    fallback=context.fallback,
                    error=context.fallback_reason,
                    replica=RUNTIME.replica,
                )
            ]
        )
        labels = ("voice_scenario", context.model_name, context.version or "", context.route)
        self.metrics.predictions.labels(*labels).inc()
        if context.fallback:
            self.metrics.fallbacks.labels(*labels).inc()
        self.metrics.latency.labels("voice_context", context.route).observe(took / 1000)
        payload = {"request_id": request_id, "organization_id": tenant.organization_id, **context.public()}
        VoiceContextResponse.model_validate(payload)  # the documented shape (a bug guard)
        # returned as it is: the agent override is left out (not sent as null) when the version has none
        return cast(VoiceContextResponse, JSONResponse(payload))


class _GatedService(bentoml.Service):  # type: ignore[misc]
    """BentoML's service, with ``RequestGate`` wrapped around its whole ASGI application.

    BentoML 1.4 puts a service's own ASGI middlewares (``add_asgi_middleware``) inside its metrics,
    tracing and timeout middlewares and offers no outermost hook; ``to_asgi`` is what its worker calls
    to build the application, so this class overrides it (``bentoml.Service`` is a slotted attrs class:
    no new slots, so the service object can take this class)."""

    __slots__ = ()

    def to_asgi(self, is_main: bool = True) -> ASGIApp:
        return RequestGate(super().to_asgi(is_main))


_service = cast(bentoml.Service[PredictionService], PredictionService)
_service.add_asgi_middleware(RequestBodyMiddleware)
_service.__class__ = _GatedService

__all__ = ["PredictionService", "RequestBodyMiddleware", "RequestGate", "ServingMetrics"]
