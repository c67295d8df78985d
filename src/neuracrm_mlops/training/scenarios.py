"""Voice-agent scenarios from their files in git (``scenarios/<name>.yaml``) to versions in MLflow's
prompt registry (``store.prompt_registry``): the layer that produces scenario versions, as training
produces model versions.

``load_scenario_file`` reads and validates one file strictly (unknown fields, missing fields, wrong
types and out-of-range settings are refused, each named by file and field). ``register_scenario``
registers its content as a new prompt version when it differs from the latest one, with a semantic
version that says what kind of change it is (the rules: :func:`classify_change`), and moves the
aliases: the first version becomes ``champion``; a later one becomes ``challenger`` at canary
weight 0 (the rollout raises it), replacing an earlier challenger. Every alias move writes a
promotion-ledger row (``model_name`` = the prompt's name, ``voice_scenario.<name>``).

The file format, the versioning rules and the CLI are described in docs/voice-scenarios.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from neuracrm_mlops.errors import NeuraCRMError
from neuracrm_mlops.store import ledger, registry
from neuracrm_mlops.store import prompt_registry as prompts

log = logging.getLogger(__name__)

# tags every registered scenario version carries (beside prompt_registry.SEMVER_TAG)
GIT_COMMIT_TAG = "neuracrm.git_commit"
SOURCE_FILE_TAG = "neuracrm.source_file"
CHANGE_TAG = "neuracrm.change"  # first | major | minor | patch
CONTENT_HASH_TAG = "neuracrm.content_hash"

# the keys of a version's model config (what register_prompt stores beside the template)
SETTING_KEYS = ("voice_id", "model", "temperature", "max_tokens", "retell_llm_id", "retell_agent_id")
MESSAGE_KEYS = ("begin_message", "end_message")

# ``{{ anything }}``: every double-brace placeholder, so that a misspelt one ({{lead score}}) is refused
# rather than sent to Retell as literal text
PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
# a word for the "wording only" rule: a run of letters, digits or underscores
WORD = re.compile(r"\w+")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")

Change = Literal["first", "major", "minor", "patch"]


class ScenarioFileError(NeuraCRMError):
    """A scenario file that cannot be read or is not valid; nothing was registered."""


class ScenarioTemplateError(NeuraCRMError):
    """A scenario whose texts use variables the platform cannot fill; nothing was registered."""


# --- the file ------------------------------------------------------------------------------------

NonEmptyText = Annotated[str, Field(strict=True, min_length=1)]
Text = Annotated[str, Field(strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LlmSettings(_Strict):
    """The LLM settings of a scenario (``llm:`` in the file)."""

    model: NonEmptyText
    temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)]
    max_tokens: Annotated[int, Field(strict=True, ge=1, le=32_768)]

    @field_validator("temperature", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        # YAML numbers only: "0.3" (a string) and true (a bool) are mistakes, not 0.3 and 1.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number between 0 and 2, got {value!r}")
        return value


class RetellIds(_Strict):
    """The scenario's Retell LLM and agent (``retell:``), needed only to publish."""

    llm_id: NonEmptyText
    agent_id: NonEmptyText


class ScenarioFile(_Strict):
    """One scenario file (``scenarios/<name>.yaml``), validated; ``source`` is the file it came from."""

    name: NonEmptyText
    description: NonEmptyText
    template: NonEmptyText
    begin_message: Text  # "" = the agent waits for the caller to speak first
    end_message: Text | None = None
    voice_id: NonEmptyText
    llm: LlmSettings
    retell: RetellIds | None = None

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _scenario_name(cls, value: str) -> str:
        prompts.prompt_name(value)  # raises ScenarioNameError (a ValueError) with what is accepted
        return value

    @field_validator("template")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @property
    def source(self) -> Path | None:
        return self._source

    def variables(self) -> frozenset[str]:
        """The variables the scenario's texts use (template, begin and end message)."""
        return frozenset(variables_of(self.template, self.begin_message, self.end_message or ""))

    def model_settings(self) -> dict[str, Any]:
        """The version's model config as registered: LLM and voice settings, messages, Retell ids."""
        return {
            "model": self.llm.model,
            "temperature": float(self.llm.temperature),
            "max_tokens": self.llm.max_tokens,
            "voice_id": self.voice_id,
            "begin_message": self.begin_message,
            "end_message": self.end_message,
            "retell_llm_id": self.retell.llm_id if self.retell else None,
            "retell_agent_id": self.retell.agent_id if self.retell else None,
        }


