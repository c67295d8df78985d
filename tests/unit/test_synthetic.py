"""The synthetic CRM generator: deterministic, schema-shaped, and learnable in the ways the docs promise.

The learnability checks (lead model vs hand-weighted rules, TF-IDF vs VADER) run on a fixed seed; the
numbers they guard are quoted in docs/synthetic-data.md.
"""

from __future__ import annotations

import datetime as dt
import re
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from threadpoolctl import threadpool_limits
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from neuracrm_mlops.store import synthetic
from neuracrm_mlops.store.synthetic import (
    BUDGET_SIGNALS,
    CHANNELS,
    DEFAULT_END_MONTH,
    INDUSTRIES,
    PRODUCT_INTERESTS,
    REGIONS,
    SALES_PROFILES,
    SENIORITIES,
    SENTIMENT_LABELS,
    SOURCES,
    TIMELINES,
    SyntheticCRM,
    generate_crm,
)

# module-scoped fixtures, made once: the module runs on one worker
pytestmark = pytest.mark.xdist_group("synthetic")

LEAD_COLUMNS = [
    "org_index",
    "external_id",
    "industry",
    "company_employees",
    "company_revenue",
    "email_opens",
    "website_visits",
    "pages_viewed",
    "time_on_site_seconds",
    "days_since_last_activity",
    "job_title",
    "seniority",
    "timeline",
    "budget_signal",
    "description",
    "source",
    "region",
    "created_at",
    "converted",
    "converted_at",
    "attributes",
]
WINDOW_END = pd.Timestamp("2026-11-01", tz="UTC")  # end of DEFAULT_END_MONTH's month


@pytest.fixture(scope="module")
def crm() -> SyntheticCRM:
    return generate_crm(300, 36, seed=11)


# --------------------------------------------------------------------------------------------------
# determinism and shape
# --------------------------------------------------------------------------------------------------


def test_same_arguments_give_identical_frames() -> None:
    first = generate_crm(25, 18, seed=5, leads_per_org=30)
    second = generate_crm(25, 18, seed=5, leads_per_org=30)
    for name in ("organizations", "leads", "monthly_sales", "interactions"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))


def test_another_seed_gives_other_data() -> None:
    first = generate_crm(10, 12, seed=1)
    second = generate_crm(10, 12, seed=2)
    assert not first.leads["description"].equals(second.leads["description"])
    assert not first.monthly_sales["revenue"].equals(second.monthly_sales["revenue"])


def test_more_leads_per_org_does_not_change_organizations_or_sales() -> None:
    few = generate_crm(30, 24, seed=3, leads_per_org=10)
    many = generate_crm(30, 24, seed=3, leads_per_org=60)
    pd.testing.assert_frame_equal(few.organizations, many.organizations)
    pd.testing.assert_frame_equal(few.monthly_sales, many.monthly_sales)
    assert len(many.leads) > len(few.leads)


def test_category_constants_are_tuples_of_unique_strings() -> None:
    for values in (
        INDUSTRIES,
        SENIORITIES,
        TIMELINES,
        BUDGET_SIGNALS,
        SOURCES,
        REGIONS,
        CHANNELS,
        SENTIMENT_LABELS,
        SALES_PROFILES,
        PRODUCT_INTERESTS,
    ):
        assert isinstance(values, tuple)
        assert all(isinstance(v, str) and v for v in values)
        assert len(set(values)) == len(values)
    assert SENIORITIES == ("c_level", "vp", "director", "manager", "individual_contributor")
    assert TIMELINES == ("immediate", "this_quarter", "this_year", "no_timeline")
    assert BUDGET_SIGNALS == ("approved", "allocated", "exploring", "none")
    assert SENTIMENT_LABELS == ("negative", "neutral", "positive")
    assert SALES_PROFILES == ("easy", "medium", "hard", "short", "intermittent", "empty")


def test_generated_categories_stay_inside_the_known_sets(crm: SyntheticCRM) -> None:
    leads = crm.leads
    for column, known in (
        ("industry", INDUSTRIES),
        ("seniority", SENIORITIES),
        ("timeline", TIMELINES),
        ("budget_signal", BUDGET_SIGNALS),
        ("source", SOURCES),
        ("region", REGIONS),
    ):
        assert set(leads[column]) == set(known), column
    assert {a["product_interest"] for a in leads["attributes"]} == set(PRODUCT_INTERESTS)
    assert set(crm.interactions["channel"]) == set(CHANNELS)
    assert set(crm.interactions["sentiment_label"]) == set(SENTIMENT_LABELS)
    assert set(crm.organizations["sales_profile"]) <= set(SALES_PROFILES)


