"""Validate the CRM datasets with the Great Expectations suites in ``expectations/`` (flow 2).

- ``expectations/`` is a GX 1.x *file* context kept in git: one suite per dataset (``leads``,
  ``monthly_sales``, ``interactions``), a validation definition per suite (suite + batch definition), and a
  pandas datasource with one dataframe asset per dataset. Validation results and Data Docs are
  written under ``expectations/uncommitted/`` (git-ignored); nothing else is written at run time.
- Every expectation carries its severity in ``meta.severity``: ``critical`` (blocks training) or
  ``warning`` (alerts, training goes on). An expectation without one counts as critical.
- Bounds that depend on "now" or on the previous run are suite parameters (``{"$PARAMETER": ...}``)
  filled in at run time, so the suite in git stays the single statement of what is checked:
  ``reference_month`` (first day of the reference date's month: no later month may appear),
  ``end_of_reference_day`` (midnight UTC after the reference date: no later timestamp) and
  ``min_row_count`` (the row-count floor, ``ceil(meta.min_ratio_of_previous_run x`` the row count of
  the previous validation run of the same dataset and organization scope; 0 on the first run).
- Categorical columns (industry, source, region, channel, ...) are checked against what the
  organization's own data has held, not against a fixed vocabulary: every run whose critical
  expectations passed (the data training accepts) stores a *category profile* per dataset, for its
  scope and, on an all-organizations run, for each organization in it (table ``category_profiles``:
  each value's row count). A later run warns about a value the profile has never had only when its
  share of the batch's rows is above the expectation's ``meta.max_new_value_share`` (5% in the
  suites); the first run of a scope learns every value. The suite parameter ``known_<column>_values``
  carries the known values plus the new ones at or below the threshold, so GX reports exactly the
  values that warn. The threshold and profile rules are the pure functions of "Learned categories".
- One GX run per dataset and scope, on one pandas batch holding the whole frame (all organizations
  or one): validating 1,000 organizations does not mean 1,000 GX runs.

``validate_dataset`` loads, validates, records a ``validation_runs`` row and raises the alerts; it
returns the report and never raises for failed expectations. ``require_valid`` turns a failed
critical expectation into ``ValidationFailedError``, which fails the Airflow task.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import sqlalchemy as sa

import neuracrm_mlops
from neuracrm_mlops.errors import ConfigurationError, NeuraCRMError, NotFoundError
from neuracrm_mlops.store.alerts import raise_alert
from neuracrm_mlops.store.db.engine import get_engine
from neuracrm_mlops.store.db.migrate import require_current_schema
from neuracrm_mlops.store.db.schema import (
    CRM_TABLES,
    CategoryProfileRow,
    Organization,
    UTCDateTime,
    ValidationRun,
    utcnow,
)

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.data_context.data_context.abstract_data_context import AbstractDataContext

log = logging.getLogger(__name__)

__all__ = [
    "DATASET_SUITES",
    "DEFAULT_MAX_NEW_VALUE_SHARE",
    "GX_ROOT_ENV",
    "CategoryProfile",
    "ExpectationOutcome",
    "LearnedColumn",
    "NewCategoryValue",
    "ValidationFailedError",
    "ValidationReport",
    "accepted_category_values",
    "count_categories",
    "dataset_name",
    "frame_columns",
    "gx_context_root",
    "known_category_values",
    "learned_columns",
    "load_category_profile",
    "load_frame",
    "merge_category_profile",
    "new_category_values",
    "normalise_frame",
    "open_context",
    "profiled_organizations",
    "record_validation",
    "require_valid",
    "snapshot_hash",
    "store_category_profiles",
    "validate_dataset",
    "validate_for_training",
    "validate_frame",
]

DATASET_SUITES: dict[str, str] = {"leads": "leads", "sales": "monthly_sales", "interactions": "interactions"}
"""CLI dataset name -> GX suite (and table) name."""

SEVERITIES = ("critical", "warning")
GX_ROOT_ENV = "NEURACRM_GX_ROOT"
DEFAULT_GX_ROOT = Path(neuracrm_mlops.__file__).resolve().parents[2] / "expectations"
DATA_DOCS_SITE = "local_site"
VOLUME_RATIO_META_KEY = "min_ratio_of_previous_run"
NEW_VALUE_SHARE_META_KEY = "max_new_value_share"
DEFAULT_MAX_NEW_VALUE_SHARE = 0.05
"""The share of a batch's rows above which a never-seen categorical value warns (the suites state it)."""
NEW_VALUES_DESCRIBED = 5  # new values (and organizations per value) named in alerts and the run row
ORGANIZATIONS_LISTED = 20  # organization ids kept per new value in the outcome details
PARTIAL_UNEXPECTED_VALUES = 5
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED_VALUES}
# platform bookkeeping, not data: left out of the validated frame and of the snapshot hash
_BOOKKEEPING_COLUMNS = frozenset({"id", "content_hash", "updated_at"})


class ValidationFailedError(NeuraCRMError):
    """A critical expectation failed: training is blocked. The message names them and the report.

    ``record_validation`` has raised the validation alert (with the report link) by then."""

    already_alerted = True

    def __init__(self, report: ValidationReport) -> None:
        names = ", ".join(outcome.expectation for outcome in report.critical_failures)
        super().__init__(f"{report.dataset} validation failed: {names}; report: {report.data_docs_path}")
        self.report = report


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str  # e.g. "expect_column_values_to_not_be_null(revenue)"
    severity: str  # critical | warning
    success: bool
    details: dict[str, Any] = field(default_factory=dict)  # observed value, unexpected count and values


