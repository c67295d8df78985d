"""Family logic dispatches through the family registry (``neuracrm_mlops.families``), not on strings.

The scan reads every module under src/, dags/, plugins/ and serving/ (the families package aside)
and reports each comparison, ``in`` test, ``match`` case or ``startswith``/``endswith`` call against a
registered family's name as a string literal (``== "sales_forecast"``, ``in ("lead_scoring", ...)``),
against a ``FAMILY``/``*_FAMILY`` constant or against the registry's ``LEAD_MODEL``, ``SENTIMENT_MODEL``
or ``FORECAST_MODEL_PREFIX``. Looking a family up by name, naming one in a message,
or passing one as an argument is fine: branching on one is not.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from neuracrm_mlops import families
from neuracrm_mlops.families import (
    FAMILIES,
    FamilySpec,
    ModelFamily,
    TrainRequest,
    family_of_model,
    find_family,
    get_family,
)
from neuracrm_mlops.families.base import ACCURACY_MEASURES, NAMINGS, ROLLOUT_STRATEGIES

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("src", "dags", "plugins", "serving")
FAMILIES_PACKAGE = Path("src/neuracrm_mlops/families")

# Family branches that remain, per file: at most this many, and why.
ALLOWED: dict[str, tuple[int, str]] = {}


def _is_family_literal(node: ast.AST, names: frozenset[str]) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value in names
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_is_family_literal(element, names) for element in node.elts)
    return False


# the registry's names of the family models: ``name == registry.LEAD_MODEL`` is a family branch too
FAMILY_MODEL_CONSTANTS = frozenset({"LEAD_MODEL", "SENTIMENT_MODEL", "FORECAST_MODEL_PREFIX"})


def _is_family_constant(node: ast.AST) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name == "FAMILY" or name.endswith("_FAMILY") or name in FAMILY_MODEL_CONSTANTS


def _is_family_operand(node: ast.AST, names: frozenset[str]) -> bool:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_is_family_operand(element, names) for element in node.elts)
    return _is_family_literal(node, names) or _is_family_constant(node)


def _patterns(pattern: ast.pattern) -> Iterator[ast.pattern]:
    yield pattern
    for child in ast.iter_child_nodes(pattern):
        if isinstance(child, ast.pattern):
            yield from _patterns(child)


def family_branches(source: str, names: frozenset[str]) -> list[int]:
    """The line of each branch on a family string in ``source``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            if any(_is_family_operand(operand, names) for operand in (node.left, *node.comparators)):
                lines.append(node.lineno)
        elif isinstance(node, ast.match_case):
            for pattern in _patterns(node.pattern):
                if isinstance(pattern, ast.MatchValue) and _is_family_operand(pattern.value, names):
                    lines.append(pattern.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith")
            and any(_is_family_operand(arg, names) for arg in node.args)
        ):
            lines.append(node.lineno)
    return sorted(lines)


def _scanned_files() -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative.is_relative_to(FAMILIES_PACKAGE) or "__pycache__" in relative.parts:
                continue
            yield relative


def _all_branches() -> dict[str, list[int]]:
    names = frozenset(FAMILIES)
    found = {}
    for relative in _scanned_files():
        lines = family_branches((ROOT / relative).read_text(encoding="utf-8"), names)
        if lines:
            found[relative.as_posix()] = lines
    return found


def test_no_family_string_branch_outside_the_families_package() -> None:
    found = _all_branches()
    offending = []
    for path, lines in found.items():
        allowed = ALLOWED.get(path, (0, ""))[0]
        if len(lines) > allowed:
            text = (ROOT / path).read_text(encoding="utf-8").splitlines()
            offending += [f"{path}:{line}: {text[line - 1].strip()}" for line in lines]
    assert not offending, (
        "family logic must dispatch through neuracrm_mlops.families (a field or method of the family), "
        "not branch on family strings:\n" + "\n".join(offending)
    )


def test_the_scan_finds_every_kind_of_family_branch() -> None:
    names = frozenset({"lead_scoring", "sales_forecast"})
    source = inspect.cleandoc(
        """
        if family == "sales_forecast": pass
        if "lead_scoring" != model: pass
        if model in ("lead_scoring", "sentiment"): pass
        if model == forecast_rollout.FAMILY: pass
        if family_of(name) == FORECAST_FAMILY: pass
        if name in (registry.LEAD_MODEL, registry.LEAD_RULES_MODEL): pass
        ok = name.startswith("sales_forecast")
        match family:
            case "lead_scoring" | "other":
                pass
        # not branches: a lookup, a message, an argument
        spec = FAMILIES["sales_forecast"]
        print(f"train sales_forecast first")
        train("lead_scoring")
        if family == other: pass
        """
    )
    assert family_branches(source, names) == [1, 2, 3, 4, 5, 6, 7, 9]


