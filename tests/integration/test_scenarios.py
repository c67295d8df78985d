"""Voice scenarios: files in git -> versions in MLflow's prompt registry (semver, aliases, ledger),
the `scenario` CLI, and publishing the champion to Retell (a local stand-in of its API,
tests/retell_standin.py: Retell itself cannot be reached from the tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from retell_standin import RetellStandIn

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.errors import ConfigurationError, NotFoundError
from neuracrm_mlops.ops.cli import main
from neuracrm_mlops.release.retell_publish import RetellPublishError, publish_scenario
from neuracrm_mlops.store import ledger, prompt_registry
from neuracrm_mlops.store.registry import configure_mlflow
from neuracrm_mlops.training.scenarios import (
    ScenarioFileError,
    ScenarioTemplateError,
    check_variables,
    load_scenario_file,
    register_scenario,
)

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"
PROMPT = "voice_scenario.sales_outbound"
ACTOR = "test:scenarios"


def _base() -> dict[str, Any]:
    return dict(yaml.safe_load((SCENARIOS / "sales_outbound.yaml").read_text()))


def _write(directory: Path, content: dict[str, Any], name: str = "sales_outbound.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def _versions(client: Any) -> list[str]:
    if client.get_prompt(PROMPT) is None:
        return []
    return sorted(str(v.version) for v in client.search_prompt_versions(PROMPT))


def _ledger(engine: sa.Engine) -> list[ledger.LedgerEntry]:
    return list(reversed(ledger.latest_entries(engine, model_name=PROMPT, limit=100)))


# --- the files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_committed_scenario_files_are_valid_and_use_only_context_variables(path: Path) -> None:
    scenario = load_scenario_file(path)
    check_variables(scenario)
    assert scenario.name == path.stem
    assert scenario.variables() <= set(prompt_registry.CONTEXT_VARIABLES)
    assert "organization_name" in scenario.variables()
    assert len(scenario.template) > 500  # a real prompt, not a placeholder


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "red"}, "colour: unknown field (allowed here: name, description, template"),
        (
            {"llm": {"model": "gpt-4.1", "temperature": 2.5, "max_tokens": 300}},
            "llm.temperature: Input should be",
        ),
        (
            {"llm": {"model": "gpt-4.1", "temperature": "0.3", "max_tokens": 300}},
            "llm.temperature: must be a number",
        ),
        ({"llm": {"model": "gpt-4.1", "temperature": 0.3}}, "llm.max_tokens: missing (required)"),
        (
            {"llm": {"model": "gpt-4.1", "temperature": 0.3, "max_tokens": 300, "top_p": 1}},
            "llm.top_p: unknown field",
        ),
        ({"retell": {"llm_id": "llm_1"}}, "retell.agent_id: missing (required)"),
        ({"voice_id": 7}, "voice_id: Input should be a valid string (got 7)"),
        ({"name": "Sales Outbound"}, "name: scenario name 'Sales Outbound': lower-case letters"),
        ({"template": None}, "template: Input should be a valid string"),
    ],
)
def test_invalid_scenario_file_is_refused_naming_file_and_field(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    path = _write(tmp_path, {**_base(), **change})
    with pytest.raises(ScenarioFileError) as error:
        load_scenario_file(path)
    assert str(error.value).startswith(f"{path}: invalid scenario file")
    assert expected in str(error.value)


def test_missing_field_duplicate_key_and_broken_yaml_are_refused(tmp_path: Path) -> None:
    content = _base()
    del content["voice_id"]
    with pytest.raises(ScenarioFileError, match=r"voice_id: missing \(required\)"):
        load_scenario_file(_write(tmp_path, content))
    text = (SCENARIOS / "sales_outbound.yaml").read_text() + "voice_id: other\n"
    (tmp_path / "twice.yaml").write_text(text)
    with pytest.raises(ScenarioFileError, match=r"twice.yaml: line \d+: field 'voice_id' is given twice"):
        load_scenario_file(tmp_path / "twice.yaml")
    (tmp_path / "broken.yaml").write_text("name: [sales\n")
    with pytest.raises(ScenarioFileError, match=r"broken.yaml: not valid YAML: line 2"):
        load_scenario_file(tmp_path / "broken.yaml")
    with pytest.raises(ScenarioFileError, match="no such scenario file"):
        load_scenario_file(tmp_path / "absent.yaml")


# --- registration ----------------------------------------------------------------------------------


def test_register_versions_with_semver_aliases_and_ledger_rows(
    home_engine: sa.Engine, tmp_path: Path
) -> None:
    client = configure_mlflow()
    content = _base()
    path = _write(tmp_path, content)

    first = register_scenario(path, actor=ACTOR)
    assert (first.status, first.version, first.semver, first.change, first.alias) == (
        "registered",
        "1",
        "1.0.0",
        "first",
        "champion",
    )
    live = prompt_registry.live_scenario(client, "sales_outbound")
    assert live.champion is not None and live.champion.version == "1" and live.challenger is None
    assert live.champion.template == content["template"]
    assert live.champion.config["voice_id"] == "11labs-Adrian"
    assert live.champion.config["temperature"] == 0.3 and live.champion.config["max_tokens"] == 300
    assert live.champion.config["begin_message"] == content["begin_message"]
    assert live.champion.tags["neuracrm.source_file"] == str(path)  # tmp_path is outside any checkout
    assert len(live.champion.tags["neuracrm.git_commit"]) >= 7

    # the same file again: nothing new
    again = register_scenario(path, actor=ACTOR)
    assert (again.status, again.version, again.aliases) == ("unchanged", "1", ("champion",))
    assert _versions(client) == ["1"]

    # a changed prompt (new words): minor, challenger at weight 0
    content["template"] += "\nIf they mention a competitor, ask what they like about it.\n"
    second = register_scenario(_write(tmp_path, content), actor=ACTOR)
    assert (second.version, second.semver, second.change, second.alias, second.replaced) == (
        "2",
        "1.1.0",
        "minor",
        "challenger",
        None,
    )
    live = prompt_registry.live_scenario(client, "sales_outbound")
    assert live.champion is not None and live.champion.version == "1"
    assert live.challenger is not None and live.challenger.version == "2" and live.canary_weight == 0.0

    # wording only: whitespace, punctuation and letter case: patch, replacing the challenger
    prompt_registry.set_canary_weight(client, "sales_outbound", 0.5)  # a rollout had raised it
    content["template"] = (
        content["template"].replace("Alex, a friendly", "ALEX -- a friendly").replace("\n", "\n\n", 1)
    )
    content["begin_message"] = content["begin_message"].replace("two minutes", "two  minutes?!")
    third = register_scenario(_write(tmp_path, content), actor=ACTOR)
    assert (third.version, third.semver, third.change, third.replaced) == ("3", "1.1.1", "patch", "2")
    assert "wording only" in third.reason
    live = prompt_registry.live_scenario(client, "sales_outbound")
    assert live.challenger is not None and live.challenger.version == "3" and live.canary_weight == 0.0

    # a setting (temperature): minor
    content["llm"] = {**content["llm"], "temperature": 0.5}
    fourth = register_scenario(_write(tmp_path, content), actor=ACTOR)
    assert (fourth.semver, fourth.change) == ("1.2.0", "minor")
    assert "settings changed: temperature" in fourth.reason

    # the variable set (a variable added): major
    content["template"] += "The lead's id in the CRM is {{lead_id}}; never say it.\n"
    fifth = register_scenario(_write(tmp_path, content), actor=ACTOR)
    assert (fifth.version, fifth.semver, fifth.change) == ("5", "2.0.0", "major")
    assert "added lead_id" in fifth.reason

    assert _versions(client) == ["1", "2", "3", "4", "5"]
    rows = _ledger(home_engine)
    assert [(r.action, r.alias, r.from_version, r.to_version, r.weight) for r in rows] == [
        ("promote", "champion", None, "1", None),
        ("register", "challenger", None, "2", 0.0),
        ("register", "challenger", "2", "3", 0.0),
        ("register", "challenger", "3", "4", 0.0),
        ("register", "challenger", "4", "5", 0.0),
    ]
    assert all(r.actor == ACTOR and r.state == ledger.DONE for r in rows)
    assert rows[0].metrics["semver"] == "1.0.0" and rows[2].metrics["change"] == "patch"
    assert ledger.champion_moves(home_engine, PROMPT) == [("promote", None, "1")]


def test_unknown_variable_is_refused_and_nothing_is_registered(
    home_engine: sa.Engine, tmp_path: Path
) -> None:
    client = configure_mlflow()
    content = _base()
    content["template"] += "Mention their {{favourite_colour}} and {{ budget }}.\n"
    with pytest.raises(ScenarioTemplateError) as error:
        register_scenario(_write(tmp_path, content), actor=ACTOR)
    message = str(error.value)
    assert "template uses unknown variables {{budget}}, {{favourite_colour}}" in message
    assert "fills only these variables: organization_name, caller_number, lead_id" in message
    assert "Nothing was registered" in message
    assert _versions(client) == [] and _ledger(home_engine) == []


def test_variable_set_change_of_a_registered_scenario_is_checked_before_anything_moves(
    home_engine: sa.Engine, tmp_path: Path
) -> None:
    client = configure_mlflow()
    content = _base()
    register_scenario(_write(tmp_path, content), actor=ACTOR)
    content["begin_message"] = "Hi {{first_name}}, this is Alex from {{organization_name}}."
    with pytest.raises(
        ScenarioTemplateError, match=r"begin_message uses unknown variable \{\{first_name\}\}"
    ):
        register_scenario(_write(tmp_path, content), actor=ACTOR)
    content["begin_message"] = "Hi, this is Alex from {organization_name}."
    with pytest.raises(ScenarioTemplateError, match=r"\{organization_name\} with single braces"):
        register_scenario(_write(tmp_path, content), actor=ACTOR)
    assert _versions(client) == ["1"] and len(_ledger(home_engine)) == 1


def test_interrupted_registration_gets_its_alias_on_the_next_run(
    home_engine: sa.Engine, tmp_path: Path
) -> None:
    """A run that stopped after registering the version but before its alias move: the same file
    again finishes the move instead of saying "unchanged" forever."""
    client = configure_mlflow()
    path = _write(tmp_path, _base())
    scenario = load_scenario_file(path)
    client.register_prompt(PROMPT, template=scenario.template, model_config=scenario.model_settings())
    result = register_scenario(path, actor=ACTOR)
    assert (result.status, result.version, result.alias) == ("registered", "1", "champion")
    assert register_scenario(path, actor=ACTOR).status == "unchanged"
    assert len(_ledger(home_engine)) == 1


# --- the CLI -----------------------------------------------------------------------------------------


def test_cli_register_list_and_refusals(home_engine: sa.Engine, tmp_path: Path) -> None:
    runner = CliRunner()
    committed = runner.invoke(main, ["scenario", "register", str(SCENARIOS / "customer_support.yaml")])
    assert committed.exit_code == 0, committed.output
    assert (
        "customer_support: registered v1 as 1.0.0 (first: first version); alias champion -> v1"
        in committed.output
    )

    content = _base()
    path = _write(tmp_path, content)
    assert runner.invoke(main, ["scenario", "register", str(path)]).exit_code == 0
    content["template"] += "Always confirm the time zone of the demo.\n"
    changed = runner.invoke(main, ["scenario", "register", str(_write(tmp_path, content))])
    assert changed.exit_code == 0, changed.output
    assert "sales_outbound: registered v2 as 1.1.0 (minor: text changed: template)" in changed.output
    assert "alias challenger -> v2, canary weight 0" in changed.output

    unchanged = runner.invoke(main, ["scenario", "register", str(path)])
    assert unchanged.exit_code == 0
    assert "sales_outbound: unchanged, the latest version is v2 (1.1.0, challenger); nothing registered" in (
        unchanged.output
    )

    listing = runner.invoke(main, ["scenario", "list"])
    assert listing.exit_code == 0, listing.output
    assert (
        "- scenario: customer_support\n  champion: v1 (1.0.0)\n  challenger: -\n  weight: -" in listing.output
    )
    assert "- scenario: sales_outbound\n  champion: v1 (1.0.0)\n  challenger: v2 (1.1.0)\n  weight: 0%" in (
        listing.output
    )

    bad = _write(tmp_path, {**content, "llm": {**content["llm"], "temperature": 3}}, "bad.yaml")
    refused = runner.invoke(main, ["scenario", "register", str(bad)])
    assert refused.exit_code == 1
    assert f"error: {bad}: invalid scenario file (1 problem): llm.temperature" in " ".join(
        refused.output.split()
    )
    unknown = _write(tmp_path, {**content, "template": "Hello {{nickname}}"}, "unknown.yaml")
    refused = runner.invoke(main, ["scenario", "register", str(unknown)])
    assert refused.exit_code == 1 and "unknown variable {{nickname}}" in refused.output
    assert len(_ledger(home_engine)) == 2


def test_cli_list_without_scenarios(home_engine: sa.Engine) -> None:
    result = CliRunner().invoke(main, ["scenario", "list"])
    assert result.exit_code == 0 and "no scenarios registered" in result.output


# --- publishing to Retell (a local stand-in of its API) ---------------------------------------------

KEY = "key_test_retell_0001"


@pytest.fixture
def retell(monkeypatch: pytest.MonkeyPatch) -> Iterator[RetellStandIn]:
    standin = RetellStandIn(api_key=KEY).start()
    standin.add_llm("llm_sales_1", version=3)
    standin.add_agent("agent_sales_1", "llm_sales_1", version=5)
    monkeypatch.setenv("NEURACRM_RETELL_API_KEY", KEY)
    monkeypatch.setenv("NEURACRM_RETELL_BASE_URL", standin.base_url)
    reset_settings()
    yield standin
    standin.stop()


def _publishable() -> dict[str, Any]:
    return {**_base(), "retell": {"llm_id": "llm_sales_1", "agent_id": "agent_sales_1"}}


@pytest.mark.xdist_group("retell_standin")
def test_publish_pushes_the_champion_and_records_the_retell_version(
    home_engine: sa.Engine, tmp_path: Path, retell: RetellStandIn
) -> None:
    client = configure_mlflow()
    content = _publishable()
    register_scenario(_write(tmp_path, content), actor=ACTOR)
    challenger = {**content, "template": content["template"] + "A challenger's new sentence.\n"}
    register_scenario(_write(tmp_path, challenger), actor=ACTOR)  # v2: challenger, not published

    result = publish_scenario("sales_outbound", actor=ACTOR)
    assert (result.version, result.semver, result.llm_version, result.agent_version) == ("1", "1.0.0", 4, 6)

    llm_call, agent_call = retell.requests
    assert (llm_call.method, llm_call.path) == ("PATCH", "/update-retell-llm/llm_sales_1")
    assert llm_call.headers["authorization"] == f"Bearer {KEY}"
    assert llm_call.body == {
        "general_prompt": content["template"],  # the champion's, not the challenger's
        "begin_message": content["begin_message"],
        "model_config": {"type": "cascading", "primary": {"model": "gpt-4.1"}, "temperature": 0.3},
        "default_dynamic_variables": {
            name: prompt_registry.CONTEXT_VARIABLES[name]
            for name in sorted(load_scenario_file(_write(tmp_path, content)).variables())
        },
    }
    assert (agent_call.method, agent_call.path) == ("PATCH", "/update-agent/agent_sales_1")
    assert agent_call.body == {
        "voice_id": "11labs-Adrian",
        "response_engine": {"type": "retell-llm", "llm_id": "llm_sales_1", "version": 4},
    }

    row = _ledger(home_engine)[-1]
    assert (row.action, row.alias, row.to_version, row.actor) == ("publish", "champion", "1", ACTOR)
    assert row.metrics["retell_llm_version"] == 4 and row.metrics["retell_agent_version"] == 6
    assert row.metrics["retell_llm_id"] == "llm_sales_1" and row.id == result.ledger_id
    tags = prompt_registry.get_version(client, "sales_outbound", 1).tags
    assert tags["neuracrm.retell_llm_version"] == "4" and tags["neuracrm.retell_agent_version"] == "6"

    cli = CliRunner().invoke(main, ["scenario", "publish", "sales_outbound"])
    assert cli.exit_code == 0, cli.output
    assert "published champion v1 (1.0.0) to Retell LLM llm_sales_1 (version 5)" in cli.output
    assert _ledger(home_engine)[-1].metrics["retell_llm_version"] == 5


@pytest.mark.xdist_group("retell_standin")
def test_publish_failures_say_what_and_write_nothing(
    home_engine: sa.Engine, tmp_path: Path, retell: RetellStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = configure_mlflow()
    with pytest.raises(NotFoundError, match="no scenario 'sales_outbound' in the registry"):
        publish_scenario("sales_outbound", actor=ACTOR)

    # registered without retell ids
    register_scenario(_write(tmp_path, _base()), actor=ACTOR)
    with pytest.raises(
        RetellPublishError, match=r"champion v1 \(1.0.0\) has no retell.llm_id and retell.agent_id"
    ):
        publish_scenario("sales_outbound", actor=ACTOR)
    assert retell.requests == []

    # with ids (v2, challenger) but the champion v1 has none; promoted by hand
    register_scenario(_write(tmp_path, _publishable()), actor=ACTOR)
    prompt_registry.set_alias(client, "sales_outbound", "champion", 2)

    # Retell refuses the key: 401, named, nothing changed
    monkeypatch.setenv("NEURACRM_RETELL_API_KEY", "wrong-key")
    reset_settings()
    with pytest.raises(RetellPublishError) as error:
        publish_scenario("sales_outbound", actor=ACTOR)
    assert str(error.value) == (
        "Retell answered 401 Unauthorized to PATCH /update-retell-llm/llm_sales_1 (update Retell LLM "
        "llm_sales_1): Invalid API key (is NEURACRM_RETELL_API_KEY right?) (nothing was changed at Retell)"
    )
    cli = CliRunner().invoke(main, ["scenario", "publish", "sales_outbound"])
    assert cli.exit_code == 1 and "error: Retell answered 401 Unauthorized" in cli.output

    # no key at all
    monkeypatch.delenv("NEURACRM_RETELL_API_KEY")
    reset_settings()
    with pytest.raises(ConfigurationError, match="NEURACRM_RETELL_API_KEY is not set"):
        publish_scenario("sales_outbound", actor=ACTOR)

    # the agent update fails with a 5xx after the LLM was updated: both named
    monkeypatch.setenv("NEURACRM_RETELL_API_KEY", KEY)
    reset_settings()
    retell.requests.clear()
    llm_calls = len(retell.requests)
    retell.failures.clear()
    original = retell._answer

    def agent_fails(method: str, path: str, headers: Any, body: Any) -> tuple[int, dict[str, Any]]:
        if path.startswith("/update-agent/"):
            return 503, {"status": "error", "message": "agent store unavailable"}
        return original(method, path, headers, body)

    monkeypatch.setattr(retell, "_answer", agent_fails)
    with pytest.raises(RetellPublishError) as error:
        publish_scenario("sales_outbound", actor=ACTOR, max_retries=0)
    assert "Retell answered 503 Service Unavailable to PATCH /update-agent/agent_sales_1" in str(error.value)
    assert "agent store unavailable" in str(error.value)
    assert "Retell LLM llm_sales_1 was already updated to v2 (1.1.0), version 4; publish again" in str(
        error.value
    )
    assert len(retell.requests) == llm_calls + 2

    # no champion at all
    prompt_registry.delete_alias(client, "sales_outbound", "champion")
    with pytest.raises(RetellPublishError, match="has no champion version to publish"):
        publish_scenario("sales_outbound", actor=ACTOR)
    assert [r.action for r in _ledger(home_engine)] == ["promote", "register"]  # no publish row
