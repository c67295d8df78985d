"""The `neuracrm-mlops` entry point: help everywhere, organizations, status, clear failures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from neuracrm_mlops.cli import main
from neuracrm_mlops.db.migrate import head_revision
from neuracrm_mlops.orgs import organization_for_api_key

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
    from neuracrm_mlops import registry
    from neuracrm_mlops.config import reset_settings

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
    model_dirs = list(artifacts.glob("*/artifacts/forecasts/org_*"))
    assert len(model_dirs) == 6 and all((d / "backtest.svg").is_file() for d in model_dirs)
    assert not list(artifacts.glob("*/artifacts/forecasts/org_*/uv.lock"))  # logged once per run instead
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

    from neuracrm_mlops.db.schema import Prediction, PredictionDeadLetter
    from neuracrm_mlops.prediction_log import prediction_row, write_dead_letters

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
    from neuracrm_mlops.db.engine import get_engine

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