@dataclass
class ValidationReport:
    dataset: str  # leads | sales | interactions
    organization_id: int | None  # None: all organizations
    row_count: int
    success: bool  # no critical expectation failed
    outcomes: list[ExpectationOutcome]
    data_docs_path: str  # the Data Docs HTML page of this run
    snapshot_hash: str  # sha256 of the validated data, independent of row and column order
    reference_date: dt.date
    previous_row_count: int | None = None
    seconds: float = 0.0
    run_row_id: int | None = None  # validation_runs.id (set by validate_dataset)
    alert_ids: list[int] = field(default_factory=list)
    # the accepted run whose category profile the categorical checks compared with (None: no profile
    # of this scope yet: the batch's values were learned, nothing was new)
    category_baseline_run_id: int | None = None
    # the batch's category counts (whole batch: key None, and each organization), stored as the
    # scope's profile by record_validation when no critical expectation failed; not in as_dict()
    category_counts: dict[int | None, CategoryProfile] = field(default_factory=dict, repr=False)

    @property
    def suite(self) -> str:
        return DATASET_SUITES[self.dataset]

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    @property
    def warning_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "warning"]

    @property
    def scope(self) -> str:
        return "all organizations" if self.organization_id is None else f"organization {self.organization_id}"

    def summary(self) -> str:
        """One line for logs and the CLI."""
        verdict = "passed" if self.success else "FAILED"
        line = (
            f"{self.dataset} ({self.scope}, {self.row_count:,} rows) validation {verdict}: "
            f"{len(self.outcomes) - len(self.critical_failures) - len(self.warning_failures)}"
            f"/{len(self.outcomes)} expectations met"
        )
        for label, failures in (("critical", self.critical_failures), ("warning", self.warning_failures)):
            if failures:
                line += f"; {label}: " + ", ".join(_with_new_value_shares(o) for o in failures)
        return f"{line}; report: {self.data_docs_path}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable (for MLflow and the task log)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "category_counts"}
        data["outcomes"] = [asdict(outcome) for outcome in self.outcomes]
        data["reference_date"] = self.reference_date.isoformat()
        data["suite"] = self.suite
        data["critical_failures"] = [o.expectation for o in self.critical_failures]
        data["warning_failures"] = [o.expectation for o in self.warning_failures]
        data["summary"] = self.summary()
        result: dict[str, Any] = _jsonable(data)
        return result


def _with_new_value_shares(outcome: ExpectationOutcome) -> str:
    """``expect_column_values_to_be_in_set(source) (new: 'cellular' 49.2%)`` for a learned category."""
    new_values = outcome.details.get("new_values") or []
    if not new_values:
        return outcome.expectation
    shown = ", ".join(f"{n['value']!r} {n['share']:.1%}" for n in new_values[:NEW_VALUES_DESCRIBED])
    hidden = len(new_values) - NEW_VALUES_DESCRIBED
    return f"{outcome.expectation} (new: {shown}{f' and {hidden} more' if hidden > 0 else ''})"


# ---------------------------------------------------------------------------------------------
# Datasets and frames


def dataset_name(dataset: str) -> str:
    """The CLI name of a dataset; the suite/table name is accepted too (``monthly_sales`` -> ``sales``)."""
    if dataset in DATASET_SUITES:
        return dataset
    for name, suite in DATASET_SUITES.items():
        if dataset == suite:
            return name
    raise ValueError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASET_SUITES)}")


def _column_kinds(dataset: str) -> dict[str, str]:
    """Frame column -> canonical kind (int, float, str, bool, timestamp, month, json), from the schema."""
    kinds: dict[str, str] = {}
    for column in CRM_TABLES[dataset].columns:
        if column.name in _BOOKKEEPING_COLUMNS:
            continue
        col_type = column.type
        if isinstance(col_type, UTCDateTime):
            kind = "timestamp"
        elif isinstance(col_type, sa.Boolean):
            kind = "bool"
        elif isinstance(col_type, sa.Integer):
            kind = "int"
        elif isinstance(col_type, sa.Float):
            kind = "float"
        elif isinstance(col_type, sa.Date):
            kind = "month"
        elif isinstance(col_type, sa.JSON):
            kind = "json"
        else:
            kind = "str"
        kinds[column.name] = kind
    return kinds


def frame_columns(dataset: str) -> list[str]:
    """The columns of the validated frame: the table's data columns (no surrogate id or bookkeeping)."""
    return list(_column_kinds(dataset_name(dataset)))


def load_frame(dataset: str, organization_id: int | None = None, *, engine: sa.Engine) -> pd.DataFrame:
    """Read a dataset (all organizations, or one) into a frame with the canonical dtypes.

    Values that do not fit their column's type (possible on SQLite, which stores what it is given)
    are left as they are, in an ``object`` column, so that the type expectations catch them.
    """
    dataset = dataset_name(dataset)
    table = CRM_TABLES[dataset]
    columns = [table.c[name] for name in _column_kinds(dataset)]
    key = table.c["month"] if dataset == "sales" else table.c["external_id"]
    query = sa.select(*columns).order_by(table.c["organization_id"], key)
    if organization_id is not None:
        query = query.where(table.c["organization_id"] == organization_id)
    with engine.connect() as conn:
        frame = pd.read_sql(query, conn)
    return normalise_frame(dataset, frame)


