"""Retraining at scale: validate, train and register the sales forecasts of every organization, through
the CLI and through the real DAG (scheduler, LocalExecutor, mapped tasks), on a fresh seeded store.

    .venv/bin/python benchmarks/retraining_scale.py --orgs 1000 --months 48 --via cli dag
    .venv/bin/python benchmarks/retraining_scale.py --orgs 1000 --via cli --profile   # + py-spy profile

Each path gets its own store, built the same way: a seeded CRM (``--seed``) and an empty MLflow
registry, both on fresh PostgreSQL databases at 127.0.0.1 (``--store sqlite`` for the embedded
defaults), MLflow artifacts on the local disk.

- ``cli``: ``neuracrm-mlops train sales_forecast --workers W`` (W defaults to one per core).
- ``dag``: ``airflow api-server``, ``scheduler`` and ``dag-processor`` (LocalExecutor, metadata on a
  fresh PostgreSQL database, parallelism 2), then ``train_sales_forecast`` triggered once; its mapped
  ``train_forecast_chunk`` tasks run two at a time. The time counted is the DAG run's own (start to
  end as Airflow records it), and separately the time from the trigger to the run's end.

Peak memory is the largest sum of resident memory over every process of the path (sampled every
1 s). ``--profile`` records the CLI run with py-spy (``pip install py-spy``) and says where the
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
import shutil
import signal
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

from neuracrm_mlops.ops.local_stack import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get(
    "NEURACRM_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DAG_ID = "train_sales_forecast"


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
def seeded_store(args: argparse.Namespace, root: Path) -> Iterator[dict[str, str]]:
    """NEURACRM_* settings of a store seeded with ``args.orgs`` x ``args.months``; yields the env."""
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
        if args.store == "postgres":
            env["NEURACRM_DB_URL"] = stack.enter_context(pg_database("crm"))
            env["MLFLOW_TRACKING_URI"] = stack.enter_context(pg_database("mlflow"))
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
    """Peak of the summed RSS of ``roots`` and all their descendants, sampled in a thread."""

    roots: list[int]
    interval: float = 1.0
    peak_total_mib: float = 0.0
    peak_process_mib: float = 0.0
    peak_processes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        procs: dict[int, psutil.Process] = {}
        for pid in self.roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                procs[pid] = root
                for child in root.children(recursive=True):
                    procs[child.pid] = child
        sizes = []
        for proc in procs.values():
            with contextlib.suppress(psutil.Error):
                sizes.append(proc.memory_info().rss / 2**20)
        if sizes:
            self.peak_total_mib = max(self.peak_total_mib, sum(sizes))
            self.peak_process_mib = max(self.peak_process_mib, *sizes)
            self.peak_processes = max(self.peak_processes, len(sizes))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

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


# --- the CLI path ---------------------------------------------------------------------------------


def bench_cli(args: argparse.Namespace, env: dict[str, str], root: Path) -> PathResult:
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
        with MemorySampler([process.pid]) as memory:
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
        "cli",
        args.orgs,
        args.months,
        args.store,
        seconds,
        seconds,
        memory.peak_total_mib,
        memory.peak_process_mib,
        memory.peak_processes,
        registry_counts(env),
        details,
    )


# --- the DAG path ---------------------------------------------------------------------------------


def airflow_env(env: dict[str, str], root: Path, metadata_url: str, port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    return {
        **env,
        "AIRFLOW_HOME": str(root / "airflow-home"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
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


def bench_dag(args: argparse.Namespace, env: dict[str, str], root: Path) -> PathResult:
    port = free_port()
    with pg_database("airflow") as metadata_url:
        aenv = airflow_env(env, root, metadata_url, port)
        say("airflow db migrate")
        run([str(BIN / "airflow"), "db", "migrate"], aenv, root / "airflow-db-migrate.log")
        processes: dict[str, subprocess.Popen[bytes]] = {}
        components = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
        }
        metadata = sa.create_engine(metadata_url)
        try:
            for name, component in components.items():
                with (root / f"{name}.log").open("wb") as out:
                    processes[name] = subprocess.Popen(
                        [str(BIN / "airflow"), *component],
                        env=aenv,
                        cwd=root,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            say(f"Airflow components started (logs: {root}/*.log); waiting for {DAG_ID} to be parsed")
            wait_for(lambda: _dag_known(metadata), "the DAG parsed", processes, 300)
            with MemorySampler([p.pid for p in processes.values()]) as memory:
                triggered = time.monotonic()
                run([str(BIN / "airflow"), "dags", "trigger", DAG_ID], aenv, root / "trigger.log")
                say(f"triggered {DAG_ID}; waiting for the run to end")
                state = wait_for(lambda: _run_state(metadata), "the DAG run to end", processes, args.timeout)
                end_to_end = time.monotonic() - triggered
            run_row, tasks = _run_details(metadata)
        finally:
            metadata.dispose()
            stop(processes.values())
    if state != "success":
        raise SystemExit(f"the DAG run ended {state}; see {root}/scheduler.log and the task logs")
    seconds = (run_row["end_date"] - run_row["start_date"]).total_seconds()
    return PathResult(
        "dag",
        args.orgs,
        args.months,
        args.store,
        seconds,
        end_to_end,
        memory.peak_total_mib,
        memory.peak_process_mib,
        memory.peak_processes,
        registry_counts(env),
        {"tasks": tasks, "logs": str(root)},
    )


def _dag_known(metadata: sa.Engine) -> bool:
    with contextlib.suppress(sa.exc.DBAPIError), metadata.connect() as conn:
        return bool(conn.scalar(sa.text("SELECT count(*) FROM dag WHERE dag_id = :d"), {"d": DAG_ID}))
    return False


def _run_state(metadata: sa.Engine) -> str | None:
    with metadata.connect() as conn:
        state = conn.scalar(sa.text("SELECT state FROM dag_run WHERE dag_id = :d"), {"d": DAG_ID})
    return state if state in ("success", "failed") else None


def _run_details(metadata: sa.Engine) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with metadata.connect() as conn:
        run_row = dict(
            conn.execute(sa.text("SELECT start_date, end_date FROM dag_run WHERE dag_id = :d"), {"d": DAG_ID})
            .one()
            ._mapping
        )
        rows = conn.execute(
            sa.text(
                "SELECT task_id, map_index, state, try_number, start_date, end_date, duration "
                "FROM task_instance WHERE dag_id = :d ORDER BY start_date"
            ),
            {"d": DAG_ID},
        ).all()
    tasks = [
        {
            "task_id": r.task_id,
            "map_index": r.map_index,
            "state": r.state,
            "try_number": r.try_number,
            "seconds": float(r.duration or 0.0),
            "started_after": (r.start_date - run_row["start_date"]).total_seconds() if r.start_date else None,
        }
        for r in rows
    ]
    return run_row, tasks


def wait_for(condition: Any, what: str, processes: dict[str, subprocess.Popen[bytes]], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
        if dead:
            raise SystemExit(f"Airflow components exited while waiting for {what}: {dead}")
        result = condition()
        if result:
            return result
        time.sleep(1.0)
    raise SystemExit(f"{what}: not within {timeout:.0f} s")


def stop(processes: Any) -> None:
    running = [p for p in processes if p.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in running:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


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


def table(results: list[PathResult]) -> str:
    lines = [
        "| path | organizations | store | time | per organization | peak memory (all processes) "
        "| largest process | versions registered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        minutes, secs = divmod(r.seconds, 60)
        registered = ", ".join(f"{v} {k}" for k, v in sorted(r.registered.items()) if k != "versions")
        lines.append(
            f"| {r.via} | {r.organizations} x {r.months} months | {r.store} "
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
        if r.via == "dag":
            chunks = [t for t in r.details["tasks"] if t["task_id"] == "train_forecast_chunk"]
            others = [t for t in r.details["tasks"] if t["task_id"] != "train_forecast_chunk"]
            lines += ["", f"DAG run: {r.seconds:.0f} s; trigger to end: {r.seconds_end_to_end:.0f} s"]
            lines += [f"- {t['task_id']}: {t['seconds']:.1f} s" for t in others]
            if chunks:
                durations = sorted(t["seconds"] for t in chunks)
                lines.append(
                    f"- train_forecast_chunk: {len(chunks)} mapped tasks, {min(durations):.0f}-"
                    f"{max(durations):.0f} s each, {sum(durations):.0f} s in all"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--months", type=int, default=48)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--via", nargs="+", choices=["cli", "dag"], default=["cli", "dag"])
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument(
        "--workers", type=int, default=None, help="CLI fitting processes (default: one per core)"
    )
    parser.add_argument("--profile", action="store_true", help="record the CLI run with py-spy")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the DAG run")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep logs under this directory")
    args = parser.parse_args()
    if args.store == "sqlite" and "dag" in args.via:
        parser.error("the DAG path needs --store postgres (two mapped tasks write the registry at once)")
    results = []
    for via in args.via:
        root = Path(tempfile.mkdtemp(prefix=f"bench-retrain-{via}-", dir=args.keep))
        with seeded_store(args, root) as env:
            result = bench_cli(args, env, root) if via == "cli" else bench_dag(args, env, root)
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