def test_the_allow_list_names_files_that_exist() -> None:
    for path, (count, why) in ALLOWED.items():
        assert (ROOT / path).is_file(), path
        assert count > 0 and why, path


# -- every registered family satisfies the protocol -----------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_registered_family_satisfies_the_protocol(name: str) -> None:
    family = FAMILIES[name]
    assert isinstance(family, ModelFamily)
    assert family.name == name
    assert family.naming in NAMINGS
    assert family.rollout_strategy in ROLLOUT_STRATEGIES
    assert family.accuracy_measure in ACCURACY_MEASURES
    assert family.fallback and family.dataset and family.validation_suite
    assert callable(family.train) and callable(family.predicted_label)
    # the names it registers are its own, and lead back to it
    if family.naming == "shared":
        assert family.registered_name() == name
        assert not family.cli_train.organization_option and not family.checks.per_organization
        with pytest.raises(ValueError, match="one model for every organization"):
            family.registered_name(7)
    elif family.naming == "per_organization":
        assert family.registered_name(7).startswith(family.model_prefix)
        assert family.cli_train.organization_option
        with pytest.raises(ValueError, match="one model per organization"):
            family.registered_name()
    else:  # per_scenario: the prompt registry names them (``voice_scenario.<scenario>``)
        from neuracrm_mlops.store import prompt_registry

        assert family.model_prefix == prompt_registry.PROMPT_PREFIX
        assert not family.cli_train.organization_option
        with pytest.raises(ValueError, match="one registered prompt per scenario"):
            family.registered_name()
    registered = {
        "shared": family.registered_name,
        "per_organization": lambda: family.registered_name(7),
        "per_scenario": lambda: family.model_prefix + "sales_outbound",
    }[family.naming]()
    assert family.owns(registered)
    assert family_of_model(registered) is family


@pytest.mark.parametrize("name", [name for name, family in FAMILIES.items() if family.validator is None])
def test_each_familys_dataset_and_suite_are_the_validation_librarys(name: str) -> None:
    from neuracrm_mlops.quality.validation import DATASET_SUITES

    family = FAMILIES[name]
    assert DATASET_SUITES[family.dataset] == family.validation_suite


def test_the_registry_lists_the_four_families_in_their_display_order() -> None:
    assert list(FAMILIES) == ["lead_scoring", "sentiment", "sales_forecast", "voice_scenario"]
    assert families.family_names() == ("lead_scoring", "sentiment", "sales_forecast", "voice_scenario")
    assert [f.name for f in families.families_with(naming="shared")] == ["lead_scoring", "sentiment"]
    assert [f.name for f in families.families_with(rollout_strategy="organization_cohort")] == [
        "sales_forecast"
    ]
    assert [f.name for f in families.families_with(rollout_strategy="call_share")] == ["voice_scenario"]


def test_the_voice_scenario_family_validates_its_files_not_a_crm_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its check reads every scenario file strictly before anything is registered, and names each
    bad file; the repository's own scenarios pass it."""
    from neuracrm_mlops.config import reset_settings
    from neuracrm_mlops.errors import NeuraCRMError

    voice = FAMILIES["voice_scenario"]
    checked = voice.validate("run-1")
    assert checked["success"] and checked["scenarios"] == ["customer_support", "sales_outbound"]
    good = (ROOT / "scenarios" / "sales_outbound.yaml").read_text()
    (tmp_path / "sales_outbound.yaml").write_text(good)
    (tmp_path / "customer_support.yaml").write_text(good.replace("{{lead_score}}", "{{lead_scroe}}"))
    (tmp_path / "broken.yml").write_text("name: [unclosed\n")
    monkeypatch.setenv("NEURACRM_SCENARIOS_DIR", str(tmp_path))
    reset_settings()
    try:
        with pytest.raises(NeuraCRMError) as refused:
            voice.validate("run-2")
        message = str(refused.value)
        assert "2 invalid scenario files, nothing registered" in message
        assert "broken.yml" in message and "lead_scroe" in message
        (tmp_path / "customer_support.yaml").unlink()
        (tmp_path / "broken.yml").write_text(good)  # the same scenario name in two files
        with pytest.raises(NeuraCRMError, match="'sales_outbound' is also defined in"):
            voice.validate("run-3")
    finally:
        monkeypatch.delenv("NEURACRM_SCENARIOS_DIR")
        reset_settings()


def test_registered_models_map_to_their_family() -> None:
    assert family_of_model("sales_forecast_org_12").name == "sales_forecast"
    assert family_of_model("lead_scoring").name == "lead_scoring"
    assert find_family("lead_scoring_rules") is None  # the rule fallback is no family's model
    with pytest.raises(families.UnknownFamilyError, match="no registered model"):
        family_of_model("churn")
    with pytest.raises(ValueError, match="unknown model family 'churn': use one of lead_scoring"):
        get_family("churn")


