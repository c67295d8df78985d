"""Train, evaluate, gate and register each model family (the bodies of the training DAG tasks).

Every function takes plain arguments, returns a ``TrainingOutcome`` (ids and URIs, JSON-friendly)
and can run without Airflow; ``neuracrm-mlops train`` calls the same functions.

Gates (``decide_registration``, a pure function): accuracy on the holdout >= the floor (0.80) and
no worse than the current champion on the same holdout beyond a tolerance. A version that fails is
still registered, tagged ``status=rejected`` with the reason, and never gets an alias.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops import registry
from neuracrm_mlops.config import get_settings
from neuracrm_mlops.db.engine import get_engine
from neuracrm_mlops.db.migrate import require_current_schema
from neuracrm_mlops.db.schema import Interaction, Lead
from neuracrm_mlops.evaluation import evaluate

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.02
MIN_LEADS_WITH_OUTCOME = 200


@dataclass(frozen=True)
class Lineage:
    """Where a training run comes from: the DAG run (or CLI call) and the validation it passed."""

    run_key: str  # idempotency key, e.g. "train_lead_scoring/2026-11-22T00:00:00+00:00"
    dag_run_id: str = "cli"
    validation: dict[str, Any] = field(default_factory=dict)  # ValidationReport.as_dict() summary

    @classmethod
    def for_cli(cls, family: str) -> Lineage:
        return cls(run_key=f"cli/{family}/{dt.datetime.now(dt.UTC).isoformat()}")


@dataclass
class TrainingOutcome:
    model_name: str
    status: str  # challenger | rejected | existing | skipped
    reason: str
    version: str | None = None
    semver: str | None = None
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def decide_registration(
    accuracy: float,
    *,
    floor: float,
    champion_accuracy: float | None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> GateDecision:
    """The registration gate, a pure function of the holdout numbers."""
    if not np.isfinite(accuracy):
        return GateDecision(False, "accuracy could not be computed on the holdout")
    if accuracy < floor:
        return GateDecision(False, f"holdout accuracy {accuracy:.3f} is below the floor {floor:.2f}")
    if champion_accuracy is not None and accuracy < champion_accuracy - tolerance:
        return GateDecision(
            False,
            f"holdout accuracy {accuracy:.3f} is worse than the champion's {champion_accuracy:.3f} "
            f"by more than the tolerance {tolerance:.3f}",
        )
    versus = "no champion yet" if champion_accuracy is None else f"champion {champion_accuracy:.3f}"
    return GateDecision(True, f"holdout accuracy {accuracy:.3f} >= floor {floor:.2f}; {versus}")


def gate_against_champion(
    model_name: str,
    score: Callable[[Any], dict[str, float]],
    metrics: dict[str, float],
    tolerance: float,
) -> tuple[dict[str, float] | None, GateDecision]:
    """Score the current champion (if any) on the same holdout with ``score``, then apply the gate."""
    champion = registry.load_family_object(model_name, registry.CHAMPION)
    champion_metrics = score(champion[0]) if champion else None
    decision = decide_registration(
        metrics["accuracy"],
        floor=get_settings().accuracy_floor,
        champion_accuracy=champion_metrics["accuracy"] if champion_metrics else None,
        tolerance=tolerance,
    )
    return champion_metrics, decision


def time_split(frame: pd.DataFrame, column: str, holdout_share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Older rows train, the newest ``holdout_share`` are the holdout (no shuffling across time)."""
    if not 0 < holdout_share < 1:
        raise ValueError(f"holdout_share must be between 0 and 1, got {holdout_share}")
    ordered = frame.sort_values(column, kind="stable").reset_index(drop=True)
    cut = round(len(ordered) * (1 - holdout_share))
    return ordered.iloc[:cut], ordered.iloc[cut:]


def snapshot_hash(values: pd.Series) -> str:
    """A hash of the training data (the rows' content hashes, order-independent)."""
    digest = hashlib.sha256()
    for value in sorted(values.astype(str)):
        digest.update(value.encode())
    return digest.hexdigest()


def lineage_tags(lineage: Lineage, data_hash: str) -> dict[str, str]:
    validation = lineage.validation or {}
    return {
        "run_key": lineage.run_key,
        "dag_run_id": lineage.dag_run_id,
        "git_commit": registry.git_commit(),
        "data_snapshot_hash": data_hash,
        "validation_run_id": str(validation.get("run_row_id", "")),
        "validation_success": str(validation.get("success", "")),
        "gx_report": str(validation.get("data_docs_path", "")),
    }


