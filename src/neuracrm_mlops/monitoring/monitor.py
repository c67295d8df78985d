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
Drift, bias and health breaches raise warning alerts about the champion, which keeps serving.

Every accuracy figure names its window and count (``LiveWindow``): "live accuracy 0.544 over the last
2,800 labelled outcomes (window 2026-12-05T06:10:00Z..2026-12-05T06:46:00Z,
NEURACRM_MONITOR_WINDOW_HOURS=168)", in the alert's title and message and as metrics.

A check that could not run (no reference profile, MLflow unreadable, the bias attribute absent from
the served features) raises its own ``check_failed`` warning naming the check, the version and the
error: never silence, never read as "no drift".

Alert lifecycle (``neuracrm_mlops.store.alerts``): a condition alert (drift, bias, serving health,
check_failed, accuracy below the floor without a rollback) is resolved automatically, with a note,
when a later pass finds the condition cleared, and when its version no longer serves (rolled back,
replaced, its canary stopped). A pass that rolls the champion back checks nothing more on the version
it took out of service. Alerts about an action taken (the rollback, a failed canary) stay open until
acknowledged and resolved by a person.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops.families import FAMILIES, MonitoringChecks, find_family
from neuracrm_mlops.release import rollout
from neuracrm_mlops.release.decisions import (
    PreviousMeasurement,
    RollbackVerdict,
    decide_live_accuracy,
    decide_rollback_target,
)
from neuracrm_mlops.release.live_stats import (
    labelled,
    load_outcomes,
    load_predictions,
    predicted_label,
    stats_from,
)
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.alerts import raise_alert, resolve_cleared, resolve_not_serving
from neuracrm_mlops.store.db.schema import utcnow

log = logging.getLogger(__name__)

# the shared models (one per family, for every organization): a monitoring pass each; the families
# whose checks run per organization get ``monitor_forecasts`` (one pass per organization's champion),
# voice scenarios ``release.scenario_rollout.monitor`` (``ops.pipelines.monitor_family``)
MONITORED_MODELS = tuple(f.registered_name() for f in FAMILIES.values() if f.naming == "shared")
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
RUNBOOK_CHECK_FAILED = {
    "drift": (
        "The drift check needs the version's reference profile (reference/features.json in its MLflow "
        "run, written at training). Check that MLflow answers (MLFLOW_TRACKING_URI) and that the run "
        "holds the artifact; a version trained before profiles existed needs a retrain "
        "(`neuracrm-mlops train MODEL`). Until then nothing is known about input drift."
    ),
    "bias": (
        "The bias check reads NEURACRM_BIAS_ATTRIBUTE from the served features. Check that the variable "
        "names a feature the clients send (default region) and that the requests carry it; until then "
        "nothing is known about fairness across groups."
    ),
}
DRIFT_CHECK, BIAS_CHECK = "drift", "bias"


@dataclass(frozen=True)
class LiveWindow:
    """The stretch of predictions live accuracy is measured over: ``[start, end]``, the last
    ``hours`` (``NEURACRM_MONITOR_WINDOW_HOURS``)."""

    start: dt.datetime
    end: dt.datetime
    hours: float

    @classmethod
    def ending(cls, end: dt.datetime, hours: float) -> LiveWindow:
        return cls(end - dt.timedelta(hours=hours), end, hours)

    def text(self) -> str:
        return (
            f"window {_stamp(self.start)}..{_stamp(self.end)}, NEURACRM_MONITOR_WINDOW_HOURS={self.hours:g}"
        )

    def as_metrics(self) -> dict[str, Any]:
        return {
            "window_start": _stamp(self.start),
            "window_end": _stamp(self.end),
            "window_hours": self.hours,
        }


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def accuracy_text(accuracy: float | None, outcomes: int, window: LiveWindow) -> str:
    """``live accuracy 0.544 over the last 2,800 labelled outcomes (window ..., NEURACRM_...=168)``:
    how the monitor, its alerts and the demo state a live accuracy."""
    shown = "n/a" if accuracy is None else f"{accuracy:.3f}"
    return f"live accuracy {shown} over the last {outcomes:,} labelled outcomes ({window.text()})"


