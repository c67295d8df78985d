"""Train, evaluate, gate and register each model family (the bodies of the training DAG tasks).

Every function takes plain arguments, returns a ``TrainingOutcome`` (ids and URIs, JSON-friendly)
and can run without Airflow; ``neuracrm-mlops train`` calls the same functions.

Gates (``decide_registration``, a pure function): accuracy on the holdout >= the floor (0.80) and
no worse than the current champion on the same holdout beyond a tolerance. A version that fails is
still registered, tagged ``status=rejected`` with the reason, and never gets an alias.
"""

from __future__ import annotations

import datetime as dt
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

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.db.engine import get_engine
from neuracrm_mlops.store.db.migrate import require_current_schema
from neuracrm_mlops.store.db.schema import Interaction, Lead
from neuracrm_mlops.store.snapshots import content_hash_digest
from neuracrm_mlops.training.evaluation import evaluate

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
class Incumbent:
    """What users get today for a family (and organization) if the candidate is not served: the
    champion, or the fallback when there is none, scored on the candidate's holdout."""

    label: str  # e.g. "champion v3", "the fitted rule fallback", "VADER", "seasonal naive"
    accuracy: float | None  # on the same holdout; None when it could not be measured
    is_fallback: bool = False

    @property
    def measured(self) -> bool:
        return self.accuracy is not None and bool(np.isfinite(self.accuracy))


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    below_floor: bool = False  # passed as the best available although below the floor


DEFAULT_MARGIN = 0.02  # a candidate below the floor must beat the incumbent by this much to serve


def decide_registration(
    accuracy: float,
    *,
    floor: float,
    incumbent: Incumbent | None,
    tolerance: float = DEFAULT_TOLERANCE,
    margin: float = DEFAULT_MARGIN,
) -> GateDecision:
    """The registration gate, a pure function of the holdout numbers ("never serve something worse
    than what is available"):

    - at or above the floor: passes unless it is worse than the incumbent by more than ``tolerance``;
    - below the floor: passes, tagged ``below_floor``, only when it beats a measured incumbent by at
      least ``margin`` (it is then the best answer users can get); otherwise rejected.
    """
    if not np.isfinite(accuracy):
        return GateDecision(False, "accuracy could not be computed on the holdout")
    if incumbent is None or incumbent.accuracy is None or not incumbent.measured:
        if accuracy >= floor:
            return GateDecision(
                True,
                f"holdout accuracy {accuracy:.3f} >= floor {floor:.2f}; no champion yet, "
                "no measured fallback",
            )
        return GateDecision(
            False,
            f"holdout accuracy {accuracy:.3f} is below the floor {floor:.2f}; no champion yet and no "
            "measured fallback to compare with",
        )
    label, theirs = incumbent.label, incumbent.accuracy
    if accuracy >= floor:
        if accuracy < theirs - tolerance:
            return GateDecision(
                False,
                f"holdout accuracy {accuracy:.3f} is worse than {label}'s {theirs:.3f} "
                f"by more than the tolerance {tolerance:.3f}",
            )
        return GateDecision(
            True, f"holdout accuracy {accuracy:.3f} >= floor {floor:.2f}; {label} {theirs:.3f}"
        )
    if accuracy >= theirs + margin:
        return GateDecision(
            True,
            f"holdout accuracy {accuracy:.3f} is below the floor {floor:.2f} but beats {label}'s "
            f"{theirs:.3f} by at least {margin:.2f}: the best available, served below the floor",
            below_floor=True,
        )
    return GateDecision(
        False,
        f"holdout accuracy {accuracy:.3f} is below the floor {floor:.2f} and does not beat "
        f"{label}'s {theirs:.3f} by {margin:.2f}",
    )


def incumbent_of(
    champion: tuple[str, float | None] | None, fallback: tuple[str, float | None] | None
) -> Incumbent | None:
    """The champion (version, accuracy) when there is one, else the fallback (label, accuracy)."""
    if champion is not None:
        return Incumbent(f"champion v{champion[0]}", champion[1])
    if fallback is not None:
        return Incumbent(fallback[0], fallback[1], is_fallback=True)
    return None


