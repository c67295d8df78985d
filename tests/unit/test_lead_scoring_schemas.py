"""Any lead schema trains and serves: the feature set comes from the fields the training leads have."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from neuracrm_mlops.models import lead_scoring_model as lsm
from neuracrm_mlops.store.synthetic import generate_crm
from neuracrm_mlops.training.servability import jsonable_records

# module-scoped fixtures, made once: the module runs on one worker
pytestmark = pytest.mark.xdist_group("lead_scoring_schemas")

PLAN_EFFECT = {"free": -1.2, "starter": 0.0, "pro": 1.0, "enterprise": 2.0}


def crm_export(n: int = 1_500, seed: int = 0, *, with_job_title: bool = True) -> pd.DataFrame:
    """A CRM export with none of the company, engagement, urgency, industry or text fields: the signal
    is in custom fields (``attributes``), typed the way the importer stores them."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(list(PLAN_EFFECT), n, p=[0.4, 0.3, 0.2, 0.1])
    seats = rng.integers(1, 300, n)
    partner = rng.random(n) < 0.2
    logit = (
        -1.0 + np.array([PLAN_EFFECT[p] for p in plan]) + 0.9 * np.log1p(seats) / np.log(300) + 0.8 * partner
    )
    converted = rng.random(n) < 1 / (1 + np.exp(-logit))
    attributes = []
    for i in range(n):
        attributes.append(
            {
                "plan": plan[i],
                "seats": str(seats[i]) if i % 7 == 0 else int(seats[i]),  # numbers, some sent as text
                "partner": bool(partner[i]),
                "region_code": f"R{rng.integers(0, 60):02d}",  # 60 values: bucketed
                "trial_days": "n/a" if i % 40 == 0 else float(rng.integers(0, 30)),  # 97.5% numbers
                "ticket": f"T-{i:06d}",  # one value per lead: an identifier
                "empty_field": None,
                "constant": "same",
                "_field_errors": {"company_employees": "lots"},  # reserved by the importer
            }
        )
    frame = pd.DataFrame(
        {
            "lead_id": [f"L-{i:05d}" for i in range(n)],
            "created_at": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
            "source": rng.choice(["web", "referral", "event"], n),
            "attributes": attributes,
            "converted": converted,
        }
    )
    if with_job_title:
        frame["job_title"] = rng.choice(["Owner", "Analyst", "Sales Manager", "Head of IT"], n)
    return frame


