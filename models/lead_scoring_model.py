"""Lead scoring: the probability that a lead converts, a 0-100 score, a tier and the top-3 factors.

Three scorers share one output shape:
- ``LeadScoringModel`` (``train``): built from the fields the training leads actually have. Every
  documented lead field is optional and custom fields (``attributes``, or ``attr_*`` columns) are
  typed from their values; a field without values, an identifier-like or free-text field and a
  constant one are dropped, a categorical field with many values is bucketed (its most frequent
  values, the rest grouped as other), and the text signal is built only when there is enough text.
  Every such decision is a sentence in ``model.feature_notes``. The classifier is a regularised
  logistic regression followed by gradient-boosted trees fitted on what it misses; the number of
  trees is chosen on the newest training leads (time-ordered validation, zero trees allowed;
  ``LinearBoostedClassifier``).
- ``RuleScorer``: the six-factor rule scorer. ``RuleScorer()`` uses the hand weights (industry 20,
  company size 15, engagement 25, decision maker 15, urgency 10, text insights 5, normalised) and
  needs no training; ``RuleScorer.fit(leads, y)`` calibrates it on an organization's leads (the six
  factor scores feed a small logistic regression: weights and base rate come from the data, groups
  without inputs get no weight).
- ``BaseRateScorer``: the training base rate for every lead. ``fit_fallback`` picks the fallback:
  the fitted rules when their holdout ROC AUC is at least ``FALLBACK_MIN_AUC``, else the base rate.

Factors are explained per lead by occlusion: each factor group the model has inputs for is set to the
training population's typical value, and the change in probability is that group's contribution. The
groups are the six design groups plus ``other_fields`` (the custom fields; its sentence names the
custom field that moves this lead's probability most). **Groups without inputs** (no such field in
the training leads) rank after every group with inputs: they appear in the top 3 only when fewer than
three groups have inputs, with impact 0 and a sentence that says so (e.g. "Company size: no data in
this organization's leads"); ``direction`` is then "+", as for any impact >= 0. ``source`` and
``region`` are features but belong to no group (never explained). ``model.factor_inputs`` lists the
inputs of every group.

Values are read the same way on every path (``to_number``, ``to_category``, ``to_text``): numeric text
is a number, booleans are 1 / 0 (or "true" / "false" as categories), 5 and 5.0 are the category "5",
blank text is missing. A model pickled before these schema-driven features still loads and scores
with its original featurization (``legacy``; served through ``predict``).

``predict(scorer, leads)`` is the reference path (pandas frames through the fitted pipeline). For the
HTTP serving layer, ``compile_scorer(scorer)`` returns a ``LeanLeadScorer`` whose ``predict(records)``
gives the same answers from plain dict records without pandas, verified against ``predict`` when built.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin

OTHER_FIELDS = "other_fields"
# the six design groups and their documented lead fields, then the custom fields (decided at training)
FACTOR_GROUPS: dict[str, tuple[str, ...]] = {
    "industry": ("industry",),
    "company_size": ("company_employees", "company_revenue"),
    "engagement": (
        "email_opens",
        "website_visits",
        "pages_viewed",
        "time_on_site_seconds",
        "days_since_last_activity",
    ),
    "decision_maker": ("job_title", "seniority"),
    "urgency": ("timeline", "budget_signal"),
    "text_insights": ("description",),
    OTHER_FIELDS: (),  # the custom fields (attributes) a trained model uses: ``model.factor_inputs``
}
GROUP_LABELS: dict[str, str] = {
    "industry": "Industry",
    "company_size": "Company size",
    "engagement": "Engagement",
    "decision_maker": "Decision maker",
    "urgency": "Urgency",
    "text_insights": "Notes",
    OTHER_FIELDS: "Other fields",
}
RULE_WEIGHTS: dict[str, float] = {
    "industry": 20,
    "company_size": 15,
    "engagement": 25,
    "decision_maker": 15,
    "urgency": 10,
    "text_insights": 5,
}
NUMERIC_COLUMNS = (
    "company_employees",
    "company_revenue",
    "email_opens",
    "website_visits",
    "pages_viewed",
    "time_on_site_seconds",
    "days_since_last_activity",
)
CATEGORICAL_COLUMNS = ("industry", "seniority", "timeline", "budget_signal", "source", "region")
TEXT_COLUMNS = ("job_title", "description")
INPUT_COLUMNS = (*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS, *TEXT_COLUMNS)
TIERS = (("hot", 0.60), ("warm", 0.30), ("cold", 0.0))
ATTRIBUTE_PREFIX = "attr_"
MISSING_CATEGORY = "__missing__"  # what a missing categorical value is one-hot encoded as
FALLBACK_MIN_AUC = 0.55  # the fitted rules serve as fallback only when they rank this well on a holdout

# ---------------------------------------------------------------------------------------------
# Input handling


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts keyed by column name."""
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def _as_frame(leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return leads if isinstance(leads, pd.DataFrame) else pd.DataFrame(list(leads))


def leads_frame(leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Lead records (DataFrame or dicts with the ``leads`` columns) as a frame with every input column
    (the rule scorer's input).

    Custom fields may come as an ``attributes`` dict per lead; they become ``attr_<name>`` columns.
    """
    frame = leads.copy() if isinstance(leads, pd.DataFrame) else pd.DataFrame(list(leads))
    for column in INPUT_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    if "attributes" in frame.columns:
        attributes = pd.DataFrame(
            [a if isinstance(a, Mapping) else {} for a in frame["attributes"]], index=frame.index
        )
        for name in attributes.columns:
            frame[f"{ATTRIBUTE_PREFIX}{name}"] = attributes[name]
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in (*CATEGORICAL_COLUMNS, *TEXT_COLUMNS):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def to_number(value: Any) -> float:
    """A field value as the model reads a number: NaN when missing or not a number. Booleans count as
    1 / 0 and numeric text is parsed ("12", " 4.5 "); infinities count as missing."""
    if value is None or value is pd.NA:
        return math.nan
    if isinstance(value, bool | np.bool_):
        return 1.0 if value else 0.0
    try:
        if not isinstance(value, int | np.integer | float | np.floating | str):
            return math.nan
        number = float(value)
    except (ValueError, OverflowError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def to_category(value: Any) -> str | None:
    """A field value as the model reads a category: text stripped (empty is missing), booleans as
    "true" / "false", whole numbers without a decimal point (5 and 5.0 are both "5")."""
    if _is_missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isinf(number):
            return None
        return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)
    if isinstance(value, str):
        return value.strip() or None
    return None  # dicts, lists, timestamps: not a category


def to_text(value: Any) -> str:
    """A description as the text signal reads it ("" when missing or not text)."""
    return value if isinstance(value, str) else ""


def _number_column(values: pd.Series) -> np.ndarray:
    """``to_number`` of every value (vectorised for numeric columns, same results)."""
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        array = values.to_numpy(dtype=float, na_value=np.nan)
        return np.where(np.isfinite(array), array, np.nan)
    return np.array([to_number(v) for v in values], dtype=float)


def _attribute_value(attributes: Any, direct: Any, name: str) -> Any:
    """A custom field of one lead: from its ``attributes`` dict when the dict has the key, else from an
    ``attr_<name>`` column (or key) of the lead."""
    if isinstance(attributes, Mapping) and name in attributes:
        return attributes[name]
    return direct


_SENIORITY_FROM_TITLE = (
    ("c_level", re.compile(r"\b(chief|ceo|cto|cfo|coo|cmo|cro|founder|owner|president)\b", re.I)),
    ("vp", re.compile(r"\b(vp|svp|evp|vice president)\b", re.I)),
    ("director", re.compile(r"\b(director|head of)\b", re.I)),
    ("manager", re.compile(r"\b(manager|lead)\b", re.I)),
)


def seniority_of(seniority: Any, job_title: Any) -> str | None:
    """The stated seniority, or one read from the job title when it is missing."""
    if isinstance(seniority, str) and seniority:
        return seniority
    if isinstance(job_title, str):
        for level, pattern in _SENIORITY_FROM_TITLE:
            if pattern.search(job_title):
                return level
        return "individual_contributor"
    return None


# ---------------------------------------------------------------------------------------------
# Factors


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


def tier_of(probability: float) -> str:
    for name, threshold in TIERS:
        if probability >= threshold:
            return name
    return "cold"


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


# ---------------------------------------------------------------------------------------------
# The rule-based scorer (baseline and fallback)

_INDUSTRY_FIT = {
    "software": 1.0,
    "fintech": 0.9,
    "finance": 0.8,
    "healthcare": 0.7,
    "manufacturing": 0.6,
    "logistics": 0.6,
    "professional_services": 0.7,
    "retail": 0.5,
    "media": 0.5,
    "education": 0.4,
    "government": 0.4,
    "nonprofit": 0.3,
}
_SENIORITY_FIT = {"c_level": 1.0, "vp": 0.9, "director": 0.75, "manager": 0.5, "individual_contributor": 0.2}
_TIMELINE_FIT = {"immediate": 1.0, "this_quarter": 0.75, "this_year": 0.4, "no_timeline": 0.1}
_BUDGET_FIT = {"approved": 1.0, "allocated": 0.8, "exploring": 0.4, "none": 0.1}
BUYING_CUES = (
    "quote", "contract", "pricing", "sign", "procurement", "onboard", "demo", "trial", "shortlist",
    "case study", "references", "ready to switch", "implementation",
)  # fmt: skip
DISINTEREST_CUES = (
    "not interested", "student", "school", "too high", "no budget", "removed", "unsubscribe",
    "free", "happy with their current", "not a buyer", "signed a three-year deal",
)  # fmt: skip


def _cue_counts(text: Any) -> tuple[int, int]:
    if not isinstance(text, str):
        return 0, 0
    low = text.lower()
    return sum(cue in low for cue in BUYING_CUES), sum(cue in low for cue in DISINTEREST_CUES)


def _size_fit(employees: float) -> float:
    if math.isnan(employees):
        return 0.4
    for limit, fit in ((10, 0.2), (50, 0.5), (200, 0.8), (1000, 1.0), (5000, 0.8)):
        if employees < limit:
            return fit
    return 0.6


def _engagement_fit(row: Mapping[str, Any]) -> float:
    def number(name: str) -> float:
        value = row.get(name)
        return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    activity = (
        min(number("email_opens") / 10, 1)
        + min(number("website_visits") / 8, 1)
        + min(number("pages_viewed") / 30, 1)
    ) / 3
    days = row.get("days_since_last_activity")
    if days is None or (isinstance(days, float) and math.isnan(days)):
        recency = 0.6
    else:
        recency = 1.0 if days <= 7 else 0.7 if days <= 30 else 0.4
    return activity * recency


def rule_factor_scores(row: Mapping[str, Any]) -> dict[str, float]:
    """Each factor group scored 0..1 by a hand rule (no knowledge of real conversion rates)."""
    buying, disinterest = _cue_counts(row.get("description"))
    seniority = seniority_of(row.get("seniority"), row.get("job_title"))
    return {
        "industry": _INDUSTRY_FIT.get(str(row.get("industry")), 0.5),
        "company_size": _size_fit(float(row.get("company_employees") or float("nan"))),
        "engagement": _engagement_fit(row),
        "decision_maker": _SENIORITY_FIT.get(str(seniority), 0.3),
        "urgency": (
            _TIMELINE_FIT.get(str(row.get("timeline")), 0.3)
            + _BUDGET_FIT.get(str(row.get("budget_signal")), 0.3)
        )
        / 2,
        "text_insights": min(1.0, max(0.0, 0.5 + 0.25 * (buying - disinterest))),
    }


def _rule_group_has_values(frame: pd.DataFrame, group: str) -> bool:
    for column in FACTOR_GROUPS[group]:
        values = frame[column]
        if column == "description":
            if any(isinstance(v, str) and v.strip() for v in values):
                return True
        elif values.notna().any():
            return True
    return False


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass
class RuleScorer:
    """The six-factor rule scorer: baseline and fallback. Deterministic.

    ``RuleScorer()``: the hand weights, no training. ``RuleScorer.fit(leads, y)``: calibrated on
    an organization's leads (``intercept`` is then set and ``weights`` are log-odds per unit of factor
    score; groups without inputs in those leads have weight 0 and say so in the explanation)."""

    weights: dict[str, float] = field(default_factory=lambda: dict(RULE_WEIGHTS))
    kind: str = "rules"
    intercept: float | None = None  # None: the hand-weighted average (unfitted)
    score_means: dict[str, float] = field(default_factory=dict)  # fitted: training mean factor scores
    groups_without_inputs: tuple[str, ...] = ()
    training_leads: int = 0
    holdout_auc: float | None = None  # set by ``fit_fallback``

    @property
    def fitted(self) -> bool:
        return self.intercept is not None

    @classmethod
    def fit(cls, leads: pd.DataFrame | Sequence[Mapping[str, Any]], labels: Any) -> RuleScorer:
        """The rules calibrated on ``leads`` with known outcomes: a logistic regression on the six
        factor scores (only the groups with inputs in these leads)."""
        from sklearn.linear_model import LogisticRegression

        frame = leads_frame(leads)
        y = np.asarray(labels, dtype=int)
        if len(y) != len(frame):
            raise ValueError(f"{len(frame)} leads but {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise ValueError("fitting the rules needs both converted and not-converted leads")
        groups = list(RULE_WEIGHTS)
        scores = np.array([[s[g] for g in groups] for s in map(rule_factor_scores, records(frame))])
        with_inputs = [g for g in groups if _rule_group_has_values(frame, g)]
        used = [i for i, g in enumerate(groups) if g in with_inputs and np.ptp(scores[:, i]) > 0]
        weights = dict.fromkeys(groups, 0.0)
        if used:
            regression = LogisticRegression(C=1.0, max_iter=1000).fit(scores[:, used], y)
            intercept = float(regression.intercept_[0])
            for position, index in enumerate(used):
                weights[groups[index]] = float(regression.coef_[0][position])
        else:
            rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
            intercept = math.log(rate / (1 - rate))
        return cls(
            weights=weights,
            intercept=intercept,
            score_means={g: float(scores[:, i].mean()) for i, g in enumerate(groups)},
            groups_without_inputs=tuple(g for g in groups if g not in with_inputs),
            training_leads=len(y),
        )

    def predict_proba(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.array([self.row_probability(row) for row in records(leads_frame(leads))], dtype=float)

    def explain(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], top: int = 3) -> list[list[Factor]]:
        return [self.row_factors(row, top) for row in records(leads_frame(leads))]

    def predict(
        self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], explain: bool = True
    ) -> list[dict[str, Any]]:
        return predict(self, leads, explain=explain)

    def _logit(self, scores: Mapping[str, float]) -> float:
        assert self.intercept is not None
        return self.intercept + sum(self.weights[g] * scores[g] for g in RULE_WEIGHTS)

    def row_probability(self, row: Mapping[str, Any]) -> float:
        """The probability of one lead row (as ``records(leads_frame(...))`` yields it)."""
        scores = rule_factor_scores(row)
        if self.intercept is None:
            total = sum(self.weights.values())
            return float(sum(self.weights[g] * s for g, s in scores.items()) / total)
        return _sigmoid(self._logit(scores))

    def row_factors(self, row: Mapping[str, Any], top: int = 3) -> list[Factor]:
        scores = rule_factor_scores(row)
        if self.intercept is None:
            # impact: how far the weighted factor sits from a neutral 0.5
            total = sum(self.weights.values())
            impacts = {g: self.weights[g] * (s - 0.5) / total for g, s in scores.items()}
            return rank_factors(impacts, row, top)
        # fitted: the change in probability when the group is set to its training mean score
        z = self._logit(scores)
        p = _sigmoid(z)
        impacts = {
            g: p - _sigmoid(z - self.weights[g] * (scores[g] - self.score_means.get(g, scores[g])))
            for g in RULE_WEIGHTS
            if g not in self.groups_without_inputs
        }
        return rank_factors(impacts, row, top, without_inputs=self.groups_without_inputs)


@dataclass
class BaseRateScorer:
    """The training base rate for every lead: the fallback when no rule ranks leads usefully."""

    base_rate: float
    training_leads: int = 0
    kind: str = "base_rate"
    rules_holdout_auc: float | None = None  # why the rules were not chosen (``fit_fallback``)

    @classmethod
    def fit(cls, labels: Any) -> BaseRateScorer:
        y = np.asarray(labels, dtype=float)
        if len(y) == 0:
            raise ValueError("the base rate needs at least one lead with a known outcome")
        return cls(float(y.mean()), len(y))

    def text(self) -> str:
        return (
            f"Base rate: {self.base_rate:.1%} of this organization's {self.training_leads:,} training "
            "leads converted; this score is that base rate, not read from the lead"
        )

    def predict_proba(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.full(len(leads), self.base_rate, dtype=float)

    def explain(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], top: int = 3) -> list[list[Factor]]:
        factor = Factor("base_rate", "+", 0.0, self.text())
        return [[factor] for _ in range(len(leads))]

    def predict(
        self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], explain: bool = True
    ) -> list[dict[str, Any]]:
        return predict(self, leads, explain=explain)


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=int)
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, p))


def choose_fallback(
    rules: RuleScorer,
    base_rate: BaseRateScorer,
    rules_holdout_auc: float | None,
    min_auc: float = FALLBACK_MIN_AUC,
) -> RuleScorer | BaseRateScorer:
    """The fallback to serve: the fitted ``rules`` when their holdout ROC AUC is at least ``min_auc``
    (a measured, finite AUC), else the ``base_rate``. Pure."""
    if rules_holdout_auc is not None and math.isfinite(rules_holdout_auc) and rules_holdout_auc >= min_auc:
        return rules
    return base_rate


def fit_fallback(
    train_leads: pd.DataFrame | Sequence[Mapping[str, Any]],
    train_labels: Any,
    holdout_leads: pd.DataFrame | Sequence[Mapping[str, Any]],
    holdout_labels: Any,
    *,
    min_auc: float = FALLBACK_MIN_AUC,
) -> RuleScorer | BaseRateScorer:
    """Fit the rules and the base rate on the training leads, measure the rules' ROC AUC on the holdout
    and pick with ``choose_fallback`` (neither is fitted on the holdout, so it can score them)."""
    y_train = np.asarray(train_labels, dtype=int)
    base_rate = BaseRateScorer.fit(y_train)
    try:
        rules = RuleScorer.fit(train_leads, y_train)
    except ValueError:  # one outcome only: nothing to rank with
        return base_rate
    auc = _roc_auc(np.asarray(holdout_labels, dtype=int), rules.predict_proba(holdout_leads))
    rules.holdout_auc = auc
    base_rate.rules_holdout_auc = auc
    return choose_fallback(rules, base_rate, auc, min_auc)


# ---------------------------------------------------------------------------------------------
# The trained model: configuration and the classifier


@dataclass(frozen=True)
class LeadModelConfig:
    learning_rate: float = 0.06
    max_iter: int = 300  # most boosting stages; early stopping on the newest leads picks how many
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 40
    subsample: float = 0.8
    linear_c: float = 1.0  # inverse L2 strength of the logistic regression the trees start from
    validation_share: float = 0.2  # newest share of the training leads: chooses the number of trees
    early_stopping_rounds: int = 50  # stages without a better validation ROC AUC before stopping
    min_field_leads: int = 20  # a field with values in fewer training leads is dropped
    min_category_leads: int = 20  # categories seen in fewer training leads are grouped as other
    max_categories: int = 30  # a categorical field keeps at most this many values (other included)
    identifier_share: float = 0.5  # more distinct values than this share of its leads: an identifier
    numeric_share: float = 0.95  # a custom field is numeric when this share of its values are numbers
    min_text_leads: int = 50  # leads with a description needed for the text signal
    text_max_features: int = 2_000
    random_state: int = 0

    def as_params(self) -> dict[str, Any]:
        return dict(self.__dict__)


class LinearInputs(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """The logistic regression's view of the design matrix: continuous columns standardised (after
    log1p when non-negative and long-tailed), 0/1 columns left as they are, so that the L2 penalty
    shrinks the effect of a rare category more than that of a common one. A continuous value is
    extrapolated at most one training range beyond the training minimum and maximum (a trend may
    go on; a typo such as a billion page views must not decide a score alone)."""

    def fit(self, X: Any, y: Any = None) -> LinearInputs:
        X = np.asarray(X, dtype=float)
        binary = np.all((X == 0) | (X == 1), axis=0)
        mean, spread = X.mean(axis=0), X.std(axis=0)
        skew = (((X - mean) / np.where(spread > 0, spread, 1.0)) ** 3).mean(axis=0)
        self.log_ = ~binary & (X.min(axis=0, initial=0.0) >= 0) & (skew > 2.0)
        Z = self._logged(X)
        low, high = Z.min(axis=0, initial=np.inf), Z.max(axis=0, initial=-np.inf)
        self.low_ = np.where(binary, -np.inf, low - (high - low))
        self.high_ = np.where(binary, np.inf, high + (high - low))
        self.mean_ = np.where(binary, 0.0, Z.mean(axis=0))
        scale = np.where(binary, 1.0, Z.std(axis=0))
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self

    def _logged(self, X: np.ndarray) -> np.ndarray:
        if not self.log_.any():
            return X
        out = X.copy()
        out[:, self.log_] = np.log1p(np.maximum(X[:, self.log_], 0.0))
        return out

    def transform(self, X: Any) -> np.ndarray:
        Z = np.clip(self._logged(np.asarray(X, dtype=float)), self.low_, self.high_)
        return np.asarray((Z - self.mean_) / self.scale_, dtype=float)


def _linear_model(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(LinearInputs(), LogisticRegression(C=c, max_iter=2_000))


class _EarlyStopping:
    """A GradientBoostingClassifier monitor: ROC AUC on the validation rows after every stage (stage 0:
    the logistic regression alone); stops ``rounds`` stages after the best."""

    def __init__(self, X: np.ndarray, y: np.ndarray, learning_rate: float, rounds: int) -> None:
        self.X, self.y, self.learning_rate, self.rounds = X, y, learning_rate, rounds
        self.raw: np.ndarray | None = None
        self.scores: list[float] = []

    def _score(self, raw: np.ndarray) -> None:
        from sklearn.metrics import roc_auc_score

        self.scores.append(float(roc_auc_score(self.y, raw)))

    def __call__(self, i: int, booster: Any, _locals: Any) -> bool:
        if self.raw is None:
            eps = np.finfo(np.float64).eps
            p = np.clip(booster.init_.predict_proba(self.X)[:, 1], eps, 1 - eps)
            self.raw = np.log(p / (1 - p))
            self._score(self.raw)
        self.raw = self.raw + self.learning_rate * booster.estimators_[i, 0].predict(self.X)
        self._score(self.raw)
        return len(self.scores) - 1 - int(np.argmax(self.scores)) >= self.rounds


def _can_validate(y_fit: np.ndarray, y_val: np.ndarray) -> bool:
    return all(min(np.sum(part == 0), np.sum(part == 1)) >= 5 for part in (y_fit, y_val))


class LinearBoostedClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A regularised logistic regression, then gradient-boosted trees fitted on what it misses.

    Rows must come oldest first. Trees are fitted on the older rows while the newest
    ``validation_share`` measure ROC AUC after each one (stage 0: the logistic regression alone); the
    best count (the first best: fewer trees on a tie) is then refitted on all rows. With too few leads
    of an outcome to validate: the logistic regression alone. The linear start extrapolates trends
    the trees cannot (e.g. a market indicator drifting beyond its training range).

    Probabilities are the model's own (logistic loss, few trees): no calibrator is fitted afterwards.
    A calibrator fitted on the newest leads maps raw scores seen there to rates seen there; under
    drift the final model's scores fall outside that range (isotonic flattens them, a sigmoid fitted
    to an out-of-range period can even reverse the ranking), and on stable data it changed nothing.
    """

    def __init__(
        self,
        learning_rate: float = 0.06,
        max_iter: int = 300,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 40,
        subsample: float = 0.8,
        linear_c: float = 1.0,
        validation_share: float = 0.2,
        early_stopping_rounds: int = 50,
        random_state: int = 0,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.subsample = subsample
        self.linear_c = linear_c
        self.validation_share = validation_share
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state

    def _booster(self, stages: int) -> Any:
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(
            init=_linear_model(self.linear_c),
            n_estimators=stages,
            learning_rate=self.learning_rate,
            max_depth=None,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            subsample=self.subsample,
            random_state=self.random_state,
        )

    def fit(self, X: Any, y: Any) -> LinearBoostedClassifier:
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=int)
        self.classes_ = np.array([0, 1])
        cut = round(len(y) * (1 - self.validation_share))
        self.validation_rows_ = len(y) - cut
        self.validation_auc_: float | None = None
        stages = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # incl. lbfgs convergence warnings
            if self.max_iter > 0 and _can_validate(y[:cut], y[cut:]):
                monitor = _EarlyStopping(X[cut:], y[cut:], self.learning_rate, self.early_stopping_rounds)
                self._booster(self.max_iter).fit(X[:cut], y[:cut], monitor=monitor)
                stages = int(np.argmax(monitor.scores))  # the first best: fewer trees on a tie
                self.validation_auc_ = monitor.scores[stages]
            # else too few leads of an outcome to validate: the logistic regression alone
            self.n_trees_ = stages
            self.model_ = (
                self._booster(stages).fit(X, y) if stages else _linear_model(self.linear_c).fit(X, y)
            )
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        return np.asarray(self.model_.decision_function(np.asarray(X, dtype=float)), dtype=float).reshape(-1)

    def predict_proba(self, X: Any) -> np.ndarray:
        from scipy.special import expit

        p = np.asarray(expit(self.decision_function(X)), dtype=float)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def describe(self) -> str:
        if self.validation_auc_ is None:
            if self.max_iter <= 0:
                return "logistic regression alone (max_iter=0: no trees)"
            return "too few leads of each outcome for a validation split: logistic regression alone"
        return (
            f"logistic regression + {self.n_trees_} boosted trees (chosen by ROC AUC "
            f"{self.validation_auc_:.3f} on the newest {self.validation_rows_:,} training leads)"
        )


class TextSignal(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Description text -> out-of-fold conversion log-odds from TF-IDF + logistic regression.

    ``fit_transform`` returns cross-fitted scores (no target leak into the classifier); ``transform``
    uses the model fitted on all rows.
    """

    def __init__(self, max_features: int = 2_000, folds: int = 5, random_state: int = 0) -> None:
        self.max_features = max_features
        self.folds = folds
        self.random_state = random_state

    def _pipeline(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        return make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=3, max_features=self.max_features, sublinear_tf=True),
            LogisticRegression(C=2.0, max_iter=500),
        )

    @staticmethod
    def _texts(frame: pd.DataFrame) -> list[str]:
        return [str(v) if isinstance(v, str) else "" for v in frame["description"]]

    def fit(self, frame: pd.DataFrame, y: Any = None) -> TextSignal:
        self.model_ = self._pipeline().fit(self._texts(frame), y)
        return self

    def fit_transform(self, frame: pd.DataFrame, y: Any = None) -> np.ndarray:
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        texts = self._texts(frame)
        folds = StratifiedKFold(self.folds, shuffle=True, random_state=self.random_state)
        oof = cross_val_predict(self._pipeline(), texts, y, cv=folds, method="decision_function")
        self.fit(frame, y)
        return np.asarray(oof, dtype=float).reshape(-1, 1)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model_.decision_function(self._texts(frame)), dtype=float).reshape(-1, 1)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array(["text_signal"], dtype=object)


# ---------------------------------------------------------------------------------------------
# The trained model: which fields become features


_LOG_COLUMNS = ("company_employees", "company_revenue")
_RATIO = "pages_per_visit"  # pages_viewed / website_visits, in the engagement group
_CORE_CATEGORICAL = ("industry", "seniority", "job_title", "timeline", "budget_signal", "source", "region")
_CORE_GROUP = {column: group for group, columns in FACTOR_GROUPS.items() for column in columns}


@dataclass(frozen=True)
class FeatureSpec:
    """The model's features, decided from the training leads (model-frame column names).

    ``numeric``: core numeric fields (company size log1p'd), ``pages_per_visit`` when both inputs are
    used, then numeric custom fields; ``categorical``: core categorical fields (``seniority`` is the
    stated one or the one read from the job title) and categorical custom fields; ``text``: the
    description's text signal; ``groups``: the model-frame columns of each factor group with inputs.
    """

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    text: bool = False
    attr_numeric: tuple[str, ...] = ()
    attr_categorical: tuple[str, ...] = ()
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def attributes(self) -> tuple[str, ...]:
        return (*self.attr_numeric, *self.attr_categorical)

    @property
    def groups_without_inputs(self) -> tuple[str, ...]:
        return tuple(g for g in FACTOR_GROUPS if not self.groups.get(g))

    def variants(self) -> list[tuple[str, tuple[str, ...]]]:
        """The occlusion variants: (group, columns) for each group with inputs, in ``FACTOR_GROUPS``
        order, then (``attr_*`` column, (column,)) per custom field when there are several."""
        out = [(g, self.groups[g]) for g in FACTOR_GROUPS if self.groups.get(g)]
        if len(self.groups.get(OTHER_FIELDS, ())) > 1:
            out.extend((c, (c,)) for c in self.groups[OTHER_FIELDS])
        return out


def _attribute_names(frame: pd.DataFrame) -> list[str]:
    """Custom field names in a frame: keys of ``attributes`` dicts and ``attr_*`` columns (names starting
    with "_" are reserved for the platform, e.g. ``_field_errors``)."""
    names: set[str] = set()
    if "attributes" in frame.columns:
        for attributes in frame["attributes"]:
            if isinstance(attributes, Mapping):
                names.update(str(k) for k in attributes)
    names.update(
        str(c).removeprefix(ATTRIBUTE_PREFIX) for c in frame.columns if str(c).startswith(ATTRIBUTE_PREFIX)
    )
    return sorted(n for n in names if n and not n.startswith("_"))


def _raw_attribute_values(frame: pd.DataFrame, name: str) -> list[Any]:
    n = len(frame)
    attributes = frame["attributes"].tolist() if "attributes" in frame.columns else [None] * n
    column = f"{ATTRIBUTE_PREFIX}{name}"
    direct = frame[column].tolist() if column in frame.columns else [None] * n
    return [_attribute_value(a, d, name) for a, d in zip(attributes, direct, strict=True)]


def _canonical_frame(
    leads: pd.DataFrame | Sequence[Mapping[str, Any]],
    attr_numeric: Sequence[str],
    attr_categorical: Sequence[str],
) -> pd.DataFrame:
    """Every documented field and the given custom fields as the model reads them (``to_number``,
    ``to_category``, ``to_text``), one row per lead; the rows are also what factors are phrased from."""
    frame = _as_frame(leads)
    n = len(frame)
    out: dict[str, Any] = {}
    for column in NUMERIC_COLUMNS:
        out[column] = _number_column(frame[column]) if column in frame.columns else np.full(n, np.nan)
    for column in (*CATEGORICAL_COLUMNS, "job_title"):
        values = frame[column].tolist() if column in frame.columns else [None] * n
        out[column] = pd.Series([to_category(v) for v in values], dtype=object)
    descriptions = frame["description"].tolist() if "description" in frame.columns else [None] * n
    out["description"] = pd.Series([to_text(v) for v in descriptions], dtype=object)
    for column in attr_numeric:
        values = _raw_attribute_values(frame, column.removeprefix(ATTRIBUTE_PREFIX))
        out[column] = np.array([to_number(v) for v in values], dtype=float)
    for column in attr_categorical:
        values = _raw_attribute_values(frame, column.removeprefix(ATTRIBUTE_PREFIX))
        out[column] = pd.Series([to_category(v) for v in values], dtype=object)
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def _canonical_row(record: Mapping[str, Any], spec: FeatureSpec) -> dict[str, Any]:
    """One record as a row of ``_canonical_frame`` (the same scalar conversions, no pandas)."""
    row: dict[str, Any] = {column: to_number(record.get(column)) for column in NUMERIC_COLUMNS}
    for column in (*CATEGORICAL_COLUMNS, "job_title"):
        row[column] = to_category(record.get(column))
    row["description"] = to_text(record.get("description"))
    attributes = record.get("attributes")
    for column in spec.attr_numeric:
        name = column.removeprefix(ATTRIBUTE_PREFIX)
        row[column] = to_number(_attribute_value(attributes, record.get(column), name))
    for column in spec.attr_categorical:
        name = column.removeprefix(ATTRIBUTE_PREFIX)
        row[column] = to_category(_attribute_value(attributes, record.get(column), name))
    return row


def _engineered_numbers(column: str, values: np.ndarray) -> np.ndarray:
    if column in _LOG_COLUMNS:  # log1p(clip(lower=0)), NaN kept
        return np.asarray(np.log1p(np.where(values < 0, 0.0, values)), dtype=float)
    return values


def _ratio(pages: np.ndarray, visits: np.ndarray) -> np.ndarray:
    return np.asarray(pages / np.where(visits > 0, visits, np.nan), dtype=float)


def _model_frame(canonical: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The pipeline's input: the spec's numeric columns (engineered), categorical columns (missing as
    ``MISSING_CATEGORY``) and the description."""
    out: dict[str, Any] = {}
    for column in spec.numeric:
        if column == _RATIO:
            pages = canonical["pages_viewed"].to_numpy(dtype=float)
            out[column] = _ratio(pages, canonical["website_visits"].to_numpy(dtype=float))
        else:
            out[column] = _engineered_numbers(column, canonical[column].to_numpy(dtype=float))
    for column in spec.categorical:
        if column == "seniority":
            values = [
                seniority_of(s, t)
                for s, t in zip(canonical["seniority"], canonical["job_title"], strict=True)
            ]
        else:
            values = list(canonical[column])
        out[column] = pd.Series([MISSING_CATEGORY if v is None else v for v in values], dtype=object)
    if spec.text:
        out["description"] = canonical["description"]
    return pd.DataFrame(out, index=canonical.index)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _select_features(
    canonical: pd.DataFrame,
    attr_numeric: list[str],
    attr_categorical: list[str],
    y: np.ndarray,
    config: LeadModelConfig,
) -> tuple[FeatureSpec, list[str]]:
    """Which fields become features, and a note for every field left out or changed."""
    n = len(canonical)
    notes: list[str] = []

    def enough(column: str, present: int) -> bool:
        if present == 0:
            notes.append(f"{column}: dropped, no values in the {n:,} training leads")
            return False
        if present < config.min_field_leads:
            notes.append(
                f"{column}: dropped, only {present:,} of {n:,} training leads have a value "
                f"(at least {config.min_field_leads} needed)"
            )
            return False
        return True

    numeric: list[str] = []
    for column in (*NUMERIC_COLUMNS, *attr_numeric):
        values = canonical[column].to_numpy(dtype=float)
        present_values = values[~np.isnan(values)]
        if not enough(column, len(present_values)):
            continue
        if len(present_values) == n and np.ptp(present_values) == 0:
            notes.append(
                f"{column}: dropped, the same value ({_fmt_value(float(present_values[0]))}) for every lead"
            )
            continue
        numeric.append(column)
    if "pages_viewed" in numeric and "website_visits" in numeric:
        numeric.insert(sum(c in numeric for c in NUMERIC_COLUMNS), _RATIO)  # after the core fields

    derived = [
        seniority_of(s, t) for s, t in zip(canonical["seniority"], canonical["job_title"], strict=True)
    ]
    categorical: list[str] = []
    for column in (*_CORE_CATEGORICAL, *attr_categorical):
        categories: list[Any] = derived if column == "seniority" else list(canonical[column])
        counts = Counter(v for v in categories if v is not None)
        present = sum(counts.values())
        if not enough(column, present):
            continue
        distinct = len(counts)
        if distinct == 1 and present == n:
            notes.append(
                f"{column}: dropped, the same value ({_fmt_value(next(iter(counts)))}) for every lead"
            )
            continue
        if distinct > config.max_categories and distinct > config.identifier_share * present:
            notes.append(
                f"{column}: dropped, {distinct:,} distinct values in {present:,} leads: an identifier or "
                "free text, not a category"
            )
            continue
        if distinct > config.max_categories:
            notes.append(
                f"{column}: bucketed, {distinct:,} distinct values: the {config.max_categories - 1} most "
                "frequent kept, the others grouped as other"
            )
        categorical.append(column)
    if "seniority" in categorical and not any(v is not None for v in canonical["seniority"]):
        notes.append("seniority: read from the job titles (no lead states it)")

    text = False
    texts = [t for t in canonical["description"] if t.strip()]
    minority = int(min(np.sum(y == 0), np.sum(y == 1)))
    if len(texts) < config.min_text_leads:
        notes.append(
            f"description: no text signal, {_plural(len(texts), 'lead')} of {n:,} have a description "
            f"(at least {config.min_text_leads} needed)"
        )
    elif minority < 5:
        notes.append("description: no text signal, fewer than 5 leads of one outcome to cross-fit it")
    else:
        from sklearn.feature_extraction.text import TfidfVectorizer

        try:
            TfidfVectorizer(ngram_range=(1, 2), min_df=3, max_features=10).fit(texts)
            text = True
        except ValueError:
            notes.append("description: no text signal, no term occurs in 3 or more descriptions")

    groups: dict[str, tuple[str, ...]] = {}
    for group in FACTOR_GROUPS:
        if group == OTHER_FIELDS:
            used = [c for c in (*attr_numeric, *attr_categorical) if c in numeric or c in categorical]
        elif group == "text_insights":
            used = ["description"] if text else []
        else:
            used = [c for c in (*numeric, *categorical) if _CORE_GROUP.get(c) == group]
            if group == "engagement" and _RATIO in numeric:
                used.append(_RATIO)
        groups[group] = tuple(used)
    spec = FeatureSpec(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        text=text,
        attr_numeric=tuple(c for c in attr_numeric if c in numeric),
        attr_categorical=tuple(c for c in attr_categorical if c in categorical),
        groups={g: c for g, c in groups.items() if c},
    )
    if spec.groups_without_inputs:
        notes.append(
            "factor groups without inputs (their factors say so, after the groups with inputs): "
            + ", ".join(spec.groups_without_inputs)
        )
    return spec, notes


def _type_attributes(frame: pd.DataFrame, config: LeadModelConfig) -> tuple[list[str], list[str], list[str]]:
    """Custom fields typed from their values: numeric when at least ``numeric_share`` of the values
    are numbers (booleans are categories); returns numeric, categorical ``attr_*`` columns and notes."""
    numeric: list[str] = []
    categorical: list[str] = []
    notes: list[str] = []
    for name in _attribute_names(frame):
        column = f"{ATTRIBUTE_PREFIX}{name}"
        values = [v for v in _raw_attribute_values(frame, name) if to_category(v) is not None]
        if not values:
            categorical.append(column)  # dropped with its note by _select_features
            continue
        numbers = sum(not isinstance(v, bool | np.bool_) and not math.isnan(to_number(v)) for v in values)
        if numbers >= config.numeric_share * len(values):
            numeric.append(column)
            if numbers < len(values):
                notes.append(
                    f"{column}: numeric, {_plural(len(values) - numbers, 'value')} that "
                    f"{'is' if len(values) - numbers == 1 else 'are'} not a number count as missing"
                )
        else:
            categorical.append(column)
    return numeric, categorical, notes


def _mode(values: Sequence[Any]) -> Any:
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return None
    best = max(counts.values())
    return min(str(v) for v, c in counts.items() if c == best)


# ---------------------------------------------------------------------------------------------
# The trained model


@dataclass
class LeadScoringModel:
    """A fitted lead model plus what it needs to explain itself. Picklable."""

    pipeline: Any
    attribute_numeric: list[str]
    attribute_categorical: list[str]
    reference: dict[str, Any]  # the typical lead (a lead record): numeric medians, most common values
    config: LeadModelConfig
    feature_schema: dict[str, str]  # input column -> kind, for semantic versioning and drift
    kind: str = "model"
    feature_notes: list[str] = field(default_factory=list)  # what training decided about each field
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    reference_features: dict[str, Any] = field(default_factory=dict)  # the reference lead, model frame
    # a model pickled before the schema-driven features (no ``spec``): scored by its original
    # featurization (``_legacy_*``), served by the pandas path
    legacy: ClassVar[bool] = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "spec" not in state:
            self.__dict__.update(
                feature_notes=[
                    "trained before schema-driven features: scored with its original featurization"
                ],
                spec=FeatureSpec(),
                reference_features={},
                legacy=True,
            )

    @property
    def factor_inputs(self) -> dict[str, list[str]]:
        """The model-frame columns of every factor group (empty: the group has no inputs)."""
        return {g: list(self.spec.groups.get(g, ())) for g in FACTOR_GROUPS}

    def _frames(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
        canonical = _canonical_frame(leads, self.spec.attr_numeric, self.spec.attr_categorical)
        return canonical, _model_frame(canonical, self.spec)

    def predict_proba(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        if self.legacy:
            return _legacy_proba(self, leads)
        _, frame = self._frames(leads)
        if len(frame) == 0:
            return np.zeros(0)
        return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=float)

    def explain(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], top: int = 3) -> list[list[Factor]]:
        if self.legacy:
            return _legacy_explain(self, leads, top)
        canonical, frame = self._frames(leads)
        n = len(frame)
        if n == 0:
            return []
        variants = [frame]
        for _, columns in self.spec.variants():
            masked = frame.copy()
            for column in columns:
                value = self.reference_features[column]
                masked[column] = pd.Series([value] * n, index=frame.index, dtype=frame[column].dtype)
            variants.append(masked)
        stacked = pd.concat(variants, ignore_index=True)
        probabilities = self.pipeline.predict_proba(stacked)[:, 1].reshape(len(variants), n)
        return occlusion_factors(self.spec, probabilities, records(canonical), top)

    def predict(
        self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], explain: bool = True
    ) -> list[dict[str, Any]]:
        return predict(self, leads, explain=explain)


def _legacy_design(
    model: LeadScoringModel, leads: pd.DataFrame | Sequence[Mapping[str, Any]]
) -> pd.DataFrame:
    """The featurization of models pickled before schema-driven features (their pipelines expect it)."""
    frame = leads_frame(leads).reset_index(drop=True)
    for column in (*model.attribute_numeric, *model.attribute_categorical):
        if column not in frame.columns:
            frame[column] = None
    for column in model.attribute_numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in model.attribute_categorical:
        frame[column] = pd.Series(
            [np.nan if v is None or pd.isna(v) else str(v) for v in frame[column]],
            index=frame.index,
            dtype=object,
        )
    return frame


def _legacy_engineered(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["seniority"] = [seniority_of(s, t) for s, t in zip(out["seniority"], out["job_title"], strict=True)]
    for column in _LOG_COLUMNS:
        out[column] = np.log1p(pd.to_numeric(out[column], errors="coerce").astype(float).clip(lower=0))
    visits = out["website_visits"]
    out["pages_per_visit"] = out["pages_viewed"] / visits.where(visits > 0)
    return out


def _legacy_proba(model: LeadScoringModel, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
    frame = _legacy_design(model, leads)
    if len(frame) == 0:
        return np.zeros(0)
    return np.asarray(model.pipeline.predict_proba(_legacy_engineered(frame))[:, 1], dtype=float)


def _legacy_explain(
    model: LeadScoringModel, leads: pd.DataFrame | Sequence[Mapping[str, Any]], top: int
) -> list[list[Factor]]:
    """The six groups occluded as before, except that a column without a typical value (no values in
    training) is left as it is instead of failing; a group with none of those has no inputs."""
    frame = _legacy_design(model, leads)
    n = len(frame)
    if n == 0:
        return []
    groups = [g for g in RULE_WEIGHTS if any(model.reference.get(c) is not None for c in FACTOR_GROUPS[g])]
    variants = [frame]
    for group in groups:
        masked = frame.copy()
        for column in FACTOR_GROUPS[group]:
            value = model.reference.get(column)
            if value is not None:
                masked[column] = pd.Series([value] * n, index=frame.index, dtype=object).infer_objects()
        variants.append(masked)
    stacked = pd.concat(variants, ignore_index=True)
    probabilities = model.pipeline.predict_proba(_legacy_engineered(stacked))[:, 1].reshape(len(variants), n)
    without = tuple(g for g in FACTOR_GROUPS if g not in groups)
    return [
        rank_factors(
            {g: float(probabilities[0][i] - probabilities[k][i]) for k, g in enumerate(groups, start=1)},
            row,
            top,
            without_inputs=without,
        )
        for i, row in enumerate(records(frame))
    ]


def occlusion_factors(
    spec: FeatureSpec, probabilities: np.ndarray, rows: Sequence[Mapping[str, Any]], top: int = 3
) -> list[list[Factor]]:
    """Top factors per lead from occlusion probabilities, shape ``(1 + len(spec.variants()), len(rows))``:
    row 0 is each lead as it is, the others each lead with one variant's columns at the reference."""
    base = probabilities[0]
    variants = spec.variants()
    without = spec.groups_without_inputs
    out = []
    for i, row in enumerate(rows):
        impacts: dict[str, float] = {}
        fields: dict[str, float] = {}
        for k, (name, _) in enumerate(variants, start=1):
            impact = float(base[i] - probabilities[k][i])
            (fields if name.startswith(ATTRIBUTE_PREFIX) else impacts)[name] = impact
        custom_field = None
        if OTHER_FIELDS in impacts:
            if not fields:
                custom_field = spec.groups[OTHER_FIELDS][0]
            else:
                sign = math.copysign(1.0, impacts[OTHER_FIELDS])
                same = {c: v for c, v in fields.items() if v * sign > 0}
                pool = same or fields
                custom_field = max(pool, key=lambda c: abs(pool[c]))  # first of equal ones (spec order)
        out.append(rank_factors(impacts, row, top, without_inputs=without, custom_field=custom_field))
    return out


def _time_order(frame: pd.DataFrame) -> np.ndarray:
    """Row positions oldest first (by ``created_at`` when the leads have it, else as given)."""
    if "created_at" not in frame.columns:
        return np.arange(len(frame))
    created = pd.to_datetime(frame["created_at"], utc=True, errors="coerce", format="mixed")
    return np.asarray(created.reset_index(drop=True).sort_values(kind="stable", na_position="last").index)


def train(
    leads: pd.DataFrame, labels: Sequence[bool] | np.ndarray, config: LeadModelConfig | None = None
) -> LeadScoringModel:
    """Fit the model on leads with known outcomes, from whatever fields those leads have."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    config = config or LeadModelConfig()
    y = np.asarray(labels, dtype=int)
    if len(y) != len(leads):
        raise ValueError(f"{len(leads)} leads but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError("training needs both converted and not-converted leads")
    frame = _as_frame(leads).reset_index(drop=True)
    order = _time_order(frame)
    frame, y = frame.iloc[order].reset_index(drop=True), y[order]

    attr_numeric, attr_categorical, notes = _type_attributes(frame, config)
    canonical = _canonical_frame(frame, attr_numeric, attr_categorical)
    spec, selection_notes = _select_features(canonical, attr_numeric, attr_categorical, y, config)
    notes.extend(selection_notes)
    if not spec.numeric and not spec.categorical and not spec.text:
        raise ValueError(
            "no usable lead field: every field is missing, constant or an identifier in the training "
            "leads (" + "; ".join(notes) + ")"
        )

    transformers: list[tuple[str, Any, list[str]]] = []
    if spec.numeric:
        transformers.append(
            ("numeric", SimpleImputer(strategy="median", add_indicator=True), list(spec.numeric))
        )
    if spec.categorical:
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            min_frequency=config.min_category_leads,
            max_categories=config.max_categories,
            sparse_output=False,
        )
        transformers.append(("categorical", encoder, list(spec.categorical)))
    if spec.text:
        transformers.append(
            ("text", TextSignal(config.text_max_features, random_state=config.random_state), ["description"])
        )
    classifier = LinearBoostedClassifier(
        learning_rate=config.learning_rate,
        max_iter=config.max_iter,
        max_leaf_nodes=config.max_leaf_nodes,
        min_samples_leaf=config.min_samples_leaf,
        subsample=config.subsample,
        linear_c=config.linear_c,
        validation_share=config.validation_share,
        early_stopping_rounds=config.early_stopping_rounds,
        random_state=config.random_state,
    )
    pipeline = Pipeline([("features", ColumnTransformer(transformers)), ("model", classifier)])
    pipeline.fit(_model_frame(canonical, spec), y)
    notes.append(f"classifier: {classifier.describe()}")

    reference: dict[str, Any] = {}
    for column in (*NUMERIC_COLUMNS, *spec.attr_numeric):
        values = canonical[column].to_numpy(dtype=float)
        present = values[~np.isnan(values)]
        reference[column] = float(np.median(present)) if len(present) else None
    for column in (*CATEGORICAL_COLUMNS, "job_title", *spec.attr_categorical):
        reference[column] = _mode(list(canonical[column]))
    reference["description"] = ""
    reference_canonical = _canonical_frame([reference], spec.attr_numeric, spec.attr_categorical)
    reference_features = records(_model_frame(reference_canonical, spec))[0]

    schema = dict.fromkeys((c for c in spec.numeric if c != _RATIO), "numeric")
    schema |= dict.fromkeys(spec.categorical, "categorical")
    if spec.text:
        schema["description"] = "text"
    return LeadScoringModel(
        pipeline=pipeline,
        attribute_numeric=list(spec.attr_numeric),
        attribute_categorical=list(spec.attr_categorical),
        reference=reference,
        config=config,
        feature_schema=schema,
        feature_notes=notes,
        spec=spec,
        reference_features=reference_features,
    )


Scorer = LeadScoringModel | RuleScorer | BaseRateScorer


def predict(
    scorer: Scorer,
    leads: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    explain: bool = True,
) -> list[dict[str, Any]]:
    """Score leads: probability, 0-100 score, tier and (optionally) the top-3 factors each."""
    probabilities = scorer.predict_proba(leads)
    _check_finite(probabilities)
    factors = scorer.explain(leads) if explain else [[] for _ in probabilities]
    return _results(probabilities, factors)


def _check_finite(probabilities: np.ndarray) -> None:
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("the model returned a non-finite probability")


def _results(probabilities: np.ndarray, factors: Sequence[Sequence[Factor]]) -> list[dict[str, Any]]:
    return [
        {
            "probability": round(float(p), 4),
            "score": round(100 * float(p)),
            "tier": tier_of(float(p)),
            "factors": [f.as_dict() for f in fs],
        }
        for p, fs in zip(probabilities, factors, strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# The lean prediction path for serving
#
# ``compile_scorer`` reads the fitted pipeline once (imputer medians and missing indicators, one-hot
# categories with the infrequent/unknown rule, the description's TF-IDF + logistic regression) and turns
# plain dict records straight into the design matrix the classifier was fitted on: no pandas and no
# ColumnTransformer per request. Records go through the same scalar conversions as the pandas path
# (``to_number``, ``to_category``, ``to_text``). Occlusion happens on that matrix: the leads and their
# occluded variants go to the classifier in one call per chunk. Before it is returned, the lean scorer
# is checked against the original path on synthetic leads (``check_lean_scorer``).

SELF_CHECK_TOLERANCE = 1e-9
_EXACT_INT = 2**53
_STRING_COLUMNS = (*CATEGORICAL_COLUMNS, *TEXT_COLUMNS)
_EXPLAIN_CHUNK = 1_024

logger = logging.getLogger(__name__)


class LeanScorerError(ValueError):
    """The lean path cannot reproduce a scorer exactly: an unsupported pipeline, or the self-check failed.

    Serve with ``predict(scorer, ...)`` instead (slower, and by definition the reference answer).
    """


class _NotPlain(Exception):
    """A record value the lean rule path leaves to the original path (e.g. a number sent as a string)."""


def _plain_number(value: Any) -> float:
    """A JSON number or null as the float the pandas path makes of it (NaN when missing)."""
    if value is None:
        return math.nan
    if isinstance(value, float):
        if math.isinf(value):
            raise _NotPlain
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _EXACT_INT:
        return float(value)
    raise _NotPlain  # strings, booleans, huge integers: pandas' coercion rules decide


def _plain_text(value: Any) -> str | None:
    """A JSON string or null (a float NaN counts as null, as in the pandas path)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    raise _NotPlain


def _plain_rule_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One record as ``records(leads_frame([record]))`` gives the rule scorer's input columns. Raises
    ``_NotPlain`` for anything else."""
    row: dict[str, Any] = {column: _plain_number(record.get(column)) for column in NUMERIC_COLUMNS}
    for column in _STRING_COLUMNS:
        row[column] = _plain_text(record.get(column))
    return row


@dataclass(frozen=True)
class _OneHot:
    """One categorical input column of the fitted one-hot encoder, as design-matrix columns."""

    name: str
    columns: dict[str, int]  # category -> design column (infrequent categories share one column)
    unknown: int | None  # design column for a category unseen in training (the infrequent one), if any


@dataclass(frozen=True)
class _DesignPlan:
    """How canonical rows become the classifier's design matrix, read from a fitted ``LeadScoringModel``."""

    width: int
    spec: FeatureSpec
    numeric: tuple[str, ...]  # the numeric transformer's input columns, in order
    numeric_fill: np.ndarray  # imputer medians, one per numeric input column
    numeric_kept: np.ndarray  # numeric input columns that are output (all-missing ones are dropped)
    numeric_indicators: np.ndarray  # numeric input columns with a missing-value indicator
    numeric_start: int
    one_hot: tuple[_OneHot, ...]
    text_column: int | None
    text_vectorizer: Any  # TextSignal.model_'s fitted TfidfVectorizer ...
    text_weights: (
        tuple[np.ndarray, np.ndarray] | None
    )  # ... and its logistic regression's coef_.T, intercept_
    classifier: Any  # the fitted classifier
    reference: np.ndarray  # the design vector of the reference lead
    variant_columns: tuple[np.ndarray, ...]  # design columns of each occlusion variant (spec.variants())


def _unsupported(what: str) -> LeanScorerError:
    return LeanScorerError(f"the lean path does not support this lead model: {what}")


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _design_plan(model: LeadScoringModel) -> _DesignPlan:
    """Read the fitted pipeline's learned parameters; raise ``LeanScorerError`` for any step it would not
    reproduce exactly (the numbers are then checked by ``check_lean_scorer``)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    spec = model.spec
    pipeline = model.pipeline
    if type(pipeline) is not Pipeline or len(pipeline.steps) != 2:
        raise _unsupported("expected a two-step Pipeline (features, model)")
    features, classifier = pipeline.steps[0][1], pipeline.steps[1][1]
    if type(features) is not ColumnTransformer or not hasattr(classifier, "predict_proba"):
        raise _unsupported("expected a ColumnTransformer and a probabilistic classifier")
    if getattr(features, "sparse_output_", False):
        raise _unsupported("sparse ColumnTransformer output")
    slices: dict[str, slice] = features.output_indices_
    width = max((s.stop for s in slices.values()), default=0)
    design_columns: dict[str, list[int]] = {}

    def claim(column: str, columns: Sequence[int]) -> None:
        design_columns.setdefault(column, []).extend(columns)

    numeric_plan: tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, int] | None = None
    one_hot: list[_OneHot] = []
    text_column: int | None = None
    text_steps: list[Any] = []
    for name, transformer, selected in features.transformers_:
        out = slices[name]
        if name == "remainder":
            if transformer != "drop":
                raise _unsupported("the remainder columns are not dropped")
            continue
        columns = [str(c) for c in selected]
        if type(transformer) is SimpleImputer and numeric_plan is None:
            if columns != list(spec.numeric) or not _is_nan(transformer.missing_values):
                raise _unsupported(f"numeric columns {columns} or missing_values")
            if transformer.keep_empty_features or transformer.strategy != "median":
                raise _unsupported("SimpleImputer other than median without empty features")
            fill = np.array(transformer.statistics_, dtype=float)
            kept = np.flatnonzero(~np.isnan(fill))
            indicator = transformer.indicator_
            indicators = (
                np.asarray(indicator.features_, dtype=int) if indicator is not None else np.zeros(0, int)
            )
            if out.stop - out.start != len(kept) + len(indicators):
                raise _unsupported("numeric output width")
            for position, index in enumerate(kept):
                claim(columns[index], [out.start + position])
            for position, index in enumerate(indicators):
                claim(columns[index], [out.start + len(kept) + position])
            numeric_plan = (tuple(columns), fill, kept, indicators, out.start)
        elif type(transformer) is OneHotEncoder and not one_hot:
            encoder = transformer
            if columns != list(spec.categorical):
                raise _unsupported(f"categorical columns {columns}")
            if encoder.drop is not None or encoder.handle_unknown not in ("infrequent_if_exist", "ignore"):
                raise _unsupported(
                    f"OneHotEncoder(drop={encoder.drop!r}, handle_unknown={encoder.handle_unknown!r})"
                )
            if np.dtype(encoder.dtype) != np.float64:
                raise _unsupported(f"OneHotEncoder(dtype={encoder.dtype!r})")
            start = out.start
            for column, fitted, infrequent in zip(
                columns, encoder.categories_, encoder.infrequent_categories_, strict=True
            ):
                categories = list(fitted)
                if any(not isinstance(c, str) for c in categories):
                    raise _unsupported(f"non-string categories in {column!r}")
                rare = set() if infrequent is None else set(infrequent)
                frequent = [c for c in categories if c not in rare]
                lookup = {c: start + i for i, c in enumerate(frequent)}
                rare_column = start + len(frequent) if rare else None
                if rare_column is not None:
                    lookup |= dict.fromkeys(rare, rare_column)
                unknown_column = rare_column if encoder.handle_unknown == "infrequent_if_exist" else None
                n_out = len(frequent) + (1 if rare else 0)
                one_hot.append(_OneHot(column, lookup, unknown_column))
                claim(column, range(start, start + n_out))
                start += n_out
            if start != out.stop:
                raise _unsupported("one-hot output width")
        elif type(transformer) is TextSignal and columns == ["description"] and text_column is None:
            if out.stop - out.start != 1:
                raise _unsupported("text output width")
            text_column, text_steps = out.start, [step for _, step in transformer.model_.steps]
            if [type(step) for step in text_steps] != [TfidfVectorizer, LogisticRegression] or (
                np.shape(text_steps[1].coef_)[0] != 1
            ):
                raise _unsupported("TextSignal is not a binary TF-IDF + logistic regression")
            claim("description", [out.start])
        else:
            raise _unsupported(f"transformer {name!r} ({type(transformer).__name__})")
    if (numeric_plan is None) != (not spec.numeric) or (not one_hot) != (not spec.categorical):
        raise _unsupported("the pipeline's transformers do not match the model's features")
    if (text_column is None) == spec.text:
        raise _unsupported("the text transformer does not match the model's features")
    numeric, fill, kept, indicators, numeric_start = numeric_plan or (
        (),
        np.zeros(0),
        np.zeros(0, int),
        np.zeros(0, int),
        0,
    )
    plan = _DesignPlan(
        width=width,
        spec=spec,
        numeric=numeric,
        numeric_fill=fill,
        numeric_kept=kept,
        numeric_indicators=indicators,
        numeric_start=numeric_start,
        one_hot=tuple(one_hot),
        text_column=text_column,
        text_vectorizer=text_steps[0] if text_steps else None,
        text_weights=(np.array(text_steps[1].coef_).T, np.array(text_steps[1].intercept_))
        if text_steps
        else None,
        classifier=classifier,
        reference=np.zeros(0),
        variant_columns=tuple(
            np.asarray(sorted(i for c in columns for i in design_columns.get(c, [])), dtype=int)
            for _, columns in spec.variants()
        ),
    )
    reference = _design_matrix(plan, [_canonical_row(model.reference, spec)])[0]
    return dataclasses.replace(plan, reference=reference)


def _design_matrix(plan: _DesignPlan, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Canonical rows -> the matrix ``pipeline.named_steps['features'].transform`` would produce."""
    n = len(rows)
    design = np.zeros((n, plan.width))
    if plan.numeric:
        numbers: list[np.ndarray] = []
        for column in plan.numeric:
            if column == _RATIO:
                pages = np.array([row["pages_viewed"] for row in rows], dtype=float)
                visits = np.array([row["website_visits"] for row in rows], dtype=float)
                numbers.append(_ratio(pages, visits))
            else:
                values = np.array([row[column] for row in rows], dtype=float)
                if column in _LOG_COLUMNS:  # as _engineered_numbers: log1p(clip(lower=0)), NaN kept
                    values = np.log1p(np.where(values < 0, 0.0, values))
                numbers.append(values)
        raw = np.column_stack(numbers)
        missing = np.isnan(raw)
        start, n_kept = plan.numeric_start, len(plan.numeric_kept)
        design[:, start : start + n_kept] = np.where(missing, plan.numeric_fill, raw)[:, plan.numeric_kept]
        design[:, start + n_kept : start + n_kept + len(plan.numeric_indicators)] = missing[
            :, plan.numeric_indicators
        ]
    for encoding in plan.one_hot:
        for i, row in enumerate(rows):
            if encoding.name == "seniority":
                value = seniority_of(row["seniority"], row["job_title"])
            else:
                value = row[encoding.name]
            target = encoding.columns.get(MISSING_CATEGORY if value is None else value, encoding.unknown)
            if target is not None:
                design[i, target] = 1.0
    if plan.text_column is not None and plan.text_weights is not None:
        texts = [row["description"] for row in rows]
        unique = list(dict.fromkeys(texts))
        # LogisticRegression.decision_function without its per-call input validation: X @ coef_.T + intercept_
        coef_t, intercept = plan.text_weights
        scores = np.asarray(plan.text_vectorizer.transform(unique) @ coef_t) + intercept
        signal = dict(zip(unique, scores.reshape(-1).astype(float), strict=True))
        design[:, plan.text_column] = [signal[t] for t in texts]
    return design


class LeanLeadScorer:
    """A compiled ``LeadScoringModel``, ``RuleScorer`` or ``BaseRateScorer`` for the request path (see
    ``compile_scorer``).

    ``predict(records, explain=...)`` returns exactly what ``predict(scorer, records, explain=...)``
    returns. Records are plain dicts as parsed from JSON (lead columns, an optional ``attributes``
    dict; a missing key is null). The model path reads any record (the same scalar conversions as the
    pandas path); for the rule scorer, a batch holding a value outside plain JSON types (a number sent
    as a string, a boolean, ...) is answered by the original path, whose pandas coercions decide such
    cases; ``fallbacks`` counts those batches.
    """

    def __init__(self, scorer: Scorer, plan: _DesignPlan | None) -> None:
        self.scorer = scorer
        self.kind = scorer.kind
        self.fallbacks = 0
        self._plan = plan

    def predict(self, records: Sequence[Mapping[str, Any]], explain: bool = True) -> list[dict[str, Any]]:
        rows = self._plain_rows(records)
        if rows is None:
            self.fallbacks += 1
            logger.debug("lean lead scorer: a non-plain record, batch scored by the original path")
            return predict(self.scorer, list(records), explain=explain)
        probabilities, factors = self._score(rows, explain)
        return _results(probabilities, factors)

    def predict_proba(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        rows = self._plain_rows(records)
        if rows is None:
            self.fallbacks += 1
            return self.scorer.predict_proba(list(records))
        return self._score(rows, explain=False)[0]

    def _plain_rows(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
        if self._plan is not None:
            spec = self._plan.spec
            return [_canonical_row(r, spec) for r in records]
        if isinstance(self.scorer, BaseRateScorer):
            return [{} for _ in records]
        if isinstance(self.scorer, LeadScoringModel):
            return None  # a legacy model: its original path answers
        try:
            return [_plain_rule_row(r) for r in records]
        except _NotPlain:
            return None

    def _score(
        self, rows: Sequence[Mapping[str, Any]], explain: bool
    ) -> tuple[np.ndarray, list[list[Factor]]]:
        """Probabilities and (when ``explain``) the top-3 factors of plain rows."""
        n = len(rows)
        if n == 0:
            return np.zeros(0), []
        scorer = self.scorer
        if isinstance(scorer, BaseRateScorer):
            factor = Factor("base_rate", "+", 0.0, scorer.text())
            return np.full(n, scorer.base_rate), [[factor] if explain else [] for _ in range(n)]
        if self._plan is None:
            assert isinstance(scorer, RuleScorer)
            probabilities = np.array([scorer.row_probability(row) for row in rows], dtype=float)
            _check_finite(probabilities)
            return probabilities, [scorer.row_factors(row) if explain else [] for row in rows]
        plan = self._plan
        if not explain:
            scored = np.asarray(plan.classifier.predict_proba(_design_matrix(plan, rows))[:, 1], dtype=float)
            _check_finite(scored)
            return scored, [[] for _ in range(n)]
        probabilities_out: list[np.ndarray] = []
        factors: list[list[Factor]] = []
        for start in range(0, n, _EXPLAIN_CHUNK):
            chunk = rows[start : start + _EXPLAIN_CHUNK]
            m = len(chunk)
            design = _design_matrix(plan, chunk)
            # the leads, then each occlusion variant at the reference: one classifier call per chunk
            design = np.tile(design, (1 + len(plan.variant_columns), 1))
            for k, columns in enumerate(plan.variant_columns, start=1):
                design[k * m : (k + 1) * m, columns] = plan.reference[columns]
            scored = np.asarray(plan.classifier.predict_proba(design)[:, 1], dtype=float)
            _check_finite(scored[:m])
            probabilities_out.append(scored[:m])
            factors.extend(occlusion_factors(plan.spec, scored.reshape(-1, m), chunk))
        return np.concatenate(probabilities_out), factors


def compile_scorer(
    scorer: Scorer, *, check_records: Sequence[Mapping[str, Any]] | None = None
) -> LeanLeadScorer:
    """The lean request-path scorer for ``scorer``, verified against the original path.

    Raises ``LeanScorerError`` when the pipeline has a step the lean path does not reproduce, or when on
    the self-check leads (``self_check_records(scorer)``, plus ``check_records`` if given) a probability
    or a factor impact differs by more than ``SELF_CHECK_TOLERANCE`` or a factor differs at all. There is
    no silent fallback: on that error, serve with ``predict(scorer, ...)``.
    """
    if type(scorer) is RuleScorer or type(scorer) is BaseRateScorer:
        lean = LeanLeadScorer(scorer, None)
    elif type(scorer) is LeadScoringModel and scorer.legacy:
        return LeanLeadScorer(scorer, None)  # every batch through ``predict`` (counted in ``fallbacks``)
    elif type(scorer) is LeadScoringModel:
        lean = LeanLeadScorer(scorer, _design_plan(scorer))
    else:
        raise LeanScorerError(f"no lean path for {type(scorer).__name__}")
    check_lean_scorer(lean, scorer, [*self_check_records(scorer), *(check_records or [])])
    return lean


def check_lean_scorer(lean: LeanLeadScorer, scorer: Scorer, leads: Sequence[Mapping[str, Any]]) -> float:
    """Score ``leads`` both ways; raise ``LeanScorerError`` on any difference. Returns the largest
    probability or impact difference seen."""
    leads = list(leads)
    rows = lean._plain_rows(leads)
    if rows is None:
        raise LeanScorerError("the self-check leads must be plain JSON-like records")
    try:
        expected = np.asarray(scorer.predict_proba(leads), dtype=float)
        expected_factors = scorer.explain(leads)
    except Exception as exc:
        raise LeanScorerError(f"the original path failed on the self-check leads: {exc!r}") from exc
    try:
        got, got_factors = lean._score(rows, explain=True)
    except Exception as exc:
        raise LeanScorerError(f"the lean path failed on the self-check leads: {exc!r}") from exc
    worst = float(np.max(np.abs(expected - got), initial=0.0))
    if not worst <= SELF_CHECK_TOLERANCE:
        i = int(np.nanargmax(np.abs(expected - got)))
        raise LeanScorerError(
            f"lean and original probabilities differ by {worst:.3g} (lead {i}: {got[i]!r} vs "
            f"{expected[i]!r}); lead: {leads[i]!r}"
        )
    for i, (want, have) in enumerate(zip(expected_factors, got_factors, strict=True)):
        same = [(f.group, f.direction, f.text) for f in want] == [
            (f.group, f.direction, f.text) for f in have
        ]
        gap = max((abs(a.impact - b.impact) for a, b in zip(want, have, strict=False)), default=0.0)
        worst = max(worst, gap)
        if not same or not gap <= SELF_CHECK_TOLERANCE:
            raise LeanScorerError(
                f"lean and original factors differ for lead {i}: {[f.as_dict() for f in have]} vs "
                f"{[f.as_dict() for f in want]}; lead: {leads[i]!r}"
            )
    return worst


_CHECK_TITLES = (
    "Chief Executive Officer", "VP of Sales", "Head of Data", "Sales Manager", "Team Lead", "Analyst",
    None, "", "  ",
)  # fmt: skip
_CHECK_DESCRIPTIONS = (
    "",
    None,
    "Asked for a quote and pricing; the contract is ready to sign",
    "Not interested: a student project, no budget",
    "Requested a demo and a trial, we are on the shortlist",
    "Happy with their current vendor.",
    "Connected on LinkedIn after the February event.",
    "onboard implementation references case study " * 8,
    42,
)
_CHECK_SCALES = (1.0, None, 0.0, 0.5, 2.0, 10.0, -1.0, 3.7)
_CHECK_ODD_NUMBERS = ("12", " 7.5 ", "n/a", True, False, float("inf"), float("nan"), 10**30)
_CHECK_ODD_CATEGORIES = (5, 5.0, 2.5, True, "  padded  ", float("nan"), {"nested": 1})
_UNSEEN = "__unseen_category__"


def _unique(values: Sequence[Any]) -> list[Any]:
    """Values without repeats (5, 5.0 and True are different values here)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for value in values:
        key = (type(value).__name__, repr(value))
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def self_check_records(scorer: Scorer) -> list[dict[str, Any]]:
    """Synthetic leads that exercise every branch of featurization: the reference lead, an empty lead,
    every known category of every categorical column (including rare and missing ones), unseen
    categories, seniority read from titles, missing / zero / negative / large numbers, numbers sent as
    text or booleans, empty and cue-laden descriptions, custom attributes present, missing, unseen,
    sent without a dict or as ``attr_*`` keys."""
    if isinstance(scorer, LeadScoringModel):
        reference = dict(scorer.reference)
        attr_numeric, attr_categorical = scorer.spec.attr_numeric, scorer.spec.attr_categorical
        categories: dict[str, list[Any]] = {c: [] for c in (*CATEGORICAL_COLUMNS, *attr_categorical)}
        for encoding in _design_plan(scorer).one_hot:
            categories.setdefault(encoding.name, []).extend(encoding.columns)
        odd_numbers: tuple[Any, ...] = _CHECK_ODD_NUMBERS
        odd_categories: tuple[Any, ...] = _CHECK_ODD_CATEGORIES
    else:
        reference, attr_numeric, attr_categorical = {}, (), ()
        tables = {"industry": _INDUSTRY_FIT, "seniority": _SENIORITY_FIT, "timeline": _TIMELINE_FIT}
        tables |= {"budget_signal": _BUDGET_FIT}
        categories = {c: list(tables.get(c, {})) for c in CATEGORICAL_COLUMNS}
        odd_numbers, odd_categories = (), ()
    titles = [*_CHECK_TITLES, reference.get("job_title"), *categories.pop("job_title", [])]
    cycles: dict[str, list[Any]] = {}
    for column, values in categories.items():
        sent = [None if v == MISSING_CATEGORY else v for v in values]
        cycles[column] = _unique([*sent, None, _UNSEEN, "", *odd_categories])
    for column in (*NUMERIC_COLUMNS, *attr_numeric):
        base = reference.get(column)
        base = 10.0 if not isinstance(base, int | float) or math.isnan(base) else float(base)
        cycles[column] = [None if s is None else base * s for s in _CHECK_SCALES]
        cycles[column].append(round(base))  # an integer, as JSON would send it
        cycles[column].extend(odd_numbers)
    cycles["job_title"] = _unique(
        [None if t == MISSING_CATEGORY else t for t in titles] + [_UNSEEN, *odd_categories]
    )
    cycles["description"] = list(_CHECK_DESCRIPTIONS if odd_numbers else _CHECK_DESCRIPTIONS[:-1])
    length = max(len(v) for v in cycles.values())
    attributes_of_reference = {
        c.removeprefix(ATTRIBUTE_PREFIX): reference.get(c) for c in (*attr_numeric, *attr_categorical)
    }
    out: list[dict[str, Any]] = [
        {c: reference.get(c) for c in INPUT_COLUMNS} | {"attributes": attributes_of_reference},
        {},
        {"attributes": "not a dict", "seniority": None, "job_title": "CTO"},
    ]
    if attr_numeric or attr_categorical:
        # the reference lead with its custom fields as attr_* keys (as ``model.reference`` holds them)
        out.append({c: reference.get(c) for c in (*INPUT_COLUMNS, *attr_numeric, *attr_categorical)})
    for i in range(length):
        lead: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        for j, (column, values) in enumerate(cycles.items()):
            value = values[(i + j) % len(values)]
            if column.startswith(ATTRIBUTE_PREFIX):
                attributes[column.removeprefix(ATTRIBUTE_PREFIX)] = value
            else:
                lead[column] = value
        out.append(lead | {"attributes": attributes})
        if i % 4 == 3:  # and some leads without any attributes
            out.append(lead)
        if i % 5 == 4 and attributes:  # and some with their custom fields as attr_* keys
            out.append(lead | {f"{ATTRIBUTE_PREFIX}{k}": v for k, v in attributes.items()})
    return out
