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

``predict(scorer, leads)`` is the reference path (pandas frames through the fitted pipeline). For the
HTTP serving layer, ``compile_scorer(scorer)`` returns a ``LeanLeadScorer`` whose ``predict(records)``
gives the same answers from plain dict records without pandas, verified against ``predict`` when built.
"""

from __future__ import annotations

import dataclasses
import logging
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


def top_factors(impacts: Mapping[str, float], row: Mapping[str, Any], top: int = 3) -> list[Factor]:
    """The ``top`` groups by absolute impact (ties keep ``FACTOR_GROUPS`` order), phrased for ``row``."""
    ranked = sorted(impacts.items(), key=lambda kv: abs(kv[1]), reverse=True)[:top]
    return [Factor(g, "+" if v >= 0 else "-", v, phrase_factor(g, v >= 0, row)) for g, v in ranked]


@dataclass
class RuleScorer:
    """The hand-weighted six-factor scorer: baseline and fallback. Deterministic, no training."""

    weights: dict[str, float] = field(default_factory=lambda: dict(RULE_WEIGHTS))
    kind: str = "rules"

    def predict_proba(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.array([self.row_probability(row) for row in records(leads_frame(leads))], dtype=float)

    def explain(self, leads: pd.DataFrame | Sequence[Mapping[str, Any]], top: int = 3) -> list[list[Factor]]:
        return [self.row_factors(row, top) for row in records(leads_frame(leads))]

    def row_probability(self, row: Mapping[str, Any]) -> float:
        """The weighted factor score of one lead row (as ``records(leads_frame(...))`` yields it)."""
        total = sum(self.weights.values())
        return float(sum(self.weights[g] * s for g, s in rule_factor_scores(row).items()) / total)

    def row_factors(self, row: Mapping[str, Any], top: int = 3) -> list[Factor]:
        scores = rule_factor_scores(row)
        # impact: how far the weighted factor sits from a neutral 0.5
        impacts = {g: self.weights[g] * (s - 0.5) / sum(self.weights.values()) for g, s in scores.items()}
        return top_factors(impacts, row, top)


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
    # False: the calibrator is fitted on out-of-fold predictions and ONE booster, refitted on all rows,
    # answers at predict time (a third of the trees to evaluate). True: the 3 cv boosters are averaged.
    calibration_ensemble: bool = False
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
        return occlusion_factors(probabilities, records(frame), top)


def occlusion_factors(
    probabilities: np.ndarray, rows: Sequence[Mapping[str, Any]], top: int = 3
) -> list[list[Factor]]:
    """Top factors per lead from occlusion probabilities, shape ``(1 + len(FACTOR_GROUPS), len(rows))``:
    row 0 is each lead as it is, row ``k + 1`` the lead with factor group ``k`` set to the reference."""
    base = probabilities[0]
    out = []
    for i, row in enumerate(rows):
        impacts = {g: float(base[i] - probabilities[k + 1][i]) for k, g in enumerate(FACTOR_GROUPS)}
        out.append(top_factors(impacts, row, top))
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
        # object dtype with NaN for a missing value, whatever else is in the batch: the imputer fills NaN
        # (as in training) with "missing" but leaves None alone, and a list of only None (one lead without
        # the attribute) would otherwise stay None, so a lead's score depended on the other leads in its batch
        frame[column] = pd.Series(
            [np.nan if v is None or pd.isna(v) else str(v) for v in frame[column]],
            index=frame.index,
            dtype=object,
        )
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
        [
            ("features", features),
            (
                "model",
                CalibratedClassifierCV(booster, method=method, cv=3, ensemble=config.calibration_ensemble),
            ),
        ]
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
# categories with the infrequent/unknown rule, the description's TF-IDF + logistic regression, the
# engineered columns) and turns plain dict records straight into the design matrix the classifier
# was fitted on: no pandas and no ColumnTransformer per request. Occlusion happens on that matrix: the
# leads and their six occluded variants go to the classifier in ONE call. Before it is returned, the
# lean scorer is checked against the original path on synthetic leads (``check_lean_scorer``).

SELF_CHECK_TOLERANCE = 1e-9
_EXACT_INT = 2**53
_GROUP_OF_INPUT = {column: group for group, columns in FACTOR_GROUPS.items() for column in columns}
# engineered design features and the input columns each is computed from
_FEATURE_INPUTS: dict[str, tuple[str, ...]] = {
    "pages_per_visit": ("pages_viewed", "website_visits"),
    "seniority": ("seniority", "job_title"),
}
_LOG_COLUMNS = ("company_employees", "company_revenue")
_STRING_COLUMNS = (*CATEGORICAL_COLUMNS, *TEXT_COLUMNS)

logger = logging.getLogger(__name__)


class LeanScorerError(ValueError):
    """The lean path cannot reproduce a scorer exactly: an unsupported pipeline, or the self-check failed.

    Serve with ``predict(scorer, ...)`` instead (slower, and by definition the reference answer).
    """


class _NotPlain(Exception):
    """A record value the lean path leaves to the original path (e.g. a number sent as a string)."""


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


def _plain_row(
    record: Mapping[str, Any],
    attr_numeric: Sequence[str],
    attr_categorical: Sequence[str],
    *,
    strict_keys: bool,
) -> dict[str, Any]:
    """One record as ``records(_design_frame(leads_frame([record]), ...))`` would give it, for the input
    columns and the custom attributes the model uses. Raises ``_NotPlain`` for anything else."""
    if strict_keys and any(not isinstance(k, str) or k.startswith("attr_") for k in record):
        raise _NotPlain  # an attr_ column given directly competes with the attributes dict
    row: dict[str, Any] = {column: _plain_number(record.get(column)) for column in NUMERIC_COLUMNS}
    for column in _STRING_COLUMNS:
        row[column] = _plain_text(record.get(column))
    if attr_numeric or attr_categorical:
        attributes = record.get("attributes")
        if not isinstance(attributes, Mapping):
            attributes = {}
        elif any(not isinstance(k, str) for k in attributes):
            raise _NotPlain
        for column in attr_numeric:
            row[column] = _plain_number(attributes.get(column.removeprefix("attr_")))
        for column in attr_categorical:
            # a number here would be formatted by pandas' column type ("5" or "5.0"): left to pandas
            row[column] = _plain_text(attributes.get(column.removeprefix("attr_")))
    return row


@dataclass(frozen=True)
class _OneHot:
    """One categorical input column of the fitted one-hot encoder, as design-matrix columns."""

    name: str
    columns: dict[Any, int]  # category -> design column (infrequent categories share one column)
    unknown: int | None  # design column for a category unseen in training (the infrequent one), if any
    missing: Any  # what a missing value reaches the encoder as: None, or the imputer's fill value


@dataclass(frozen=True)
class _DesignPlan:
    """How plain rows become the classifier's design matrix, read from a fitted ``LeadScoringModel``."""

    width: int
    attr_numeric: tuple[str, ...]
    attr_categorical: tuple[str, ...]
    numeric: tuple[str, ...]  # the numeric transformer's input columns, in order
    numeric_fill: np.ndarray  # imputer medians, one per numeric input column
    numeric_kept: np.ndarray  # numeric input columns that are output (all-missing ones are dropped)
    numeric_indicators: np.ndarray  # numeric input columns with a missing-value indicator
    numeric_start: int
    one_hot: tuple[_OneHot, ...]
    text_column: int
    text_vectorizer: Any  # TextSignal.model_'s fitted TfidfVectorizer ...
    text_weights: tuple[np.ndarray, np.ndarray]  # ... and its logistic regression's coef_.T, intercept_
    classifier: Any  # the fitted CalibratedClassifierCV
    reference: np.ndarray  # the design vector of the reference lead
    group_columns: tuple[np.ndarray, ...]  # design columns of each factor group, in FACTOR_GROUPS order


