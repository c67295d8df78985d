"""Real public datasets mapped to the platform's documented import formats (README, "Import file formats").

The files live in ``../shared/datasets/`` beside the checkout (``NEURACRM_SHARED_DATASETS`` overrides
the folder); they are read at run time and never copied into the repository. Each mapping writes
what a CRM export would hold and nothing a real export could not know:

- **UCI Bank Marketing** -> ``leads``: one lead per call, ``converted`` from ``y``. ``duration`` (known
  only after the call) is dropped. ``job`` is the job title, ``contact`` the source; every other column
  is an unknown column (kept by ``import`` in ``attributes``). ``"unknown"`` and ``pdays = 999`` are
  the data's missing-value codes and become empty cells. The rows are in time order (May 2008 to
  Nov 2010) without a year: the year is rebuilt from the month turning back, and ``created_at``
  spreads each month's rows over its days in file order.
- **Financial PhraseBank (50Agree)** -> ``interactions`` with ``sentiment_label``: latin-1 decoded,
  exact duplicates dropped once, sentences with conflicting labels dropped. A seeded stratified 20%
  gets the latest ``created_at``, so the platform's time-based holdout is exactly that 20%.
- **ABS Australian retail turnover** -> ``sales``: one organization per series (``series_id``),
  ``month`` and ``revenue`` (turnover, AUD millions). No sums across the industry hierarchy.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
BANK_FIRST_YEAR = 2008


def datasets_dir() -> Path:
    """The shared datasets folder (``NEURACRM_SHARED_DATASETS`` or ``../shared/datasets``)."""
    return Path(os.environ.get("NEURACRM_SHARED_DATASETS") or REPO.parent / "shared" / "datasets")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the real datasets are read from ../shared/datasets "
            "(set NEURACRM_SHARED_DATASETS to another folder)"
        )
    return path


# ---------------------------------------------------------------------------------------------
# Bank Marketing -> leads


def bank_leads(limit: int | None = None, *, start: int = 0) -> pd.DataFrame:
    """Calls as leads in the documented ``leads`` format (rows ``start .. start+limit`` in time order)."""
    raw = pd.read_csv(
        _require(datasets_dir() / "bank_marketing" / "bank-additional-full.csv"), sep=";", dtype=str
    )
    month_index = raw["month"].map({m: i + 1 for i, m in enumerate(MONTHS)}).astype(int)
    # the year turns when the month goes back (the file is in date order, no year column)
    year = BANK_FIRST_YEAR + (month_index.diff().fillna(0) < 0).cumsum()
    period = year.astype(str) + "-" + month_index.astype(str).str.zfill(2)
    created = []
    for _, group in raw.groupby(period, sort=False):
        first = dt.datetime.strptime(period[group.index[0]], "%Y-%m").replace(tzinfo=dt.UTC)
        days = 28 * 24 * 3600
        step = days / max(len(group), 1)
        created.extend(first + dt.timedelta(seconds=round(i * step)) for i in range(len(group)))
    frame = raw.replace({"unknown": ""})
    frame.loc[frame["pdays"] == "999", "pdays"] = ""
    leads = pd.DataFrame(
        {
            "lead_id": [f"bank-{i + 1:06d}" for i in range(len(raw))],
            "created_at": [c.isoformat() for c in created],
            "job_title": frame["job"],
            "source": frame["contact"],
        }
    )
    for column in raw.columns:
        if column in {"job", "contact", "duration", "y"}:
            continue
        leads[column.replace(".", "_")] = frame[column]
    leads["converted"] = np.where(raw["y"] == "yes", "true", "false")
    leads = leads.iloc[start : None if limit is None else start + limit].reset_index(drop=True)
    return leads


def bank_raw_features(leads: pd.DataFrame) -> pd.DataFrame:
    """The same raw columns as plain features for the scikit-learn baselines (no ``duration``)."""
    return leads.drop(columns=["lead_id", "created_at", "converted"]).replace({"": np.nan})


BANK_DOCUMENTED = ("lead_id", "created_at", "job_title", "source")


def bank_as_crm_leads(raw: pd.DataFrame) -> pd.DataFrame:
    """``bank_leads()`` as the CRM stores it: documented fields as columns, the rest in ``attributes``."""
    from neuracrm_mlops.store.ingest import coerce_attribute

    unknown = [c for c in raw.columns if c not in (*BANK_DOCUMENTED, "converted")]
    leads = raw[list(BANK_DOCUMENTED)].replace({"": None})
    leads["attributes"] = [
        {k: v for k, v in ((c, coerce_attribute(row[c])) for c in unknown) if v is not None}
        for row in raw[unknown].to_dict("records")
    ]
    leads["converted"] = raw["converted"] == "true"
    return leads


def bank_baseline_probabilities(
    raw_train: pd.DataFrame, raw_test: pd.DataFrame, y: np.ndarray
) -> dict[str, np.ndarray]:
    """Test-part probabilities of the plain scikit-learn baselines fitted on the training part."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    x_train, x_test = bank_raw_features(raw_train), bank_raw_features(raw_test)
    numeric = [
        c
        for c in x_train.columns
        if pd.to_numeric(x_train[c], errors="coerce").notna().sum() == x_train[c].notna().sum()
        and x_train[c].notna().any()
    ]
    categorical = [c for c in x_train.columns if c not in numeric]
    for frame in (x_train, x_test):
        frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
        frame[categorical] = frame[categorical].astype(object).where(frame[categorical].notna(), "missing")
    logistic = make_pipeline(
        ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
            ]
        ),
        LogisticRegression(max_iter=1000),
    )
    ordinal = make_pipeline(
        ColumnTransformer(
            [
                ("num", "passthrough", numeric),
                ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), categorical),
            ]
        ),
        HistGradientBoostingClassifier(
            categorical_features=list(range(len(numeric), len(numeric) + len(categorical))), random_state=0
        ),
    )
    out: dict[str, np.ndarray] = {}
    out["LogisticRegression"] = logistic.fit(x_train, y).predict_proba(x_test)[:, 1]
    out["HistGradientBoosting (ordinal)"] = ordinal.fit(x_train, y).predict_proba(x_test)[:, 1]
    typed_train, typed_test = x_train.copy(), x_test.copy()
    for column in categorical:
        dtype = pd.CategoricalDtype(sorted(set(typed_train[column])))
        typed_train[column] = typed_train[column].astype(dtype)
        known = typed_test[column].isin(dtype.categories)  # unseen categories become missing
        typed_test[column] = typed_test[column].where(known).astype(dtype)
    booster = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
    out["HistGradientBoosting (from_dtype)"] = booster.fit(typed_train, y).predict_proba(typed_test)[:, 1]
    return out