def test_organizations_have_unique_names_and_mostly_ai_enabled() -> None:
    orgs = generate_crm(1000, 2, seed=7, leads_per_org=0).organizations
    assert list(orgs.columns) == ["org_index", "name", "sales_profile", "ai_enabled"]
    assert orgs["org_index"].tolist() == list(range(1000))
    assert orgs["name"].is_unique
    assert orgs["name"].str.fullmatch(r"[A-Z][\w ]+ \d{4}").all()
    assert orgs["ai_enabled"].dtype == bool
    assert 0.92 <= orgs["ai_enabled"].mean() <= 0.98


# --------------------------------------------------------------------------------------------------
# monthly sales
# --------------------------------------------------------------------------------------------------


def test_sales_profile_mix_follows_the_design_shares(crm: SyntheticCRM) -> None:
    shares = crm.organizations["sales_profile"].value_counts(normalize=True)
    expected = {
        "easy": 0.40,
        "medium": 0.30,
        "hard": 0.15,
        "short": 0.10,
        "intermittent": 0.03,
        "empty": 0.02,
    }
    for profile, share in expected.items():
        assert shares.get(profile, 0.0) == pytest.approx(share, abs=0.01), profile


def test_sales_rows_follow_each_profile(crm: SyntheticCRM) -> None:
    sales = crm.monthly_sales.merge(crm.organizations[["org_index", "sales_profile"]], on="org_index")
    rows = sales.groupby("org_index").size()
    profile = crm.organizations.set_index("org_index")["sales_profile"]
    zero_share = sales.groupby("org_index")["revenue"].apply(lambda r: float((r == 0).mean()))

    empty = profile[profile == "empty"].index
    assert len(empty) > 0 and not set(empty) & set(rows.index)
    short = profile[profile == "short"].index
    assert rows[short].between(12, 20).all()
    full = profile[profile.isin(["easy", "medium", "hard", "intermittent"])].index
    assert (rows[full] == 36).all()
    intermittent = profile[profile == "intermittent"].index
    assert (zero_share[intermittent] >= 0.2).all()
    assert (zero_share[profile[profile.isin(["easy", "medium", "hard", "short"])].index] == 0).all()


def test_short_profiles_hold_the_most_recent_months(crm: SyntheticCRM) -> None:
    sales = crm.monthly_sales.merge(crm.organizations[["org_index", "sales_profile"]], on="org_index")
    short = sales[sales["sales_profile"] == "short"]
    assert (short.groupby("org_index")["month"].max() == DEFAULT_END_MONTH).all()
    # contiguous: the number of rows equals the span in months
    span = short.groupby("org_index")["month"].agg(
        lambda m: (max(m).year - min(m).year) * 12 + max(m).month - min(m).month + 1
    )
    assert (span == short.groupby("org_index").size()).all()


def test_sales_values_are_clean(crm: SyntheticCRM) -> None:
    sales = crm.monthly_sales
    assert list(sales.columns) == ["org_index", "month", "revenue"]
    assert not sales.duplicated(["org_index", "month"]).any()
    assert (sales["revenue"] >= 0).all()
    assert np.allclose(sales["revenue"], sales["revenue"].round(2))
    months = set(sales["month"])
    assert all(type(m) is dt.date and m.day == 1 for m in months)
    assert min(months) == dt.date(2023, 11, 1) and max(months) == DEFAULT_END_MONTH
    assert len(months) == 36


def test_short_profile_gets_what_fits_in_a_short_window() -> None:
    crm = generate_crm(60, 8, seed=4)
    short = crm.organizations.loc[crm.organizations["sales_profile"] == "short", "org_index"]
    rows = crm.monthly_sales.groupby("org_index").size()
    assert len(short) > 0 and (rows[short] == 8).all()


# --------------------------------------------------------------------------------------------------
# leads
# --------------------------------------------------------------------------------------------------


