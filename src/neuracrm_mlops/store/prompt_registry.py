"""Voice-agent scenarios in MLflow's prompt registry: one registered prompt per scenario
(``voice_scenario.<scenario>``), its versions holding the template (``{{variable}}`` placeholders) and,
as the version's model config, the LLM and voice settings; aliases ``champion`` / ``challenger`` /
``previous`` as for models; the canary weight as a prompt tag (``neuracrm.canary_weight``).

MLflow keeps prompts apart from registered models (the model-registry calls do not see them), so
this module is the one place that reads and moves them. Every call takes an ``MlflowClient``
(``registry.configure_mlflow()``). The rollout moves (``release.scenario_rollout``) go through
``release.state``, which reaches a prompt through :class:`PromptRegistryAccess`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROMPT_PREFIX = "voice_scenario."
CANARY_WEIGHT_TAG = "neuracrm.canary_weight"
SEMVER_TAG = "neuracrm.semver"
ALIASES = ("champion", "challenger", "previous")
SCENARIO_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
INTERNAL_TAG_PREFIX = "_mlflow"  # MLflow's own prompt tags (``_mlflow_experiment_ids``): not ours


# The variables a scenario's template may use (``{{name}}``): what the platform fills for every call
# from the CRM (``POST /voice/context``), each with the documented default it takes when the CRM has
# nothing for the call (unknown caller, lead without score, no interactions). A template using any
# other variable is refused at registration.
CONTEXT_VARIABLES: Mapping[str, str] = {
    "organization_name": "our company",
    "caller_number": "unknown",
    "lead_id": "unknown",
    "lead_score": "unknown",
    "lead_tier": "unknown",
    "lead_top_factors": "none on record",
    "recent_interactions": "no earlier conversations on record",
    "deal_stage": "unknown",
}


class ScenarioNameError(ValueError):
    """A scenario name the registry does not accept; the message says what is accepted."""


def prompt_name(scenario: str) -> str:
    """The registered prompt of ``scenario`` (``sales_outbound`` -> ``voice_scenario.sales_outbound``)."""
    if not SCENARIO_NAME.match(scenario):
        raise ScenarioNameError(
            f"scenario name {scenario!r}: lower-case letters, digits and underscores, starting with a "
            "letter, at most 63 characters (e.g. sales_outbound)"
        )
    return PROMPT_PREFIX + scenario


def scenario_of(name: str) -> str | None:
    """The scenario a registered prompt name stands for, or None when it is not a scenario's."""
    return name.removeprefix(PROMPT_PREFIX) if name.startswith(PROMPT_PREFIX) else None


@dataclass(frozen=True)
class ScenarioVersion:
    """One version of a scenario: the template, its variables and the settings (model config)."""

    scenario: str
    version: str
    template: str
    config: Mapping[str, Any]
    semver: str | None
    variables: frozenset[str]
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_prompt_version(cls, scenario: str, prompt: Any) -> ScenarioVersion:
        tags = dict(getattr(prompt, "tags", None) or {})
        return cls(
            scenario=scenario,
            version=str(prompt.version),
            template=str(prompt.template),
            config=dict(getattr(prompt, "model_config", None) or {}),
            semver=tags.get(SEMVER_TAG),
            variables=frozenset(getattr(prompt, "variables", None) or ()),
            tags=tags,
        )


@dataclass(frozen=True)
class LiveScenario:
    """What serves a scenario now: the versions under each alias and the challenger's canary weight."""

    scenario: str
    champion: ScenarioVersion | None
    challenger: ScenarioVersion | None
    previous: ScenarioVersion | None
    canary_weight: float


def _missing_alias(exc: Exception) -> bool:
    return "alias" in str(exc).lower() and "not found" in str(exc).lower()


def _by_alias(client: Any, name: str, alias: str) -> Any | None:
    """The prompt version of prompt ``name`` under ``alias``, None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_prompt_version_by_alias(name, alias)
    except MlflowException as exc:
        if _missing_alias(exc):
            return None
        raise


def version_by_alias(client: Any, scenario: str, alias: str) -> ScenarioVersion | None:
    """The version under ``alias``, None when the alias is not set (other registry errors raise)."""
    prompt = _by_alias(client, prompt_name(scenario), alias)
    return None if prompt is None else ScenarioVersion.from_prompt_version(scenario, prompt)


def get_version(client: Any, scenario: str, version: str | int) -> ScenarioVersion:
    prompt = client.get_prompt_version(prompt_name(scenario), version)
    return ScenarioVersion.from_prompt_version(scenario, prompt)


def canary_weight(client: Any, scenario: str) -> float:
    tags = dict(client.get_prompt(prompt_name(scenario)).tags or {})
    try:
        return min(1.0, max(0.0, float(tags.get(CANARY_WEIGHT_TAG, 0.0))))
    except ValueError:
        return 0.0


def live_scenario(client: Any, scenario: str) -> LiveScenario:
    """Aliases and canary weight of ``scenario`` (a weight without a challenger counts as 0)."""
    champion = version_by_alias(client, scenario, "champion")
    challenger = version_by_alias(client, scenario, "challenger")
    previous = version_by_alias(client, scenario, "previous")
    weight = canary_weight(client, scenario) if challenger is not None else 0.0
    return LiveScenario(scenario, champion, challenger, previous, weight)


def set_alias(client: Any, scenario: str, alias: str, version: str | int) -> None:
    client.set_prompt_alias(prompt_name(scenario), alias, int(version))


def delete_alias(client: Any, scenario: str, alias: str) -> None:
    """Remove ``alias``; nothing to do when it is not set."""
    from mlflow.exceptions import MlflowException

    try:
        client.delete_prompt_alias(prompt_name(scenario), alias)
    except MlflowException as exc:
        if not _missing_alias(exc):
            raise


def canary_weight_value(weight: float) -> str:
    """The ``neuracrm.canary_weight`` tag's text for a traffic share (0..1); ValueError outside it."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"canary weight must be within [0, 1], got {weight}")
    return f"{weight:g}"


