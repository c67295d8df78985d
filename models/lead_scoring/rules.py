"""The rule-based scorer (baseline and fallback), the base rate, and the choice between them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..pickling import LEAD_SCORING, pickled_as
from .factors import Factor, rank_factors
from .fields import FACTOR_GROUPS, leads_frame, records, seniority_of
from .scoring import predict

RULE_WEIGHTS: dict[str, float] = {
    "industry": 20,
    "company_size": 15,
    "engagement": 25,
    "decision_maker": 15,
    "urgency": 10,
    "text_insights": 5,
}


FALLBACK_MIN_AUC = 0.55  # the fitted rules serve as fallback only when they rank this well on a holdout


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


@pickled_as(LEAD_SCORING)
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


@pickled_as(LEAD_SCORING)
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