def save_plot(path: Path, draw: Callable[[Any], None]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 4))
    draw(axes)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "scikit-learn", "pandas", "numpy", "joblib")]


def _log_and_register(
    *,
    model_name: str,
    description: str,
    family_object: Any,
    pyfunc: Any,
    decision: GateDecision,
    tags: dict[str, str],
    semver_inputs: tuple[str, str],
    workdir: Path,
) -> tuple[str, str]:
    """Log the pyfunc in the active run, register a version with its tags, alias it when it passed."""
    import joblib
    import mlflow

    client = registry.configure_mlflow()
    registry.ensure_registered_model(client, model_name, description)
    artifact = workdir / "model.joblib"
    joblib.dump(family_object, artifact)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=pyfunc,
        artifacts={"model": str(artifact)},
        pip_requirements=pip_requirements(),
    )
    semver = registry.next_semantic_version(client, model_name, *semver_inputs)
    status = registry.CHALLENGER if decision.passed else "rejected"
    version = client.create_model_version(
        model_name,
        info.model_uri,
        run_id=info.run_id,
        model_id=info.model_id,
        tags={
            **tags,
            "status": status,
            "reason": decision.reason,
            "semver": semver,
            "schema_hash": semver_inputs[0],
            "params_hash": semver_inputs[1],
        },
    )
    if decision.passed:
        client.set_registered_model_alias(model_name, registry.CHALLENGER, version.version)
    return str(version.version), semver


@dataclass
class TrainingRecord:
    """Everything one training run logs to MLflow and registers (see ``record_and_register``)."""

    model_name: str
    experiment: str
    description: str
    family_object: Any
    pyfunc: Any
    decision: GateDecision
    lineage: Lineage
    data_hash: str
    params: dict[str, Any]
    metrics: dict[str, dict[str, float]]  # prefix ("" for the candidate) -> metrics
    semver_inputs: tuple[str, str]  # (input schema hash, parameters hash)
    extra_tags: dict[str, str] = field(default_factory=dict)
    plots: Callable[[Path], list[Path]] | None = None  # draws PNGs into the run's work dir
    reason_note: str = ""
    # the training features' reference profile (drift.reference_profile), kept with the version
    reference: dict[str, Any] | None = None


REFERENCE_ARTIFACT = "reference/features.json"


def reference_profile(
    frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]
) -> dict[str, Any]:
    from neuracrm_mlops import drift

    present = set(frame.columns)
    return drift.reference_profile(
        frame, [c for c in numeric if c in present], [c for c in categorical if c in present]
    )


def record_and_register(record: TrainingRecord, started: float) -> TrainingOutcome:
    """One MLflow run (params, metrics, plots, GX result, lineage tags) and one registered version."""
    import mlflow

    flat = {
        f"{prefix}{name}": value
        for prefix, group in record.metrics.items()
        for name, value in group.items()
        if np.isfinite(value)
    }
    mlflow.set_experiment(experiment_id=registry.ensure_experiment(record.experiment))
    run_name = f"{record.model_name} {record.lineage.run_key}"
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name=run_name) as run:
        workdir = Path(tmp)
        mlflow.log_params(record.params)
        mlflow.log_metrics(flat)
        for plot in record.plots(workdir) if record.plots else []:
            mlflow.log_artifact(str(plot), "plots")
        mlflow.log_dict(record.lineage.validation or {}, "validation/gx_result.json")
        if record.reference is not None:
            mlflow.log_dict(record.reference, REFERENCE_ARTIFACT)
        tags = {**lineage_tags(record.lineage, record.data_hash), **record.extra_tags}
        mlflow.set_tags(tags)
        version, semver = _log_and_register(
            model_name=record.model_name,
            description=record.description,
            family_object=record.family_object,
            pyfunc=record.pyfunc,
            decision=record.decision,
            tags=tags,
            semver_inputs=record.semver_inputs,
            workdir=workdir,
        )
    return TrainingOutcome(
        model_name=record.model_name,
        status=registry.CHALLENGER if record.decision.passed else "rejected",
        reason=record.decision.reason + record.reason_note,
        version=version,
        semver=semver,
        run_id=run.info.run_id,
        metrics=flat,
        seconds=time.perf_counter() - started,
    )


def _existing(model_name: str, lineage: Lineage) -> TrainingOutcome | None:
    client = registry.configure_mlflow()
    version = registry.find_version_by_run_key(client, model_name, lineage.run_key)
    if version is None:
        return None
    return TrainingOutcome(
        model_name=model_name,
        status="existing",
        reason=f"version {version.version} was already registered for run {lineage.run_key}",
        version=str(version.version),
        semver=version.tags.get("semver"),
        run_id=version.run_id,
    )


