"""Monitoring: is each served model still honest? Live accuracy, drift, bias and serving health.

``monitor_model`` (one call per model, from the hourly ``monitor_models`` DAG or the CLI):
- **Live accuracy** of the champion over the last ``NEURACRM_MONITOR_WINDOW_HOURS`` (default 168)
  of predictions joined with their outcomes, overall and per organization. Below the floor (0.80)
  with at least ``NEURACRM_MIN_OUTCOMES`` outcomes: the rollback target is read from the champion
  alias history (``rollout.plan_rollback``); when it is measured better (``decide_rollback_target``)
  ``rollout.rollback`` puts it back (under a per-model lock, only if the champion is still the
  version judged) and the result says retraining is needed (the DAG triggers it). One critical
  alert either way, deduplicated per model and version: repeated runs count up and do not page
  again, unless the pass rolled back (news even for an open incident). Its action and runbook
  lines are those of the latest pass, with the versions, the numbers and the exact commands.
- **Drift** of the served features against the reference profile stored with the champion version
  at training (``reference/features.json``): KS / chi-square with Benjamini-Hochberg correction, PSI.
- **Bias** across ``NEURACRM_BIAS_ATTRIBUTE`` (default ``region``): demographic parity and equal
  opportunity differences against 0.10.
- **Serving health**: p95 latency and the error and fallback rates from the prediction log.
Drift, bias and health breaches raise warning alerts.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops import registry, rollout
from neuracrm_mlops.alerts import raise_alert
from neuracrm_mlops.db.schema import utcnow
from neuracrm_mlops.live_stats import (
    labelled,
    load_outcomes,
    load_predictions,
    predicted_label,
    stats_from,
)
from neuracrm_mlops.rollout_decisions import (
    PreviousMeasurement,
    RollbackVerdict,
    decide_live_accuracy,
    decide_rollback_target,
)

log = logging.getLogger(__name__)

MONITORED_MODELS = (registry.LEAD_MODEL, registry.SENTIMENT_MODEL)
BIAS_THRESHOLD = 0.10
P95_LIMIT_MS = 250.0
ERROR_RATE_LIMIT = 0.05
FALLBACK_RATE_LIMIT = 0.20
RUNBOOK_DRIFT = (
    "Inputs no longer look like the training data. Check recent imports and upstream CRM changes; "
    "if the change is real, retrain (`neuracrm-mlops train MODEL`) and roll the new version out."
)
RUNBOOK_BIAS = (
    "Positive-prediction or true-positive rates differ across groups beyond the threshold. Review the "
    "group rates and the features behind them before the next promotion; do not roll out blindly."
)
RUNBOOK_HEALTH = (
    "The service is slow or failing over to fallbacks. Check /status and the service log for load "
    "errors, MLflow reachability and CPU; scale replicas if latency is load-driven."
)


@dataclass
class MonitorReport:
    model_name: str
    champion: str | None
    verdict: str  # ok | below_floor | insufficient_data | no_champion
    accuracy: float | None
    outcomes: int
    reason: str
    rolled_back_to: str | None = None
    retrain: bool = False
    alerts: list[int] = field(default_factory=list)
    accuracy_by_org: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] | None = None
    bias: dict[str, Any] | None = None
    health: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _engine(engine: sa.Engine | None) -> sa.Engine:
    from neuracrm_mlops.db.engine import get_engine

    return engine or get_engine()


def monitor_model(
    name: str, *, actor: str, engine: sa.Engine | None = None, dag_run_url: str | None = None
) -> MonitorReport:
    """One monitoring pass over ``name``; rolls back below the floor. Returns what it found and did."""
    from neuracrm_mlops.config import get_settings

    engine = _engine(engine)
    settings = get_settings()
    client = registry.configure_mlflow()
    champion_version = registry.alias_version(client, name, registry.CHAMPION)
    if champion_version is None:
        return MonitorReport(name, None, "no_champion", None, 0, f"{name} has no champion to monitor")
    champion = str(champion_version.version)
    floor = rollout.floor_of(name)
    since = utcnow() - dt.timedelta(hours=settings.monitor_window_hours)
    predictions = load_predictions(engine, name, since=since)
    outcomes = load_outcomes(engine, name)
    stats = stats_from(name, [champion], predictions, outcomes)[champion]
    verdict = decide_live_accuracy(
        stats.accuracy,
        stats.outcomes,
        floor=floor,
        min_outcomes=rollout.min_outcomes_for(name),
    )
    report = MonitorReport(name, champion, verdict.verdict, stats.accuracy, stats.outcomes, verdict.reason)
    report.accuracy_by_org = _accuracy_by_org(predictions, outcomes, name, champion)
    links = {**registry.version_links(name, champion), **({"dag_run": dag_run_url} if dag_run_url else {})}
    if verdict.below_floor:
        _roll_back(
            engine,
            report,
            actor=actor,
            links=links,
            stats={**asdict(stats), "floor": floor},
            predictions=predictions,
            outcomes=outcomes,
        )
    report.health = _health(predictions, champion)
    _warn(engine, report, links)
    report.drift = _drift(predictions, champion_version, name)
    if report.drift and report.drift.get("drifted_features"):
        _warning_alert(
            engine,
            report,
            kind="data_drift",
            title=f"{name} v{champion}: input drift in {', '.join(report.drift['drifted_features'])}",
            message=report.drift.get("summary", "features drifted from the training reference"),
            metrics={"drifted_features": report.drift["drifted_features"]},
            runbook=RUNBOOK_DRIFT,
            links=links,
        )
    report.bias = _bias(predictions, outcomes, name, champion, settings.bias_attribute)
    if report.bias and report.bias.get("breaches"):
        _warning_alert(
            engine,
            report,
            kind="bias",
            title=f"{name} v{champion}: fairness breach across {report.bias['attribute']}",
            message="; ".join(report.bias["breaches"]),
            metrics={k: v for k, v in report.bias.items() if k != "groups"},
            runbook=RUNBOOK_BIAS,
            links=links,
        )
    return report


def measure_previous(
    client: Any,
    name: str,
    version: str,
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame,
    champion: str,
    *,
    rolled_back_before: bool = False,
) -> PreviousMeasurement:
    """The rollback target's accuracy on the champion's judged entities (its own logged predictions
    for them: shadow scoring, or the entities it served too), else its recorded holdout accuracy.
    ``rolled_back_before``: the target was itself rolled back as champion (a last resort)."""
    joined = labelled(predictions, outcomes, name)
    judged = joined[joined["model_version"] == champion][["organization_id", "entity_id"]]
    mine = joined[joined["model_version"] == version].merge(judged, on=["organization_id", "entity_id"])
    if len(mine) >= rollout.min_outcomes_for(name):
        same = float((mine["predicted"] == mine["label"]).mean())
        return PreviousMeasurement(version, same, "same_outcomes", len(mine), rolled_back_before)
    accuracy: float | None
    try:
        registered = client.get_model_version(name, version)
        tags = dict(registered.tags or {})
        recorded = tags.get("holdout_accuracy") or tags.get("backtest_accuracy")
        if recorded is None and registered.run_id:  # versions from before the tag: the run's metric
            recorded = client.get_run(registered.run_id).data.metrics.get("accuracy")
        accuracy = float(recorded) if recorded is not None else None
    except Exception as exc:  # an unreadable registry entry is "unmeasured", never "better"
        log.warning("%s v%s: recorded holdout accuracy unreadable: %s", name, version, exc)
        accuracy = None
    return PreviousMeasurement(
        version,
        accuracy,
        "recorded_holdout" if accuracy is not None else "unmeasured",
        rolled_back_before=rolled_back_before,
    )


def _roll_back(
    engine: sa.Engine,
    report: MonitorReport,
    *,
    actor: str,
    links: dict[str, str],
    stats: dict[str, Any],
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame,
) -> None:
    """Roll the failing champion back when the target from the alias history is measured better,
    then raise the critical alert, whose action and runbook lines say what this pass did."""
    name, champion = report.model_name, report.champion
    assert champion is not None and report.accuracy is not None
    client = registry.configure_mlflow()
    plan = rollout.plan_rollback(name, champion, engine=engine, client=client)
    target = plan.version
    previous = (
        measure_previous(
            client,
            name,
            target,
            predictions,
            outcomes,
            champion,
            rolled_back_before=plan.rolled_back_before,
        )
        if target is not None
        else None
    )
    verdict = (
        decide_rollback_target(report.accuracy, previous, min_outcomes=rollout.min_outcomes_for(name))
        if previous is not None
        else RollbackVerdict(False, plan.reason)
    )
    floor = stats.get("floor")
    stats = {
        **stats,
        "previous_version": target,
        "previous_accuracy": previous.accuracy if previous else None,
        "previous_basis": previous.basis if previous else None,
        "previous_rolled_back_before": plan.rolled_back_before,
    }
    dropped = (
        f"v{champion}'s live accuracy {report.accuracy:.3f} over {report.outcomes} outcomes is below "
        f"the floor {floor:.2f}"
        if isinstance(floor, float | int)
        else report.reason
    )
    why_target = "" if target is None else f"{plan.reason}; "  # else the verdict is plan.reason
    action = f"no automatic rollback: {why_target}{verdict.reason}; v{champion} keeps serving"
    runbook = rollout.runbook_without_rollback(name, champion=champion, candidate=target)
    if verdict.roll_back:
        assert target is not None
        try:
            result = rollout.rollback(
                name,
                actor=actor,
                reason=f"live accuracy below the floor: {report.reason}; {verdict.reason}",
                to_version=target,
                expected_champion=champion,
                metrics=stats,
                engine=engine,
            )
        except rollout.RolloutError as exc:
            action = f"no automatic rollback: {exc}; v{champion} keeps serving"
        else:
            if result.action == "noop":  # another monitor already rolled this version back
                report.reason = result.reason
                return
            restored = str(result.champion)
            report.rolled_back_to = restored
            report.retrain = True
            action = (
                f"champion rolled back from v{champion} to v{restored} automatically: {dropped}; "
                f"{plan.reason}; {verdict.reason}; {rollout.retraining_line(name, actor)}"
            )
            runbook = rollout.runbook_after_rollback(name, rolled_back=champion, restored=restored)
    if report.rolled_back_to is None:
        report.warnings.append(action)
    alert = raise_alert(
        engine,
        kind="accuracy_below_floor",
        severity="critical",
        title=f"{name} v{champion}: live accuracy below the floor",
        message=report.reason,
        dedup_key=f"accuracy_below_floor:{name}:{champion}",
        model_name=name,
        model_version=champion,
        organization_id=rollout.organization_of(name),
        metrics={
            "accuracy": report.accuracy,
            "floor": floor,
            "outcomes": report.outcomes,
            "previous_version": target,
            "previous_accuracy": previous.accuracy if previous else None,
            "previous_basis": previous.basis if previous else None,
            **{f"accuracy_org_{org}": v["accuracy"] for org, v in list(report.accuracy_by_org.items())[:10]},
        },
        action_taken=action,
        runbook=runbook,
        links=links,
        # a rollback is news even when this incident is already open (the runbook's undo put the
        # version back, and it failed again): page again rather than only count it
        page_repeat=report.rolled_back_to is not None,
    )
    report.alerts.append(alert.id)


def _accuracy_by_org(
    predictions: pd.DataFrame, outcomes: pd.DataFrame, name: str, version: str
) -> dict[str, Any]:
    joined = labelled(predictions, outcomes, name)
    mine = joined[joined["model_version"] == version]
    return {
        str(org): {"accuracy": float((g["predicted"] == g["label"]).mean()), "outcomes": len(g)}
        for org, g in mine.groupby("organization_id")
    }


def _health(predictions: pd.DataFrame, champion: str) -> dict[str, Any]:
    if predictions.empty:
        return {"requests": 0}
    fallback = predictions["fallback"].astype(bool)
    failed = fallback & (predictions["model_version"] == champion)
    served = predictions[~fallback]
    return {
        "requests": len(predictions),
        "p95_latency_ms": float(np.percentile(served["latency_ms"], 95)) if len(served) else None,
        "error_rate": float(failed.mean()),
        "fallback_rate": float(fallback.mean()),
    }


def _warn(engine: sa.Engine, report: MonitorReport, links: dict[str, str]) -> None:
    health = report.health
    if not health.get("requests"):
        return
    breaches = []
    if (health.get("p95_latency_ms") or 0) > P95_LIMIT_MS:
        breaches.append(f"p95 latency {health['p95_latency_ms']:.0f} ms > {P95_LIMIT_MS:.0f} ms")
    if health["error_rate"] > ERROR_RATE_LIMIT:
        breaches.append(f"error rate {health['error_rate']:.1%} > {ERROR_RATE_LIMIT:.0%}")
    if health["fallback_rate"] > FALLBACK_RATE_LIMIT:
        breaches.append(f"fallback rate {health['fallback_rate']:.1%} > {FALLBACK_RATE_LIMIT:.0%}")
    if breaches:
        _warning_alert(
            engine,
            report,
            kind="serving_health",
            title=f"{report.model_name}: serving health breach",
            message="; ".join(breaches),
            metrics=health,
            runbook=RUNBOOK_HEALTH,
            links=links,
        )


def _warning_alert(
    engine: sa.Engine,
    report: MonitorReport,
    *,
    kind: str,
    title: str,
    message: str,
    metrics: dict[str, Any],
    runbook: str,
    links: dict[str, str],
) -> None:
    alert = raise_alert(
        engine,
        kind=kind,
        severity="warning",
        title=title,
        message=message,
        dedup_key=f"{kind}:{report.model_name}:{report.champion}",
        model_name=report.model_name,
        model_version=report.champion,
        organization_id=rollout.organization_of(report.model_name),
        metrics=metrics,
        action_taken="none: warning only, the model keeps serving",
        runbook=runbook,
        links=links,
    )
    report.alerts.append(alert.id)
    report.warnings.append(title)


def _drift(predictions: pd.DataFrame, champion_version: Any, name: str) -> dict[str, Any] | None:
    """Drift of the champion's served features against its training reference (None: no reference)."""
    from neuracrm_mlops import drift
    from neuracrm_mlops.training import REFERENCE_ARTIFACT

    served = predictions[
        (predictions["model_version"] == str(champion_version.version))
        & ~predictions["fallback"].astype(bool)
    ]
    if served.empty or not champion_version.run_id:
        return None
    try:
        import mlflow.artifacts

        profile = mlflow.artifacts.load_dict(f"runs:/{champion_version.run_id}/{REFERENCE_ARTIFACT}")
    except Exception:
        log.info("%s v%s has no stored reference profile: drift not checked", name, champion_version.version)
        return None
    current = pd.DataFrame(list(served["features"]))
    report = drift.drift_against_profile(profile, current)
    return {**report.to_dict(), "summary": report.summary(), "drifted_features": report.drifted_features}


