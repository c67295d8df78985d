"""Validation with the GX suites of expectations/ on SQLite and the real PostgreSQL.

Every test runs against a private copy of the GX context (``NEURACRM_GX_ROOT``), so test runs never
write into the repository's ``expectations/`` tree. The reference date is fixed after the last
seeded month, so "no future months" is deterministic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from neuracrm_mlops.db.schema import Alert, Lead, MonthlySales, ValidationRun
from neuracrm_mlops.errors import NotFoundError
from neuracrm_mlops.seeding import seed_database
from neuracrm_mlops.synthetic import DEFAULT_END_MONTH, SyntheticCRM, generate_crm
from neuracrm_mlops.validation import (
    DEFAULT_GX_ROOT,
    ValidationFailedError,
    ValidationReport,
    load_frame,
    normalise_frame,
    record_validation,
    require_valid,
    snapshot_hash,
    validate_dataset,
    validate_frame,
)

# the seeded data ends with DEFAULT_END_MONTH; a fixed day after it keeps "no future months" stable
REFERENCE_DATE = DEFAULT_END_MONTH + dt.timedelta(days=45)
FUTURE_MONTH = dt.date(REFERENCE_DATE.year + 1, 1, 1)


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the repository's GX context per module (Data Docs accumulate in its uncommitted/)."""
    root = tmp_path_factory.mktemp("gx") / "expectations"
    shutil.copytree(DEFAULT_GX_ROOT, root, ignore=shutil.ignore_patterns("uncommitted"))
    return root


@pytest.fixture(autouse=True)
def _use_gx_copy(gx_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURACRM_GX_ROOT", str(gx_root))


@pytest.fixture(scope="module")
def crm() -> SyntheticCRM:
    return generate_crm(6, 18, 5)


def _frame(crm: SyntheticCRM, dataset: str) -> pd.DataFrame:
    """A generator frame shaped like load_frame's: organization ids 1..n, an attributes column."""
    source = {"leads": crm.leads, "sales": crm.monthly_sales, "interactions": crm.interactions}[dataset]
    frame = source.rename(columns={"org_index": "organization_id"})
    frame["organization_id"] = frame["organization_id"] + 1
    if "attributes" not in frame:
        frame["attributes"] = [{} for _ in range(len(frame))]
    return frame


def _alerts(engine: sa.Engine) -> list[sa.Row[tuple[Alert]]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(Alert).order_by(Alert.id)).all())


def _validation_run(engine: sa.Engine, run_row_id: int | None) -> sa.Row[tuple[ValidationRun]]:
    with engine.connect() as conn:
        return conn.execute(sa.select(ValidationRun).where(ValidationRun.id == run_row_id)).one()


def _tracked_files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "uncommitted" not in path.relative_to(root).parts
    }


def _assert_blocked_by(
    report: ValidationReport, engine: sa.Engine, expectation: str, scope: str = "all"
) -> None:
    """The contract of a failed critical expectation: error message, report on disk, critical alert."""
    assert report.success is False
    assert expectation in [o.expectation for o in report.critical_failures]
    assert Path(report.data_docs_path).is_file() and report.data_docs_path.endswith(".html")
    with pytest.raises(ValidationFailedError) as excinfo:
        require_valid(report)
    message = str(excinfo.value)
    assert message.startswith(f"{report.dataset} validation failed: ")
    assert expectation in message
    assert message.endswith(f"; report: {report.data_docs_path}")
    critical = [a for a in _alerts(engine) if a.severity == "critical"]
    assert len(critical) == 1
    alert = critical[0]
    assert alert.dedup_key == f"validation:{report.dataset}:{scope}:critical"
    assert alert.kind == "validation_failed" and alert.status == "open"
    assert alert.action_taken == "training blocked"
    assert alert.links == {"gx_report": report.data_docs_path}
    assert expectation in alert.message and report.data_docs_path in alert.message
    assert f"neuracrm-mlops validate {report.dataset}" in (alert.runbook or "")
    assert report.alert_ids and alert.id in report.alert_ids


# ---------------------------------------------------------------------------------------------
# clean data passes


