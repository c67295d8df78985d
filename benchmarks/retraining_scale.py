"""Retraining at scale: validate, train and register the sales forecasts of every organization, through
the CLI, through the real DAG on the LocalExecutor and through the real DAG on the CeleryExecutor, on a
fresh seeded store.

    .venv/bin/python benchmarks/retraining_scale.py --orgs 1000 --months 48 --via cli dag
    .venv/bin/python benchmarks/retraining_scale.py --orgs 1000 --via dag celery --workers 2
    .venv/bin/python benchmarks/retraining_scale.py --orgs 1000 --via cli --profile   # + py-spy profile

Each path gets its own store, built the same way: a seeded CRM (``--seed``) and an empty MLflow
registry, both on fresh PostgreSQL databases at 127.0.0.1 (``--store sqlite`` for the embedded
defaults; cli only).

- ``cli``: ``neuracrm-mlops train sales_forecast --workers W`` (W defaults to one per core).
  MLflow: the tracking URI is the PostgreSQL database itself (no server), artifacts on the local disk.
- ``dag``: ``airflow api-server``, ``scheduler`` and ``dag-processor`` (LocalExecutor, metadata on a
  fresh PostgreSQL database, parallelism 2), then ``train_sales_forecast`` triggered once; its mapped
  ``train_forecast_chunk`` tasks run two at a time. MLflow as for ``cli``.
- ``celery``: the same DAG on the CeleryExecutor, as a multi-host deployment runs it
  (``neuracrm_mlops.ops.airflow_cluster``): metadata and Celery results on a fresh PostgreSQL
  database, the broker an empty Redis database of its own (2..9 at 127.0.0.1:6379, flushed
  afterwards), ``--workers`` ``airflow celery worker`` processes of concurrency 1 (default: one per
  core; each with its own working directory, AIRFLOW_HOME, NEURACRM_HOME and Great Expectations copy,
  host name ``worker-<i>``), parallelism and NEURACRM_FORECAST_CHUNK_CONCURRENCY = ``--workers``.
  MLflow: an ``mlflow server`` on the fresh PostgreSQL database with ``--serve-artifacts``, which
  the workers, the seeding and the registry counts reach over HTTP.

``--mlflow server`` gives the ``cli`` and ``dag`` paths the ``celery`` path's MLflow server too (to
compare executors on the same MLflow); ``--chunk-size`` sets NEURACRM_FORECAST_CHUNK_SIZE (50) for
every path; ``--airflow-env NAME=VALUE`` sets an Airflow setting of both DAG paths (e.g.
AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL: a task's supervisor can notice the task process's exit only
at its next heartbeat, up to 5 s later, and holds the worker's slot until then).

The time counted for a DAG is the run's own (start to end as Airflow records it), and separately the
time from the trigger to the run's end; for each DAG path the report also says where the time went:
the phases of the run, each ``train_forecast_chunk`` task (host, idle slot before it, queued -> start
wait, duration, slot held, fitting, registration, the rest), the busy time of each worker, the slots'
utilization, the cost per organization and the fixed cost per task (the method is printed with the
numbers).

Peak memory is the largest sum of resident memory over every process of the path (sampled every
1 s; for the DAG paths every Airflow component, Celery worker and MLflow server, with their
children). ``--profile`` records the CLI run with py-spy (``pip install py-spy``) and says where the
CPU went: each model's fit on the full history and at the backtest origins, the backtest plot, the
pyfunc save, MLflow logging and registration, loading sales, validation and start-up.
Results: a markdown table on stdout, everything as JSON with ``--json FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import inspect
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from neuracrm_mlops.ops import airflow_cluster
from neuracrm_mlops.ops.airflow_cluster import ClusterError, LocalCluster, free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get(
    "NEURACRM_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("NEURACRM_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
# Redis databases the celery path may take as its broker (0 and 1 are the compose stack's cache and
# broker; the live tests take 2-9 and 10-15 the same way: the first empty one, flushed afterwards)
BROKER_DATABASES = range(2, 10)
DAG_ID = "train_sales_forecast"
CHUNK_TASK = "train_forecast_chunk"
DAG_SLOTS = 2  # the dag path's parallelism, and the DAG's default NEURACRM_FORECAST_CHUNK_CONCURRENCY
MLFLOW_DATABASE = "database (no server)"
MLFLOW_SERVER = "mlflow server (served artifacts)"


def say(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)


# --- stores ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def pg_database(purpose: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the run, dropped afterwards; yields its URL."""
    name = f"neuracrm_bench_{purpose}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def redis_broker() -> Iterator[str]:
    """An empty Redis database among BROKER_DATABASES, claimed with a key (so that another run
    looking for an empty one passes it by) and flushed afterwards; yields its URL."""
    import redis

    claim = f"neuracrm-bench-claim-{uuid.uuid4().hex[:8]}"
    for number in BROKER_DATABASES:
        client = redis.Redis.from_url(f"{REDIS_URL}/{number}")
        try:
            if client.dbsize() == 0 and client.set(claim, "1", nx=True) and client.dbsize() == 1:
                break
        except redis.ConnectionError as exc:
            client.close()
            raise SystemExit(f"the celery path needs Redis at {REDIS_URL} as its broker: {exc}") from exc
        client.close()
    else:
        raise SystemExit(f"no empty Redis database among {list(BROKER_DATABASES)} for the Celery broker")
    try:
        yield f"{REDIS_URL}/{number}"
    finally:
        client.flushdb()
        client.close()