def gate_against_incumbent(
    model_name: str,
    score: Callable[[Any], dict[str, float]],
    metrics: dict[str, float],
    tolerance: float,
    *,
    fallback: tuple[str, float | None] | None,
    family: str,
) -> tuple[dict[str, float] | None, Incumbent | None, GateDecision]:
    """Score the current champion (if any) on the same holdout with ``score``, else take the
    fallback's holdout accuracy, then apply the gate with the family's floor."""
    champion = registry.load_family_object(model_name, registry.CHAMPION)
    champion_metrics = score(champion[0]) if champion else None
    incumbent = incumbent_of(
        (champion[1], champion_metrics["accuracy"]) if champion and champion_metrics else None, fallback
    )
    decision = decide_registration(
        metrics["accuracy"],
        floor=get_settings().floor_for(family),
        incumbent=incumbent,
        tolerance=tolerance,
    )
    return champion_metrics, incumbent, decision


def time_split(frame: pd.DataFrame, column: str, holdout_share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Older rows train, the newest ``holdout_share`` are the holdout (no shuffling across time)."""
    if not 0 < holdout_share < 1:
        raise ValueError(f"holdout_share must be between 0 and 1, got {holdout_share}")
    ordered = frame.sort_values(column, kind="stable").reset_index(drop=True)
    cut = round(len(ordered) * (1 - holdout_share))
    return ordered.iloc[:cut], ordered.iloc[cut:]


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
    """The packages the pyfuncs import, pinned (``model_packaging.base_pip_requirements``)."""
    from neuracrm_mlops.training.packaging import base_pip_requirements

    return base_pip_requirements()


@dataclass(frozen=True)
class RegisteredVersion:
    version: str
    semver: str
    status: str  # challenger | rejected
    reason: str


LEAD_PYFUNC_PARAMS: dict[str, Any] = {"explain": True}


@dataclass(frozen=True)
class ModelInterface:
    """What a logged pyfunc declares: its signature (with the params schema, so that MLflow passes
    the params to ``predict``) and an input example (see ``model_packaging``)."""

    signature: Any
    input_example: Any

    @classmethod
    def lead(cls) -> ModelInterface:
        from neuracrm_mlops.training import packaging as model_packaging

        return cls(model_packaging.lead_signature(LEAD_PYFUNC_PARAMS), model_packaging.lead_input_example())

    @classmethod
    def sentiment(cls) -> ModelInterface:
        from neuracrm_mlops.training import packaging as model_packaging

        return cls(model_packaging.sentiment_signature(), model_packaging.sentiment_input_example())


@dataclass(frozen=True)
class TrainingData:
    """The training data recorded with ``mlflow.log_input`` (its schema and size, not its rows)."""

    frame: pd.DataFrame
    name: str
    snapshot_hash: str
    targets: str | None = None

    def log(self) -> bool:
        from neuracrm_mlops.training.packaging import log_training_data

        return log_training_data(self.frame, self.name, self.snapshot_hash, targets=self.targets)


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
    verify: Callable[[str], None] | None = None,
    interface: ModelInterface | None = None,
) -> RegisteredVersion:
    """Log the pyfunc in the active run (a LoggedModel with its signature, input example and the
    project's wheel: ``model_packaging``), register a version from its ``models:/m-...`` URI with its
    tags, check that it serves, alias it ``challenger`` when it passed both the gate and the check.

    ``verify(version)`` loads the registered version the way the service does and compares its
    answers with the training-time predictions (``servability.verify``); a version that fails is
    ``rejected`` with the exception as the reason, whatever its metrics.
    """
    import joblib
    import mlflow

    from neuracrm_mlops.training import packaging as model_packaging
    from neuracrm_mlops.training.servability import SERVABLE_TAG, NotServableError

    client = registry.configure_mlflow()
    registry.ensure_registered_model(client, model_name, description)
    artifact = workdir / "model.joblib"
    joblib.dump(family_object, artifact)
    wheel = model_packaging.project_wheel()
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=pyfunc,
        artifacts={"model": str(artifact), model_packaging.WHEEL_ARTIFACT: str(wheel)},
        pip_requirements=model_packaging.shipped_pip_requirements(wheel),
        signature=interface.signature if interface else None,
        input_example=interface.input_example if interface else None,
    )
    semver = registry.next_semantic_version(client, model_name, *semver_inputs)
    version_tags = {
        **tags,
        # "checking" until the servability check below has run: rollout refuses it meanwhile
        "status": "checking" if decision.passed else "rejected",
        "reason": decision.reason,
        "semver": semver,
        "schema_hash": semver_inputs[0],
        "params_hash": semver_inputs[1],
        model_packaging.WHEEL_ARTIFACT: model_packaging.wheel_requirement(wheel),
    }
    if decision.below_floor:
        version_tags["below_floor"] = "true"
    version = client.create_model_version(
        model_name, info.model_uri, run_id=info.run_id, model_id=info.model_id, tags=version_tags
    )
    number = str(version.version)
    status = registry.CHALLENGER if decision.passed else "rejected"
    reason = decision.reason
    try:
        if verify is not None:
            verify(number)
    except NotServableError as exc:
        status, reason = "rejected", f"not servable: {exc}"
        client.set_model_version_tag(model_name, number, SERVABLE_TAG, "false")
        log.error("%s v%s is not servable: %s", model_name, number, exc)
    else:
        client.set_model_version_tag(model_name, number, SERVABLE_TAG, "true" if verify else "unchecked")
    client.set_model_version_tag(model_name, number, "status", status)
    client.set_model_version_tag(model_name, number, "reason", reason[:5000])
    if status == registry.CHALLENGER:
        client.set_registered_model_alias(model_name, registry.CHALLENGER, number)
    return RegisteredVersion(number, semver, status, reason)


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
    # loads the registered version as the service does and compares its holdout answers
    verify: Callable[[str], None] | None = None
    interface: ModelInterface | None = None  # the pyfunc's signature and input example
    training_data: TrainingData | None = None  # recorded with mlflow.log_input
    incumbent: Incumbent | None = None
    family: str = ""
    notes: list[str] = field(default_factory=list)  # logged to the run (e.g. dropped columns)


def reference_profile(
    frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]
) -> dict[str, Any]:
    from neuracrm_mlops.quality import drift

    present = set(frame.columns)
    return drift.reference_profile(
        frame, [c for c in numeric if c in present], [c for c in categorical if c in present]
    )


def record_and_register(record: TrainingRecord, started: float) -> TrainingOutcome:
    """One MLflow run (params, metrics, plots, GX result, lineage tags) and one registered version."""
    import mlflow

    from neuracrm_mlops.quality import drift

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
            mlflow.log_dict(record.reference, drift.REFERENCE_ARTIFACT)
        tags = {**lineage_tags(record.lineage, record.data_hash), **record.extra_tags}
        tags["holdout_accuracy"] = f"{float(record.metrics[''].get('accuracy', float('nan'))):.6f}"
        if record.incumbent is not None:
            tags["incumbent"] = record.incumbent.label
            if record.incumbent.measured:
                tags["incumbent_accuracy"] = f"{record.incumbent.accuracy:.6f}"
        mlflow.set_tags(tags)
        if record.notes:
            mlflow.log_text("\n".join(record.notes) + "\n", "notes.txt")
        if record.training_data is not None:
            record.training_data.log()
        registered = _log_and_register(
            model_name=record.model_name,
            description=record.description,
            family_object=record.family_object,
            pyfunc=record.pyfunc,
            decision=record.decision,
            tags=tags,
            semver_inputs=record.semver_inputs,
            workdir=workdir,
            verify=record.verify,
            interface=record.interface,
        )
    outcome = TrainingOutcome(
        model_name=record.model_name,
        status=registered.status,
        reason=registered.reason + record.reason_note,
        version=registered.version,
        semver=registered.semver,
        run_id=run.info.run_id,
        metrics=flat,
        seconds=time.perf_counter() - started,
    )
    if registered.status == registry.CHALLENGER and record.decision.below_floor:
        raise_below_floor_alert(
            record.model_name,
            record.family or record.model_name,
            registered.version,
            float(record.metrics[""]["accuracy"]),
            record.incumbent,
        )
    return outcome


RUNBOOK_BELOW_FLOOR = (
    "No candidate meets the accuracy floor, so the best available one serves (tagged below_floor): "
    "it beat what users got before on the same holdout. Nothing to undo. Improve the data (more "
    "labelled history, the fields that carry signal) or set a floor this organization's data can "
    "reach (NEURACRM_ACCURACY_FLOORS), then retrain."
)


def raise_below_floor_alert(
    model_name: str,
    family: str,
    version: str | None,
    accuracy: float,
    incumbent: Incumbent | None,
    *,
    served: str | None = None,
    organization_id: int | None = None,
    engine: sa.Engine | None = None,
) -> int:
    """One open warning per model (or family, for forecasts): no candidate meets the floor; the best
    available serves. ``served`` names what serves when it is not ``v<version>`` of ``model_name``."""
    from neuracrm_mlops.store.alerts import raise_alert

    floor = get_settings().floor_for(family, organization_id)
    served = served or f"v{version}"
    against = (
        f" against {incumbent.label}'s {incumbent.accuracy:.2f}" if incumbent and incumbent.measured else ""
    )
    return raise_alert(
        engine or get_engine(),
        kind="below_floor",
        severity="warning",
        title=f"{model_name}: the best available model is below the floor ({served})",
        message=(
            f"no candidate meets the floor {floor:.2f}; serving the best available: "
            f"{served} {accuracy:.2f}{against}"
        ),
        dedup_key=f"below_floor:{model_name}",
        model_name=model_name,
        model_version=version,
        organization_id=organization_id,
        metrics={
            "accuracy": accuracy,
            "floor": floor,
            "incumbent": incumbent.label if incumbent else None,
            "incumbent_accuracy": incumbent.accuracy if incumbent else None,
        },
        action_taken=f"{served} registered as challenger with tag below_floor; it rolls out as usual",
        runbook=RUNBOOK_BELOW_FLOOR,
        links=registry.version_links(model_name, version) if version else {},
    ).id


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
        for label, p in (("model", model_p), ("fallback", rules_p)):
            fpr, tpr, _ = roc_curve(y, p)
            axes.plot(fpr, tpr, label=label)
        axes.plot([0, 1], [0, 1], "k:", linewidth=0.8)
        axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the holdout")
        axes.legend()

    def calibration(axes: Any) -> None:
        for label, p in (("model", model_p), ("fallback", rules_p)):
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
    """Register the hand-weighted rule scorer once (``lead_scoring_rules@champion``) when no fallback
    is registered yet; returns the champion fallback's version."""
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
        registered = _log_and_register(
            model_name=registry.LEAD_RULES_MODEL,
            description=LEAD_FALLBACK_DESCRIPTION,
            family_object=RuleScorer(),
            pyfunc=LeadScoringPyfunc(),
            decision=GateDecision(True, "rule-based baseline: always available as fallback"),
            tags={"run_key": "rule-baseline", "git_commit": registry.git_commit()},
            semver_inputs=(registry.stable_hash(RULE_WEIGHTS), registry.stable_hash(RULE_WEIGHTS)),
            workdir=Path(tmp),
            interface=ModelInterface.lead(),
        )
    _make_fallback_champion(client, registered.version)
    return registered.version


LEAD_FALLBACK_DESCRIPTION = (
    "Lead fallback: the six-factor rule scorer calibrated on the training data at each training, "
    "or the base rate when the rules do not rank leads (holdout ROC AUC below 0.55)."
)


def _make_fallback_champion(client: Any, version: str) -> None:
    client.set_registered_model_alias(registry.LEAD_RULES_MODEL, registry.CHAMPION, version)
    client.delete_registered_model_alias(registry.LEAD_RULES_MODEL, registry.CHALLENGER)
    client.set_model_version_tag(registry.LEAD_RULES_MODEL, version, "status", registry.CHAMPION)


@dataclass(frozen=True)
class FittedFallback:
    version: str | None  # the registered lead_scoring_rules version now serving as fallback
    kind: str  # rules | base_rate
    metrics: dict[str, float]
    scorer: Any


def register_lead_fallback(
    train_part: pd.DataFrame,
    holdout: pd.DataFrame,
    lineage: Lineage,
    *,
    engine: sa.Engine,
) -> FittedFallback:
    """Calibrate the rule scorer on the training part (the base rate when its holdout ROC AUC is
    below 0.55), register it as a version of ``lead_scoring_rules`` with its holdout metrics and make
    it the fallback (``champion``) when the service can load it. Its holdout accuracy is the
    incumbent of the lead gate when no champion exists."""
    import mlflow

    from neuracrm_mlops.models import lead_scoring_model as lsm
    from neuracrm_mlops.models.pyfunc_wrappers import LeadScoringPyfunc
    from neuracrm_mlops.store import ledger
    from neuracrm_mlops.training import servability

    y_train = train_part["converted"].astype(bool).to_numpy()
    y = holdout["converted"].astype(int).to_numpy()
    scorer = lsm.fit_fallback(train_part, y_train, holdout, y)
    p = scorer.predict_proba(holdout)
    metrics = evaluate(y, (p >= 0.5).astype(int), probabilities=p)
    client = registry.configure_mlflow()
    previous = registry.alias_version(client, registry.LEAD_RULES_MODEL, registry.CHAMPION)
    expected = lsm.predict(scorer, holdout)
    mlflow.set_experiment(experiment_id=registry.ensure_experiment("lead_scoring"))
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name=f"lead fallback {lineage.run_key}"):
        mlflow.log_params({"kind": scorer.kind, "train_rows": len(train_part), "holdout_rows": len(holdout)})
        data_hash = content_hash_digest(train_part["content_hash"])
        TrainingData(train_part, "leads_with_outcome_train", data_hash, targets="converted").log()
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        registered = _log_and_register(
            model_name=registry.LEAD_RULES_MODEL,
            description=LEAD_FALLBACK_DESCRIPTION,
            family_object=scorer,
            pyfunc=LeadScoringPyfunc(),
            decision=GateDecision(
                True,
                f"fallback fitted on {len(train_part)} leads ({scorer.kind}): holdout accuracy "
                f"{metrics['accuracy']:.3f}, ROC AUC {metrics.get('roc_auc', float('nan')):.3f}",
            ),
            tags={
                **lineage_tags(lineage, data_hash),
                "fallback_kind": scorer.kind,
                "holdout_accuracy": f"{metrics['accuracy']:.6f}",
            },
            semver_inputs=(registry.stable_hash(scorer.kind), registry.stable_hash(scorer.kind)),
            workdir=Path(tmp),
            verify=lambda version: servability.verify(
                registry.LEAD_RULES_MODEL, version, servability.lead_answers(holdout), expected
            ),
            interface=ModelInterface.lead(),
        )
    if registered.status != registry.CHALLENGER:
        log.error("the fitted lead fallback is not servable (%s); the previous one stays", registered.reason)
        return FittedFallback(str(previous.version) if previous else None, scorer.kind, metrics, scorer)
    _make_fallback_champion(client, registered.version)
    ledger.record_change(
        engine,
        actor=f"training:{lineage.run_key}"[:128],
        model_name=registry.LEAD_RULES_MODEL,
        action="promote",
        alias=registry.CHAMPION,
        from_version=str(previous.version) if previous else None,
        to_version=registered.version,
        weight=0.0,
        reason=f"fallback refitted at training ({scorer.kind})",
        metrics=metrics,
    )
    return FittedFallback(registered.version, scorer.kind, metrics, scorer)


def train_lead_scoring(
    lineage: Lineage,
    *,
    engine: sa.Engine | None = None,
    holdout_share: float = 0.2,
    tolerance: float = DEFAULT_TOLERANCE,
    config: Any = None,
) -> TrainingOutcome:
    """Train the lead model on leads with known outcomes, refit the fallback, gate and register."""
    from neuracrm_mlops.models import lead_scoring_model as lsm
    from neuracrm_mlops.models.pyfunc_wrappers import LeadScoringPyfunc
    from neuracrm_mlops.training import servability

    started = time.perf_counter()
    engine = engine or get_engine()
    require_current_schema(engine)
    existing = _existing(registry.LEAD_MODEL, lineage)
    if existing is not None:
        return existing
    leads = load_leads_with_outcome(engine)
    if len(leads) < MIN_LEADS_WITH_OUTCOME:
        ensure_rule_baseline()
        return TrainingOutcome(
            registry.LEAD_MODEL,
            "skipped",
            f"{len(leads)} leads with a known outcome, fewer than the {MIN_LEADS_WITH_OUTCOME} needed",
        )
    train_part, holdout = time_split(leads, "created_at", holdout_share)
    if train_part["converted"].nunique() < 2 or holdout["converted"].nunique() < 2:
        ensure_rule_baseline()
        return TrainingOutcome(
            registry.LEAD_MODEL,
            "skipped",
            "the training part or the holdout has only one outcome (all converted or none): "
            "nothing to learn or to measure",
        )
    config = config or lsm.LeadModelConfig()
    model = lsm.train(train_part, train_part["converted"].astype(bool), config)
    y = holdout["converted"].astype(int).to_numpy()

    def score(scorer: Any) -> tuple[dict[str, float], np.ndarray]:
        p = scorer.predict_proba(holdout)
        return evaluate(y, (p >= 0.5).astype(int), probabilities=p), p

    metrics, model_p = score(model)
    fallback = register_lead_fallback(train_part, holdout, lineage, engine=engine)
    fallback_p = fallback.scorer.predict_proba(holdout)
    champion_metrics, incumbent, decision = gate_against_incumbent(
        registry.LEAD_MODEL,
        lambda champion: score(champion)[0],
        metrics,
        tolerance,
        fallback=(f"the fallback ({fallback.kind})", fallback.metrics["accuracy"]),
        family="lead_scoring",
    )
    expected = lsm.predict(model, holdout)
    record = TrainingRecord(
        model_name=registry.LEAD_MODEL,
        experiment="lead_scoring",
        description="Probability that a lead converts: calibrated gradient boosting, six factor groups.",
        family_object=model,
        pyfunc=LeadScoringPyfunc(),
        decision=decision,
        lineage=lineage,
        data_hash=content_hash_digest(leads["content_hash"]),
        params={
            **config.as_params(),
            "holdout_share": holdout_share,
            "train_rows": len(train_part),
            "holdout_rows": len(holdout),
            "custom_attributes": ",".join(model.attribute_numeric + model.attribute_categorical) or "none",
            "fallback_kind": fallback.kind,
        },
        metrics={"": metrics, "fallback_": fallback.metrics, "champion_": champion_metrics or {}},
        semver_inputs=(registry.stable_hash(model.feature_schema), registry.stable_hash(config.as_params())),
        plots=lambda workdir: _lead_plots(workdir, y, model_p, fallback_p),
        reference=reference_profile(train_part, lsm.NUMERIC_COLUMNS, lsm.CATEGORICAL_COLUMNS),
        verify=lambda version: servability.verify(
            registry.LEAD_MODEL, version, servability.lead_answers(holdout), expected
        ),
        interface=ModelInterface.lead(),
        # the snapshot (training part and holdout, split by time), under the data_snapshot_hash tag
        training_data=TrainingData(
            leads, "leads_with_outcome", content_hash_digest(leads["content_hash"]), "converted"
        ),
        incumbent=incumbent,
        family="lead_scoring",
        notes=list(getattr(model, "feature_notes", [])),
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
    from neuracrm_mlops.training import servability

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
        return evaluate(list(holdout["sentiment_label"]), predicted)

    metrics = score(candidate)
    vader_metrics = metrics if candidate is vader else score(vader)
    champion_metrics, incumbent, decision = gate_against_incumbent(
        registry.SENTIMENT_MODEL,
        score,
        metrics,
        tolerance,
        fallback=("the VADER fallback", vader_metrics["accuracy"]),
        family="sentiment",
    )
    texts = [str(t) for t in holdout["text"]]
    expected = sm.predict(candidate, texts)
    record = TrainingRecord(
        model_name=registry.SENTIMENT_MODEL,
        experiment="sentiment",
        description="Sentiment of interaction text: negative / neutral / positive.",
        family_object=candidate,
        pyfunc=SentimentPyfunc(),
        decision=decision,
        lineage=lineage,
        data_hash=content_hash_digest(frame["content_hash"]),
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
        # what the service logs per text (predictor._text_features): its length, for the drift check
        reference=reference_profile(
            pd.DataFrame({"chars": train_part["text"].astype(str).str.len()}), ["chars"], []
        ),
        verify=lambda version: servability.verify(
            registry.SENTIMENT_MODEL, version, servability.sentiment_answers(texts), expected
        ),
        interface=ModelInterface.sentiment(),
        training_data=TrainingData(
            frame, "labelled_interactions", content_hash_digest(frame["content_hash"]), "sentiment_label"
        ),
        incumbent=incumbent,
        family="sentiment",
    )
    return record_and_register(record, started)
