"""The asset-event client against a local HTTP server speaking Airflow's endpoints (``POST /auth/token``,
``GET /api/v2/assets``, ``POST /api/v2/assets/events``), and `neuracrm-mlops import` announcing what it
committed: once per import that changed rows, never undoing the import when Airflow cannot be told."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from crm_files import lead_rows, write_csv
from serving_support import free_port

from neuracrm_mlops.config import get_settings, reset_settings
from neuracrm_mlops.ops import airflow_events
from neuracrm_mlops.ops.airflow_events import AirflowApi, AirflowEventError, announce_after_import
from neuracrm_mlops.ops.cli import EXIT_NOT_ANNOUNCED, main
from neuracrm_mlops.ops.dag_support import CRM_ASSETS
from neuracrm_mlops.store.ingest import ImportSummary

TOKEN = "jwt-for-oncall"
ASSETS = [
    {"id": 7, "uri": "neuracrm://crm/leads_archive"},  # matched by the LIKE search, not the one wanted
    {"id": 3, "uri": "neuracrm://crm/leads"},
    {"id": 4, "uri": "neuracrm://crm/interactions"},
]


@dataclass
class FakeAirflow:
    """What the fake api-server answers, and every request it saw."""

    url: str = ""
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    token_status: int = 201
    events_status: int = 200
    assets: list[dict[str, Any]] = field(default_factory=lambda: list(ASSETS))
    delay: float = 0.0

    def paths(self) -> list[str]:
        return [f"{method} {urlparse(path).path}" for method, path, _, _ in self.requests]


def _handler(state: FakeAirflow) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.requests.append((self.command, self.path, dict(self.headers), body))
            time.sleep(state.delay)
            return body

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._reply(401, {"detail": "Invalid JWT token"})
                return False
            return True

        def do_GET(self) -> None:
            self._record()
            url = urlparse(self.path)
            if url.path != "/api/v2/assets":
                self._reply(404, {"detail": "Not Found"})
            elif self._authorized():
                pattern = parse_qs(url.query)["uri_pattern"][0]
                found = [a for a in state.assets if pattern in a["uri"]]
                self._reply(200, {"assets": found, "total_entries": len(found)})

        def do_POST(self) -> None:
            body = self._record()
            if self.path == "/auth/token":
                if state.token_status != 201:
                    self._reply(state.token_status, {"detail": "Invalid credentials"})
                elif body == {"username": "oncall", "password": "s3cret"}:
                    self._reply(201, {"access_token": TOKEN})
                else:
                    self._reply(401, {"detail": "Invalid credentials"})
            elif self.path == "/api/v2/assets/events":
                if not self._authorized():
                    return
                if state.events_status != 200:
                    self._reply(state.events_status, {"detail": "Forbidden"})
                    return
                extra = {**body["extra"], "from_rest_api": True}
                self._reply(
                    200,
                    {
                        "id": 41,
                        "asset_id": body["asset_id"],
                        "extra": extra,
                        "timestamp": "2026-01-02T00:00:00Z",
                    },
                )
            else:
                self._reply(404, {"detail": "Not Found"})

    return Handler


@pytest.fixture
def fake_airflow() -> Iterator[FakeAirflow]:
    state = FakeAirflow()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _summary(**changes: Any) -> ImportSummary:
    summary = ImportSummary("leads", 2, "Acme", "/data/leads.csv", "csv", 17, file_sha256="ab" * 32)
    summary.rows_read, summary.imported, summary.updated, summary.unchanged = 12, 10, 1, 1
    for name, value in changes.items():
        setattr(summary, name, value)
    return summary


def test_the_asset_uris_are_the_ones_the_training_dags_are_scheduled_on() -> None:
    assert {d: a.uri for d, a in CRM_ASSETS.items()} == airflow_events.DATASET_ASSET_URIS


def test_a_user_and_password_are_exchanged_for_a_jwt_and_the_exact_asset_gets_the_event(
    fake_airflow: FakeAirflow,
) -> None:
    with AirflowApi(fake_airflow.url + "/", username="oncall", password="s3cret") as api:
        event = airflow_events.announce_import(_summary(), api)
        airflow_events.announce_import(_summary(), api)  # the token is reused

    assert event.event_id == 41 and event.asset_id == 3 and event.uri == "neuracrm://crm/leads"
    assert fake_airflow.paths() == [
        "POST /auth/token",
        "GET /api/v2/assets",
        "POST /api/v2/assets/events",
        "GET /api/v2/assets",
        "POST /api/v2/assets/events",
    ]
    _, _, headers, body = fake_airflow.requests[2]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert body == {
        "asset_id": 3,
        "extra": {
            "source": "neuracrm-mlops import",
            "dataset": "leads",
            "file": "/data/leads.csv",
            "file_sha256": "ab" * 32,
            "organization_id": 2,
            "organization": "Acme",
            "rows_imported": 10,
            "rows_updated": 1,
            "rows_unchanged": 1,
            "rows_quarantined": 0,
            "import_batch_id": 17,
        },
    }


def test_a_configured_token_is_used_as_is(fake_airflow: FakeAirflow) -> None:
    with AirflowApi(fake_airflow.url, token=TOKEN) as api:
        api.emit("neuracrm://crm/interactions", {"note": "x"})
    assert fake_airflow.paths() == ["GET /api/v2/assets", "POST /api/v2/assets/events"]
    assert fake_airflow.requests[1][3] == {"asset_id": 4, "extra": {"note": "x"}}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"token_status": 401}, "refused the user 'oncall' (401 on POST /auth/token): check"),
        (
            {"events_status": 403},
            "(403): asset events need an Airflow role that may create them (Op or Admin)",
        ),
        (
            {"assets": []},
            "has no asset neuracrm://crm/leads (404): it exists once a DAG that uses it is parsed",
        ),
    ],
)
def test_refusals_say_what_to_check(fake_airflow: FakeAirflow, setup: dict[str, Any], message: str) -> None:
    for name, value in setup.items():
        setattr(fake_airflow, name, value)
    with (
        AirflowApi(fake_airflow.url, username="oncall", password="s3cret") as api,
        pytest.raises(AirflowEventError) as raised,
    ):
        api.emit("neuracrm://crm/leads", {})
    assert message in str(raised.value)


def test_a_bad_token_a_wrong_url_a_dead_server_and_a_slow_one_are_named(fake_airflow: FakeAirflow) -> None:
    with AirflowApi(fake_airflow.url, token="stale") as api, pytest.raises(AirflowEventError) as bad:
        api.emit("neuracrm://crm/leads", {})
    assert "refused NEURACRM_AIRFLOW_API_TOKEN (401 on GET /api/v2/assets)" in str(bad.value)

    with (
        AirflowApi(fake_airflow.url + "/api/v2", token=TOKEN) as api,
        pytest.raises(AirflowEventError) as wrong,
    ):
        api.emit("neuracrm://crm/leads", {})
    assert "no /api/v2/assets (404): is NEURACRM_AIRFLOW_API_URL the Airflow 3 api-server's base URL" in str(
        wrong.value
    )

    dead = f"http://127.0.0.1:{free_port()}"
    with AirflowApi(dead, token=TOKEN) as api, pytest.raises(AirflowEventError) as refused:
        api.emit("neuracrm://crm/leads", {})
    assert f"cannot reach Airflow at {dead} (ConnectError" in str(refused.value)

    fake_airflow.delay = 1.0
    started = time.monotonic()
    with (
        AirflowApi(fake_airflow.url, token=TOKEN, timeout=0.2) as api,
        pytest.raises(AirflowEventError) as slow,
    ):
        api.emit("neuracrm://crm/leads", {})
    assert time.monotonic() - started < 1.0
    assert "did not answer GET /api/v2/assets in time (ReadTimeout): is the api-server up?" in str(slow.value)


def test_credentials_are_required_once_a_url_is_set() -> None:
    with pytest.raises(
        AirflowEventError, match="configured without credentials: set NEURACRM_AIRFLOW_API_TOKEN"
    ):
        AirflowApi("http://airflow:8080", username="oncall")


def test_nothing_is_sent_when_no_row_changed_or_no_airflow_is_configured(
    fake_airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    unchanged = _summary(imported=0, updated=0, unchanged=12)
    monkeypatch.setenv("NEURACRM_AIRFLOW_API_URL", fake_airflow.url)
    monkeypatch.setenv("NEURACRM_AIRFLOW_API_TOKEN", TOKEN)
    reset_settings()
    quiet = announce_after_import(unchanged, get_settings(), retry_command="retry")
    assert quiet.status == "no_change" and fake_airflow.requests == []
    assert quiet.message.startswith(
        "no asset event sent to Airflow: 0 rows imported or updated (12 unchanged)"
    )
    forced = announce_after_import(unchanged, get_settings(), retry_command="retry", force=True)
    assert forced.status == "emitted" and forced.event is not None and len(fake_airflow.requests) == 2

    monkeypatch.delenv("NEURACRM_AIRFLOW_API_URL")
    reset_settings()
    skipped = announce_after_import(_summary(), get_settings(), retry_command="retry")
    assert skipped.status == "not_configured" and not skipped.failed
    assert "no Airflow configured, so the asset event neuracrm://crm/leads was skipped" in skipped.message
    assert "set NEURACRM_AIRFLOW_API_URL" in skipped.message


def _cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[CliRunner, Path]:
    monkeypatch.setenv("NEURACRM_DB_URL", f"sqlite:///{tmp_path / 'crm.sqlite'}")
    reset_settings()
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(main, ["org", "create", "Acme"]).exit_code == 0
    return runner, write_csv(tmp_path / "leads.csv", lead_rows(5))


def test_import_announces_committed_rows_once_and_never_loses_them_when_airflow_is_down(
    fake_airflow: FakeAirflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, leads = _cli_store(tmp_path, monkeypatch)
    monkeypatch.setenv("NEURACRM_AIRFLOW_API_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("NEURACRM_AIRFLOW_API_USERNAME", "oncall")
    monkeypatch.setenv("NEURACRM_AIRFLOW_API_PASSWORD", "s3cret")
    reset_settings()

    down = runner.invoke(main, ["import", "leads", str(leads), "--org", "Acme"])
    assert down.exit_code == EXIT_NOT_ANNOUNCED, down.output
    assert "5 imported" in down.stdout
    retry = f"neuracrm-mlops import leads {leads} --org Acme --announce"
    assert (
        "the rows are imported (batch 1) but the asset event neuracrm://crm/leads was NOT sent" in down.stderr
    )
    assert "cannot reach Airflow at http://127.0.0.1:" in down.stderr and retry in down.stderr
    with sa.create_engine(f"sqlite:///{tmp_path / 'crm.sqlite'}").connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM leads")) == 5  # committed all the same

    monkeypatch.setenv("NEURACRM_AIRFLOW_API_URL", fake_airflow.url)
    reset_settings()
    unchanged = runner.invoke(main, ["import", "leads", str(leads), "--org", "Acme"])
    assert unchanged.exit_code == 0 and fake_airflow.requests == []
    assert "no asset event sent to Airflow: 0 rows imported or updated (5 unchanged)" in unchanged.stderr

    retried = runner.invoke(main, retry.split()[1:])
    assert retried.exit_code == 0, retried.output
    assert f"asset event neuracrm://crm/leads #41 sent to Airflow at {fake_airflow.url}" in retried.stdout
    assert fake_airflow.paths() == ["POST /auth/token", "GET /api/v2/assets", "POST /api/v2/assets/events"]
    extra = fake_airflow.requests[-1][3]["extra"]
    assert extra["rows_imported"] == 0 and extra["rows_unchanged"] == 5 and extra["import_batch_id"] == 3

    monkeypatch.delenv("NEURACRM_AIRFLOW_API_URL")
    reset_settings()
    more = write_csv(tmp_path / "more.csv", lead_rows(2, start=10))
    unconfigured = runner.invoke(main, ["import", "leads", str(more), "--org", "Acme"])
    assert unconfigured.exit_code == 0
    assert (
        "note: no Airflow configured, so the asset event neuracrm://crm/leads was skipped"
        in unconfigured.stderr
    )
