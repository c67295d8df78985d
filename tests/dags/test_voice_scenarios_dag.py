"""The voice_scenarios DAG in a real run (`airflow dags test`): a registered challenger's canary is
started, then judged on the call outcomes the webhooks recorded and moved to the next step. (The
rollout rules themselves: tests/integration/test_scenario_rollout.py.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from airflow_harness import REPO, AirflowHarness

from neuracrm_mlops.inference.prediction_log import prediction_row
from neuracrm_mlops.store import ledger, prompt_registry
from neuracrm_mlops.store.db.schema import Outcome, Prediction
from neuracrm_mlops.store.registry import configure_mlflow
from neuracrm_mlops.training.scenarios import register_scenario

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("airflow_dags")]
PROMPT = "voice_scenario.sales_outbound"


def _answered(engine: sa.Engine, version: str, route: str, successful: int, unsuccessful: int) -> None:
    """Calls as POST /voice/context logs them and POST /voice/events records their analysis."""
    with engine.begin() as conn:
        for label in ["successful"] * successful + ["unsuccessful"] * unsuccessful:
            context_id = uuid.uuid4().hex
            row = prediction_row(
                model_name=PROMPT,
                model_version=version,
                route=route,
                request_id=uuid.uuid4().hex,
                organization_id=1,
                entity_id=context_id,
                features={},
                output={},
                latency_ms=3.0,
                fallback=False,
            )
            conn.execute(sa.insert(Prediction).values(**row))
            conn.execute(
                sa.insert(Outcome).values(
                    model_name=PROMPT,
                    organization_id=1,
                    entity_id=context_id,
                    label=label,
                    source="retell",
                    observed_at=row["created_at"],
                )
            )


def test_the_dag_starts_a_scenario_canary_and_moves_it_on_call_success(
    airflow: AirflowHarness, neuracrm_home: Path, home_engine: sa.Engine, tmp_path: Path
) -> None:
    content = dict(yaml.safe_load((REPO / "scenarios" / "sales_outbound.yaml").read_text()))
    path = tmp_path / "sales_outbound.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    register_scenario(path, actor="test", engine=home_engine)
    content["template"] += "\nThank the person for their time before you hang up.\n"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    assert register_scenario(path, actor="test", engine=home_engine).alias == "challenger"
    env = airflow.env(neuracrm_home, NEURACRM_MIN_OUTCOMES="5")

    state, log = airflow.run_dag("voice_scenarios", env)
    assert state == "success", log[-3000:]
    client = configure_mlflow()
    assert prompt_registry.canary_weight(client, "sales_outbound") == pytest.approx(0.1)

    _answered(home_engine, "1", "champion", 9, 1)
    _answered(home_engine, "2", "challenger", 9, 1)
    state, log = airflow.run_dag("voice_scenarios", env)
    assert state == "success", log[-3000:]
    assert prompt_registry.canary_weight(client, "sales_outbound") == pytest.approx(0.5)
    moves = [
        (e.action, e.weight, e.actor.split("/")[0])
        for e in ledger.latest_entries(home_engine, model_name=PROMPT)
    ]
    assert moves[:2] == [("canary", 0.5, "dag:voice_scenarios"), ("canary", 0.1, "dag:voice_scenarios")]
