"""Training registers versions in a real MLflow store, with lineage, gates and idempotent re-runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.models import lead_scoring_model as lsm
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.synthetic import generate_crm
from neuracrm_mlops.training.train import Lineage, time_split, train_lead_scoring, train_sentiment

LINEAGE = Lineage(
    run_key="train_lead_scoring/2026-11-01T00:00:00+00:00",
    dag_run_id="scheduled__2026-11-01T00:00:00+00:00",
    validation={"run_row_id": 7, "success": True, "data_docs_path": "/reports/leads.html"},
)


def _version(name: str, version: str) -> dict[str, str]:
    return dict(registry.configure_mlflow().get_model_version(name, version).tags)


@pytest.mark.slow
def test_lead_model_is_registered_as_challenger_with_lineage_and_rerun_adds_no_version(
    seeded: sa.Engine,
) -> None:
    outcome = train_lead_scoring(LINEAGE, engine=seeded)
    assert outcome.status == "challenger", outcome.reason
    assert (outcome.version, outcome.semver) == ("1", "1.0.0")
    assert outcome.metrics["accuracy"] >= 0.70
    assert outcome.metrics["accuracy"] > outcome.metrics["fallback_accuracy"]
    assert outcome.metrics["roc_auc"] > outcome.metrics["fallback_roc_auc"]
    tags = _version("lead_scoring", "1")
    assert tags["status"] == "challenger" and tags["servable"] == "true"
    assert tags["incumbent"].startswith("the fallback (")
    assert tags["run_key"] == LINEAGE.run_key
    assert tags["dag_run_id"] == LINEAGE.dag_run_id
    assert tags["validation_run_id"] == "7" and tags["gx_report"] == "/reports/leads.html"
    assert len(tags["data_snapshot_hash"]) == 64
    assert tags["git_commit"] != ""
    client = registry.configure_mlflow()
    assert str(registry.alias_version(client, "lead_scoring", "challenger").version) == "1"
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id, "plots")}
    assert artifacts == {"plots/roc_curve.png", "plots/calibration_curve.png"}
    # the fallback is fitted on the same training part and registered as the rules' champion
    fallback = registry.alias_version(client, "lead_scoring_rules", "champion")
    assert fallback is not None and fallback.tags["fallback_kind"] in ("rules", "base_rate")
    assert fallback.tags["servable"] == "true" and "holdout_accuracy" in fallback.tags

    again = train_lead_scoring(LINEAGE, engine=seeded)
    assert (again.status, again.version) == ("existing", "1")
    assert len(client.search_model_versions("name = 'lead_scoring'")) == 1

    # new run key, same data and parameters: a patch version
    newer = train_lead_scoring(Lineage(run_key="train_lead_scoring/2026-11-02T00:00:00+00:00"), engine=seeded)
    assert (newer.version, newer.semver) == ("2", "1.0.1")
    # new parameters: a minor version
    changed = train_lead_scoring(
        Lineage(run_key="cli/3"), engine=seeded, config=lsm.LeadModelConfig(max_iter=120)
    )
    assert changed.semver == "1.1.0"


@pytest.mark.slow
def test_versions_are_logged_models_with_signature_example_wheel_and_training_data(
    seeded: sa.Engine,
) -> None:
    """Each version is registered from its LoggedModel (``models:/m-...``), declares its signature
    (with the ``explain`` param for leads) and an input example, ships the project's wheel and has its
    training data recorded with ``mlflow.log_input``; the lead signature lets partial leads through."""
    import zipfile

    import mlflow
    import pandas as pd

    from neuracrm_mlops.training import packaging as model_packaging
    from neuracrm_mlops.training.train import train_sentiment

    lead = train_lead_scoring(LINEAGE, engine=seeded)
    sentiment = train_sentiment(Lineage(run_key="train_sentiment/1"), engine=seeded)
    client = registry.configure_mlflow()
    for name, outcome, dataset in (
        ("lead_scoring", lead, "leads_with_outcome"),
        ("sentiment", sentiment, "labelled_interactions"),
    ):
        assert outcome.version is not None, outcome.reason
        version = client.get_model_version(name, outcome.version)
        assert version.source.startswith("models:/m-"), version.source
        wheel_path = version.tags[model_packaging.WHEEL_ARTIFACT]
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{outcome.version}"))
        requirements = (local / "requirements.txt").read_text().splitlines()
        assert wheel_path in requirements and (local / wheel_path).is_file()
        names = zipfile.ZipFile(local / wheel_path).namelist()
        assert "neuracrm_mlops/models/pyfunc_wrappers.py" in names
        assert any(n.endswith(".dist-info/METADATA") for n in names)
        info = mlflow.models.get_model_info(f"models:/{name}/{outcome.version}")
        assert info.signature is not None and info.signature.inputs is not None
        assert (local / "input_example.json").is_file()
        run = client.get_run(outcome.run_id or "")
        inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
        tags = dict(version.tags)
        assert inputs[dataset].digest == tags["data_snapshot_hash"][:36]
    lead_info = mlflow.models.get_model_info(f"models:/lead_scoring/{lead.version}")
    assert lead_info.signature.params is not None
    assert [p.name for p in lead_info.signature.params] == ["explain"]
    assert all(not c.required for c in lead_info.signature.inputs.inputs)
    pyfunc = mlflow.pyfunc.load_model(f"models:/lead_scoring/{lead.version}")
    # a partial lead with a column no lead model reads and a custom attribute: scored, not refused
    partial = pd.DataFrame([{"industry": "software", "crm_specific": "x", "attributes": {"tier": "gold"}}])
    answer = pyfunc.predict(partial, params={"explain": False})
    assert 0.0 <= float(answer["probability"].iloc[0]) <= 1.0 and answer["factors"].iloc[0] == []
    example = pyfunc.predict(model_packaging.lead_input_example())
    assert len(example["factors"].iloc[0]) == 3


@pytest.mark.slow
def test_below_the_floor_only_a_candidate_that_beats_the_fallback_gets_an_alias(
    seeded: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.models.sentiment_model import SentimentConfig

    monkeypatch.setenv("NEURACRM_ACCURACY_FLOOR", "0.99")
    reset_settings()
    # VADER itself as the candidate (too few labels demanded): no better than the VADER fallback
    same = train_sentiment(
        Lineage(run_key="train_sentiment/1"), engine=seeded, config=SentimentConfig(min_labelled=10**6)
    )
    assert same.status == "rejected"
    assert "below the floor 0.99 and does not beat the VADER fallback's" in same.reason
    tags = _version("sentiment", same.version or "")
    assert tags["status"] == "rejected" and "below the floor" in tags["reason"]
    assert registry.alias_version(registry.configure_mlflow(), "sentiment", "challenger") is None
    # the trained model is below 0.99 too, but beats VADER: the best available, served
    trained = train_sentiment(Lineage(run_key="train_sentiment/2"), engine=seeded)
    assert trained.status == "challenger" and "best available" in trained.reason
    assert _version("sentiment", trained.version or "")["below_floor"] == "true"


@pytest.mark.slow
def test_a_challenger_worse_than_the_champion_is_rejected(seeded: sa.Engine) -> None:
    first = train_sentiment(Lineage(run_key="train_sentiment/1"), engine=seeded)
    client = registry.configure_mlflow()
    client.set_registered_model_alias("sentiment", "champion", first.version)
    from neuracrm_mlops.models.sentiment_model import SentimentConfig

    # VADER-only (too few labels demanded) is far worse than the TF-IDF champion
    worse = train_sentiment(
        Lineage(run_key="train_sentiment/2"), engine=seeded, config=SentimentConfig(min_labelled=10**6)
    )
    assert worse.status == "rejected"
    assert "champion" in worse.reason or "floor" in worse.reason
    assert str(registry.alias_version(client, "sentiment", "champion").version) == first.version


@pytest.mark.slow
def test_lead_model_reaches_auc_085_and_beats_the_rule_scorer_on_a_fixed_seed() -> None:
    crm = generate_crm(200, 36, 21)
    leads = crm.leads[crm.leads["converted"].notna()]
    train, holdout = time_split(leads, "created_at", 0.2)
    model = lsm.train(train, train["converted"].astype(bool))
    y = holdout["converted"].astype(int).to_numpy()
    model_auc = roc_auc_score(y, model.predict_proba(holdout))
    rules_auc = roc_auc_score(y, lsm.RuleScorer().predict_proba(holdout))
    assert model_auc >= 0.85
    assert model_auc >= rules_auc + 0.03
    scored = lsm.predict(model, holdout.head(5))
    assert all(0 <= s["score"] <= 100 and s["tier"] in ("hot", "warm", "cold") for s in scored)
    assert all(len(s["factors"]) == 3 for s in scored)
    assert {f["group"] for s in scored for f in s["factors"]} <= set(lsm.FACTOR_GROUPS)
    assert np.isfinite([s["probability"] for s in scored]).all()