def test_seeded_data_passes_all_three_suites_and_records_the_runs(engine: sa.Engine, gx_root: Path) -> None:
    seed_database(20, 24, 17, engine=engine)
    for dataset in ("leads", "sales", "interactions"):
        report = validate_dataset(dataset, engine=engine, reference_date=REFERENCE_DATE, run_id="test-run")
        assert report.success, report.summary()
        assert report.critical_failures == []
        assert report.warning_failures == [], report.summary()
        assert report.row_count > 0 and report.organization_id is None
        assert Path(report.data_docs_path).is_file()
        assert Path(report.data_docs_path).is_relative_to(gx_root / "uncommitted" / "data_docs")
        require_valid(report)
        row = _validation_run(engine, report.run_row_id)
        assert (row.dataset, row.organization_id, row.row_count, row.success) == (
            dataset,
            None,
            report.row_count,
            True,
        )
        assert (row.critical_failed, row.warning_failed, row.failed_expectations) == (0, 0, [])
        assert row.snapshot_hash == report.snapshot_hash and row.report_path == report.data_docs_path
        assert row.run_id == "test-run"
        json.dumps(report.as_dict())  # loggable to MLflow as is
    assert _alerts(engine) == []


def test_load_frame_returns_exactly_the_seeded_data(engine: sa.Engine, crm: SyntheticCRM) -> None:
    seed_database(6, 18, 5, engine=engine)
    for dataset in ("leads", "sales", "interactions"):
        loaded = load_frame(dataset, engine=engine)
        generated = normalise_frame(dataset, _frame(crm, dataset))
        assert sorted(loaded.columns) == sorted(generated.columns)
        assert snapshot_hash(loaded) == snapshot_hash(generated), dataset
    one_org = load_frame("sales", 2, engine=engine)
    assert (
        set(one_org["organization_id"]) <= {2} and len(one_org) == (crm.monthly_sales["org_index"] == 1).sum()
    )


# ---------------------------------------------------------------------------------------------
# six corrupted batches: each blocks training


def _missing_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["revenue"])


def _null_revenue(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[[3, 7]], "revenue"] = None
    return frame


def _negative_revenue(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[5], "revenue"] = -120.0
    return frame


def _duplicate_month(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[4]]], ignore_index=True)


def _future_month(frame: pd.DataFrame) -> pd.DataFrame:
    frame["month"] = frame["month"].astype(object)
    frame.loc[frame.index[-1], "month"] = FUTURE_MONTH
    return frame


def _revenue_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    frame["revenue"] = [f"{value:,.2f}" for value in frame["revenue"]]  # "43,537.56"
    return frame


CORRUPTIONS: list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame], set[str]]] = [
    (
        "missing_column",
        _missing_column,
        {
            "expect_column_to_exist(revenue)",
            "expect_column_values_to_not_be_null(revenue)",
            "expect_column_type_to_be(revenue)",
            "expect_column_values_to_be_between(revenue)",
        },
    ),
    ("nulls_in_required_field", _null_revenue, {"expect_column_values_to_not_be_null(revenue)"}),
    ("negative_revenue", _negative_revenue, {"expect_column_values_to_be_between(revenue)"}),
    (
        "duplicate_organization_month",
        _duplicate_month,
        {"expect_compound_columns_to_be_unique(organization_id, month)"},
    ),
    ("future_month", _future_month, {"expect_column_values_to_be_between(month)"}),
    (
        "revenue_as_text",
        _revenue_as_text,
        {"expect_column_type_to_be(revenue)", "expect_column_values_to_be_between(revenue)"},
    ),
]


@pytest.mark.parametrize(("corrupt", "failed"), [pytest.param(c, f, id=name) for name, c, f in CORRUPTIONS])
def test_a_corrupted_sales_batch_fails_critically_with_report_and_alert(
    engine: sa.Engine,
    crm: SyntheticCRM,
    corrupt: Callable[[pd.DataFrame], pd.DataFrame],
    failed: set[str],
) -> None:
    frame = corrupt(_frame(crm, "sales"))
    report = validate_frame("sales", frame, reference_date=REFERENCE_DATE)
    assert {o.expectation for o in report.critical_failures} == failed
    assert report.warning_failures == []
    record_validation(report, engine=engine, run_id="test")
    for expectation in failed:
        _assert_blocked_by(report, engine, expectation)
    row = _validation_run(engine, report.run_row_id)
    assert row.success is False and row.critical_failed == len(failed)
    assert {f["expectation"] for f in row.failed_expectations} == failed


