"""Learned categories without a database or a GX run: counting, the threshold, what is known, merging."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from neuracrm_mlops.errors import ConfigurationError
from neuracrm_mlops.quality.validation import (
    DEFAULT_MAX_NEW_VALUE_SHARE,
    CategoryProfile,
    ExpectationOutcome,
    NewCategoryValue,
    ValidationReport,
    accepted_category_values,
    count_categories,
    known_category_values,
    learned_columns,
    merge_category_profile,
    new_category_values,
    normalise_frame,
)


def _leads(organizations: list[int], regions: list[str | None], sources: list[str | None]) -> pd.DataFrame:
    return normalise_frame(
        "leads",
        pd.DataFrame(
            {
                "organization_id": pd.Series(organizations, dtype="Int64"),
                "region": pd.Series(regions, dtype="str"),
                "source": pd.Series(sources, dtype="str"),
            }
        ),
    )


# ---------------------------------------------------------------------------------------------
# counting a batch


def test_counts_cover_the_whole_batch_and_each_organization_without_nulls() -> None:
    frame = _leads([1, 1, 1, 2, 2], ["emea", "emea", None, "apac", "emea"], ["web", "web", "web", None, None])
    counts = count_categories(frame, ["region", "source", "industry"])
    assert set(counts) == {None, 1, 2}
    assert counts[None] == CategoryProfile(5, {"region": {"emea": 3, "apac": 1}, "source": {"web": 3}})
    assert counts[1] == CategoryProfile(3, {"region": {"emea": 2}, "source": {"web": 3}})
    assert counts[2] == CategoryProfile(2, {"region": {"apac": 1, "emea": 1}, "source": {}})


def test_a_column_of_nulls_is_profiled_as_having_no_values() -> None:
    frame = _leads([1, 1], [None, None], ["web", "web"])
    assert count_categories(frame, ["region"])[None].value_counts == {"region": {}}


def test_organizations_are_not_counted_when_their_ids_are_not_whole_numbers() -> None:
    frame = pd.DataFrame({"organization_id": ["a", "b"], "region": pd.Series(["emea", "emea"], dtype="str")})
    counts = count_categories(frame, ["region"])
    assert set(counts) == {None}
    assert counts[None].value_counts == {"region": {"emea": 2}}


def test_values_of_another_type_are_counted_by_their_text() -> None:
    frame = pd.DataFrame({"organization_id": pd.Series([1, 1], dtype="Int64"), "region": [5, "emea"]})
    assert count_categories(frame, ["region"])[None].value_counts == {"region": {"5": 1, "emea": 1}}


def test_profile_shares_are_of_all_rows_and_zero_for_values_that_left() -> None:
    profile = CategoryProfile(10, {"region": {"emea": 4, "apac": 1, "latam": 0}})
    assert profile.shares("region") == {"emea": 0.4, "apac": 0.1, "latam": 0.0}
    assert profile.known("region") == {"emea", "apac", "latam"}
    assert profile.known("source") is None  # never profiled: nothing to compare with
    assert CategoryProfile(0, {"region": {}}).shares("region") == {}


# ---------------------------------------------------------------------------------------------
# the threshold


def test_the_first_run_learns_every_value_and_warns_about_none() -> None:
    counts = {"emea": 90, "apac": 10}
    assert new_category_values(counts, 100, None, 0.05) == []
    assert accepted_category_values(counts, 100, None, 0.05) == ["apac", "emea"]


def test_a_known_vocabulary_is_not_new_whatever_its_shares() -> None:
    counts = {"emea": 1, "apac": 99}
    assert new_category_values(counts, 100, {"emea", "apac", "latam"}, 0.05) == []
    assert accepted_category_values(counts, 100, {"emea", "apac", "latam"}, 0.05) == ["apac", "emea", "latam"]


def test_a_new_value_above_the_threshold_is_named_with_its_rows_and_share() -> None:
    counts = {"emea": 80, "mars": 12, "venus": 8}
    new = new_category_values(counts, 100, {"emea"}, 0.05)
    assert new == [NewCategoryValue("mars", 12, 0.12), NewCategoryValue("venus", 8, 0.08)]  # most rows first
    assert new[0].as_dict() == {"value": "mars", "rows": 12, "share": 0.12}
    # the value set GX checks leaves out exactly the values that warn
    assert accepted_category_values(counts, 100, {"emea"}, 0.05) == ["emea"]


@pytest.mark.parametrize(
    ("rows", "warns"),
    [(4, False), (5, False), (6, True)],  # 5 of 100 rows is exactly 5%: at the threshold, not above it
)
def test_the_threshold_is_a_share_of_the_batch_rows_and_strictly_above(rows: int, warns: bool) -> None:
    counts = {"emea": 100 - rows, "mars": rows}
    new = new_category_values(counts, 100, {"emea"}, 0.05)
    assert [n.value for n in new] == (["mars"] if warns else [])
    accepted = accepted_category_values(counts, 100, {"emea"}, 0.05)
    assert ("mars" in accepted) is not warns  # small new values are accepted (and learned)


def test_nulls_count_in_the_batch_rows_so_a_sparse_column_is_not_inflated() -> None:
    # 3 rows of a new value among 100 rows, 96 of them empty: 3% of the batch, not 75% of the values
    assert new_category_values({"emea": 1, "mars": 3}, 100, {"emea"}, 0.05) == []
    assert new_category_values({"mars": 6}, 100, set(), 0.05) == [NewCategoryValue("mars", 6, 0.06)]


def test_the_threshold_can_be_zero_then_every_new_value_warns() -> None:
    assert [n.value for n in new_category_values({"a": 99, "b": 1}, 100, {"a"}, 0.0)] == ["b"]


def test_an_empty_batch_has_nothing_new() -> None:
    assert new_category_values({}, 0, {"emea"}, 0.05) == []
    assert accepted_category_values({}, 0, set(), 0.05) == []


# ---------------------------------------------------------------------------------------------
# what counts as known


def test_without_a_profile_or_a_profiled_column_everything_is_learned() -> None:
    batch = {None: CategoryProfile(2, {"region": {"emea": 2}})}
    assert known_category_values(None, batch, "region") is None
    assert known_category_values(CategoryProfile(5, {"source": {"web": 5}}), batch, "region") is None
    # a column that was always empty (the bank export has no industry) learns its first values
    always_empty = CategoryProfile(5, {"region": {}})
    assert known_category_values(always_empty, batch, "region") is None
    assert known_category_values(CategoryProfile(5, {"region": {"apac": 0}}), batch, "region") == {"apac"}


def test_an_organization_without_a_profile_is_learned_in_an_all_organizations_run() -> None:
    profile = CategoryProfile(10, {"region": {"emea": 10}})
    batch = {
        None: CategoryProfile(30, {"region": {"emea": 10, "apac": 15, "mars": 5}}),
        1: CategoryProfile(15, {"region": {"emea": 10, "mars": 5}}),  # profiled: judged
        2: CategoryProfile(15, {"region": {"apac": 15}}),  # first run: learned
    }
    assert known_category_values(profile, batch, "region", profiled_organizations={1}) == {"emea", "apac"}
    assert known_category_values(profile, batch, "region", profiled_organizations={1, 2}) == {"emea"}
    assert known_category_values(profile, batch, "region") == {"emea"}  # one organization's scope


# ---------------------------------------------------------------------------------------------
# what an accepted run stores


def test_a_stored_profile_has_the_batch_counts_and_keeps_values_that_left_at_zero() -> None:
    previous = CategoryProfile(50, {"region": {"emea": 40, "latam": 10}, "timeline": {"now": 50}}, 7)
    batch = CategoryProfile(60, {"region": {"emea": 45, "apac": 15}, "source": {}})
    merged = merge_category_profile(previous, batch)
    assert merged.row_count == 60
    assert merged.value_counts == {
        "region": {"emea": 45, "latam": 0, "apac": 15},
        "timeline": {"now": 0},  # a column the suite no longer learns keeps what it knew
        "source": {},
    }
    assert merged.validation_run_id is None  # the caller names the run it stores
    assert merge_category_profile(None, batch).value_counts == {
        "region": {"emea": 45, "apac": 15},
        "source": {},
    }


# ---------------------------------------------------------------------------------------------
# the suite declares which columns are learned


def _expectation(column: str, value_set: Any, meta: dict[str, Any], kind: str = "") -> SimpleNamespace:
    return SimpleNamespace(
        column=column,
        value_set=value_set,
        meta=meta,
        expectation_type=kind or "expect_column_values_to_be_in_set",
    )


def test_learned_columns_are_the_in_set_expectations_with_a_new_value_share() -> None:
    suite = SimpleNamespace(
        expectations=[
            _expectation("region", {"$PARAMETER": "known_region_values"}, {"max_new_value_share": 0.1}),
            _expectation("label", ["a", "b"], {"severity": "warning"}),  # a fixed set stays fixed
            _expectation("source", {"$PARAMETER": "known_source_values"}, {"max_new_value_share": None}),
        ]
    )
    learned = learned_columns(suite)
    assert list(learned) == ["region", "source"]
    assert learned["region"].parameter == "known_region_values"
    assert learned["region"].max_new_value_share == 0.1
    assert learned["source"].max_new_value_share == DEFAULT_MAX_NEW_VALUE_SHARE == 0.05
    assert learned["region"].expectation == "expect_column_values_to_be_in_set(region)"


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        (_expectation("region", ["emea"], {"max_new_value_share": 0.05}), "PARAMETER"),
        (_expectation("region", {"$PARAMETER": "p"}, {"max_new_value_share": 1.5}), r"\[0, 1\)"),
        (_expectation("region", {"$PARAMETER": "p"}, {"max_new_value_share": -0.1}), r"\[0, 1\)"),
        (
            _expectation(
                "region", {"$PARAMETER": "p"}, {"max_new_value_share": 0.05}, "expect_column_to_exist"
            ),
            "needs expect_column_values_to_be_in_set",
        ),
    ],
)
def test_a_misconfigured_learned_expectation_is_refused(expectation: SimpleNamespace, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        learned_columns(SimpleNamespace(expectations=[expectation]))


# ---------------------------------------------------------------------------------------------
# the report names what is new


def test_the_summary_line_names_the_new_values_and_their_shares() -> None:
    new_values = [
        {"value": f"v{i}", "rows": 10 - i, "share": (10 - i) / 100, "organization_ids": [1]} for i in range(7)
    ]
    outcome = ExpectationOutcome(
        "expect_column_values_to_be_in_set(source)",
        "warning",
        False,
        {"new_values": new_values, "max_new_value_share": 0.05},
    )
    report = ValidationReport(
        dataset="leads",
        organization_id=None,
        row_count=100,
        success=True,
        outcomes=[outcome],
        data_docs_path="/r.html",
        snapshot_hash="0" * 64,
        reference_date=dt.date(2026, 12, 1),
    )
    assert (
        "; warning: expect_column_values_to_be_in_set(source) (new: 'v0' 10.0%, 'v1' 9.0%, 'v2' 8.0%, "
        "'v3' 7.0%, 'v4' 6.0% and 2 more); report: /r.html"
    ) in report.summary()
    assert "category_counts" not in report.as_dict()  # the batch counts stay out of MLflow and XCom
