"""Validation rules without a database or a GX run: the suites in git, severities, bounds, hashing, dtypes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from neuracrm_mlops.errors import ConfigurationError
from neuracrm_mlops.models import sentiment_model
from neuracrm_mlops.quality.validation import (
    DATASET_SUITES,
    DEFAULT_GX_ROOT,
    ExpectationOutcome,
    ValidationFailedError,
    ValidationReport,
    dataset_name,
    expectation_name,
    expectation_severity,
    frame_columns,
    gx_context_root,
    min_row_count,
    normalise_frame,
    require_valid,
    snapshot_hash,
    suite_parameters,
)
from neuracrm_mlops.store import synthetic

RUN_TIME_PARAMETERS = {"reference_month", "end_of_reference_day", "min_row_count"}
LEARNED_CATEGORIES = {
    "leads": ("industry", "seniority", "timeline", "budget_signal", "source", "region"),
    "interactions": ("channel",),
    "monthly_sales": (),
}


def _suite(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEFAULT_GX_ROOT / "expectations" / f"{name}.json").read_text())
    return data


def _named(suite: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {expectation_name(e["type"], e["kwargs"]): e for e in suite["expectations"]}


# ---------------------------------------------------------------------------------------------
# the suites in git


@pytest.mark.parametrize("dataset", list(DATASET_SUITES))
def test_every_expectation_is_marked_critical_or_warning_consistently(dataset: str) -> None:
    suite = _suite(DATASET_SUITES[dataset])
    assert suite["name"] == DATASET_SUITES[dataset]
    for expectation in suite["expectations"]:
        severity = expectation["meta"]["severity"]
        assert severity in ("critical", "warning"), expectation
        assert expectation["severity"] == severity  # GX's own field (Data Docs) agrees with meta
        assert expectation["notes"].startswith(f"{severity}: ")  # the suite page shows it


@pytest.mark.parametrize("dataset", list(DATASET_SUITES))
def test_expectation_names_are_unique_so_messages_are_unambiguous(dataset: str) -> None:
    suite = _suite(DATASET_SUITES[dataset])
    assert len(_named(suite)) == len(suite["expectations"])


@pytest.mark.parametrize("dataset", list(DATASET_SUITES))
def test_the_schema_expectations_cover_every_data_column_of_the_table(dataset: str) -> None:
    named = _named(_suite(DATASET_SUITES[dataset]))
    expected = {c for c in frame_columns(dataset) if c != "attributes"}
    assert {
        n[len("expect_column_to_exist(") : -1] for n in named if n.startswith("expect_column_to_exist(")
    } == (expected)
    assert all(named[f"expect_column_to_exist({c})"]["meta"]["severity"] == "critical" for c in expected)


@pytest.mark.parametrize("dataset", list(DATASET_SUITES))
def test_run_time_bounds_use_only_the_parameters_the_code_provides(dataset: str) -> None:
    suite = _suite(DATASET_SUITES[dataset])
    used = {
        value["$PARAMETER"]
        for expectation in suite["expectations"]
        for value in expectation["kwargs"].values()
        if isinstance(value, dict) and "$PARAMETER" in value
    }
    learned = {f"known_{column}_values" for column in LEARNED_CATEGORIES[DATASET_SUITES[dataset]]}
    assert used == (used & RUN_TIME_PARAMETERS) | learned  # filled in by validate_frame, no others
    (volume,) = [e for e in suite["expectations"] if "min_ratio_of_previous_run" in e["meta"]]
    assert volume["type"] == "expect_table_row_count_to_be_between"
    assert volume["kwargs"] == {"min_value": {"$PARAMETER": "min_row_count"}}
    assert volume["meta"] == {"severity": "warning", "min_ratio_of_previous_run": 0.5}


def test_the_issue_checks_are_in_the_suites_with_their_severity() -> None:
    sales = _named(_suite("monthly_sales"))
    leads = _named(_suite("leads"))
    interactions = _named(_suite("interactions"))
    critical = [
        (sales, "expect_column_values_to_not_be_null(revenue)"),
        (sales, "expect_column_values_to_be_between(revenue)"),
        (sales, "expect_compound_columns_to_be_unique(organization_id, month)"),
        (sales, "expect_column_values_to_be_between(month)"),
        (sales, "expect_column_type_to_be(revenue)"),
        (leads, "expect_column_values_to_not_be_null(created_at)"),
        (leads, "expect_column_values_to_be_between(company_revenue)"),
        (leads, "expect_compound_columns_to_be_unique(organization_id, external_id)"),
        (interactions, "expect_column_values_to_not_be_null(text)"),
        *(
            (leads, f"expect_column_values_to_be_between({count})")
            for count in ("email_opens", "website_visits", "pages_viewed", "company_employees")
        ),
    ]
    for suite, name in critical:
        assert suite[name]["meta"]["severity"] == "critical", name
    assert sales["expect_column_values_to_be_between(revenue)"]["kwargs"]["min_value"] == 0
    assert sales["expect_column_values_to_be_between(month)"]["kwargs"]["max_value"] == {
        "$PARAMETER": "reference_month"
    }
    assert leads["expect_column_values_to_be_between(email_opens)"]["kwargs"]["min_value"] == 0


@pytest.mark.parametrize(
    ("suite", "column"),
    [(suite, column) for suite, columns in LEARNED_CATEGORIES.items() for column in columns],
)
def test_categorical_sets_are_learned_from_accepted_data_and_only_warn(suite: str, column: str) -> None:
    expectation = _named(_suite(suite))[f"expect_column_values_to_be_in_set({column})"]
    assert expectation["kwargs"]["value_set"] == {"$PARAMETER": f"known_{column}_values"}
    assert expectation["meta"] == {"severity": "warning", "max_new_value_share": 0.05}
    assert "learned" in expectation["notes"] and "5%" in expectation["notes"]


def test_no_categorical_set_of_the_suites_is_the_generator_vocabulary_any_more() -> None:
    generator = (synthetic.INDUSTRIES, synthetic.SOURCES, synthetic.REGIONS, synthetic.CHANNELS)
    generator += (synthetic.SENIORITIES, synthetic.TIMELINES, synthetic.BUDGET_SIGNALS)
    generator_sets = [list(values) for values in generator]
    for suite in DATASET_SUITES.values():
        for expectation in _suite(suite)["expectations"]:
            assert expectation["kwargs"].get("value_set") not in generator_sets, expectation


def test_sentiment_labels_stay_the_fixed_set_the_sentiment_model_trains_on() -> None:
    # training keeps only these labels (other labels are dropped), so an unknown one is worth a warning
    expectation = _named(_suite("interactions"))["expect_column_values_to_be_in_set(sentiment_label)"]
    assert expectation["kwargs"]["value_set"] == list(sentiment_model.LABELS)
    assert expectation["meta"] == {"severity": "warning"}


def test_the_context_config_is_quiet_and_complete() -> None:
    config = (DEFAULT_GX_ROOT / "great_expectations.yml").read_text()
    assert "analytics_enabled: false" in config
    assert "globally: false" in config and "metric_calculations: false" in config
    for suite in DATASET_SUITES.values():
        definition = json.loads((DEFAULT_GX_ROOT / "validation_definitions" / f"{suite}.json").read_text())
        assert definition["suite"] == {"id": _suite(suite)["id"], "name": suite}
        assert definition["data"]["asset"]["name"] == suite
        for part in ("datasource", "asset", "batch_definition"):
            assert f"id: {definition['data'][part]['id']}" in config  # the ids the yml declares


# ---------------------------------------------------------------------------------------------
# names, severities, run-time bounds


def test_expectation_names_carry_their_columns() -> None:
    assert expectation_name("expect_column_values_to_not_be_null", {"column": "revenue"}) == (
        "expect_column_values_to_not_be_null(revenue)"
    )
    assert expectation_name("expect_compound_columns_to_be_unique", {"column_list": ["a", "b"]}) == (
        "expect_compound_columns_to_be_unique(a, b)"
    )
    assert expectation_name(
        "expect_column_pair_values_a_to_be_greater_than_b", {"column_A": "x", "column_B": "y"}
    ) == ("expect_column_pair_values_a_to_be_greater_than_b(x, y)")
    assert expectation_name("expect_table_row_count_to_be_between", {"min_value": 3}) == (
        "expect_table_row_count_to_be_between"
    )


def test_severity_comes_from_meta_and_fails_safe_to_critical() -> None:
    assert expectation_severity({"severity": "warning"}, "critical") == "warning"
    assert expectation_severity({"severity": "WARNING"}) == "warning"
    assert expectation_severity({}, "warning") == "warning"
    assert expectation_severity(None) == "critical"
    assert expectation_severity({"severity": "info"}) == "critical"  # unknown: block rather than miss


@pytest.mark.parametrize(
    ("previous", "expected"), [(None, 0), (0, 0), (100, 50), (101, 51), (1, 1), (48_000, 24_000)]
)
def test_the_volume_floor_is_half_the_previous_run_rounded_up(previous: int | None, expected: int) -> None:
    assert min_row_count(previous, 0.5) == expected
    if previous:
        assert min_row_count(previous, 0.5) * 2 >= previous  # 50 of 101 rows is below half: warned


def test_suite_parameters_pin_now_to_the_reference_date() -> None:
    suite = SimpleNamespace(expectations=[SimpleNamespace(meta={"min_ratio_of_previous_run": 0.5})])
    params = suite_parameters(suite, reference_date=dt.date(2026, 3, 31), previous_row_count=10)
    assert params["reference_month"] == dt.datetime(2026, 3, 1)  # naive, like the month column
    assert params["end_of_reference_day"] == pd.Timestamp("2026-04-01T00:00:00Z")
    assert params["min_row_count"] == 5
    without_volume_check = SimpleNamespace(expectations=[SimpleNamespace(meta={"severity": "critical"})])
    assert (
        suite_parameters(without_volume_check, reference_date=dt.date(2026, 3, 31), previous_row_count=10)[
            "min_row_count"
        ]
        == 0
    )


def test_dataset_names_accept_the_suite_names_too() -> None:
    assert dataset_name("monthly_sales") == "sales"
    assert dataset_name("leads") == "leads"
    with pytest.raises(ValueError, match="unknown dataset 'deals': use one of leads, sales, interactions"):
        dataset_name("deals")


# ---------------------------------------------------------------------------------------------
# snapshot hash


def _sales() -> pd.DataFrame:
    return normalise_frame(
        "sales",
        pd.DataFrame(
            {
                "organization_id": [1, 1, 2, 2],
                "month": [dt.date(2026, m, 1) for m in (1, 2, 1, 2)],
                "revenue": [100.0, 0.0, 12.5, None],
                "attributes": [{"a": 1, "b": "x"}, {}, {"b": "x", "a": 1}, {}],
            }
        ),
    )


def test_the_snapshot_hash_ignores_row_and_column_order() -> None:
    frame = _sales()
    shuffled = frame.sample(frac=1.0, random_state=7)[["revenue", "attributes", "month", "organization_id"]]
    assert snapshot_hash(shuffled) == snapshot_hash(frame)
    assert snapshot_hash(frame.iloc[::-1].reset_index(drop=True)) == snapshot_hash(frame)
    swapped_keys = frame.copy()
    swapped_keys.at[0, "attributes"] = {"b": "x", "a": 1}  # same JSON object, other key order
    assert snapshot_hash(swapped_keys) == snapshot_hash(frame)
    assert len(snapshot_hash(frame)) == 64


@pytest.mark.parametrize(
    ("column", "row", "value"),
    [
        ("revenue", 0, 100.01),
        ("revenue", 3, 0.0),  # a null becomes a value
        ("revenue", 2, None),
        ("month", 1, pd.Timestamp("2026-03-01")),
        ("organization_id", 0, 3),
        ("attributes", 1, {"a": 1}),
    ],
)
def test_the_snapshot_hash_changes_when_a_value_changes(column: str, row: int, value: Any) -> None:
    frame = _sales()
    changed = frame.copy()
    changed.at[row, column] = value
    assert snapshot_hash(changed) != snapshot_hash(frame)


def test_the_snapshot_hash_sees_added_removed_and_renamed_data() -> None:
    frame = _sales()
    base = snapshot_hash(frame)
    assert snapshot_hash(pd.concat([frame, frame.iloc[[0]]], ignore_index=True)) != base  # a duplicate row
    assert snapshot_hash(frame.iloc[1:]) != base
    assert snapshot_hash(frame.rename(columns={"revenue": "amount"})) != base
    assert snapshot_hash(frame.iloc[:0]) != snapshot_hash(frame.iloc[:0].drop(columns="revenue"))


def test_the_snapshot_hash_of_text_and_timestamps_is_exact() -> None:
    frame = pd.DataFrame(
        {
            "text": pd.Series(["ab", "c", None], dtype="str"),
            "at": pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", None], utc=True),
        }
    )
    moved = frame.copy()
    moved["text"] = pd.Series(["a", "bc", None], dtype="str")  # same characters, other split
    assert snapshot_hash(moved) != snapshot_hash(frame)
    later = frame.copy()
    later["at"] = later["at"] + pd.Timedelta(microseconds=1)
    assert snapshot_hash(later) != snapshot_hash(frame)
    other_zone = frame.copy()
    other_zone["at"] = other_zone["at"].dt.tz_convert("Europe/Berlin")  # the same instants
    assert snapshot_hash(other_zone) == snapshot_hash(frame)


# ---------------------------------------------------------------------------------------------
# canonical dtypes


def test_normalise_gives_the_canonical_dtypes_the_suites_expect() -> None:
    raw = pd.DataFrame(
        {
            "organization_id": [1, 2],
            "external_id": pd.Series(["L-1", "L-2"], dtype=object),
            "company_employees": [10.0, np.nan],  # a nullable integer read as float
            "email_opens": [3, 4],
            "company_revenue": pd.Series([None, 5], dtype=object),
            "created_at": [dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))), None],
            "converted_at": pd.to_datetime(["2026-01-03", None]),  # naive: taken as UTC, like import
            "converted": pd.Series([True, None], dtype=object),
        }
    )
    frame = normalise_frame("leads", raw)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "organization_id": "Int64",
        "external_id": "str",
        "company_employees": "Int64",
        "email_opens": "Int64",
        "company_revenue": "float64",
        "created_at": "datetime64[us, UTC]",
        "converted_at": "datetime64[us, UTC]",
        "converted": "boolean",
    }
    assert frame.loc[0, "created_at"] == pd.Timestamp("2026-01-01T10:00:00Z")
    assert frame.loc[0, "converted_at"] == pd.Timestamp("2026-01-03T00:00:00Z")
    assert str(raw.dtypes["company_employees"]) == "float64"  # the input is not modified
    months = normalise_frame("sales", pd.DataFrame({"month": [dt.date(2026, 1, 1)], "revenue": [1]}))
    assert str(months.dtypes["month"]) == "datetime64[us]" and str(months.dtypes["revenue"]) == "float64"


def test_normalise_leaves_values_of_the_wrong_type_for_the_suite_to_catch() -> None:
    frame = normalise_frame(
        "leads",
        pd.DataFrame(
            {
                "email_opens": [1.0, 2.5],  # not a whole number
                "company_revenue": pd.Series([1.0, "n/a"], dtype=object),
                "converted": pd.Series([True, "yes"], dtype=object),
                "created_at": pd.Series(["2026-01-01", None], dtype=object),
                "unknown_extra": [1, 2],
            }
        ),
    )
    assert str(frame.dtypes["email_opens"]) == "float64"
    assert str(frame.dtypes["company_revenue"]) == "object" and frame.loc[1, "company_revenue"] == "n/a"
    assert str(frame.dtypes["converted"]) == "object"
    assert str(frame.dtypes["created_at"]) == "object"
    assert str(frame.dtypes["unknown_extra"]) == "int64"  # columns the platform does not know: untouched


# ---------------------------------------------------------------------------------------------
# report, error, context root


def _report(outcomes: list[ExpectationOutcome]) -> ValidationReport:
    return ValidationReport(
        dataset="sales",
        organization_id=7,
        row_count=48,
        success=not any(o.severity == "critical" and not o.success for o in outcomes),
        outcomes=outcomes,
        data_docs_path="/gx/uncommitted/data_docs/local_site/validations/x.html",
        snapshot_hash="0" * 64,
        reference_date=dt.date(2026, 11, 22),
    )


def test_require_valid_names_the_failed_critical_expectations_and_the_report() -> None:
    report = _report(
        [
            ExpectationOutcome("expect_column_values_to_be_between(revenue)", "critical", False, {}),
            ExpectationOutcome("expect_column_values_to_be_in_set(industry)", "warning", False, {}),
            ExpectationOutcome("expect_column_to_exist(month)", "critical", False, {}),
            ExpectationOutcome("expect_column_to_exist(revenue)", "critical", True, {}),
        ]
    )
    with pytest.raises(ValidationFailedError) as excinfo:
        require_valid(report)
    assert str(excinfo.value) == (
        "sales validation failed: expect_column_values_to_be_between(revenue), "
        "expect_column_to_exist(month); report: /gx/uncommitted/data_docs/local_site/validations/x.html"
    )
    assert excinfo.value.report is report and excinfo.value.exit_code == 1
    assert [o.expectation for o in report.warning_failures] == ["expect_column_values_to_be_in_set(industry)"]


def test_warnings_alone_do_not_raise() -> None:
    report = _report(
        [ExpectationOutcome("expect_column_values_to_be_in_set(industry)", "warning", False, {})]
    )
    assert report.success
    require_valid(report)


def test_the_report_is_one_line_and_json_serialisable() -> None:
    details = {"partial_unexpected_list": [pd.Timestamp("2027-01-01"), np.float64(-1.5)], "x": np.int64(3)}
    report = _report(
        [ExpectationOutcome("expect_column_values_to_be_between(month)", "critical", False, details)]
    )
    line = report.summary()
    assert "\n" not in line
    assert line.startswith(
        "sales (organization 7, 48 rows) validation FAILED: 0/1 expectations met; critical: "
    )
    data = json.loads(json.dumps(report.as_dict()))
    assert data["critical_failures"] == ["expect_column_values_to_be_between(month)"]
    assert data["outcomes"][0]["details"] == {
        "partial_unexpected_list": ["2027-01-01T00:00:00", -1.5],
        "x": 3,
    }
    assert data["reference_date"] == "2026-11-22" and data["suite"] == "monthly_sales"


def test_the_context_root_defaults_to_the_repository_and_can_be_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEURACRM_GX_ROOT", raising=False)
    assert gx_context_root() == DEFAULT_GX_ROOT
    assert (DEFAULT_GX_ROOT / "great_expectations.yml").is_file()
    (tmp_path / "great_expectations.yml").write_text("config_version: 4.0\n")
    monkeypatch.setenv("NEURACRM_GX_ROOT", str(tmp_path))
    assert gx_context_root() == tmp_path.resolve()
    monkeypatch.setenv("NEURACRM_GX_ROOT", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="NEURACRM_GX_ROOT"):
        gx_context_root()