@dataclass(frozen=True)
class LiveAccuracy:
    version: str
    accuracy: float | None
    outcomes: int
    window: LiveWindow

    def text(self) -> str:
        return accuracy_text(self.accuracy, self.outcomes, self.window)


def live_accuracy(
    engine: sa.Engine, name: str, version: str, *, end: dt.datetime | None = None
) -> LiveAccuracy:
    """``version``'s live accuracy exactly as ``monitor_model`` measures it: over the predictions of
    the last ``NEURACRM_MONITOR_WINDOW_HOURS`` up to ``end`` (now), joined with their outcomes."""
    from neuracrm_mlops.config import get_settings

    window = LiveWindow.ending(end or utcnow(), get_settings().monitor_window_hours)
    predictions = load_predictions(engine, name, since=window.start)
    predictions = predictions[predictions["created_at"] <= window.end] if len(predictions) else predictions
    stats = stats_from(name, [version], predictions, load_outcomes(engine, name))[version]
    return LiveAccuracy(version, stats.accuracy, stats.outcomes, window)


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
    window: dict[str, Any] = field(default_factory=dict)
    # checks that could not run: check -> error, and their check_failed alerts (kept apart from
    # ``alerts``, the findings about the model)
    check_failures: dict[str, str] = field(default_factory=dict)
    check_alerts: list[int] = field(default_factory=list)
    resolved_alerts: list[int] = field(default_factory=list)
    drift: dict[str, Any] | None = None
    bias: dict[str, Any] | None = None
    health: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _engine(engine: sa.Engine | None) -> sa.Engine:
    from neuracrm_mlops.store.db.engine import get_engine

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
    window = LiveWindow.ending(utcnow(), settings.monitor_window_hours)
    predictions = load_predictions(engine, name, since=window.start)
    outcomes = load_outcomes(engine, name)
    stats = stats_from(name, [champion], predictions, outcomes)[champion]
    verdict = decide_live_accuracy(
        stats.accuracy,
        stats.outcomes,
        floor=floor,
        min_outcomes=rollout.min_outcomes_for(name),
    )
    measured = accuracy_text(stats.accuracy, stats.outcomes, window)
    reason = {
        "below_floor": f"{measured} is below the floor {floor:.2f}",
        "ok": f"{measured} is at or above the floor {floor:.2f}",
    }.get(verdict.verdict, f"{verdict.reason} ({window.text()})")
    report = MonitorReport(name, champion, verdict.verdict, stats.accuracy, stats.outcomes, reason)
    report.window = window.as_metrics()
    report.accuracy_by_org = _accuracy_by_org(predictions, outcomes, name, champion)
    links = {**registry.version_links(name, champion), **({"dag_run": dag_run_url} if dag_run_url else {})}
    if verdict.below_floor:
        _roll_back(
            engine,
            report,
            actor=actor,
            links=links,
            stats={**asdict(stats), "floor": floor, **window.as_metrics()},
            predictions=predictions,
            outcomes=outcomes,
        )
    elif verdict.verdict == "ok":
        _cleared(engine, report, f"accuracy_below_floor:{name}:{champion}", f"v{champion}'s {reason}")
    if report.rolled_back_to is None:  # a version this pass took out of service is not checked further
        _check_serving_champion(engine, report, champion_version, predictions, outcomes, links, settings)
    _retire_alerts_of_versions_not_serving(engine, client, report)
    return report


def checks_for(name: str) -> MonitoringChecks:
    """The monitoring checks of ``name``'s family (health and drift for a model of no registered family)."""
    family = find_family(name)
    return family.checks if family is not None else MonitoringChecks(bias=False)