def normalise_frame(dataset: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with each known column in its canonical dtype, when that loses nothing.

    Canonical: ids and counts ``Int64``, numbers ``float64``, text ``str``, flags ``boolean``,
    timestamps ``datetime64[us, UTC]`` (naive ones are taken as UTC, as import does), months naive
    ``datetime64``. A column holding a value of another type (text in ``revenue``, a float in a
    count) keeps its values and fails the suite's type expectation instead of being coerced.
    """
    kinds = _column_kinds(dataset_name(dataset))
    out = frame.copy()
    for name in out.columns:
        kind = kinds.get(str(name))
        if kind is None or kind == "json":
            continue
        converted = _CONVERTERS[kind](out[name])
        if converted is not None:
            out[name] = converted
    return out


def _non_null_values(series: pd.Series) -> list[Any]:
    return [v for v in series.tolist() if not _is_null(v)]


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _to_int(series: pd.Series) -> pd.Series | None:
    dtype = series.dtype
    if isinstance(dtype, pd.Int64Dtype):
        return None
    if pd.api.types.is_bool_dtype(dtype):
        return None
    if pd.api.types.is_integer_dtype(dtype):
        return series.astype("Int64")
    if pd.api.types.is_float_dtype(dtype):
        numbers = series.to_numpy(dtype="float64", na_value=np.nan)
        finite = numbers[~np.isnan(numbers)]
        if np.all(np.isfinite(finite)) and np.all(finite == np.round(finite)):
            return series.astype("Int64")
        return None
    if pd.api.types.is_object_dtype(dtype):
        values = _non_null_values(series)
        if all(
            (isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_))
            or (isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer())
            for v in values
        ):
            return pd.Series(
                [None if _is_null(v) else int(v) for v in series.tolist()], index=series.index, dtype="Int64"
            )
    return None


def _to_float(series: pd.Series) -> pd.Series | None:
    dtype = series.dtype
    if dtype == np.float64:
        return None
    if pd.api.types.is_bool_dtype(dtype):
        return None
    if pd.api.types.is_numeric_dtype(dtype):
        return series.astype("float64")
    if pd.api.types.is_object_dtype(dtype):
        values = _non_null_values(series)
        if all(
            isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)
            for v in values
        ):
            return pd.Series(
                [np.nan if _is_null(v) else float(v) for v in series.tolist()],
                index=series.index,
                dtype="float64",
            )
    return None


def _to_str(series: pd.Series) -> pd.Series | None:
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype) and str(dtype) == "str":
        return None
    if (pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype)) and all(
        isinstance(v, str) for v in _non_null_values(series)
    ):
        return series.astype("str")
    return None


def _to_bool(series: pd.Series) -> pd.Series | None:
    dtype = series.dtype
    if isinstance(dtype, pd.BooleanDtype):
        return None
    if pd.api.types.is_bool_dtype(dtype):
        return series.astype("boolean")
    if pd.api.types.is_object_dtype(dtype) and all(
        isinstance(v, bool | np.bool_) for v in _non_null_values(series)
    ):
        return pd.Series(
            [None if _is_null(v) else bool(v) for v in series.tolist()], index=series.index, dtype="boolean"
        )
    return None


def _to_timestamp(series: pd.Series) -> pd.Series | None:
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        if str(dtype) == "datetime64[us, UTC]":
            return None
        return pd.Series(series.dt.tz_convert("UTC").dt.as_unit("us"))
    if pd.api.types.is_datetime64_dtype(dtype):
        return pd.Series(series.dt.tz_localize("UTC").dt.as_unit("us"))
    if pd.api.types.is_object_dtype(dtype) and all(
        isinstance(v, dt.datetime) for v in _non_null_values(series)
    ):
        return pd.to_datetime(series, utc=True).dt.as_unit("us")
    return None


def _to_month(series: pd.Series) -> pd.Series | None:
    dtype = series.dtype
    if pd.api.types.is_datetime64_dtype(dtype) and not isinstance(dtype, pd.DatetimeTZDtype):
        return None
    if pd.api.types.is_object_dtype(dtype):
        values = _non_null_values(series)
        if all(
            isinstance(v, dt.date) and (not isinstance(v, dt.datetime) or v.tzinfo is None) for v in values
        ):
            return pd.Series(pd.to_datetime(series), index=series.index).astype("datetime64[us]")
    return None


_CONVERTERS: dict[str, Callable[[pd.Series], pd.Series | None]] = {
    "int": _to_int,
    "float": _to_float,
    "str": _to_str,
    "bool": _to_bool,
    "timestamp": _to_timestamp,
    "month": _to_month,
}


# ---------------------------------------------------------------------------------------------
# Snapshot hash


def snapshot_hash(frame: pd.DataFrame) -> str:
    """sha256 of the frame's content, the same for any order of rows and columns.

    Canonical form: the columns in name order, each with its kind (integer, float, flag, timestamp
    as microseconds since the epoch in UTC, text; ``object`` columns such as ``attributes`` as typed
    tokens, dicts as JSON with sorted keys); the rows in the order of a content hash of each row,
    so that only identical rows can tie. The digest covers the names and kinds, the null masks and
    the values, all vectorized. Use it on a ``normalise_frame`` frame, so that the same data always
    has the same dtypes.
    """
    columns = sorted(frame.columns, key=str)
    canonical = {str(name): _canonical_column(frame[name]) for name in columns}
    digest = hashlib.sha256()
    header = [[name, kind] for name, (kind, _) in canonical.items()]
    digest.update(json.dumps({"columns": header, "rows": len(frame)}).encode())
    if len(frame) and columns:
        table = pd.DataFrame({name: values for name, (_, values) in canonical.items()})
        row_keys = pd.util.hash_pandas_object(table, index=False).to_numpy()
        order = np.argsort(row_keys, kind="stable")
        for kind, values in canonical.values():
            _digest_column(digest, kind, values, order)
    return digest.hexdigest()


def _canonical_column(series: pd.Series) -> tuple[str, pd.Series]:
    """(kind, values): Int64 for integers and timestamps, float64, boolean, or str."""
    series = series.reset_index(drop=True)
    dtype = series.dtype
    if isinstance(dtype, pd.BooleanDtype) or dtype == np.bool_:
        return "boolean", series.astype("boolean")
    if pd.api.types.is_integer_dtype(dtype):
        return "integer", series.astype("Int64")
    if dtype == np.float64:
        return "float", series + 0.0  # -0.0 and 0.0 are the same number
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        instants = series.dt.tz_convert("UTC") if isinstance(dtype, pd.DatetimeTZDtype) else series
        micros = pd.array(instants.dt.as_unit("us").array.asi8, dtype="Int64")
        micros[series.isna().to_numpy()] = pd.NA
        kind = "timestamp_utc" if isinstance(dtype, pd.DatetimeTZDtype) else "timestamp_naive"
        return kind, pd.Series(micros)
    if isinstance(dtype, pd.StringDtype):
        return "text", series.astype("str")
    return "object", pd.Series(_object_tokens(series.tolist()), dtype="str")


def _digest_column(digest: Any, kind: str, values: pd.Series, order: np.ndarray) -> None:
    null = values.isna().to_numpy()[order]
    digest.update(kind.encode())
    digest.update(np.packbits(null).tobytes())
    if kind in ("float",):
        numbers = values.to_numpy(dtype="float64", na_value=0.0)[order]
        digest.update(np.ascontiguousarray(numbers, dtype="<f8").tobytes())
    elif kind in ("text", "object"):
        lengths = values.str.len().to_numpy(dtype="int64", na_value=-1)[order]
        digest.update(np.ascontiguousarray(lengths, dtype="<i8").tobytes())
        texts = values.to_numpy(dtype=object, na_value="")[order]
        digest.update("".join(texts.tolist()).encode("utf-8", "surrogatepass"))
    else:  # integer, boolean, timestamps
        numbers = values.astype("Int64").to_numpy(dtype="int64", na_value=0)[order]
        digest.update(np.ascontiguousarray(numbers, dtype="<i8").tobytes())


def _object_tokens(values: list[Any]) -> list[str]:
    """Tokens of an ``object`` column; flat dicts (the ``attributes`` column) are memoised."""
    memo: dict[tuple[Any, ...], str] = {}
    tokens = []
    for value in values:
        if isinstance(value, dict):
            try:
                key = tuple((k, type(v), v) for k, v in sorted(value.items()))
                token = memo.get(key)
                if token is None:
                    token = memo[key] = _value_token(value)
            except TypeError:  # nested or unhashable values, or keys that do not sort
                token = _value_token(value)
            tokens.append(token)
        else:
            tokens.append(_value_token(value))
    return tokens


_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _value_token(value: Any) -> str:
    """The token of one value of an ``object`` column (JSON attributes, or values of a wrong type)."""
    if _is_null(value):
        return "N"
    if isinstance(value, bool | np.bool_):
        return "b1" if value else "b0"
    if isinstance(value, int | np.integer):
        return f"n{int(value)}"
    if isinstance(value, float | np.floating):
        return f"n{float(value)!r}"
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, dt.datetime):
        return "t" + (value.astimezone(dt.UTC) if value.tzinfo is not None else value).isoformat()
    if isinstance(value, dt.date):
        return "d" + value.isoformat()
    if isinstance(value, dict | list | tuple):
        if not value:
            return "j{}" if isinstance(value, dict) else "j[]"
        return "j" + _CANONICAL_JSON.encode(value)
    return "o" + repr(value)


# ---------------------------------------------------------------------------------------------
# The GX context


def gx_context_root() -> Path:
    """The GX file context: ``NEURACRM_GX_ROOT``, else the repository's ``expectations/`` folder."""
    from neuracrm_mlops.config import gx_root_from_environment

    # read on each call (not from the cached settings): a task may point it elsewhere while it runs
    root = gx_root_from_environment() or DEFAULT_GX_ROOT
    if not (root / "great_expectations.yml").is_file():
        raise ConfigurationError(
            f"no Great Expectations context at {root} (great_expectations.yml is missing): "
            f"set {GX_ROOT_ENV} to the project's expectations/ folder"
        )
    return root


def _quiet_great_expectations() -> None:
    """No analytics and no INFO chatter in task logs (progress bars are off in great_expectations.yml)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.getEffectiveLevel() < logging.WARNING:
        gx_logger.setLevel(logging.WARNING)


def open_context(context_root: Path | str | None = None) -> AbstractDataContext:
    """The GX file context (the suites in git); results and Data Docs go to its ``uncommitted/``."""
    root = Path(context_root).resolve() if context_root is not None else gx_context_root()
    if not (root / "great_expectations.yml").is_file():
        raise ConfigurationError(
            f"no Great Expectations context at {root} (great_expectations.yml is missing)"
        )
    _quiet_great_expectations()
    import great_expectations as gx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gx.get_context(mode="file", context_root_dir=str(root))


def suite_parameters(
    suite: Any, *, reference_date: dt.date, previous_row_count: int | None
) -> dict[str, Any]:
    """The run-time values of the suite's ``$PARAMETER`` bounds (see the module docstring)."""
    ratio = 0.0
    for expectation in suite.expectations:
        value = (expectation.meta or {}).get(VOLUME_RATIO_META_KEY)
        if value is not None:
            ratio = float(value)
    return {
        "reference_month": dt.datetime(reference_date.year, reference_date.month, 1),
        "end_of_reference_day": pd.Timestamp(reference_date + dt.timedelta(days=1), tz="UTC"),
        "min_row_count": min_row_count(previous_row_count, ratio),
    }


def min_row_count(previous_row_count: int | None, ratio: float) -> int:
    """The fewest rows that do not count as a volume drop; 0 without a previous run."""
    if not previous_row_count or ratio <= 0:
        return 0
    return math.ceil(previous_row_count * ratio - 1e-9)


# ---------------------------------------------------------------------------------------------
# Learned categories: what a scope's accepted data has held (pure functions, then the store)


@dataclass(frozen=True)
class CategoryProfile:
    """Rows and, per categorical column, the rows holding each value: of a batch, or learned for a scope.

    A learned profile (``load_category_profile``) names the accepted validation run it was stored by.
    Nulls are not values. A value accepted once stays known: when it leaves the data its count is 0.
    """

    row_count: int
    value_counts: Mapping[str, Mapping[str, int]]  # column -> value -> rows
    validation_run_id: int | None = None

    def known(self, column: str) -> frozenset[str] | None:
        """The values of ``column`` this profile knows; None when it never profiled the column."""
        counts = self.value_counts.get(column)
        return None if counts is None else frozenset(counts)

    def shares(self, column: str) -> dict[str, float]:
        """Each known value's share of the profile's rows (0.0 for values no longer present)."""
        counts = self.value_counts.get(column, {})
        return {value: (rows / self.row_count if self.row_count else 0.0) for value, rows in counts.items()}


@dataclass(frozen=True)
class NewCategoryValue:
    """A value no accepted run of the scope has had, on more than the threshold of the batch's rows."""

    value: str
    rows: int
    share: float  # of the batch's rows (nulls included)

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "rows": self.rows, "share": round(self.share, 4)}


