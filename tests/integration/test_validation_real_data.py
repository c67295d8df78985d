"""Validation of small slices of the three real datasets, imported the way a CRM export is.

The slices come from ``../shared/datasets`` at run time (``benchmarks/real_datasets.py``), are written
as import CSVs under the test's tmp dir and go through ``import_file``: nothing is copied into the
repository. Their vocabularies are not the synthetic generator's (``telephone`` leads, ``news``
interactions), which used to raise a warning on every run. Skipped when the folder is missing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import real_datasets
import sqlalchemy as sa

from neuracrm_mlops.quality.validation import (
    ValidationFailedError,
    load_category_profile,
    require_valid,
    validate_dataset,
)
from neuracrm_mlops.store import synthetic
from neuracrm_mlops.store.db.schema import Alert
from neuracrm_mlops.store.ingest import import_file
from neuracrm_mlops.store.orgs import create_organization

REAL_FILES = (
    Path("bank_marketing") / "bank-additional-full.csv",
    Path("financial_phrasebank") / "Sentences_50Agree.txt",
    Path("aus_retail") / "aus_retail.csv",
)
RETAIL_SERIES = ["A3349335T", "A3349336V"]  # two real series: two organizations
SLICE = 300

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all((real_datasets.datasets_dir() / f).is_file() for f in REAL_FILES),
        reason=f"the real datasets are not in {real_datasets.datasets_dir()} "
        "(../shared/datasets beside the checkout, or NEURACRM_SHARED_DATASETS)",
    ),
]


def _organization(engine: sa.Engine, name: str) -> int:
    with engine.begin() as conn:
        ref, _ = create_organization(conn, name)
    return ref.id


def _import(engine: sa.Engine, frame: pd.DataFrame, dataset: str, organization_id: int, path: Path) -> None:
    summary = import_file(real_datasets.write_csv(frame, path), dataset, organization_id, engine=engine)
    assert summary.quarantined == 0


def _import_real_slices(engine: sa.Engine, tmp_path: Path) -> dict[str, list[int]]:
    """Leads (bank calls), interactions (PhraseBank sentences), sales (two retail series, two orgs)."""
    bank = _organization(engine, "bank")
    _import(engine, real_datasets.bank_leads(SLICE), "leads", bank, tmp_path / "leads.csv")
    phrasebank = _organization(engine, "phrasebank")
    sentences = real_datasets.phrasebank_interactions(limit=SLICE).interactions
    _import(engine, sentences, "interactions", phrasebank, tmp_path / "interactions.csv")
    retail = []
    for series_id, sales in real_datasets.retail_series(RETAIL_SERIES).items():
        retail.append(_organization(engine, f"retail-{series_id}"))
        _import(engine, sales, "sales", retail[-1], tmp_path / f"sales-{series_id}.csv")
    assert len(retail) == 2
    return {"leads": [bank], "interactions": [phrasebank], "sales": retail}


def _alerts(engine: sa.Engine) -> list[sa.Row[tuple[Alert]]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(Alert)).all())


def test_real_slices_validated_twice_raise_no_warning(engine: sa.Engine, tmp_path: Path) -> None:
    organizations = _import_real_slices(engine, tmp_path)
    for dataset in ("leads", "interactions", "sales"):
        first = validate_dataset(dataset, engine=engine, run_id="real-1")
        second = validate_dataset(dataset, engine=engine, run_id="real-2")
        for report in (first, second):
            assert report.success, report.summary()
            assert report.warning_failures == [], report.summary()
        assert first.row_count == second.row_count > 0
        assert second.category_baseline_run_id == first.run_row_id  # compared with what the first learned
    # each organization's own scope too (the two retail series are two organizations)
    for organization_id in organizations["sales"]:
        for _ in range(2):
            scoped = validate_dataset("sales", organization_id, engine=engine, run_id="real-org")
            assert scoped.success and scoped.warning_failures == [], scoped.summary()
    assert _alerts(engine) == []
    # the real vocabularies are learned, and they are not the generator's (which warned before)
    leads = load_category_profile(engine, "leads", organizations["leads"][0])
    interactions = load_category_profile(engine, "interactions", None)
    assert leads is not None and leads.value_counts["source"] == {"telephone": SLICE}
    assert interactions is not None and interactions.value_counts["channel"] == {"news": SLICE}
    assert "telephone" not in synthetic.SOURCES and "news" not in synthetic.CHANNELS


def test_a_genuinely_new_real_value_on_a_large_share_warns_on_the_second_run(
    engine: sa.Engine, tmp_path: Path
) -> None:
    bank = _organization(engine, "bank")
    early = real_datasets.bank_leads(SLICE)  # May 2008: every call by landline
    assert set(early["source"]) == {"telephone"}
    _import(engine, early, "leads", bank, tmp_path / "early.csv")
    first = validate_dataset("leads", engine=engine, run_id="real-1")
    assert first.success and first.warning_failures == [], first.summary()
    later = real_datasets.bank_leads(SLICE, start=20_000)  # 2009: the bank calls mobile phones
    cellular = int((later["source"] == "cellular").sum())
    assert cellular > 0.05 * 2 * SLICE
    _import(engine, later, "leads", bank, tmp_path / "later.csv")
    second = validate_dataset("leads", engine=engine, run_id="real-2")
    assert second.success is True  # a warning: training goes on
    require_valid(second)
    (warning,) = second.warning_failures
    assert warning.expectation == "expect_column_values_to_be_in_set(source)"
    assert warning.details["new_values"] == [
        {
            "value": "cellular",
            "rows": cellular,
            "share": round(cellular / (2 * SLICE), 4),
            "organizations": 1,
            "organization_ids": [bank],
        }
    ]
    (alert,) = _alerts(engine)
    assert alert.severity == "warning"
    assert f"'cellular' on {cellular / (2 * SLICE):.1%} of the rows" in alert.message
    third = validate_dataset("leads", engine=engine, run_id="real-3")  # accepted by training: learned
    assert third.warning_failures == [], third.summary()


def test_critical_expectations_still_fail_on_bad_real_data(engine: sa.Engine, tmp_path: Path) -> None:
    retail = _organization(engine, "retail")
    sales = real_datasets.retail_series(RETAIL_SERIES[:1])[RETAIL_SERIES[0]]
    sales.loc[sales.index[10], "revenue"] = -sales.loc[sales.index[10], "revenue"]
    future = pd.DataFrame({"month": ["2999-01"], "revenue": [100.0]})
    _import(engine, pd.concat([sales, future], ignore_index=True), "sales", retail, tmp_path / "sales.csv")
    report = validate_dataset("sales", engine=engine, run_id="real-bad")
    assert {o.expectation for o in report.critical_failures} == {
        "expect_column_values_to_be_between(revenue)",
        "expect_column_values_to_be_between(month)",
    }
    with pytest.raises(ValidationFailedError, match="sales validation failed"):
        require_valid(report)
    assert load_category_profile(engine, "sales", None) is None  # nothing learned from rejected data

    bank = _organization(engine, "bank")
    leads = real_datasets.bank_leads(SLICE)
    leads["email_opens"] = 2
    leads.loc[leads.index[0], "email_opens"] = -1
    leads.loc[leads.index[1:40], "source"] = "carrier pigeon"  # new, but the run is rejected anyway
    _import(engine, leads, "leads", bank, tmp_path / "leads.csv")
    rejected = validate_dataset("leads", engine=engine, run_id="real-bad")
    assert [o.expectation for o in rejected.critical_failures] == [
        "expect_column_values_to_be_between(email_opens)"
    ]
    assert rejected.warning_failures == []  # first run: the categories would have been learned
    assert load_category_profile(engine, "leads", None) is None
    assert load_category_profile(engine, "leads", bank) is None