def _unsupported(what: str) -> LeanScorerError:
    return LeanScorerError(f"the lean path does not support this lead model: {what}")


def _group_of_feature(name: str) -> str | None:
    groups = {_GROUP_OF_INPUT[c] for c in _FEATURE_INPUTS.get(name, (name,)) if c in _GROUP_OF_INPUT}
    if len(groups) > 1:
        raise _unsupported(f"feature {name!r} mixes factor groups {sorted(groups)}")
    return next(iter(groups), None)


def _design_plan(model: LeadScoringModel) -> _DesignPlan:
    """Read the fitted pipeline's learned parameters; raise ``LeanScorerError`` for any step it would not
    reproduce exactly (the numbers are then checked by ``check_lean_scorer``)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    pipeline = model.pipeline
    if type(pipeline) is not Pipeline or len(pipeline.steps) != 2:
        raise _unsupported("expected a two-step Pipeline (features, model)")
    features, classifier = pipeline.steps[0][1], pipeline.steps[1][1]
    if type(features) is not ColumnTransformer or not hasattr(classifier, "predict_proba"):
        raise _unsupported("expected a ColumnTransformer and a probabilistic classifier")
    if getattr(features, "sparse_output_", False):
        raise _unsupported("sparse ColumnTransformer output")
    attr_numeric, attr_categorical = tuple(model.attribute_numeric), tuple(model.attribute_categorical)
    known_numeric = {*NUMERIC_COLUMNS, "pages_per_visit", *attr_numeric}
    known_categorical = {*CATEGORICAL_COLUMNS, *attr_categorical}
    slices: dict[str, slice] = features.output_indices_
    width = max(s.stop for s in slices.values())
    group_columns: dict[str, list[int]] = {group: [] for group in FACTOR_GROUPS}

    def claim(feature: str, columns: Sequence[int]) -> None:
        group = _group_of_feature(feature)
        if group is not None:
            group_columns[group].extend(columns)

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
            unknown = set(columns) - known_numeric
            if unknown or not _is_nan(transformer.missing_values):
                raise _unsupported(f"numeric columns {sorted(unknown)} or missing_values")
            if transformer.keep_empty_features:
                raise _unsupported("SimpleImputer(keep_empty_features=True)")
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
        elif type(transformer) is Pipeline and [type(s) for _, s in transformer.steps] == [
            SimpleImputer,
            OneHotEncoder,
        ]:
            imputer, encoder = transformer.steps[0][1], transformer.steps[1][1]
            unknown = set(columns) - known_categorical
            if unknown or imputer.strategy != "constant" or not _is_nan(imputer.missing_values):
                raise _unsupported(f"categorical columns {sorted(unknown)} or their imputer")
            if encoder.drop is not None or encoder.handle_unknown not in ("infrequent_if_exist", "ignore"):
                raise _unsupported(
                    f"OneHotEncoder(drop={encoder.drop!r}, handle_unknown={encoder.handle_unknown!r})"
                )
            if np.dtype(encoder.dtype) != np.float64:
                raise _unsupported(f"OneHotEncoder(dtype={encoder.dtype!r})")
            start = out.start
            infrequent_all = encoder.infrequent_categories_
            for column, fitted, infrequent in zip(columns, encoder.categories_, infrequent_all, strict=True):
                categories = list(fitted)
                if any(c is not None and not isinstance(c, str) for c in categories):
                    raise _unsupported(f"non-string categories in {column!r}")
                rare = set() if infrequent is None else set(infrequent)
                frequent = [c for c in categories if c not in rare]
                lookup = {c: start + i for i, c in enumerate(frequent)}
                rare_column = start + len(frequent) if rare else None
                if rare_column is not None:
                    lookup |= dict.fromkeys(rare, rare_column)
                unknown_column = rare_column if encoder.handle_unknown == "infrequent_if_exist" else None
                # core categorical columns carry None (left alone by the imputer, so it is a category of its
                # own); custom attributes carry NaN, which the imputer fills (see _design_frame)
                missing = None if column in CATEGORICAL_COLUMNS else imputer.fill_value
                n_out = len(frequent) + (1 if rare else 0)
                one_hot.append(_OneHot(column, lookup, unknown_column, missing))
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
    if numeric_plan is None or text_column is None:
        raise _unsupported("expected numeric, categorical and text transformers")
    numeric, fill, kept, indicators, numeric_start = numeric_plan
    plan = _DesignPlan(
        width=width,
        attr_numeric=attr_numeric,
        attr_categorical=attr_categorical,
        numeric=numeric,
        numeric_fill=fill,
        numeric_kept=kept,
        numeric_indicators=indicators,
        numeric_start=numeric_start,
        one_hot=tuple(one_hot),
        text_column=text_column,
        text_vectorizer=text_steps[0],
        text_weights=(np.array(text_steps[1].coef_).T, np.array(text_steps[1].intercept_)),
        classifier=classifier,
        reference=np.zeros(0),
        group_columns=tuple(np.asarray(sorted(group_columns[g]), dtype=int) for g in FACTOR_GROUPS),
    )
    try:
        reference_row = _plain_row(
            {c: model.reference.get(c) for c in _GROUP_OF_INPUT}, (), (), strict_keys=True
        )
    except _NotPlain as exc:
        raise _unsupported(f"reference values {model.reference!r}") from exc
    # columns outside the factor groups are never occluded: any value will do for them
    reference_row |= dict.fromkeys(attr_numeric, math.nan) | dict.fromkeys(attr_categorical)
    reference = _design_matrix(plan, [reference_row])[0]
    return dataclasses.replace(plan, reference=reference)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _design_matrix(plan: _DesignPlan, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Plain rows -> the matrix ``pipeline.named_steps['features'].transform`` would produce."""
    n = len(rows)
    design = np.zeros((n, plan.width))
    numbers: dict[str, np.ndarray] = {}
    for column in plan.numeric:
        if column == "pages_per_visit":
            continue
        values = np.array([row[column] for row in rows], dtype=float)
        if column in _LOG_COLUMNS:  # as _engineered: log1p(clip(lower=0)), NaN kept
            values = np.log1p(np.where(values < 0, 0.0, values))
        numbers[column] = values
    if "pages_per_visit" in plan.numeric:
        pages = np.array([row["pages_viewed"] for row in rows], dtype=float)
        visits = np.array([row["website_visits"] for row in rows], dtype=float)
        numbers["pages_per_visit"] = pages / np.where(visits > 0, visits, np.nan)
    raw = np.column_stack([numbers[c] for c in plan.numeric]) if plan.numeric else np.zeros((n, 0))
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
            target = encoding.columns.get(encoding.missing if value is None else value, encoding.unknown)
            if target is not None:
                design[i, target] = 1.0
    texts = [d if isinstance(d, str) else "" for d in (row["description"] for row in rows)]
    unique = list(dict.fromkeys(texts))
    # LogisticRegression.decision_function without its per-call input validation: X @ coef_.T + intercept_
    coef_t, intercept = plan.text_weights
    scores = np.asarray(plan.text_vectorizer.transform(unique) @ coef_t) + intercept
    signal = dict(zip(unique, scores.reshape(-1).astype(float), strict=True))
    design[:, plan.text_column] = [signal[t] for t in texts]
    return design