def _bias(
    predictions: pd.DataFrame, outcomes: pd.DataFrame, name: str, champion: str, attribute: str
) -> dict[str, Any] | None:
    """Demographic parity and equal opportunity of the lead model across ``attribute``."""
    from neuracrm_mlops import drift

    if name != registry.LEAD_MODEL or predictions.empty:
        return None
    served = predictions[
        (predictions["model_version"] == champion) & ~predictions["fallback"].astype(bool)
    ].drop_duplicates(["organization_id", "entity_id"], keep="last")
    if served.empty:
        return None
    frame = pd.DataFrame(
        {
            "organization_id": served["organization_id"].to_numpy(),
            "entity_id": served["entity_id"].to_numpy(),
            attribute: [f.get(attribute) for f in served["features"]],
            "predicted": [int(predicted_label(name, o) == "converted") for o in served["output"]],
        }
    )
    frame = frame[frame[attribute].notna()]
    if frame.empty:
        return None
    if not outcomes.empty:
        frame = frame.merge(outcomes[["organization_id", "entity_id", "label"]], how="left")
        frame["outcome"] = (frame["label"] == "converted").astype(int).where(frame["label"].notna())
    report = drift.bias_metrics(
        frame,
        attribute=attribute,
        prediction="predicted",
        outcome="outcome" if "outcome" in frame and frame["outcome"].notna().any() else None,
    )
    return {
        **report.to_dict(),
        "attribute": attribute,
        "breaches": report.breaches(BIAS_THRESHOLD, BIAS_THRESHOLD),
    }


@dataclass
class ForecastMonitorSummary:
    organizations: int
    rolled_back: list[int] = field(default_factory=list)
    below_floor: list[int] = field(default_factory=list)
    insufficient_data: int = 0
    alerts: list[int] = field(default_factory=list)

    @property
    def retrain(self) -> bool:
        return bool(self.rolled_back)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "retrain": self.retrain}


def monitor_forecasts(*, actor: str, engine: sa.Engine | None = None) -> ForecastMonitorSummary:
    """``monitor_model`` for every organization's forecast champion (rollback per organization)."""
    engine = _engine(engine)
    client = registry.configure_mlflow()
    names = [m.name for m in registry.models_with_prefix(client) if registry.CHAMPION in (m.aliases or {})]
    summary = ForecastMonitorSummary(len(names))
    for name in sorted(names):
        report = monitor_model(name, actor=actor, engine=engine)
        org = rollout.organization_of(name)
        assert org is not None
        summary.alerts += report.alerts
        if report.verdict == "insufficient_data":
            summary.insufficient_data += 1
        elif report.verdict == "below_floor":
            summary.below_floor.append(org)
            if report.rolled_back_to:
                summary.rolled_back.append(org)
    return summary
