"""Data drift and bias statistics for the monitor: pure functions, frames in, dataclasses out.

**Drift** (:func:`feature_drift`): each feature of the current window against the training reference.

- Numeric features: two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``). Values that are
  not finite numbers (null, NaN, inf, text) count as missing.
- Categorical features (object, string, category and bool columns): chi-square test of the 2 x K
  contingency table reference/current x category (``scipy.stats.chi2_contingency``, default Yates
  correction when only two columns remain). Categories are compared as text (``True``, ``3`` for
  ``3.0``, so ``1`` and ``1.0`` are one category); nulls count as missing. Categories seen only in
  the current window take part like any other and are listed in ``unseen_categories``. So that every
  expected count is >= 5 (the chi-square approximation's rule of thumb), categories whose column total
  is too small are merged into one ``__other__`` column (listed in ``merged_categories``); if that
  column is still too small, the next rarest categories join it. When a single column remains there
  is nothing to compare: statistic 0, p-value 1.
- Sample size: a feature with fewer than ``min_samples`` (50) non-missing values on either side is
  reported as ``insufficient_data``, never as drift. Features absent from either frame are reported
  as ``missing``, never dropped.
- Many tests: the p-values of the features actually tested are adjusted with the Benjamini-Hochberg
  false discovery rate procedure; a feature drifts when its adjusted p-value is <= ``alpha`` (0.05)
  and its PSI is >= ``min_psi`` (0 by default, i.e. the test alone decides; raise it to ignore
  statistically significant but tiny shifts in very large windows).
- PSI (population stability index, ``sum((cur - ref) * ln(cur / ref))`` over bins, shares floored
  at 1e-4) is reported for every feature present on both sides with at least one value, tested or
  not. Numeric bins: 10 quantile bins of the reference plus one bin below the reference minimum and
  one above its maximum (so values out of the training range always count). Categorical bins: the
  categories themselves, unmerged. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 large.

**Bias** (:func:`bias_metrics`): across the groups of one attribute, for a binary prediction
(``prediction == positive_label``):

- demographic parity difference: highest minus lowest positive-prediction rate;
- equal opportunity difference: highest minus lowest true-positive rate, i.e. the positive-prediction
  rate among rows whose outcome is positive. None without an outcome column or when fewer than two
  groups have ``min_group_size`` positive outcomes.
- Groups with fewer than ``min_group_size`` (30) rows are listed in ``excluded_groups`` with their
  sizes; rows with a null attribute or prediction are counted in ``rows_skipped``.

**Reference profile** (:func:`reference_profile`, :func:`frame_from_profile`): a JSON-safe sample
(at most ``max_rows`` rows, seeded) and summary of the training features, stored with a model
version and turned back into a frame for :func:`feature_drift` (see :func:`drift_against_profile`).
Missing values are ``null`` in the JSON, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from scipy import stats

FeatureKind = Literal["numeric", "categorical"]
FeatureStatus = Literal["ok", "drift", "insufficient_data", "missing"]

PSI_BINS = 10
PSI_EPSILON = 1e-4
MIN_EXPECTED_COUNT = 5.0
OTHER_CATEGORY = "__other__"
PROFILE_FORMAT = 1
PROFILE_TOP_CATEGORIES = 20
# where a training run stores the reference profile of its features (an MLflow run artifact)
REFERENCE_ARTIFACT = "reference/features.json"


# ---------------------------------------------------------------------------------------------------
# value handling shared by drift, bias and profiles


def category_key(value: Any) -> str:
    """The text a category is compared as: ``True``/``False`` for booleans, ``3`` for 3 and 3.0."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and math.isfinite(float(value)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _categories(series: pd.Series[Any]) -> pd.Series[str]:
    return series[series.notna()].map(category_key).astype(object)


