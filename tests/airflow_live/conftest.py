"""One real Airflow for every test in this directory: `airflow api-server`, `airflow scheduler` and
`airflow dag-processor` (LocalExecutor) as subprocesses on a throwaway PostgreSQL metadata database,
with this repository's dags/ and plugins/, SimpleAuthManager users ``oncall`` (admin) and ``viewer``
(viewer), and a seeded CRM store on a second throwaway PostgreSQL database (MLflow: SQLite under the
temp dir). Started once (package scope), stopped (process groups) after the directory's last test.
A failing test gets the tail of every component's log in its report.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pg_databases import create_pg_database, drop_pg_database
from serving_support import environment, free_port

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.ops.airflow_cluster import stop_process_groups
from neuracrm_mlops.store.db.engine import dispose_engines

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).parent / "airflow"
USERS = {"oncall": "admin", "viewer": "viewer"}
SEED_ORGS, SEED_MONTHS = 10, 24
COMPONENTS = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
}
# The rollout settings of the DAG processor (it shapes the rollout DAGs: two steps) and of the tasks
# (the scheduler's LocalExecutor workers): quick bakes, sentiment behind a reviewer's approval. The
# api-server and the test process keep the defaults (the health page's tests assume them).
ROLLOUT_ENV = {
    "NEURACRM_ROLLOUT_STEPS": "0.5,1.0",
    "NEURACRM_MIN_OUTCOMES": "5",
    "NEURACRM_BAKE_POKE_SECONDS": "1",
    "NEURACRM_ROLLOUT_APPROVAL": "sentiment",
}


@dataclass
class LiveAirflow:
    """The running Airflow and the stores its tasks and its plugin use."""

    url: str
    home: Path
    env: dict[str, str]  # the Airflow components' environment
    neuracrm_env: dict[str, str]  # the platform's settings, for library calls from the test process
    passwords: dict[str, str]
    jwt_secret: str
    logs: dict[str, Path] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str = "oncall") -> str:
        """A JWT for ``user`` from the auth manager's ``POST /auth/token`` (as the UI's login does)."""
        if user not in self._tokens:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={"username": user, "password": self.passwords[user]},
                timeout=30,
            )
            assert response.status_code == 201, response.text
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, *, user: str | None = "oncall", **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if user is not None:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def assert_running(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        assert not dead, f"Airflow components exited: {dead}\n{self.log_tails()}"

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            parts.append(f"----- {name} ({path}), last {lines} lines -----\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


def _wait(condition: Any, what: str, stack: LiveAirflow, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.assert_running()
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:.0f} s\n{stack.log_tails()}")


def _seed_crm(neuracrm_env: dict[str, str]) -> None:
    """The CRM schema and a small synthetic CRM (library calls, as `neuracrm-mlops seed` makes)."""
    with environment(neuracrm_env):
        from neuracrm_mlops.store.db.engine import get_engine
        from neuracrm_mlops.store.db.migrate import upgrade
        from neuracrm_mlops.store.seeding import seed_database

        engine = get_engine()
        upgrade(engine)
        seed_database(SEED_ORGS, SEED_MONTHS, 11, engine=engine)


@pytest.fixture(scope="package")
def airflow_live(tmp_path_factory: pytest.TempPathFactory, gx_root: Path) -> Iterator[LiveAirflow]:
    root = tmp_path_factory.mktemp("airflow-live")
    passwords = {user: secrets.token_urlsafe(12) for user in USERS}
    passwords_file = root / "passwords.json"
    passwords_file.write_text(json.dumps(passwords))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    metadata_db = create_pg_database()
    crm_db = create_pg_database()
    jwt_secret = secrets.token_hex(32)
    neuracrm_env = {
        "NEURACRM_HOME": str(root / "neuracrm-home"),
        "NEURACRM_DB_URL": crm_db,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.sqlite'}",
        "NEURACRM_GX_ROOT": str(gx_root),
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NEURACRM", "MLFLOW"))},
        **neuracrm_env,
        "AIRFLOW_HOME": str(root / "airflow-home"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
        # psycopg 3 is async too (Airflow would derive an asyncpg URL, a driver not installed here)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_db,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        # The scheduler must create runs (use_job_schedule=False would stop asset-triggered runs too:
        # the scheduler then skips _create_dagruns_for_dags), yet no cron run may compete for the two
        # cores: every DAG is paused until a test unpauses it, and no time-based run is due before
        # the DAGs' start date, set in the future (asset-triggered runs have no logical date: they run)
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "NEURACRM_DAG_START_DATE": "2100-01-01",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "NEURACRM_RETRY_DELAY_SECONDS": "1",
        "OMP_NUM_THREADS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PYTHONUNBUFFERED": "1",
    }
    stack = LiveAirflow(url, root / "airflow-home", env, neuracrm_env, passwords, jwt_secret)
    try:
        migrate_log = root / "db-migrate.log"
        stack.logs["db migrate"] = migrate_log
        with migrate_log.open("wb") as out:
            migrate = subprocess.Popen(
                [str(AIRFLOW), "db", "migrate"], env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT
            )
        seeding = ThreadPoolExecutor(1).submit(_seed_crm, neuracrm_env)  # meanwhile, in this process
        assert migrate.wait(300) == 0, f"airflow db migrate failed\n{stack.log_tails(80)}"
        for name, args in COMPONENTS.items():
            log_path = root / f"{name}.log"
            stack.logs[name] = log_path
            with log_path.open("wb") as out:
                stack.processes[name] = subprocess.Popen(
                    [str(AIRFLOW), *(a.format(port=port) for a in args)],
                    env=env if name == "api-server" else {**env, **ROLLOUT_ENV},
                    cwd=root,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        _wait(
            lambda: httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200,
            "the api-server answering /api/v2/monitor/health",
            stack,
            120,
        )
        seeding.result(120)
        yield stack
    finally:
        stop_process_groups(stack.processes.values(), timeout=10.0)
        dispose_engines()
        drop_pg_database(crm_db)
        drop_pg_database(metadata_db)


@pytest.fixture(autouse=True)
def live_settings(airflow_live: LiveAirflow, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Library calls from the test process read and write the stores the running Airflow uses."""
    for name, value in airflow_live.neuracrm_env.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield
    dispose_engines()
    reset_settings()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    stack = getattr(item, "funcargs", {}).get("airflow_live")
    if report.failed and isinstance(stack, LiveAirflow):
        report.sections.append(("Airflow component logs", stack.log_tails(60)))
    return report