class LeanLeadScorer:
    """A compiled ``LeadScoringModel`` or ``RuleScorer`` for the request path (see ``compile_scorer``).

    ``predict(records, explain=...)`` returns exactly what ``predict(scorer, records, explain=...)``
    returns. Records are plain dicts as parsed from JSON (lead columns, an optional ``attributes``
    dict; a missing key is null). A batch holding a value outside plain JSON types (a number sent as
    a string, a boolean, a non-string custom category, ...) is answered by the original path,
    whose pandas coercions decide such cases; ``fallbacks`` counts those batches.
    """

    def __init__(self, scorer: LeadScoringModel | RuleScorer, plan: _DesignPlan | None) -> None:
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
        plan = self._plan
        try:
            if plan is None:
                return [_plain_row(r, (), (), strict_keys=False) for r in records]
            return [
                _plain_row(r, plan.attr_numeric, plan.attr_categorical, strict_keys=True) for r in records
            ]
        except _NotPlain:
            return None

    def _score(
        self, rows: Sequence[Mapping[str, Any]], explain: bool
    ) -> tuple[np.ndarray, list[list[Factor]]]:
        """Probabilities and (when ``explain``) the top-3 factors of plain rows."""
        n = len(rows)
        if n == 0:
            return np.zeros(0), []
        if self._plan is None:
            rules = self.scorer
            assert isinstance(rules, RuleScorer)
            probabilities = np.array([rules.row_probability(row) for row in rows], dtype=float)
            _check_finite(probabilities)
            return probabilities, [rules.row_factors(row) if explain else [] for row in rows]
        plan = self._plan
        design = _design_matrix(plan, rows)
        if explain:
            # the leads, then each factor group set to the reference: one classifier call for all
            design = np.tile(design, (1 + len(plan.group_columns), 1))
            for k, columns in enumerate(plan.group_columns, start=1):
                design[k * n : (k + 1) * n, columns] = plan.reference[columns]
        scored = np.asarray(plan.classifier.predict_proba(design)[:, 1], dtype=float)
        _check_finite(scored[:n])
        if not explain:
            return scored, [[] for _ in range(n)]
        return scored[:n], occlusion_factors(scored.reshape(-1, n), rows)


