"""Publishing a voice scenario to Retell AI: the ``champion`` version's prompt and settings go to the
scenario's Retell LLM (``PATCH /update-retell-llm/{llm_id}``) and agent (``PATCH /update-agent/{agent_id}``)
through retell-sdk, with ``NEURACRM_RETELL_API_KEY`` against ``NEURACRM_RETELL_BASE_URL``.

What is sent:

- to the LLM: ``general_prompt`` = the template (Retell fills its ``{{variables}}`` from the dynamic
  variables of each call), ``begin_message``, ``model_config`` = ``{type: cascading, primary: {model},
  temperature}`` (the SDK's current form; the top-level ``model`` / ``model_temperature`` fields it
  replaces are deprecated and ignored when ``model_config`` is set), and ``default_dynamic_variables``
  = the platform's documented default of every variable the texts use (``CONTEXT_VARIABLES``);
- to the agent: ``voice_id`` and ``response_engine`` = the LLM at the version Retell just answered.

Retell's LLM API has no maximum-tokens setting nor an end message: ``max_tokens`` and
``end_message`` stay in the registry (the platform's own settings) and are not sent.

The Retell LLM's version as Retell answers it is recorded in a promotion-ledger row (action
``publish``) and as tags on the prompt version (``neuracrm.retell_llm_version``, ...).
"""

from __future__ import annotations

import datetime as dt
import logging
import typing
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.errors import ConfigurationError, NeuraCRMError, NotFoundError
from neuracrm_mlops.store import ledger, registry
from neuracrm_mlops.store import prompt_registry as prompts

log = logging.getLogger(__name__)

RETELL_LLM_VERSION_TAG = "neuracrm.retell_llm_version"
RETELL_AGENT_VERSION_TAG = "neuracrm.retell_agent_version"
RETELL_PUBLISHED_AT_TAG = "neuracrm.retell_published_at"
# Retell's temperature range (the SDK's model_config.temperature: "from 0 to 1")
RETELL_MAX_TEMPERATURE = 1.0


class RetellPublishError(NeuraCRMError):
    """A scenario cannot be published to Retell, or Retell refused it; the message says which step."""


@dataclass(frozen=True)
class PublishResult:
    scenario: str
    prompt_name: str
    version: str  # the prompt version published (the champion)
    semver: str | None
    llm_id: str
    llm_version: int | None  # as Retell answered
    agent_id: str
    agent_version: int | None
    ledger_id: int


def retell_models() -> frozenset[str]:
    """The LLM models the installed retell-sdk accepts (empty when its types cannot be read)."""
    try:
        from retell.types.llm_update_params import ModelConfigCascadingModelConfigPrimary

        hints = typing.get_type_hints(ModelConfigCascadingModelConfigPrimary)
        return frozenset(str(a) for a in typing.get_args(hints["model"]))
    except Exception:  # a future SDK with other types: leave the check to Retell
        return frozenset()


def _champion(client: Any, scenario: str) -> prompts.ScenarioVersion:
    from mlflow.exceptions import MlflowException

    name = prompts.prompt_name(scenario)
    try:
        champion = prompts.version_by_alias(client, scenario, registry.CHAMPION)
    except MlflowException as exc:
        if "not found" in str(exc).lower():
            raise NotFoundError(
                f"no scenario {scenario!r} in the registry (prompt {name}): register it first with "
                f"`neuracrm-mlops scenario register scenarios/{scenario}.yaml`"
            ) from None
        raise
    if champion is None:
        raise RetellPublishError(
            f"scenario {scenario!r} has no champion version to publish (prompt {name}): register it "
            f"(`neuracrm-mlops scenario register scenarios/{scenario}.yaml`) or restore a champion"
        )
    return champion


def _required(config: typing.Mapping[str, Any], label: str, scenario: str) -> tuple[str, str]:
    llm_id, agent_id = config.get("retell_llm_id"), config.get("retell_agent_id")
    if not llm_id or not agent_id:
        missing = " and ".join(
            n for n, v in (("retell.llm_id", llm_id), ("retell.agent_id", agent_id)) if not v
        )
        raise RetellPublishError(
            f"scenario {scenario!r} champion {label} has no {missing} in its registered config: add "
            f"`retell: {{llm_id: ..., agent_id: ...}}` to scenarios/{scenario}.yaml (the ids of its "
            "Retell LLM and agent), register it and promote that version"
        )
    return str(llm_id), str(agent_id)


def _check_settings(config: typing.Mapping[str, Any], label: str, scenario: str) -> None:
    model = str(config.get("model") or "")
    known = retell_models()
    if known and model not in known:
        raise RetellPublishError(
            f"scenario {scenario!r} champion {label}: llm.model {model!r} is not a model Retell accepts "
            f"(retell-sdk lists: {', '.join(sorted(known))})"
        )
    temperature = float(config.get("temperature") or 0.0)
    if temperature > RETELL_MAX_TEMPERATURE:
        raise RetellPublishError(
            f"scenario {scenario!r} champion {label}: llm.temperature {temperature:g} is above Retell's "
            f"maximum of {RETELL_MAX_TEMPERATURE:g}"
        )