def split(frame: pd.DataFrame, share: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = round(len(frame) * (1 - share))
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


@pytest.fixture(scope="module")
def export() -> tuple[pd.DataFrame, pd.DataFrame]:
    return split(crm_export())


@pytest.fixture(scope="module")
def export_model(export: tuple[pd.DataFrame, pd.DataFrame]) -> lsm.LeadScoringModel:
    train_part, _ = export
    return lsm.train(train_part, train_part["converted"])


def no_data_factors(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        f for r in results for f in r["factors"] if "no data" in f["text"] or "not enough text" in f["text"]
    ]


def test_a_schema_without_text_company_or_engagement_trains_and_ranks_leads(
    export: tuple[pd.DataFrame, pd.DataFrame], export_model: lsm.LeadScoringModel
) -> None:
    _, holdout = export
    model = export_model
    assert model.spec.groups_without_inputs == (
        "industry",
        "company_size",
        "engagement",
        "urgency",
        "text_insights",
    )
    assert set(model.factor_inputs[lsm.OTHER_FIELDS]) == {
        "attr_plan",
        "attr_seats",
        "attr_partner",
        "attr_region_code",
        "attr_trial_days",
    }
    assert model.factor_inputs["decision_maker"] == ["seniority", "job_title"]
    auc = roc_auc_score(holdout["converted"], model.predict_proba(holdout))
    assert auc > 0.7


def test_training_notes_say_what_happened_to_every_field_left_out(export_model: lsm.LeadScoringModel) -> None:
    notes = "\n".join(export_model.feature_notes)
    assert "company_employees: dropped, no values in the 1,200 training leads" in notes
    assert "description: no text signal, 0 leads of 1,200 have a description" in notes
    assert "attr_ticket: dropped, 1,200 distinct values in 1,200 leads: an identifier" in notes
    assert "attr_empty_field: dropped, no values" in notes
    assert "attr_constant: dropped, the same value (same) for every lead" in notes
    assert "attr_region_code: bucketed, 60 distinct values" in notes
    assert "attr_trial_days: numeric, 30 values that are not a number count as missing" in notes
    assert "factor groups without inputs" in notes
    assert "_field_errors" not in notes  # reserved by the importer, never a feature
    assert export_model.attribute_numeric == ["attr_seats", "attr_trial_days"]
    assert export_model.attribute_categorical == ["attr_partner", "attr_plan", "attr_region_code"]
    assert export_model.feature_schema["attr_seats"] == "numeric"
    assert "company_employees" not in export_model.feature_schema


def test_factors_of_groups_with_inputs_come_first_and_groups_without_inputs_say_so() -> None:
    frame = crm_export(1_000, seed=1, with_job_title=False).drop(columns=["source"])
    train_part, holdout = split(frame)
    model = lsm.train(train_part, train_part["converted"])
    results = lsm.predict(model, holdout)
    for result in results:
        groups = [f["group"] for f in result["factors"]]
        # other_fields is the only group with inputs; then the groups without, in FACTOR_GROUPS order
        assert groups == ["other_fields", "industry", "company_size"]
        assert result["factors"][1] == {
            "group": "industry",
            "direction": "+",
            "impact": 0.0,
            "text": "Industry: no data in this organization's leads",
        }
        assert result["factors"][2]["text"] == "Company size: no data in this organization's leads"
        assert result["factors"][0]["text"].startswith("Other fields: ")


def test_explanations_use_the_groups_with_inputs_when_there_are_three_or_more(
    export: tuple[pd.DataFrame, pd.DataFrame], export_model: lsm.LeadScoringModel
) -> None:
    _, holdout = export
    results = lsm.predict(export_model, holdout)
    # decision maker and other fields have inputs: the third factor is the first group without
    assert {f["group"] for r in results for f in r["factors"]} <= set(lsm.FACTOR_GROUPS)
    assert all(len(r["factors"]) == 3 for r in results)
    assert {f["group"] for f in no_data_factors(results)} == {"industry"}
    assert all(f["impact"] == 0.0 for f in no_data_factors(results))


def test_the_other_fields_factor_names_the_custom_field_that_moves_the_lead(
    export_model: lsm.LeadScoringModel,
) -> None:
    reference = {k: v for k, v in export_model.reference.items() if not k.startswith(lsm.ATTRIBUTE_PREFIX)}
    attributes = {
        c.removeprefix(lsm.ATTRIBUTE_PREFIX): export_model.reference[c]
        for c in (*export_model.attribute_numeric, *export_model.attribute_categorical)
    }
    assert attributes["plan"] == "free"  # the most common plan is the reference
    lead = reference | {"attributes": attributes | {"plan": "enterprise"}}
    factors = lsm.predict(export_model, [lead])[0]["factors"]
    other = next(f for f in factors if f["group"] == "other_fields")
    assert other == {
        "group": "other_fields",
        "direction": "+",
        "impact": other["impact"],
        "text": "Other fields: plan = enterprise raises the chance",
    }
    assert other["impact"] > 0.1


def test_the_lean_path_answers_like_predict_for_that_schema_and_pickles(
    export: tuple[pd.DataFrame, pd.DataFrame], export_model: lsm.LeadScoringModel, tmp_path: Path
) -> None:
    _, holdout = export
    lean = lsm.compile_scorer(export_model)  # incl. the self-check
    requests = jsonable_records(holdout)  # as the service receives them (servability.verify)
    assert lean.predict(requests) == lsm.predict(export_model, holdout)
    assert lean.predict(requests, explain=False) == lsm.predict(export_model, holdout, explain=False)
    assert lean.fallbacks == 0
    joblib.dump(export_model, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    assert lsm.compile_scorer(loaded).predict(requests) == lean.predict(requests)
    # the service's smoke test: the reference lead and an empty one
    assert len(lean.predict([dict(export_model.reference), {}])) == 2


def synthetic_leads(n_orgs: int = 30, seed: int = 5) -> pd.DataFrame:
    crm = generate_crm(n_orgs, 12, seed)
    return crm.leads[crm.leads["converted"].notna()].reset_index(drop=True)


def test_training_without_any_description_does_not_crash_and_says_so() -> None:
    leads = synthetic_leads()
    leads["description"] = None
    train_part, holdout = split(leads)
    model = lsm.train(train_part, train_part["converted"].astype(bool))
    assert not model.spec.text
    assert "text_insights" in model.spec.groups_without_inputs
    assert any(n.startswith("description: no text signal, 0 leads") for n in model.feature_notes)
    lean = lsm.compile_scorer(model)
    assert lean.predict(jsonable_records(holdout)) == lsm.predict(model, holdout)
    assert roc_auc_score(holdout["converted"].astype(int), model.predict_proba(holdout)) > 0.75


def test_a_few_descriptions_are_not_enough_for_a_text_signal() -> None:
    leads = synthetic_leads()
    leads.loc[leads.index[20:], "description"] = None
    model = lsm.train(leads, leads["converted"].astype(bool))
    assert not model.spec.text
    assert any("20 leads of" in n and "at least 50 needed" in n for n in model.feature_notes)


def test_leads_without_company_fields_explain_without_a_missing_reference_value() -> None:
    # the issue: the typical value of an all-missing column was None and log1p failed on it
    leads = synthetic_leads()
    leads["company_employees"] = None
    leads["company_revenue"] = None
    leads["email_opens"] = None
    model = lsm.train(leads, leads["converted"].astype(bool))
    assert model.reference["company_employees"] is None
    results = lsm.predict(model, leads.head(50))
    assert all(len(r["factors"]) == 3 for r in results)
    assert "company_size" not in {f["group"] for r in results for f in r["factors"]}
    assert model.factor_inputs["engagement"] == [
        "website_visits",
        "pages_viewed",
        "time_on_site_seconds",
        "days_since_last_activity",
        "pages_per_visit",
    ]
    lsm.compile_scorer(model)


def test_a_lead_frame_with_no_usable_field_is_refused_with_the_reasons() -> None:
    frame = pd.DataFrame({"lead_id": [f"L{i}" for i in range(100)], "industry": ["software"] * 100})
    with pytest.raises(ValueError, match=r"no usable lead field.*industry: dropped, the same value"):
        lsm.train(frame, [i % 2 for i in range(100)])


def test_to_number_and_to_category_read_values_the_same_way_everywhere() -> None:
    assert lsm.to_number("12") == 12.0
    assert lsm.to_number(" 4.5 ") == 4.5
    assert lsm.to_number(True) == 1.0
    for missing in (None, "n/a", "", float("inf"), float("nan"), pd.NA, {"a": 1}):
        assert math.isnan(lsm.to_number(missing))
    assert lsm.to_category(5) == lsm.to_category(5.0) == lsm.to_category(np.int64(5)) == "5"
    assert lsm.to_category(2.5) == "2.5"
    assert lsm.to_category(True) == "true"
    assert lsm.to_category("  pro ") == "pro"
    for missing in (None, "", "   ", float("nan"), pd.NA, ["a"]):
        assert lsm.to_category(missing) is None


def test_rank_factors_puts_groups_without_inputs_after_those_with_inputs() -> None:
    row = {"industry": "software"}
    factors = lsm.rank_factors(
        {"industry": 0.0, "other_fields": -0.2}, row, without_inputs=("company_size", "engagement")
    )
    assert [(f.group, f.impact) for f in factors] == [
        ("other_fields", -0.2),
        ("industry", 0.0),
        ("company_size", 0.0),
    ]
    assert factors[2].text == "Company size: no data in this organization's leads"
    assert lsm.rank_factors({}, row, without_inputs=("text_insights",))[0].text == (
        "Notes: not enough text in this organization's leads"
    )


@pytest.mark.slow  # importing MLflow (the pyfunc's base class) takes a few seconds
def test_pyfunc_honours_explain_and_answers_json_friendly_rows(export_model: lsm.LeadScoringModel) -> None:
    from neuracrm_mlops.models.pyfunc_wrappers import LeadScoringPyfunc

    pyfunc = LeadScoringPyfunc()
    pyfunc.model = export_model
    leads = crm_export(20, seed=3)
    with_factors = pyfunc.predict(None, leads)
    assert list(with_factors.columns) == ["probability", "score", "tier", "factors"]
    rows = with_factors.to_dict(orient="records")
    assert json.loads(json.dumps(rows)) == rows  # plain JSON types throughout
    assert all(
        isinstance(f, dict) and set(f) == {"group", "direction", "impact", "text"}
        for r in rows
        for f in r["factors"]
    )
    assert rows == [dict(r) for r in lsm.predict(export_model, leads)]
    for explain in (False, "false", "0"):
        without = pyfunc.predict(None, leads, params={"explain": explain})
        assert [list(f) for f in without["factors"]] == [[]] * 20
        assert list(without["probability"]) == list(with_factors["probability"])
    assert pyfunc.predict(None, leads.head(0)).empty
    one = pyfunc.predict(None, lsm.records(leads.head(1))[0], params={"explain": True})
    assert one.to_dict(orient="records") == rows[:1]
