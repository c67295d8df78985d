"""Airflow on the CeleryExecutor as local processes, the way a multi-host deployment runs it, on one
machine and without Docker: an ``mlflow server`` that serves the artifacts, the Airflow api-server,
scheduler and dag-processor, and N ``airflow celery worker`` processes. Each worker has its own
working directory, AIRFLOW_HOME, NEURACRM_HOME and log-server port, and a host name of its own
(``worker_hostname``), so nothing local is shared: the workers read the CRM from PostgreSQL and write
models through the MLflow server only, as they would on separate machines.

The live Celery tests (tests/celery_live) and ``neuracrm-mlops bench training -- --via celery`` use
it; docker-compose.yml is the production form of the same topology.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from neuracrm_mlops.errors import NeuraCRMError
from neuracrm_mlops.ops.local_stack import free_port

__all__ = [
    "ClusterError",
    "LocalCluster",
    "celery_airflow_environment",
    "free_port",
    "start_airflow",
    "start_mlflow_server",
    "stop_process_groups",
    "worker_hostname",
]

BIN = Path(sys.executable).parent
# read by ``worker_hostname`` in the task processes of one local worker (not a platform setting)
WORKER_NAME_VARIABLE = "AIRFLOW_LOCAL_WORKER_NAME"


class ClusterError(NeuraCRMError):
    """A component of the local cluster failed to start or exited; the message names its log."""


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` for local workers: the worker's own name where one is
    set (several workers on one machine), the machine's name otherwise. Airflow records it as each
    task instance's ``hostname``."""
    return os.environ.get(WORKER_NAME_VARIABLE) or socket.getfqdn()


def celery_airflow_environment(
    *,
    base: Mapping[str, str],
    metadata_url: str,
    broker_url: str,
    api_port: int,
    dags_folder: Path,
    plugins_folder: Path,
    jwt_secret: str,
) -> dict[str, str]:
    """The environment every Airflow component shares: CeleryExecutor, ``broker_url`` (a Redis
    database or RabbitMQ), the Celery result backend in the metadata database (PostgreSQL)."""
    url = f"http://127.0.0.1:{api_port}"
    result_backend = "db+" + metadata_url
    return {
        **base,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        # psycopg 3 is async too (Airflow would derive an asyncpg URL, a driver not installed here)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PATH": os.pathsep.join([str(BIN), base.get("PATH", os.environ.get("PATH", ""))]),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


@dataclass
class LocalCluster:
    """The started processes (each in its own session), their logs and how to reach them."""

    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    workdirs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: Mapping[str, str], *, cwd: Path | None = None) -> None:
        workdir = cwd or self.root
        workdir.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        self.logs[name] = log
        self.workdirs[name] = workdir
        with log.open("wb") as out:
            self.processes[name] = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def run(self, name: str, argv: list[str], env: Mapping[str, str], *, timeout: float = 300) -> None:
        """A one-shot command (``airflow db migrate``); raises ClusterError naming its log on failure."""
        log = self.root / f"{name}.log"
        self.logs[name] = log
        with log.open("wb") as out:
            result = subprocess.run(
                argv,
                env=dict(env),
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if result.returncode != 0:
            raise ClusterError(f"{name} failed (exit {result.returncode}); see {log}\n{self.tail(name)}")

    def assert_running(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise ClusterError(f"cluster processes exited: {dead}\n{self.tails()}")

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float, poll: float = 0.5) -> Any:
        """``condition()``'s first true value; ClusterError (with every log's tail) when a process
        exits or ``timeout`` passes first. HTTP errors count as "not yet"."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_running()
            with contextlib.suppress(httpx.HTTPError):
                result = condition()
                if result:
                    return result
            time.sleep(poll)
        raise ClusterError(f"{what}: not within {timeout:.0f} s\n{self.tails()}")

    def wait_http(self, url: str, what: str, timeout: float = 180) -> None:
        self.wait_for(lambda: httpx.get(url, timeout=5).status_code == 200, what, timeout)

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs.get(name)
        text = path.read_text(errors="replace").splitlines() if path and path.exists() else []
        return f"----- {name} ({path}), last {lines} lines -----\n" + "\n".join(text[-lines:])

    def tails(self, lines: int = 40) -> str:
        return "\n".join(self.tail(name, lines) for name in self.logs)

    def stop(self, timeout: float = 20.0) -> None:
        stop_process_groups(self.processes.values(), timeout)


def stop_process_groups(processes: Iterable[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM every process's group at once (Celery workers finish nothing new), wait up to
    ``timeout`` for them all, then SIGKILL the groups still there."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def start_mlflow_server(cluster: LocalCluster, *, backend_url: str, env: Mapping[str, str]) -> str:
    """``mlflow server`` on ``backend_url`` with served artifacts (``--serve-artifacts``: clients
    read and write them through the server as ``mlflow-artifacts:`` URIs); returns its URL."""
    port = free_port()
    artifacts = cluster.root / "mlflow-server" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_url,
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    server_env = {
        **env,
        "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]),
        # no background job runner (GenAI scorer jobs, unused here): 10 processes and ~1.5 GB less
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    cluster.start("mlflow-server", argv, server_env, cwd=cluster.root / "mlflow-server")
    url = f"http://127.0.0.1:{port}"
    cluster.wait_http(f"{url}/health", "the MLflow server answering /health", timeout=180)
    return url


def start_airflow(
    cluster: LocalCluster,
    env: Mapping[str, str],
    *,
    workers: int,
    expectations: Path,
    worker_env: Mapping[str, str] | None = None,
) -> list[str]:
    """``airflow db migrate``, then api-server, scheduler, dag-processor and ``workers`` Celery workers
    (concurrency 1 each; own working directory, AIRFLOW_HOME, NEURACRM_HOME, copy of the Great
    Expectations project ``expectations``, log-server port and host name ``worker-<i>``); returns the
    worker names once the api-server answers."""
    port = env["AIRFLOW__API__PORT"]
    cluster.run("airflow-db-migrate", [str(BIN / "airflow"), "db", "migrate"], env)
    central = {"api-server": ["api-server", "--host", "127.0.0.1", "--port", port, "--workers", "1"]}
    central |= {"scheduler": ["scheduler"], "dag-processor": ["dag-processor"]}
    for name, args in central.items():
        cluster.start(name, [str(BIN / "airflow"), *args], env)
    names = []
    for index in range(1, workers + 1):
        name = f"worker-{index}"
        workdir = cluster.root / name
        gx_root = workdir / "expectations"
        shutil.copytree(expectations, gx_root, ignore=shutil.ignore_patterns("uncommitted"))
        own = {
            **env,
            **(worker_env or {}),
            "AIRFLOW_HOME": str(workdir / "airflow-home"),
            "NEURACRM_HOME": str(workdir / "neuracrm-home"),
            "NEURACRM_GX_ROOT": str(gx_root),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            WORKER_NAME_VARIABLE: name,
        }
        argv = [
            str(BIN / "airflow"),
            "celery",
            "worker",
            "--concurrency",
            "1",
            "--celery-hostname",
            f"{name}@%h",
        ]
        cluster.start(name, argv, own, cwd=workdir)
        names.append(name)
    cluster.wait_http(
        f"http://127.0.0.1:{port}/api/v2/monitor/health", "the Airflow api-server answering", timeout=180
    )
    return names