@dataclass(frozen=True)
class LearnedColumn:
    """A categorical expectation of a suite whose value set is learned, not written in the suite."""

    column: str
    parameter: str  # the suite parameter that receives the accepted values
    max_new_value_share: float

    @property
    def expectation(self) -> str:
        return expectation_name("expect_column_values_to_be_in_set", {"column": self.column})


def learned_columns(suite: Any) -> dict[str, LearnedColumn]:
    """The suite's ``expect_column_values_to_be_in_set`` expectations with ``meta.max_new_value_share``.

    Their ``value_set`` must be a ``{"$PARAMETER": ...}``: the accepted values are filled in per run.
    """
    learned: dict[str, LearnedColumn] = {}
    for expectation in suite.expectations:
        meta = expectation.meta or {}
        if NEW_VALUE_SHARE_META_KEY not in meta:
            continue
        column = str(getattr(expectation, "column", ""))
        value_set = getattr(expectation, "value_set", None)
        kind = getattr(expectation, "expectation_type", "expect_column_values_to_be_in_set")
        if kind != "expect_column_values_to_be_in_set" or not (
            isinstance(value_set, Mapping) and isinstance(value_set.get("$PARAMETER"), str)
        ):
            raise ConfigurationError(
                f"{kind}({column}): {NEW_VALUE_SHARE_META_KEY} needs expect_column_values_to_be_in_set "
                'with "value_set": {"$PARAMETER": "known_<column>_values"}'
            )
        raw = meta[NEW_VALUE_SHARE_META_KEY]
        share = DEFAULT_MAX_NEW_VALUE_SHARE if raw is None else float(raw)
        if not 0.0 <= share < 1.0:
            raise ConfigurationError(
                f"{kind}({column}): {NEW_VALUE_SHARE_META_KEY} must be a share in [0, 1), not {raw!r}"
            )
        learned[column] = LearnedColumn(column, str(value_set["$PARAMETER"]), share)
    return learned


