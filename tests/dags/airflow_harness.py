"""A real Airflow for DAG tests: runs of `airflow dags test` in a subprocess on a private AIRFLOW_HOME,
so Airflow's configuration never leaks into the test process. (Not in ``conftest``: tests/ and
tests/dags/ each have one, so ``from conftest import`` is ambiguous.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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

    def list_runs(self, env: dict[str, str], dag_id: str) -> list[dict[str, object]]:
        """The DAG runs of ``dag_id`` in this Airflow's metadata database (e.g. triggered ones)."""
        result = subprocess.run(
            [str(AIRFLOW), "dags", "list-runs", dag_id, "-o", "json"],
            env=self.env(Path(env["NEURACRM_HOME"]), **env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        # Airflow prints warnings before the JSON; the runs are the last line that is a JSON list
        for line in reversed(result.stdout.splitlines()):
            if line.startswith(("[{", "[]")):
                return list(json.loads(line))
        raise AssertionError(f"no JSON list in: {result.stdout[-2000:]}")