def compile_scorer(
    scorer: LeadScoringModel | RuleScorer, *, check_records: Sequence[Mapping[str, Any]] | None = None
) -> LeanLeadScorer:
    """The lean request-path scorer for ``scorer``, verified against the original path.

    Raises ``LeanScorerError`` when the pipeline has a step the lean path does not reproduce, or when on
    the self-check leads (``self_check_records(scorer)``, plus ``check_records`` if given) a probability
    or a factor impact differs by more than ``SELF_CHECK_TOLERANCE`` or a factor differs at all. There is
    no silent fallback: on that error, serve with ``predict(scorer, ...)``.
    """
    if type(scorer) is RuleScorer:
        lean = LeanLeadScorer(scorer, None)
    elif type(scorer) is LeadScoringModel:
        lean = LeanLeadScorer(scorer, _design_plan(scorer))
    else:
        raise LeanScorerError(f"no lean path for {type(scorer).__name__}")
    check_lean_scorer(lean, scorer, [*self_check_records(scorer), *(check_records or [])])
    return lean


def check_lean_scorer(
    lean: LeanLeadScorer, scorer: LeadScoringModel | RuleScorer, leads: Sequence[Mapping[str, Any]]
) -> float:
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
    got, got_factors = lean._score(rows, explain=True)
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
    None, "",
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
)
_CHECK_SCALES = (1.0, None, 0.0, 0.5, 2.0, 10.0, -1.0, 3.7)
_UNSEEN = "__unseen_category__"