class _UniqueKeyLoader:
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    @staticmethod
    def load(text: str, where: str) -> Any:
        import yaml

        loader_class: Any = type("UniqueKeyLoader", (yaml.SafeLoader,), {})

        def mapping(loader: Any, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = loader.construct_object(key_node, deep=deep)
                if key in seen:
                    raise ScenarioFileError(
                        f"{where}: line {key_node.start_mark.line + 1}: field {key!r} is given twice"
                    )
                seen.add(key)
            return loader.construct_mapping(node, deep)

        loader_class.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
        return yaml.load(text, Loader=loader_class)  # a SafeLoader subclass: no arbitrary objects


def _field_path(location: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


def _describe(error: Mapping[str, Any]) -> str:
    where = _field_path(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        models: dict[tuple[Any, ...], type[BaseModel]] = {
            (): ScenarioFile,
            ("llm",): LlmSettings,
            ("retell",): RetellIds,
        }
        parent = models.get(tuple(error["loc"][:-1]))
        allowed = ", ".join(parent.model_fields) if parent else "see docs/voice-scenarios.md"
        return f"{where}: unknown field (allowed here: {allowed})"
    if kind == "missing":
        return f"{where}: missing (required)"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = "" if isinstance(value, dict) or repr(value) in message else f" (got {value!r})"
    return f"{where}: {message}{shown}"


def load_scenario_file(path: str | Path) -> ScenarioFile:
    """Read and validate the scenario file at ``path``. Raises ScenarioFileError naming the file and
    every invalid field (unknown, missing, wrong type, out of range), or the YAML error's line."""
    import yaml

    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioFileError(f"{where}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioFileError(f"{where}: cannot be read: {exc}") from None
    try:
        data = _UniqueKeyLoader.load(text, where)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ScenarioFileError(f"{where}: not valid YAML: {line}{exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioFileError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioFileError(
            f"{where}: a scenario file is a YAML mapping of fields "
            f"({', '.join(ScenarioFile.model_fields)}), got {type(data).__name__}"
        )
    try:
        scenario = ScenarioFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        count = len(exc.errors())
        raise ScenarioFileError(
            f"{where}: invalid scenario file ({count} problem{'s' if count > 1 else ''}): {problems}"
        ) from None
    scenario._source = path
    return scenario


# --- the variables ---------------------------------------------------------------------------------


def variables_of(*texts: str) -> set[str]:
    """The names in every ``{{...}}`` placeholder of ``texts`` (spaces inside the braces ignored)."""
    return {match.strip() for text in texts for match in PLACEHOLDER.findall(text)}


def check_variables(scenario: ScenarioFile) -> None:
    """Refuse texts that use a variable the platform cannot fill (``prompt_registry.CONTEXT_VARIABLES``)
    or that write a known variable with single braces (``{lead_id}``: Retell would say it verbatim)."""
    where = str(scenario.source or scenario.name)
    texts = {"template": scenario.template, "begin_message": scenario.begin_message}
    if scenario.end_message:
        texts["end_message"] = scenario.end_message
    allowed = ", ".join(prompts.CONTEXT_VARIABLES)
    problems = []
    for field_name, text in texts.items():
        unknown = sorted(variables_of(text) - set(prompts.CONTEXT_VARIABLES))
        if unknown:
            names = ", ".join("{{" + name + "}}" for name in unknown)
            problems.append(f"{field_name} uses unknown variable{'s' if len(unknown) > 1 else ''} {names}")
        single = sorted(
            {
                name
                for name in re.findall(r"(?<!\{)\{\s*(\w+)\s*\}(?!\})", text)
                if name in prompts.CONTEXT_VARIABLES
            }
        )
        if single:
            names = ", ".join("{" + name + "}" for name in single)
            problems.append(f"{field_name} writes {names} with single braces (use {{{{name}}}})")
    if problems:
        raise ScenarioTemplateError(
            f"{where}: {'; '.join(problems)}. The platform fills only these variables: {allowed}. "
            "Nothing was registered."
        )


# --- versions: what changed -------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioContent:
    """What a version serves: the template, the messages and the settings (what is compared)."""

    template: str
    begin_message: str
    end_message: str
    settings: Mapping[str, Any]

    @classmethod
    def of_file(cls, scenario: ScenarioFile) -> ScenarioContent:
        config = scenario.model_settings()
        return cls.of(scenario.template, config)

    @classmethod
    def of(cls, template: str, config: Mapping[str, Any]) -> ScenarioContent:
        settings = {key: _setting(config.get(key)) for key in SETTING_KEYS}
        return cls(
            template=template,
            begin_message=str(config.get("begin_message") or ""),
            end_message=str(config.get("end_message") or ""),
            settings=settings,
        )

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(variables_of(self.template, self.begin_message, self.end_message))

    def texts(self) -> dict[str, str]:
        return {
            "template": self.template,
            "begin_message": self.begin_message,
            "end_message": self.end_message,
        }

    def digest(self) -> str:
        payload = json.dumps({**self.texts(), "settings": dict(self.settings)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _setting(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        return int(number) if number.is_integer() else number
    return str(value)


def wording_of(text: str) -> list[str]:
    """``text``'s words in order, in lower case: what is left when letter case, whitespace and
    punctuation are ignored (a word is a run of letters, digits or underscores)."""
    return WORD.findall(text.casefold())


def classify_change(old: ScenarioContent | None, new: ScenarioContent) -> tuple[Change | None, str]:
    """The kind of change from ``old`` (the latest registered version, None: there is none) to ``new``,
    with a reason naming what changed; (None, ...) when nothing did.

    - ``major``: the set of variables the texts use changed (a variable added or removed): what the
      platform must fill for a call is different.
    - ``minor``: a setting changed (voice_id, llm model / temperature / max_tokens, Retell ids) or a
      text (template, begin or end message) changed beyond wording: its words differ.
    - ``patch``: wording only: the texts differ, but only in whitespace, punctuation or letter case
      (the same words in the same order, :func:`wording_of`).
    """
    if old is None:
        return "first", "first version"
    if old == new:
        return None, "identical to the latest version"
    if old.variables != new.variables:
        added = sorted(new.variables - old.variables)
        removed = sorted(old.variables - new.variables)
        parts = ([f"added {', '.join(added)}"] if added else []) + (
            [f"removed {', '.join(removed)}"] if removed else []
        )
        return "major", f"variables changed: {'; '.join(parts)}"
    settings = [key for key in SETTING_KEYS if old.settings.get(key) != new.settings.get(key)]
    old_texts, new_texts = old.texts(), new.texts()
    changed = [key for key in new_texts if old_texts[key] != new_texts[key]]
    reworded = [key for key in changed if wording_of(old_texts[key]) != wording_of(new_texts[key])]
    if settings or reworded:
        what = [f"settings changed: {', '.join(settings)}"] if settings else []
        what += [f"text changed: {', '.join(reworded)}"] if reworded else []
        return "minor", "; ".join(what)
    return "patch", f"wording only (whitespace, punctuation or case) in {', '.join(changed)}"


def parse_semver(text: str | None) -> tuple[int, int, int] | None:
    match = SEMVER.match(text or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def next_semver(latest: tuple[int, int, int] | None, change: Change) -> str:
    """The semantic version after ``latest`` for a change of kind ``change`` (1.0.0 first)."""
    if latest is None or change == "first":
        return "1.0.0"
    major, minor, patch = latest
    if change == "major":
        return f"{major + 1}.0.0"
    if change == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


# --- registration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationResult:
    """What ``register_scenario`` did. ``status``: ``registered`` (a new version) or ``unchanged``
    (the file's content is the latest version's; ``version`` names it)."""

    scenario: str
    prompt_name: str
    status: Literal["registered", "unchanged"]
    version: str
    semver: str | None
    change: Change | None
    reason: str
    alias: str | None = None  # the alias the new version took (champion | challenger)
    replaced: str | None = None  # the version that held that alias before
    aliases: tuple[str, ...] = ()  # unchanged: the aliases the latest version holds
    ledger_ids: tuple[int, ...] = field(default_factory=tuple)


def _all_versions(client: Any, name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        if client.get_prompt(name) is None:
            return []
    except MlflowException as exc:
        if "not found" in str(exc).lower():
            return []
        raise
    versions: list[Any] = []
    token = None
    while True:
        page = client.search_prompt_versions(name, max_results=1_000, page_token=token)
        versions += list(getattr(page, "prompt_versions", page))
        token = getattr(page, "token", None) or getattr(page, "next_page_token", None)
        if not token:
            return versions


def _source_label(path: Path | None) -> str:
    """The scenario file as a path inside its git checkout when it is in one, else as given."""
    if path is None:
        return "(no file)"
    resolved = path.resolve()
    for parent in resolved.parents:
        if (parent / ".git").exists():
            return resolved.relative_to(parent).as_posix()
    return str(path)


def _aliases_of(client: Any, scenario: str, version: str) -> tuple[str, ...]:
    return tuple(
        alias
        for alias in prompts.ALIASES
        if (held := prompts.version_by_alias(client, scenario, alias)) is not None and held.version == version
    )


def _has_ledger_rows(engine: sa.Engine, name: str, version: str) -> bool:
    entries = ledger.latest_entries(engine, model_name=name, limit=1_000)
    return any(version in (e.to_version, e.from_version) for e in entries)


def register_scenario(
    file: ScenarioFile | str | Path,
    *,
    actor: str,
    client: Any = None,
    engine: sa.Engine | None = None,
) -> RegistrationResult:
    """Register ``file``'s scenario as a new prompt version when its content differs from the latest
    version, and move an alias to it (first version: ``champion``; later: ``challenger`` at canary
    weight 0, replacing an earlier challenger), each alias move with a promotion-ledger row.

    Refuses (ScenarioTemplateError, nothing registered) texts using variables outside
    ``CONTEXT_VARIABLES``. Idempotent: the same content again registers nothing (``unchanged``). A
    registration cut short between the new version and its alias move is finished by the next run
    (the latest version holds no alias and no ledger row names it)."""
    from neuracrm_mlops.store.db.engine import get_engine
    from neuracrm_mlops.store.db.migrate import require_current_schema

    scenario = file if isinstance(file, ScenarioFile) else load_scenario_file(file)
    check_variables(scenario)
    engine = engine or get_engine()
    require_current_schema(engine)
    client = client or registry.configure_mlflow()
    name = prompts.prompt_name(scenario.name)
    new = ScenarioContent.of_file(scenario)

    versions = _all_versions(client, name)
    latest = max(versions, key=lambda v: int(v.version)) if versions else None
    old = (
        ScenarioContent.of(str(latest.template), dict(latest.model_config or {}))
        if latest is not None
        else None
    )
    change, reason = classify_change(old, new)
    if change is None:
        assert latest is not None
        version = str(latest.version)
        semver = dict(latest.tags or {}).get(prompts.SEMVER_TAG)
        held = _aliases_of(client, scenario.name, version)
        if held or _has_ledger_rows(engine, name, version):
            return RegistrationResult(
                scenario.name, name, "unchanged", version, semver, None, reason, aliases=held
            )
        # registered by a run that stopped before its alias move: finish that move now
        log.warning("%s version %s holds no alias and has no ledger row: moving its alias now", name, version)
        return _move_alias(
            client, engine, scenario, version, semver, None, f"{reason}; alias move finished", actor
        )

    semvers = [s for v in versions if (s := parse_semver(dict(v.tags or {}).get(prompts.SEMVER_TAG)))]
    semver = next_semver(max(semvers) if semvers else None, change)
    source = _source_label(scenario.source)
    commit = registry.git_commit()
    registered = client.register_prompt(
        name,
        template=scenario.template,
        commit_message=f"{semver} ({change}: {reason}) from {source} at {commit[:12]}",
        tags={
            prompts.SEMVER_TAG: semver,
            CHANGE_TAG: change,
            GIT_COMMIT_TAG: commit,
            SOURCE_FILE_TAG: source,
            CONTENT_HASH_TAG: new.digest(),
        },
        model_config=scenario.model_settings(),
    )
    version = str(registered.version)
    log.info("%s: registered version %s (%s, %s)", name, version, semver, change)
    return _move_alias(client, engine, scenario, version, semver, change, reason, actor)


def _move_alias(
    client: Any,
    engine: sa.Engine,
    scenario: ScenarioFile,
    version: str,
    semver: str | None,
    change: Change | None,
    reason: str,
    actor: str,
) -> RegistrationResult:
    """Give ``version`` its alias: ``champion`` when the scenario has none, else ``challenger`` at
    weight 0. The ledger row is written in a transaction committed only after the registry calls
    succeed (a failed call leaves no row behind)."""
    name = prompts.prompt_name(scenario.name)
    champion = prompts.version_by_alias(client, scenario.name, registry.CHAMPION)
    label = f"v{version} ({semver})" if semver else f"v{version}"
    source = _source_label(scenario.source)
    metrics = {"semver": semver, "change": change, "source_file": source}
    with engine.begin() as conn:
        if champion is None:
            alias, replaced = registry.CHAMPION, None
            entry = ledger.record_change(
                conn,
                actor=actor,
                model_name=name,
                action="promote",
                alias=alias,
                to_version=version,
                reason=f"{label} registered from {source} ({reason}): the scenario had no champion",
                metrics=metrics,
            )
            prompts.set_alias(client, scenario.name, alias, version)
        else:
            alias = registry.CHALLENGER
            earlier = prompts.version_by_alias(client, scenario.name, alias)
            replaced = earlier.version if earlier is not None and earlier.version != version else None
            entry = ledger.record_change(
                conn,
                actor=actor,
                model_name=name,
                action="register",
                alias=alias,
                from_version=replaced,
                to_version=version,
                weight=0.0,
                reason=(
                    f"{label} registered from {source} ({reason}): challenger at weight 0 "
                    f"against champion v{champion.version}"
                    + (f", replacing challenger v{replaced}" if replaced else "")
                ),
                metrics=metrics,
            )
            prompts.set_canary_weight(client, scenario.name, 0.0)
            prompts.set_alias(client, scenario.name, alias, version)
    return RegistrationResult(
        scenario=scenario.name,
        prompt_name=name,
        status="registered",
        version=version,
        semver=semver,
        change=change,
        reason=reason,
        alias=alias,
        replaced=replaced,
        ledger_ids=(entry,),
    )


# --- the scenarios directory: what `train voice_scenario` (the train_voice_scenario DAG) registers -----

DEFAULT_SCENARIOS_DIR = Path(__file__).resolve().parents[3] / "scenarios"
SCENARIO_SUFFIXES = (".yaml", ".yml")


def scenarios_directory() -> Path:
    """NEURACRM_SCENARIOS_DIR, else the repository's ``scenarios/``."""
    from neuracrm_mlops.config import get_settings

    return get_settings().scenarios_dir or DEFAULT_SCENARIOS_DIR


def check_scenario_files(directory: Path | None = None) -> list[ScenarioFile]:
    """Every scenario file in ``directory`` (``*.yaml``, ``*.yml``), read and checked strictly (fields,
    variables), all of them before any is registered. ScenarioFileError naming every bad file (and two
    files with one scenario name); a missing or empty directory is an error too: nothing to register
    is a deployment mistake, not a quiet success."""
    directory = directory or scenarios_directory()
    if not directory.is_dir():
        raise ScenarioFileError(
            f"{directory}: no scenarios directory (set NEURACRM_SCENARIOS_DIR to the folder of "
            "scenarios/<name>.yaml files)"
        )
    paths = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in SCENARIO_SUFFIXES)
    if not paths:
        raise ScenarioFileError(f"{directory}: no scenario files (*.yaml) to register")
    scenarios: list[ScenarioFile] = []
    problems: list[str] = []
    for path in paths:
        try:
            scenario = load_scenario_file(path)
            check_variables(scenario)
        except (ScenarioFileError, ScenarioTemplateError) as exc:
            problems.append(str(exc))
            continue
        scenarios.append(scenario)
    seen: dict[str, Path | None] = {}
    for scenario in scenarios:
        if scenario.name in seen:
            problems.append(
                f"{scenario.source}: scenario {scenario.name!r} is also defined in {seen[scenario.name]}"
            )
        seen[scenario.name] = scenario.source
    if problems:
        count = len(problems)
        raise ScenarioFileError(
            f"{directory}: {count} invalid scenario file{'s' if count > 1 else ''}, nothing registered: "
            + " | ".join(problems)
        )
    return scenarios


def scenario_files_summary(run_id: str, directory: Path | None = None) -> dict[str, Any]:
    """The family's check before registration (``FamilySpec.validator``): the lineage summary of the
    checked files, or ScenarioFileError (nothing registered)."""
    directory = directory or scenarios_directory()
    scenarios = check_scenario_files(directory)
    return {
        "dataset": "scenarios",
        "directory": str(directory),
        "success": True,
        "files": len(scenarios),
        "scenarios": [s.name for s in scenarios],
        "run_id": run_id,
    }


def register_scenario_files(
    *, actor: str, directory: Path | None = None, client: Any = None, engine: sa.Engine | None = None
) -> dict[str, Any]:
    """Register every scenario file of ``directory`` whose content changed (``register_scenario``),
    after checking all of them. Counts by outcome (``champion``: a first version, ``challenger``: a
    new version against the champion, ``unchanged``) and each scenario's result."""
    scenarios = check_scenario_files(directory)
    counts = {"champion": 0, "challenger": 0, "unchanged": 0}
    results: list[dict[str, Any]] = []
    for scenario in scenarios:
        result = register_scenario(scenario, actor=actor, client=client, engine=engine)
        outcome = result.alias if result.status == "registered" and result.alias else "unchanged"
        counts[outcome] += 1
        results.append(
            {
                "scenario": result.scenario,
                "status": result.status,
                "version": result.version,
                "semver": result.semver,
                "alias": result.alias,
                "reason": result.reason,
            }
        )
    return {**counts, "scenarios": results}
