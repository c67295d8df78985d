"""Serving benchmark: requests/s and latency percentiles of the BentoML service's ``/score`` (beside the
same lead model behind `mlflow models serve`) and of its ``/forecast`` with the forecast cache warm and cold.

    .venv/bin/python benchmarks/serving_throughput.py [--endpoints score forecast] [--connections 8 32]
        [--duration 20] [--workers 2] [--orgs 40] [--journal on off fsync-each] [--json FILE]

It builds its own store under a temp NEURACRM_HOME: a seeded CRM on SQLite (``--orgs`` organizations,
24 months), a trained lead model as champion and, for /forecast, every organization's forecast model
(``neuracrm-mlops train sales_forecast``; each that passed its gate promoted to champion the same way).
NEURACRM_REDIS_URL is removed from the environment, so the forecast cache is the in-process one: one
per worker, keyed by (organization, model version, months). Then it starts the servers on free ports.

/score: `mlflow models serve` and the BentoML service in turn, warmed up (3 s), then wrk at each
``--connections`` for ``--duration`` s; one lead per request, a distinct lead id per request so that
routing and logging do real work.

/forecast (the BentoML service; organizations with a forecast champion, each with its own API key):
- first use: before any other forecast request, one connection asks each organization for 12 months,
  in sequence: each request loads the organization's model from MLflow into the worker that answers
  (and misses the cache). Not a throughput figure: what the first caller of an organization waits.
- Then at each ``--connections`` count, on that many keep-alive connections of a small Python asyncio
  client (raw HTTP/1.1; a connection stays on one worker for its life). First every connection asks every
  organization for 12 months once (so every worker reached has loaded every model and cached those keys),
  then, measured:
  - cold: every request a cache miss. Each request is a distinct (organization, months) key with months in
    1..24 except 12, never asked before in this run (the organizations x 23 keys are shuffled once and
    split between the connection counts), so the run is a fixed number of requests, not a duration:
    req/s = requests / time from the first request sent to the last answer. The model is already loaded;
    a miss computes the forecast from it, formats it and stores it in the cache. Model loading is not in
    it (that is "first use"). With the defaults (40 organizations, 8 and 32 connections): 460 requests each.
  - warm (python): as many requests on the same connections, the organizations for 12 months in turn, so
    every request is a cache hit: the like-for-like reference for cold. The client shares the machine with
    the service; its cost per request is the same in both, so compare cold with this row.
  - warm (wrk): wrk for ``--duration`` s at that connection count, the organizations for 12 months in turn
    (all cache hits), comparable with the /score rows. Before it, any worker the client's connections did not
    reach is found on new connections and primed the same way.
  The kernel deals connections out to the workers: when the client's connections reached fewer workers than
  there are, the cold and warm (python) rows say so (still valid and like for like, but not the whole
  service's capacity).
  Checked, not assumed: the service's own cache counters (``/status``, hits and misses of the worker that
  answers) are read on each connection before and after each phase. A cold phase counts only if no hit
  counter moved and each worker's misses grew by exactly the requests its connections sent; a warm (python)
  phase only if no miss counter moved and the hits grew by exactly the requests sent; warm (wrk) only if,
  on one connection per worker kept open during it (a /healthz a second), no miss counter moved and the hits
  grew by at least wrk's requests. Every /forecast answer of the Python client must also come from the
  model (not the seasonal naive fallback).

The prediction journal (every logged row appended to a local file before the answer leaves, see
``prediction_log``): ``--journal`` runs the BentoML /score measurement once per mode, each on a fresh
server: ``on`` (the default settings: NEURACRM_PREDICTION_JOURNAL=on, fsync every 0.2 s), ``off``
(NEURACRM_PREDICTION_JOURNAL=off: the cost of the journal is on minus off) and ``fsync-each``
(NEURACRM_PREDICTION_JOURNAL_FSYNC_SECONDS=0: fsync before each answer). /forecast runs with the first mode.

``--endpoints score`` alone runs what this script ran before /forecast was added (no forecasts trained).
A run only counts when every response was 2xx (and the /forecast counters agree); the script says so when
one was not. Needs `wrk` (Debian package `wrk`). Results go to stdout as tables and as JSON (--json FILE,
one object per table row).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from neuracrm_mlops.ops.local_stack import free_port
from neuracrm_mlops.serving.schemas import MAX_MONTHS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICE = "neuracrm BentoML service"
WARM_MONTHS = 12  # what the warm /forecast requests ask for; the cold ones ask for every other horizon
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
# /forecast warm: the organizations' API keys in turn, always the same months (cache hits)
FORECAST_WRK_SCRIPT = """
local keys = {__KEYS__}
local body = '{"months": __MONTHS__}'
local requests = {}
local counter = 0
init = function(args)
  for i, key in ipairs(keys) do
    local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}
    requests[i] = wrk.format("POST", nil, headers, body)
  end
