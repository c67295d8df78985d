"""Forecast rollouts by cohorts of organizations, on SQLite and PostgreSQL with a real MLflow
registry: each organization is judged on its own new actuals, a failing one is rejected alone,
the rest go 10% -> 50% -> 100% of organizations and are promoted."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.inference.prediction_log import prediction_row
from neuracrm_mlops.inference.routing import canary_cohort
from neuracrm_mlops.release import forecast_cohorts as forecast_rollout
from neuracrm_mlops.release.live_stats import version_stats
from neuracrm_mlops.release.outcomes import simulate_outcomes
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.db.schema import Prediction, PromotionLedgerEntry

ORGS = list(range(1, 61))


def _forecast(engine: sa.Engine, org: int, version: str, route: str, months: list[str]) -> None:
    output = {"points": [{"month": m, "forecast": 1000.0 + 10 * i} for i, m in enumerate(months)]}
    row = prediction_row(
        model_name=registry.forecast_model_name(org),
        model_version=version,
        route=route,
        request_id=f"fc-{org}-{version}-{months[0]}",
        organization_id=org,
        entity_id=str(org),
        features={},
        output=output,
        latency_ms=3.0,
        fallback=False,
    )
    with engine.begin() as conn:
        conn.execute(sa.insert(Prediction), [row])


def _serve_challengers(engine: sa.Engine, orgs: set[int], months: list[str], bad: int) -> None:
    for org in orgs:
        _forecast(engine, org, "2", "challenger", months)
        degrade = ["2"] if org == bad else []
        simulate_outcomes(engine, registry.forecast_model_name(org), degrade=degrade, forecast_noise=0.005)


def _aliases(client: Any, org: int) -> dict[str, str]:
    model = client.get_registered_model(registry.forecast_model_name(org))
    return {a: str(v) for a, v in model.aliases.items()}


def test_forecasts_roll_out_by_cohorts_judged_on_each_organizations_actuals(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURACRM_FORECAST_MIN_OUTCOMES", "3")
    reset_settings()
    client = registry.configure_mlflow()
    for org in ORGS:
        name = registry.forecast_model_name(org)
        registry.ensure_registered_model(client, name, "test")
        for _ in range(2):
            client.create_model_version(
                name, "file:///nonexistent", tags={"status": "test", "servable": "true"}
            )
        client.set_registered_model_alias(name, "champion", "1")
        client.set_registered_model_alias(name, "challenger", "2")
        _forecast(engine, org, "1", "champion", ["2026-01", "2026-02", "2026-03"])
        simulate_outcomes(engine, name, forecast_noise=0.005)

    started = forecast_rollout.start(actor="cli:test", engine=engine)
    assert (started.action, started.weight) == ("start", 0.1)
    first = canary_cohort(ORGS, 0.1)
    assert 1 <= len(first) < len(ORGS) // 2
    bad = min(first)
    assert not forecast_rollout.bake_ready(engine=engine)[0]  # no actuals for the challengers yet
    held = forecast_rollout.judge(actor="cli:test", engine=engine)
    assert held.action == "hold" and sorted(held.holding) == sorted(first)

    _serve_challengers(engine, first, ["2026-04", "2026-05", "2026-06"], bad)
    assert forecast_rollout.bake_ready(engine=engine)[0]
    step = forecast_rollout.judge(actor="cli:test", engine=engine)
    assert (step.action, step.weight) == ("next_step", 0.5), step
    assert step.rejected == [bad] and sorted(step.passed) == sorted(first - {bad})
    assert _aliases(client, bad) == {"champion": "1"}
    day_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    bad_stats = version_stats(engine, registry.forecast_model_name(bad), ["2"], since=day_ago)
    assert bad_stats["2"].accuracy is not None and bad_stats["2"].accuracy < 0.8

    second = canary_cohort(ORGS, 0.5) - {bad}
    assert first - {bad} <= second
    waiting = forecast_rollout.judge(actor="cli:test", engine=engine)
    assert waiting.action == "hold" and set(waiting.holding) == second - first  # newcomers need actuals
    _serve_challengers(engine, second - first, ["2026-04", "2026-05", "2026-06"], bad)
    assert forecast_rollout.judge(actor="cli:test", engine=engine).action == "next_step"

    everyone = set(ORGS) - {bad}
    _serve_challengers(engine, everyone - second, ["2026-04", "2026-05", "2026-06"], bad)
    done = forecast_rollout.judge(actor="cli:test", engine=engine)
    assert done.action == "promote" and sorted(done.promoted) == sorted(everyone)
    for org in (min(everyone), max(everyone)):
        assert _aliases(client, org) == {"champion": "2", "previous": "1"}
    with engine.connect() as conn:
        rejected = conn.execute(
            sa.select(PromotionLedgerEntry.organization_id).where(PromotionLedgerEntry.action == "reject")
        ).all()
        promotions = conn.scalar(sa.select(sa.func.count()).where(PromotionLedgerEntry.action == "promote"))
    assert [r.organization_id for r in rejected] == [bad]
    assert promotions == len(everyone)


def test_forecast_monitoring_rolls_back_only_the_organization_whose_actuals_fall_below_the_floor(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.monitoring.monitor import monitor_forecasts
    from neuracrm_mlops.store import ledger

    monkeypatch.setenv("NEURACRM_FORECAST_MIN_OUTCOMES", "3")
    reset_settings()
    client = registry.configure_mlflow()
    for org in (1, 2, 3):
        name = registry.forecast_model_name(org)
        registry.ensure_registered_model(client, name, "test")
        for version in ("1", "2"):
            # v1's recorded backtest accuracy is what a rollback to it is measured by (it has no
            # actuals of its own on v2's months)
            client.create_model_version(
                name,
                "file:///nonexistent",
                tags={"status": "test", "servable": "true", "backtest_accuracy": "0.950000"},
            )
            ledger.record_change(
                engine,
                actor="cli:test",
                model_name=name,
                organization_id=org,
                action="promote",
                alias="champion",
                to_version=version,
                reason=f"v{version}",
            )
        client.set_registered_model_alias(name, "champion", "2")
        _forecast(engine, org, "2", "champion", ["2026-04", "2026-05", "2026-06"])
        degrade = ["2"] if org == 2 else []
        simulate_outcomes(engine, name, degrade=degrade, forecast_noise=0.005)
    summary = monitor_forecasts(actor="dag:monitor_models/test", engine=engine)
    assert (summary.organizations, summary.rolled_back, summary.retrain) == (3, [2], True)
    assert _aliases(client, 2)["champion"] == "1"
    assert _aliases(client, 1)["champion"] == _aliases(client, 3)["champion"] == "2"
    again = monitor_forecasts(actor="dag:monitor_models/test", engine=engine)
    assert again.rolled_back == [] and again.insufficient_data == 1  # v1 has no actuals of its own yet