def _numbers(series: pd.Series[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    values: np.ndarray[Any, np.dtype[np.float64]] = pd.to_numeric(series, errors="coerce").to_numpy(
        dtype=float, na_value=np.nan
    )
    finite: np.ndarray[Any, np.dtype[np.float64]] = values[np.isfinite(values)]
    return finite


def _json_float(value: float | np.floating[Any] | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def infer_feature_kinds(frame: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """``(numeric, categorical, skipped)`` column names from dtypes: bool, object, string and category
    columns are categorical, other numbers numeric; anything else (dates, durations) is skipped."""
    numeric: list[str] = []
    categorical: list[str] = []
    skipped: list[str] = []
    for column in frame.columns:
        dtype = frame[column].dtype
        name = str(column)
        if ptypes.is_bool_dtype(dtype):
            categorical.append(name)
        elif ptypes.is_numeric_dtype(dtype) and not ptypes.is_complex_dtype(dtype):
            numeric.append(name)
        elif (
            ptypes.is_object_dtype(dtype)
            or ptypes.is_string_dtype(dtype)
            or isinstance(dtype, pd.CategoricalDtype)
        ):
            categorical.append(name)
        else:
            skipped.append(name)
    return numeric, categorical, skipped


def _check_feature_lists(numeric: Sequence[str], categorical: Sequence[str]) -> None:
    for kind, names in (("numeric", numeric), ("categorical", categorical)):
        duplicates = sorted({name for name in names if list(names).count(name) > 1})
        if duplicates:
            raise ValueError(f"{kind} lists {', '.join(duplicates)} more than once")
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise ValueError(f"features listed as both numeric and categorical: {', '.join(both)}")


# ---------------------------------------------------------------------------------------------------
# drift


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift row; ``statistic``/``p_value``/``p_adjusted`` are None when not tested."""

    feature: str
    kind: FeatureKind
    test: Literal["ks", "chi2"]
    statistic: float | None
    p_value: float | None
    p_adjusted: float | None
    psi: float | None
    n_reference: int
    n_current: int
    drifted: bool
    status: FeatureStatus
    unseen_categories: tuple[str, ...] = ()
    merged_categories: tuple[str, ...] = ()
    note: str = ""

    def describe(self) -> str:
        psi = "n/a" if self.psi is None else f"{self.psi:.3f}"
        if self.status == "missing":
            return f"{self.feature}: {self.note}"
        if self.status == "insufficient_data":
            return f"{self.feature}: {self.note} (psi {psi})"
        assert self.p_adjusted is not None and self.statistic is not None
        unseen = f", unseen {', '.join(self.unseen_categories)}" if self.unseen_categories else ""
        return (
            f"{self.feature} ({self.kind}, {self.test} {self.statistic:.3f}, p {self.p_value:.2g}, "
            f"adjusted {self.p_adjusted:.2g}, psi {psi}, n {self.n_reference}/{self.n_current}{unseen})"
        )


@dataclass(frozen=True)
class DriftReport:
    features: tuple[FeatureDrift, ...]
    alpha: float
    min_samples: int
    min_psi: float = 0.0
    skipped_columns: tuple[str, ...] = ()

    @property
    def drifted_features(self) -> list[str]:
        return [row.feature for row in self.features if row.drifted]

    @property
    def any_drift(self) -> bool:
        return any(row.drifted for row in self.features)

    def with_status(self, status: FeatureStatus) -> list[str]:
        return [row.feature for row in self.features if row.status == status]

    def feature(self, name: str) -> FeatureDrift:
        for row in self.features:
            if row.feature == name:
                return row
        raise KeyError(f"no drift row for feature {name!r}")

    def summary(self) -> str:
        """One human-readable line for an alert or a log."""
        tested = [row for row in self.features if row.status in ("ok", "drift")]
        parts = [
            f"{len(self.drifted_features)} of {len(tested)} tested features drifted "
            f"(Benjamini-Hochberg adjusted p <= {self.alpha:g})"
        ]
        parts.extend(row.describe() for row in self.features if row.drifted)
        for status in ("insufficient_data", "missing"):
            names = self.with_status(status)
            if names:
                parts.append(f"{status.replace('_', ' ')}: {', '.join(names)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (no NaN) form for MLflow, alerts and the ledger."""
        rows = []
        for row in self.features:
            data = asdict(row)
            data["unseen_categories"] = list(row.unseen_categories)
            data["merged_categories"] = list(row.merged_categories)
            for key in ("statistic", "p_value", "p_adjusted", "psi"):
                data[key] = _json_float(data[key])
            rows.append(data)
        return {
            "alpha": self.alpha,
            "min_samples": self.min_samples,
            "min_psi": self.min_psi,
            "any_drift": self.any_drift,
            "drifted_features": self.drifted_features,
            "skipped_columns": list(self.skipped_columns),
            "features": rows,
        }


def _psi(reference_shares: np.ndarray[Any, Any], current_shares: np.ndarray[Any, Any]) -> float:
    ref = np.maximum(reference_shares, PSI_EPSILON)
    cur = np.maximum(current_shares, PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _numeric_bins(
    values: np.ndarray[Any, np.dtype[np.float64]], reference: np.ndarray[Any, np.dtype[np.float64]]
) -> np.ndarray[Any, np.dtype[np.intp]]:
    """Bin index per value: 0 below the reference minimum, then the reference's quantile bins, last
    above its maximum."""
    interior = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, PSI_BINS + 1)[1:-1]))
    index = np.searchsorted(interior, values, side="right") + 1
    index[values < reference.min()] = 0
    index[values > reference.max()] = len(interior) + 2
    return index


def numeric_psi(
    reference: np.ndarray[Any, np.dtype[np.float64]], current: np.ndarray[Any, np.dtype[np.float64]]
) -> float:
    """PSI over the reference's quantile bins plus the out-of-range bins (both samples non-empty)."""
    if reference.size == 0 or current.size == 0:
        raise ValueError("PSI needs at least one value on each side")
    size = PSI_BINS + 3
    ref = np.bincount(_numeric_bins(reference, reference), minlength=size) / reference.size
    cur = np.bincount(_numeric_bins(current, reference), minlength=size) / current.size
    return _psi(ref, cur)


def categorical_psi(reference: pd.Series[str], current: pd.Series[str]) -> float:
    """PSI over the union of the categories (both samples non-empty)."""
    if reference.size == 0 or current.size == 0:
        raise ValueError("PSI needs at least one value on each side")
    ref = reference.value_counts(normalize=True)
    cur = current.value_counts(normalize=True)
    categories = sorted(set(ref.index) | set(cur.index))
    return _psi(
        ref.reindex(categories, fill_value=0.0).to_numpy(dtype=float),
        cur.reindex(categories, fill_value=0.0).to_numpy(dtype=float),
    )


def merge_rare_categories(
    counts: pd.DataFrame,
) -> tuple[pd.DataFrame, list[str]]:
    """Merge the columns of a 2 x K count table (rows reference/current) whose expected counts would
    fall below 5 into one ``__other__`` column; returns the table and the merged category names."""
    row_totals = counts.sum(axis=1).to_numpy(dtype=float)
    total = float(row_totals.sum())
    # expected count of cell (i, j) = row_i * column_j / total; the smallest row decides.
    needed = MIN_EXPECTED_COUNT * total / float(row_totals.min())
    column_totals = counts.sum(axis=0).sort_values(kind="stable")
    rare = [str(name) for name, value in column_totals.items() if value < needed]
    if not rare:
        return counts, []
    ascending = [str(name) for name in column_totals.index if str(name) not in rare]
    other = float(column_totals[rare].sum())
    while other < needed and ascending:
        smallest = ascending.pop(0)  # column_totals is sorted ascending
        rare.append(smallest)
        other += float(column_totals[smallest])
    kept = [str(name) for name in counts.columns if str(name) not in rare]
    merged = counts[kept].copy()
    merged[OTHER_CATEGORY] = counts[rare].sum(axis=1)
    return merged, sorted(rare)


def _test_categorical(
    reference: pd.Series[str], current: pd.Series[str]
) -> tuple[float, float, list[str], str]:
    table = pd.DataFrame({"reference": reference.value_counts(), "current": current.value_counts()}).fillna(0)
    counts = table.T.astype(int)
    counts = counts[sorted(counts.columns)]
    merged_table, merged = merge_rare_categories(counts)
    if merged_table.shape[1] < 2:
        return 0.0, 1.0, merged, "a single category after merging rare ones: nothing to compare"
    statistic, p_value, _, _ = stats.chi2_contingency(merged_table.to_numpy())
    return float(statistic), float(p_value), merged, ""


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (monotone, capped at 1), in the input order."""
    if not p_values:
        return []
    adjusted = stats.false_discovery_control(np.asarray(p_values, dtype=float), method="bh")
    return [float(value) for value in np.atleast_1d(adjusted)]


def feature_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    alpha: float = 0.05,
    min_samples: int = 50,
    min_psi: float = 0.0,
) -> DriftReport:
    """Drift of every feature of ``current`` against ``reference``; the rules are in the module docstring.

    Without ``numeric`` and ``categorical`` both are inferred from the reference's dtypes
    (:func:`infer_feature_kinds`); when only one is given, the other is empty.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise ValueError(f"min_samples must be a whole number >= 1, got {min_samples!r}")
    if not math.isfinite(min_psi) or min_psi < 0:
        raise ValueError(f"min_psi must be a number >= 0, got {min_psi!r}")
    skipped: list[str] = []
    if numeric is None and categorical is None:
        numeric_names, categorical_names, skipped = infer_feature_kinds(reference)
    else:
        numeric_names, categorical_names = list(numeric or []), list(categorical or [])
    _check_feature_lists(numeric_names, categorical_names)

    pending: list[dict[str, Any]] = []
    features: list[tuple[str, FeatureKind]] = [(name, "numeric") for name in numeric_names]
    features += [(name, "categorical") for name in categorical_names]
    for name, kind in features:
        row: dict[str, Any] = {
            "feature": name,
            "kind": kind,
            "test": "ks" if kind == "numeric" else "chi2",
            "statistic": None,
            "p_value": None,
            "p_adjusted": None,
            "psi": None,
            "n_reference": 0,
            "n_current": 0,
            "drifted": False,
        }
        absent = [
            side for side, frame in (("reference", reference), ("current", current)) if name not in frame
        ]
        if absent:
            row.update(status="missing", note=f"column missing from the {' and '.join(absent)} data")
            pending.append(row)
            continue
        if kind == "numeric":
            ref_num, cur_num = _numbers(reference[name]), _numbers(current[name])
            row.update(n_reference=int(ref_num.size), n_current=int(cur_num.size))
            if ref_num.size and cur_num.size:
                row["psi"] = numeric_psi(ref_num, cur_num)
        else:
            ref_cat, cur_cat = _categories(reference[name]), _categories(current[name])
            row.update(n_reference=int(ref_cat.size), n_current=int(cur_cat.size))
            row["unseen_categories"] = tuple(sorted(set(cur_cat) - set(ref_cat)))
            if ref_cat.size and cur_cat.size:
                row["psi"] = categorical_psi(ref_cat, cur_cat)
        if min(row["n_reference"], row["n_current"]) < min_samples:
            row.update(
                status="insufficient_data",
                note=(
                    f"{row['n_reference']} reference and {row['n_current']} current values, "
                    f"fewer than {min_samples} on one side"
                ),
            )
            pending.append(row)
            continue
        if kind == "numeric":
            result = stats.ks_2samp(ref_num, cur_num)
            row.update(statistic=float(result.statistic), p_value=float(result.pvalue), status="tested")
        else:
            statistic, p_value, merged, note = _test_categorical(ref_cat, cur_cat)
            row.update(
                statistic=statistic,
                p_value=p_value,
                merged_categories=tuple(merged),
                note=note,
                status="tested",
            )
        pending.append(row)

    tested = [row for row in pending if row["status"] == "tested"]
    for row, adjusted in zip(tested, benjamini_hochberg([row["p_value"] for row in tested]), strict=True):
        drifted = adjusted <= alpha and row["psi"] is not None and row["psi"] >= min_psi
        row.update(p_adjusted=adjusted, drifted=drifted, status="drift" if drifted else "ok")
    return DriftReport(
        features=tuple(FeatureDrift(**row) for row in pending),
        alpha=alpha,
        min_samples=min_samples,
        min_psi=min_psi,
        skipped_columns=tuple(skipped),
    )


# ---------------------------------------------------------------------------------------------------
# bias


@dataclass(frozen=True)
class GroupRates:
    """One group's rates; ``outcome_positives``/``true_positive_rate`` are None without outcomes
    (the rate is also None when the group has fewer than ``min_group_size`` positive outcomes)."""

    group: str
    size: int
    positive_rate: float
    outcome_positives: int | None
    true_positive_rate: float | None


@dataclass(frozen=True)
class BiasReport:
    attribute: str
    groups: tuple[GroupRates, ...]
    excluded_groups: dict[str, int]
    min_group_size: int
    demographic_parity_difference: float | None
    equal_opportunity_difference: float | None
    rows_skipped: int = 0
    notes: tuple[str, ...] = ()
    equal_opportunity_excluded: dict[str, int] = field(default_factory=dict)

    def _extremes(self, rate: str) -> str:
        rated = [
            (getattr(group, rate), group.group) for group in self.groups if getattr(group, rate) is not None
        ]
        high, low = max(rated), min(rated)
        return f"highest {high[1]} {high[0]:.3f}, lowest {low[1]} {low[0]:.3f}"

    def breaches(self, dp_threshold: float = 0.1, eo_threshold: float = 0.1) -> list[str]:
        """Human-readable descriptions of the differences above their thresholds (empty if none)."""
        found: list[str] = []
        dp = self.demographic_parity_difference
        if dp is not None and dp > dp_threshold + 1e-12:
            found.append(
                f"demographic parity difference {dp:.3f} across {self.attribute} exceeds {dp_threshold:.2f} "
                f"(positive-prediction rate {self._extremes('positive_rate')})"
            )
        eo = self.equal_opportunity_difference
        if eo is not None and eo > eo_threshold + 1e-12:
            found.append(
                f"equal opportunity difference {eo:.3f} across {self.attribute} exceeds {eo_threshold:.2f} "
                f"(true-positive rate {self._extremes('true_positive_rate')})"
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["groups"] = [asdict(group) for group in self.groups]
        data["notes"] = list(self.notes)
        return data


def _difference(rates: Iterable[float | None]) -> float | None:
    known = [rate for rate in rates if rate is not None]
    return float(max(known) - min(known)) if len(known) >= 2 else None


def bias_metrics(
    frame: pd.DataFrame,
    *,
    attribute: str,
    prediction: str,
    outcome: str | None = None,
    min_group_size: int = 30,
    positive_label: Hashable = 1,
) -> BiasReport:
    """Demographic parity and equal opportunity differences across ``attribute``; see the module
    docstring. ``prediction`` (and ``outcome``) are positive where equal to ``positive_label``
    (``1`` also matches ``True`` and ``1.0``); threshold scores before calling."""
    for role, column in (("attribute", attribute), ("prediction", prediction), ("outcome", outcome)):
        if column is not None and column not in frame:
            raise ValueError(f"{role} column {column!r} is not in the frame")
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, int) or min_group_size < 1:
        raise ValueError(f"min_group_size must be a whole number >= 1, got {min_group_size!r}")

    usable = frame[frame[attribute].notna() & frame[prediction].notna()]
    rows_skipped = len(frame) - len(usable)
    groups = usable[attribute].map(category_key)
    predicted = (usable[prediction] == positive_label).to_numpy(dtype=bool)
    if outcome is not None:
        known_outcome = usable[outcome].notna().to_numpy(dtype=bool)
        actual = (usable[outcome] == positive_label).to_numpy(dtype=bool) & known_outcome

    rates: list[GroupRates] = []
    excluded: dict[str, int] = {}
    eo_excluded: dict[str, int] = {}
    for name in sorted(groups.unique()):
        mask = (groups == name).to_numpy(dtype=bool)
        size = int(mask.sum())
        if size < min_group_size:
            excluded[name] = size
            continue
        positives: int | None = None
        tpr: float | None = None
        if outcome is not None:
            among = mask & actual
            positives = int(among.sum())
            if positives >= min_group_size:
                tpr = float(predicted[among].mean())
            else:
                eo_excluded[name] = positives
        rates.append(GroupRates(name, size, float(predicted[mask].mean()), positives, tpr))

    notes: list[str] = []
    if rows_skipped:
        notes.append(f"{rows_skipped} rows skipped: null {attribute} or {prediction}")
    if excluded:
        listed = ", ".join(f"{name} ({size})" for name, size in excluded.items())
        notes.append(f"groups smaller than {min_group_size} rows excluded: {listed}")
    dp = _difference(group.positive_rate for group in rates)
    if dp is None:
        notes.append(f"demographic parity needs two groups of >= {min_group_size} rows, found {len(rates)}")
    eo = _difference(group.true_positive_rate for group in rates)
    if outcome is None:
        notes.append("equal opportunity not computed: no outcome column")
    elif eo is None:
        notes.append(
            f"equal opportunity needs two groups with >= {min_group_size} positive outcomes, found "
            f"{sum(group.true_positive_rate is not None for group in rates)}"
        )
    return BiasReport(
        attribute=attribute,
        groups=tuple(rates),
        excluded_groups=excluded,
        min_group_size=min_group_size,
        demographic_parity_difference=dp,
        equal_opportunity_difference=eo,
        rows_skipped=rows_skipped,
        notes=tuple(notes),
        equal_opportunity_excluded=eo_excluded,
    )


# ---------------------------------------------------------------------------------------------------
# reference profile


def _numeric_summary(values: np.ndarray[Any, np.dtype[np.float64]], missing: int) -> dict[str, Any]:
    summary: dict[str, Any] = {"count": int(values.size), "missing": missing}
    keys = ("mean", "std", "min", "p05", "p25", "p50", "p75", "p95", "max")
    if values.size == 0:
        summary.update(dict.fromkeys(keys))
        return summary
    quantiles = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    summary.update(
        mean=_json_float(values.mean()),
        std=_json_float(values.std(ddof=1)) if values.size > 1 else None,
        min=_json_float(values.min()),
        max=_json_float(values.max()),
        **{
            key: _json_float(q) for key, q in zip(("p05", "p25", "p50", "p75", "p95"), quantiles, strict=True)
        },
    )
    return {key: summary[key] for key in ("count", "missing", *keys)}


def reference_profile(
    frame: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    max_rows: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """A JSON-safe profile of the training features: a seeded sample of at most ``max_rows`` rows
    (numbers as floats, categories as text, missing as None) and per-feature summaries of all rows.

    Keys: ``format``, ``numeric``, ``categorical``, ``rows``, ``sampled_rows``, ``seed``,
    ``columns`` (feature -> list of sampled values) and ``summary`` (feature -> statistics).
    """
    numeric, categorical = list(numeric), list(categorical)
    _check_feature_lists(numeric, categorical)
    absent = [name for name in (*numeric, *categorical) if name not in frame]
    if absent:
        raise ValueError(f"profile features missing from the frame: {', '.join(absent)}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be a whole number >= 1, got {max_rows!r}")
    sample = frame
    if len(frame) > max_rows:
        positions = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
        sample = frame.iloc[positions]

    columns: dict[str, list[Any]] = {}
    summary: dict[str, dict[str, Any]] = {}
    for name in numeric:
        values = pd.to_numeric(sample[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        columns[name] = [_json_float(value) for value in values]
        full = _numbers(frame[name])
        summary[name] = _numeric_summary(full, missing=len(frame) - int(full.size))
    for name in categorical:
        columns[name] = [None if pd.isna(value) else category_key(value) for value in sample[name]]
        full_cat = _categories(frame[name])
        counts = full_cat.value_counts()
        summary[name] = {
            "count": int(full_cat.size),
            "missing": len(frame) - int(full_cat.size),
            "distinct": int(counts.size),
            "top": {str(key): int(value) for key, value in counts.head(PROFILE_TOP_CATEGORIES).items()},
        }
    return {
        "format": PROFILE_FORMAT,
        "numeric": numeric,
        "categorical": categorical,
        "rows": len(frame),
        "sampled_rows": len(sample),
        "seed": seed,
        "columns": columns,
        "summary": summary,
    }


def frame_from_profile(profile: dict[str, Any]) -> pd.DataFrame:
    """The profile's sample as a frame: numeric features as float64 (None -> NaN), categorical as text."""
    if profile.get("format") != PROFILE_FORMAT:
        raise ValueError(f"unsupported reference profile format {profile.get('format')!r}")
    columns: dict[str, list[Any]] = profile["columns"]
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"reference profile columns have different lengths: {sorted(lengths)}")
    numeric, categorical = list(profile["numeric"]), list(profile["categorical"])
    absent = [name for name in (*numeric, *categorical) if name not in columns]
    if absent:
        raise ValueError(f"reference profile has no sample for: {', '.join(absent)}")
    data: dict[str, pd.Series[Any]] = {}
    for name in numeric:
        data[name] = pd.Series([np.nan if v is None else v for v in columns[name]], dtype="float64")
    for name in categorical:
        data[name] = pd.Series(columns[name], dtype=object)
    return pd.DataFrame(data)


def drift_against_profile(
    profile: dict[str, Any],
    current: pd.DataFrame,
    *,
    alpha: float = 0.05,
    min_samples: int = 50,
    min_psi: float = 0.0,
) -> DriftReport:
    """:func:`feature_drift` of ``current`` against a stored reference profile and its feature lists."""
    return feature_drift(
        frame_from_profile(profile),
        current,
        numeric=profile["numeric"],
        categorical=profile["categorical"],
        alpha=alpha,
        min_samples=min_samples,
        min_psi=min_psi,
    )