@contextlib.contextmanager
def seeded_store(
    args: argparse.Namespace, cluster: LocalCluster, *, mlflow_server: bool
) -> Iterator[dict[str, str]]:
    """NEURACRM_* settings of a store seeded with ``args.orgs`` x ``args.months``; yields the env.
    With ``mlflow_server``, MLflow is an ``mlflow server`` on the store's MLflow database, started in
    ``cluster``; the cluster is stopped before the databases are dropped."""
    root = cluster.root
    home = root / "neuracrm-home"
    home.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NEURACRM", "MLFLOW"))},
            "NEURACRM_HOME": str(home),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        }
        if args.chunk_size:
            env["NEURACRM_FORECAST_CHUNK_SIZE"] = str(args.chunk_size)
        if args.store == "postgres":
            env["NEURACRM_DB_URL"] = stack.enter_context(pg_database("crm"))
            mlflow_db = stack.enter_context(pg_database("mlflow"))
            stack.callback(cluster.stop)
            if mlflow_server:
                say("starting the MLflow server")
                env["MLFLOW_TRACKING_URI"] = airflow_cluster.start_mlflow_server(
                    cluster, backend_url=mlflow_db, env=env
                )
            else:
                env["MLFLOW_TRACKING_URI"] = mlflow_db
        run([str(BIN / "neuracrm-mlops"), "db", "upgrade"], env, root / "db-upgrade.log")
        seed = [str(BIN / "neuracrm-mlops"), "seed", "--orgs", str(args.orgs), "--months", str(args.months)]
        started = time.monotonic()
        run([*seed, "--seed", str(args.seed)], env, root / "seed.log")
        say(f"seeded {args.orgs} organizations x {args.months} months in {time.monotonic() - started:.0f} s")
        yield env


def run(argv: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("w") as out:
        result = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed (exit {result.returncode}); see {log}")


# --- measuring ---------------------------------------------------------------------------------------


@dataclass
class MemorySampler:
    """Peak of the summed RSS of ``roots`` and all their descendants, sampled in a thread; at that
    peak, the share of each root (named by ``names``) with its descendants."""

    roots: list[int]
    names: dict[int, str] = field(default_factory=dict)
    interval: float = 1.0
    peak_total_mib: float = 0.0
    peak_process_mib: float = 0.0
    peak_processes: int = 0
    peak_by_root: dict[str, dict[str, float]] = field(default_factory=dict)
    # CPU seconds (user + system) last seen per process, by root name: a process that ends between
    # two samples loses at most one interval of its time
    _cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        procs: dict[int, tuple[int, psutil.Process]] = {}
        for pid in self.roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                procs[pid] = (pid, root)
                for child in root.children(recursive=True):
                    procs[child.pid] = (pid, child)
        sizes = []
        by_root: dict[str, dict[str, float]] = {}
        for root_pid, proc in procs.values():
            with contextlib.suppress(psutil.Error):
                size = proc.memory_info().rss / 2**20
                sizes.append(size)
                share = by_root.setdefault(
                    self.names.get(root_pid, str(root_pid)), {"mib": 0, "processes": 0}
                )
                share["mib"] += size
                share["processes"] += 1
                times = proc.cpu_times()
                self._cpu[proc.pid] = (self.names.get(root_pid, str(root_pid)), times.user + times.system)
        if sizes:
            if sum(sizes) > self.peak_total_mib:
                self.peak_by_root = by_root
            self.peak_total_mib = max(self.peak_total_mib, sum(sizes))
            self.peak_process_mib = max(self.peak_process_mib, *sizes)
            self.peak_processes = max(self.peak_processes, len(sizes))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def cpu_by_root(self) -> dict[str, float]:
        """CPU seconds spent by each root and its descendants while sampled (from their start)."""
        totals: dict[str, float] = {}
        for name, seconds in self._cpu.values():
            totals[name] = totals.get(name, 0.0) + seconds
        return totals

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


def registry_counts(env: dict[str, str]) -> dict[str, int]:
    """Model versions per status tag, and challenger aliases, in the run's MLflow registry."""
    code = (
        "import json\n"
        "from neuracrm_mlops.store import registry\n"
        "c = registry.configure_mlflow()\n"
        "versions = c.search_model_versions(\"name LIKE 'sales_forecast_org_%'\", max_results=50000)\n"
        "counts = {}\n"
        "for v in versions:\n"
        "    counts[v.tags.get('status', '?')] = counts.get(v.tags.get('status', '?'), 0) + 1\n"
        "counts['versions'] = len(versions)\n"
        "print(json.dumps(counts))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=300
    )
    counts: dict[str, int] = json.loads(result.stdout.strip().splitlines()[-1])
    return counts


@dataclass
class PathResult:
    via: str
    organizations: int
    months: int
    store: str
    mlflow: str  # the MLflow the path used: the database itself, or an mlflow server on it
    seconds: float  # the training's own time (CLI: whole command incl. validation; DAG: the run)
    seconds_end_to_end: float
    peak_rss_mib: float
    peak_process_rss_mib: float
    peak_processes: int
    registered: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def per_org_ms(self) -> float:
        return 1000 * self.seconds / self.organizations


def mlflow_label(args: argparse.Namespace, via: str) -> str:
    return MLFLOW_SERVER if via == "celery" or args.mlflow == "server" else MLFLOW_DATABASE


# --- the CLI path ---------------------------------------------------------------------------------


def bench_cli(args: argparse.Namespace, env: dict[str, str], cluster: LocalCluster) -> PathResult:
    root = cluster.root
    argv = [str(BIN / "neuracrm-mlops"), "train", "sales_forecast"]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    profile = root / "profile.txt"
    if args.profile:
        py_spy = shutil.which("py-spy") or str(BIN / "py-spy")
        argv = [
            py_spy,
            "record",
            "--rate",
            "25",
            "--subprocesses",
            "--format",
            "raw",
            "-o",
            str(profile),
            "--",
            *argv,
        ]
    log = root / "train-cli.log"
    say(f"CLI: {' '.join(argv[-4:])} (log: {log})")
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        # the MLflow server too, with --mlflow server
        with MemorySampler([process.pid, *(p.pid for p in cluster.processes.values())]) as memory:
            code = process.wait()
    seconds = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"the CLI run failed (exit {code}); see {log}")
    output = log.read_text(errors="replace")
    summary = re.findall(r"^sales_forecast_org_\*: .*$", output, flags=re.M)
    details: dict[str, Any] = {"summary": summary[-1] if summary else None, "log": str(log)}
    if args.profile:
        details["profile"] = summarize_profile(profile)
    return PathResult(
        via="cli",
        organizations=args.orgs,
        months=args.months,
        store=args.store,
        mlflow=mlflow_label(args, "cli"),
        seconds=seconds,
        seconds_end_to_end=seconds,
        peak_rss_mib=memory.peak_total_mib,
        peak_process_rss_mib=memory.peak_process_mib,
        peak_processes=memory.peak_processes,
        registered=registry_counts(env),
        details=details,
    )


