"""A real prediction service for tests: a PostgreSQL CRM store with trained models in a real MLflow
registry, and `bentoml serve` in a subprocess called over HTTP."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BENTOML = Path(sys.executable).parent / "bentoml"
SERVICE = "neuracrm_mlops.serving.service:PredictionService"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (and re-read settings) for library calls made from the test process."""
    from neuracrm_mlops.config import reset_settings
    from neuracrm_mlops.store.db.engine import dispose_engines

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    reset_settings()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        dispose_engines()
        reset_settings()


@dataclass
class ServingStore:
    """The stores a service reads: environment, API keys per organization."""

    home: Path
    env: dict[str, str]
    api_keys: dict[int, str] = field(default_factory=dict)

    def mlflow(self) -> Any:
        from mlflow import MlflowClient

        uri = self.env["MLFLOW_TRACKING_URI"]
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def engine(self) -> Any:
        import sqlalchemy as sa

        return sa.create_engine(self.env["NEURACRM_DB_URL"])

    def load_api_keys(self) -> None:
        with (self.home / "api_keys.csv").open() as handle:
            self.api_keys = {int(row["organization_id"]): row["api_key"] for row in csv.DictReader(handle)}

    def register_object(self, name: str, family_object: Any, *, description: str = "test model") -> str:
        """Register any picklable object as a new version of ``name`` (as training would); returns it."""
        with environment(self.env):
            import joblib
            import mlflow

            from neuracrm_mlops.models.pyfunc_wrappers import LeadScoringPyfunc
            from neuracrm_mlops.store import registry

            client = registry.configure_mlflow()
            registry.ensure_registered_model(client, name, description)
            mlflow.set_experiment(experiment_id=registry.ensure_experiment("serving-tests"))
            with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name=f"test {name}"):
                artifact = Path(tmp) / "model.joblib"
                joblib.dump(family_object, artifact)
                info = mlflow.pyfunc.log_model(
                    name="model", python_model=LeadScoringPyfunc(), artifacts={"model": str(artifact)}
                )
                version = client.create_model_version(
                    name,
                    info.model_uri,
                    run_id=info.run_id,
                    model_id=info.model_id,
                    tags={"status": "test", "servable": "true"},
                )
            return str(version.version)

    def copy_version(self, name: str, version: str) -> str:
        """A new version of ``name`` with the same artifacts as ``version``."""
        client = self.mlflow()
        source = client.get_model_version(name, version)
        copy = client.create_model_version(
            name,
            source.source,
            run_id=source.run_id,
            tags={"status": "test", "copy_of": version, "servable": "true"},
        )
        return str(copy.version)


class ServerProcess:
    """`bentoml serve` on a free port, with the store's environment; stopped gracefully (SIGTERM).

    ``cwd``: the server's own working directory (created), holding its BENTOML_HOME and its log, as a
    replica on its own host would; by default it runs in the repository with the store's."""

    def __init__(self, store: ServingStore, *, cwd: Path | None = None, **extra_env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if cwd is not None:
            cwd.mkdir(parents=True, exist_ok=True)
        base = cwd or store.home
        self.log_path = base / f"bentoml-{self.port}.log"
        env = {
            **os.environ,
            **store.env,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "BENTOML_HOME": str(base / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            **extra_env,
        }
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [str(BENTOML), "serve", SERVICE, "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            cwd=cwd or REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"bentoml serve exited with {self.process.returncode}:\n{self.log_text()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"bentoml serve was not ready within {timeout} s:\n{self.log_text()[-5000:]}")

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/status/", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def wait_for(self, condition: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        """Poll /status until ``condition(status)`` holds."""
        deadline = time.monotonic() + timeout
        status = self.status()
        while not condition(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s; last status: {status}")
            time.sleep(0.2)
            status = self.status()
        return status

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM the whole process group (a graceful stop) and wait; returns the exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
        return int(self.process.returncode)


# --- hard kills: crash tests of the prediction log and the worker watchdog ------------------------


def processes_with_parent(parent: int) -> list[int]:
    """The pids whose parent is ``parent`` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped, counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (as servers do, with SO_REUSEADDR: connections
    the old server closed may linger in TIME_WAIT, a listening socket may not)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


def listeners(port: int) -> str:
    """Who listens on ``port`` (``ss -ltnpe``, and each process holding the socket found from /proc with
    its command line, as ``ss`` may not show them), for failure messages."""
    found = subprocess.run(
        ["ss", "-ltnpeH", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    inodes = {word.split(":", 1)[1] for word in found.split() if word.startswith("ino:")}
    holders = []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in inodes:
                pid = fd.parent.parent.name
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                holders.append(f"pid {pid} fd {fd.name}: {command.decode(errors='replace').strip()}")
        except OSError:
            continue
    return "\n".join([found or f"nothing listens on {port}", *holders])


class KillableServer(ServerProcess):
    """A ServerProcess that can be started on a given port (a restart) and killed without warning."""

    def __init__(self, store: ServingStore, *, port: int | None = None, **extra_env: str) -> None:
        if port is None:
            super().__init__(store, **extra_env)
            return
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = store.home / f"bentoml-{port}-{time.monotonic_ns()}.log"
        env = {
            **os.environ,
            **store.env,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "BENTOML_HOME": str(store.home / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            **extra_env,
        }
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [str(BENTOML), "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def worker_pids(self) -> list[int]:
        """The supervisor's child processes (the service workers)."""
        return processes_with_parent(self.process.pid)

    def kill_all(self) -> None:
        """SIGKILL the supervisor and every process under it (the workers run in sessions of their own, so
        a process-group kill would miss them): a crash, nothing flushed. The supervisor is stopped
        first, so that it cannot start new workers meanwhile."""
        os.kill(self.process.pid, signal.SIGSTOP)
        descendants, parents = [], [self.process.pid]
        while parents:
            children = processes_with_parent(parents.pop())
            descendants += children
            parents += children
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._log.close()

    def kill_supervisor(self) -> None:
        """SIGKILL the supervisor only; its workers are left to themselves."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def kill_leftovers(self) -> None:
        """Clean-up after a test: SIGKILL the supervisor and its workers if they still run."""
        if self.process.poll() is None:
            self.kill_all()
        if not self._log.closed:
            self._log.close()
