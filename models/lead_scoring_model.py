"""Lead scoring: the probability that a lead converts, a 0-100 score, a tier and the top-3 factors.

Two scorers share one output shape:
- ``RuleScorer``: the hand-weighted six-factor scorer (industry 20, company size 15, engagement 25,
  decision maker 15, urgency 10, text insights 5, normalised). It needs no training; it is the
  baseline every trained version must beat and the fallback when no model can answer.
- ``LeadScoringModel``: a scikit-learn pipeline (median imputation with missing-value indicators,
  one-hot encoding with rare categories grouped, a text signal learned from the description,
  custom attribute columns when present) feeding gradient boosting, with calibrated probabilities.

Factors are explained per lead by occlusion: each of the six factor groups in turn is set to the
training population's typical value, and the change in probability is that group's contribution.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

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

# ---------------------------------------------------------------------------------------------
# Input handling


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts keyed by column name."""
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def leads_frame(leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Lead records (DataFrame or dicts with the ``leads`` columns) as a frame with every input column.

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
            frame[f"attr_{name}"] = attributes[name]
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in (*CATEGORICAL_COLUMNS, *TEXT_COLUMNS):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


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


def tier_of(probability: float) -> str:
    for name, threshold in TIERS:
        if probability >= threshold:
            return name
    return "cold"


@dataclass(frozen=True)
class Factor:
    group: str
    direction: str  # "+" raises the chance, "-" lowers it
    impact: float  # change in probability (model) or weighted factor (rules)
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "direction": self.direction,
            "impact": round(self.impact, 4),
            "text": self.text,
        }


def _fmt_int(value: Any) -> str:
    try:
        return f"{int(float(value)):,}"
    except (TypeError, ValueError):
        return "unknown"


def phrase_factor(group: str, positive: bool, row: Mapping[str, Any]) -> str:
    """A sentence a salesperson can act on, for one factor group of one lead."""
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
    text = str(row.get("description") or "").strip()
    snippet = (text[:60] + "...") if len(text) > 60 else text
    return f"Notes show buying intent: '{snippet}'" if positive else f"Notes suggest low intent: '{snippet}'"


@dataclass
class RuleScorer:
    """The hand-weighted six-factor scorer: baseline and fallback. Deterministic, no training."""

    weights: dict[str, float] = field(default_factory=lambda: dict(RULE_WEIGHTS))
    kind: str = "rules"

    def predict_proba(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        frame = leads_frame(leads)
        total = sum(self.weights.values())
        rows = records(frame)
        return np.array(
            [sum(self.weights[g] * s for g, s in rule_factor_scores(row).items()) / total for row in rows],
            dtype=float,
        )

    def explain(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], top: int = 3) -> list[list[Factor]]:
        frame = leads_frame(leads)
        out = []
        for row in records(frame):
            scores = rule_factor_scores(row)
            # impact: how far the weighted factor sits from a neutral 0.5
            impacts = {g: self.weights[g] * (s - 0.5) / sum(self.weights.values()) for g, s in scores.items()}
            ranked = sorted(impacts.items(), key=lambda kv: abs(kv[1]), reverse=True)[:top]
            out.append(
                [Factor(g, "+" if v >= 0 else "-", v, phrase_factor(g, v >= 0, row)) for g, v in ranked]
            )
        return out


# ---------------------------------------------------------------------------------------------
# The trained model


