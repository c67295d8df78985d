"""Request and response models of the prediction API (pydantic; errors name the field and the problem).

Limits (documented in the README and in the OpenAPI document at ``/docs.json``, ``openapi.py``):
- ``/score``: 1 to ``MAX_LEADS`` leads per request;
- ``/sentiment``: 1 to ``MAX_TEXTS`` texts per request, each 1 to ``MAX_TEXT_CHARS`` characters;
- ``/forecast``: ``months`` from 1 to ``MAX_MONTHS``.
Unknown fields are refused (a typo should not silently score a lead without the field); custom lead
fields go in ``attributes``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

MAX_LEADS = 1_000
MAX_TEXTS = 1_000
MAX_TEXT_CHARS = 5_000
MAX_DESCRIPTION_CHARS = 5_000
MAX_MONTHS = 24
MAX_ATTRIBUTES = 50

Route = Literal["champion", "challenger", "fallback"]
# a text must have a character that is not white space (it is stripped, then must not be empty): the
# OpenAPI document's form of the _not_blank validators
NOT_BLANK: dict[str, JsonValue] = {"pattern": r"\S"}
AttributeValue = str | int | float | bool | None


def _a_number(value: object) -> object:
    """JSON numbers only: pydantic alone would read ``true`` as 1 and ``"5"`` as 5, which the OpenAPI
    document (``type: integer`` / ``number``) does not allow."""
    if isinstance(value, bool | str):
        raise ValueError(f"must be a JSON number, not a {'boolean' if isinstance(value, bool) else 'string'}")
    return value


Whole = Annotated[int, BeforeValidator(_a_number)]
Number = Annotated[float, BeforeValidator(_a_number)]


class _Strict(BaseModel):
    """Request models: unknown fields refused, numbers finite and JSON numbers, texts stripped of the
    white space around them after their length was checked (on the text as sent, as documented)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _strip_texts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, dict):
            return {name: v.strip() if isinstance(v, str) else v for name, v in value.items()}
        return value


def _exactly_one_of(first: str, second: str) -> list[JsonValue]:
    """JSON Schema for "exactly one of the two fields is given" (both refuse null: ``_refuse_null``)."""
    return [{"required": [first]}, {"required": [second]}]


def _refuse_null(value: object) -> object:
    """An either-or field may be left out, not sent as null (one rule, stated the same in the OpenAPI
    document: ``_no_null_in_schema``). Runs only on values sent, not on the default."""
    if value is None:
        raise ValueError("must not be null: leave the field out instead")
    return value


def _no_null_in_schema(schema: dict[str, JsonValue]) -> None:
    """The field's JSON Schema without the null alternative pydantic puts in for ``X | None = None``."""
    variants = schema.pop("anyOf", None)
    if isinstance(variants, list):
        kept = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        if len(kept) == 1 and isinstance(kept[0], dict):
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    schema.pop("default", None)


class LeadIn(_Strict):
    """A lead's features. Every field is optional: missing ones are imputed like in training."""

    lead_id: str | None = Field(
        None, max_length=128, description="Your lead id: routing is sticky by it, outcomes join on it."
    )
    industry: str | None = Field(None, max_length=64)
    company_employees: Whole | None = Field(None, ge=0)
    company_revenue: Number | None = Field(None, ge=0)
    email_opens: Whole | None = Field(None, ge=0)
    website_visits: Whole | None = Field(None, ge=0)
    pages_viewed: Whole | None = Field(None, ge=0)
    time_on_site_seconds: Number | None = Field(None, ge=0)
    days_since_last_activity: Whole | None = Field(None, ge=0)
    job_title: str | None = Field(None, max_length=200)
    seniority: str | None = Field(None, max_length=64)
    timeline: str | None = Field(None, max_length=64)
    budget_signal: str | None = Field(None, max_length=64)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    source: str | None = Field(None, max_length=64)
    region: str | None = Field(None, max_length=64)
    attributes: dict[str, AttributeValue] = Field(default_factory=dict, max_length=MAX_ATTRIBUTES)


