"""Voice scenarios through the family DAGs in real runs (`airflow dags test`): train_voice_scenario
registers the scenario files (a changed file -> a challenger, announced), rollout_voice_scenario
moves its canary 10 -> 50 -> 100% on the calls analysed while the run bakes and promotes it, and
monitor_models (task monitor_voice_scenarios) rolls a champion below the floor back to the
previous version and pages once. (The rules themselves: tests/integration/test_scenario_rollout.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from airflow_harness import REPO, AirflowHarness
from voice_scenarios import PROMPT, SCENARIO, log_calls

from neuracrm_mlops.release import scenario_rollout
from neuracrm_mlops.store import ledger, prompt_registry
from neuracrm_mlops.store.alerts import list_alerts
from neuracrm_mlops.store.registry import configure_mlflow

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("airflow_dags")]


class CallTraffic:
    """Analysed calls while a DAG run bakes: every half second, a few calls per version the scenario
    routes to now (champion; challenger while its canary runs), 90% successful."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine, self.client = engine, configure_mlflow()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self.stop.wait(0.5):
                live = prompt_registry.live_scenario(self.client, SCENARIO)
                if live.champion is not None:
                    log_calls(self.engine, live.champion.version, "champion", 3, 0)
                if live.challenger is not None and live.canary_weight > 0:
                    log_calls(self.engine, live.challenger.version, "challenger", 3, 0)
        except BaseException as exc:  # reported by __exit__
            self.error = exc

    def __enter__(self) -> CallTraffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert self.error is None, self.error


def test_scenarios_are_registered_rolled_out_and_rolled_back_by_the_family_dags(
    airflow: AirflowHarness, neuracrm_home: Path, home_engine: sa.Engine, tmp_path: Path
) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    content = dict(yaml.safe_load((REPO / "scenarios" / f"{SCENARIO}.yaml").read_text()))
    (scenarios / f"{SCENARIO}.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    env = airflow.env(
        neuracrm_home,
        NEURACRM_SCENARIOS_DIR=str(scenarios),
        NEURACRM_MIN_OUTCOMES="5",
        NEURACRM_BAKE_POKE_SECONDS="1",
    )
    client = configure_mlflow()

    state, log = airflow.run_dag("train_voice_scenario", env)
    assert state == "success", log[-3000:]
    assert prompt_registry.version_by_alias(client, SCENARIO, "champion").version == "1"  # type: ignore[union-attr]
    content["template"] += "\nAlways thank the person for their time before you hang up.\n"
    (scenarios / f"{SCENARIO}.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    state, log = airflow.run_dag("train_voice_scenario", env)
    assert state == "success", log[-3000:]
    assert "asset event neuracrm://registry/voice_scenario/challenger" in log
    assert prompt_registry.version_by_alias(client, SCENARIO, "challenger").version == "2"  # type: ignore[union-attr]

    with CallTraffic(home_engine):
        state, log = airflow.run_dag("rollout_voice_scenario", env)
    assert state == "success", log[-3000:]
    live = prompt_registry.live_scenario(client, SCENARIO)
    assert live.champion is not None and live.previous is not None and live.challenger is None
    assert (live.champion.version, live.previous.version) == ("2", "1")
    moves = [
        (e.action, e.weight, e.actor.split("/")[0])
        for e in reversed(ledger.latest_entries(home_engine, model_name=PROMPT))
        if e.actor.startswith("dag:rollout")
    ]
    assert moves == [
        ("canary", 0.1, "dag:rollout_voice_scenario"),
        ("canary", 0.5, "dag:rollout_voice_scenario"),
        ("canary", 1.0, "dag:rollout_voice_scenario"),
        ("promote", 0.0, "dag:rollout_voice_scenario"),
    ]

    # v2 fails in the field (below half of its calls succeed); v1 keeps its record from the rollout
    served = scenario_rollout.call_success(home_engine, SCENARIO, "2", None)
    log_calls(home_engine, "2", "champion", 0, 2 * served.calls + 10)
    state, log = airflow.run_dag("monitor_models", env)
    assert state == "success", log[-3000:]
    live = prompt_registry.live_scenario(client, SCENARIO)
    assert live.champion is not None and live.champion.version == "1" and live.previous is None
    paged = [a for a in list_alerts(home_engine, open_only=True) if a.model_name == PROMPT]
    assert [(a.kind, a.severity, a.model_version) for a in paged] == [
        ("accuracy_below_floor", "critical", "2")
    ]
    rollback = ledger.latest_entries(home_engine, model_name=PROMPT, limit=1)[0]
    assert (rollback.action, rollback.from_version, rollback.to_version) == ("rollback", "2", "1")
    assert rollback.actor.startswith("dag:monitor_models/")
