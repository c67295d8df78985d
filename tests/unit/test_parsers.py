"""Value parsing for imports: what is accepted, and errors that name the value."""

from __future__ import annotations

import datetime as dt

import pytest

from neuracrm_mlops.ingest import (
    DATASETS,
    RowError,
    coerce_attribute,
    content_hash,
    normalize_header,
    parse_bool,
    parse_float,
    parse_int,
    parse_month,
    parse_row,
    parse_timestamp,
)


@pytest.mark.parametrize(
    ("raw", "expected"), [("12", 12), (" 7 ", 7), ("3.0", 3), (5, 5), ("", None), (None, None)]
)
def test_whole_numbers_parse(raw: object, expected: int | None) -> None:
    assert parse_int(raw) == expected


@pytest.mark.parametrize("raw", ["3.5", "twelve", "inf", True])
def test_non_whole_numbers_are_refused_with_the_value(raw: object) -> None:
    with pytest.raises(RowError, match="whole number"):
        parse_int(raw)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1,234.5"])
def test_non_finite_or_formatted_numbers_are_refused(raw: str) -> None:
    with pytest.raises(RowError, match="number"):
        parse_float(raw)


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


def test_a_row_reports_every_bad_column_at_once() -> None:
    with pytest.raises(RowError) as caught:
        parse_row(DATASETS["leads"], {"lead_id": "", "created_at": "soon", "email_opens": "x"})
    message = str(caught.value)
    assert "column 'lead_id': required but empty" in message
    assert "column 'created_at': cannot parse 'soon'" in message
    assert "column 'email_opens': expected a whole number" in message


def test_content_hash_ignores_key_order_and_sees_value_changes() -> None:
    assert content_hash({"a": 1, "b": dt.date(2026, 1, 1)}) == content_hash(
        {"b": dt.date(2026, 1, 1), "a": 1}
    )
    assert content_hash({"a": 1}) != content_hash({"a": 2})