def test_failure_details_name_the_bad_values(crm: SyntheticCRM) -> None:
    report = validate_frame("sales", _negative_revenue(_frame(crm, "sales")), reference_date=REFERENCE_DATE)
    (outcome,) = report.critical_failures
    assert outcome.severity == "critical"
    assert outcome.details["unexpected_count"] == 1
    assert outcome.details["partial_unexpected_list"] == [-120.0]
    assert outcome.details["min_value"] == 0
    future = validate_frame("sales", _future_month(_frame(crm, "sales")), reference_date=REFERENCE_DATE)
    (outcome,) = future.critical_failures
    assert outcome.details["partial_unexpected_list"][0].startswith(FUTURE_MONTH.isoformat())
    assert outcome.details["max_value"].startswith(REFERENCE_DATE.replace(day=1).isoformat())
    # the same frame is valid once its month is no longer in the future
    later = validate_frame("sales", _future_month(_frame(crm, "sales")), reference_date=FUTURE_MONTH)
    assert later.success


def test_a_clean_frame_passes(crm: SyntheticCRM) -> None:
    for dataset in ("leads", "sales", "interactions"):
        report = validate_frame(dataset, _frame(crm, dataset), reference_date=REFERENCE_DATE)
        assert report.success and report.warning_failures == [], report.summary()


# ---------------------------------------------------------------------------------------------
# corrupted rows in the database, through validate_dataset