def set_canary_weight(client: Any, scenario: str, weight: float) -> None:
    """Set the challenger's share of calls (registration's weight 0; rollout moves set it through
    ``release.state.RegistryPlan`` so that the ledger records it first)."""
    client.set_prompt_tag(prompt_name(scenario), CANARY_WEIGHT_TAG, canary_weight_value(weight))


def list_scenarios(client: Any) -> list[str]:
    """Every scenario in the registry, by name."""
    prompts = client.search_prompts(filter_string=f"name LIKE '{PROMPT_PREFIX}%'", max_results=1_000)
    return sorted(s for s in (scenario_of(p.name) for p in prompts) if s)


def prompt_links(name: str, version: str | None) -> dict[str, str]:
    """Where on-call looks at a scenario: its prompt page in the MLflow UI (``NEURACRM_MLFLOW_UI_URL``)."""
    from neuracrm_mlops.config import get_settings

    if version is None:
        return {}
    base = get_settings().mlflow_ui_url.rstrip("/")
    return {"mlflow_prompt": f"{base}/#/prompts/{name}"}


class PromptRegistryAccess:
    """The registry reads and writes of ``release.state``'s atomic moves for a registered prompt
    (``name`` is the prompt's, ``voice_scenario.<scenario>``; versions are numbers as text).

    The same operations as the model registry's (aliases, prompt-level tags, version tags), on
    MLflow's prompt calls. Aliases are not listed by ``get_prompt``: :meth:`read` reads the platform's
    own (:data:`ALIASES`) one by one. Deletes of an absent alias or tag do nothing. The caller
    (``release.state``) retries each call and treats ``RESOURCE_DOES_NOT_EXIST`` of a version as
    the version being gone."""

    weight_tag = CANARY_WEIGHT_TAG

    def weight_value(self, weight: float) -> str:
        return canary_weight_value(weight)

    def read(self, client: Any, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """(alias -> version, prompt tags without MLflow's internal ones)."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        prompt = client.get_prompt(name)
        if prompt is None:  # MLflow answers a missing prompt with None, not an error
            raise MlflowException(f"no registered prompt {name!r}", error_code=RESOURCE_DOES_NOT_EXIST)
        tags = {
            str(k): str(v) for k, v in (prompt.tags or {}).items() if not k.startswith(INTERNAL_TAG_PREFIX)
        }
        aliases = {
            alias: str(found.version)
            for alias in ALIASES
            if (found := _by_alias(client, name, alias)) is not None
        }
        return aliases, tags

    def version_tags(self, client: Any, name: str, version: str) -> dict[str, str]:
        """The tags of ``version`` (``RESOURCE_DOES_NOT_EXIST`` when it is not registered)."""
        return {str(k): str(v) for k, v in (client.get_prompt_version(name, int(version)).tags or {}).items()}

    def set_alias(self, client: Any, name: str, alias: str, version: str) -> None:
        client.set_prompt_alias(name, alias, int(version))

    def delete_alias(self, client: Any, name: str, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.delete_prompt_alias(name, alias)
        except MlflowException as exc:
            if not _missing_alias(exc):
                raise

    def set_tag(self, client: Any, name: str, key: str, value: str) -> None:
        client.set_prompt_tag(name, key, value)

    def delete_tag(self, client: Any, name: str, key: str) -> None:
        client.delete_prompt_tag(name, key)

    def set_version_tag(self, client: Any, name: str, version: str, key: str, value: str) -> None:
        client.set_prompt_version_tag(name, int(version), key, value)

    def delete_version_tag(self, client: Any, name: str, version: str, key: str) -> None:
        client.delete_prompt_version_tag(name, int(version), key)

    def links(self, name: str, version: str | None) -> dict[str, str]:
        return prompt_links(name, version)
