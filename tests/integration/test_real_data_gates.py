"""The gates on small REAL slices (../shared/datasets, read at run time, never copied here): a version
the service cannot load is rejected and cannot be rolled out, a below-floor model that beats the
fallback serves with one warning, one that does not is rejected, and rollback never goes to a
previous version measured worse. SQLite store, real MLflow registry, the service's own loader."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

real_datasets = pytest.importorskip("real_datasets")

pytestmark = pytest.mark.slow

try:
    real_datasets.datasets_dir()
    HAVE_DATA = (real_datasets.datasets_dir() / "financial_phrasebank" / "Sentences_50Agree.txt").is_file()
except Exception:  # pragma: no cover - the folder is part of CI's checkout
    HAVE_DATA = False
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="../shared/datasets is missing (real data slices)")


def _org(engine: sa.Engine, name: str) -> int:
    from neuracrm_mlops.store.orgs import create_organization

    with engine.begin() as conn:
        ref, _ = create_organization(conn, name)
    return ref.id


def _import_sentences(engine: sa.Engine, tmp_path: Path, limit: int = 600) -> int:
    from neuracrm_mlops.store.ingest import import_file

    org = _org(engine, "phrasebank")
    frame = real_datasets.phrasebank_interactions(seed=0, limit=limit).interactions
    import_file(
        real_datasets.write_csv(frame, tmp_path / "sentences.csv"), "interactions", org, engine=engine
    )
    return org


def served_answers(engine: sa.Engine) -> list[Any]:
    from neuracrm_mlops.ops.status import served_answers

    return served_answers(engine)


def _lineage(key: str) -> Any:
    from neuracrm_mlops.training.train import Lineage

    return Lineage(run_key=f"test/{key}")


def _open_alerts(engine: sa.Engine, kind: str) -> list[Any]:
    from neuracrm_mlops.store.db.schema import Alert

    with engine.connect() as conn:
        return list(conn.execute(sa.select(Alert).where(Alert.kind == kind)).all())


def _version_tags(name: str, version: str) -> dict[str, str]:
    from neuracrm_mlops.store import registry

    return dict(registry.configure_mlflow().get_model_version(name, version).tags)


@needs_data
def test_below_floor_sentiment_that_beats_vader_serves_with_one_warning(
    home_engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.config import reset_settings
    from neuracrm_mlops.release import rollout
    from neuracrm_mlops.store import registry
    from neuracrm_mlops.training.train import train_sentiment

    monkeypatch.setenv("NEURACRM_ACCURACY_FLOORS", "sentiment=0.97")  # no real model reaches it
    reset_settings()
    _import_sentences(home_engine, tmp_path)
    outcome = train_sentiment(_lineage("below-floor"), engine=home_engine)
    vader = outcome.metrics["vader_accuracy"]
    assert outcome.status == "challenger", outcome.reason
    assert outcome.metrics["accuracy"] >= vader + 0.02
    assert "best available" in outcome.reason
    tags = _version_tags(registry.SENTIMENT_MODEL, outcome.version or "")
    assert tags["below_floor"] == "true" and tags["servable"] == "true"
    assert tags["incumbent"] == "the VADER fallback"
    alerts = _open_alerts(home_engine, "below_floor")
    assert len(alerts) == 1 and alerts[0].severity == "warning"
    assert "no candidate meets the floor 0.97; serving the best available" in alerts[0].message
    assert f"against the VADER fallback's {vader:.2f}" in alerts[0].message
    # it rolls out like any other: the first version is promoted at once
    result = rollout.start_rollout(registry.SENTIMENT_MODEL, actor="test", engine=home_engine)
    assert result.action == "promote" and result.champion == outcome.version
    # on-call sees what users get: the model, below the floor
    (sentiment,) = [a for a in served_answers(home_engine) if a.family == "sentiment"]
    assert (sentiment.answered_by, sentiment.version) == ("model", outcome.version)
    assert sentiment.why == "below floor: best available"


@needs_data
def test_below_floor_model_worse_than_the_fallback_is_rejected(
    home_engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flaky_models import ConstantSentiment

    from neuracrm_mlops.config import reset_settings
    from neuracrm_mlops.models import sentiment_model
    from neuracrm_mlops.store import registry
    from neuracrm_mlops.training.train import train_sentiment

    monkeypatch.setenv("NEURACRM_ACCURACY_FLOORS", "sentiment=0.97")
    reset_settings()
    monkeypatch.setattr(sentiment_model, "train", lambda texts, labels, config: ConstantSentiment("positive"))
    _import_sentences(home_engine, tmp_path)
    outcome = train_sentiment(_lineage("worse"), engine=home_engine)
    assert outcome.status == "rejected"
    assert "does not beat the VADER fallback's" in outcome.reason
    assert outcome.metrics["accuracy"] < outcome.metrics["vader_accuracy"]
    assert registry.alias_version(registry.configure_mlflow(), registry.SENTIMENT_MODEL, "challenger") is None
    assert _open_alerts(home_engine, "below_floor") == []


@needs_data
def test_a_version_the_service_cannot_load_is_rejected_and_rollout_refuses_it(
    home_engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flaky_models import BreaksOnLoadSentiment

    from neuracrm_mlops.models import sentiment_model
    from neuracrm_mlops.release import rollout
    from neuracrm_mlops.store import registry
    from neuracrm_mlops.training.train import train_sentiment

    monkeypatch.setattr(
        sentiment_model, "train", lambda texts, labels, config: BreaksOnLoadSentiment("neutral")
    )
    monkeypatch.setenv("NEURACRM_ACCURACY_FLOORS", "sentiment=0.0")
    from neuracrm_mlops.config import reset_settings

    reset_settings()
    _import_sentences(home_engine, tmp_path)
    outcome = train_sentiment(_lineage("unloadable"), engine=home_engine)
    assert outcome.status == "rejected"
    assert outcome.reason.startswith("not servable: the service cannot load it")
    assert "cannot be loaded" in outcome.reason
    tags = _version_tags(registry.SENTIMENT_MODEL, outcome.version or "")
    assert tags["status"] == "rejected" and tags["servable"] == "false"
    client = registry.configure_mlflow()
    assert registry.alias_version(client, registry.SENTIMENT_MODEL, "challenger") is None
    # even when someone points the challenger alias at it by hand, the rollout refuses it
    client.set_registered_model_alias(registry.SENTIMENT_MODEL, "challenger", outcome.version)
    with pytest.raises(rollout.RolloutError, match="is rejected"):
        rollout.start_rollout(registry.SENTIMENT_MODEL, actor="test", engine=home_engine)
    assert registry.alias_version(client, registry.SENTIMENT_MODEL, "champion") is None
    # the refused challenger comes off through abort: alias removed, the ledger says so
    assert registry.alias_version(client, registry.SENTIMENT_MODEL, "challenger") is None
    from neuracrm_mlops.store.ledger import latest_entries

    assert [e.action for e in latest_entries(home_engine, limit=1)] == ["reject"]
    (sentiment,) = [a for a in served_answers(home_engine) if a.family == "sentiment"]
    assert sentiment.answered_by == "fallback" and sentiment.why.startswith("not servable: v1")


def _log_judged_predictions(engine: sa.Engine, org: int, version: str, right: int, wrong: int) -> None:
    """Champion predictions of ``version`` with outcomes: ``right`` agree, ``wrong`` do not."""
    from neuracrm_mlops.store.db.schema import Outcome, Prediction, utcnow

    now = utcnow()
    rows, outcomes = [], []
    for i in range(right + wrong):
        entity = f"call-{i}"
        rows.append(
            {
                "created_at": now - dt.timedelta(minutes=5),
                "model_name": "sentiment",
                "model_version": version,
                "route": "champion",
                "request_id": f"r{i}",
                "organization_id": org,
                "entity_id": entity,
                "features": {"text": "the quarter went fine"},
                "output": {"label": "positive", "score": 0.9},
                "latency_ms": 3.0,
                "fallback": False,
            }
        )
        label = "positive" if i < right else "negative"
        outcomes.append(
            {
                "model_name": "sentiment",
                "organization_id": org,
                "entity_id": entity,
                "label": label,
                "observed_at": now,
                "source": "crm",
            }
        )
    with engine.begin() as conn:
        conn.execute(sa.insert(Prediction), rows)
        conn.execute(sa.insert(Outcome), outcomes)


@needs_data
@pytest.mark.parametrize(("previous_holdout", "rolls_back"), [(0.55, False), (0.90, True)])
def test_rollback_goes_to_previous_only_when_it_is_measured_better(
    home_engine: sa.Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    previous_holdout: float,
    rolls_back: bool,
) -> None:
    from neuracrm_mlops.config import reset_settings
    from neuracrm_mlops.monitoring.monitor import monitor_model
    from neuracrm_mlops.release import rollout
    from neuracrm_mlops.store import registry
    from neuracrm_mlops.training.train import train_sentiment

    monkeypatch.setenv("NEURACRM_ACCURACY_FLOORS", "sentiment=0.0")  # both versions register
    monkeypatch.setenv("NEURACRM_MIN_OUTCOMES", "50")
    reset_settings()
    org = _import_sentences(home_engine, tmp_path, limit=400)
    first = train_sentiment(_lineage("v1"), engine=home_engine)
    rollout.promote(registry.SENTIMENT_MODEL, actor="test", reason="v1", engine=home_engine)
    second = train_sentiment(_lineage("v2"), engine=home_engine)
    rollout.promote(registry.SENTIMENT_MODEL, actor="test", reason="v2", engine=home_engine)
    assert first.version and second.version
    client = registry.configure_mlflow()
    client.set_model_version_tag(
        registry.SENTIMENT_MODEL, first.version, "holdout_accuracy", f"{previous_holdout:.6f}"
    )
    monkeypatch.setenv("NEURACRM_ACCURACY_FLOORS", "sentiment=0.8")
    reset_settings()
    _log_judged_predictions(home_engine, org, second.version, right=36, wrong=24)  # live accuracy 0.60
    report = monitor_model(registry.SENTIMENT_MODEL, actor="test", engine=home_engine)
    assert report.verdict == "below_floor" and report.accuracy == pytest.approx(0.60)
    champion = registry.alias_version(client, registry.SENTIMENT_MODEL, "champion")
    (alert,) = _open_alerts(home_engine, "accuracy_below_floor")
    assert alert.severity == "critical"
    if rolls_back:
        assert report.rolled_back_to == first.version and str(champion.version) == first.version
        assert "rolled back from" in str(alert.action_taken)
    else:
        assert report.rolled_back_to is None and str(champion.version) == second.version
        assert "no automatic rollback" in str(alert.action_taken)
        assert "measured 0.550 on its recorded holdout, no better than the champion's live 0.600" in str(
            alert.action_taken
        )


@needs_data
def test_leads_without_text_company_or_engagement_fields_train_register_load_and_serve(
    home_engine: sa.Engine, tmp_path: Path
) -> None:
    from neuracrm_mlops.release import rollout
    from neuracrm_mlops.store import registry
    from neuracrm_mlops.store.ingest import import_file
    from neuracrm_mlops.training import servability
    from neuracrm_mlops.training.train import train_lead_scoring

    leads = real_datasets.bank_leads(800, start=41188 - 800)  # the newest calls: both outcomes
    assert not {"description", "company_employees", "company_revenue", "email_opens"} & set(leads.columns)
    org = _org(home_engine, "bank")
    summary = import_file(
        real_datasets.write_csv(leads, tmp_path / "bank.csv"), "leads", org, engine=home_engine
    )
    assert summary.imported == 800 and summary.quarantined == 0
    outcome = train_lead_scoring(_lineage("bank"), engine=home_engine)
    assert outcome.version is not None
    tags = _version_tags(registry.LEAD_MODEL, outcome.version)
    assert tags["servable"] == "true", tags.get("reason")
    assert outcome.status == "challenger", outcome.reason
    assert outcome.metrics["roc_auc"] > 0.5
    # the service's own loader: the lean path, and the same answers as training (checked at registration)
    servable = servability.load_as_served(registry.LEAD_MODEL, outcome.version)
    lead = {
        "lead_id": "new-call",
        "job_title": "technician",
        "source": "cellular",
        "attributes": {"age": 41, "marital": "married", "campaign": 2, "poutcome": "nonexistent"},
    }
    (answer,) = servable.predict([lead])
    assert 0.0 <= answer["probability"] <= 1.0 and len(answer["factors"]) == 3
    texts = " ".join(f["text"] for f in answer["factors"])
    assert "nan" not in texts.lower() and "None" not in texts
    # the fallback fitted on the same data answers too, and the first version rolls out
    fallback = servability.load_as_served(registry.LEAD_RULES_MODEL, _fallback_version())
    assert 0.0 <= fallback.predict([lead])[0]["probability"] <= 1.0
    result = rollout.start_rollout(registry.LEAD_MODEL, actor="test", engine=home_engine)
    assert result.action == "promote" and result.champion == outcome.version


def _fallback_version() -> str:
    from neuracrm_mlops.store import registry

    version = registry.alias_version(registry.configure_mlflow(), registry.LEAD_RULES_MODEL, "champion")
    assert version is not None
    return str(version.version)