def _check_serving_champion(
    engine: sa.Engine,
    report: MonitorReport,
    champion_version: Any,
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame,
    links: dict[str, str],
    settings: Any,
) -> None:
    """Health, drift and bias of the champion that serves: a warning per breach, ``check_failed`` per
    check that could not run, and the open alerts whose condition has cleared resolved."""
    name, champion = report.model_name, str(champion_version.version)
    checks = checks_for(name)
    if checks.health:
        report.health = _health(predictions, champion)
        _warn(engine, report, links)

    if checks.drift:
        drift_result = _drift(predictions, champion_version, name)
        report.drift = drift_result.report
        if drift_result.error is not None:
            _check_failed(engine, report, DRIFT_CHECK, drift_result.error, links)
        elif drift_result.report is not None:
            _check_ran(engine, report, DRIFT_CHECK)
            drifted = drift_result.report["drifted_features"]
            if drifted:
                tested = drift_result.report["tested_features"]
                _warning_alert(
                    engine,
                    report,
                    kind="data_drift",
                    title=(
                        f"{name} v{champion}: input drift in {len(drifted)} of {tested} tested features "
                        f"({', '.join(drifted)})"
                    ),
                    message=drift_result.report.get(
                        "summary", "features drifted from the training reference"
                    ),
                    metrics={
                        "drifted_features": drifted,
                        "tested_features": tested,
                        "served_rows": drift_result.report["served_rows"],
                        **drift_result.report["window"],
                    },
                    runbook=RUNBOOK_DRIFT,
                    links=links,
                )
            elif drift_result.report["tested_features"]:
                _cleared(
                    engine,
                    report,
                    f"data_drift:{name}:{champion}",
                    f"the next drift check of v{champion} found no drift in "
                    f"{drift_result.report['tested_features']} tested features over "
                    f"{drift_result.report['served_rows']:,} served rows",
                )

    if checks.bias:
        bias_result = _bias(predictions, outcomes, name, champion, settings.bias_attribute)
        report.bias = bias_result.report
        if bias_result.error is not None:
            _check_failed(engine, report, BIAS_CHECK, bias_result.error, links)
        elif bias_result.report is not None:
            _check_ran(engine, report, BIAS_CHECK)
            if bias_result.report.get("breaches"):
                _warning_alert(
                    engine,
                    report,
                    kind="bias",
                    title=f"{name} v{champion}: fairness breach across {bias_result.report['attribute']}",
                    message="; ".join(bias_result.report["breaches"]),
                    metrics={k: v for k, v in bias_result.report.items() if k != "groups"},
                    runbook=RUNBOOK_BIAS,
                    links=links,
                )
            elif (
                bias_result.report.get("demographic_parity_difference") is not None
                or bias_result.report.get("equal_opportunity_difference") is not None
            ):
                _cleared(
                    engine,
                    report,
                    f"bias:{name}:{champion}",
                    f"the next bias check of v{champion} across {bias_result.report['attribute']} found "
                    f"no difference above {BIAS_THRESHOLD:.2f}",
                )


def _cleared(engine: sa.Engine, report: MonitorReport, dedup_key: str, note: str) -> None:
    resolved = resolve_cleared(engine, dedup_key, note=f"condition cleared: {note}")
    if resolved is not None:
        report.resolved_alerts.append(resolved)


def _check_failed(
    engine: sa.Engine, report: MonitorReport, check: str, error: str, links: dict[str, str]
) -> None:
    """A check that could not run: its own warning, naming the check, the version and the error."""
    name, version = report.model_name, report.champion
    log.warning("%s v%s: the %s check could not run: %s", name, version, check, error)
    report.check_failures[check] = error
    alert = raise_alert(
        engine,
        kind="check_failed",
        severity="warning",
        title=f"{name} v{version}: the {check} check could not run",
        message=f"the {check} check of {name} v{version} could not run: {error}",
        dedup_key=f"check_failed:{check}:{name}:{version}",
        model_name=name,
        model_version=version,
        organization_id=rollout.organization_of(name),
        metrics={"check": check, "error": error, **report.window},
        action_taken=f"none: nothing is known about {check} this pass; the model keeps serving",
        runbook=RUNBOOK_CHECK_FAILED[check],
        links=links,
    )
    report.check_alerts.append(alert.id)
    report.warnings.append(f"the {check} check could not run: {error}")