def count_categories(frame: pd.DataFrame, columns: Iterable[str]) -> dict[int | None, CategoryProfile]:
    """The category counts of a batch: the whole batch (key None) and each organization in it.

    Non-text values are counted by their text (the type expectations report them). Columns missing
    from the frame are left out; organizations are counted only when ``organization_id`` holds
    whole numbers (otherwise a critical expectation fails and nothing is learned anyway).
    """
    present = [str(c) for c in columns if c in frame.columns]
    organizations: pd.Series | None = None
    if "organization_id" in frame.columns and pd.api.types.is_integer_dtype(frame["organization_id"].dtype):
        organizations = frame["organization_id"]
    totals: dict[str, dict[str, int]] = {}
    per_org: dict[int, dict[str, dict[str, int]]] = {}
    for column in present:
        values = frame[column]
        mask = values.notna().to_numpy()
        text = values[mask].astype(str)
        totals[column] = {str(v): int(n) for v, n in text.value_counts(sort=False).items()}
        if organizations is None:
            continue
        pairs = pd.DataFrame({"org": organizations[mask], "value": text}).dropna(subset=["org"])
        for key, rows in pairs.groupby(["org", "value"], sort=False).size().items():
            org, value = cast(tuple[Any, Any], key)
            per_org.setdefault(int(org), {}).setdefault(column, {})[str(value)] = int(rows)
    profiles: dict[int | None, CategoryProfile] = {None: CategoryProfile(len(frame), totals)}
    if organizations is not None:
        for org_key, rows in organizations.dropna().value_counts(sort=False).items():
            org = int(cast(Any, org_key))
            found = per_org.get(org, {})
            profiles[org] = CategoryProfile(int(rows), {c: found.get(c, {}) for c in present})
    return profiles


def known_category_values(
    profile: CategoryProfile | None,
    batch: Mapping[int | None, CategoryProfile],
    column: str,
    *,
    profiled_organizations: Collection[int] | None = None,
) -> frozenset[str] | None:
    """The values of ``column`` that count as known in this run; None: learn them all (no baseline).

    Known: the scope's profile, plus (all-organizations runs, ``profiled_organizations`` given) the
    values of each organization in ``batch`` that has no profile of its own yet: its first run,
    learned rather than judged. No profile of the scope, or a column that never held a value in it
    (never profiled, or always empty): the first values are learned.
    """
    known = None if profile is None else profile.known(column)
    if not known:
        return None
    if profiled_organizations is None:
        return known
    first_run = {
        value
        for org, counts in batch.items()
        if org is not None and org not in profiled_organizations
        for value in counts.value_counts.get(column, {})
    }
    return known | first_run


def new_category_values(
    counts: Mapping[str, int], row_count: int, known: Collection[str] | None, max_share: float
) -> list[NewCategoryValue]:
    """The batch's values not in ``known`` whose share of its ``row_count`` rows is above ``max_share``.

    Most rows first. ``known`` None (no baseline: the first run) means nothing is new.
    """
    if known is None or row_count <= 0:
        return []
    new = [
        NewCategoryValue(value, rows, rows / row_count)
        for value, rows in counts.items()
        if value not in known and rows / row_count > max_share
    ]
    return sorted(new, key=lambda n: (-n.rows, n.value))


def accepted_category_values(
    counts: Mapping[str, int], row_count: int, known: Collection[str] | None, max_share: float
) -> list[str]:
    """The value set the suite checks: the known values and the batch's new values at or below
    ``max_share``, so that the expectation fails exactly on ``new_category_values``. Sorted."""
    flagged = {n.value for n in new_category_values(counts, row_count, known, max_share)}
    return sorted(set(known or ()) | {value for value in counts if value not in flagged})


def merge_category_profile(previous: CategoryProfile | None, batch: CategoryProfile) -> CategoryProfile:
    """The profile an accepted run stores: the batch's counts and rows; values and columns the
    previous profile knew and the batch no longer has stay known, with 0 rows."""
    merged: dict[str, dict[str, int]] = {}
    if previous is not None:
        for column, counts in previous.value_counts.items():
            merged[column] = dict.fromkeys(counts, 0)
    for column, counts in batch.value_counts.items():
        merged.setdefault(column, {}).update({value: int(rows) for value, rows in counts.items()})
    return CategoryProfile(batch.row_count, merged)


def _profile_scope(organization_id: int | None) -> Any:
    return (
        CategoryProfileRow.organization_id.is_(None)
        if organization_id is None
        else CategoryProfileRow.organization_id == organization_id
    )


