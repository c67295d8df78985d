"""The platform's processes on one machine, without Docker: `airflow dags test` runs, `bentoml serve`,
the Airflow api-server and the MLflow UI. Background processes leave a pid file under
``NEURACRM_HOME/run`` so that ``neuracrm-mlops stop`` (``make stop``) can end them later; every
process writes its log under ``NEURACRM_HOME/logs``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.errors import NeuraCRMError

BIN = Path(sys.executable).parent
SERVICE = "neuracrm_mlops.serving.service:PredictionService"


class LocalStackError(NeuraCRMError):
    """A local process failed to start or a DAG run failed; the message names its log file."""


def project_root() -> Path:
    """The checkout holding ``dags/`` and ``plugins/`` (the package is installed editable from it)."""
    for candidate in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (candidate / "dags").is_dir():
            return candidate
    raise LocalStackError("cannot find the project's dags/ folder: run from the checkout")


def run_dir() -> Path:
    path = get_settings().home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_dir() -> Path:
    path = get_settings().home / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def airflow_environment(**extra: str) -> dict[str, str]:
    """The environment of every Airflow process started here: this project's DAGs and plugin, a
    private AIRFLOW_HOME (SQLite metadata). The UI lets everyone in as admin: it is
    bound to 127.0.0.1 and meant for one developer (production uses a real auth manager)."""
    settings = get_settings()
    root = project_root()
    env = {
        **os.environ,
        "NEURACRM_HOME": str(settings.home),
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # to the log files; the run state is read from it
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        # One OpenMP thread per task process: with the other core busy (another task, the service),
        # gradient boosting's spinning OpenMP threads made the lead model's training task take 150 s
        # instead of 11 s here; on an idle machine both settings take 11 s.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        **extra,
    }
    return env


def migrate_airflow(env: dict[str, str]) -> Path:
    """``airflow db migrate`` on the private AIRFLOW_HOME; returns its log file."""
    log = log_dir() / "airflow-db-migrate.log"
    with log.open("w") as handle:
        result = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise LocalStackError(f"airflow db migrate failed (exit {result.returncode}); see {log}")
    return log


@dataclass(frozen=True)
class DagRunResult:
    dag_id: str
    state: str
    seconds: float
    log: Path

    def ran(self, task_id: str) -> bool:
        """Whether ``task_id`` ran in this run (a short-circuited or skipped task never starts)."""
        return f"[DAG TEST] starting task_id={task_id} " in self.log.read_text(errors="replace")


def run_dag(
    dag_id: str, env: dict[str, str], *, conf: dict[str, object] | None = None, timeout: float = 900
) -> DagRunResult:
    """One real DAG run with ``airflow dags test`` (every task in this process, no scheduler);
    raises LocalStackError naming the log when the run does not succeed."""
    existing = len(list(log_dir().glob(f"dag-{dag_id}-*.log")))
    log = log_dir() / f"dag-{dag_id}-{existing + 1}.log"
    argv = [str(BIN / "airflow"), "dags", "test", dag_id]
    if conf:
        argv += ["--conf", json.dumps(conf)]
    started = time.monotonic()
    with log.open("w") as handle:
        try:
            subprocess.run(
                argv,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=project_root(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LocalStackError(f"DAG {dag_id} did not finish within {timeout:.0f} s; see {log}") from None
    seconds = time.monotonic() - started
    states = re.findall(
        r"DagRun Finished: dag_id=" + re.escape(dag_id) + r".*?state=(\w+)", log.read_text(errors="replace")
    )
    state = states[-1] if states else "unknown"
    if state != "success":
        raise LocalStackError(f"DAG {dag_id} ended {state}; see {log}")
    return DagRunResult(dag_id, state, seconds, log)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class BackgroundProcess:
    """A process started in its own session (so its children stop with it), with a pid file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], env: dict[str, str]) -> BackgroundProcess:
        log = log_dir() / f"{name}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=project_root(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (run_dir() / f"{name}.pid").write_text(str(process.pid))
        return cls(name, process, log)

    def wait_http(self, url: str, timeout: float = 180.0) -> None:
        """Wait until ``url`` answers 200, or raise naming the log (the process may have died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalStackError(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise LocalStackError(f"{self.name} did not answer {url} within {timeout:.0f} s; see {self.log}")

    def stop(self, timeout: float = 30.0) -> None:
        _stop_group(self.process.pid, timeout)
        self.process.poll()
        (run_dir() / f"{self.name}.pid").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pid: int, timeout: float) -> bool:
    """SIGTERM the process group led by ``pid`` (a graceful stop), SIGKILL after ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return True
        except ChildProcessError:  # not our child: poll for it
            if not _alive(pid):
                return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def stop_all(timeout: float = 30.0) -> list[str]:
    """Stop every background process with a pid file under NEURACRM_HOME/run; returns their names."""
    stopped = []
    for pid_file in sorted(run_dir().glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            pid = 0
        if pid and _alive(pid) and _stop_group(pid, timeout):
            stopped.append(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return stopped


def start_prediction_service(port: int, **extra_env: str) -> BackgroundProcess:
    """`bentoml serve` of the prediction service on 127.0.0.1:``port``, ready when it returns."""
    settings = get_settings()
    if not port_is_free(port):
        raise LocalStackError(f"port {port} is taken: stop what runs there, or run `neuracrm-mlops stop`")
    env = {
        **os.environ,
        "NEURACRM_HOME": str(settings.home),
        "BENTOML_HOME": str(settings.home / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        **extra_env,
    }
    argv = [str(BIN / "bentoml"), "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)]
    service = BackgroundProcess.start("prediction-service", argv, env)
    try:
        service.wait_http(f"http://127.0.0.1:{port}/readyz")
    except LocalStackError:
        service.stop()
        raise
    return service


def start_uis(airflow_port: int = 8080, mlflow_port: int = 5000) -> list[tuple[str, str]]:
    """The Airflow UI (api-server + dag-processor, for the model health page and the DAG runs) and
    the MLflow UI in the background; returns (name, url) pairs. ``neuracrm-mlops stop`` ends them."""
    settings = get_settings()
    for port in (airflow_port, mlflow_port):
        if not port_is_free(port):
            raise LocalStackError(f"port {port} is taken: run `neuracrm-mlops stop`, or pick other ports")
    env = airflow_environment()
    migrate_airflow(env)
    api = BackgroundProcess.start(
        "airflow-api-server", [str(BIN / "airflow"), "api-server", "--port", str(airflow_port)], env
    )
    BackgroundProcess.start("airflow-dag-processor", [str(BIN / "airflow"), "dag-processor"], env)
    mlflow = BackgroundProcess.start(
        "mlflow-ui",
        [
            str(BIN / "mlflow"),
            "ui",
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
        ],
        {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])},
    )
    api.wait_http(f"http://127.0.0.1:{airflow_port}/api/v2/monitor/health")
    mlflow.wait_http(f"http://127.0.0.1:{mlflow_port}/health")
    return [
        ("Airflow UI", f"http://127.0.0.1:{airflow_port}/"),
        ("Model health page", f"http://127.0.0.1:{airflow_port}/neuracrm/health"),
        ("MLflow UI", f"http://127.0.0.1:{mlflow_port}/"),
    ]