# --- the DAG paths ----------------------------------------------------------------------------------


def airflow_env(env: dict[str, str], root: Path, metadata_url: str, port: int) -> dict[str, str]:
    """The dag path's Airflow: LocalExecutor, parallelism 2."""
    url = f"http://127.0.0.1:{port}"
    return {
        **env,
        "AIRFLOW_HOME": str(root / "airflow-home"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(DAG_SLOTS),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the run triggered here
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }


def bench_dag(args: argparse.Namespace, env: dict[str, str], cluster: LocalCluster) -> PathResult:
    port = free_port()
    with pg_database("airflow") as metadata_url:
        aenv = {**airflow_env(env, cluster.root, metadata_url, port), **args.airflow_env}
        say("airflow db migrate")
        cluster.run("airflow-db-migrate", [str(BIN / "airflow"), "db", "migrate"], aenv, timeout=900)
        components = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
        }
        try:
            for name, component in components.items():
                cluster.start(name, [str(BIN / "airflow"), *component], aenv)
            return _run_the_dag(args, "dag", env, aenv, cluster, metadata_url, slots=DAG_SLOTS)
        finally:
            cluster.stop()  # before the metadata database goes (the MLflow server too, if any)


def bench_celery(args: argparse.Namespace, env: dict[str, str], cluster: LocalCluster) -> PathResult:
    workers = args.workers or os.cpu_count() or 1
    with pg_database("airflow") as metadata_url, redis_broker() as broker_url:
        aenv = airflow_cluster.celery_airflow_environment(
            base={**env, "AIRFLOW_HOME": str(cluster.root / "airflow-home")},
            metadata_url=metadata_url,
            broker_url=broker_url,
            api_port=free_port(),
            dags_folder=REPO / "dags",
            plugins_folder=REPO / "plugins",
            jwt_secret=secrets.token_hex(32),
        )
        aenv |= {
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the run triggered here
            # as many task instances at once as the workers run (the dag path: 2 on its 2 slots)
            "AIRFLOW__CORE__PARALLELISM": str(workers),
            # train_forecast_chunk's max_active_tis_per_dagrun, read when the DAG is parsed
            "NEURACRM_FORECAST_CHUNK_CONCURRENCY": str(workers),
            **args.airflow_env,
        }
        say(f"airflow db migrate, then Airflow with {workers} Celery workers (broker {broker_url})")
        try:
            names = airflow_cluster.start_airflow(
                cluster, aenv, workers=workers, expectations=REPO / "expectations"
            )
            # a run triggered before the workers listen would count their start-up as queueing
            cluster.wait_for(
                lambda: all(_celery_worker_ready(cluster.logs[name]) for name in names),
                "the Celery workers ready",
                300,
                poll=1,
            )
            result = _run_the_dag(args, "celery", env, aenv, cluster, metadata_url, slots=workers)
        finally:
            cluster.stop()  # before the metadata and broker databases go (the MLflow server too)
        result.details["workers"] = names
        return result