def _check_ran(engine: sa.Engine, report: MonitorReport, check: str) -> None:
    _cleared(
        engine,
        report,
        f"check_failed:{check}:{report.model_name}:{report.champion}",
        f"the {check} check of v{report.champion} ran again",
    )


def _retire_alerts_of_versions_not_serving(engine: sa.Engine, client: Any, report: MonitorReport) -> None:
    """Resolve the condition alerts of versions that serve no more (neither champion nor challenger),
    with a note from the promotion ledger saying why."""
    name = report.model_name
    try:
        serving = {
            str(version.version)
            for alias in (registry.CHAMPION, registry.CHALLENGER)
            if (version := registry.alias_version(client, name, alias)) is not None
        }
    except Exception as exc:  # the registry is unreadable: leave the alerts as they are, say so
        log.error("%s: the serving versions could not be read, no alert retired: %s", name, exc)
        report.warnings.append(f"serving versions unreadable, no alert retired: {exc}")
        return
    if not serving:
        return
    resolved = resolve_not_serving(
        engine, name, serving, note_for=lambda version: not_serving_note(engine, name, version, serving)
    )
    report.resolved_alerts += resolved


def not_serving_note(engine: sa.Engine, name: str, version: str, serving: set[str]) -> str:
    """Why ``version`` serves no more, from the latest ledger row that moved it out."""
    from neuracrm_mlops.store.ledger import latest_entries

    for entry in latest_entries(engine, model_name=name, limit=200):
        if entry.from_version != version or entry.action not in ("rollback", "promote", "reject", "abort"):
            continue
        when = entry.created_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        who = entry.actor.split("/")[0]
        if entry.action == "rollback":
            how = f"rolled back to v{entry.to_version}"
        elif entry.action == "promote":
            how = f"replaced by v{entry.to_version} (promoted)"
        else:
            how = f"its canary was stopped ({entry.action})"
        return f"v{version} no longer serves: {how} at {when} by {who}"
    now_serving = ", ".join(f"v{v}" for v in sorted(serving))
    return f"v{version} no longer serves: {name} is served by {now_serving}"


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
    dropped = f"v{champion}'s {report.reason}"
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
        title=f"{name} v{champion}: {report.reason}",
        message=report.reason,
        dedup_key=f"accuracy_below_floor:{name}:{champion}",
        model_name=name,
        model_version=champion,
        organization_id=rollout.organization_of(name),
        metrics={
            "accuracy": report.accuracy,
            "floor": floor,
            "outcomes": report.outcomes,
            **report.window,
            "rolled_back_to": report.rolled_back_to,
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
            title=f"{report.model_name} v{report.champion}: serving health breach",
            message=f"{'; '.join(breaches)} over {health['requests']:,} requests ({_window_of(report)})",
            metrics={**health, **report.window},
            runbook=RUNBOOK_HEALTH,
            links=links,
        )
    else:
        _cleared(
            engine,
            report,
            f"serving_health:{report.model_name}:{report.champion}",
            f"latency, error and fallback rates within their limits over {health['requests']:,} requests "
            f"({_window_of(report)})",
        )