def _retell_failure(exc: Exception, step: str, done: str, base_url: str) -> RetellPublishError:
    """One line naming the step, Retell's status and message, and what was already changed."""
    import retell

    already = f" ({done})" if done else " (nothing was changed at Retell)"
    if isinstance(exc, retell.APIStatusError):
        body = exc.body
        message: Any = None
        if isinstance(body, dict):
            message = body.get("message") or body.get("error_message") or body.get("error") or body
        detail = str(message if message is not None else body or exc.message).strip()[:300]
        request = exc.response.request
        reason = exc.response.reason_phrase
        hint = " (is NEURACRM_RETELL_API_KEY right?)" if exc.status_code in (401, 403) else ""
        return RetellPublishError(
            f"Retell answered {exc.status_code} {reason} to {request.method} {request.url.path} "
            f"({step}): {detail}{hint}{already}"
        )
    if isinstance(exc, retell.APIConnectionError):
        return RetellPublishError(f"Retell could not be reached at {base_url} ({step}): {exc}{already}")
    return RetellPublishError(f"Retell call failed ({step}): {type(exc).__name__}: {exc}{already}")


def publish_scenario(
    scenario: str,
    *,
    actor: str,
    client: Any = None,
    engine: sa.Engine | None = None,
    max_retries: int = 2,
    timeout: float = 30.0,
) -> PublishResult:
    """Push ``scenario``'s champion version to its Retell LLM and agent; record the Retell versions in
    the promotion ledger (action ``publish``) and as tags of the prompt version.

    Raises ConfigurationError (no API key), NotFoundError (no such scenario), RetellPublishError (no
    champion, no Retell ids in the champion's registered config, a setting Retell does not accept,
    Retell answering 4xx/5xx or unreachable: the status, Retell's message and what was already
    changed). ``max_retries``: retell-sdk's retries of 408/409/429/5xx answers and lost connections."""
    import retell

    from neuracrm_mlops.store.db.engine import get_engine
    from neuracrm_mlops.store.db.migrate import require_current_schema

    try:
        name = prompts.prompt_name(scenario)
    except prompts.ScenarioNameError as exc:
        raise NotFoundError(f"no scenario {scenario!r}: {exc}") from None
    settings = get_settings()
    if not settings.retell_api_key:
        raise ConfigurationError(
            "NEURACRM_RETELL_API_KEY is not set: publishing a scenario needs the Retell API key "
            "(Retell dashboard, API keys)"
        )
    engine = engine or get_engine()
    require_current_schema(engine)
    client = client or registry.configure_mlflow()
    champion = _champion(client, scenario)
    label = f"v{champion.version}" + (f" ({champion.semver})" if champion.semver else "")
    config = champion.config
    llm_id, agent_id = _required(config, label, scenario)
    _check_settings(config, label, scenario)

    from neuracrm_mlops.training.scenarios import variables_of

    begin_message = str(config.get("begin_message") or "")
    used = variables_of(champion.template, begin_message)
    defaults = {v: prompts.CONTEXT_VARIABLES[v] for v in sorted(used) if v in prompts.CONTEXT_VARIABLES}
    api = retell.Retell(
        api_key=settings.retell_api_key,
        base_url=settings.retell_base_url,
        max_retries=max_retries,
        timeout=timeout,
    )
    model_config = {
        "type": "cascading",
        "primary": {"model": str(config.get("model"))},
        "temperature": float(config.get("temperature") or 0.0),
    }
    step = f"update Retell LLM {llm_id}"
    try:
        llm = api.llm.update(
            llm_id,
            general_prompt=champion.template,
            begin_message=begin_message,
            model_config=cast(Any, model_config),
            default_dynamic_variables=defaults,
        )
    except retell.RetellError as exc:
        raise _retell_failure(exc, step, "", settings.retell_base_url) from None
    llm_version = llm.version
    step = f"update Retell agent {agent_id}"
    engine_ref: dict[str, Any] = {"type": "retell-llm", "llm_id": llm_id}
    if llm_version is not None:
        engine_ref["version"] = llm_version
    try:
        agent = api.agent.update(
            agent_id,
            voice_id=str(config.get("voice_id")),
            response_engine=cast(Any, engine_ref),
        )
    except retell.RetellError as exc:
        done = f"Retell LLM {llm_id} was already updated to {label}, version {llm_version}; publish again"
        raise _retell_failure(exc, step, done, settings.retell_base_url) from None
    agent_version = agent.version

    metrics = {
        "semver": champion.semver,
        "retell_llm_id": llm_id,
        "retell_llm_version": llm_version,
        "retell_agent_id": agent_id,
        "retell_agent_version": agent_version,
        "retell_base_url": settings.retell_base_url,
    }
    entry = ledger.record_change(
        engine,
        actor=actor,
        model_name=name,
        action="publish",
        alias=registry.CHAMPION,
        to_version=champion.version,
        reason=(
            f"champion {label} published to Retell LLM {llm_id} (version {llm_version}) and agent "
            f"{agent_id} (version {agent_version})"
        ),
        metrics=metrics,
    )
    tags = {
        RETELL_LLM_VERSION_TAG: str(llm_version),
        RETELL_AGENT_VERSION_TAG: str(agent_version),
        RETELL_PUBLISHED_AT_TAG: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    for key, value in tags.items():
        client.set_prompt_version_tag(name, champion.version, key, value)
    log.info("%s %s published to Retell LLM %s v%s", name, label, llm_id, llm_version)
    return PublishResult(
        scenario=scenario,
        prompt_name=name,
        version=champion.version,
        semver=champion.semver,
        llm_id=llm_id,
        llm_version=llm_version,
        agent_id=agent_id,
        agent_version=agent_version,
        ledger_id=entry,
    )
