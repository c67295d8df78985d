"""Validation with the GX suites of expectations/ on SQLite and the real PostgreSQL.

Every test runs against a private copy of the GX context (``NEURACRM_GX_ROOT``: the session's
``gx_root`` fixture, tests/conftest.py), so test runs never write into the repository's
``expectations/`` tree. The reference date is fixed after the last seeded month, so "no future
months" is deterministic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from neuracrm_mlops.errors import NotFoundError
from neuracrm_mlops.quality.validation import (
    CategoryProfile,
    ValidationFailedError,
    ValidationReport,
    load_category_profile,
    load_frame,
    normalise_frame,
    record_validation,
    require_valid,
    snapshot_hash,
    validate_dataset,
    validate_frame,
)
from neuracrm_mlops.store.db.schema import Alert, CategoryProfileRow, Lead, MonthlySales, ValidationRun
from neuracrm_mlops.store.seeding import seed_database
from neuracrm_mlops.store.synthetic import DEFAULT_END_MONTH, SyntheticCRM, generate_crm

# the seeded data ends with DEFAULT_END_MONTH; a fixed day after it keeps "no future months" stable
REFERENCE_DATE = DEFAULT_END_MONTH + dt.timedelta(days=45)
FUTURE_MONTH = dt.date(REFERENCE_DATE.year + 1, 1, 1)


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


def _lead_ids(engine: sa.Engine, organization_id: int | None = None) -> list[int]:
    query = sa.select(Lead.id).order_by(Lead.id)
    if organization_id is not None:
        query = query.where(Lead.organization_id == organization_id)
    with engine.connect() as conn:
        return list(conn.scalars(query).all())


def _set_leads(engine: sa.Engine, ids: list[int], **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(Lead).where(Lead.id.in_(ids)).values(**values))


def _profile(engine: sa.Engine, dataset: str, organization_id: int | None = None) -> CategoryProfile:
    profile = load_category_profile(engine, dataset, organization_id)
    assert profile is not None, (dataset, organization_id)
    return profile


def _organization_ids(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(Lead.organization_id).distinct().order_by(Lead.organization_id)))


def test_the_first_run_learns_each_scope_s_categories_and_warns_about_none(engine: sa.Engine) -> None:
    seed_database(5, 12, 3, engine=engine)
    ids = _lead_ids(engine)
    _set_leads(engine, ids, region="EMEA")  # a real CRM's vocabulary, not the generator's
    _set_leads(engine, ids[: len(ids) // 3], source="Web form")
    first = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert first.success and first.warning_failures == [], first.summary()
    assert first.category_baseline_run_id is None  # nothing to compare with: learned
    everyone = _profile(engine, "leads")
    assert everyone.row_count == len(ids) and everyone.validation_run_id == first.run_row_id
    assert everyone.value_counts["region"] == {"EMEA": len(ids)}
    assert everyone.value_counts["source"]["Web form"] == len(ids) // 3
    assert set(everyone.value_counts) == {
        "industry",
        "seniority",
        "timeline",
        "budget_signal",
        "source",
        "region",
    }
    organizations = _organization_ids(engine)
    assert len(organizations) == 5
    assert sum(_profile(engine, "leads", org).row_count for org in organizations) == len(ids)
    assert _profile(engine, "leads", organizations[0]).known("region") == {"EMEA"}
    second = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert second.success and second.warning_failures == [], second.summary()
    assert second.category_baseline_run_id == first.run_row_id
    assert _profile(engine, "leads").validation_run_id == second.run_row_id
    for dataset in ("interactions", "sales"):  # every dataset learns; sales has no categorical column
        report = validate_dataset(dataset, engine=engine, reference_date=REFERENCE_DATE)
        assert report.warning_failures == [] and _profile(engine, dataset).row_count == report.row_count
    assert _profile(engine, "sales").value_counts == {}
    assert _alerts(engine) == []


def test_a_new_value_on_a_large_share_is_a_warning_naming_values_and_shares(engine: sa.Engine) -> None:
    seed_database(5, 12, 3, engine=engine)
    first = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert first.warning_failures == []
    ids = _lead_ids(engine)
    crypto, defi = ids[: len(ids) // 5], ids[-2:]  # 20% of the leads, and 2 leads (under 5%)
    _set_leads(engine, crypto, industry="crypto")
    _set_leads(engine, defi, industry="defi")
    second = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert second.success is True and second.critical_failures == []
    (warning,) = second.warning_failures
    assert warning.expectation == "expect_column_values_to_be_in_set(industry)"
    (new,) = warning.details["new_values"]
    assert (new["value"], new["rows"]) == ("crypto", len(crypto))
    assert new["share"] == round(len(crypto) / len(ids), 4)
    assert new["organization_ids"] == sorted(
        {org for org in _organization_ids(engine) if set(_lead_ids(engine, org)) & set(crypto)}
    )
    assert warning.details["max_new_value_share"] == 0.05
    assert warning.details["unexpected_count"] == len(crypto)  # GX counts exactly the values that warn
    assert "value_set" not in warning.details  # the accepted set is long: the report page shows it
    require_valid(second)  # training goes on
    (alert,) = _alerts(engine)
    assert (alert.severity, alert.dedup_key) == ("warning", "validation:leads:all:warning")
    assert (
        f"'crypto' on {len(crypto) / len(ids):.1%} of the rows ({len(crypto)}; organization" in alert.message
    )
    assert "above 5.0% of the rows" in alert.message and "defi" not in alert.message
    assert alert.metrics["failed"][0]["new_values"][0]["value"] == "crypto"
    row = _validation_run(engine, second.run_row_id)
    assert row.warning_failed == 1 and row.failed_expectations[0]["new_values"][0]["value"] == "crypto"
    # training accepted the data: both values are known now, the next run is quiet
    assert {"crypto", "defi"} <= (_profile(engine, "leads").known("industry") or set())
    third = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert third.warning_failures == [], third.summary()


def test_a_run_with_a_critical_failure_learns_nothing(engine: sa.Engine) -> None:
    seed_database(5, 12, 3, engine=engine)
    first = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    ids = _lead_ids(engine)
    _set_leads(engine, ids[: len(ids) // 4], industry="crypto")
    _set_leads(engine, ids[:1], email_opens=-1)
    blocked = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert [o.expectation for o in blocked.critical_failures] == [
        "expect_column_values_to_be_between(email_opens)"
    ]
    assert [o.expectation for o in blocked.warning_failures] == [
        "expect_column_values_to_be_in_set(industry)"
    ]
    assert "crypto" not in (_profile(engine, "leads").known("industry") or set())
    assert _profile(engine, "leads").validation_run_id == first.run_row_id
    _set_leads(engine, ids[:1], email_opens=1)
    fixed = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert fixed.success and [o.expectation for o in fixed.warning_failures] == [
        "expect_column_values_to_be_in_set(industry)"
    ]
    assert fixed.category_baseline_run_id == first.run_row_id


def test_an_organization_is_judged_against_its_own_history(engine: sa.Engine) -> None:
    seed_database(5, 12, 3, engine=engine)
    org_a, org_b = _organization_ids(engine)[:2]
    _set_leads(engine, _lead_ids(engine, org_b), region="emea")  # only organization B says "emea"
    first = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)  # learns all and each
    leads_a = _lead_ids(engine, org_a)
    _set_leads(engine, leads_a[: len(leads_a) // 2], region="emea")
    only_a = validate_dataset("leads", org_a, engine=engine, reference_date=REFERENCE_DATE)
    assert only_a.category_baseline_run_id == first.run_row_id  # A's profile, learned by the first run
    everyone = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert everyone.warning_failures == []  # "emea" is known for all organizations
    (warning,) = only_a.warning_failures
    (new,) = warning.details["new_values"]
    assert (new["value"], new["rows"]) == ("emea", len(leads_a) // 2)
    assert "organization_ids" not in new  # one organization's scope
    (alert,) = _alerts(engine)
    assert alert.dedup_key == f"validation:leads:{org_a}:warning" and alert.organization_id == org_a


def test_a_new_organization_is_learned_in_an_all_organizations_run(engine: sa.Engine, tmp_path: Path) -> None:
    from neuracrm_mlops.store.ingest import import_file
    from neuracrm_mlops.store.orgs import create_organization

    seed_database(3, 12, 3, engine=engine)
    validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    with engine.begin() as conn:
        newcomer, _ = create_organization(conn, "newcomer")
    rows = pd.DataFrame(
        {
            "lead_id": [f"N-{i}" for i in range(60)],
            "created_at": "2024-05-01T10:00:00Z",
            "region": "Benelux",
            "source": ["Trade fair", "Website"] * 30,
        }
    )
    rows.to_csv(tmp_path / "newcomer.csv", index=False)
    import_file(tmp_path / "newcomer.csv", "leads", newcomer.id, engine=engine)
    report = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert report.row_count > 60 and 60 / report.row_count > 0.05  # would warn if it were judged
    assert report.warning_failures == [], report.summary()
    assert _profile(engine, "leads", newcomer.id).known("region") == {"Benelux"}
    assert "Benelux" in (_profile(engine, "leads").known("region") or set())
    # from now on the newcomer has a history: a new value of its own warns
    with engine.begin() as conn:
        conn.execute(
            sa.update(Lead)
            .where(Lead.organization_id == newcomer.id, Lead.external_id.in_([f"N-{i}" for i in range(30)]))
            .values(region="Nordics")
        )
    scoped = validate_dataset("leads", newcomer.id, engine=engine, reference_date=REFERENCE_DATE)
    assert [n["value"] for n in scoped.warning_failures[0].details["new_values"]] == ["Nordics"]


def test_an_empty_table_learns_nothing_so_the_first_import_is_not_flagged(
    engine: sa.Engine, tmp_path: Path
) -> None:
    from neuracrm_mlops.store.ingest import import_file
    from neuracrm_mlops.store.orgs import create_organization

    with engine.begin() as conn:
        org, _ = create_organization(conn, "fresh")
    empty = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert empty.row_count == 0 and empty.success
    assert load_category_profile(engine, "leads", None) is None
    pd.DataFrame(
        {"lead_id": ["A", "B"], "created_at": "2024-05-01T10:00:00Z", "region": "Benelux", "converted": "1"}
    ).to_csv(tmp_path / "leads.csv", index=False)
    import_file(tmp_path / "leads.csv", "leads", org.id, engine=engine)
    report = validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    assert report.category_baseline_run_id is None
    assert not [o for o in report.warning_failures if "in_set" in o.expectation], report.summary()
    assert _profile(engine, "leads").known("region") == {"Benelux"}


def test_the_profile_of_a_scope_is_one_row_updated_in_place(engine: sa.Engine) -> None:
    seed_database(3, 12, 3, engine=engine)
    for _ in range(3):
        validate_dataset("leads", engine=engine, reference_date=REFERENCE_DATE)
    validate_dataset("leads", _organization_ids(engine)[0], engine=engine, reference_date=REFERENCE_DATE)
    with engine.connect() as conn:
        scopes = conn.execute(
            sa.select(CategoryProfileRow.organization_id, sa.func.count())
            .where(CategoryProfileRow.dataset == "leads")
            .group_by(CategoryProfileRow.organization_id)
        ).all()
    assert sorted(scopes, key=lambda r: (r[0] is not None, r[0] or 0)) == [
        (None, 1),
        *((org, 1) for org in _organization_ids(engine)),
    ]


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