def _window_of(report: MonitorReport) -> str:
    window = report.window
    return (
        f"window {window.get('window_start')}..{window.get('window_end')}, "
        f"NEURACRM_MONITOR_WINDOW_HOURS={window.get('window_hours')}"
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


@dataclass(frozen=True)
class CheckResult:
    """A check's outcome: ``report`` when it ran, ``error`` when it could not; both None when there
    was nothing to check (no served rows of the version in the window, or not a check of this model)."""

    report: dict[str, Any] | None = None
    error: str | None = None


def _served_by(predictions: pd.DataFrame, version: str) -> pd.DataFrame:
    if predictions.empty:
        return predictions
    return predictions[(predictions["model_version"] == version) & ~predictions["fallback"].astype(bool)]


def _served_window(served: pd.DataFrame) -> dict[str, Any]:
    created = pd.to_datetime(served["created_at"], utc=True)
    return {"served_from": _stamp(created.min()), "served_until": _stamp(created.max())}


def _drift(predictions: pd.DataFrame, champion_version: Any, name: str) -> CheckResult:
    """Drift of the champion's served features against its training reference profile (only for the
    families whose ``checks.drift`` is on: forecast models take no input features to compare)."""
    from neuracrm_mlops.quality import drift

    version = str(champion_version.version)
    served = _served_by(predictions, version)
    if served.empty:
        return CheckResult()
    if not champion_version.run_id:
        return CheckResult(error=f"v{version} has no MLflow run, so no reference profile to compare with")
    location = f"runs:/{champion_version.run_id}/{drift.REFERENCE_ARTIFACT}"
    try:
        import mlflow.artifacts

        profile = mlflow.artifacts.load_dict(location)
    except Exception as exc:
        return CheckResult(
            error=f"reference profile {location} could not be read: {type(exc).__name__}: {_short(exc)}"
        )
    try:
        current = pd.DataFrame([dict(f or {}) for f in served["features"]])
        report = drift.drift_against_profile(profile, current)
    except Exception as exc:  # a malformed profile or features: the check did not run
        return CheckResult(error=f"drift against {location} failed: {type(exc).__name__}: {_short(exc)}")
    tested = len(report.with_status("ok")) + len(report.with_status("drift"))
    return CheckResult(
        {
            **report.to_dict(),
            "summary": report.summary(),
            "drifted_features": report.drifted_features,
            "tested_features": tested,
            "served_rows": len(served),
            "window": _served_window(served),
        }
    )


def _short(exc: Exception, limit: int = 500) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bias(
    predictions: pd.DataFrame, outcomes: pd.DataFrame, name: str, champion: str, attribute: str
) -> CheckResult:
    """Demographic parity and equal opportunity of a model whose outputs are a converted / not converted
    label (the families whose ``checks.bias`` is on: lead scoring) across ``attribute``."""
    from neuracrm_mlops.quality import drift

    served = _served_by(predictions, champion)
    if served.empty:
        return CheckResult()
    served = served.drop_duplicates(["organization_id", "entity_id"], keep="last")
    frame = pd.DataFrame(
        {
            "organization_id": served["organization_id"].to_numpy(),
            "entity_id": served["entity_id"].to_numpy(),
            attribute: [(f or {}).get(attribute) for f in served["features"]],
            "predicted": [int(predicted_label(name, o) == "converted") for o in served["output"]],
        }
    )
    frame = frame[frame[attribute].notna()]
    if frame.empty:
        return CheckResult(
            error=(
                f"none of the {len(served):,} served predictions of v{champion} in the window carries the "
                f"attribute {attribute!r} (NEURACRM_BIAS_ATTRIBUTE)"
            )
        )
    if not outcomes.empty:
        frame = frame.merge(outcomes[["organization_id", "entity_id", "label"]], how="left")
        frame["outcome"] = (frame["label"] == "converted").astype(int).where(frame["label"].notna())
    report = drift.bias_metrics(
        frame,
        attribute=attribute,
        prediction="predicted",
        outcome="outcome" if "outcome" in frame and frame["outcome"].notna().any() else None,
    )
    return CheckResult(
        {
            **report.to_dict(),
            "attribute": attribute,
            "breaches": report.breaches(BIAS_THRESHOLD, BIAS_THRESHOLD),
        }
    )


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