# ---------------------------------------------------------------------------------------------
# Lead scoring


def load_leads_with_outcome(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Lead).where(Lead.converted.is_not(None))).mappings().all()
    return pd.DataFrame([dict(r) for r in rows])


def _lead_plots(workdir: Path, y: np.ndarray, model_p: np.ndarray, rules_p: np.ndarray) -> list[Path]:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    def roc(axes: Any) -> None:
        for label, p in (("model", model_p), ("rules", rules_p)):
            fpr, tpr, _ = roc_curve(y, p)
            axes.plot(fpr, tpr, label=label)
        axes.plot([0, 1], [0, 1], "k:", linewidth=0.8)
        axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the holdout")
        axes.legend()

    def calibration(axes: Any) -> None:
        for label, p in (("model", model_p), ("rules", rules_p)):
            observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
            axes.plot(predicted, observed, marker="o", label=label)
        axes.plot([0, 1], [0, 1], "k:", linewidth=0.8)
        axes.set(xlabel="predicted probability", ylabel="observed conversion", title="Calibration")
        axes.legend()

    return [
        save_plot(workdir / "roc_curve.png", roc),
        save_plot(workdir / "calibration_curve.png", calibration),
    ]


def ensure_rule_baseline() -> str:
    """Register the rule-based scorer once (``lead_scoring_rules@champion``); returns its version."""
    import mlflow

    from neuracrm_mlops.models.lead_scoring_model import RULE_WEIGHTS, RuleScorer
    from neuracrm_mlops.models.pyfunc_wrappers import LeadScoringPyfunc

    client = registry.configure_mlflow()
    existing = registry.alias_version(client, registry.LEAD_RULES_MODEL, registry.CHAMPION)
    if existing is not None:
        return str(existing.version)
    mlflow.set_experiment(experiment_id=registry.ensure_experiment("lead_scoring"))
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name="rule-based baseline"):
        mlflow.log_params({f"weight_{k}": v for k, v in RULE_WEIGHTS.items()})
        version, _ = _log_and_register(
            model_name=registry.LEAD_RULES_MODEL,
            description="Hand-weighted six-factor lead scorer: baseline and fallback.",
            family_object=RuleScorer(),
            pyfunc=LeadScoringPyfunc(),
            decision=GateDecision(True, "rule-based baseline: always available as fallback"),
            tags={"run_key": "rule-baseline", "git_commit": registry.git_commit()},
            semver_inputs=(registry.stable_hash(RULE_WEIGHTS), registry.stable_hash(RULE_WEIGHTS)),
            workdir=Path(tmp),
        )
    client.set_registered_model_alias(registry.LEAD_RULES_MODEL, registry.CHAMPION, version)
    client.delete_registered_model_alias(registry.LEAD_RULES_MODEL, registry.CHALLENGER)
    client.set_model_version_tag(registry.LEAD_RULES_MODEL, version, "status", registry.CHAMPION)
    return version


def train_lead_scoring(
    lineage: Lineage,
    *,
    engine: sa.Engine | None = None,
    holdout_share: float = 0.2,
    tolerance: float = DEFAULT_TOLERANCE,
    config: Any = None,
) -> TrainingOutcome:
    """Train the lead model on leads with known outcomes, gate it and register it."""
    from neuracrm_mlops.models import lead_scoring_model as lsm
    from neuracrm_mlops.models.pyfunc_wrappers import LeadScoringPyfunc

    started = time.perf_counter()
    engine = engine or get_engine()
    require_current_schema(engine)
    existing = _existing(registry.LEAD_MODEL, lineage)
    if existing is not None:
        return existing
    ensure_rule_baseline()
    leads = load_leads_with_outcome(engine)
    if len(leads) < MIN_LEADS_WITH_OUTCOME:
        return TrainingOutcome(
            registry.LEAD_MODEL,
            "skipped",
            f"{len(leads)} leads with a known outcome, fewer than the {MIN_LEADS_WITH_OUTCOME} needed",
        )
    train_part, holdout = time_split(leads, "created_at", holdout_share)
    config = config or lsm.LeadModelConfig()
    model = lsm.train(train_part, train_part["converted"].astype(bool), config)
    y = holdout["converted"].astype(int).to_numpy()

    def score(scorer: Any) -> tuple[dict[str, float], np.ndarray]:
        p = scorer.predict_proba(holdout)
        return evaluate("lead_scoring", y, (p >= 0.5).astype(int), probabilities=p), p

    metrics, model_p = score(model)
    rules_metrics, rules_p = score(lsm.RuleScorer())
    champion_metrics, decision = gate_against_champion(
        registry.LEAD_MODEL, lambda champion: score(champion)[0], metrics, tolerance
    )
    record = TrainingRecord(
        model_name=registry.LEAD_MODEL,
        experiment="lead_scoring",
        description="Probability that a lead converts: calibrated gradient boosting, six factor groups.",
        family_object=model,
        pyfunc=LeadScoringPyfunc(),
        decision=decision,
        lineage=lineage,
        data_hash=snapshot_hash(leads["content_hash"]),
        params={
            **config.as_params(),
            "holdout_share": holdout_share,
            "train_rows": len(train_part),
            "holdout_rows": len(holdout),
            "custom_attributes": ",".join(model.attribute_numeric + model.attribute_categorical) or "none",
        },
        metrics={"": metrics, "rules_": rules_metrics, "champion_": champion_metrics or {}},
        semver_inputs=(registry.stable_hash(model.feature_schema), registry.stable_hash(config.as_params())),
        plots=lambda workdir: _lead_plots(workdir, y, model_p, rules_p),
        reference=reference_profile(train_part, lsm.NUMERIC_COLUMNS, lsm.CATEGORICAL_COLUMNS),
    )
    return record_and_register(record, started)


