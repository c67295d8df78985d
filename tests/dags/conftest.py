"""Real Airflow for DAG tests: a private AIRFLOW_HOME (SQLite metadata, migrated once per session),
and DAG runs through `airflow dags test` in a subprocess, so Airflow's configuration never leaks
into the test process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).parent / "airflow"


@dataclass
class AirflowHarness:
    home: Path
    base_env: dict[str, str]

    def env(self, neuracrm_home: Path, **extra: str) -> dict[str, str]:
        return {**self.base_env, "NEURACRM_HOME": str(neuracrm_home), **extra}

    def run_dag(self, dag_id: str, env: dict[str, str], timeout: int = 900) -> tuple[str, str]:
        """Run one DAG run with `airflow dags test`; returns (final state, full log)."""
        result = subprocess.run(
            [str(AIRFLOW), "dags", "test", dag_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
        )
        log = result.stdout + result.stderr
        states = re.findall(r"DagRun Finished: dag_id=" + re.escape(dag_id) + r".*?state=(\w+)", log)
        return (states[-1] if states else f"no final state (exit {result.returncode})"), log

    def inspect_dags(self, env: dict[str, str]) -> dict[str, object]:
        result = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("inspect_dagbag.py")), str(REPO / "dags")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("JSON:")]
        assert lines, result.stdout + result.stderr
        return dict(json.loads(lines[-1][5:]))


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowHarness]:
    home = tmp_path_factory.mktemp("airflow-home")
    gx_root = tmp_path_factory.mktemp("gx") / "expectations"
    shutil.copytree(REPO / "expectations", gx_root, ignore=shutil.ignore_patterns("uncommitted"))
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
