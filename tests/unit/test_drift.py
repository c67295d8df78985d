"""Data drift (KS, chi-square, Benjamini-Hochberg, PSI), bias metrics and reference profiles."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from neuracrm_mlops.quality.drift import (
    OTHER_CATEGORY,
    benjamini_hochberg,
    bias_metrics,
    category_key,
    drift_against_profile,
    feature_drift,
    frame_from_profile,
    infer_feature_kinds,
    merge_rare_categories,
    numeric_psi,
    reference_profile,
)


def crm_frame(
    seed: int, n: int = 1000, *, amount_mean: float = 100.0, industries: str = "abc"
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(amount_mean, 20.0, n),
            "visits": rng.poisson(5, n),
            "industry": rng.choice(list(industries), n),
            "decision_maker": rng.random(n) < 0.3,
        }
    )


# --- drift: verdicts ----------------------------------------------------------------------------------


def test_identical_frames_show_no_drift_and_zero_psi() -> None:
    frame = crm_frame(0)
    report = feature_drift(frame, frame.copy())
    assert not report.any_drift
    assert report.drifted_features == []
    assert [row.status for row in report.features] == ["ok"] * 4
    for row in report.features:
        assert row.psi == pytest.approx(0.0, abs=1e-12)
        assert row.p_value == pytest.approx(1.0)


def test_samples_of_the_same_distribution_show_no_drift() -> None:
    report = feature_drift(crm_frame(1), crm_frame(2))
    assert not report.any_drift
    assert all(row.psi is not None and row.psi < 0.05 for row in report.features)


def test_shifted_mean_drifts_on_that_feature_only() -> None:
    report = feature_drift(crm_frame(1), crm_frame(2, amount_mean=110.0))
    assert report.drifted_features == ["amount"]
    assert report.any_drift
    amount = report.feature("amount")
    assert amount.status == "drift"
    assert amount.test == "ks"
    assert amount.p_adjusted is not None and amount.p_adjusted < 1e-6
    assert amount.psi is not None and amount.psi > 0.1
    assert report.feature("visits").status == "ok"


def test_features_are_tested_with_the_test_of_their_kind() -> None:
    report = feature_drift(crm_frame(1), crm_frame(2))
    assert {row.feature: (row.kind, row.test) for row in report.features} == {
        "amount": ("numeric", "ks"),
        "visits": ("numeric", "ks"),
        "industry": ("categorical", "chi2"),
        "decision_maker": ("categorical", "chi2"),
    }


def test_changed_category_mix_drifts() -> None:
    reference = crm_frame(1)
    current = crm_frame(2)
    current["industry"] = np.where(np.arange(len(current)) % 2 == 0, "a", current["industry"])
    report = feature_drift(reference, current)
    assert report.drifted_features == ["industry"]


def test_unseen_category_is_detected_as_drift() -> None:
    report = feature_drift(crm_frame(1), crm_frame(2, industries="abcd"))
    industry = report.feature("industry")
    assert industry.unseen_categories == ("d",)
    assert industry.drifted
    assert industry.merged_categories == ()
    assert industry.psi is not None and industry.psi > 0.25
    assert "unseen d" in report.summary()


def test_rare_unseen_category_is_merged_so_expected_counts_stay_valid() -> None:
    reference = crm_frame(1)
    current = crm_frame(2)
    current.loc[:1, "industry"] = "zz"  # two rows of a category the reference never had
    industry = feature_drift(reference, current).feature("industry")
    assert industry.unseen_categories == ("zz",)
    assert "zz" in industry.merged_categories
    assert industry.status in ("ok", "drift")
    assert industry.p_value is not None and 0.0 <= industry.p_value <= 1.0


def test_merging_leaves_every_expected_count_at_least_five() -> None:
    counts = pd.DataFrame(
        {"a": [500, 60], "b": [300, 30], "c": [40, 5], "d": [0, 2], "e": [3, 0]},
        index=["reference", "current"],
    )
    merged, names = merge_rare_categories(counts)
    assert names == ["c", "d", "e"]
    assert list(merged.columns) == ["a", "b", OTHER_CATEGORY]
    assert merged[OTHER_CATEGORY].tolist() == [43, 7]
    table = merged.to_numpy(dtype=float)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    assert expected.min() >= 5.0
    assert int(merged.to_numpy().sum()) == int(counts.to_numpy().sum())  # nothing lost


def test_merging_folds_in_the_next_rarest_when_the_other_column_is_still_too_small() -> None:
    counts = pd.DataFrame({"a": [900, 90], "b": [60, 6], "c": [1, 0]}, index=["reference", "current"])
    merged, names = merge_rare_categories(counts)
    assert names == ["b", "c"]
    assert list(merged.columns) == ["a", OTHER_CATEGORY]


def test_single_category_on_both_sides_is_no_drift() -> None:
    reference = pd.DataFrame({"plan": ["pro"] * 100})
    row = feature_drift(reference, reference.iloc[:60]).feature("plan")
    assert row.status == "ok"
    assert row.p_value == 1.0
    assert "single category" in row.note


def test_integer_and_float_codes_are_the_same_category() -> None:
    reference = pd.DataFrame({"tier": pd.Series([1, 2, 3] * 100, dtype="int64").astype(object)})
    current = pd.DataFrame({"tier": [1.0, 2.0, 3.0] * 100 + [np.nan] * 5})
    row = feature_drift(reference, current, categorical=["tier"]).feature("tier")
    assert row.unseen_categories == ()
    assert row.n_current == 300
    assert not row.drifted
    assert category_key(3.0) == category_key(3) == "3"
    assert category_key(np.True_) == "True"


# --- drift: sample size, missing columns ---------------------------------------------------------------


def test_small_samples_are_insufficient_data_never_drift() -> None:
    reference = crm_frame(1)
    current = crm_frame(2, n=49, amount_mean=500.0)
    report = feature_drift(reference, current)
    assert not report.any_drift
    amount = report.feature("amount")
    assert amount.status == "insufficient_data"
    assert amount.p_value is None and amount.p_adjusted is None and amount.statistic is None
    assert amount.psi is not None and amount.psi > 1.0  # PSI is still reported
    assert amount.n_current == 49
    assert "fewer than 50" in amount.note
    assert report.with_status("insufficient_data") == ["amount", "visits", "industry", "decision_maker"]


def test_exactly_min_samples_is_tested() -> None:
    report = feature_drift(crm_frame(1), crm_frame(2, n=50, amount_mean=500.0))
    assert report.feature("amount").status == "drift"


def test_nulls_do_not_count_towards_the_sample_size() -> None:
    current = crm_frame(2, n=100)
    current.loc[:59, "amount"] = np.nan
    current.loc[:59, "industry"] = None
    report = feature_drift(crm_frame(1), current)
    for name in ("amount", "industry"):
        assert report.feature(name).n_current == 40
        assert report.feature(name).status == "insufficient_data"
    assert report.feature("visits").status == "ok"


def test_missing_column_is_reported_never_dropped() -> None:
    current = crm_frame(2).drop(columns=["visits"])
    report = feature_drift(crm_frame(1), current)
    visits = report.feature("visits")
    assert visits.status == "missing"
    assert "current" in visits.note
    assert not visits.drifted
    assert report.with_status("missing") == ["visits"]
    assert "missing: visits" in report.summary()


def test_feature_missing_from_the_reference_is_reported_too() -> None:
    current = crm_frame(2)
    current["score"] = 1.0
    row = feature_drift(crm_frame(1), current, numeric=["amount", "score"]).feature("score")
    assert row.status == "missing"
    assert "reference" in row.note


# --- drift: many tests --------------------------------------------------------------------------------


def test_benjamini_hochberg_matches_a_hand_computed_example() -> None:
    # sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.06, 0.0533, 0.5 -> monotone from the top
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert benjamini_hochberg([]) == []


def test_many_null_features_produce_no_false_positive_after_correction() -> None:
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({f"f{i}": rng.normal(size=300) for i in range(40)})
    current = pd.DataFrame({f"f{i}": rng.normal(size=300) for i in range(40)})
    report = feature_drift(reference, current)
    raw = [row.p_value for row in report.features if row.p_value is not None]
    assert min(raw) < 0.05  # uncorrected, some null feature would have been flagged
    assert not report.any_drift
    for row in report.features:
        assert row.p_adjusted is not None and row.p_value is not None
        assert row.p_adjusted >= row.p_value


def test_a_real_shift_survives_the_correction_among_many_null_features() -> None:
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({f"f{i}": rng.normal(size=300) for i in range(40)})
    current = pd.DataFrame({f"f{i}": rng.normal(size=300) for i in range(40)})
    current["f13"] += 1.0
    assert feature_drift(reference, current).drifted_features == ["f13"]


def test_untested_features_do_not_enter_the_correction() -> None:
    reference = crm_frame(1)
    current = crm_frame(2, amount_mean=104.0)
    alone = feature_drift(reference, current, numeric=["amount"]).feature("amount")
    with_missing = feature_drift(reference, current, numeric=["amount", "visits_gone"]).feature("amount")
    assert alone.p_adjusted == with_missing.p_adjusted == alone.p_value


def test_min_psi_ignores_significant_but_tiny_shifts() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(0.0, 1.0, 100_000)})
    current = pd.DataFrame({"x": rng.normal(0.05, 1.0, 100_000)})
    assert feature_drift(reference, current).drifted_features == ["x"]
    ignored = feature_drift(reference, current, min_psi=0.1).feature("x")
    assert ignored.status == "ok"
    assert ignored.p_adjusted is not None and ignored.p_adjusted < 0.05


# --- PSI ----------------------------------------------------------------------------------------------


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(5)
    reference = rng.normal(0.0, 1.0, 5000)
    assert numeric_psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert numeric_psi(reference, rng.normal(0.0, 1.0, 5000)) < 0.02
    assert numeric_psi(reference, rng.normal(1.0, 1.0, 5000)) > 0.25


def test_psi_counts_values_outside_the_training_range() -> None:
    reference = np.full(200, 5.0)
    assert numeric_psi(reference, np.full(200, 5.0)) == pytest.approx(0.0)
    assert numeric_psi(reference, np.full(200, 6.0)) > 1.0
    assert numeric_psi(reference, np.full(200, 4.0)) > 1.0


def test_psi_treats_values_below_and_above_the_training_range_alike() -> None:
    reference = np.linspace(0.0, 1.0, 1000)
    below = numeric_psi(reference, np.full(100, -5.0))
    assert below > 10.0
    assert below == pytest.approx(numeric_psi(reference, np.full(100, 6.0)))


def test_psi_needs_values_on_both_sides() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        numeric_psi(np.array([1.0]), np.array([]))


# --- drift: inputs ------------------------------------------------------------------------------------


def test_kinds_are_inferred_from_dtypes() -> None:
    frame = crm_frame(1, n=10)
    frame["created_at"] = pd.Timestamp("2026-01-01")
    frame["segment"] = pd.Categorical(["x", "y"] * 5)
    numeric, categorical, skipped = infer_feature_kinds(frame)
    assert numeric == ["amount", "visits"]
    assert categorical == ["industry", "decision_maker", "segment"]
    assert skipped == ["created_at"]
    assert feature_drift(frame, frame).skipped_columns == ("created_at",)


def test_giving_one_kind_tests_only_those_features() -> None:
    report = feature_drift(crm_frame(1), crm_frame(2), numeric=["amount"])
    assert [row.feature for row in report.features] == ["amount"]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"numeric": ["amount"], "categorical": ["amount"]}, "both numeric and categorical"),
        ({"numeric": ["amount", "amount"]}, "more than once"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"min_samples": 0}, "min_samples"),
        ({"min_psi": -0.1}, "min_psi"),
    ],
)
def test_invalid_drift_arguments_are_refused(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        feature_drift(crm_frame(1), crm_frame(2), **kwargs)


def test_drift_report_is_json_safe() -> None:
    current = crm_frame(2, amount_mean=130.0).drop(columns=["visits"])
    data = feature_drift(crm_frame(1), current).to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["drifted_features"] == ["amount"]
    assert {row["status"] for row in data["features"]} == {"drift", "ok", "missing"}


# --- bias ---------------------------------------------------------------------------------------------


def groups_frame(spec: dict[str, tuple[int, int, int, int]]) -> pd.DataFrame:
    """Rows per group from (true positives, false negatives, false positives, true negatives)."""
    rows: list[dict[str, Any]] = []
    for group, (tp, fn, fp, tn) in spec.items():
        for count, predicted, actual in ((tp, 1, 1), (fn, 0, 1), (fp, 1, 0), (tn, 0, 0)):
            rows += [{"region": group, "predicted": predicted, "converted": actual}] * count
    return pd.DataFrame(rows)


def test_biased_predictions_breach_demographic_parity() -> None:
    frame = groups_frame({"north": (40, 10, 30, 20), "south": (20, 30, 10, 40)})
    report = bias_metrics(frame, attribute="region", prediction="predicted", outcome="converted")
    assert report.demographic_parity_difference == pytest.approx(0.70 - 0.30)
    assert report.equal_opportunity_difference == pytest.approx(0.80 - 0.40)
    breaches = report.breaches()
    assert len(breaches) == 2
    assert "demographic parity difference 0.400 across region exceeds 0.10" in breaches[0]
    assert "highest north 0.700, lowest south 0.300" in breaches[0]
    assert "equal opportunity difference 0.400" in breaches[1]


def test_fair_predictions_do_not_breach() -> None:
    frame = groups_frame({"north": (40, 10, 10, 40), "south": (40, 10, 10, 40), "east": (80, 20, 20, 80)})
    report = bias_metrics(frame, attribute="region", prediction="predicted", outcome="converted")
    assert report.demographic_parity_difference == pytest.approx(0.0)
    assert report.equal_opportunity_difference == pytest.approx(0.0)
    assert report.breaches() == []
    assert [group.group for group in report.groups] == ["east", "north", "south"]


def test_equal_selection_rates_can_still_breach_equal_opportunity() -> None:
    # both groups select 50%, but north selects 90% of its converters and south 50%
    frame = groups_frame({"north": (45, 5, 5, 45), "south": (25, 25, 25, 25)})
    report = bias_metrics(frame, attribute="region", prediction="predicted", outcome="converted")
    assert report.demographic_parity_difference == pytest.approx(0.0)
    assert report.equal_opportunity_difference == pytest.approx(0.4)
    breaches = report.breaches()
    assert len(breaches) == 1 and breaches[0].startswith("equal opportunity")


def test_breach_thresholds_are_respected() -> None:
    frame = groups_frame({"north": (30, 20, 30, 20), "south": (25, 25, 25, 25)})  # 0.6 vs 0.5
    report = bias_metrics(frame, attribute="region", prediction="predicted", outcome="converted")
    assert report.demographic_parity_difference == pytest.approx(0.1)
    assert not [b for b in report.breaches() if b.startswith("demographic")]  # exactly at 0.1 is no breach
    assert report.breaches(dp_threshold=0.05, eo_threshold=0.5)[0].startswith("demographic parity")


def test_small_groups_are_listed_as_excluded_with_their_sizes() -> None:
    frame = groups_frame({"north": (40, 10, 10, 40), "south": (40, 10, 10, 40), "islands": (10, 0, 9, 0)})
    report = bias_metrics(frame, attribute="region", prediction="predicted", outcome="converted")
    assert report.excluded_groups == {"islands": 19}
    assert [group.group for group in report.groups] == ["north", "south"]
    assert report.demographic_parity_difference == pytest.approx(0.0)  # islands (100%) left out
    assert any("islands (19)" in note for note in report.notes)


def test_equal_opportunity_is_none_without_an_outcome_column() -> None:
    frame = groups_frame({"north": (40, 10, 30, 20), "south": (20, 30, 10, 40)})
    report = bias_metrics(frame, attribute="region", prediction="predicted")
    assert report.equal_opportunity_difference is None
    assert report.groups[0].true_positive_rate is None and report.groups[0].outcome_positives is None
    assert any("no outcome column" in note for note in report.notes)
    assert len(report.breaches()) == 1


def test_equal_opportunity_is_none_with_too_few_positive_outcomes() -> None:
    frame = groups_frame({"north": (20, 9, 30, 41), "south": (5, 5, 30, 60)})
    report = bias_metrics(frame, attribute="region", prediction="predicted", outcome="converted")
    assert report.equal_opportunity_difference is None
    assert report.equal_opportunity_excluded == {"north": 29, "south": 10}


def test_a_single_group_gives_no_differences() -> None:
    frame = groups_frame({"north": (40, 10, 30, 20), "south": (1, 1, 1, 1)})
    report = bias_metrics(frame, attribute="region", prediction="predicted", outcome="converted")
    assert report.demographic_parity_difference is None
    assert report.breaches() == []
    assert any("found 1" in note for note in report.notes)


def test_rows_with_a_null_attribute_are_counted_as_skipped() -> None:
    frame = groups_frame({"north": (40, 10, 30, 20), "south": (20, 30, 10, 40)})
    frame.loc[:4, "region"] = None
    report = bias_metrics(frame, attribute="region", prediction="predicted", outcome="converted")
    assert report.rows_skipped == 5
    assert sum(group.size for group in report.groups) == len(frame) - 5


def test_boolean_predictions_and_text_labels_work() -> None:
    frame = groups_frame({"north": (40, 10, 30, 20), "south": (20, 30, 10, 40)})
    frame["predicted"] = frame["predicted"].astype(bool)
    frame["label"] = np.where(frame["converted"] == 1, "won", "lost")
    as_bool = bias_metrics(frame, attribute="region", prediction="predicted")
    assert as_bool.demographic_parity_difference == pytest.approx(0.4)
    as_text = bias_metrics(frame, attribute="region", prediction="label", positive_label="won")
    assert as_text.demographic_parity_difference == pytest.approx(0.5 - 0.5)


def test_bias_refuses_an_unknown_column_naming_its_role() -> None:
    frame = groups_frame({"north": (1, 1, 1, 1)})
    with pytest.raises(ValueError, match="outcome column 'won'"):
        bias_metrics(frame, attribute="region", prediction="predicted", outcome="won")
    with pytest.raises(ValueError, match="min_group_size"):
        bias_metrics(frame, attribute="region", prediction="predicted", min_group_size=0)


def test_bias_report_is_json_safe() -> None:
    frame = groups_frame({"north": (40, 10, 30, 20), "south": (20, 30, 10, 40), "x": (1, 1, 1, 1)})
    data = bias_metrics(frame, attribute="region", prediction="predicted", outcome="converted").to_dict()
    assert json.loads(json.dumps(data, allow_nan=False))["excluded_groups"] == {"x": 4}


# --- reference profile --------------------------------------------------------------------------------


def test_profile_is_json_safe_with_nulls_for_missing_values() -> None:
    frame = crm_frame(1, n=20)
    frame.loc[0, "amount"] = np.nan
    frame.loc[1, "amount"] = np.inf
    frame.loc[2, "industry"] = None
    profile = reference_profile(frame, ["amount", "visits"], ["industry", "decision_maker"])
    loaded = json.loads(json.dumps(profile, allow_nan=False))
    assert loaded["columns"]["amount"][:2] == [None, None]
    assert loaded["columns"]["industry"][2] is None
    assert loaded["columns"]["decision_maker"][0] in ("True", "False")
    assert loaded["summary"]["amount"]["count"] == 18
    assert loaded["summary"]["amount"]["missing"] == 2
    assert loaded["summary"]["industry"]["missing"] == 1


def test_profile_round_trips_through_json_into_a_frame() -> None:
    frame = crm_frame(1, n=30)
    frame.loc[3, "amount"] = np.nan
    profile = json.loads(json.dumps(reference_profile(frame, ["amount", "visits"], ["industry"])))
    back = frame_from_profile(profile)
    assert list(back.columns) == ["amount", "visits", "industry"]
    assert back["amount"].dtype == np.float64
    np.testing.assert_array_equal(back["amount"].to_numpy(), frame["amount"].to_numpy())
    assert back["visits"].tolist() == frame["visits"].astype(float).tolist()
    assert back["industry"].tolist() == frame["industry"].tolist()


def test_profile_samples_at_most_max_rows_reproducibly() -> None:
    frame = crm_frame(1, n=2000)
    first = reference_profile(frame, ["amount"], [], max_rows=300, seed=4)
    again = reference_profile(frame, ["amount"], [], max_rows=300, seed=4)
    other = reference_profile(frame, ["amount"], [], max_rows=300, seed=5)
    assert first["sampled_rows"] == len(first["columns"]["amount"]) == 300
    assert first["rows"] == 2000
    assert first["columns"] == again["columns"]
    assert first["columns"] != other["columns"]
    assert first["summary"]["amount"]["count"] == 2000  # summaries use every row
    assert set(first["columns"]["amount"]) <= set(frame["amount"])


def test_drift_against_a_stored_profile() -> None:
    training = crm_frame(1, n=3000)
    profile = json.loads(
        json.dumps(reference_profile(training, ["amount", "visits"], ["industry", "decision_maker"]))
    )
    assert not drift_against_profile(profile, crm_frame(2)).any_drift
    shifted = drift_against_profile(profile, crm_frame(2, amount_mean=115.0, industries="abcd"))
    assert shifted.drifted_features == ["amount", "industry"]
    assert shifted.feature("decision_maker").unseen_categories == ()  # bools compare as the same text


def test_profile_refuses_unknown_features_and_formats() -> None:
    frame = crm_frame(1, n=10)
    with pytest.raises(ValueError, match="missing from the frame: score"):
        reference_profile(frame, ["amount", "score"], [])
    with pytest.raises(ValueError, match="max_rows"):
        reference_profile(frame, ["amount"], [], max_rows=0)
    profile = reference_profile(frame, ["amount"], ["industry"])
    with pytest.raises(ValueError, match="format"):
        frame_from_profile({**profile, "format": 99})
    with pytest.raises(ValueError, match="different lengths"):
        frame_from_profile({**profile, "columns": {"amount": [1.0], "industry": ["a", "b"]}})


def test_a_sample_of_the_training_leads_as_the_service_logs_them_does_not_drift() -> None:
    """The monitor's path end to end on the lead model's own features: the reference profile of the
    training rows against a sample of those rows as the service logs them (JSON records, missing
    fields left out, whole numbers as ints): no feature drifts, every one is tested."""
    import json

    from neuracrm_mlops.models.lead_scoring_model import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS
    from neuracrm_mlops.quality.drift import drift_against_profile, reference_profile
    from neuracrm_mlops.store.synthetic import generate_crm

    leads = generate_crm(20, 24, 11, leads_per_org=200).leads
    profile = json.loads(json.dumps(reference_profile(leads, NUMERIC_COLUMNS, CATEGORICAL_COLUMNS)))
    sample = leads.sample(800, random_state=3)
    logged = [
        {k: v for k, v in record.items() if v is not None}
        for record in json.loads(sample[[*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS]].to_json(orient="records"))
    ]
    report = drift_against_profile(profile, pd.DataFrame(logged))
    assert report.drifted_features == [], report.summary()
    assert set(report.with_status("ok")) == {*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS}
    assert max(row.psi or 0.0 for row in report.features) < 0.1, report.summary()
