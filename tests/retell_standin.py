"""A local stand-in for Retell AI's API, for the publishing tests (tests/integration/test_scenarios.py).

Only the two endpoints ``release.retell_publish`` calls through retell-sdk, with the paths, methods
and response shapes of the SDK's own code (retell/resources/llm.py ``update``,
retell/types/llm_response.py; retell/resources/agent.py ``update``, retell/types/agent_response.py):

- ``PATCH /update-retell-llm/{llm_id}`` -> a Retell LLM (``llm_id``, ``version``,
  ``last_modification_timestamp``, the fields sent)
- ``PATCH /update-agent/{agent_id}`` -> an agent (``agent_id``, ``version``, ``voice_id``,
  ``response_engine``, ``last_modification_timestamp``)

It checks ``Authorization: Bearer <key>`` (401 otherwise), knows the LLMs and agents it is given
(404 otherwise), records every request (method, path, headers, JSON body), and can be told to answer
the next requests with an error (``fail_next``). Each update of an LLM or agent raises its version by
one, so a test can tell which version was read back; that numbering is the stand-in's, not a claim
about how Retell numbers drafts.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class RetellStandIn:
    api_key: str
    llms: dict[str, dict[str, Any]] = field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- setup ----------------------------------------------------------------------------------

    def add_llm(self, llm_id: str, version: int = 0) -> None:
        self.llms[llm_id] = {"llm_id": llm_id, "version": version, "is_published": False}

    def add_agent(self, agent_id: str, llm_id: str, version: int = 0) -> None:
        self.agents[agent_id] = {
            "agent_id": agent_id,
            "version": version,
            "voice_id": "11labs-Adrian",
            "response_engine": {"type": "retell-llm", "llm_id": llm_id, "version": 0},
            "is_published": False,
        }

    def fail_next(self, status: int, message: str, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` and ``{"message": message}``."""
        self.failures += [(status, {"status": "error", "message": message})] * times

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RetellStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_PATCH(self) -> None:
                standin._handle(self)

            def do_GET(self) -> None:
                standin._handle(self)

            def do_POST(self) -> None:
                standin._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the API ------------------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(
            RecordedRequest(
                request.command, request.path, {k.lower(): v for k, v in request.headers.items()}, body
            )
        )
        status, answer = self._answer(request.command, request.path.split("?")[0], request.headers, body)
        payload = json.dumps(answer).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def _answer(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, dict[str, Any]]:
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, {"status": "error", "message": "Invalid API key"}
        if self.failures:
            return self.failures.pop(0)
        now = int(time.time() * 1000)
        if method == "PATCH" and path.startswith("/update-retell-llm/"):
            llm = self.llms.get(path.removeprefix("/update-retell-llm/"))
            if llm is None:
                return 404, {"status": "error", "message": "Retell LLM not found"}
            llm.update(body or {})
            llm["version"] += 1
            llm["last_modification_timestamp"] = now
            return 200, dict(llm)
        if method == "PATCH" and path.startswith("/update-agent/"):
            agent = self.agents.get(path.removeprefix("/update-agent/"))
            if agent is None:
                return 404, {"status": "error", "message": "Agent not found"}
            agent.update(body or {})
            agent["version"] += 1
            agent["last_modification_timestamp"] = now
            return 200, dict(agent)
        return 404, {"status": "error", "message": f"{method} {path}: not an endpoint of this stand-in"}
