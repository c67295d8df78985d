"""A real DAG run (`airflow dags test`) on seeded data: a corrupted batch stops at validation without
touching the champion."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow_harness import AirflowHarness

from neuracrm_mlops.store import registry
from neuracrm_mlops.store.db.engine import get_engine
from neuracrm_mlops.store.db.schema import Alert, Lead
from neuracrm_mlops.store.seeding import seed_database

# the session's migrated Airflow metadata (tests/dags/conftest.py), made once: one worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("airflow_dags")]


@pytest.fixture
def seeded_home(neuracrm_home: Path, home_engine: sa.Engine) -> Path:
    seed_database(25, 30, 9, engine=home_engine)
    return neuracrm_home


def _versions(name: str) -> list[dict[str, str]]:
    client = registry.configure_mlflow()
    found = client.search_model_versions(f"name = '{name}'")
    return [dict(v.tags) | {"version": str(v.version)} for v in found]


def test_a_corrupted_batch_stops_the_lead_dag_at_validation_and_leaves_the_champion(
    airflow: AirflowHarness, seeded_home: Path
) -> None:
    """(A successful run of every training DAG, with its lineage tags, is tests/dags/test_demo.py.)"""
    from neuracrm_mlops.training.train import Lineage, train_lead_scoring

    env = airflow.env(seeded_home)
    outcome = train_lead_scoring(Lineage.for_cli("lead_scoring champion"))
    assert outcome.version
    [version] = _versions("lead_scoring")
    client = registry.configure_mlflow()
    client.set_registered_model_alias("lead_scoring", "champion", version["version"])

    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(sa.update(Lead).where(Lead.id <= 5).values(email_opens=-3))
    state, log = airflow.run_dag("train_lead_scoring", env)
    assert state == "failed"
    assert "leads validation failed" in log and "email_opens" in log
    assert len(_versions("lead_scoring")) == 1  # nothing new registered
    assert str(registry.alias_version(client, "lead_scoring", "champion").version) == version["version"]
    with engine.connect() as conn:
        alert = conn.execute(sa.select(Alert).where(Alert.severity == "critical")).one()
    assert alert.kind.startswith("validation") and "email_opens" in alert.message


# The sentiment and forecast DAGs (with mapped chunks) run for real in tests/dags/test_demo.py.
