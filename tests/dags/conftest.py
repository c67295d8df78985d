"""Real Airflow for DAG tests: a private AIRFLOW_HOME (SQLite metadata, migrated once per session),
and DAG runs through `airflow dags test` in a subprocess, so Airflow's configuration never leaks
into the test process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_harness import AIRFLOW, REPO, AirflowHarness


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory, gx_root: Path) -> Iterator[AirflowHarness]:
    home = tmp_path_factory.mktemp("airflow-home")
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NEURACRM", "MLFLOW"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "NEURACRM_GX_ROOT": str(gx_root),
        "NEURACRM_RETRY_DELAY_SECONDS": "1",
        "OMP_NUM_THREADS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    migrate = subprocess.run(
        [str(AIRFLOW), "db", "migrate"],
        env=base_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    yield AirflowHarness(home, base_env)
