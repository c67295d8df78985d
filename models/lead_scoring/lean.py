"""The lean prediction path for serving.

``compile_scorer`` reads the fitted pipeline once (imputer medians and missing indicators, one-hot
categories with the infrequent/unknown rule, the description's TF-IDF + logistic regression) and turns
plain dict records straight into the design matrix the classifier was fitted on: no pandas and no
ColumnTransformer per request. Records go through the same scalar conversions as the pandas path
(``to_number``, ``to_category``, ``to_text``). Occlusion happens on that matrix: the leads and their
occluded variants go to the classifier in one call per chunk. Before it is returned, the lean scorer
is checked against the original path on synthetic leads (``check_lean_scorer``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .classifier import TextSignal
from .factors import Factor
from .features import (
    _LOG_COLUMNS,
    _RATIO,
    FeatureSpec,
    _canonical_row,
    _ratio,
)
from .fields import (
    ATTRIBUTE_PREFIX,
    CATEGORICAL_COLUMNS,
    INPUT_COLUMNS,
    MISSING_CATEGORY,
    NUMERIC_COLUMNS,
    TEXT_COLUMNS,
    seniority_of,
)
from .model import LeadScoringModel, Scorer, occlusion_factors
from .rules import (
    _BUDGET_FIT,
    _INDUSTRY_FIT,
    _SENIORITY_FIT,
    _TIMELINE_FIT,
    BaseRateScorer,
    RuleScorer,
)
from .scoring import _check_finite, _results, predict

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
