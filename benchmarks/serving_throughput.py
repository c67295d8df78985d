"""Serving benchmark: the same lead model behind `mlflow models serve` and behind the BentoML service,
loaded in one run with wrk at the same concurrency; requests/s and latency percentiles for each.

    .venv/bin/python benchmarks/serving_throughput.py [--connections 8 32] [--duration 20] [--workers 2]

It builds its own store under a temp NEURACRM_HOME (seeded CRM on SQLite, a trained lead model as
champion), starts both servers on free ports, warms them up, then runs wrk against each in turn
(one lead per request, a distinct lead id per request so that routing and logging do real work).
A run only counts when every response was 2xx; the script says so when one was not.
Needs `wrk` (Debian package `wrk`). Results go to stdout as a table and as JSON (--json FILE).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LEAD = {
    "industry": "Software",
    "company_employees": 250,
    "company_revenue": 2.5e7,
    "email_opens": 6,
    "website_visits": 9,
    "pages_viewed": 31,
    "time_on_site_seconds": 840.0,
    "days_since_last_activity": 2,
    "job_title": "VP of Sales",
    "seniority": "vp",
    "timeline": "this_quarter",
    "budget_signal": "approved",
    "description": "Asked for a quote and a pilot next month",
    "source": "webinar",
    "region": "emea",
}
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}
local counter = 0
local prefix = "{prefix}"
local body = [[{body}]]
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, string.gsub(body, "__ID__", prefix .. counter))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)


def build_store(home: Path, orgs: int) -> tuple[dict[str, str], str, str]:
    """Seed, train and promote a lead model; returns (env, model version, an API key)."""
    env = {
        **os.environ,
        "NEURACRM_HOME": str(home),
        "NEURACRM_ACCURACY_FLOOR": "0.5",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow serve execs uvicorn
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(home / "bentoml"),
    }
    cli = str(BIN / "neuracrm-mlops")
    for args in (
        ["db", "upgrade"],
        ["seed", "--orgs", str(orgs), "--months", "24"],
        ["train", "lead_scoring"],
    ):
        say(" ".join(["neuracrm-mlops", *args]))
        subprocess.run([cli, *args], env=env, check=True, capture_output=True, text=True)
    code = (
        "from neuracrm_mlops import registry\n"
        "from neuracrm_mlops.training import ensure_rule_baseline\n"
        "c = registry.configure_mlflow()\n"
        "v = registry.alias_version(c, 'lead_scoring', 'challenger')\n"
        "c.set_registered_model_alias('lead_scoring', 'champion', v.version)\n"
        "c.delete_registered_model_alias('lead_scoring', 'challenger')\n"
        "ensure_rule_baseline()\n"
        "print(v.version)\n"
    )
    version = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    with (home / "api_keys.csv").open() as handle:
        key = handle.read().splitlines()[1].split(",")[-1]
    return env, version, key


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early ({process.returncode}); see its log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready within {timeout} s")


def run_wrk(url: str, script: str, connections: int, duration: int, workdir: Path) -> dict[str, Any]:
    lua = workdir / f"wrk-{abs(hash((url, connections)))}.lua"
    lua.write_text(script)
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout

    def percentile(name: str) -> float:
        match = re.search(rf"^\s*{name}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "connections": connections,
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": percentile("50"),
        "p90_ms": percentile("90"),
        "p99_ms": percentile("99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--duration", type=int, default=20, help="seconds of load per server and concurrency")
    parser.add_argument("--orgs", type=int, default=40, help="seeded organizations for training the model")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--workers", type=int, default=2, help="BentoML worker processes (NEURACRM_SERVING_WORKERS)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="neuracrm-serving-bench-"))
    env, version, key = build_store(workdir / "home", args.orgs)
    env["NEURACRM_SERVING_WORKERS"] = str(args.workers)
    logs = {name: (workdir / f"{name}.log").open("w") for name in ("mlflow", "bentoml")}
    mlflow_port, bento_port = free_port(), free_port()
    servers = {
        "mlflow": subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/lead_scoring/{version}",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(mlflow_port)],
            env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'home' / 'mlflow.sqlite'}"},
            stdout=logs["mlflow"], stderr=subprocess.STDOUT, start_new_session=True,
        ),
        "bentoml": subprocess.Popen(
            [str(BIN / "bentoml"), "serve", "neuracrm_mlops.serving.service:PredictionService",
             "--host", "127.0.0.1", "--port", str(bento_port)],
            env=env, stdout=logs["bentoml"], stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
        ),
    }  # fmt: skip
    results: list[dict[str, Any]] = []
    try:
        say("waiting for both servers")
        wait_http(f"http://127.0.0.1:{mlflow_port}/ping", 180, servers["mlflow"])
        wait_http(f"http://127.0.0.1:{bento_port}/readyz", 180, servers["bentoml"])
        mlflow_body = json.dumps({"dataframe_records": [LEAD]})
        bento_body = json.dumps({"lead": {**LEAD, "lead_id": "__ID__"}})
        targets = {
            "mlflow models serve": (
                f"http://127.0.0.1:{mlflow_port}/invocations",
                WRK_SCRIPT.format(auth="", prefix="m", body=mlflow_body),
            ),
            "neuracrm BentoML service": (
                f"http://127.0.0.1:{bento_port}/score",
                WRK_SCRIPT.format(
                    auth=f'wrk.headers["Authorization"] = "Bearer {key}"', prefix="b", body=bento_body
                ),
            ),
        }
        for name, (url, script) in targets.items():
            say(f"warming up {name}")
            run_wrk(url, script.replace('prefix = "', 'prefix = "warm'), 4, 3, workdir)
            for connections in args.connections:
                say(f"{name}: {connections} connections for {args.duration} s")
                results.append({"server": name, **run_wrk(url, script, connections, args.duration, workdir)})
    finally:
        for process in servers.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)
        for handle in logs.values():
            handle.close()

    print(f"{'server':<26}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for r in results:
        print(
            f"{r['server']:<26}{r['connections']:>6}{r['rps']:>10.1f}{r['p50_ms']:>9.1f}"
            f"{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['non_2xx'] + r['socket_errors']:>9}"
        )
    for connections in args.connections:
        pair = {r["server"]: r for r in results if r["connections"] == connections}
        if len(pair) == 2:
            ratio = pair["neuracrm BentoML service"]["rps"] / pair["mlflow models serve"]["rps"]
            print(
                f"{connections} connections: BentoML service / mlflow models serve = {ratio:.1f}x requests/s"
            )
    if any(r["non_2xx"] or r["socket_errors"] for r in results):
        print("NOT VALID: some responses were not 2xx (see the table)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"logs and the store: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