def load_category_profile(
    engine: sa.Engine, dataset: str, organization_id: int | None
) -> CategoryProfile | None:
    """The learned category profile of a dataset and scope (None: no accepted run of that scope yet)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                CategoryProfileRow.row_count,
                CategoryProfileRow.value_counts,
                CategoryProfileRow.validation_run_id,
            ).where(CategoryProfileRow.dataset == dataset_name(dataset), _profile_scope(organization_id))
        ).first()
    if row is None:
        return None
    return CategoryProfile(int(row.row_count), dict(row.value_counts or {}), row.validation_run_id)


def profiled_organizations(engine: sa.Engine, dataset: str) -> frozenset[int]:
    """The organizations that have a category profile of ``dataset`` (an accepted run included them)."""
    with engine.connect() as conn:
        ids = conn.scalars(
            sa.select(CategoryProfileRow.organization_id).where(
                CategoryProfileRow.dataset == dataset_name(dataset),
                CategoryProfileRow.organization_id.is_not(None),
            )
        ).all()
    return frozenset(int(i) for i in ids if i is not None)


def store_category_profiles(conn: sa.Connection, report: ValidationReport) -> int:
    """Learn the report's batch: the profile of its scope and, for an all-organizations run, of every
    organization in it. Only when no critical expectation failed; returns the profiles written.

    ``record_validation`` calls it in the transaction that writes the run's row.
    """
    batch = report.category_counts
    if not report.success or None not in batch or batch[None].row_count == 0:
        return 0  # rejected data, or no rows: nothing to learn (an empty profile would flag everything)
    # an all-organizations batch is learned for that scope and for each organization in it
    scoped = {report.organization_id: batch[None]}
    targets: dict[int | None, CategoryProfile] = dict(batch) if report.organization_id is None else scoped
    table = cast(sa.Table, CategoryProfileRow.__table__)
    query = sa.select(
        table.c.id,
        table.c.organization_id,
        table.c.row_count,
        table.c.value_counts,
        table.c.validation_run_id,
    ).where(table.c.dataset == report.dataset)
    if report.organization_id is not None:
        query = query.where(table.c.organization_id == report.organization_id)
    existing = {row.organization_id: row for row in conn.execute(query)}
    now = utcnow()
    updates, inserts = [], []
    for scope, counts in targets.items():
        old = existing.get(scope)
        previous = None if old is None else CategoryProfile(old.row_count, dict(old.value_counts or {}))
        merged = merge_category_profile(previous, counts)
        values = {
            "row_count": merged.row_count,
            "value_counts": {c: dict(v) for c, v in merged.value_counts.items()},
            "validation_run_id": report.run_row_id,
            "updated_at": now,
        }
        if old is None:
            inserts.append({"dataset": report.dataset, "organization_id": scope, "created_at": now, **values})
        else:
            updates.append({"profile_id": old.id, **values})
    if updates:
        conn.execute(sa.update(table).where(table.c.id == sa.bindparam("profile_id")), updates)
    if inserts:
        conn.execute(sa.insert(table), inserts)
    return len(targets)


# ---------------------------------------------------------------------------------------------
# Running a suite


def validate_frame(
    dataset: str,
    frame: pd.DataFrame,
    *,
    reference_date: dt.date | None = None,
    previous_row_count: int | None = None,
    context_root: Path | str | None = None,
    organization_id: int | None = None,
    run_id: str = "cli",
    category_profile: CategoryProfile | None = None,
    profiled_organizations: Collection[int] | None = None,
) -> ValidationReport:
    """Run the dataset's suite on ``frame`` (one batch) and build its Data Docs page. No database.

    ``previous_row_count`` is the baseline of the volume check (None: first run, the check passes);
    ``category_profile`` the learned categories of the scope (None: first run, the batch's values are
    learned); ``profiled_organizations`` (all-organizations runs) the organizations with a profile of
    their own: the values of the others are learned too. ``organization_id`` and ``run_id`` only label
    the report and the Data Docs run name.
    """
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    started = time.perf_counter()
    dataset = dataset_name(dataset)
    suite_name = DATASET_SUITES[dataset]
    reference_date = reference_date or dt.datetime.now(dt.UTC).date()
    frame = normalise_frame(dataset, frame)
    context = open_context(context_root)
    definition = context.validation_definitions.get(suite_name)
    suite = definition.suite
    parameters = suite_parameters(suite, reference_date=reference_date, previous_row_count=previous_row_count)
    learned = learned_columns(suite)
    category_counts = count_categories(frame, learned)
    batch = category_counts[None]
    new_values: dict[str, list[NewCategoryValue]] = {}
    for column, spec in learned.items():
        known = known_category_values(
            category_profile, category_counts, column, profiled_organizations=profiled_organizations
        )
        counts = batch.value_counts.get(column, {})
        parameters[spec.parameter] = accepted_category_values(
            counts, batch.row_count, known, spec.max_new_value_share
        )
        new_values[spec.expectation] = new_category_values(
            counts, batch.row_count, known, spec.max_new_value_share
        )
    scope = "all" if organization_id is None else f"org{organization_id}"
    run_identifier = RunIdentifier(run_name=_safe_name(f"{run_id}-{scope}"), run_time=dt.datetime.now(dt.UTC))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suite_result = definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters,
            result_format=RESULT_FORMAT,
            run_id=run_identifier,
        )
        suite_key = ExpectationSuiteIdentifier(name=suite_name)
        result_key = ValidationResultIdentifier(
            expectation_suite_identifier=suite_key,
            run_id=run_identifier,
            batch_identifier=suite_result.batch_id,
        )
        resources: list[Any] = [result_key]
        if _suite_page_outdated(context, suite_name):
            resources.append(suite_key)
        context.build_data_docs(site_names=[DATA_DOCS_SITE], resource_identifiers=resources)
    outcomes = [
        _with_new_values(outcome, learned, new_values, category_counts, organization_id)
        for outcome in _outcomes(suite_result)
    ]
    report = ValidationReport(
        dataset=dataset,
        organization_id=organization_id,
        row_count=len(frame),
        success=not any(not o.success and o.severity == "critical" for o in outcomes),
        outcomes=outcomes,
        data_docs_path=_data_docs_page(context, result_key),
        snapshot_hash=snapshot_hash(frame),
        reference_date=reference_date,
        previous_row_count=previous_row_count,
        category_baseline_run_id=None if category_profile is None else category_profile.validation_run_id,
        category_counts=category_counts,
    )
    report.seconds = time.perf_counter() - started
    log.info("%s (%.2fs)", report.summary(), report.seconds)
    return report


def _with_new_values(
    outcome: ExpectationOutcome,
    learned: Mapping[str, LearnedColumn],
    new_values: Mapping[str, list[NewCategoryValue]],
    category_counts: Mapping[int | None, CategoryProfile],
    organization_id: int | None,
) -> ExpectationOutcome:
    """A learned categorical outcome names its new values, their rows and shares (and, on an
    all-organizations run, the organizations holding them) instead of the long accepted value set."""
    spec = next((s for s in learned.values() if s.expectation == outcome.expectation), None)
    if spec is None:
        return outcome
    details = {k: v for k, v in outcome.details.items() if k != "value_set"}
    found = new_values.get(outcome.expectation, [])
    if not outcome.success and found:
        listed = []
        for new in found:
            entry = new.as_dict()
            if organization_id is None:
                holders = sorted(
                    org
                    for org, counts in category_counts.items()
                    if org is not None and new.value in counts.value_counts.get(spec.column, {})
                )
                entry["organizations"] = len(holders)
                entry["organization_ids"] = holders[:ORGANIZATIONS_LISTED]
            listed.append(entry)
        details["new_values"] = listed
        details[NEW_VALUE_SHARE_META_KEY] = spec.max_new_value_share
    return replace(outcome, details=details)


def _site_dir(context: AbstractDataContext) -> Path:
    return Path(str(context.root_directory)) / "uncommitted" / "data_docs" / DATA_DOCS_SITE


def _suite_page_outdated(context: AbstractDataContext, suite_name: str) -> bool:
    """The suite's own page (linked from the index) is rendered when missing or older than the suite."""
    page = _site_dir(context) / "expectations" / f"{suite_name}.html"
    source = Path(str(context.root_directory)) / "expectations" / f"{suite_name}.json"
    try:
        return page.stat().st_mtime < source.stat().st_mtime
    except FileNotFoundError:
        return True


