"""The lean lead-scoring path for serving answers exactly like ``predict``, or refuses to compile."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from neuracrm_mlops.models import lead_scoring_model as lsm
from neuracrm_mlops.models.lead_scoring import lean as lean_path
from neuracrm_mlops.store.synthetic import generate_crm

# module-scoped fixtures, made once: the module runs on one worker
pytestmark = pytest.mark.xdist_group("lead_scoring_fast")

RARE_INDUSTRY = "aerospace"  # below the 1% rare-category share: one-hot encoded as "infrequent"
RARE_INTEREST = "hardware"


def _attributes(original: Any, rng: np.random.Generator) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if rng.random() < 0.75:
        interest = original.get("product_interest") if isinstance(original, dict) else None
        attributes["product_interest"] = RARE_INTEREST if rng.random() < 0.005 else interest
    if rng.random() < 0.6:
        attributes["seats"] = int(rng.integers(1, 500))
    return attributes


def training_leads(n_orgs: int, seed: int) -> pd.DataFrame:
    """Synthetic leads with known outcomes, plus missing values, rare categories and custom attributes."""
    crm = generate_crm(n_orgs, 12, seed)
    leads = crm.leads[crm.leads["converted"].notna()].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    n = len(leads)
    leads.loc[rng.random(n) < 0.08, "industry"] = None
    leads.loc[rng.random(n) < 0.005, "industry"] = RARE_INDUSTRY
    leads.loc[rng.random(n) < 0.05, "timeline"] = None
    leads["email_opens"] = leads["email_opens"].astype(float)
    leads.loc[rng.random(n) < 0.05, "email_opens"] = np.nan
    leads["attributes"] = pd.Series([_attributes(a, rng) for a in leads["attributes"]], index=leads.index)
    return leads


@pytest.fixture(
    scope="module",
    params=[
        # ~2,300 leads, the default configuration: logistic regression + early-stopped trees
        pytest.param((65, lsm.LeadModelConfig()), id="linear-plus-trees"),
        # ~900 leads and no trees: the logistic regression alone
        pytest.param((25, lsm.LeadModelConfig(max_iter=0)), id="linear-only"),
    ],
)
def model(request: pytest.FixtureRequest) -> lsm.LeadScoringModel:
    n_orgs, config = request.param
    leads = training_leads(n_orgs, seed=3)
    trained = lsm.train(leads, leads["converted"].astype(bool), config)
    assert trained.attribute_numeric == ["attr_seats"]
    assert trained.attribute_categorical == ["attr_product_interest"]
    return trained


def _clean(value: Any) -> Any:
    """JSON has null, not NaN."""
    return None if isinstance(value, float) and math.isnan(value) else value


def request_records(seed: int = 11) -> list[dict[str, Any]]:
    """A few hundred leads as the HTTP layer parses them, varied the ways real requests vary."""
    leads = training_leads(9, seed)
    base = [
        {k: _clean(v) for k, v in row.items()}
        for row in lsm.records(leads[[*lsm.INPUT_COLUMNS, "attributes", "external_id"]])
    ]
    out: list[dict[str, Any]] = []
    for i, row in enumerate(base):
        lead = row
        match i % 12:
            case 1:  # categories never seen in training
                lead |= {"industry": "quantum_computing", "timeline": "someday", "region": "antarctica"}
            case 2:  # missing numbers, no website visits (no pages per visit)
                lead |= {"company_employees": None, "website_visits": 0, "days_since_last_activity": None}
            case 3:  # seniority read from the job title, no notes
                lead |= {"seniority": None, "description": None, "job_title": "Chief Revenue Officer"}
            case 4:  # empty notes, no custom attributes at all
                lead["description"] = ""
                lead.pop("attributes")
            case 5:  # unseen custom category, fractional custom number
                lead["attributes"] = {"product_interest": "quantum", "seats": 12.5, "unused_field": "x"}
            case 6:
                lead["attributes"] = {}
            case 7:  # a sparse record: most keys absent
                lead = {"industry": "software", "email_opens": 3, "description": "Asked for a quote"}
            case 8:  # rare categories, grouped as infrequent in training
                lead["industry"] = RARE_INDUSTRY
                lead["attributes"] = {"product_interest": RARE_INTEREST, "seats": None}
            case 9:  # negative and large numbers, NaN where JSON would have null
                lead |= {"company_revenue": -5.0, "pages_viewed": 10**9, "time_on_site_seconds": math.nan}
            case 10:  # attributes that are not a dict are ignored, as in the original path
                lead["attributes"] = '{"product_interest": "analytics"}'
            case 11:  # missing categories
                lead |= {"industry": None, "budget_signal": None, "source": None, "job_title": None}
        out.append(lead)
    return out


def assert_same_answers(lean: list[dict[str, Any]], original: list[dict[str, Any]]) -> None:
    assert len(lean) == len(original)
    for got, want in zip(lean, original, strict=True):
        assert (got["score"], got["tier"]) == (want["score"], want["tier"])
        assert [(f["group"], f["direction"]) for f in got["factors"]] == [
            (f["group"], f["direction"]) for f in want["factors"]
        ]
        assert got == want  # rounded probability, impacts and the phrased text too


def test_lean_model_path_returns_what_predict_returns(model: lsm.LeadScoringModel) -> None:
    leads = request_records()
    assert len(leads) >= 250
    lean = lsm.compile_scorer(model, check_records=leads[:40])

    np.testing.assert_allclose(lean.predict_proba(leads), model.predict_proba(leads), rtol=0, atol=1e-9)
    assert_same_answers(lean.predict(leads), lsm.predict(model, leads))
    assert_same_answers(lean.predict(leads, explain=False), lsm.predict(model, leads, explain=False))
    assert lsm.check_lean_scorer(lean, model, leads) <= lsm.SELF_CHECK_TOLERANCE
    assert lean.fallbacks == 0  # every record above is plain JSON: no pandas on the request path


def test_lean_model_path_scores_a_lead_the_same_alone_and_in_any_batch(model: lsm.LeadScoringModel) -> None:
    leads = request_records()[:24]
    lean = lsm.compile_scorer(model)
    batched = lean.predict(leads)
    assert [lean.predict([lead])[0] for lead in leads] == batched
    assert lean.predict(leads[::-1]) == batched[::-1]
    assert lean.predict([]) == []


def test_a_lead_without_custom_attributes_is_featurized_the_same_alone_and_in_a_batch(
    model: lsm.LeadScoringModel,
) -> None:
    # a batch of only leads without the attribute used to leave None (not "missing") for the encoder
    without, with_interest = request_records()[4], request_records()[0]
    assert "attributes" not in without and with_interest["attributes"].get("product_interest")
    features = model.pipeline.named_steps["features"]

    def design(leads: list[dict[str, Any]]) -> np.ndarray:
        return np.asarray(features.transform(model._frames(leads)[1]))

    np.testing.assert_array_equal(design([without])[0], design([without, with_interest])[0])


@pytest.mark.parametrize(
    "odd",
    [
        {"email_opens": "12"},  # a number sent as text is parsed
        {"website_visits": True},  # a boolean counts as 1
        {"company_employees": float("inf")},  # missing
        {"industry": 7},  # the category "7"
        {"attributes": {"product_interest": 5, "seats": 3}},  # "5" whatever else is in the batch
        {"attributes": {"seats": "40"}},
        {"attr_product_interest": "analytics"},  # the attributes dict, when it has the key, wins
        {"attributes": {"seats": [1, 2], "product_interest": {"a": 1}}},  # not a value: missing
    ],
)
def test_the_lean_model_path_reads_odd_values_as_the_pandas_path_does_without_falling_back(
    model: lsm.LeadScoringModel, odd: dict[str, Any]
) -> None:
    leads = request_records()[:6]
    leads[2] = leads[2] | odd
    lean = lsm.compile_scorer(model)
    assert lean.predict(leads) == lsm.predict(model, leads)
    assert lean.predict([leads[2]]) == [lsm.predict(model, leads)[2]]
    assert lean.fallbacks == 0


@pytest.mark.parametrize(
    "odd",
    [
        {"email_opens": "12"},  # a number sent as a string: pandas' coercion decides
        {"website_visits": True},
        {"company_employees": float("inf")},
        {"industry": 7},
    ],
)
def test_a_rule_batch_with_a_non_json_value_is_answered_by_the_original_path(odd: dict[str, Any]) -> None:
    rules = lsm.RuleScorer()
    leads = request_records()[:6]
    leads[2] = leads[2] | odd
    lean = lsm.compile_scorer(rules)
    try:
        expected: list[dict[str, Any]] | type[Exception] = lsm.predict(rules, leads)
    except (TypeError, ValueError) as exc:
        expected = type(exc)
    if isinstance(expected, list):
        assert lean.predict(leads) == expected
    else:
        with pytest.raises(expected):
            lean.predict(leads)
    assert lean.fallbacks == 1


def test_lean_rule_scorer_returns_what_predict_returns() -> None:
    rules = lsm.RuleScorer()
    leads = request_records()
    lean = lsm.compile_scorer(rules)
    assert lean.kind == "rules"
    np.testing.assert_allclose(lean.predict_proba(leads), rules.predict_proba(leads), rtol=0, atol=1e-12)
    assert_same_answers(lean.predict(leads), lsm.predict(rules, leads))
    assert_same_answers(lean.predict(leads, explain=False), lsm.predict(rules, leads, explain=False))
    assert lean.fallbacks == 0
    odd = [*leads[:3], {"email_opens": "9", "industry": 4}]
    assert lean.predict(odd) == lsm.predict(rules, odd)
    assert lean.fallbacks == 1


class ShiftedTextSignal(lsm.TextSignal):
    """A tampered text step: same fitted model, different output."""

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return super().transform(frame) + 0.5


def test_compile_scorer_rejects_a_pipeline_step_it_does_not_reproduce(model: lsm.LeadScoringModel) -> None:
    tampered = copy.deepcopy(model)
    text = tampered.pipeline.named_steps["features"].named_transformers_["text"]
    text.__class__ = ShiftedTextSignal
    with pytest.raises(lsm.LeanScorerError, match="does not support"):
        lsm.compile_scorer(tampered)


def test_compile_scorer_rejects_a_lean_path_that_disagrees_with_the_pipeline(
    model: lsm.LeadScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a lean featurizer that forgets to log-transform company size
    original = lean_path._design_matrix
    employees = model.spec.numeric.index("company_employees")

    def forgetful(plan: Any, rows: Any) -> np.ndarray:
        design = original(plan, rows)
        design[:, plan.numeric_start + employees] = np.expm1(design[:, plan.numeric_start + employees])
        return design

    monkeypatch.setattr(lean_path, "_design_matrix", forgetful)
    with pytest.raises(lsm.LeanScorerError, match="differ"):
        lsm.compile_scorer(model)


def test_self_check_rejects_a_model_tampered_after_compiling(model: lsm.LeadScoringModel) -> None:
    lean = lsm.compile_scorer(model)
    tampered = copy.deepcopy(model)
    imputer = tampered.pipeline.named_steps["features"].named_transformers_["numeric"]
    imputer.statistics_ = imputer.statistics_ * 3.0  # other medians for missing numbers
    with pytest.raises(lsm.LeanScorerError, match="differ"):
        lsm.check_lean_scorer(lean, tampered, lsm.self_check_records(tampered))
    # the compiled scorer kept its own copy of the parameters: the untampered model still agrees
    assert lsm.check_lean_scorer(lean, model, lsm.self_check_records(model)) <= lsm.SELF_CHECK_TOLERANCE


def test_self_check_leads_cover_every_known_category(model: lsm.LeadScoringModel) -> None:
    leads = lsm.self_check_records(model)
    encoder = model.pipeline.named_steps["features"].named_transformers_["categorical"]
    sent = model._frames(leads)[1]
    assert list(encoder.feature_names_in_) == list(model.spec.categorical)
    for column, categories in zip(model.spec.categorical, encoder.categories_, strict=True):
        assert set(categories) <= set(sent[column]), column
        assert lean_path._UNSEEN in set(sent[column]) or column == "seniority", column