class ScoreRequest(_Strict):
    """Either ``lead`` (one) or ``leads`` (a batch of 1 to 1,000)."""

    # the either-or rule of _one_of_lead_or_leads, for the OpenAPI document (a missing field and null
    # are the same here)
    model_config = ConfigDict(json_schema_extra={"oneOf": _exactly_one_of("lead", "leads")})

    lead: Annotated[LeadIn | None, BeforeValidator(_refuse_null)] = Field(
        None, json_schema_extra=_no_null_in_schema
    )
    leads: Annotated[list[LeadIn] | None, BeforeValidator(_refuse_null)] = Field(
        None, min_length=1, max_length=MAX_LEADS, json_schema_extra=_no_null_in_schema
    )
    organization_id: Whole | None = Field(
        None, description="Optional; when given it must be the API key's organization (else 403)."
    )

    @model_validator(mode="after")
    def _one_of_lead_or_leads(self) -> ScoreRequest:
        if (self.lead is None) == (self.leads is None):
            raise ValueError("send either 'lead' (one lead) or 'leads' (a list of 1 to 1000 leads)")
        return self

    def all_leads(self) -> list[LeadIn]:
        return [self.lead] if self.lead is not None else list(self.leads or [])


class ModelBlock(BaseModel):
    name: str
    version: str | None
    route: Route


class FactorOut(BaseModel):
    group: str
    direction: Literal["+", "-"]
    impact: float
    text: str


class LeadScoreOut(BaseModel):
    lead_id: str | None
    probability: float
    score: int
    tier: Literal["hot", "warm", "cold"]
    factors: list[FactorOut]
    model: ModelBlock
    fallback: bool
    fallback_reason: str | None


class ScoreResponse(BaseModel):
    request_id: str
    organization_id: int
    results: list[LeadScoreOut]


class ForecastRequest(_Strict):
    months: Whole = Field(..., ge=1, le=MAX_MONTHS, description="How many months ahead, 1 to 24.")
    organization_id: Whole | None = Field(
        None, description="Optional; when given it must be the API key's organization (else 403)."
    )


class ForecastPoint(BaseModel):
    month: str
    forecast: float
    lower_80: float
    upper_80: float
    lower_95: float
    upper_95: float


class ForecastResponse(BaseModel):
    request_id: str
    organization_id: int
    months: int
    points: list[ForecastPoint]
    weights: dict[str, float]
    best_model: str
    model: ModelBlock
    fallback: bool
    fallback_reason: str | None


def _not_blank_and_no_null(schema: dict[str, JsonValue]) -> None:
    _no_null_in_schema(schema)
    schema.update(NOT_BLANK)


class TextIn(_Strict):
    text: str = Field(..., max_length=MAX_TEXT_CHARS, json_schema_extra=NOT_BLANK)
    interaction_id: str | None = Field(None, max_length=128)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be empty")
        return value


class SentimentRequest(_Strict):
    """Either ``text`` (+ optional ``interaction_id``) or ``items`` (a batch of 1 to 1,000)."""

    # the either-or rule of _one_of_text_or_items, for the OpenAPI document
    model_config = ConfigDict(json_schema_extra={"oneOf": _exactly_one_of("text", "items")})

    text: Annotated[str | None, BeforeValidator(_refuse_null)] = Field(
        None, max_length=MAX_TEXT_CHARS, json_schema_extra=_not_blank_and_no_null
    )
    interaction_id: str | None = Field(None, max_length=128)
    items: Annotated[list[TextIn] | None, BeforeValidator(_refuse_null)] = Field(
        None, min_length=1, max_length=MAX_TEXTS, json_schema_extra=_no_null_in_schema
    )
    organization_id: Whole | None = None

    @model_validator(mode="after")
    def _one_of_text_or_items(self) -> SentimentRequest:
        if (self.text is None) == (self.items is None):
            raise ValueError("send either 'text' (one text) or 'items' (a list of 1 to 1000 texts)")
        if self.text is not None and not self.text.strip():
            raise ValueError("text must not be empty")
        return self

    def all_items(self) -> list[TextIn]:
        if self.items is not None:
            return list(self.items)
        assert self.text is not None
        return [TextIn(text=self.text, interaction_id=self.interaction_id)]


class SentimentOut(BaseModel):
    interaction_id: str | None
    label: Literal["negative", "neutral", "positive"]
    score: float
    model: ModelBlock
    fallback: bool
    fallback_reason: str | None


class SentimentResponse(BaseModel):
    request_id: str
    organization_id: int
    results: list[SentimentOut]