def test_the_old_names_are_thin_aliases_of_the_registry() -> None:
    from neuracrm_mlops.ops import dag_support, health_page, pipelines, status
    from neuracrm_mlops.release import live_stats

    assert live_stats.family_of("sales_forecast_org_3") == "sales_forecast"
    assert live_stats.family_of("lead_scoring_rules") == "lead_scoring_rules"
    assert dag_support.FAMILIES == ("lead_scoring", "sentiment", "sales_forecast", "voice_scenario")
    assert dag_support.FAMILY_DATASETS == pipelines.FAMILY_DATASETS
    assert pipelines.FAMILY_DATASETS == {
        "lead_scoring": "leads",
        "sentiment": "interactions",
        "sales_forecast": "sales",
        "voice_scenario": "scenarios",
    }
    assert status.FALLBACK_OF["sentiment"] == "VADER"
    assert health_page.model_name_for("sales_forecast", "4") == "sales_forecast_org_4"
    assert health_page.model_name_for("sentiment", None) == "sentiment"
    assert health_page.ROLLOUT_DAG_IDS == (
        "rollout_lead_scoring",
        "rollout_sentiment",
        "rollout_sales_forecast",
        "rollout_voice_scenario",
    )


def test_the_monitor_runs_each_familys_checks() -> None:
    from neuracrm_mlops.monitoring import monitor as monitoring
    from neuracrm_mlops.release import rollout

    assert monitoring.MONITORED_MODELS == ("lead_scoring", "sentiment")
    lead, sentiment, forecast = (
        monitoring.checks_for(n) for n in ("lead_scoring", "sentiment", "sales_forecast_org_2")
    )
    assert (lead.health, lead.drift, lead.bias) == (True, True, True)
    assert (sentiment.health, sentiment.drift, sentiment.bias) == (True, True, False)
    assert (forecast.health, forecast.drift, forecast.bias, forecast.per_organization) == (
        True,
        False,
        False,
        True,
    )
    assert rollout.organization_of("sales_forecast_org_12") == 12
    assert (
        rollout.organization_of("sales_forecast") is None and rollout.organization_of("lead_scoring") is None
    )


@pytest.mark.parametrize(
    ("name", "output", "label"),
    [
        ("lead_scoring", {"probability": 0.5}, "converted"),
        ("lead_scoring", {"probability": 0.49}, "not_converted"),
        ("lead_scoring", {}, None),
        ("sentiment", {"label": "positive"}, "positive"),
        ("sentiment", {}, None),
        ("sales_forecast", {"points": []}, None),
    ],
)
def test_each_family_reads_the_label_of_a_logged_output(
    name: str, output: Mapping[str, Any], label: str | None
) -> None:
    assert FAMILIES[name].predicted_label(output) == label


def test_a_new_family_is_one_spec_plus_one_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """What adding a family takes: a FamilySpec; with it in the registry, the dispatch finds it."""
    calls: list[TrainRequest] = []

    def train(request: TrainRequest) -> dict[str, Any]:
        calls.append(request)
        return {"status": "challenger"}

    voice = FamilySpec(
        name="call_summaries",
        dataset="interactions",
        validation_suite="interactions",
        naming="shared",
        fallback="scripted scenario",
        rollout_strategy="traffic_share",
        accuracy_measure="label_match",
        trainer=train,
    )
    monkeypatch.setitem(FAMILIES, voice.name, voice)
    from neuracrm_mlops.ops import pipelines

    assert get_family("call_summaries") is voice
    assert family_of_model("call_summaries") is voice
    outcome = pipelines.train_family("call_summaries", run_key="k", dag_run_id="d", validation={})
    assert outcome == {"status": "challenger"} and calls[0].lineage.run_key == "k"
    assert not pipelines._by_cohort("call_summaries")


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"naming": "by_region"}, "naming"),
        ({"rollout_strategy": "big_bang"}, "rollout_strategy"),
        ({"accuracy_measure": "mape"}, "accuracy_measure"),
        ({"model_prefix": "x_"}, "model_prefix"),
        ({"naming": "per_organization"}, "model_prefix"),
    ],
)
def test_an_inconsistent_family_is_refused(kwargs: dict[str, Any], says: str) -> None:
    base: dict[str, Any] = {
        "name": "x",
        "dataset": "leads",
        "validation_suite": "leads",
        "naming": "shared",
        "fallback": "rules",
        "rollout_strategy": "traffic_share",
        "accuracy_measure": "label_match",
        "trainer": lambda request: {},
    }
    with pytest.raises(ValueError, match=says):
        FamilySpec(**{**base, **kwargs})