def _safe_name(text: str) -> str:
    """A run name usable as a directory name (Airflow run ids carry ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120] or "run"


def _data_docs_page(context: AbstractDataContext, result_key: Any) -> str:
    """The local file of the Data Docs page of this validation result (the site index if missing)."""
    for site in context.get_docs_sites_urls(resource_identifier=result_key, site_names=[DATA_DOCS_SITE]):
        url = site.get("site_url")
        if url:
            path = Path(unquote(urlparse(url).path))
            if path.is_file():
                return str(path)
    return str(_site_dir(context) / "index.html")


def _outcomes(suite_result: ExpectationSuiteValidationResult) -> list[ExpectationOutcome]:
    outcomes = []
    for result in suite_result.results:
        config = result.expectation_config
        if config is None:  # pragma: no cover - GX always attaches the configuration
            continue
        outcomes.append(
            ExpectationOutcome(
                expectation=expectation_name(config.type, config.kwargs),
                severity=expectation_severity(config.meta, getattr(config, "severity", None)),
                success=bool(result.success),
                details=_details(result),
            )
        )
    return outcomes


def expectation_name(expectation_type: str, kwargs: Mapping[str, Any]) -> str:
    """``expect_x(column)``, ``expect_x(column_A, column_B)`` or ``expect_x`` for table expectations."""
    if kwargs.get("column") is not None:
        args = [str(kwargs["column"])]
    elif kwargs.get("column_A") is not None:
        args = [str(kwargs["column_A"]), str(kwargs.get("column_B"))]
    elif kwargs.get("column_list"):
        args = [str(c) for c in kwargs["column_list"]]
    else:
        args = []
    return f"{expectation_type}({', '.join(args)})" if args else expectation_type


def expectation_severity(meta: Mapping[str, Any] | None, native: Any = None) -> str:
    """``meta.severity`` (critical | warning); missing or unknown counts as critical (fail safe)."""
    value = (meta or {}).get("severity")
    if value is None and native is not None:
        value = getattr(native, "value", native)
    value = str(value).lower() if value is not None else "critical"
    return value if value in SEVERITIES else "critical"


_DETAIL_KEYS = (
    "observed_value",
    "element_count",
    "missing_count",
    "unexpected_count",
    "unexpected_percent",
    "partial_unexpected_list",
    "details",
)
_BOUND_KEYS = ("min_value", "max_value", "strict_min", "strict_max", "type_", "value_set")


def _details(result: ExpectationValidationResult) -> dict[str, Any]:
    raw = result.result or {}
    details: dict[str, Any] = {key: raw[key] for key in _DETAIL_KEYS if key in raw}
    if "partial_unexpected_list" in details:
        details["partial_unexpected_list"] = list(details["partial_unexpected_list"])[
            :PARTIAL_UNEXPECTED_VALUES
        ]
    config = result.expectation_config
    if config is not None:
        for key in _BOUND_KEYS:
            value = config.kwargs.get(key)
            if value is not None and not (key == "value_set" and result.success):
                details[key] = value
    message = _exception_message(result.exception_info)
    if message:
        details["exception"] = message
    return dict(_jsonable(details))


def _exception_message(info: Any) -> str | None:
    """GX reports exceptions either flat or keyed by metric; the first message, one line."""
    if not info:
        return None
    candidates: Iterable[Any] = [info] if "raised_exception" in info else info.values()
    for entry in candidates:
        if isinstance(entry, Mapping) and entry.get("raised_exception"):
            message = str(entry.get("exception_message") or "exception")
            return message.strip().splitlines()[0][:500]
    return None


def _jsonable(value: Any) -> Any:
    """Plain JSON types: timestamps as ISO strings, numpy scalars as Python, NaN as None."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if _is_null(value):
        return None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return _jsonable(float(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# The whole step: load, validate, record, alert


def validate_dataset(
    dataset: str,
    organization_id: int | None = None,
    *,
    engine: sa.Engine | None = None,
    reference_date: dt.date | None = None,
    run_id: str = "cli",
    raise_alerts: bool = True,
    context_root: Path | str | None = None,
) -> ValidationReport:
    """Validate a dataset (all organizations, or one), record a ``validation_runs`` row, raise alerts.

    Returns the report; does not raise when expectations fail (``require_valid`` does). The volume
    baseline is the latest ``validation_runs`` row of the same dataset and organization scope; the
    categorical checks compare with the scope's learned ``category_profiles`` row, and a run with no
    failed critical expectation updates the profiles (``store_category_profiles``).
    """
    dataset = dataset_name(dataset)
    engine = engine or get_engine()
    require_current_schema(engine)
    if organization_id is not None:
        with engine.connect() as conn:
            if conn.scalar(sa.select(Organization.id).where(Organization.id == organization_id)) is None:
                raise NotFoundError(f"organization {organization_id} does not exist")
    frame = load_frame(dataset, organization_id, engine=engine)
    previous = previous_row_count(engine, dataset, organization_id)
    profile = load_category_profile(engine, dataset, organization_id)
    report = validate_frame(
        dataset,
        frame,
        reference_date=reference_date,
        previous_row_count=previous,
        context_root=context_root,
        organization_id=organization_id,
        run_id=run_id,
        category_profile=profile,
        profiled_organizations=(
            profiled_organizations(engine, dataset)
            if organization_id is None and profile is not None
            else None
        ),
    )
    return record_validation(report, engine=engine, run_id=run_id, raise_alerts=raise_alerts)


def record_validation(
    report: ValidationReport, *, engine: sa.Engine, run_id: str = "cli", raise_alerts: bool = True
) -> ValidationReport:
    """Write the report's ``validation_runs`` row and raise its alerts; fills ``run_row_id``/``alert_ids``.

    When no critical expectation failed, the batch's categories become the learned profile of the
    scope (``store_category_profiles``, same transaction). ``validate_dataset`` calls it; call it
    yourself after ``validate_frame`` on a frame you loaded.
    """
    failed = [
        {"expectation": o.expectation, "severity": o.severity, **_failure_numbers(o)}
        for o in report.outcomes
        if not o.success
    ]
    for attempt in (1, 2):
        try:
            with engine.begin() as conn:
                report.run_row_id = conn.scalar(
                    sa.insert(ValidationRun)
                    .values(
                        dataset=report.dataset,
                        organization_id=report.organization_id,
                        row_count=report.row_count,
                        success=report.success,
                        critical_failed=len(report.critical_failures),
                        warning_failed=len(report.warning_failures),
                        failed_expectations=failed,
                        report_path=report.data_docs_path,
                        snapshot_hash=report.snapshot_hash,
                        run_id=run_id,
                    )
                    .returning(ValidationRun.id)
                )
                store_category_profiles(conn, report)
            break
        except sa.exc.IntegrityError:
            # a concurrent run of the same scope created a profile row first: update it instead
            if attempt == 2:
                raise
    if raise_alerts:
        report.alert_ids = _raise_validation_alerts(engine, report, run_id)
    return report


def previous_row_count(engine: sa.Engine, dataset: str, organization_id: int | None) -> int | None:
    """Row count of the latest validation run of this dataset and organization scope (None: first run)."""
    scope = (
        ValidationRun.organization_id.is_(None)
        if organization_id is None
        else ValidationRun.organization_id == organization_id
    )
    with engine.connect() as conn:
        value = conn.scalar(
            sa.select(ValidationRun.row_count)
            .where(ValidationRun.dataset == dataset_name(dataset), scope)
            .order_by(ValidationRun.created_at.desc(), ValidationRun.id.desc())
            .limit(1)
        )
    return None if value is None else int(value)


def _failure_numbers(outcome: ExpectationOutcome) -> dict[str, Any]:
    keys = ("observed_value", "unexpected_count", "partial_unexpected_list", "exception")
    numbers = {key: outcome.details[key] for key in keys if key in outcome.details}
    if outcome.details.get("new_values"):
        numbers["new_values"] = outcome.details["new_values"][:NEW_VALUES_DESCRIBED]
        numbers[NEW_VALUE_SHARE_META_KEY] = outcome.details.get(NEW_VALUE_SHARE_META_KEY)
    return numbers


_RUNBOOK = {
    "critical": (
        "Open the GX report (links.gx_report) to see the failing rows; fix them at the source and re-import "
        "(`neuracrm-mlops import {dataset} FILE --org ID`), then re-run `{command}`. Training of models on "
        "this dataset stays blocked and the current champion keeps serving until validation passes."
    ),
    "warning": (
        "Training went on. Open the GX report (links.gx_report) and check the flagged values with the data "
        "owner. New categorical values are learned by a run without critical failures: if they are "
        "right, nothing to do; otherwise fix the source, re-import and re-run `{command}`. For any other "
        "warning, if the data is right adjust the suite in expectations/ (docs/validation.md)."
    ),
}


def _raise_validation_alerts(engine: sa.Engine, report: ValidationReport, run_id: str) -> list[int]:
    """One alert per failed severity level, deduplicated per dataset, scope and severity."""
    scope_key = "all" if report.organization_id is None else str(report.organization_id)
    command = f"neuracrm-mlops validate {report.dataset}" + (
        f" --org {report.organization_id}" if report.organization_id is not None else ""
    )
    alert_ids = []
    for severity, failures in (("critical", report.critical_failures), ("warning", report.warning_failures)):
        if not failures:
            continue
        names = ", ".join(o.expectation for o in failures)
        lines = [
            f"{report.dataset} validation ({report.scope}, {report.row_count:,} rows): "
            f"{len(failures)} {severity} expectation(s) failed: {names}.",
            *(f"- {o.expectation}: {_describe_failure(o)}" for o in failures),
            f"Report: {report.data_docs_path}",
        ]
        ref = raise_alert(
            engine,
            kind="validation_failed",
            severity=severity,
            title=f"{report.dataset} validation failed ({report.scope}): {len(failures)} {severity} "
            f"expectation(s)",
            message="\n".join(lines),
            dedup_key=f"validation:{report.dataset}:{scope_key}:{severity}",
            organization_id=report.organization_id,
            metrics={
                "row_count": report.row_count,
                "previous_row_count": report.previous_row_count,
                "failed": [{"expectation": o.expectation, **_failure_numbers(o)} for o in failures],
                "snapshot_hash": report.snapshot_hash,
                "validation_run_id": report.run_row_id,
                "run_id": run_id,
            },
            action_taken="training blocked" if severity == "critical" else "none: training goes on",
            runbook=_RUNBOOK[severity].format(dataset=report.dataset, command=command),
            links={"gx_report": report.data_docs_path},
        )
        alert_ids.append(ref.id)
    return alert_ids


def _describe_failure(outcome: ExpectationOutcome) -> str:
    details = outcome.details
    if "exception" in details:
        return f"could not be evaluated: {details['exception']}"
    if details.get("new_values"):
        return _describe_new_values(details["new_values"], details.get(NEW_VALUE_SHARE_META_KEY))
    parts = []
    if "unexpected_count" in details:
        parts.append(f"{details['unexpected_count']} unexpected value(s)")
        if details.get("partial_unexpected_list"):
            parts.append("e.g. " + ", ".join(map(str, details["partial_unexpected_list"][:3])))
    if "observed_value" in details:
        observed = details["observed_value"]
        parts.append("no value to compute (no rows?)" if observed is None else f"observed {observed}")
    return "; ".join(parts) or "failed"


def _describe_new_values(new_values: list[dict[str, Any]], max_share: Any) -> str:
    """``'crypto' on 12.0% of the rows (36; organization 3), ...``: what is new, and how much."""
    described = []
    for entry in new_values[:NEW_VALUES_DESCRIBED]:
        where = ""
        orgs = entry.get("organization_ids")
        if orgs:
            count = int(entry.get("organizations", len(orgs)))
            shown = ", ".join(map(str, orgs[:NEW_VALUES_DESCRIBED]))
            shown += f" and {count - NEW_VALUES_DESCRIBED} more" if count > NEW_VALUES_DESCRIBED else ""
            where = f"; organization{'s' if count > 1 else ''} {shown}"
        described.append(f"{entry['value']!r} on {entry['share']:.1%} of the rows ({entry['rows']:,}{where})")
    more = len(new_values) - NEW_VALUES_DESCRIBED
    threshold = f"{float(max_share):.1%}" if max_share is not None else "the threshold"
    return (
        f"{len(new_values)} value(s) never accepted before for this scope, each above {threshold} of "
        f"the rows: " + ", ".join(described) + (f" and {more} more" if more > 0 else "")
    )


def require_valid(report: ValidationReport) -> None:
    """Raise ValidationFailedError when a critical expectation failed (fails the Airflow task)."""
    if report.critical_failures:
        raise ValidationFailedError(report)


# what training logs as the validation's lineage (``validate_for_training``)
VALIDATION_SUMMARY_KEYS = (
    "dataset",
    "organization_id",
    "row_count",
    "success",
    "run_row_id",
    "data_docs_path",
    "snapshot_hash",
    "critical_failures",
    "warning_failures",
)


def validate_for_training(dataset: str, *, run_id: str, organization_id: int | None = None) -> dict[str, Any]:
    """Validate ``dataset`` with its Great Expectations suite; raise ValidationFailedError when critical.

    Alerts are written by ``validate_dataset`` in both cases (critical: training blocked; warning:
    training goes on). Returns the validation summary that training logs as lineage."""
    report = validate_dataset(dataset, organization_id, run_id=run_id)
    require_valid(report)
    full = report.as_dict()
    return {key: full[key] for key in VALIDATION_SUMMARY_KEYS if key in full}