def test_lead_columns_and_dtypes(crm: SyntheticCRM) -> None:
    leads = crm.leads
    assert list(leads.columns) == LEAD_COLUMNS
    assert str(leads["company_employees"].dtype) == "Int64"
    assert str(leads["converted"].dtype) == "boolean"
    assert str(leads["created_at"].dtype) == "datetime64[ns, UTC]"
    assert str(leads["converted_at"].dtype) == "datetime64[ns, UTC]"
    for column in ("email_opens", "website_visits", "pages_viewed", "days_since_last_activity"):
        assert pd.api.types.is_integer_dtype(leads[column]) and (leads[column] >= 0).all(), column
    assert (leads["pages_viewed"] >= leads["website_visits"]).all()
    assert (leads["time_on_site_seconds"] >= 0).all()
    assert 0.07 <= leads["company_revenue"].isna().mean() <= 0.13
    assert (leads["company_employees"].dropna() >= 1).all()
    assert leads["description"].str.len().gt(10).all()
    assert all(isinstance(a, dict) and set(a) == {"product_interest"} for a in leads["attributes"])


def test_lead_titles_match_seniority(crm: SyntheticCRM) -> None:
    leads = crm.leads
    vp = leads.loc[leads["seniority"] == "vp", "job_title"]
    assert vp.str.contains(r"\bV(?:ice )?P|SVP|Vice President").all()
    chiefs = leads.loc[leads["seniority"] == "c_level", "job_title"]
    assert chiefs.str.contains(r"Chief|CEO|CTO").all()


def test_lead_ids_are_unique_within_each_org_and_numbered_by_creation(crm: SyntheticCRM) -> None:
    leads = crm.leads
    assert leads["external_id"].str.fullmatch(r"L-\d{6}").all()
    assert not leads.duplicated(["org_index", "external_id"]).any()
    for _, group in leads.groupby("org_index"):
        assert group["created_at"].is_monotonic_increasing
        assert group["external_id"].tolist() == [f"L-{i:06d}" for i in range(1, len(group) + 1)]


def test_lead_volume_varies_around_leads_per_org(crm: SyntheticCRM) -> None:
    per_org = crm.leads.groupby("org_index").size().reindex(range(300), fill_value=0)
    assert per_org.mean() == pytest.approx(40, rel=0.1)
    assert per_org.std() > 8  # not all the same size


def test_unknown_outcomes_only_for_recent_leads(crm: SyntheticCRM) -> None:
    leads = crm.leads
    cutoff = WINDOW_END - pd.Timedelta(days=45)
    unknown = leads["converted"].isna()
    assert unknown.any()
    assert (leads.loc[unknown, "created_at"] > cutoff).all()
    assert (leads.loc[~unknown, "created_at"] <= cutoff).all()
    converted = leads["converted"].fillna(False).astype(bool)
    assert leads.loc[~converted, "converted_at"].isna().all()
    delay = leads.loc[converted, "converted_at"] - leads.loc[converted, "created_at"]
    assert (delay > pd.Timedelta(0)).all()
    assert (leads.loc[converted, "converted_at"] < WINDOW_END).all()
    assert leads["created_at"].min() >= pd.Timestamp("2023-11-01", tz="UTC")
    assert leads["created_at"].max() < WINDOW_END


def test_base_conversion_rate_is_between_20_and_35_percent(crm: SyntheticCRM) -> None:
    known = crm.leads["converted"].dropna().astype(bool)
    assert 0.20 <= known.mean() <= 0.35


# the lead model's features (simple, as in the platform's baseline) and a hand-weighted rule scorer
BUYING_WORDS = ("quote", "contract", "pricing", "sign", "procurement", "references", "switch", "demo")
BUYING_WORDS += ("shortlist", "trial", "case study", "webinar")
DISINTEREST_WORDS = ("not interested", "too high", "removed", "student", "no budget", "current vendor")
DISINTEREST_WORDS += ("school", "unsubscribed", "free")
NUMERIC = [
    "company_employees",
    "company_revenue",
    "email_opens",
    "website_visits",
    "pages_viewed",
    "time_on_site_seconds",
    "days_since_last_activity",
]
CATEGORICAL = ["industry", "seniority", "timeline", "budget_signal", "source", "region"]


def _lead_features(leads: pd.DataFrame) -> pd.DataFrame:
    numeric = leads[NUMERIC].astype("float64")
    cats = leads[CATEGORICAL].astype(object)
    cats["product_interest"] = [a.get("product_interest") for a in leads["attributes"]]
    text = leads["description"].str.lower()
    flags = pd.DataFrame(
        {f"kw_{w}": text.str.contains(w, regex=False) for w in BUYING_WORDS + DISINTEREST_WORDS},
        dtype="float64",
    )
    return pd.concat([numeric, pd.get_dummies(cats, dtype="float64"), flags], axis=1)


