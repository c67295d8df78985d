"""The lead fields, and how every scoring path reads their values.

Values are read the same way everywhere (``to_number``, ``to_category``, ``to_text``): numeric text is
a number, booleans are 1 / 0 (or "true" / "false" as categories), 5 and 5.0 are the category "5",
blank text is missing. Custom fields come as an ``attributes`` dict per lead or as ``attr_*`` columns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

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


ATTRIBUTE_PREFIX = "attr_"
MISSING_CATEGORY = "__missing__"  # what a missing categorical value is one-hot encoded as


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