def _celery_worker_ready(log: Path) -> bool:
    return log.exists() and " ready." in log.read_text(errors="replace")


def _run_the_dag(
    args: argparse.Namespace,
    via: str,
    env: dict[str, str],
    aenv: dict[str, str],
    cluster: LocalCluster,
    metadata_url: str,
    *,
    slots: int,
) -> PathResult:
    """Wait for the DAG to be parsed, trigger it once and wait for the run's end (memory sampled over
    every process of ``cluster``); the run's times, tasks and registry counts (while the cluster, and
    so an MLflow server in it, still runs)."""
    metadata = sa.create_engine(metadata_url)
    try:
        say(f"{via}: Airflow started (logs: {cluster.root}/*.log); waiting for {DAG_ID} to be parsed")
        cluster.wait_for(lambda: _dag_known(metadata), "the DAG parsed", 300, poll=1)
        names = {p.pid: name for name, p in cluster.processes.items()}
        with MemorySampler(list(names), names) as memory:
            triggered = time.monotonic()
            cluster.run("trigger", [str(BIN / "airflow"), "dags", "trigger", DAG_ID], aenv)
            say(f"triggered {DAG_ID}; waiting for the run to end")
            state = cluster.wait_for(lambda: _run_state(metadata), "the DAG run to end", args.timeout, poll=1)
            end_to_end = time.monotonic() - triggered
        if state != "success":
            raise SystemExit(f"the DAG run ended {state}; see {cluster.root}/*.log and the task logs")
        run_row, tasks = _run_details(metadata, _workload_seconds(cluster.logs.values()))
        registered = registry_counts(env)
    finally:
        metadata.dispose()
    seconds = (run_row["end_date"] - run_row["start_date"]).total_seconds()
    return PathResult(
        via=via,
        organizations=args.orgs,
        months=args.months,
        store=args.store,
        mlflow=mlflow_label(args, via),
        seconds=seconds,
        seconds_end_to_end=end_to_end,
        peak_rss_mib=memory.peak_total_mib,
        peak_process_rss_mib=memory.peak_process_mib,
        peak_processes=memory.peak_processes,
        registered=registered,
        details={
            "peak_memory_by_component": memory.peak_by_root,
            "cpu_seconds_by_component": memory.cpu_by_root(),
            "tasks": tasks,
            "where_the_time_goes": where_the_time_goes(run_row, tasks, args.orgs, slots),
            "logs": str(cluster.root),
        },
    )


def _dag_known(metadata: sa.Engine) -> bool:
    with contextlib.suppress(sa.exc.DBAPIError), metadata.connect() as conn:
        return bool(conn.scalar(sa.text("SELECT count(*) FROM dag WHERE dag_id = :d"), {"d": DAG_ID}))
    return False


def _run_state(metadata: sa.Engine) -> str | None:
    with metadata.connect() as conn:
        state = conn.scalar(sa.text("SELECT state FROM dag_run WHERE dag_id = :d"), {"d": DAG_ID})
    return state if state in ("success", "failed") else None


def _workload_seconds(logs: Any) -> dict[str, float]:
    """Seconds of each task instance's whole workload (its id: the supervisor's start to the task
    process's exit and the logs' end) from the executors' "Workload finished" lines in ``logs``
    (LocalExecutor: the scheduler's, Celery: each worker's): how long the task held its slot."""
    seconds: dict[str, float] = {}
    for log in logs:
        if not Path(log).exists():
            continue
        for line in Path(log).read_text(errors="replace").splitlines():
            if "Workload finished" not in line:
                continue
            workload = re.search(r"workload_id=([0-9a-f-]+)", line)
            duration = re.search(r"duration=([0-9.]+)", line)
            if workload and duration:
                seconds[workload.group(1)] = float(duration.group(1))
    return seconds


