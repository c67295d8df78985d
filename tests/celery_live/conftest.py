"""Airflow on the CeleryExecutor, as a multi-host deployment runs it, on this machine: an ``mlflow
server`` on PostgreSQL with served artifacts, the Airflow api-server, scheduler and dag-processor
(metadata and Celery results on PostgreSQL, broker: a Redis database of its own) and two
``airflow celery worker`` processes, each in its own working directory with its own AIRFLOW_HOME,
NEURACRM_HOME and Great Expectations copy (``neuracrm_mlops.ops.airflow_cluster``). A seeded CRM
(PostgreSQL) of a few dozen organizations; ``train_sales_forecast`` is triggered once and the
module's tests read what the run left. Started once (package scope), stopped after the last test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from pg_databases import create_pg_database, drop_pg_database

from neuracrm_mlops.ops import airflow_cluster
from neuracrm_mlops.ops.airflow_cluster import LocalCluster
from neuracrm_mlops.store.db.engine import dispose_engines

REPO = Path(__file__).resolve().parents[2]
ORGANIZATIONS, MONTHS, CHUNK_SIZE, WORKERS = 24, 30, 4, 2
DAG_ID = "train_sales_forecast"
# Redis databases this package may take as the Celery broker (0 and 1 are the compose stack's cache
# and broker; other tests take 10-15): the first empty one, flushed afterwards
BROKER_DATABASES = range(2, 10)


@dataclass
class CeleryRun:
    """The running cluster and what the one ``train_sales_forecast`` run left behind."""

    cluster: LocalCluster
    env: dict[str, str]  # the Airflow components' environment
    crm_env: dict[str, str]  # the platform's settings as the CLI (and this process) use them
    mlflow_url: str
    metadata: sa.Engine
    workers: list[str]
    state: str

    def task_instances(self) -> list[dict[str, Any]]:
        with self.metadata.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT task_id, map_index, state, hostname, pid, try_number, start_date, end_date "
                    "FROM task_instance "
                    "WHERE dag_id = :dag ORDER BY task_id, map_index"
                ),
                {"dag": DAG_ID},
            )
            return [dict(row._mapping) for row in rows]


def _empty_redis_database() -> int:
    for number in BROKER_DATABASES:
        client = redis.Redis(host="127.0.0.1", port=6379, db=number)
        try:
            if client.dbsize() == 0:
                return number
        except redis.ConnectionError as exc:
            pytest.fail(f"Redis at 127.0.0.1:6379 is needed as the Celery broker and is not reachable: {exc}")
        finally:
            client.close()
    pytest.fail(f"no empty Redis database among {list(BROKER_DATABASES)} for the Celery broker")


def _cli(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [str(airflow_cluster.BIN / "neuracrm-mlops"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (
        f"neuracrm-mlops {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    )


@pytest.fixture(scope="package")
def celery_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryRun]:
    root = tmp_path_factory.mktemp("celery-live")
    databases = {name: create_pg_database() for name in ("metadata", "crm", "mlflow")}
    broker_db = _empty_redis_database()
    cluster = LocalCluster(root)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NEURACRM", "MLFLOW"))}
    metadata = sa.create_engine(databases["metadata"])
    try:
        mlflow_url = airflow_cluster.start_mlflow_server(cluster, backend_url=databases["mlflow"], env=base)
        platform = {
            "NEURACRM_DB_URL": databases["crm"],
            "MLFLOW_TRACKING_URI": mlflow_url,
            "NEURACRM_FORECAST_CHUNK_SIZE": str(CHUNK_SIZE),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        # the CLI's own home and GX copy (it seeds and writes the API keys file the service test reads)
        crm_env = {**base, **platform, "NEURACRM_HOME": str(root / "cli" / "home")}
        crm_env["NEURACRM_GX_ROOT"] = str(root / "cli" / "expectations")
        shutil.copytree(
            REPO / "expectations", crm_env["NEURACRM_GX_ROOT"], ignore=shutil.ignore_patterns("uncommitted")
        )
        _cli(crm_env, "db", "upgrade")
        _cli(crm_env, "seed", "--orgs", str(ORGANIZATIONS), "--months", str(MONTHS))
        port = airflow_cluster.free_port()
        env = airflow_cluster.celery_airflow_environment(
            base={**base, **platform, "AIRFLOW_HOME": str(root / "airflow-home")},
            metadata_url=databases["metadata"],
            broker_url=f"redis://127.0.0.1:6379/{broker_db}",
            api_port=port,
            dags_folder=REPO / "dags",
            plugins_folder=REPO / "plugins",
            jwt_secret=secrets.token_hex(32),
        )
        # only the run triggered here: no time-based runs (the DAGs' start date is in the future)
        env |= {
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "NEURACRM_DAG_START_DATE": "2100-01-01",
            "NEURACRM_RETRY_DELAY_SECONDS": "1",
            # one chunk per worker at once (the DAG's max_active_tis_per_dagrun, set when it is parsed)
            "NEURACRM_FORECAST_CHUNK_CONCURRENCY": str(WORKERS),
        }
        workers = airflow_cluster.start_airflow(
            cluster, env, workers=WORKERS, expectations=REPO / "expectations"
        )

        def parsed() -> bool:
            with metadata.connect() as conn:
                return bool(conn.scalar(sa.text("SELECT count(*) FROM dag WHERE dag_id = :d"), {"d": DAG_ID}))

        cluster.wait_for(parsed, f"{DAG_ID} parsed by the dag-processor", 180, poll=1)
        trigger = subprocess.run(
            [str(airflow_cluster.BIN / "airflow"), "dags", "trigger", DAG_ID],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert trigger.returncode == 0, trigger.stdout + trigger.stderr

        def ended() -> str | None:
            with metadata.connect() as conn:
                state = conn.scalar(sa.text("SELECT state FROM dag_run WHERE dag_id = :d"), {"d": DAG_ID})
            return state if state in ("success", "failed") else None

        state = cluster.wait_for(ended, f"the {DAG_ID} run to end", 600, poll=1)
        yield CeleryRun(cluster, env, crm_env, mlflow_url, metadata, workers, state)
    finally:
        cluster.stop()
        metadata.dispose()
        dispose_engines()
        for url in databases.values():
            drop_pg_database(url)
        redis.Redis(host="127.0.0.1", port=6379, db=broker_db).flushdb()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    run = getattr(item, "funcargs", {}).get("celery_run")
    if report.failed and isinstance(run, CeleryRun):
        report.sections.append(("Celery cluster logs", run.cluster.tails(60)))
    return report
