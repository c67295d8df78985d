"""Which lead fields become features (``FeatureSpec``, decided from the training leads, with a note for
every field left out or changed), and the frames the pipeline reads."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..pickling import LEAD_SCORING, pickled_as
from .classifier import LeadModelConfig
from .factors import _fmt_value
from .fields import (
    ATTRIBUTE_PREFIX,
    CATEGORICAL_COLUMNS,
    FACTOR_GROUPS,
    MISSING_CATEGORY,
    NUMERIC_COLUMNS,
    OTHER_FIELDS,
    _as_frame,
    _attribute_value,
    _number_column,
    seniority_of,
    to_category,
    to_number,
    to_text,
)

_LOG_COLUMNS = ("company_employees", "company_revenue")
_RATIO = "pages_per_visit"  # pages_viewed / website_visits, in the engagement group
_CORE_CATEGORICAL = ("industry", "seniority", "job_title", "timeline", "budget_signal", "source", "region")
_CORE_GROUP = {column: group for group, columns in FACTOR_GROUPS.items() for column in columns}


@pickled_as(LEAD_SCORING)
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
