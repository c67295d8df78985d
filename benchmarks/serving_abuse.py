"""Abuse benchmark: valid /score traffic alone, then beside a flood of requests with unknown API keys.

    .venv/bin/python benchmarks/serving_abuse.py [--connections 8] [--duration 20] [--flood-rate 825]
        [--flood-connections 16] [--workers 2] [--orgs 12] [--unlimited] [--json FILE]

The issue this answers (issue 14, item 5): random-key requests at 825 req/s, each a database lookup,
cut valid /score traffic from 275 to 19 req/s. What it shows: with the service's default limits, valid
traffic beside the same flood keeps more than 80% of the requests/s it has alone.

It builds its own store like benchmarks/serving_throughput.py (whose helpers it uses: a seeded SQLite
CRM under a temp NEURACRM_HOME, a trained lead model as champion) and starts `bentoml serve` with
``--workers`` worker processes and the default abuse limits. Then, each for ``--duration`` s:

1. valid traffic alone: wrk on ``--connections`` connections from 127.0.0.1, one lead per request with
   a distinct lead id and the first organization's API key;
2. the same wrk run while a flood runs beside it: a Python asyncio client on ``--flood-connections``
   keep-alive connections from another client address (127.0.0.2), paced to ``--flood-rate`` requests/s
   in all, each request a /score with a fresh random key of the right shape (``ncrm_`` + 43 URL-safe
   characters: what the service cannot refuse without a lookup, unless the address has used up its
   budget of unknown keys). The flood starts 2 s before wrk, so wrk measures the steady state.

``--unlimited`` repeats 1 and 2 on a second server with every rate limit off (the service as it was:
every random key a database lookup) for comparison. Printed: each phase's valid requests/s, p50/p99,
non-2xx; the flood's achieved rate and its answers by status (401 looked up and unknown, 429 refused
without a lookup, and any 5xx); the verdict: valid traffic beside the flood / alone >= 80%.
Needs `wrk` (Debian package `wrk`). The client runs on the same machine as the service (both cores
shared), so the flood's own client cost is part of what valid traffic loses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving_throughput import (
    BIN,
    LEAD,
    REPO,
    WRK_SCRIPT,
    Connection,
    build_store,
    run_wrk,
    say,
    wait_http,
)

from neuracrm_mlops.ops.local_stack import free_port

FLOOD_ADDRESS = "127.0.0.2"
MUST_KEEP = 0.80  # valid requests/s beside the flood, as a share of its rate alone
UNLIMITED = {
    "NEURACRM_RATE_LIMIT_KEY_PER_SECOND": "0",
    "NEURACRM_RATE_LIMIT_ADDRESS_PER_SECOND": "0",
    "NEURACRM_AUTH_FAILURES_PER_SECOND": "0",
}


@dataclass
class Flood:
    """What the flooding client sent and got."""

    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.sent,
            "rps": self.sent / self.seconds if self.seconds else 0.0,
            "401": self.statuses[401],
            "429": self.statuses[429],
            "5xx": sum(n for status, n in self.statuses.items() if status >= 500),
            "other": {str(s): n for s, n in self.statuses.items() if s not in (401, 429) and s < 500},
            "connection_errors": dict(self.errors),
        }


def flood_request(port: int) -> bytes:
    body = json.dumps({"lead": LEAD}).encode()
    key = "ncrm_" + secrets.token_urlsafe(32)
    return (
        f"POST /score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def run_flood(port: int, rate: float, connections: int, stop: threading.Event, flood: Flood) -> None:
    """``rate`` requests/s in all over ``connections`` connections from FLOOD_ADDRESS until ``stop``."""
    interval = connections / rate  # seconds between two requests of one connection

    async def one_connection(offset: float) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(FLOOD_ADDRESS, 0)
                )
            except OSError as exc:
                flood.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            connection = Connection(port, reader, writer)
            due = time.monotonic() + offset
            try:
                while not stop.is_set():
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    due = max(due + interval, time.monotonic() - interval)  # no catch-up burst
                    status, _, _ = await connection.send(flood_request(port))
                    flood.statuses[status] += 1
            except (OSError, SystemExit, asyncio.IncompleteReadError) as exc:
                flood.errors[type(exc).__name__] += 1  # the server closed it: open another one
            finally:
                writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one_connection(i * interval / connections) for i in range(connections)))
    flood.seconds = time.monotonic() - started


def valid_script(key: str, prefix: str) -> str:
    body = json.dumps({"lead": {**LEAD, "lead_id": "__ID__"}})
    return WRK_SCRIPT.format(auth=f'wrk.headers["Authorization"] = "Bearer {key}"', prefix=prefix, body=body)


def measure(port: int, key: str, args: argparse.Namespace, workdir: Path, label: str) -> dict[str, Any]:
    """Phase 1 (valid alone) and phase 2 (valid beside the flood) on the server at ``port``."""
    url = f"http://127.0.0.1:{port}/score"
    say(f"{label}: warming up")
    run_wrk(url, valid_script(key, f"warm{label}"), 4, 3, workdir)
    say(f"{label}: valid traffic alone, {args.connections} connections for {args.duration} s")
    alone = run_wrk(url, valid_script(key, f"alone{label}"), args.connections, args.duration, workdir)
    say(f"{label}: the same beside a flood of {args.flood_rate:g} req/s of unknown keys from {FLOOD_ADDRESS}")
    stop = threading.Event()
    flood = Flood()
    flooder = threading.Thread(
        target=lambda: asyncio.run(run_flood(port, args.flood_rate, args.flood_connections, stop, flood))
    )
    flooder.start()
    time.sleep(2)
    try:
        loaded = run_wrk(url, valid_script(key, f"flood{label}"), args.connections, args.duration, workdir)
    finally:
        stop.set()
        flooder.join(60)
    return {
        "server": label,
        "valid_alone": alone,
        "valid_beside_flood": loaded,
        "kept": loaded["rps"] / alone["rps"] if alone["rps"] else 0.0,
        "flood": flood.summary(),
    }


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "bentoml"), "serve", "neuracrm_mlops.serving.service:PredictionService",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
    )  # fmt: skip


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def print_rows(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n/score, {args.connections} connections of valid traffic (wrk, {args.duration} s), flood "
        f"offered at {args.flood_rate:g} req/s on {args.flood_connections} connections, "
        f"{args.workers} workers"
    )
    header = (
        f"{'server':<18}{'phase':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
        f"{'flood req/s':>13}{'401':>8}{'429':>8}{'5xx':>6}"
    )
    print(header)
    for row in rows:
        for phase, key in (("alone", "valid_alone"), ("beside flood", "valid_beside_flood")):
            r = row[key]
            flood = row["flood"] if phase == "beside flood" else None
            flood_cells = (
                f"{flood['rps']:>13.1f}{flood['401']:>8}{flood['429']:>8}{flood['5xx']:>6}"
                if flood
                else f"{'':>13}{'':>8}{'':>8}{'':>6}"
            )
            print(
                f"{row['server']:<18}{phase:<14}{r['rps']:>9.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
                f"{r['non_2xx'] + r['socket_errors']:>9}{flood_cells}"
            )
    for row in rows:
        verdict = "met" if row["kept"] >= MUST_KEEP else "NOT MET"
        print(
            f"{row['server']}: valid traffic beside the flood = {row['kept']:.1%} of its rate alone "
            f"(must be >= {MUST_KEEP:.0%}: {verdict}); flood answers: {row['flood']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=8, help="connections of valid traffic (wrk)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of each wrk run")
    parser.add_argument("--flood-rate", type=float, default=825.0, help="requests/s of unknown keys offered")
    parser.add_argument("--flood-connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="BentoML worker processes")
    parser.add_argument("--orgs", type=int, default=12, help="seeded organizations")
    parser.add_argument("--unlimited", action="store_true", help="also measure with every rate limit off")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="neuracrm-abuse-bench-"))
    store = build_store(workdir / "home", args.orgs, forecasts=False)
    env = {**store.env, "NEURACRM_SERVING_WORKERS": str(args.workers)}
    servers = {"default limits": env}
    if args.unlimited:
        servers["limits off"] = {**env, **UNLIMITED}
    rows = []
    for label, server_env in servers.items():
        port = free_port()
        process = start_server(server_env, port, workdir / f"bentoml-{port}.log")
        try:
            say(f"{label}: waiting for the server on port {port}")
            wait_http(f"http://127.0.0.1:{port}/readyz", 180, process)
            rows.append(measure(port, store.score_key, args, workdir, label))
        finally:
            stop_server(process)
    print_rows(rows, args)
    invalid = [
        r["server"]
        for r in rows
        if r["valid_alone"]["non_2xx"] or r["valid_beside_flood"]["non_2xx"] or r["flood"]["5xx"]
    ]
    if invalid:
        print(f"NOT VALID: valid traffic got non-2xx answers or the flood got 5xx on: {', '.join(invalid)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print(f"logs and the store: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