def _run_details(
    metadata: sa.Engine, workloads: dict[str, float]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's start and end, and each task instance: where and when it ran, how long it held its
    executor slot (``workloads``) and, for the chunks, what their XCom says (organizations, the
    seconds of each organization's fit, the library's own)."""
    with metadata.connect() as conn:
        run_row = dict(
            conn.execute(sa.text("SELECT start_date, end_date FROM dag_run WHERE dag_id = :d"), {"d": DAG_ID})
            .one()
            ._mapping
        )
        rows = conn.execute(
            sa.text(
                "SELECT id, task_id, map_index, state, try_number, hostname, queued_dttm, start_date, "
                "end_date, duration FROM task_instance WHERE dag_id = :d ORDER BY start_date"
            ),
            {"d": DAG_ID},
        ).all()
        xcoms = {
            r.map_index: r.value
            for r in conn.execute(
                sa.text(
                    "SELECT map_index, value FROM xcom WHERE dag_id = :d AND task_id = :t "
                    "AND key = 'return_value'"
                ),
                {"d": DAG_ID, "t": CHUNK_TASK},
            )
        }
    start = run_row["start_date"]
    tasks = []
    for r in rows:
        task: dict[str, Any] = {
            "task_id": r.task_id,
            "map_index": r.map_index,
            "state": r.state,
            "try_number": r.try_number,
            "hostname": r.hostname,
            "seconds": float(r.duration or 0.0),
            "started_after": (r.start_date - start).total_seconds() if r.start_date else None,
            "ended_after": (r.end_date - start).total_seconds() if r.end_date else None,
            "queued_to_start": (
                (r.start_date - r.queued_dttm).total_seconds() if r.start_date and r.queued_dttm else None
            ),
            "workload_seconds": workloads.get(str(r.id)),
        }
        if r.task_id == CHUNK_TASK:
            task |= _chunk_summary(xcoms.get(r.map_index))
        tasks.append(task)
    return run_row, tasks


def _chunk_summary(value: Any) -> dict[str, Any]:
    """Organizations, their fitting seconds and the library's seconds, from a chunk's XCom
    (``ForecastTrainingSummary.as_dict``; a JSON string or the parsed value, as Airflow stored it)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    if not isinstance(value, dict):
        return {}
    organizations = value.get("organizations") or []
    fits = [float(o.get("seconds") or 0.0) for o in organizations]
    return {
        "organizations": len(organizations),
        "fit_seconds": [round(s, 3) for s in fits if s > 0],  # load + fit + pyfunc save + plot, each
        "library_seconds": float(value.get("seconds") or 0.0),  # the chunk's work inside the library
    }


def where_the_time_goes(
    run_row: dict[str, Any], tasks: list[dict[str, Any]], organizations: int, slots: int
) -> dict[str, Any]:
    """The DAG run's phases, the chunks' waits and durations, the workers' busy time, the slots'
    utilization, the cost per organization and the fixed cost per task (see ``method``)."""
    run_seconds = (run_row["end_date"] - run_row["start_date"]).total_seconds()
    chunks = [t for t in tasks if t["task_id"] == CHUNK_TASK and t["started_after"] is not None]
    if not chunks:
        return {}
    durations = [t["seconds"] for t in chunks]
    busy = sum(durations)
    first = min(t["started_after"] for t in chunks)
    last = max(t["ended_after"] for t in chunks if t["ended_after"] is not None)
    phase = last - first
    per_host: dict[str, dict[str, float]] = {}
    for t in chunks:
        host = per_host.setdefault(t["hostname"] or "?", {"tasks": 0, "busy_seconds": 0.0})
        host["tasks"] += 1
        host["busy_seconds"] += t["seconds"]
    waits = [t["queued_to_start"] for t in chunks if t["queued_to_start"] is not None]
    # a chunk's start - the latest end, before it, of a task on its host: the slot's idle time between
    # tasks (for the dag path's one host of 2 slots, the slot freed last; the first tasks have none)
    gaps = []
    for t in chunks:
        ends = [
            o["ended_after"]
            for o in tasks
            if o["hostname"] == t["hostname"]
            and o["ended_after"] is not None
            and o["ended_after"] <= t["started_after"]
        ]
        if ends:
            t["idle_before_seconds"] = t["started_after"] - max(ends)
            gaps.append(t["idle_before_seconds"])
    held = [t["workload_seconds"] - t["seconds"] for t in chunks if t.get("workload_seconds") is not None]
    fits = [s for t in chunks for s in t.get("fit_seconds", [])]
    fit_median = statistics.median(fits) if fits else None
    fixed: list[float] = []
    outside: list[float] = []
    registration: list[float] = []
    for t in chunks:
        if "organizations" not in t:
            continue
        if fit_median is not None:
            t["fixed_seconds"] = t["seconds"] - t["organizations"] * fit_median
            fixed.append(t["fixed_seconds"])
        t["registration_seconds"] = t["library_seconds"] - sum(t["fit_seconds"])
        t["outside_library_seconds"] = t["seconds"] - t["library_seconds"]
        registration.append(t["registration_seconds"])
        outside.append(t["outside_library_seconds"])
    chunk_orgs = sum(t.get("organizations", 0) for t in chunks)
    others = [t for t in tasks if t["task_id"] != CHUNK_TASK and t["started_after"] is not None]
    before = [t for t in others if t["ended_after"] is not None and t["ended_after"] <= first]
    after = [t for t in others if t["started_after"] >= last]
    return {
        "slots": slots,
        "run_seconds": run_seconds,
        "before_first_chunk_seconds": first,
        "before_first_chunk_tasks": {t["task_id"]: t["seconds"] for t in before},
        "chunk_phase_seconds": phase,
        "after_last_chunk_seconds": run_seconds - last,
        "after_last_chunk_tasks": {t["task_id"]: t["seconds"] for t in after},
        "chunk_tasks": len(chunks),
        "chunk_seconds_sum": busy,
        "chunk_seconds_min": min(durations),
        "chunk_seconds_median": statistics.median(durations),
        "chunk_seconds_max": max(durations),
        "utilization_run": busy / (run_seconds * slots) if run_seconds > 0 else None,
        "utilization_chunk_phase": busy / (phase * slots) if phase > 0 else None,
        "queued_to_start_median": statistics.median(waits) if waits else None,
        "queued_to_start_max": max(waits) if waits else None,
        "idle_before_chunk_median": statistics.median(gaps) if gaps else None,
        "idle_before_chunk_max": max(gaps) if gaps else None,
        "slot_held_beyond_duration_median": statistics.median(held) if held else None,
        "per_worker": dict(sorted(per_host.items())),
        "organizations": organizations,
        "organizations_in_chunks": chunk_orgs,
        "per_organization_seconds": busy / organizations,
        "fit_per_organization_median": fit_median,
        "fixed_per_task_median": statistics.median(fixed) if fixed else None,
        "fixed_seconds_sum": sum(fixed) if fixed else None,
        "registration_per_task_median": statistics.median(registration) if registration else None,
        "outside_library_per_task_median": statistics.median(outside) if outside else None,
        "method": (
            "per organization = sum of chunk task durations / organizations; fit per organization = "
            "median over organizations of the seconds each took inside its chunk to load its sales, fit, "
            "save the pyfunc and plot (the chunk's XCom); fixed cost of a task (upper bound) = its "
            "duration - organizations in it x that median, i.e. all but the fitting: MLflow logging and "
            "registration (library seconds - the fits' sum; one logged model and version per "
            "organization, so mostly not fixed) and what Airflow spends outside the library (lower "
            "bound: duration - library seconds: task process start-up, imports, DAG parse, XCom)"
        ),
    }


# --- the profile ----------------------------------------------------------------------------------


# py-spy names a frame's file from the top of its package: models/forecasting/backtest.py in a checkout,
# neuracrm_mlops/models/forecasting/backtest.py when installed
FORECASTER_CODE = "models/forecasting/"
BACKTEST_FILE = f"{FORECASTER_CODE}backtest.py"


def _origin_lines() -> tuple[int, int]:
    """Line numbers, in the forecaster's backtest.py, of the fit on the full history and of the refit at
    each backtest origin (the two calls of a model's function in ``_run_backtested_level``)."""
    from neuracrm_mlops.models.forecasting import backtest

    lines, first = inspect.getsourcelines(backtest._run_backtested_level)
    full = next(first + i for i, line in enumerate(lines) if "_MODELS[name].fn(y, " in line)
    origin = next(first + i for i, line in enumerate(lines) if "_MODELS[name].fn(y[:o]" in line)
    return full, origin


MODEL_FUNCTIONS = {
    "_fc_prophet": "Prophet",
    "_fc_arima": "ARIMA",
    "_fc_ets": "ETS",
    "_fc_theta": "Theta",
    "_fc_linear": "linear regression",
    "_fc_seasonal_naive": "seasonal naive",
}


def categorize(stack: str, full_line: int, origin_line: int) -> str:
    """The part of the work a sampled stack belongs to (frames outermost first)."""
    if "validate_for_training" in stack:
        return "validation (Great Expectations)"
    if "register_fitted_chunk" in stack or "_split_existing" in stack:
        return "MLflow logging and registration"
    if "save_backtest_chart" in stack or "_backtest_plot" in stack:  # now, and in profiles of before
        return "backtest plot"
    if "save_model (" in stack or ("joblib" in stack and "fit_organizations" in stack):
        return "pyfunc save"
    if "load_sales_history" in stack:
        return "loading sales"
    for function, model in MODEL_FUNCTIONS.items():
        if f"{function} (" in stack:
            where = "backtest origins" if f"{BACKTEST_FILE}:{origin_line})" in stack else "full history"
            if f"{BACKTEST_FILE}:{full_line})" not in stack and where == "full history":
                where = "other"
            return f"{model}: {where}"
    if FORECASTER_CODE in stack:
        return "forecaster: rest (seasonality, weights, intervals)"
    return "start-up, imports, idle workers and the rest"


def summarize_profile(path: Path) -> dict[str, Any]:
    """CPU samples per category from py-spy's raw output (``stack count`` per line)."""
    full_line, origin_line = _origin_lines()
    samples: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        if "(idle)" in stack or (stack.startswith("process") and stack.count(";") < 2):
            continue
        samples[categorize(stack, full_line, origin_line)] += int(count)
    total = sum(samples.values())
    return {
        "samples": total,
        "shares": {k: round(v / total, 4) for k, v in samples.most_common()} if total else {},
    }


# --- report ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "date": dt.date.today().isoformat(),
    }


