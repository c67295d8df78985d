"""`neuracrm-mlops demo` as a background process for tests/dags/test_demo.py.

The demo takes about 7 minutes, nearly all of it on one core in its own processes (DAG runs,
`bentoml serve`), so the suite starts it when collection ends and runs the other tests beside it
on the second core; test_demo.py is moved to the end of the run and only waits for the result.
Run alone, test_demo.py starts it itself."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pg_databases import create_pg_database, drop_pg_database

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "neuracrm-mlops"
TEST_FILE = "tests/dags/test_demo.py"
TIMEOUT_SECONDS = 1_200


@dataclass
class DemoRun:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    workdir: Path
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""

    def wait(self) -> DemoRun:
        if self.returncode is None:
            try:
                self.process.wait(TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
            self.returncode = self.process.returncode
            self.stdout = (self.workdir / "stdout.txt").read_text(errors="replace")
            self.stderr = (self.workdir / "stderr.txt").read_text(errors="replace")
        return self

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def clean_up(self) -> None:
        self.kill()
        drop_pg_database(self.env["NEURACRM_DB_URL"])
        shutil.rmtree(self.workdir, ignore_errors=True)


_runs: dict[str, DemoRun] = {}  # at most one: "current"


def start() -> DemoRun:
    """Start the demo (once per session) on a fresh PostgreSQL database and a private home."""
    if "current" in _runs:
        return _runs["current"]
    workdir = Path(tempfile.mkdtemp(prefix="neuracrm-demo-test-"))
    gx_root = workdir / "expectations"
    shutil.copytree(REPO / "expectations", gx_root, ignore=shutil.ignore_patterns("uncommitted"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NEURACRM", "MLFLOW"))},
        "NEURACRM_HOME": str(workdir / "home"),
        "NEURACRM_DB_URL": create_pg_database(),
        "NEURACRM_GX_ROOT": str(gx_root),
        "NEURACRM_FORECAST_CHUNK_SIZE": "10",  # 25 organizations: three mapped forecast tasks
        "NEURACRM_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/unreachable",  # a webhook that is down
        "NEURACRM_ALERT_WEBHOOK_RETRIES": "1",
        "OMP_NUM_THREADS": "1",
        # quicker than the demo's own pacing: 30 outcomes a verdict, live accuracy over 36 s
        "NEURACRM_MIN_OUTCOMES": "30",
        "NEURACRM_MONITOR_WINDOW_HOURS": "0.01",
    }
    with (workdir / "stdout.txt").open("wb") as out, (workdir / "stderr.txt").open("wb") as err:
        process = subprocess.Popen(
            # 25 organizations: about the smallest seeded CRM whose lead model passes the 0.80 gate
            [str(CLI), "demo", "--orgs", "25", "--months", "24"],
            env=env,
            stdout=out,
            stderr=err,
            cwd=REPO,
            start_new_session=True,
        )
    _runs["current"] = DemoRun(process, env, workdir)
    return _runs["current"]


def current() -> DemoRun | None:
    return _runs.get("current")


def finish() -> None:
    """Stop and clean up a demo run that was started (also when its tests never ran)."""
    run = _runs.pop("current", None)
    if run is not None:
        run.clean_up()
