"""The prediction API's OpenAPI document (3.1), served at ``/docs.json`` and shown by the Swagger UI at ``/``.

BentoML 1.4 generates a document that declares OpenAPI 3.0.2 but uses JSON Schema 2020-12 forms
(``type: null``) that 3.0 does not have, describes the error ``detail`` as a string where it is a list,
and knows nothing of the statuses answered before a request reaches an API method (401, 403, 413, 415,
429, 503). This one replaces it: built from the same pydantic models that validate the requests, in
OpenAPI 3.1 (whose schema dialect is JSON Schema 2020-12, what pydantic emits), listing every status
the service answers with the error shape it really has (``ErrorResponse``). The limits in its text are
the running service's settings. ``tests/integration/test_service_contract.py`` checks the document
against the OpenAPI 3.1 schema and runs schemathesis against a real ``bentoml serve`` with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from neuracrm_mlops.config import Settings
from neuracrm_mlops.inference.request_limits import API_KEY_SHAPE_TEXT
from neuracrm_mlops.serving.schemas import (
    MAX_LEADS,
    MAX_MONTHS,
    MAX_TEXTS,
    ErrorResponse,
    ForecastRequest,
    ForecastResponse,
    ScoreRequest,
    ScoreResponse,
    SentimentRequest,
    SentimentResponse,
    VoiceContextRequest,
    VoiceContextResponse,
    VoiceEventResponse,
)

OPENAPI_VERSION = "3.1.0"
DOCUMENT_PATH = "/docs.json"
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_MAX_CHARS = 64
# every answer names the prediction service replica that gave it (NEURACRM_REPLICA_NAME)
REPLICA_HEADER = "X-NeuraCRM-Replica"
REPLICA_HEADER_DOC = {
    "description": "The prediction service replica that answered (`NEURACRM_REPLICA_NAME`, default "
    "`<hostname>:<port>`); every answer carries it.",
    "schema": {"type": "string"},
}

Document = dict[str, Any]

_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (ScoreRequest, "validation"),
    (ScoreResponse, "serialization"),
    (ForecastRequest, "validation"),
    (ForecastResponse, "serialization"),
    (SentimentRequest, "validation"),
    (SentimentResponse, "serialization"),
    (VoiceContextRequest, "validation"),
    (VoiceContextResponse, "serialization"),
    (VoiceEventResponse, "serialization"),
    (ErrorResponse, "serialization"),
]


def _error(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {**(headers or {}), REPLICA_HEADER: REPLICA_HEADER_DOC},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def _error_responses(settings: Settings, *, not_found: str | None) -> dict[str, Any]:
    retry_after = {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
    responses = {
        "400": _error(
            "The body is not JSON, or does not match the request schema: `error` sums it up and "
            "`detail` lists each problem (`loc`: where, `msg`: what, `type`: pydantic's error type)."
        ),
        "401": _error(
            f"The `Authorization: Bearer <API key>` header is missing or malformed, the key is not a "
            f"NeuraCRM key ({API_KEY_SHAPE_TEXT}), or it is unknown or revoked.",
            headers={"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
        ),
        "403": _error(
            "The body names an `organization_id` other than the API key's organization: a key acts for "
            "its own organization only."
        ),
        "413": _error(
            f"The body is larger than {settings.max_request_bytes:,} bytes (`NEURACRM_MAX_REQUEST_BYTES`); "
            "it is refused before it is parsed. Split the batch."
        ),
        "415": _error(
            "The `Content-Type` is not `application/json` (a `charset` parameter, if any, must be UTF-8)."
        ),
        "429": _error(
            "Too many requests: from this API key, from this client address, or too many unknown API keys "
            "from this client address (see the limits in the description above). Wait `Retry-After` "
            "seconds.",
            headers={"Retry-After": {**retry_after, "required": True}},
        ),
        "500": _error("An unexpected error inside the service (it is logged with the request id)."),
        "503": _error(
            "The service is starting, or a dependency it needs for this request (the database) is not "
            "answering; `Retry-After` says when to try again.",
            headers={"Retry-After": retry_after},
        ),
        "504": _error("The request was not answered within the service's timeout (30 s)."),
    }
    if not_found:
        responses["404"] = _error(not_found)
    return dict(sorted(responses.items()))


def _api_operation(
    settings: Settings,
    schemas: Mapping[tuple[Any, JsonSchemaMode], Any],
    *,
    name: str,
    summary: str,
    description: str,
    request: type[BaseModel],
    response: type[BaseModel],
    not_found: str | None = None,
    tag: str = "Predictions",
) -> dict[str, Any]:
    request_id = {
        "description": f"The request id: yours when you sent `{REQUEST_ID_HEADER}` (its first "
        f"{REQUEST_ID_MAX_CHARS} characters), else a new one; it is logged with the prediction.",
        "schema": {"type": "string"},
    }
    return {
        "operationId": name,
        "summary": summary,
        "description": description,
        "tags": [tag],
        "security": [{"apiKey": []}],
        "parameters": [
            {
                "name": REQUEST_ID_HEADER,
                "in": "header",
                "required": False,
                "description": f"Your id for this request (at most {REQUEST_ID_MAX_CHARS} characters are "
                "kept); echoed in the answer and logged with the prediction.",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "description": f"JSON, at most {settings.max_request_bytes:,} bytes.",
            "content": {"application/json": {"schema": schemas[(request, "validation")]}},
        },
        "responses": {
            "200": {
                "description": "The predictions, each naming the model version (and route) that made it.",
                "headers": {
                    REQUEST_ID_HEADER: {**request_id, "required": True},
                    REPLICA_HEADER: {**REPLICA_HEADER_DOC, "required": True},
                },
                "content": {"application/json": {"schema": schemas[(response, "serialization")]}},
            },
            **_error_responses(settings, not_found=not_found),
        },
    }


RETELL_EVENT_BODY = {
    "type": "object",
    "description": "Retell's call webhook body as Retell sends it (`event` and `call`, Retell's call "
    "object; only `call_id`, `metadata`, `transcript`, `start_timestamp`, `end_timestamp` and "
    "`call_analysis` are read). The signature is over these exact bytes.",
    "required": ["event", "call"],
    "properties": {
        "event": {
            "type": "string",
            "description": "`call_ended` and `call_analyzed` are recorded; others "
            "are answered 200 `ignored`.",
        },
        "call": {
            "type": "object",
            "required": ["call_id"],
            "properties": {
                "call_id": {"type": "string", "maxLength": 128},
                "metadata": {
                    "type": "object",
                    "description": "What `POST /voice/context` returned in `call_inbound.metadata`.",
                },
                "transcript": {"type": "string"},
                "start_timestamp": {"type": "integer", "description": "Milliseconds since the epoch."},
                "end_timestamp": {"type": "integer", "description": "Milliseconds since the epoch."},
                "call_analysis": {
                    "type": "object",
                    "properties": {
                        "call_successful": {"type": "boolean"},
                        "user_sentiment": {
                            "type": "string",
                            "enum": ["Positive", "Negative", "Neutral", "Unknown"],
                        },
                    },
                },
            },
        },
    },
}


def _voice_events_operation(
    settings: Settings, schemas: Mapping[tuple[Any, JsonSchemaMode], Any]
) -> dict[str, Any]:
    request_id = {"description": "The request id (yours, or a new one).", "schema": {"type": "string"}}
    errors = _error_responses(settings, not_found=None)
    errors["400"] = _error("The signature is valid but the body is not a JSON object with `call.call_id`.")
    errors["401"] = _error(
        "The `x-retell-signature` header is missing, does not match the body, or is older than 5 minutes, "
        "or `NEURACRM_RETELL_API_KEY` is not set on the service. Nothing is written."
    )
    errors["429"] = _error(
        "Too many requests from this client address. Wait `Retry-After` seconds.",
        headers={
            "Retry-After": {
                "description": "Seconds to wait.",
                "schema": {"type": "integer"},
                "required": True,
            }
        },
    )
    errors["503"] = _error(
        "The service is starting, or the database cannot record the event now; Retell retries, and a "
        "replay is recorded once.",
        headers={
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer", "minimum": 1}}
        },
    )
    errors.pop("403", None)
    return {
        "post": {
            "operationId": "voice_events",
            "summary": "Retell call webhooks",
            "description": "Retell's `call_ended` (the transcript becomes an `interactions` row, channel "
            "`voice`) and `call_analyzed` (`call_successful` becomes the outcome of the call's context "
            "prediction, `user_sentiment` the interaction's sentiment label). Authenticated by Retell's "
            "signature (`x-retell-signature`: HMAC-SHA256 of the body and the timestamp with "
            "`NEURACRM_RETELL_API_KEY`), not by an API key. Recorded once per (call, event): a replay "
            "answers `duplicate` and changes nothing. See docs/voice-endpoints.md.",
            "tags": ["Voice"],
            "security": [{"retellSignature": []}],
            "requestBody": {
                "required": True,
                "description": f"JSON, at most {settings.max_request_bytes:,} bytes.",
                "content": {"application/json": {"schema": RETELL_EVENT_BODY}},
            },
            "responses": {
                "200": {
                    "description": "Recorded, a duplicate, or ignored (another event type).",
                    "headers": {
                        REQUEST_ID_HEADER: {**request_id, "required": True},
                        REPLICA_HEADER: {**REPLICA_HEADER_DOC, "required": True},
                    },
                    "content": {
                        "application/json": {"schema": schemas[(VoiceEventResponse, "serialization")]}
                    },
                },
                **dict(sorted(errors.items())),
            },
        }
    }


def _infrastructure(summary: str, responses: dict[str, str]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "tags": ["Infrastructure"],
            "security": [],
            "responses": {status: {"description": text} for status, text in responses.items()},
        }
    }


def _limits_text(settings: Settings) -> str:
    def rate(per_second: float, burst: int) -> str:
        return f"{per_second:g} per second (bursts of {burst:,})" if per_second > 0 else "no limit"

    return (
        "Limits (each 429 carries `Retry-After`; the rates hold per worker process):\n\n"
        f"- request body: at most {settings.max_request_bytes:,} bytes, else 413;\n"
        "- requests per API key: "
        f"{rate(settings.rate_limit_key_per_second, settings.rate_limit_key_burst)};\n"
        "- requests per client address: "
        f"{rate(settings.rate_limit_address_per_second, settings.rate_limit_address_burst)};\n"
        "- unknown API keys per client address: "
        f"{rate(settings.auth_failures_per_second, settings.auth_failure_burst)}; past that, a key the "
        "service has not seen recently gets 429 without being looked up.\n"
    )


def openapi_document(settings: Settings, version: str) -> Document:
    """The whole document, for the running service's ``settings``; ``version`` is the API version."""
    keys, top = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
    component_schemas = top.get("$defs", {})

    def operation(**kwargs: Any) -> dict[str, Any]:
        return {"post": _api_operation(settings, keys, **kwargs)}

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "NeuraCRM predictions",
            "version": version,
            "description": (
                "Lead scores, revenue forecasts and sentiment for a NeuraCRM organization. Every call "
                "sends `Authorization: Bearer <the organization's API key>` and a JSON body "
                "(`Content-Type: application/json`); the organization comes from the key. Every "
                'error answer is JSON: `{"error": "what is wrong"}`, with `detail` listing each '
                "problem on a 400.\n\n" + _limits_text(settings)
            ),
        },
        "tags": [
            {"name": "Predictions", "description": "The prediction API (an API key is needed)."},
            {
                "name": "Voice",
                "description": "Voice-agent calls (Retell AI): call context (API key) and call webhooks "
                "(Retell's signature).",
            },
            {"name": "Infrastructure", "description": "Probes, metrics and status (no key)."},
        ],
        "paths": {
            "/score": operation(
                name="score",
                summary="Score leads",
                description=f"Score one lead (`lead`) or up to {MAX_LEADS:,} (`leads`): probability, "
                "0-100 score, tier, the top-3 factors, and the model version that answered.",
                request=ScoreRequest,
                response=ScoreResponse,
            ),
            "/forecast": operation(
                name="forecast",
                summary="Forecast monthly revenue",
                description=f"The organization's monthly revenue for the next 1 to {MAX_MONTHS} months "
                "with 80% and 95% bounds. Without a loaded model (or while the registry is down) the "
                "seasonal-naive fallback answers, flagged (`fallback: true`, `fallback_reason`).",
                request=ForecastRequest,
                response=ForecastResponse,
                not_found="The organization has no sales history to forecast from.",
            ),
            "/sentiment": operation(
                name="sentiment",
                summary="Label texts by sentiment",
                description=f"Negative / neutral / positive and a score for one text (`text`) or up to "
                f"{MAX_TEXTS:,} (`items`).",
                request=SentimentRequest,
                response=SentimentResponse,
            ),
            "/voice/context": operation(
                name="voice_context",
                summary="The context of a voice-agent call",
                description="For a scenario and a contact (`lead_id`, `caller_number`, or Retell's "
                "inbound-call webhook body): the scenario version that talks (sticky A/B by contact with "
                "the challenger's canary weight) and the call's dynamic variables from the CRM (lead "
                "score, tier and top factors, the last five interactions, the deal stage, the "
                "organization), each with its documented default when the CRM has nothing; "
                "`call_inbound` is what Retell's inbound-call webhook expects back. No scenario "
                "registered: the flagged fallback (`fallback: true`, default variables). Logged as a "
                "prediction (entity: `context_id`). See docs/voice-endpoints.md.",
                request=VoiceContextRequest,
                response=VoiceContextResponse,
                tag="Voice",
            ),
            "/voice/events": _voice_events_operation(settings, keys),
            "/healthz": _infrastructure("Liveness", {"200": "The process is alive."}),
            "/livez": _infrastructure("Liveness", {"200": "The process is alive."}),
            "/readyz": _infrastructure(
                "Readiness",
                {
                    "200": "Ready: the models are loaded. JSON: `ready` and each dependency's state "
                    "(`dependencies`: ok, last success, last error).",
                    "503": "Not ready (starting, or no model loaded); same JSON body once started.",
                },
            ),
            "/metrics": _infrastructure("Prometheus metrics", {"200": "The metrics, in Prometheus' format."}),
            "/status/": _infrastructure(
                "Service status",
                {
                    "200": "This replica's name (`replica`), loaded model versions, canary weights, "
                    "registry poll, prediction log, forecast cache and dependency state, as JSON.",
                    "503": "The service is starting.",
                },
            ),
        },
        "components": {
            "schemas": component_schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"The organization's API key ({API_KEY_SHAPE_TEXT}).",
                },
                "retellSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-retell-signature",
                    "description": "Retell's webhook signature, `v=<ms timestamp>,d=<hex HMAC-SHA256 of "
                    "body + timestamp, keyed with NEURACRM_RETELL_API_KEY>`, at most 5 minutes old.",
                },
            },
        },
    }


__all__ = ["DOCUMENT_PATH", "OPENAPI_VERSION", "REPLICA_HEADER", "openapi_document"]