# ---------------------------------------------------------------------------------------------
# Financial PhraseBank -> interactions


@dataclass(frozen=True)
class Sentences:
    interactions: pd.DataFrame  # the documented ``interactions`` format, holdout rows newest
    holdout_ids: list[str]


def phrasebank_sentences() -> pd.DataFrame:
    """Sentence and label per line, deduplicated (conflicting duplicates dropped)."""
    path = _require(datasets_dir() / "financial_phrasebank" / "Sentences_50Agree.txt")
    rows = []
    for line in path.read_bytes().decode("latin-1").splitlines():
        if not line.strip():
            continue
        text, _, label = line.rpartition("@")
        rows.append((text.strip(), label.strip()))
    frame = pd.DataFrame(rows, columns=["text", "sentiment_label"]).drop_duplicates()
    return frame[~frame["text"].duplicated(keep=False)].reset_index(drop=True)


def phrasebank_interactions(
    *, seed: int = 0, holdout_share: float = 0.2, limit: int | None = None
) -> Sentences:
    """Labelled interactions; a seeded stratified ``holdout_share`` is dated after all the others."""
    from sklearn.model_selection import train_test_split

    frame = phrasebank_sentences()
    if limit is not None:
        frame, _ = train_test_split(
            frame, train_size=limit, stratify=frame["sentiment_label"], random_state=seed
        )
    train_part, holdout = train_test_split(
        frame, test_size=holdout_share, stratify=frame["sentiment_label"], random_state=seed
    )
    ordered = pd.concat([train_part, holdout], ignore_index=True)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    ordered.insert(0, "interaction_id", [f"fpb-{i + 1:05d}" for i in range(len(ordered))])
    ordered["created_at"] = [(start + dt.timedelta(hours=i)).isoformat() for i in range(len(ordered))]
    ordered["channel"] = "news"
    holdout_ids = list(ordered["interaction_id"].iloc[len(train_part) :])
    return Sentences(
        ordered[["interaction_id", "text", "created_at", "channel", "sentiment_label"]], holdout_ids
    )


# ---------------------------------------------------------------------------------------------
# Australian retail turnover -> sales per organization


def retail_series(series_ids: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Each series as a ``sales`` frame (``month``, ``revenue``), keyed by ``series_id``, in file order."""
    raw = pd.read_csv(_require(datasets_dir() / "aus_retail" / "aus_retail.csv"), dtype={"month": str})
    out: dict[str, pd.DataFrame] = {}
    for series_id, group in raw.groupby("series_id", sort=False):
        if series_ids is not None and series_id not in series_ids:
            continue
        out[str(series_id)] = pd.DataFrame(
            {"month": group["month"].to_numpy(), "revenue": group["turnover"].to_numpy()}
        )
    return out


def split_last(series: pd.DataFrame, months: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """History and the last ``months`` months (the test window)."""
    return series.iloc[:-months].reset_index(drop=True), series.iloc[-months:].reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """The frame as an import CSV (UTF-8, comma-separated, empty cells for missing values)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]