end
request = function()
  counter = counter + 1
  return requests[counter % #requests + 1]
end
"""
# the Python promotion step: the lead model's challenger to champion (and the rule baseline), then each
# given organization's forecast challenger to champion; prints {"lead": version, "forecasts": {org: version}}
PROMOTE = """
import json, sys
from neuracrm_mlops.store import registry
from neuracrm_mlops.training.train import ensure_rule_baseline
c = registry.configure_mlflow()

def promote(name):
    v = registry.alias_version(c, name, 'challenger')
    if v is None:
        return None
    c.set_registered_model_alias(name, 'champion', v.version)
    c.delete_registered_model_alias(name, 'challenger')
    return v.version

lead = promote('lead_scoring')
if lead is None:
    raise SystemExit('the lead model has no challenger to promote')
ensure_rule_baseline()
forecasts = {org: promote(registry.forecast_model_name(int(org))) for org in sys.argv[1:]}
print(json.dumps({'lead': lead, 'forecasts': {o: v for o, v in forecasts.items() if v is not None}}))
"""


def say(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)


@dataclass
class Store:
    env: dict[str, str]
    lead_version: str
    score_key: str  # the first organization's API key (what /score uses)
    forecast_keys: dict[
        int, str
    ]  # organization id -> API key, for the organizations with a forecast champion


def build_store(home: Path, orgs: int, *, forecasts: bool) -> Store:
    """Seed, train and promote a lead model (and with ``forecasts`` every organization's forecast model)."""
    env = {
        **os.environ,
        "NEURACRM_HOME": str(home),
        "NEURACRM_ACCURACY_FLOOR": "0.5",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow serve execs uvicorn
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(home / "bentoml"),
    }
    env.pop("NEURACRM_REDIS_URL", None)  # the forecast cache is the in-process one
    cli = str(BIN / "neuracrm-mlops")
    steps = [["db", "upgrade"], ["seed", "--orgs", str(orgs), "--months", "24"], ["train", "lead_scoring"]]
    if forecasts:
        steps.append(["train", "sales_forecast"])
    for args in steps:
        say(" ".join(["neuracrm-mlops", *args]))
        subprocess.run([cli, *args], env=env, check=True, capture_output=True, text=True)
    with (home / "api_keys.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    keys = {int(row["organization_id"]): row["api_key"] for row in rows}
    promoted = json.loads(
        subprocess.run(
            [sys.executable, "-c", PROMOTE, *(map(str, keys) if forecasts else [])],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()[-1]
    )
    return Store(
        env=env,
        lead_version=str(promoted["lead"]),
        score_key=rows[0]["api_key"],
        forecast_keys={int(org): keys[int(org)] for org in promoted["forecasts"]},
    )


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


# --- /forecast ------------------------------------------------------------------------------------


def http_request(port: int, method: str, path: str, *, key: str | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def forecast_request(port: int, key: str, months: int) -> bytes:
    return http_request(port, "POST", "/forecast", key=key, body=json.dumps({"months": months}).encode())


class Connection:
    """One keep-alive HTTP/1.1 connection, so one server worker for its whole life (it refuses to go on
    when the server closes it). Raw asyncio streams keep the client's own cost per request small."""

    def __init__(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.port = port
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(port, reader, writer)

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()

    async def send(self, request: bytes) -> tuple[int, bytes, float]:
        """(status, body, seconds from sending to the whole answer read)."""
        started = time.perf_counter()
        self._writer.write(request)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise SystemExit("the server closed a benchmark connection (it must stay on one worker)") from exc
        status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked()
        else:
            raise SystemExit(f"an answer with neither Content-Length nor chunked encoding: {head!r}")
        if headers.get("connection", "").lower() == "close":
            raise SystemExit("the server closed a benchmark connection (it must stay on one worker)")
        return int(status_line.split(" ", 2)[1]), body, time.perf_counter() - started

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self._reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append((await self._reader.readexactly(size + 2))[:-2])

    async def cache_counters(self) -> tuple[int, int]:
        """(hits, misses) of the forecast cache of the worker behind this connection."""
        status, body, _ = await self.send(http_request(self.port, "GET", "/status/"))
        if status != 200:
            raise SystemExit(f"/status answered {status}: {body[:300]!r}")
        cache = json.loads(body)["forecast_cache"]
        if cache["backend"] != "memory":
            raise SystemExit(f"the forecast cache is {cache['backend']}, not the in-process one")
        return int(cache["hits"]), int(cache["misses"])


@dataclass
class Phase:
    """What one batch of requests on a set of connections gave."""

    latencies: list[float] = field(default_factory=list)  # seconds
    statuses: Counter[int] = field(default_factory=Counter)
    sent: list[int] = field(default_factory=list)  # requests per connection
    fallbacks: int = 0  # 2xx answers that came from the fallback, not the model
    seconds: float = 0.0
    first_error: str | None = None


async def drive(connections: list[Connection], requests: list[bytes]) -> Phase:
    """Send ``requests`` (each once) over ``connections``, each connection taking the next one as soon as
    its previous one was answered."""
    phase = Phase(sent=[0] * len(connections))
    pending = iter(requests)

    async def run(index: int, connection: Connection) -> None:
        for request in pending:
            status, body, seconds = await connection.send(request)
            phase.latencies.append(seconds)
            phase.statuses[status] += 1
            phase.sent[index] += 1
            if not 200 <= status < 300:
                phase.first_error = phase.first_error or f"{status}: {body[:300]!r}"
            elif b'"fallback":false' not in body:
                phase.fallbacks += 1
                phase.first_error = phase.first_error or f"answered by a fallback: {body[:300]!r}"

    started = time.perf_counter()
    await asyncio.gather(*(run(i, c) for i, c in enumerate(connections)))
    phase.seconds = time.perf_counter() - started
    return phase


Counters = tuple[int, int]  # (hits, misses) of one worker's forecast cache


def check_counters(
    before: list[Counters], after: list[Counters], sent: list[int], expect: str
) -> dict[str, Any]:
    """Did every request of a phase hit (``expect="hit"``) or miss (``"miss"``) the cache, by the service's
    own counters read on each connection before and after it?

    Connections on the same worker read the same counters (no other traffic), so grouping them by
    (before, after) gives the workers; two workers that read exactly alike would merge into one group,
    whose counts then cannot match: the check fails rather than passes wrongly.
    """
    groups: Counter[tuple[Counters, Counters]] = Counter()
    for b, a, n in zip(before, after, sent, strict=True):
        groups[(b, a)] += n
    hits = sum(a[0] - b[0] for b, a in groups)
    misses = sum(a[1] - b[1] for b, a in groups)
    column, other = (1, 0) if expect == "miss" else (0, 1)
    ok = all(a[other] == b[other] and a[column] - b[column] == n for (b, a), n in groups.items())
    return {"expect": expect, "ok": ok, "workers_seen": len(groups), "hits": hits, "misses": misses}


def phase_row(
    cache: str, client: str, connections: int, phase: Phase, check: dict[str, Any]
) -> dict[str, Any]:
    ms = sorted(seconds * 1000 for seconds in phase.latencies)

    def percentile(p: float) -> float:
        return ms[max(0, math.ceil(p / 100 * len(ms)) - 1)] if ms else float("nan")

    if phase.first_error:
        say(f"/forecast {cache} at {connections} connections: {phase.first_error}")
    return {
        "server": SERVICE,
        "endpoint": "/forecast",
        "cache": cache,
        "client": client,
        "connections": connections,
        "requests": len(ms),
        "rps": len(ms) / phase.seconds if phase.seconds else float("nan"),
        "p50_ms": percentile(50),
        "p90_ms": percentile(90),
        "p99_ms": percentile(99),
        "non_2xx": sum(n for status, n in phase.statuses.items() if not 200 <= status < 300),
        "socket_errors": 0,
        "fallbacks": phase.fallbacks,
        "check": check,
    }


async def _keep_alive(connections: list[Connection], stop: asyncio.Event) -> None:
    """A /healthz a second on each connection, so that the server keeps it (and it stays on its worker)."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            for connection in connections:
                await connection.send(http_request(connection.port, "GET", "/healthz"))


async def bench_forecast(
    port: int, keys: dict[int, str], connection_counts: list[int], duration: int, workers: int, workdir: Path
) -> list[dict[str, Any]]:
    """The /forecast rows: first use, then per connection count cold, warm (python) and warm (wrk)."""
    api_keys = [keys[org] for org in sorted(keys)]
    warm = [forecast_request(port, key, WARM_MONTHS) for key in api_keys]
    cold_keys = [(org, m) for org in sorted(keys) for m in range(1, MAX_MONTHS + 1) if m != WARM_MONTHS]
    random.Random(0).shuffle(cold_keys)
    share = math.ceil(len(cold_keys) / len(connection_counts))
    rows: list[dict[str, Any]] = []

    say(f"/forecast first use: {len(api_keys)} organizations in sequence")
    first = [await Connection.open(port)]
    before = [await first[0].cache_counters()]
    phase = await drive(first, warm)
    check = check_counters(before, [await first[0].cache_counters()], phase.sent, "miss")
    rows.append(phase_row("first use", "python", 1, phase, check))
    await first[0].close()

    for i, count in enumerate(connection_counts):
        cold_slice = cold_keys[i * share : (i + 1) * share]
        assert len(set(cold_slice)) == len(cold_slice)  # distinct keys, disjoint from the other slices
        say(f"/forecast, {count} connections: priming, {len(cold_slice)} cold, as many warm, wrk")
        connections = [await Connection.open(port) for _ in range(count)]
        primed = await asyncio.gather(*(drive([c], warm) for c in connections))
        for p in primed:
            if p.first_error:
                raise SystemExit(f"/forecast priming failed: {p.first_error}")
        counters0 = [await c.cache_counters() for c in connections]

        cold = await drive(connections, [forecast_request(port, keys[org], m) for org, m in cold_slice])
        counters1 = [await c.cache_counters() for c in connections]
        check = check_counters(counters0, counters1, cold.sent, "miss")
        rows.append({**phase_row("cold", "python", count, cold, check), "distinct_keys": len(cold_slice)})

        hot = await drive(connections, [warm[j % len(warm)] for j in range(len(cold_slice))])
        counters2 = [await c.cache_counters() for c in connections]
        rows.append(
            phase_row("warm", "python", count, hot, check_counters(counters1, counters2, hot.sent, "hit"))
        )
        for row in rows[-2:]:
            if row["check"]["workers_seen"] < workers:  # valid, but not the whole service's capacity
                row["check"]["note"] = (
                    f"its connections reached {row['check']['workers_seen']} of {workers} workers"
                )

        # wrk: its connections may reach a worker these did not (the kernel deals connections out), and
        # that worker must have loaded the models and cached the warm keys too. Keep one connection per
        # worker (quiescent workers' counters differ by now) to read the counters before and after wrk;
        # a new connection reading counters no kept one reads is on another worker: prime it and keep it.
        observers: dict[Counters, Connection] = {}
        for connection, counters in zip(connections, counters2, strict=True):
            if counters in observers:
                await connection.close()
            else:
                observers[counters] = connection
        for _ in range(50):
            if len(observers) >= workers:
                break
            connection = await Connection.open(port)
            if await connection.cache_counters() in observers:
                await connection.close()
                continue
            priming = await drive([connection], warm)
            if priming.first_error:
                raise SystemExit(f"/forecast priming failed: {priming.first_error}")
            observers[await connection.cache_counters()] = connection
        before = [await c.cache_counters() for c in observers.values()]
        stop = asyncio.Event()
        pinger = asyncio.create_task(_keep_alive(list(observers.values()), stop))
        script = FORECAST_WRK_SCRIPT.replace("__KEYS__", ", ".join(f'"{k}"' for k in api_keys)).replace(
            "__MONTHS__", str(WARM_MONTHS)
        )
        result = await asyncio.to_thread(
            run_wrk, f"http://127.0.0.1:{port}/forecast", script, count, duration, workdir
        )
        stop.set()
        await pinger
        after = [await c.cache_counters() for c in observers.values()]
        hits = sum(a[0] - b[0] for b, a in zip(before, after, strict=True))
        misses = sum(a[1] - b[1] for b, a in zip(before, after, strict=True))
        ok = len(observers) == workers and misses == 0 and hits >= result["requests"]
        check = {"expect": "hit", "ok": ok, "workers_seen": len(observers), "hits": hits, "misses": misses}
        if len(observers) < workers:
            check["note"] = f"the counters of only {len(observers)} of {workers} workers could be read"
        rows.append({"server": SERVICE, "endpoint": "/forecast", "cache": "warm", "client": "wrk", **result,
                     "check": check})  # fmt: skip
        for connection in observers.values():
            await connection.close()
    return rows


JOURNAL_MODES: dict[str, dict[str, str]] = {
    "on": {"NEURACRM_PREDICTION_JOURNAL": "on"},
    "off": {"NEURACRM_PREDICTION_JOURNAL": "off"},
    "fsync-each": {"NEURACRM_PREDICTION_JOURNAL": "on", "NEURACRM_PREDICTION_JOURNAL_FSYNC_SECONDS": "0"},
}


def service_name(mode: str, modes: list[str]) -> str:
    """The BentoML row's name: plain with the default journal alone, else with the mode."""
    return SERVICE if modes == ["on"] else f"{SERVICE} [journal {mode}]"


def print_score_table(rows: list[dict[str, Any]], connection_counts: list[int]) -> None:
    width = max([26, *(len(r["server"]) + 2 for r in rows)])
    print(
        f"{'server':<{width}}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
    )
    for r in rows:
        print(
            f"{r['server']:<{width}}{r['connections']:>6}{r['rps']:>10.1f}{r['p50_ms']:>9.1f}"
            f"{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['non_2xx'] + r['socket_errors']:>9}"
        )
    for connections in connection_counts:
        by_server = {r["server"]: r for r in rows if r["connections"] == connections}
        mlflow = by_server.pop("mlflow models serve", None)
        for name, row in by_server.items():
            if mlflow is not None:
                ratio = row["rps"] / mlflow["rps"]
                print(f"{connections} connections: {name} / mlflow models serve = {ratio:.1f}x requests/s")
        off = by_server.get(f"{SERVICE} [journal off]")
        for mode in ("on", "fsync-each"):
            journaled = by_server.get(f"{SERVICE} [journal {mode}]")
            if off is not None and journaled is not None:
                share = journaled["rps"] / off["rps"]
                print(
                    f"{connections} connections: journal {mode} vs off: {share:.1%} of"
                    f" the requests/s, p50 {journaled['p50_ms'] - off['p50_ms']:+.2f} ms,"
                    f" p99 {journaled['p99_ms'] - off['p99_ms']:+.2f} ms"
                )


def print_forecast_table(rows: list[dict[str, Any]], organizations: int) -> None:
    print(f"\n/forecast of the {SERVICE}, {organizations} organizations (in-process forecast cache)")
    print(
        f"{'cache':<11}{'client':<8}{'conns':>6}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'non-2xx':>9}  service's cache counters"
    )
    for r in rows:
        c = r["check"]
        verdict = ("ok" if c["ok"] else "NOT CONFIRMED") + (f" ({c['note']})" if "note" in c else "")
        print(
            f"{r['cache']:<11}{r['client']:<8}{r['connections']:>6}{r['requests']:>10}{r['rps']:>10.1f}"
            f"{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['non_2xx'] + r['socket_errors'] + r.get('fallbacks', 0):>9}"
            f"  {verdict}: {c['hits']} hits, {c['misses']} misses, {c['workers_seen']} worker(s)"
        )
    for connections in sorted({r["connections"] for r in rows if r["cache"] == "cold"}):
        pair = {r["cache"]: r for r in rows if r["connections"] == connections and r["client"] == "python"}
        ratio = pair["cold"]["rps"] / pair["warm"]["rps"]
        p50 = pair["cold"]["p50_ms"] / pair["warm"]["p50_ms"]
        print(
            f"{connections} connections: cold / warm (same client) = {ratio:.2f}x requests/s, {p50:.2f}x p50"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--endpoints", nargs="+", choices=["score", "forecast"], default=["score", "forecast"]
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--duration", type=int, default=20, help="seconds of each wrk run")
    parser.add_argument(
        "--orgs",
        type=int,
        default=40,
        help="seeded organizations (the lead model's data; forecasts for each)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--journal",
        nargs="+",
        choices=sorted(JOURNAL_MODES),
        default=["on"],
        help="prediction journal modes to measure /score with (one BentoML server each)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="BentoML worker processes (NEURACRM_SERVING_WORKERS)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    score, forecast = "score" in args.endpoints, "forecast" in args.endpoints

    workdir = Path(tempfile.mkdtemp(prefix="neuracrm-serving-bench-"))
    store = build_store(workdir / "home", args.orgs, forecasts=forecast)
    if forecast and not store.forecast_keys:
        raise SystemExit("no organization's forecast model passed its gate: nothing to serve on /forecast")
    env, version, key = store.env, store.lead_version, store.score_key
    env["NEURACRM_SERVING_WORKERS"] = str(args.workers)
    names = ["mlflow", "bentoml"] if score else ["bentoml"]
    logs = {name: (workdir / f"{name}.log").open("w") for name in names}
    mlflow_port, bento_port = free_port(), free_port()
    servers = {}
    if score:
        servers["mlflow"] = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/lead_scoring/{version}",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(mlflow_port)],
            env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'home' / 'mlflow.sqlite'}"},
            stdout=logs["mlflow"], stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def start_bentoml(mode: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(BIN / "bentoml"), "serve", "neuracrm_mlops.serving.service:PredictionService",
             "--host", "127.0.0.1", "--port", str(bento_port)],
            env={**env, **JOURNAL_MODES[mode]}, stdout=logs["bentoml"], stderr=subprocess.STDOUT,
            start_new_session=True, cwd=REPO,
        )  # fmt: skip

    def stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)

    modes = list(dict.fromkeys(args.journal))
    servers["bentoml"] = start_bentoml(modes[0])
    results: list[dict[str, Any]] = []
    forecast_rows: list[dict[str, Any]] = []
    try:
        say("waiting for the servers")
        if score:
            wait_http(f"http://127.0.0.1:{mlflow_port}/ping", 180, servers["mlflow"])
        wait_http(f"http://127.0.0.1:{bento_port}/readyz", 180, servers["bentoml"])
        if score:
            mlflow_body = json.dumps({"dataframe_records": [LEAD]})
            bento_body = json.dumps({"lead": {**LEAD, "lead_id": "__ID__"}})
            targets: dict[str, tuple[str, str, str | None]] = {
                "mlflow models serve": (
                    f"http://127.0.0.1:{mlflow_port}/invocations",
                    WRK_SCRIPT.format(auth="", prefix="m", body=mlflow_body),
                    None,
                ),
            }
            for mode in modes:
                targets[service_name(mode, modes)] = (
                    f"http://127.0.0.1:{bento_port}/score",
                    WRK_SCRIPT.format(
                        auth=f'wrk.headers["Authorization"] = "Bearer {key}"',
                        prefix=f"b{mode}",
                        body=bento_body,
                    ),
                    mode,
                )
            for name, (url, script, mode) in targets.items():
                if mode is not None and mode != modes[0]:  # a fresh BentoML server for this mode
                    stop(servers["bentoml"])
                    servers["bentoml"] = start_bentoml(mode)
                    wait_http(f"http://127.0.0.1:{bento_port}/readyz", 180, servers["bentoml"])
                say(f"warming up {name}")
                run_wrk(url, script.replace('prefix = "', 'prefix = "warm'), 4, 3, workdir)
                for connections in args.connections:
                    say(f"{name}: {connections} connections for {args.duration} s")
                    row = run_wrk(url, script, connections, args.duration, workdir)
                    results.append({"server": name, "endpoint": "/score", **row})
        if forecast:
            if score and len(modes) > 1:  # /forecast on the first mode
                stop(servers["bentoml"])
                servers["bentoml"] = start_bentoml(modes[0])
                wait_http(f"http://127.0.0.1:{bento_port}/readyz", 180, servers["bentoml"])
            forecast_rows = asyncio.run(
                bench_forecast(
                    bento_port, store.forecast_keys, args.connections, args.duration, args.workers, workdir
                )
            )
    finally:
        for process in servers.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)
        for handle in logs.values():
            handle.close()

    if score:
        print_score_table(results, args.connections)
    if forecast:
        print_forecast_table(forecast_rows, len(store.forecast_keys))
    results += forecast_rows
    if any(r["non_2xx"] or r["socket_errors"] or r.get("fallbacks") for r in results):
        print("NOT VALID: some responses were not 2xx (see the table)")
    if any(not r["check"]["ok"] for r in forecast_rows):
        print("NOT VALID: the service's cache counters do not confirm a /forecast row (see the table)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"logs and the store: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