# ---------------------------------------------------------------------------------------------
# Sentiment


def load_labelled_interactions(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                Interaction.text,
                Interaction.sentiment_label,
                Interaction.created_at,
                Interaction.content_hash,
            ).where(Interaction.sentiment_label.is_not(None))
        ).all()
    return pd.DataFrame(rows, columns=["text", "sentiment_label", "created_at", "content_hash"])


def train_sentiment(
    lineage: Lineage,
    *,
    engine: sa.Engine | None = None,
    holdout_share: float = 0.2,
    tolerance: float = DEFAULT_TOLERANCE,
    config: Any = None,
) -> TrainingOutcome:
    """Train TF-IDF + logistic regression when enough labels exist (else register VADER), gate, register."""
    from neuracrm_mlops.models import sentiment_model as sm
    from neuracrm_mlops.models.pyfunc_wrappers import SentimentPyfunc

    started = time.perf_counter()
    engine = engine or get_engine()
    require_current_schema(engine)
    existing = _existing(registry.SENTIMENT_MODEL, lineage)
    if existing is not None:
        return existing
    config = config or sm.SentimentConfig()
    frame = load_labelled_interactions(engine)
    frame = frame[frame["sentiment_label"].isin(sm.LABELS)]
    if len(frame) < 10:
        return TrainingOutcome(
            registry.SENTIMENT_MODEL, "skipped", f"only {len(frame)} labelled interactions"
        )
    train_part, holdout = time_split(frame, "created_at", holdout_share)
    vader = sm.VaderScorer(config.vader_threshold)
    can_train, why = sm.enough_labels(list(train_part["sentiment_label"]), config)
    candidate: Any = (
        sm.train(list(train_part["text"]), list(train_part["sentiment_label"]), config)
        if can_train
        else vader
    )

    def score(model: Any) -> dict[str, float]:
        predicted = [p["label"] for p in sm.predict(model, list(holdout["text"]))]
        return evaluate("sentiment", list(holdout["sentiment_label"]), predicted)

    metrics = score(candidate)
    vader_metrics = metrics if candidate is vader else score(vader)
    champion_metrics, decision = gate_against_champion(registry.SENTIMENT_MODEL, score, metrics, tolerance)
    record = TrainingRecord(
        model_name=registry.SENTIMENT_MODEL,
        experiment="sentiment",
        description="Sentiment of interaction text: negative / neutral / positive.",
        family_object=candidate,
        pyfunc=SentimentPyfunc(),
        decision=decision,
        lineage=lineage,
        data_hash=snapshot_hash(frame["content_hash"]),
        params={
            **config.as_params(),
            "model_kind": candidate.kind,
            "why": why,
            "train_rows": len(train_part),
            "holdout_rows": len(holdout),
        },
        metrics={"": metrics, "vader_": vader_metrics, "champion_": champion_metrics or {}},
        semver_inputs=(
            registry.stable_hash(["text"]),
            registry.stable_hash([candidate.kind, config.as_params()]),
        ),
        extra_tags={"model_kind": candidate.kind},
        reason_note="" if can_train else f" (VADER baseline: {why})",
    )
    return record_and_register(record, started)