class ValidationProblem(BaseModel):
    """One problem with a request body: where (``loc``: the path of field names and list indexes from
    the body's top, empty for the body as a whole), what (``msg``) and its kind (``type``, pydantic's
    error type such as ``missing``, ``string_too_long`` or ``json_invalid``)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error answer of the API: ``error`` says what is wrong in a sentence; a 400 for a body
    that does not match the request schema also lists each problem in ``detail``."""

    error: str
    detail: list[ValidationProblem] | None = Field(
        None, description="400 only: each problem found in the request body."
    )


# -- voice agents (Retell AI) -----------------------------------------------------------------------

SCENARIO_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"  # prompt_registry.SCENARIO_NAME
MAX_PHONE_CHARS = 64
VoiceRoute = Literal["champion", "challenger", "fallback"]


class CallInboundIn(BaseModel):
    """Retell's ``call_inbound`` object as its inbound-call webhook sends it (other fields Retell adds
    are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    from_number: str | None = Field(None, max_length=MAX_PHONE_CHARS, description="The caller's number.")
    to_number: str | None = Field(None, max_length=MAX_PHONE_CHARS, description="The number called.")
    agent_id: str | None = Field(None, max_length=128)
    agent_version: Whole | None = None
    call_id: str | None = Field(None, max_length=128)


class VoiceContextRequest(_Strict):
    """The scenario and the contact: ``lead_id`` and/or ``caller_number``, or Retell's inbound-call
    webhook body (``event`` + ``call_inbound``, the caller being ``call_inbound.from_number``) with
    ``scenario`` added to it."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["lead_id"]},
                {"required": ["caller_number"]},
                {"required": ["call_inbound"]},
            ]
        }
    )

    scenario: str = Field(..., pattern=SCENARIO_PATTERN, description="The scenario (e.g. `sales_outbound`).")
    lead_id: Annotated[str | None, BeforeValidator(_refuse_null)] = Field(
        None,
        max_length=128,
        description="Your lead id (`leads.external_id`).",
        json_schema_extra=_not_blank_and_no_null,
    )
    caller_number: Annotated[str | None, BeforeValidator(_refuse_null)] = Field(
        None,
        max_length=MAX_PHONE_CHARS,
        description="The caller's (or, outbound, the callee's) number, any format (compared as digits).",
        json_schema_extra=_not_blank_and_no_null,
    )
    event: Annotated[Literal["call_inbound"] | None, BeforeValidator(_refuse_null)] = Field(
        None, description="Retell's webhook event name.", json_schema_extra=_no_null_in_schema
    )
    call_inbound: Annotated[CallInboundIn | None, BeforeValidator(_refuse_null)] = Field(
        None, json_schema_extra=_no_null_in_schema
    )
    organization_id: Whole | None = Field(
        None, description="Optional; when given it must be the API key's organization (else 403)."
    )

    @field_validator("lead_id", "caller_number")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _a_contact(self) -> VoiceContextRequest:
        if self.lead_id is None and self.caller_number is None and self.call_inbound is None:
            raise ValueError(
                "send 'lead_id', 'caller_number' or Retell's 'call_inbound' (with 'from_number')"
            )
        return self


class VoiceMetadata(BaseModel):
    """What the call carries back in its ``metadata`` (``/voice/events`` reads it)."""

    organization_id: int
    context_id: str
    scenario: str
    scenario_version: str | None
    route: VoiceRoute
    lead_id: str | None


class CallInboundOut(BaseModel):
    """What Retell's inbound-call webhook takes back: the dynamic variables (all strings) and the
    metadata; the agent override only when the scenario version names its published Retell agent."""

    dynamic_variables: dict[str, str]
    metadata: VoiceMetadata
    override_agent_id: str = Field(
        "", description="Present only when the version was published as a Retell agent version."
    )
    override_agent_version: int = Field(0, description="Present together with `override_agent_id`.")


class VoiceContextResponse(BaseModel):
    request_id: str
    organization_id: int
    context_id: str
    scenario: str
    version: str | None
    semver: str | None
    route: VoiceRoute
    model: ModelBlock
    fallback: bool
    fallback_reason: str | None
    lead_id: str | None
    call_inbound: CallInboundOut


class VoiceEventResponse(BaseModel):
    """What ``POST /voice/events`` answers Retell (200): ``recorded``, ``duplicate`` or ``ignored``."""

    status: Literal["recorded", "duplicate", "ignored"]
    event: str | None
    call_id: str | None = None
    reason: str | None = None
    interaction: str | None = Field(
        None, description="The interactions row's external id, when one was written."
    )
    outcome: dict[str, str] | None = Field(None, description="The outcome written (call_analyzed).")