def _seconds(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} s"


def table(results: list[PathResult]) -> str:
    lines = [
        "| path | organizations | store | MLflow | time | per organization | peak memory (all processes) "
        "| largest process | versions registered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        minutes, secs = divmod(r.seconds, 60)
        registered = ", ".join(f"{v} {k}" for k, v in sorted(r.registered.items()) if k != "versions")
        lines.append(
            f"| {r.via} | {r.organizations} x {r.months} months | {r.store} | {r.mlflow} "
            f"| {int(minutes)} min {secs:.0f} s "
            f"| {r.per_org_ms:.0f} ms | {r.peak_rss_mib:,.0f} MiB ({r.peak_processes} processes) "
            f"| {r.peak_process_rss_mib:,.0f} MiB | {r.registered.get('versions', 0)} ({registered}) |"
        )
    for r in results:
        if "profile" in r.details:
            lines += [
                "",
                f"Where the CPU went ({r.via}, {r.details['profile']['samples']:,} py-spy samples):",
                "",
            ]
            lines += ["| part | share |", "|---|---|"]
            lines += [f"| {k} | {v:.1%} |" for k, v in r.details["profile"]["shares"].items()]
        if r.via in ("dag", "celery"):
            lines += dag_section(r)
    return "\n".join(lines)


def _phase(seconds: float, tasks: dict[str, float]) -> str:
    """``12.0 s (validate_sales 8.0 s + plan_forecast_chunks 3.0 s + 1.0 s between tasks)``"""
    if not tasks:
        return f"{seconds:.1f} s"
    parts = [f"{name} {value:.1f} s" for name, value in tasks.items()]
    return f"{seconds:.1f} s ({' + '.join(parts)} + {seconds - sum(tasks.values()):.1f} s between tasks)"


def dag_section(r: PathResult) -> list[str]:
    w = r.details.get("where_the_time_goes") or {}
    slots = w.get("slots", DAG_SLOTS)
    how = (
        f"LocalExecutor, parallelism {slots}"
        if r.via == "dag"
        else f"CeleryExecutor, {slots} workers of concurrency 1"
    )
    chunks = [t for t in r.details["tasks"] if t["task_id"] == CHUNK_TASK]
    others = [t for t in r.details["tasks"] if t["task_id"] != CHUNK_TASK]
    lines = [
        "",
        f"{r.via} ({how}; MLflow: {r.mlflow}): DAG run {r.seconds:.0f} s; "
        f"trigger to end: {r.seconds_end_to_end:.0f} s",
    ]
    lines += [f"- {t['task_id']}: {t['seconds']:.1f} s" for t in others]
    if chunks:
        durations = sorted(t["seconds"] for t in chunks)
        lines.append(
            f"- {CHUNK_TASK}: {len(chunks)} mapped tasks, {min(durations):.0f}-"
            f"{max(durations):.0f} s each, {sum(durations):.0f} s in all"
        )
    if not w:
        return lines
    lines += [
        "",
        f"Where the time goes ({r.via}):",
        "",
        f"- phases of the run: {_phase(w['before_first_chunk_seconds'], w['before_first_chunk_tasks'])} "
        f"before the first chunk started, {w['chunk_phase_seconds']:.1f} s from the first chunk's start to "
        f"the last one's end, {_phase(w['after_last_chunk_seconds'], w['after_last_chunk_tasks'])} after "
        "it (between tasks: the scheduler's loop, queueing, dispatch and task start-up up to start_date)",
        f"- utilization of the {slots} slots: sum of chunk durations / (DAG run x {slots}) = "
        f"{w['chunk_seconds_sum']:.0f} / ({w['run_seconds']:.0f} x {slots}) = {w['utilization_run']:.0%}; "
        f"over the chunk phase only: {w['utilization_chunk_phase'] or 0:.0%}",
        f"- queued -> start (task_instance.queued_dttm -> start_date) of the chunks: median "
        f"{_seconds(w['queued_to_start_median'], 2)}, max {_seconds(w['queued_to_start_max'], 2)}; "
        f"a slot's idle time before a chunk (its start - the last end of a task on its host): median "
        f"{_seconds(w['idle_before_chunk_median'])}, max {_seconds(w['idle_before_chunk_max'])}; a "
        f"chunk's slot held beyond its duration (the supervisor's whole workload, from the executor's "
        f"log, - the duration): median {_seconds(w['slot_held_beyond_duration_median'])}",
        f"- per organization: sum of chunk durations / organizations = {w['chunk_seconds_sum']:.0f} s / "
        f"{w['organizations']} = {w['per_organization_seconds']:.2f} s; of which fitting (median per "
        f"organization, inside its chunk: load, fit, pyfunc save, plot) "
        f"{_seconds(w['fit_per_organization_median'], 2)}",
        f"- fixed cost per task (medians): at most {_seconds(w['fixed_per_task_median'])} = duration - "
        f"organizations in it x the median fit ({_seconds(w['fixed_seconds_sum'], 0)} over all "
        f"{w['chunk_tasks']} tasks), of which MLflow logging and registration (library seconds - the "
        f"fits; one logged model and version per organization, so mostly per organization, not fixed) "
        f"{_seconds(w['registration_per_task_median'])}; at least "
        f"{_seconds(w['outside_library_per_task_median'])} = Airflow outside the library (duration - "
        f"library seconds: task start-up, imports, DAG parse, XCom)",
        "",
        "| worker | tasks | busy | share of the chunk phase |",
        "|---|---|---|---|",
    ]
    phase = w["chunk_phase_seconds"] or 0.0
    for host, h in w["per_worker"].items():
        share = f"{h['busy_seconds'] / phase:.0%}" if phase > 0 else "-"
        lines.append(f"| {host} | {h['tasks']:.0f} | {h['busy_seconds']:.1f} s | {share} |")
    peak = r.details.get("peak_memory_by_component") or {}
    if peak:
        parts = [
            f"{name} {p['mib']:,.0f} MiB ({p['processes']:.0f})"
            for name, p in sorted(peak.items(), key=lambda item: -item[1]["mib"])
        ]
        lines += ["", f"Peak memory by component (MiB, processes): {', '.join(parts)}"]
    cpu = r.details.get("cpu_seconds_by_component") or {}
    if cpu:
        total = sum(cpu.values())
        parts = [
            f"{name} {seconds:,.0f} s ({seconds / r.organizations * 1000:,.0f} ms/org)"
            for name, seconds in sorted(cpu.items(), key=lambda item: -item[1])
        ]
        lines += [
            "",
            f"CPU by component (user + system, from each process's start; {total:,.0f} s in all, "
            f"{total / r.organizations * 1000:,.0f} ms per organization): {', '.join(parts)}",
        ]
    if len(chunks) <= 60:
        lines += [
            "",
            "| chunk | host | organizations | started after | idle before | queued -> start | duration "
            "| slot held | fitting | registration | outside the library | fixed (estimate) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for t in sorted(chunks, key=lambda t: t["map_index"]):
            lines.append(
                f"| {t['map_index']} | {t['hostname']} | {t.get('organizations', '-')} "
                f"| {_seconds(t['started_after'])} | {_seconds(t.get('idle_before_seconds'))} "
                f"| {_seconds(t['queued_to_start'], 2)} | {t['seconds']:.1f} s "
                f"| {_seconds(t.get('workload_seconds'))} | {_seconds(sum(t.get('fit_seconds', [])))} "
                f"| {_seconds(t.get('registration_seconds'))} | {_seconds(t.get('outside_library_seconds'))} "
                f"| {_seconds(t.get('fixed_seconds'))} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--months", type=int, default=48)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--via", nargs="+", choices=["cli", "dag", "celery"], default=["cli", "dag"])
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="cli: fitting processes; celery: Celery workers of concurrency 1 (default: one per core)",
    )
    parser.add_argument(
        "--mlflow",
        choices=["database", "server"],
        default="database",
        help="MLflow of the cli and dag paths: the PostgreSQL database itself (default) or an mlflow "
        "server on it with served artifacts (the celery path always uses a server)",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="NEURACRM_FORECAST_CHUNK_SIZE of every path (default 50)"
    )
    parser.add_argument(
        "--airflow-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of every Airflow process of the dag and celery paths, over the "
        "script's own (e.g. AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1); repeatable",
    )
    parser.add_argument("--profile", action="store_true", help="record the CLI run with py-spy")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the DAG run")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep logs under this directory")
    args = parser.parse_args()
    if args.store == "sqlite" and {"dag", "celery"} & set(args.via):
        parser.error("the DAG paths need --store postgres (two mapped tasks write the registry at once)")
    if args.store == "sqlite" and args.mlflow == "server":
        parser.error("--mlflow server needs --store postgres")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if any("=" not in item for item in args.airflow_env):
        parser.error("--airflow-env takes NAME=VALUE")
    args.airflow_env = dict(item.split("=", 1) for item in args.airflow_env)
    bench = {"cli": bench_cli, "dag": bench_dag, "celery": bench_celery}
    results = []
    for via in args.via:
        root = Path(tempfile.mkdtemp(prefix=f"bench-retrain-{via}-", dir=args.keep))
        cluster = LocalCluster(root)
        server = via == "celery" or args.mlflow == "server"
        try:
            with seeded_store(args, cluster, mlflow_server=server) as env:
                result = bench[via](args, env, cluster)
        except ClusterError as exc:
            raise SystemExit(f"{via}: {exc}") from exc
        finally:
            cluster.stop()
        say(f"{via}: {result.seconds:.0f} s, peak {result.peak_rss_mib:,.0f} MiB, {result.registered}")
        results.append(result)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(table(results))
    if args.json:
        report = {"machine": machine(), "command": sys.argv, "results": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
