"""Request and response models of the prediction API (pydantic; errors name the field and the problem).

Limits (documented in the README and the OpenAPI served by BentoML at ``/docs``):
- ``/score``: 1 to ``MAX_LEADS`` leads per request;
- ``/sentiment``: 1 to ``MAX_TEXTS`` texts per request, each 1 to ``MAX_TEXT_CHARS`` characters;
- ``/forecast``: ``months`` from 1 to ``MAX_MONTHS``.
Unknown fields are refused (a typo should not silently score a lead without the field); custom lead
fields go in ``attributes``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_LEADS = 1_000
MAX_TEXTS = 1_000
MAX_TEXT_CHARS = 5_000
MAX_DESCRIPTION_CHARS = 5_000
MAX_MONTHS = 24
MAX_ATTRIBUTES = 50

Route = Literal["champion", "challenger", "fallback"]
AttributeValue = str | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


class LeadIn(_Strict):
    """A lead's features. Every field is optional: missing ones are imputed like in training."""

    lead_id: str | None = Field(
        None, max_length=128, description="Your lead id: routing is sticky by it, outcomes join on it."
    )
    industry: str | None = Field(None, max_length=64)
    company_employees: int | None = Field(None, ge=0)
    company_revenue: float | None = Field(None, ge=0)
    email_opens: int | None = Field(None, ge=0)
    website_visits: int | None = Field(None, ge=0)
    pages_viewed: int | None = Field(None, ge=0)
    time_on_site_seconds: float | None = Field(None, ge=0)
    days_since_last_activity: int | None = Field(None, ge=0)
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

    lead: LeadIn | None = None
    leads: list[LeadIn] | None = Field(None, min_length=1, max_length=MAX_LEADS)
    organization_id: int | None = Field(
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
    months: int = Field(..., ge=1, le=MAX_MONTHS, description="How many months ahead, 1 to 24.")
    organization_id: int | None = Field(
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


class TextIn(_Strict):
    text: str = Field(..., max_length=MAX_TEXT_CHARS)
    interaction_id: str | None = Field(None, max_length=128)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value:
            raise ValueError("text must not be empty")
        return value


class SentimentRequest(_Strict):
    """Either ``text`` (+ optional ``interaction_id``) or ``items`` (a batch of 1 to 1,000)."""

    text: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    interaction_id: str | None = Field(None, max_length=128)
    items: list[TextIn] | None = Field(None, min_length=1, max_length=MAX_TEXTS)
    organization_id: int | None = None

    @model_validator(mode="after")
    def _one_of_text_or_items(self) -> SentimentRequest:
        if (self.text is None) == (self.items is None):
            raise ValueError("send either 'text' (one text) or 'items' (a list of 1 to 1000 texts)")
        if self.text is not None and not self.text:
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