def self_check_records(scorer: LeadScoringModel | RuleScorer) -> list[dict[str, Any]]:
    """Synthetic leads that exercise every branch of featurization: the reference lead, an empty lead,
    every known category of every categorical column (including rare and missing ones), unseen
    categories, seniority read from titles, missing / zero / negative / large numbers, empty and
    cue-laden descriptions, custom attributes present, missing, unseen or sent without a dict."""
    if isinstance(scorer, LeadScoringModel):
        reference = dict(scorer.reference)
        attr_numeric, attr_categorical = scorer.attribute_numeric, scorer.attribute_categorical
        categories: dict[str, list[Any]] = {c: [] for c in (*CATEGORICAL_COLUMNS, *attr_categorical)}
        categories |= {e.name: list(e.columns) for e in _design_plan(scorer).one_hot}
    else:
        reference, attr_numeric, attr_categorical = {}, [], []
        tables = {"industry": _INDUSTRY_FIT, "seniority": _SENIORITY_FIT, "timeline": _TIMELINE_FIT}
        tables |= {"budget_signal": _BUDGET_FIT}
        categories = {c: list(tables.get(c, {})) for c in CATEGORICAL_COLUMNS}
    cycles: dict[str, list[Any]] = {}
    for column, values in categories.items():
        # a "missing" category of a custom attribute is what a null becomes
        sent = [None if v == "missing" and column.startswith("attr_") else v for v in values]
        cycles[column] = [*dict.fromkeys([*sent, None, _UNSEEN, ""])]
    for column in (*NUMERIC_COLUMNS, *attr_numeric):
        base = reference.get(column)
        base = 10.0 if not isinstance(base, (int, float)) or math.isnan(base) else float(base)
        cycles[column] = [None if s is None else base * s for s in _CHECK_SCALES]
        cycles[column].append(round(base))  # an integer, as JSON would send it
    cycles["job_title"] = [*_CHECK_TITLES, reference.get("job_title")]
    cycles["description"] = list(_CHECK_DESCRIPTIONS)
    length = max(len(v) for v in cycles.values())
    out: list[dict[str, Any]] = [
        {c: reference.get(c) for c in INPUT_COLUMNS}
        | {
            "attributes": {
                c.removeprefix("attr_"): reference.get(c) for c in (*attr_numeric, *attr_categorical)
            }
        },
        {},
        {"attributes": "not a dict", "seniority": None, "job_title": "CTO"},
    ]
    for i in range(length):
        lead: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        for j, (column, values) in enumerate(cycles.items()):
            value = values[(i + j) % len(values)]
            if column.startswith("attr_"):
                attributes[column.removeprefix("attr_")] = value
            else:
                lead[column] = value
        out.append(lead | {"attributes": attributes})
        if i % 4 == 3:  # and some leads without any attributes
            out.append(lead)
    return out
