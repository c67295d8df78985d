"""The fitted fallback: the rule scorer calibrated on the organization's leads, or the base rate."""

from __future__ import annotations

import math
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from test_lead_scoring_schemas import crm_export, split  # tests/unit is on sys.path (rootdir)

from neuracrm_mlops.models import lead_scoring_model as lsm
from neuracrm_mlops.store.synthetic import generate_crm
from neuracrm_mlops.training.servability import jsonable_records

# module-scoped fixtures, made once: the module runs on one worker
pytestmark = pytest.mark.xdist_group("lead_scoring_fallback")


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, pd.DataFrame]:
    crm = generate_crm(40, 12, 9)
    leads = crm.leads[crm.leads["converted"].notna()].sort_values("created_at").reset_index(drop=True)
    return split(leads)


def labels(frame: pd.DataFrame) -> np.ndarray:
    return frame["converted"].astype(int).to_numpy()


def test_fitted_rules_take_weights_and_base_rate_from_the_data(
    synthetic: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train_part, holdout = synthetic
    rules = lsm.RuleScorer.fit(train_part, labels(train_part))
    assert rules.fitted and rules.kind == "rules"
    assert rules.groups_without_inputs == ()
    assert set(rules.weights) == set(lsm.RULE_WEIGHTS)
    assert rules.weights != lsm.RULE_WEIGHTS
    assert rules.weights["engagement"] > 0 and rules.weights["decision_maker"] > 0
    p_train = rules.predict_proba(train_part)
    # a logistic regression with an intercept reproduces the training base rate on average
    assert abs(p_train.mean() - labels(train_part).mean()) < 0.01
    fitted_auc = roc_auc_score(labels(holdout), rules.predict_proba(holdout))
    hand_auc = roc_auc_score(labels(holdout), lsm.RuleScorer().predict_proba(holdout))
    assert fitted_auc > 0.75 and fitted_auc >= hand_auc - 0.02
    factors = rules.explain(holdout.head(20))
    assert all(len(f) == 3 and {x.group for x in f} <= set(lsm.RULE_WEIGHTS) for f in factors)


def test_groups_without_inputs_get_no_weight_and_say_so() -> None:
    train_part, holdout = split(crm_export(800, seed=2))
    rules = lsm.RuleScorer.fit(train_part, labels(train_part))
    assert rules.groups_without_inputs == (
        "industry",
        "company_size",
        "engagement",
        "urgency",
        "text_insights",
    )
    assert all(rules.weights[g] == 0.0 for g in rules.groups_without_inputs)
    results = lsm.predict(rules, holdout)
    for result in results:
        assert [f["group"] for f in result["factors"]] == ["decision_maker", "industry", "company_size"]
        assert result["factors"][1]["text"] == "Industry: no data in this organization's leads"
        assert result["factors"][1]["impact"] == 0.0


def test_unfitted_rules_keep_the_hand_weights() -> None:
    rules = lsm.RuleScorer()
    assert not rules.fitted and rules.weights == lsm.RULE_WEIGHTS
    lead = {"industry": "software", "company_employees": 300, "seniority": "vp", "timeline": "immediate"}
    scores = lsm.rule_factor_scores(lsm.records(lsm.leads_frame([lead]))[0])
    expected = sum(lsm.RULE_WEIGHTS[g] * s for g, s in scores.items()) / sum(lsm.RULE_WEIGHTS.values())
    assert rules.predict_proba([lead])[0] == pytest.approx(expected)
    # impacts: weight x (score - 0.5) / total weight; no engagement data scores 0
    factors = rules.explain([lead])[0]
    assert [(f.group, f.direction) for f in factors] == [
        ("engagement", "-"),
        ("industry", "+"),
        ("company_size", "+"),
    ]
    assert factors[0].impact == pytest.approx(-25 * 0.5 / 90)
    assert (
        factors[0].text
        == "Low engagement: unknown email opens, unknown site visits, last active unknown days ago"
    )


def test_base_rate_answers_the_training_rate_for_every_lead_and_says_so() -> None:
    scorer = lsm.BaseRateScorer.fit([1, 0, 0, 0, 1, 0, 0, 0])
    assert (scorer.kind, scorer.base_rate, scorer.training_leads) == ("base_rate", 0.25, 8)
    results = lsm.predict(scorer, [{"industry": "software"}, {}, {"attributes": {"x": 1}}])
    assert [r["probability"] for r in results] == [0.25] * 3
    assert [r["tier"] for r in results] == ["cold"] * 3
    assert results[0]["factors"] == [
        {
            "group": "base_rate",
            "direction": "+",
            "impact": 0.0,
            "text": "Base rate: 25.0% of this organization's 8 training leads converted; "
            "this score is that base rate, not read from the lead",
        }
    ]
    assert lsm.predict(scorer, [{}], explain=False)[0]["factors"] == []
    with pytest.raises(ValueError, match="at least one lead"):
        lsm.BaseRateScorer.fit([])


@pytest.mark.parametrize(
    ("auc", "chosen"),
    [
        (0.55, "rules"),
        (0.9, "rules"),
        (0.5499, "base_rate"),
        (0.3, "base_rate"),
        (None, "base_rate"),
        (math.nan, "base_rate"),
    ],
)
def test_choose_fallback_takes_the_rules_only_when_they_rank_well_enough(
    auc: float | None, chosen: str
) -> None:
    rules = lsm.RuleScorer(intercept=0.0)
    base = lsm.BaseRateScorer(0.1, 100)
    assert lsm.choose_fallback(rules, base, auc).kind == chosen
    assert lsm.choose_fallback(rules, base, 0.6, min_auc=0.7).kind == "base_rate"


def test_fit_fallback_picks_the_rules_when_they_rank_leads(
    synthetic: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train_part, holdout = synthetic
    chosen = lsm.fit_fallback(train_part, labels(train_part), holdout, labels(holdout))
    assert isinstance(chosen, lsm.RuleScorer) and chosen.fitted
    assert chosen.holdout_auc is not None and chosen.holdout_auc >= lsm.FALLBACK_MIN_AUC
    assert chosen.training_leads == len(train_part)  # never fitted on the holdout it is measured on


def test_fit_fallback_picks_the_base_rate_when_the_rules_read_nothing_useful() -> None:
    train_part, holdout = split(crm_export(800, seed=4))  # the job title does not drive conversion
    chosen = lsm.fit_fallback(train_part, labels(train_part), holdout, labels(holdout))
    assert isinstance(chosen, lsm.BaseRateScorer)
    assert chosen.base_rate == pytest.approx(labels(train_part).mean())
    assert chosen.rules_holdout_auc is not None and chosen.rules_holdout_auc < lsm.FALLBACK_MIN_AUC
    one_outcome = lsm.fit_fallback(train_part, np.zeros(len(train_part)), holdout, labels(holdout))
    assert isinstance(one_outcome, lsm.BaseRateScorer) and one_outcome.base_rate == 0.0


def test_fallbacks_answer_the_same_through_the_lean_path_and_after_pickling(
    synthetic: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train_part, holdout = synthetic
    export_train, export_holdout = split(crm_export(600, seed=6))
    scorers = {
        "fitted rules": (lsm.RuleScorer.fit(train_part, labels(train_part)), holdout),
        "rules without inputs": (lsm.RuleScorer.fit(export_train, labels(export_train)), export_holdout),
        "base rate": (lsm.BaseRateScorer.fit(labels(train_part)), holdout),
        "hand rules": (lsm.RuleScorer(), holdout),
    }
    for name, (scorer, leads) in scorers.items():
        lean = lsm.compile_scorer(scorer)
        assert lean.kind == scorer.kind, name
        requests = jsonable_records(leads)
        expected = lsm.predict(scorer, leads)
        assert lean.predict(requests) == expected, name
        assert lean.predict(requests, explain=False) == lsm.predict(scorer, leads, explain=False), name
        joblib.dump(scorer, tmp_path / "scorer.joblib")
        loaded = joblib.load(tmp_path / "scorer.joblib")
        assert lsm.compile_scorer(loaded).predict(requests) == expected, name
        assert loaded.predict(requests) == expected, name  # served as it is, the scorer answers too
