"""Value parsing for imports: what is accepted, and errors that name the value."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from neuracrm_mlops.store.ingest import (
    DATASETS,
    FIELD_ERRORS_KEY,
    ImportProgress,
    RowError,
    coerce_attribute,
    content_hash,
    merge_field_errors,
    normalize_header,
    parse_bool,
    parse_float,
    parse_int,
    parse_month,
    parse_row,
    parse_text,
    parse_timestamp,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12", 12),
        (" 7 ", 7),
        ("3.0", 3),
        ("2.00", 2),
        (2.0, 2),
        (Decimal("4.0"), 4),
        ("1e3", 1000),
        ("-4", -4),
        (5, 5),
        ("", None),
        (None, None),
    ],
)
def test_whole_numbers_parse_and_a_zero_fraction_is_the_whole_number(
    raw: object, expected: int | None
) -> None:
    assert parse_int(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2.67", "got '2.67' (it has a fractional part)"),
        (2.67, "got 2.67 (it has a fractional part)"),
        ("0.5", "fractional part"),
        ("1,234", "got '1,234' (numbers use a dot for decimals and no thousands separator)"),
        ("1 234", "no thousands separator"),
        ("1'234", "no thousands separator"),
        ("1_234", "no thousands separator"),  # Python's int() would take it
        ("2,5", "a dot for decimals"),
        ("1.234,5", "a dot for decimals"),
        ("inf", "not a finite number"),
        (Decimal("Infinity"), "not a finite number"),
        (float("inf"), "not a finite number"),
        ("twelve", "got 'twelve'"),
        ("\u0663", "got"),  # an Arabic-Indic digit: Python's int() would take it too
        (True, "got True"),
        ("3000000000", "too large to store"),  # PostgreSQL integer columns end at 2,147,483,647
        ("1e999999999", "too large to store"),  # refused without building the number
    ],
)
def test_non_whole_numbers_are_refused_with_the_value_and_the_reason(raw: object, reason: str) -> None:
    with pytest.raises(RowError, match="expected a whole number") as caught:
        parse_int(raw)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("nan", "not a finite number"),
        ("inf", "not a finite number"),
        ("-inf", "not a finite number"),
        ("1e999", "expected a finite number"),
        ("1,234.5", "numbers use a dot for decimals and no thousands separator"),
        ("1_000.5", "no thousands separator"),
        ("2,67", "a dot for decimals"),
        ("\u0661\u0662", "got"),
    ],
)
def test_non_finite_or_formatted_numbers_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(RowError, match="number") as caught:
        parse_float(raw)
    assert reason in str(caught.value)


def test_numbers_take_a_sign_a_dot_and_an_exponent() -> None:
    assert [parse_float(v) for v in ("2.67", "-.5", "+3", "1e-3", " 4 ", 7)] == [
        2.67,
        -0.5,
        3.0,
        0.001,
        4.0,
        7.0,
    ]


def test_negative_numbers_parse_because_ranges_are_validations_job() -> None:
    assert parse_float("-12.5") == -12.5


@pytest.mark.parametrize(
    ("raw", "expected"), [("Yes", True), ("0", False), ("f", False), (True, True), ("", None)]
)
def test_booleans_accept_common_spellings(raw: object, expected: bool | None) -> None:
    assert parse_bool(raw) is expected


def test_timestamps_without_zone_are_utc_and_with_zone_are_converted() -> None:
    assert parse_timestamp("2026-03-14") == dt.datetime(2026, 3, 14, tzinfo=dt.UTC)
    assert parse_timestamp("2026-03-14T09:30:00Z") == dt.datetime(2026, 3, 14, 9, 30, tzinfo=dt.UTC)
    assert parse_timestamp("2026-03-14T11:30:00+02:00") == dt.datetime(2026, 3, 14, 9, 30, tzinfo=dt.UTC)
    with pytest.raises(RowError, match="ISO 8601"):
        parse_timestamp("14/03/2026")


def test_months_are_first_days_and_other_days_are_refused() -> None:
    assert parse_month("2026-03") == dt.date(2026, 3, 1)
    assert parse_month(dt.date(2026, 3, 1)) == dt.date(2026, 3, 1)
    for bad in ("2026-03-15", "2026-13", "March 2026", dt.date(2026, 3, 2)):
        with pytest.raises(RowError, match="month"):
            parse_month(bad)


def test_attribute_values_get_the_type_they_read_as() -> None:
    assert [coerce_attribute(v) for v in ("12", "1.5", "TRUE", "gold", " ", "nan")] == [
        12,
        1.5,
        True,
        "gold",
        None,
        "nan",
    ]


def test_headers_are_matched_case_and_space_insensitively() -> None:
    assert normalize_header("  Created At ") == "created_at"


def test_a_row_with_a_bad_key_or_required_column_is_refused_naming_every_such_column() -> None:
    with pytest.raises(RowError) as caught:
        parse_row(DATASETS["leads"], {"lead_id": "", "created_at": "soon", "email_opens": "x"})
    message = str(caught.value)
    assert "column 'lead_id': required but empty" in message
    assert "column 'created_at': cannot parse 'soon'" in message
    assert "email_opens" not in message  # optional: a field error, not a reason to refuse the row


def test_an_optional_column_that_does_not_parse_is_empty_with_its_raw_value_kept() -> None:
    parsed = parse_row(
        DATASETS["leads"],
        {"lead_id": "L-1", "created_at": "2026-01-05", "pages_viewed": " 2.67", "email_opens": "2.0"},
    )
    assert parsed.record["pages_viewed"] is None and "pages_viewed" in parsed.record
    assert parsed.record["email_opens"] == 2
    assert list(parsed.field_errors) == ["pages_viewed"]
    assert parsed.field_errors["pages_viewed"].as_json() == {
        "raw": " 2.67",  # the cell exactly as read
        "error": "expected a whole number, got ' 2.67' (it has a fractional part)",
    }
    assert FIELD_ERRORS_KEY not in parsed.attributes


def test_every_optional_column_of_every_dataset_keeps_the_row_when_it_does_not_parse() -> None:
    for spec in DATASETS.values():
        good = {"lead_id": "L-1", "interaction_id": "I-1", "created_at": "2026-01-05", "text": "hi"}
        good |= {"month": "2026-01", "revenue": "1"}
        values = {c.name: good.get(c.name, "") for c in spec.columns}
        for column in spec.columns:
            if column.required or column.name == spec.key:
                continue
            bad = parse_row(spec, {**values, column.name: "not a value \u2603"})
            if column.parse is parse_text:
                assert bad.field_errors == {}
            else:
                assert list(bad.field_errors) == [column.name], (spec.name, column.name)
                assert bad.record[column.db_column] is None


def test_a_parquet_value_that_is_a_field_error_keeps_a_json_value() -> None:
    parsed = parse_row(
        DATASETS["leads"],
        {"lead_id": "L-1", "created_at": dt.datetime(2026, 1, 5), "pages_viewed": 2.67, "converted": 3},
    )
    assert parsed.field_errors["pages_viewed"].raw == 2.67
    assert parsed.field_errors["converted"].raw == 3


def test_a_file_column_present_replaces_its_stored_field_error_and_an_absent_one_keeps_it() -> None:
    stored = {
        "pages_viewed": {"raw": "2.67", "error": "old"},
        "email_opens": {"raw": "x", "error": "old"},
    }
    fixed = parse_row(DATASETS["leads"], {"lead_id": "L-1", "created_at": "2026-01-05", "pages_viewed": "3"})
    merged = merge_field_errors(DATASETS["leads"], stored, fixed.record, fixed.field_errors)
    assert merged == {"email_opens": {"raw": "x", "error": "old"}}
    again = parse_row(DATASETS["leads"], {"lead_id": "L-1", "created_at": "2026-01-05", "email_opens": "1,5"})
    merged = merge_field_errors(DATASETS["leads"], stored, again.record, again.field_errors)
    assert merged["email_opens"]["raw"] == "1,5" and merged["pages_viewed"]["raw"] == "2.67"


def test_content_hash_ignores_key_order_and_sees_value_changes() -> None:
    assert content_hash({"a": 1, "b": dt.date(2026, 1, 1)}) == content_hash(
        {"b": dt.date(2026, 1, 1), "a": 1}
    )
    assert content_hash({"a": 1}) != content_hash({"a": 2})


def test_text_longer_than_its_database_column_is_refused_like_a_value_that_does_not_parse() -> None:
    spec = DATASETS["leads"]
    assert spec.max_chars["lead_id"] == 128 and spec.max_chars["industry"] == 64
    assert "description" not in spec.max_chars  # TEXT: no limit but the field size limit
    fits = parse_row(spec, {"lead_id": "L" * 128, "created_at": "2026-01-05", "industry": "i" * 64})
    assert fits.field_errors == {} and fits.record["industry"] == "i" * 64
    optional = parse_row(spec, {"lead_id": "L-1", "created_at": "2026-01-05", "seniority": " " + "v" * 33})
    assert optional.record["seniority"] is None
    assert optional.field_errors["seniority"].as_json() == {
        "raw": " " + "v" * 33,
        "error": "33 characters, longer than the 32 this column holds",  # counted after trimming
    }
    with pytest.raises(RowError, match="column 'lead_id': 129 characters, longer than the 128 this column"):
        parse_row(spec, {"lead_id": "L" * 129, "created_at": "2026-01-05"})


def test_progress_estimates_the_rows_of_a_csv_file_from_the_bytes_read_and_knows_those_of_parquet() -> None:
    assert ImportProgress(
        rows_read=40_000, done=10_000_000, total=30_000_000, unit="bytes"
    ).expected_rows == (120_000)
    assert ImportProgress(rows_read=100, done=10, total=10, unit="bytes").expected_rows == 100
    assert ImportProgress(rows_read=0, done=0, total=30_000_000, unit="bytes").expected_rows is None
    assert ImportProgress(rows_read=5_000, done=5_000, total=12_345, unit="rows").expected_rows == 12_345