def _rule_score(leads: pd.DataFrame) -> np.ndarray:
    """A sales-ops style score: each factor 0..1 by a hand rule, weighted 20/15/25/15/10/5."""
    industry = leads["industry"].map(
        lambda v: (
            1.0
            if v in ("software", "fintech")
            else 0.6
            if v in ("healthcare", "manufacturing", "professional_services", "logistics")
            else 0.3
        )
    )
    size = np.clip(np.log10(leads["company_employees"].astype("float64")) / 4, 0, 1).fillna(0.5)
    engagement = (
        np.minimum(leads["email_opens"] / 10, 1)
        + np.minimum(leads["website_visits"] / 10, 1)
        + np.minimum(leads["pages_viewed"] / 30, 1)
        + np.minimum(leads["time_on_site_seconds"] / 1800, 1)
        + np.maximum(0, 1 - leads["days_since_last_activity"] / 30)
    ) / 5
    decision_maker = leads["seniority"].map(
        {"c_level": 1.0, "vp": 0.8, "director": 0.6, "manager": 0.4, "individual_contributor": 0.1}
    )
    urgency = (
        leads["timeline"].map({"immediate": 1.0, "this_quarter": 0.7, "this_year": 0.3, "no_timeline": 0.0})
        + leads["budget_signal"].map({"approved": 1.0, "allocated": 0.7, "exploring": 0.3, "none": 0.0})
    ) / 2
    text = leads["description"].str.lower()
    buying = np.any([text.str.contains(w, regex=False) for w in BUYING_WORDS], axis=0)
    disinterest = np.any([text.str.contains(w, regex=False) for w in DISINTEREST_WORDS], axis=0)
    insight = np.where(buying & ~disinterest, 1.0, np.where(disinterest & ~buying, 0.0, 0.5))
    score = 20 * industry + 15 * size + 25 * engagement + 15 * decision_maker + 10 * urgency + 5 * insight
    return np.asarray(score, dtype=np.float64)


def test_lead_model_beats_hand_weighted_rules_on_newer_leads(crm: SyntheticCRM) -> None:
    known = crm.leads[crm.leads["converted"].notna()].sort_values("created_at", kind="stable")
    known = known.reset_index(drop=True)
    cut = int(len(known) * 0.75)  # train on the older 75%, test on the newer 25%
    features = _lead_features(known)
    target = known["converted"].astype(bool).to_numpy()
    model = HistGradientBoostingClassifier(
        learning_rate=0.1, max_iter=150, max_leaf_nodes=8, l2_regularization=1.0, random_state=0
    )
    # one OpenMP thread: on a busy 2-core machine more threads make the fit many times slower
    with threadpool_limits(limits=1):
        model.fit(features.iloc[:cut], target[:cut])
    model_auc = roc_auc_score(target[cut:], model.predict_proba(features.iloc[cut:])[:, 1])
    rules_auc = roc_auc_score(target[cut:], _rule_score(known)[cut:])
    assert model_auc >= 0.88, (model_auc, rules_auc)
    assert model_auc - rules_auc >= 0.04, (model_auc, rules_auc)
    assert rules_auc > 0.7  # the rules are reasonable, just not as good


def test_custom_attribute_carries_real_signal(crm: SyntheticCRM) -> None:
    known = crm.leads[crm.leads["converted"].notna()]
    interest = pd.Series([a["product_interest"] for a in known["attributes"]], index=known.index)
    rates = known["converted"].astype(bool).groupby(interest).mean()
    assert rates["analytics"] - rates["support"] > 0.06


def test_mid_size_companies_convert_best(crm: SyntheticCRM) -> None:
    known = crm.leads[crm.leads["converted"].notna() & crm.leads["company_employees"].notna()]
    employees = known["company_employees"].astype(float)
    converted = known["converted"].astype(bool)
    small, mid, large = (
        converted[employees <= 50],
        converted[employees.between(200, 2000)],
        converted[employees > 5000],
    )
    assert len(large) > 100
    assert mid.mean() - max(small.mean(), large.mean()) > 0.08


# --------------------------------------------------------------------------------------------------
# interactions
# --------------------------------------------------------------------------------------------------


