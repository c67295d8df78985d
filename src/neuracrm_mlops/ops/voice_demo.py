"""``neuracrm-mlops demo --voice``: a voice scenario's A/B rollout end to end, in about a minute, on
the embedded defaults: register two versions of ``sales_outbound`` from its file, start the canary,
answer calls through the real prediction service (``POST /voice/context``), report each call's
analysis the way Retell does (a signed ``call_analyzed`` on ``POST /voice/events``), and judge each
step on call success until the challenger is promoted.

The calls' outcomes are simulated (Retell cannot be reached from here): the champion's calls succeed
84% of the time, the challenger's 93% (a seeded draw). Everything else is the platform's own path:
the registry, the service's routing and logging, the webhook's signature check, the rollout rules.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
import yaml

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.errors import NeuraCRMError
from neuracrm_mlops.ops import local_stack
from neuracrm_mlops.ops.demo import demo_pacing, first_api_key, reset_embedded_store
from neuracrm_mlops.release import scenario_rollout
from neuracrm_mlops.store import ledger, prompt_registry
from neuracrm_mlops.store.db.engine import get_engine
from neuracrm_mlops.store.db.migrate import upgrade
from neuracrm_mlops.store.registry import configure_mlflow
from neuracrm_mlops.store.seeding import seed_database
from neuracrm_mlops.training.scenarios import register_scenario

Say = Callable[[str], None]
SCENARIO = "sales_outbound"
SUCCESS = {"champion": 0.84, "challenger": 0.93}  # the simulated call success of each arm
CALLS_PER_ROUND = 120
MAX_ROUNDS = 12
# analysed calls per version before a step is judged (NEURACRM_MIN_OUTCOMES, unless already set)
VOICE_MIN_OUTCOMES = "30"


@dataclass
class VoiceDemoResult:
    registered: list[str]
    actions: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    final_champion: str | None = None


def _signed(body: dict[str, Any], key: str) -> tuple[bytes, str]:
    """The body as Retell sends it and its ``x-retell-signature`` (Retell's own rule, from retell-sdk)."""
    from retell.lib.webhook_auth import symmetric

    raw = json.dumps(body, separators=(",", ":"))
    return raw.encode(), str(symmetric["sign"](raw, key))


def _one_call(
    client: httpx.Client, api_key: str, retell_key: str, contact: dict[str, str], rng: random.Random
) -> str:
    """A call: its context from the service, then its analysis reported back; returns its route."""
    answer = client.post(
        "/voice/context",
        json={"scenario": SCENARIO, **contact},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    if answer.status_code != 200:
        raise NeuraCRMError(f"POST /voice/context answered {answer.status_code}: {answer.text[:300]}")
    context = answer.json()
    route = str(context["route"])
    successful = rng.random() < SUCCESS.get(route, 0.0)
    event = {
        "event": "call_analyzed",
        "call": {
            "call_id": f"demo-{secrets.token_hex(8)}",
            "metadata": context["call_inbound"]["metadata"],
            "call_analysis": {
                "call_successful": successful,
                "user_sentiment": "Positive" if successful else "Negative",
            },
        },
    }
    raw, signature = _signed(event, retell_key)
    recorded = client.post(
        "/voice/events",
        content=raw,
        headers={"Content-Type": "application/json", "x-retell-signature": signature},
    )
    if recorded.status_code != 200:
        raise NeuraCRMError(f"POST /voice/events answered {recorded.status_code}: {recorded.text[:300]}")
    return route


def _register_two_versions(engine: sa.Engine, say: Say) -> list[str]:
    source = local_stack.project_root() / "scenarios" / f"{SCENARIO}.yaml"
    content = dict(yaml.safe_load(source.read_text()))
    examples = get_settings().home / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    path = examples / f"{SCENARIO}.yaml"
    lines = []
    for note, edit in (
        ("the file in git", None),
        (
            "the prompt asks for the best time to call back",
            "If now is not a good time, ask for the best time.",
        ),
    ):
        if edit:
            content["template"] = content["template"] + edit + "\n"
        path.write_text(yaml.safe_dump(content, sort_keys=False))
        result = register_scenario(path, actor=ledger.actor_for_cli(), engine=engine)
        line = f"v{result.version} {result.semver} ({result.change}, {note}) -> {result.alias}"
        say(f"      {SCENARIO}: registered {line}")
        lines.append(line)
    return lines


def run_voice_demo(say: Say, *, seed: int = 7) -> VoiceDemoResult:
    """The voice scenario's A/B rollout on the embedded defaults (see the module docstring)."""
    started = time.monotonic()

    def step(text: str) -> None:
        say(f"[{time.monotonic() - started:5.0f}s] {text}")

    # the service verifies the demo's call events with this key; a key already set wins, as does a
    # NEURACRM_MIN_OUTCOMES (analysed calls per version before a step is judged)
    voice = {"NEURACRM_RETELL_API_KEY": secrets.token_hex(24), "NEURACRM_MIN_OUTCOMES": VOICE_MIN_OUTCOMES}
    with demo_pacing(voice):
        retell_key = str(get_settings().retell_api_key)
        local_stack.stop_all()
        reset_embedded_store(say)
        engine = get_engine()
        upgrade(engine)
        seeded = seed_database(3, 24, seed, api_keys_file=get_settings().home / "api_keys.csv", engine=engine)
        step(f"1/5 a small CRM: {seeded.organizations} organizations, {seeded.leads:,} leads")
        step("2/5 the scenario file, then an edited copy, registered in MLflow's prompt registry:")
        result = VoiceDemoResult(registered=_register_two_versions(engine, say))
        client = configure_mlflow()
        started_canary = scenario_rollout.start(
            SCENARIO, ledger.actor_for_cli(), engine=engine, client=client
        )
        port = 3000 if local_stack.port_is_free(3000) else local_stack.free_port()
        service = local_stack.start_prediction_service(port)
        step(f"3/5 prediction service at http://127.0.0.1:{port}; {started_canary.reason}")
        step(
            "4/5 calls: context from POST /voice/context, then Retell's signed call_analyzed on "
            "POST /voice/events (outcomes simulated: "
            f"champion {SUCCESS['champion']:.0%}, challenger {SUCCESS['challenger']:.0%} successful)"
        )
        rng = random.Random(seed)
        api_key = first_api_key(engine)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                for round_number in range(1, MAX_ROUNDS + 1):
                    routes: dict[str, int] = {}
                    for _ in range(CALLS_PER_ROUND):
                        contact = {"caller_number": f"+1415{rng.randrange(10**7):07d}"}
                        route = _one_call(http, api_key, retell_key, contact, rng)
                        routes[route] = routes.get(route, 0) + 1
                        result.calls[route] = result.calls.get(route, 0) + 1
                    judged = scenario_rollout.judge(
                        SCENARIO, ledger.actor_for_cli(), engine=engine, client=client
                    )
                    result.actions.append(judged.action)
                    split = ", ".join(f"{n} {route}" for route, n in sorted(routes.items()))
                    say(f"      round {round_number}: {split}; {judged.action}: {judged.reason}")
                    if judged.action in ("promote", "reject"):
                        break
                    time.sleep(2 * get_settings().model_poll_seconds)  # every worker sees the new weight
        finally:
            service.stop()
        live = prompt_registry.live_scenario(client, SCENARIO)
        result.final_champion = live.champion.version if live.champion else None
        step(f"5/5 the ledger of {prompt_registry.prompt_name(SCENARIO)} (oldest first):")
        for entry in reversed(
            ledger.latest_entries(engine, model_name=prompt_registry.prompt_name(SCENARIO))
        ):
            weight = f" weight {entry.weight:.0%}" if entry.weight is not None else ""
            say(
                f"      {entry.action:8} {entry.alias or '':10} v{entry.to_version}{weight}: "
                f"{entry.reason[:90]}"
            )
        say("")
        say("  Next: neuracrm-mlops scenario list | scenario monitor sales_outbound; docs/voice-scenarios.md")
    return result


__all__ = ["VoiceDemoResult", "run_voice_demo"]