@dataclass(frozen=True)
class LeadModelConfig:
    learning_rate: float = 0.06
    max_iter: int = 300
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 40
    l2_regularization: float = 1.0
    rare_category_share: float = 0.01  # categories below this share are grouped as "infrequent"
    min_attribute_share: float = 0.2  # custom attributes present in fewer training rows are ignored
    calibration: str = "isotonic"  # or "sigmoid"; sigmoid is used below 2,000 training rows
    text_max_features: int = 2_000
    random_state: int = 0

    def as_params(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TextSignal(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Description text -> out-of-fold conversion log-odds from TF-IDF + logistic regression.

    ``fit_transform`` returns cross-fitted scores (no target leak into the booster); ``transform``
    uses the model fitted on all rows. Job titles are added as a second text signal.
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


def _engineered(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["seniority"] = [seniority_of(s, t) for s, t in zip(out["seniority"], out["job_title"], strict=True)]
    for column in ("company_employees", "company_revenue"):
        out[column] = np.log1p(out[column].clip(lower=0))
    visits = out["website_visits"]
    out["pages_per_visit"] = out["pages_viewed"] / visits.where(visits > 0)
    return out


@dataclass
class LeadScoringModel:
    """A fitted, calibrated lead model plus what it needs to explain itself. Picklable."""

    pipeline: Any
    attribute_numeric: list[str]
    attribute_categorical: list[str]
    reference: dict[str, Any]  # the typical lead: numeric medians and most common categories
    config: LeadModelConfig
    feature_schema: dict[str, str]  # input column -> kind, for semantic versioning and drift
    kind: str = "model"

    def _design(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        return _design_frame(leads_frame(leads), self.attribute_numeric, self.attribute_categorical)

    def predict_proba(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        frame = self._design(leads)
        return np.asarray(self.pipeline.predict_proba(_engineered(frame))[:, 1], dtype=float)

    def explain(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], top: int = 3) -> list[list[Factor]]:
        frame = self._design(leads).reset_index(drop=True)
        n = len(frame)
        if n == 0:
            return []
        variants = [frame]
        for columns in FACTOR_GROUPS.values():
            masked = frame.copy()
            for column in columns:
                masked[column] = self.reference.get(column)
            variants.append(masked)
        stacked = pd.concat(variants, ignore_index=True)
        probabilities = self.pipeline.predict_proba(_engineered(stacked))[:, 1].reshape(len(variants), n)
        base = probabilities[0]
        rows = records(frame)
        out = []
        for i, row in enumerate(rows):
            impacts = {g: float(base[i] - probabilities[k + 1][i]) for k, g in enumerate(FACTOR_GROUPS)}
            ranked = sorted(impacts.items(), key=lambda kv: abs(kv[1]), reverse=True)[:top]
            out.append(
                [Factor(g, "+" if v >= 0 else "-", v, phrase_factor(g, v >= 0, row)) for g, v in ranked]
            )
        return out


def _design_frame(frame: pd.DataFrame, attr_numeric: list[str], attr_categorical: list[str]) -> pd.DataFrame:
    """The frame with every custom attribute column the model uses, typed (numbers, or text)."""
    frame = frame.copy()
    for column in (*attr_numeric, *attr_categorical):
        if column not in frame.columns:
            frame[column] = None
    for column in attr_numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in attr_categorical:
        frame[column] = [None if v is None or pd.isna(v) else str(v) for v in frame[column]]
    return frame


def _attribute_columns(frame: pd.DataFrame, min_share: float) -> tuple[list[str], list[str]]:
    numeric: list[str] = []
    categorical: list[str] = []
    for column in (str(c) for c in frame.columns if c.startswith("attr_")):
        present = frame[column].notna()
        if present.mean() < min_share:
            continue
        values = pd.to_numeric(frame.loc[present, column], errors="coerce")
        (numeric if values.notna().all() else categorical).append(column)
    return sorted(numeric), sorted(categorical)


def train(
    leads: pd.DataFrame, labels: Sequence[bool] | np.ndarray, config: LeadModelConfig | None = None
) -> LeadScoringModel:
    """Fit the calibrated gradient-boosting pipeline on leads with known outcomes."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    config = config or LeadModelConfig()
    y = np.asarray(labels, dtype=int)
    if len(y) != len(leads):
        raise ValueError(f"{len(leads)} leads but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError("training needs both converted and not-converted leads")
    frame = leads_frame(leads)
    attr_numeric, attr_categorical = _attribute_columns(frame, config.min_attribute_share)
    numeric = [*NUMERIC_COLUMNS, "pages_per_visit", *attr_numeric]
    categorical = [*CATEGORICAL_COLUMNS, *attr_categorical]
    features = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median", add_indicator=True), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        min_frequency=config.rare_category_share,
                        sparse_output=False,
                    ),
                ),
                categorical,
            ),
            ("text", TextSignal(config.text_max_features, random_state=config.random_state), ["description"]),
        ]
    )
    booster = HistGradientBoostingClassifier(
        learning_rate=config.learning_rate,
        max_iter=config.max_iter,
        max_leaf_nodes=config.max_leaf_nodes,
        min_samples_leaf=config.min_samples_leaf,
        l2_regularization=config.l2_regularization,
        random_state=config.random_state,
    )
    method = config.calibration if len(y) >= 2_000 else "sigmoid"
    pipeline = Pipeline(
        [("features", features), ("model", CalibratedClassifierCV(booster, method=method, cv=3))]
    )
    pipeline.fit(_engineered(_design_frame(frame, attr_numeric, attr_categorical)), y)
    reference: dict[str, Any] = {}
    for column in (*NUMERIC_COLUMNS, *attr_numeric):
        median = pd.to_numeric(frame[column], errors="coerce").median()
        reference[column] = None if pd.isna(median) else float(median)
    for column in (*CATEGORICAL_COLUMNS, "job_title", *attr_categorical):
        mode = frame[column].dropna().mode()
        reference[column] = None if mode.empty else mode.iloc[0]
    reference["description"] = ""
    schema = dict.fromkeys((*NUMERIC_COLUMNS, *attr_numeric), "numeric")
    schema |= dict.fromkeys((*CATEGORICAL_COLUMNS, *attr_categorical), "categorical")
    schema |= dict.fromkeys(TEXT_COLUMNS, "text")
    return LeadScoringModel(pipeline, attr_numeric, attr_categorical, reference, config, schema)


def predict(
    scorer: LeadScoringModel | RuleScorer,
    leads: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    explain: bool = True,
) -> list[dict[str, Any]]:
    """Score leads: probability, 0-100 score, tier and (optionally) the top-3 factors each."""
    probabilities = scorer.predict_proba(leads)
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("the model returned a non-finite probability")
    factors = scorer.explain(leads) if explain else [[] for _ in probabilities]
    return [
        {
            "probability": round(float(p), 4),
            "score": round(100 * float(p)),
            "tier": tier_of(float(p)),
            "factors": [f.as_dict() for f in fs],
        }
        for p, fs in zip(probabilities, factors, strict=True)
    ]