def test_interactions_belong_to_existing_leads_of_their_org(crm: SyntheticCRM) -> None:
    inter = crm.interactions
    assert list(inter.columns) == [
        "org_index",
        "external_id",
        "lead_external_id",
        "channel",
        "text",
        "created_at",
        "sentiment_label",
    ]
    assert inter["external_id"].str.fullmatch(r"I-\d{6}").all()
    assert not inter.duplicated(["org_index", "external_id"]).any()
    joined = inter.merge(
        crm.leads[["org_index", "external_id", "created_at"]],
        left_on=["org_index", "lead_external_id"],
        right_on=["org_index", "external_id"],
        how="left",
        suffixes=("", "_lead"),
    )
    assert joined["created_at_lead"].notna().all()
    assert (joined["created_at"] >= joined["created_at_lead"]).all()
    assert (inter["created_at"] < WINDOW_END).all()
    assert str(inter["created_at"].dtype) == "datetime64[ns, UTC]"
    assert len(inter) / len(crm.leads) == pytest.approx(0.8, rel=0.1)


def test_sentiment_mix_and_text_variety(crm: SyntheticCRM) -> None:
    inter = crm.interactions
    shares = inter["sentiment_label"].value_counts(normalize=True)
    assert shares["negative"] == pytest.approx(0.30, abs=0.03)
    assert shares["neutral"] == pytest.approx(0.35, abs=0.03)
    assert shares["positive"] == pytest.approx(0.35, abs=0.03)
    assert inter["text"].nunique() / len(inter) > 0.85
    assert inter["text"].str.len().gt(10).all()
    assert not inter["text"].str.contains(r"[{}]").any()  # every template slot filled


def test_tfidf_classifier_beats_vader_on_interaction_sentiment(crm: SyntheticCRM) -> None:
    inter = crm.interactions
    order = np.random.default_rng(0).permutation(len(inter))
    half = len(inter) // 2
    train, test = inter.iloc[order[:half]], inter.iloc[order[half:]]
    vectorizer = TfidfVectorizer(min_df=2, sublinear_tf=True)
    classifier = LogisticRegression(max_iter=2000, C=5.0)
    with threadpool_limits(limits=1):
        classifier.fit(vectorizer.fit_transform(train["text"]), train["sentiment_label"])
    tfidf_accuracy = accuracy_score(
        test["sentiment_label"], classifier.predict(vectorizer.transform(test["text"]))
    )

    analyzer = SentimentIntensityAnalyzer()
    compound = np.array([analyzer.polarity_scores(text)["compound"] for text in test["text"]])
    vader = np.where(compound >= 0.05, "positive", np.where(compound <= -0.05, "negative", "neutral"))
    vader_accuracy = accuracy_score(test["sentiment_label"], vader)

    assert vader_accuracy > 0.45, vader_accuracy
    assert tfidf_accuracy - vader_accuracy >= 0.08, (tfidf_accuracy, vader_accuracy)


# --------------------------------------------------------------------------------------------------
# arguments, edge cases, speed
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_orgs": 0}, "n_orgs must be >= 1"),
        ({"n_orgs": 2.5}, "n_orgs must be an integer"),
        ({"months": 0}, "months must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": "7"}, "seed must be an integer"),
        ({"leads_per_org": -1}, "leads_per_org must be >= 0"),
        ({"interactions_per_lead": -0.5}, "interactions_per_lead must be a finite number >= 0"),
        ({"interactions_per_lead": float("nan")}, "interactions_per_lead must be a finite number >= 0"),
        ({"end_month": "2026-10-01"}, "end_month must be a datetime.date"),
        ({"months": 5000}, "reaches back before 1900"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"n_orgs": 2, "months": 3, "seed": 1} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_crm(**arguments)  # type: ignore[arg-type]


def test_zero_leads_per_org_gives_empty_leads_and_interactions_with_the_right_columns() -> None:
    crm = generate_crm(3, 4, seed=1, leads_per_org=0)
    assert crm.leads.empty and list(crm.leads.columns) == LEAD_COLUMNS
    assert crm.interactions.empty and "sentiment_label" in crm.interactions.columns
    assert len(crm.organizations) == 3


def test_end_month_uses_only_year_and_month() -> None:
    crm = generate_crm(5, 3, seed=2, end_month=dt.date(2021, 6, 17))
    assert max(crm.monthly_sales["month"]) == dt.date(2021, 6, 1)
    assert min(crm.monthly_sales["month"]) == dt.date(2021, 4, 1)
    assert crm.leads["created_at"].max() < pd.Timestamp("2021-07-01", tz="UTC")


def test_a_thousand_orgs_over_four_years_generate_in_under_ten_seconds() -> None:
    started = time.perf_counter()
    crm = generate_crm(1000, 48, seed=7)
    elapsed = time.perf_counter() - started
    assert elapsed < 10, elapsed
    assert len(crm.leads) > 30_000
    assert synthetic.UNKNOWN_OUTCOME_DAYS == 45
