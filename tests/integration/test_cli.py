"""The `neuracrm-mlops` entry point: help everywhere, organizations, status, clear failures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from voice_scenarios import PROMPT, log_calls, scenario_in_a_canary

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.ops.cli import main
from neuracrm_mlops.store.db.migrate import head_revision
from neuracrm_mlops.store.orgs import organization_for_api_key

BIN = Path(sys.executable).parent / "neuracrm-mlops"


def _all_command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            paths += _all_command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


@pytest.mark.parametrize("path", _all_command_paths(main), ids=lambda p: " ".join(p) or "main")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    assert len(result.output.splitlines()) > 3


def test_installed_entry_point_runs(neuracrm_home: Path) -> None:
    result = subprocess.run(
        [str(BIN), "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NEURACRM_HOME": str(neuracrm_home)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("neuracrm-mlops, version ")


def test_db_upgrade_then_org_create_issues_a_working_key(db_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert f"to revision {head_revision()}" in first.output
    assert "up to date" in runner.invoke(main, ["db", "upgrade"]).output

    created = runner.invoke(main, ["org", "create", "Initech", "--no-ai"])
    assert created.exit_code == 0, created.output
    api_key = created.output.split("not shown again): ")[1].strip()
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        assert organization_for_api_key(conn, api_key).name == "Initech"
        assert organization_for_api_key(conn, api_key + "x") is None
        assert api_key not in str(conn.execute(sa.text("SELECT key_hash FROM api_keys")).all())
    engine.dispose()

    duplicate = runner.invoke(main, ["org", "create", "Initech"])
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output
    listing = runner.invoke(main, ["org", "list"])
    assert "Initech" in listing.output and "ai_enabled=False" in listing.output


def test_status_before_db_upgrade_says_what_to_run(db_url: str) -> None:
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1
    assert "run `neuracrm-mlops db upgrade` first" in result.output


def test_status_shows_organizations_and_row_counts(engine: sa.Engine) -> None:
    runner = CliRunner()
    runner.invoke(main, ["org", "create", "Acme"])
    result = runner.invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert "Acme" in result.output
    assert "organizations" in result.output and "quarantine" in result.output


@pytest.mark.slow
def test_validate_and_train_commands_run_the_same_library_path(neuracrm_home: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(main, ["seed", "--orgs", "6", "--months", "30", "--seed", "4"]).exit_code == 0
    validated = runner.invoke(main, ["validate", "sales"])
    assert validated.exit_code == 0, validated.output
    assert "report: " in validated.output and ".html" in validated.output
    trained = runner.invoke(main, ["train", "sales_forecast", "--org", "1"])
    assert trained.exit_code == 0, trained.output
    assert "sales_forecast_org_*: 1 organizations:" in trained.output
    wrong = runner.invoke(main, ["train", "sentiment", "--org", "1"])
    assert wrong.exit_code == 2 and "sentiment trains one model across all organizations" in wrong.output


@pytest.mark.slow
def test_train_forecasts_in_worker_processes_registers_every_chunk(
    neuracrm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.config import reset_settings
    from neuracrm_mlops.store import registry

    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(main, ["seed", "--orgs", "5", "--months", "30", "--seed", "4"]).exit_code == 0
    assert runner.invoke(main, ["train", "sales_forecast", "--org", "2"]).exit_code == 0
    monkeypatch.setenv("NEURACRM_FORECAST_CHUNK_SIZE", "2")  # 3 chunks for 2 spawned workers
    reset_settings()

    trained = runner.invoke(main, ["train", "sales_forecast", "--workers", "2"])

    assert trained.exit_code == 0, trained.output
    assert "sales_forecast_org_*: 5 organizations:" in trained.output
    assert "… 5/5 organizations" in trained.output  # a progress line per chunk when not on a terminal
    client = registry.configure_mlflow()
    versions = registry.versions_by_name(client, [registry.forecast_model_name(i) for i in range(1, 6)])
    assert [len(versions[registry.forecast_model_name(i)]) for i in range(1, 6)] == [1, 2, 1, 1, 1]
    latest = [max(found, key=lambda v: int(v.version)) for found in versions.values()]
    assert len({v.tags["run_key"] for v in latest}) == 1  # one CLI run, registered chunk by chunk
    assert len({v.run_id for v in latest}) == 3  # one MLflow run per chunk
    assert sorted(v.tags["semver"] for v in versions[registry.forecast_model_name(2)]) == ["1.0.0", "1.0.1"]
    artifacts = neuracrm_home / "mlartifacts" / "sales_forecast"
    model_dirs = list(artifacts.glob("models/m-*/artifacts"))  # one LoggedModel per organization
    assert len(model_dirs) == 6 and all((d / "backtest.svg").is_file() for d in model_dirs)
    assert not list(artifacts.glob("models/m-*/artifacts/uv.lock"))  # logged once per run instead
    assert len(list(artifacts.glob("*/artifacts/environment/uv.lock"))) == 4  # the --org run and 3 chunks


def test_validate_fails_with_exit_1_and_names_the_expectation(engine: sa.Engine) -> None:
    runner = CliRunner()
    runner.invoke(main, ["org", "create", "Acme"])
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO monthly_sales (organization_id, month, revenue, attributes, content_hash, "
                "updated_at) VALUES (1, '2026-01-01', -50, '{}', 'x', CURRENT_TIMESTAMP)"
            )
        )
    result = runner.invoke(main, ["validate", "sales", "--org", "Acme"])
    assert result.exit_code == 1
    assert "FAILED [critical]" in result.output and "revenue" in result.output


def test_rollback_commands_say_what_is_missing(engine: sa.Engine) -> None:
    runner = CliRunner()
    no_org = runner.invoke(main, ["rollback", "sales_forecast"])
    assert no_org.exit_code == 2 and "--org" in no_org.output
    needless_org = runner.invoke(main, ["rollback", "lead_scoring", "--org", "3"])
    assert needless_org.exit_code == 2 and "drop --org" in needless_org.output
    nothing = runner.invoke(main, ["rollback", "lead_scoring"])
    assert nothing.exit_code == 1 and "no registered model 'lead_scoring'" in nothing.output


def test_simulate_outcomes_and_alerts_on_an_empty_store(engine: sa.Engine) -> None:
    runner = CliRunner()
    simulated = runner.invoke(main, ["simulate", "outcomes"])
    assert simulated.exit_code == 0, simulated.output
    assert "lead_scoring: 0 simulated outcomes written" in simulated.output
    listed = runner.invoke(main, ["alerts", "--open"])
    assert listed.exit_code == 0 and "no alerts" in listed.output
    unknown = runner.invoke(main, ["ack", "999"])
    assert unknown.exit_code == 1 and "999" in unknown.output


def test_replay_dead_letters_lands_fixed_rows_and_names_the_ones_refused_again(engine: sa.Engine) -> None:
    import json

    from neuracrm_mlops.inference.prediction_log import prediction_row, write_dead_letters
    from neuracrm_mlops.store.db.schema import Prediction, PredictionDeadLetter

    def row(entity: str) -> dict[str, object]:
        return prediction_row(
            model_name="lead_scoring", model_version="1", route="champion", request_id="r", organization_id=1,
            entity_id=entity, features={}, output={"probability": 0.5}, latency_ms=1.0, fallback=False,
        )  # fmt: skip

    write_dead_letters(engine, [(row("L-1"), "DataError: refused"), (row("L-2"), "DataError: refused")])
    with engine.begin() as conn:  # on-call could not fix the second one: its row is no longer a row
        second = conn.execute(sa.select(sa.func.max(PredictionDeadLetter.id))).scalar_one()
        conn.execute(
            sa.update(PredictionDeadLetter)
            .where(PredictionDeadLetter.id == second)
            .values(row=json.dumps([]))
        )
    runner = CliRunner()
    replayed = runner.invoke(main, ["predictions", "replay-dead-letters"])
    assert replayed.exit_code == 1, replayed.output
    assert (
        "1 dead letters replayed" in replayed.output
        and f"dead letter {second} refused again" in replayed.output
    )
    with engine.connect() as conn:
        assert conn.execute(sa.select(Prediction.entity_id)).scalars().all() == ["L-1"]
    again = runner.invoke(
        main, ["predictions", "replay-dead-letters"]
    )  # the landed one is not replayed twice
    assert "0 dead letters replayed" in again.output


def test_the_readme_recipe_reads_a_seeded_api_key_without_a_carriage_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.config import reset_settings
    from neuracrm_mlops.store.db.engine import get_engine

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    recipes = re.findall(r"^KEY=\$\(.*api_keys\.csv.*\)$", readme, flags=re.MULTILINE)
    assert len(recipes) == 1, recipes  # the README's one way to read a key: sed -n 2p ... | cut ...
    monkeypatch.setenv("NEURACRM_HOME", str(tmp_path / ".neuracrm"))  # the recipe's relative path
    reset_settings()
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    seeded = runner.invoke(main, ["seed", "--orgs", "3", "--months", "12", "--leads-per-org", "2"])
    assert seeded.exit_code == 0, seeded.output
    keys_file = tmp_path / ".neuracrm" / "api_keys.csv"
    assert b"\r" not in keys_file.read_bytes()

    recipe = subprocess.run(
        ["bash", "-c", f'{recipes[0]}\nprintf "%s" "$KEY"'],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )

    key = recipe.stdout.decode()
    assert key and "\r" not in key and "\n" not in key
    with get_engine().connect() as conn:
        organization = organization_for_api_key(conn, key)
    assert organization is not None and organization.id == 1  # line 2: the first organization's key


# --- settings errors: one line, no traceback -------------------------------------------------------


def test_a_bad_setting_is_one_line_naming_the_variable_and_a_bad_log_level_falls_back(
    neuracrm_home: Path,
) -> None:
    env = {**os.environ, "NEURACRM_HOME": str(neuracrm_home), "NEURACRM_MIN_OUTCOMES": "abc"}
    bad = subprocess.run([str(BIN), "status"], capture_output=True, text=True, check=False, env=env)
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr.splitlines() == [
        "error: NEURACRM_MIN_OUTCOMES='abc' is not a whole number "
        "(accepted: a whole number between 1 and 10000000)"
    ]
    env = {**os.environ, "NEURACRM_HOME": str(neuracrm_home), "NEURACRM_LOG_LEVEL": "loud"}
    upgraded = subprocess.run(
        [str(BIN), "db", "upgrade"], capture_output=True, text=True, check=False, env=env
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stderr.splitlines()[0] == (
        "warning: NEURACRM_LOG_LEVEL='loud' is not a log level "
        "(accepted: DEBUG, INFO, WARNING, ERROR, CRITICAL); using WARNING"
    )
    assert "Traceback" not in upgraded.stderr and "migrated" in upgraded.stdout


# --- status and alerts: readable when piped, and as JSON ------------------------------------------

LONG_REASON = (
    "challenger v2 beat the champion on 412 labelled outcomes: accuracy 0.874 against 0.812 over the "
    "last 168 hours, no input drift, and no bias gap above the limit in any region (emea, na, apac, latam)"
)
LONG_MESSAGE = (
    "live accuracy 0.612 over 240 labelled outcomes in the window 2026-11-28T07:01:02+00:00 to "
    "2026-12-05T07:01:02+00:00 is below the floor 0.80; the champion was rolled back to v1"
)
ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00"


def _ledger_and_alert(engine: sa.Engine) -> None:
    from neuracrm_mlops.store.alerts import raise_alert
    from neuracrm_mlops.store.ledger import record_change

    record_change(
        engine, actor="cli:test", model_name="lead_scoring", action="promote", reason=LONG_REASON,
        from_version=1, to_version=2, weight=1.0,
    )  # fmt: skip
    raise_alert(
        engine, kind="accuracy_below_floor", severity="critical", dedup_key="test:accuracy",
        title="lead_scoring v2 live accuracy 0.612 below the floor 0.80 (rolled back to v1)",
        message=LONG_MESSAGE, model_name="lead_scoring", model_version="2",
        action_taken="rolled back to v1; retraining needed", deliver=False,
    )  # fmt: skip


def _block_lines(output: str, title: str) -> list[str]:
    """The lines of the listing under ``title:`` up to the blank line that ends it."""
    lines = output.splitlines()
    start = lines.index(f"{title}:")
    end = lines.index("", start)
    return lines[start + 1 : end]


def test_status_piped_prints_one_record_per_block_with_whole_reasons_and_iso_dates(
    engine: sa.Engine,
) -> None:
    from neuracrm_mlops.ops import cli

    assert not cli.out.is_terminal  # CliRunner: like a pipe
    runner = CliRunner()
    runner.invoke(main, ["org", "create", "Acme"])
    _ledger_and_alert(engine)

    result = runner.invoke(main, ["status"])

    assert result.exit_code == 0, result.output
    ledger = _block_lines(result.stdout, "ledger (newest first)")
    assert re.fullmatch(rf"- when: {ISO}", ledger[0]), ledger
    assert f"  reason: {LONG_REASON}" in ledger  # whole, on one line
    assert "  model: lead_scoring" in ledger and "  actor: cli:test" in ledger
    assert not any(line.startswith("  state:") for line in ledger)  # a done move says nothing more
    assert "  organization: Acme" in _block_lines(result.stdout, "organizations (1; first 1 shown)")
    assert "open alerts: 1 (`neuracrm-mlops alerts --open`)" in result.stdout
    assert "│" not in result.stdout and "┃" not in result.stdout  # no table when piped

    listed = runner.invoke(main, ["alerts", "--open"])

    assert listed.exit_code == 0, listed.output
    alert = _block_lines(listed.stdout, "alerts (newest first)")
    assert alert[0] == "- id: 1"
    assert "  title: lead_scoring v2 live accuracy 0.612 below the floor 0.80 (rolled back to v1)" in alert
    assert f"  message: {LONG_MESSAGE}" in alert
    assert {"  severity: critical", "  status: open", "  count: 1", "  model: lead_scoring v2"} <= set(alert)
    assert any(re.fullmatch(rf"  created: {ISO}", line) for line in alert), alert
    assert any(re.fullmatch(rf"  last seen: {ISO}", line) for line in alert), alert
    assert "  action taken: rolled back to v1; retraining needed" in alert


def test_status_shows_a_ledger_move_that_is_not_done(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt
    import types

    from neuracrm_mlops.store import ledger

    pending = types.SimpleNamespace(
        id=7, created_at=dt.datetime(2026, 12, 5, 7, 1, 2, tzinfo=dt.UTC), actor="dag:rollout",
        model_name="sentiment", organization_id=None, action="promote", alias="champion",
        from_version="3", to_version="4", weight=1.0, reason="promoting", metrics={}, state="pending",
    )  # fmt: skip
    monkeypatch.setattr(ledger, "latest_entries", lambda *args, **kwargs: [pending])

    result = CliRunner().invoke(main, ["status"])

    assert result.exit_code == 0, result.output
    block = _block_lines(result.stdout, "ledger (newest first)")
    assert block[:4] == [
        "- when: 2026-12-05T07:01:02+00:00",
        "  model: sentiment",
        "  action: promote",
        "  state: pending",
    ]
    document = json.loads(CliRunner().invoke(main, ["status", "--json"]).stdout)
    assert document["ledger"][0]["state"] == "pending"


STATUS_JSON_KEYS = {
    "format_version",
    "generated_at",
    "database",
    "crm",
    "models",
    "served_answers",
    "ledger",
    "alerts",
    "voice_scenarios",
}


def test_status_json_is_one_document_with_the_documented_keys(engine: sa.Engine) -> None:
    runner = CliRunner()
    runner.invoke(main, ["org", "create", "Acme"])
    _ledger_and_alert(engine)

    result = runner.invoke(main, ["status", "--json"])

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == STATUS_JSON_KEYS
    assert document["format_version"] == 1
    assert re.fullmatch(ISO, document["generated_at"])
    assert set(document["database"]) == {"url", "schema_revision"}
    assert document["database"]["schema_revision"] == head_revision()
    assert set(document["crm"]) == {"table_counts", "organization_count", "organizations"}
    assert document["crm"]["table_counts"]["organizations"] == 1 == document["crm"]["organization_count"]
    assert document["crm"]["organizations"][0] == {
        "id": 1, "name": "Acme", "ai_enabled": True, "leads": 0, "sales_months": 0, "interactions": 0,
        "quarantined": 0,
    }  # fmt: skip
    assert [m["name"] for m in document["models"]] == ["lead_scoring", "sentiment"]
    assert set(document["models"][0]) == {
        "name", "registered", "champion", "challenger", "previous", "canary_weight", "canary_started_at",
    }  # fmt: skip
    assert {(a["family"], a["organization_id"]) for a in document["served_answers"]} == {
        ("lead_scoring", None),
        ("sentiment", None),
        ("sales_forecast", 1),
    }
    assert set(document["served_answers"][0]) == {
        "family",
        "organization_id",
        "answered_by",
        "version",
        "why",
    }
    (entry,) = document["ledger"]
    assert re.fullmatch(ISO, entry["created_at"])
    assert entry["reason"] == LONG_REASON and entry["state"] == "done"
    assert (entry["action"], entry["from_version"], entry["to_version"], entry["weight"]) == (
        "promote",
        "1",
        "2",
        1.0,
    )
    assert set(document["alerts"]) == {"open_count", "open"}
    assert document["alerts"]["open_count"] == 1
    (alert,) = document["alerts"]["open"]
    assert alert["message"] == LONG_MESSAGE and alert["severity"] == "critical"
    assert re.fullmatch(ISO, alert["first_seen_at"]) and re.fullmatch(ISO, alert["last_seen_at"])


def test_status_shows_each_voice_scenario_in_text_and_json(home_engine: sa.Engine, tmp_path: Path) -> None:
    from neuracrm_mlops.store.alerts import raise_alert

    weight = scenario_in_a_canary(home_engine, tmp_path)
    log_calls(home_engine, "1", "champion", successful=3, unsuccessful=1)
    log_calls(home_engine, "2", "challenger", successful=1, unsuccessful=0)  # not the champion's
    raise_alert(
        home_engine, kind="canary_inconclusive", severity="warning", dedup_key="test:scenario",
        title="sales_outbound canary inconclusive", message="not enough calls", model_name=PROMPT,
        model_version="2", deliver=False,
    )  # fmt: skip
    runner = CliRunner()

    result = runner.invoke(main, ["status"])

    assert result.exit_code == 0, result.output
    hours = f"{get_settings().monitor_window_hours:g}"
    block = _block_lines(result.stdout, f"voice scenarios (champion's calls over {hours}h)")
    assert block == [
        "- scenario: sales_outbound",
        "  champion: v1 (1.0.0)",
        "  challenger: v2 (1.1.0)",
        f"  canary weight: {weight:.0%}",
        "  previous: -",
        "  calls: 4",
        "  success: 75.0%",
        "  open alerts: 1",
    ]

    document = json.loads(runner.invoke(main, ["status", "--json"]).stdout)
    scenarios = document["voice_scenarios"]
    assert (scenarios["readable"], scenarios["error"]) == (True, None)
    assert scenarios["window_hours"] == get_settings().monitor_window_hours
    assert scenarios["scenarios"] == [
        {
            "scenario": "sales_outbound", "prompt_name": PROMPT,
            "champion": {"version": "1", "semver": "1.0.0"},
            "challenger": {"version": "2", "semver": "1.1.0"},
            "canary_weight": weight, "previous": None,
            "calls": 4, "successful": 3, "success_rate": 0.75, "open_alerts": 1,
        }
    ]  # fmt: skip
    assert weight > 0


def test_status_says_in_one_line_when_there_is_no_voice_scenario_or_mlflow_is_down(
    home_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.store import prompt_registry

    runner = CliRunner()
    result = runner.invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "voice scenarios" in line]
    assert lines == ["voice scenarios: none (`neuracrm-mlops scenario register scenarios/<name>.yaml`)"]
    document = json.loads(runner.invoke(main, ["status", "--json"]).stdout)
    assert document["voice_scenarios"]["scenarios"] == [] and document["voice_scenarios"]["readable"]

    def down(client: object) -> list[str]:
        raise ConnectionError("mlflow.internal:5000 refused the connection")

    monkeypatch.setattr(prompt_registry, "list_scenarios", down)
    result = runner.invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert (
        "voice scenarios: could not be read from MLflow (ConnectionError: mlflow.internal:5000 refused "
        "the connection)" in result.stdout
    )
    assert "open alerts: 0" in result.stdout  # the rest of the report still shows
    document = json.loads(runner.invoke(main, ["status", "--json"]).stdout)
    assert document["voice_scenarios"]["readable"] is False
    assert "refused the connection" in document["voice_scenarios"]["error"]
    assert document["voice_scenarios"]["scenarios"] == []


def test_a_wide_terminal_gets_tables_that_never_cut_a_date(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from neuracrm_mlops.ops import cli

    fields = [cli._Field("when", "date"), cli._Field("model"), cli._Field("reason", "long")]
    rows = [["2026-12-05T07:01:02+00:00", "lead_scoring", LONG_REASON]]
    for width, tabular in ((140, True), (60, False)):
        buffer = io.StringIO()
        console = Console(file=buffer, force_terminal=True, width=width, soft_wrap=True, markup=False)
        monkeypatch.setattr(cli, "out", console)
        cli._show_records("ledger", fields, rows, empty="empty")
        text = re.sub(r"\x1b\[[0-9;]*m", "", buffer.getvalue())
        assert "2026-12-05T07:01:02+00:00" in text, text  # the date whole, on one line
        if tabular:
            assert "┃" in text and max(len(line) for line in text.splitlines()) <= width
            # the reason wraps at word boundaries only: every word of it is whole in some cell
            cells = " ".join(part.strip() for line in text.splitlines() for part in line.split("│")[3:4])
            assert cells.split() == LONG_REASON.split(), text
        else:
            assert f"  reason: {LONG_REASON}" in text.splitlines(), text
