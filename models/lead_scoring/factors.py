"""Factors: the sentences a salesperson can act on, one per factor group of a lead, ranked by impact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .fields import ATTRIBUTE_PREFIX, OTHER_FIELDS, _is_missing

GROUP_LABELS: dict[str, str] = {
    "industry": "Industry",
    "company_size": "Company size",
    "engagement": "Engagement",
    "decision_maker": "Decision maker",
    "urgency": "Urgency",
    "text_insights": "Notes",
    OTHER_FIELDS: "Other fields",
}


@dataclass(frozen=True)
class Factor:
    group: str
    direction: str  # "+" raises the chance (or no effect), "-" lowers it
    impact: float  # change in probability (model, fitted rules) or weighted factor (hand rules)
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "direction": self.direction,
            "impact": round(float(self.impact), 4),
            "text": self.text,
        }


def _fmt_int(value: Any) -> str:
    try:
        return f"{int(float(value)):,}"
    except (TypeError, ValueError, OverflowError):
        return "unknown"


def _fmt_value(value: Any) -> str:
    """A custom field's value in a sentence."""
    if _is_missing(value) or value is None:
        return "not set"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."


def no_data_text(group: str) -> str:
    """The sentence of a factor group the scorer has no inputs for."""
    if group == "text_insights":
        return "Notes: not enough text in this organization's leads"
    if group == OTHER_FIELDS:
        return "Other fields: no custom fields in this organization's leads"
    return f"{GROUP_LABELS[group]}: no data in this organization's leads"


def phrase_factor(group: str, positive: bool, row: Mapping[str, Any], custom_field: str | None = None) -> str:
    """A sentence a salesperson can act on, for one factor group of one lead (``custom_field``: the
    ``attr_*`` column that moves an ``other_fields`` factor most)."""
    if group == "industry":
        industry = row.get("industry") or "unknown industry"
        return f"Industry: {industry} leads {'convert well' if positive else 'convert less often'}"
    if group == "company_size":
        employees = _fmt_int(row.get("company_employees"))
        return (
            f"Company size: {employees} employees fits typical buyers"
            if positive
            else f"Company size: {employees} employees is outside the typical buyer profile"
        )
    if group == "engagement":
        detail = (
            f"{_fmt_int(row.get('email_opens'))} email opens, "
            f"{_fmt_int(row.get('website_visits'))} site visits, "
            f"last active {_fmt_int(row.get('days_since_last_activity'))} days ago"
        )
        return f"{'High' if positive else 'Low'} engagement: {detail}"
    if group == "decision_maker":
        title = row.get("job_title") or row.get("seniority") or "unknown role"
        return f"Decision maker: {title}" if positive else f"Limited buying authority: {title}"
    if group == "urgency":
        detail = (
            f"timeline {row.get('timeline') or 'unknown'}, budget {row.get('budget_signal') or 'unknown'}"
        )
        return f"Urgent need: {detail}" if positive else f"Little urgency: {detail}"
    if group == OTHER_FIELDS:
        if custom_field is None:
            return f"Other fields {'raise' if positive else 'lower'} the chance"
        name = custom_field.removeprefix(ATTRIBUTE_PREFIX)
        value = _fmt_value(row.get(custom_field))
        return f"Other fields: {name} = {value} {'raises' if positive else 'lowers'} the chance"
    text = str(row.get("description") or "").strip()
    snippet = (text[:60] + "...") if len(text) > 60 else text
    return f"Notes show buying intent: '{snippet}'" if positive else f"Notes suggest low intent: '{snippet}'"


def rank_factors(
    impacts: Mapping[str, float],
    row: Mapping[str, Any],
    top: int = 3,
    *,
    without_inputs: Sequence[str] = (),
    custom_field: str | None = None,
) -> list[Factor]:
    """The ``top`` factors of one lead: the groups with inputs by absolute impact (ties keep the order
    of ``impacts``), then the groups ``without_inputs`` (impact 0, a sentence saying there is no data)."""
    ranked = sorted(impacts.items(), key=lambda kv: abs(kv[1]), reverse=True)[:top]
    factors = [
        Factor(g, "+" if v >= 0 else "-", v, phrase_factor(g, v >= 0, row, custom_field)) for g, v in ranked
    ]
    for group in without_inputs[: max(0, top - len(factors))]:
        factors.append(Factor(group, "+", 0.0, no_data_text(group)))
    return factors


def top_factors(impacts: Mapping[str, float], row: Mapping[str, Any], top: int = 3) -> list[Factor]:
    """The ``top`` groups by absolute impact (ties keep ``impacts`` order), phrased for ``row``."""
    return rank_factors(impacts, row, top)