def _first_sales_row(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        row_id = conn.scalar(sa.select(sa.func.min(MonthlySales.id)))
    assert row_id is not None
    return int(row_id)


def test_negative_revenue_in_the_database_blocks_training(engine: sa.Engine) -> None:
    seed_database(5, 12, 3, engine=engine)
    with engine.begin() as conn:
        conn.execute(
            sa.update(MonthlySales).where(MonthlySales.id == _first_sales_row(engine)).values(revenue=-250.0)
        )
    report = validate_dataset("sales", engine=engine, reference_date=REFERENCE_DATE)
    assert [o.expectation for o in report.critical_failures] == [
        "expect_column_values_to_be_between(revenue)"
    ]
    _assert_blocked_by(report, engine, "expect_column_values_to_be_between(revenue)")
    assert _validation_run(engine, report.run_row_id).success is False


def test_a_future_month_in_the_database_blocks_training(engine: sa.Engine) -> None:
    seed_database(5, 12, 3, engine=engine)
    with engine.begin() as conn:
        conn.execute(
            sa.update(MonthlySales)
            .where(MonthlySales.id == _first_sales_row(engine))
            .values(month=FUTURE_MONTH)
        )
    report = validate_dataset("sales", engine=engine, reference_date=REFERENCE_DATE)
    assert [o.expectation for o in report.critical_failures] == ["expect_column_values_to_be_between(month)"]
    _assert_blocked_by(report, engine, "expect_column_values_to_be_between(month)")


def test_text_stored_in_a_number_column_blocks_training(engine: sa.Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("only SQLite stores text in a REAL column; PostgreSQL refuses it at write time")
    seed_database(5, 12, 3, engine=engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE monthly_sales SET revenue = 'n/a' WHERE id = :id"),
            {"id": _first_sales_row(engine)},
        )
    frame = load_frame("sales", engine=engine)
    assert str(frame["revenue"].dtype) == "object"  # kept as read, not coerced
    report = validate_dataset("sales", engine=engine, reference_date=REFERENCE_DATE)
    _assert_blocked_by(report, engine, "expect_column_type_to_be(revenue)")
    (type_check,) = [o for o in report.outcomes if o.expectation == "expect_column_type_to_be(revenue)"]
    assert type_check.details["observed_value"] == "object"


def test_validating_one_organization_scopes_rows_report_and_alert(engine: sa.Engine) -> None:
    seed_database(5, 12, 3, engine=engine)
    row_id = _first_sales_row(engine)
    with engine.begin() as conn:
        org_id = conn.scalar(sa.select(MonthlySales.organization_id).where(MonthlySales.id == row_id))
        org_rows = conn.scalar(
            sa.select(sa.func.count()).select_from(MonthlySales).where(MonthlySales.organization_id == org_id)
        )
        conn.execute(sa.update(MonthlySales).where(MonthlySales.id == row_id).values(revenue=-1.0))
    assert org_id is not None
    report = validate_dataset("sales", org_id, engine=engine, reference_date=REFERENCE_DATE)
    assert (report.organization_id, report.row_count) == (org_id, org_rows)
    _assert_blocked_by(report, engine, "expect_column_values_to_be_between(revenue)", scope=str(org_id))
    assert _alerts(engine)[0].organization_id == org_id
    assert _validation_run(engine, report.run_row_id).organization_id == org_id
    with pytest.raises(NotFoundError, match="organization 999 does not exist"):
        validate_dataset("sales", 999, engine=engine, reference_date=REFERENCE_DATE)


# ---------------------------------------------------------------------------------------------
# warnings alert but do not block


def test_an_unknown_industry_is_a_warning_that_does_not_block_training(engine: sa.Engine) -> None:
    seed_database(5, 12, 3, engine=engine)
    with engine.begin() as conn:
        ids = conn.scalars(sa.select(Lead.id).order_by(Lead.id).limit(3)).all()
        conn.execute(sa.update(Lead).where(Lead.id.in_(ids)).values(industry="crypto"))
    report = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert report.success is True
    assert report.critical_failures == []
    (warning,) = report.warning_failures
    assert warning.expectation == "expect_column_values_to_be_in_set(industry)"
    assert warning.details["unexpected_count"] == 3 and "crypto" in warning.details["partial_unexpected_list"]
    require_valid(report)  # does not raise: training goes on
    (alert,) = _alerts(engine)
    assert (alert.severity, alert.dedup_key) == ("warning", "validation:leads:all:warning")
    assert alert.action_taken == "none: training goes on"
    assert alert.links == {"gx_report": report.data_docs_path}
    assert _validation_run(engine, report.run_row_id).warning_failed == 1


def test_a_volume_drop_against_the_previous_run_is_a_warning(engine: sa.Engine) -> None:
    seed_database(5, 12, 3, engine=engine)
    first = validate_dataset("sales", engine=engine, reference_date=REFERENCE_DATE)
    assert first.success and first.previous_row_count is None and first.warning_failures == []
    with engine.begin() as conn:
        counts = dict(
            conn.execute(
                sa.select(MonthlySales.organization_id, sa.func.count()).group_by(
                    MonthlySales.organization_id
                )
            ).all()
        )
        keep = min(counts, key=lambda org: counts[org])
        conn.execute(sa.delete(MonthlySales).where(MonthlySales.organization_id != keep))
    assert counts[keep] < first.row_count / 2
    second = validate_dataset("sales", engine=engine, reference_date=REFERENCE_DATE)
    assert second.previous_row_count == first.row_count
    assert second.success is True
    assert [o.expectation for o in second.warning_failures] == ["expect_table_row_count_to_be_between"]
    assert second.warning_failures[0].details["observed_value"] == counts[keep]
    require_valid(second)
    (alert,) = _alerts(engine)
    assert (alert.severity, alert.dedup_key) == ("warning", "validation:sales:all:warning")
    # the baseline is per organization scope: the first run for one organization has none
    scoped = validate_dataset("sales", keep, engine=engine, reference_date=REFERENCE_DATE)
    assert scoped.previous_row_count is None and scoped.warning_failures == []


# ---------------------------------------------------------------------------------------------
# alerts deduplicate; the context in git is never written; GX stays quiet


def test_validating_the_same_corrupted_data_twice_counts_one_open_alert_twice(engine: sa.Engine) -> None:
    seed_database(5, 12, 3, engine=engine)
    with engine.begin() as conn:
        conn.execute(
            sa.update(MonthlySales).where(MonthlySales.id == _first_sales_row(engine)).values(revenue=-5.0)
        )
    first = validate_dataset("sales", engine=engine, reference_date=REFERENCE_DATE)
    second = validate_dataset("sales", engine=engine, reference_date=REFERENCE_DATE)
    assert first.alert_ids == second.alert_ids
    (alert,) = _alerts(engine)
    assert (alert.status, alert.occurrences, alert.severity) == ("open", 2, "critical")
    assert alert.links == {"gx_report": second.data_docs_path}  # the latest report
    assert first.run_row_id != second.run_row_id
    assert first.snapshot_hash == second.snapshot_hash


def test_a_run_writes_only_under_uncommitted_and_never_the_suites(gx_root: Path, crm: SyntheticCRM) -> None:
    before = _tracked_files(gx_root)
    assert "expectations/monthly_sales.json" in before and "great_expectations.yml" in before
    report = validate_frame("sales", _negative_revenue(_frame(crm, "sales")), reference_date=REFERENCE_DATE)
    assert _tracked_files(gx_root) == before
    assert Path(report.data_docs_path).is_relative_to(gx_root / "uncommitted")
    assert (gx_root / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()


def test_great_expectations_stays_quiet(
    crm: SyntheticCRM, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.DEBUG):
        validate_frame("leads", _frame(crm, "leads"), reference_date=REFERENCE_DATE)
    noisy = [
        r for r in caplog.records if r.name.startswith("great_expectations") and r.levelno < logging.WARNING
    ]
    assert noisy == []
    out, err = capfd.readouterr()
    assert "Calculating Metrics" not in out + err
    assert logging.getLogger("great_expectations").getEffectiveLevel() >= logging.WARNING
