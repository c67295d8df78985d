"""A voice scenario in a canary on the embedded stores, for the tests of what on-call sees (status,
the health page): sales_outbound v1 champion, v2 (one template line changed) challenger at the first
rollout step, and calls answered and analysed as POST /voice/context and /voice/events record them."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import sqlalchemy as sa
import yaml

from neuracrm_mlops.inference.prediction_log import prediction_row
from neuracrm_mlops.release import scenario_rollout
from neuracrm_mlops.store.db.schema import Outcome, Prediction
from neuracrm_mlops.training.scenarios import register_scenario

REPO = Path(__file__).resolve().parents[1]
SCENARIO = "sales_outbound"
PROMPT = "voice_scenario.sales_outbound"
ACTOR = "test:voice_scenarios"


def register_two_versions(engine: sa.Engine, tmp_path: Path, *, actor: str = ACTOR) -> None:
    """Register sales_outbound as v1 (champion) and, one template line changed, v2 (challenger at 0)."""
    content = dict(yaml.safe_load((REPO / "scenarios" / f"{SCENARIO}.yaml").read_text()))
    path = tmp_path / f"{SCENARIO}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    assert register_scenario(path, actor=actor, engine=engine).alias == "champion"
    content["template"] += "\nAlways thank the person for their time before you hang up.\n"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    assert register_scenario(path, actor=actor, engine=engine).alias == "challenger"


def scenario_in_a_canary(engine: sa.Engine, tmp_path: Path) -> float:
    """Register v1 (champion) and v2 (challenger), start the canary; returns the challenger's weight."""
    register_two_versions(engine, tmp_path)
    return scenario_rollout.start(SCENARIO, ACTOR, engine=engine).weight


def log_calls(
    engine: sa.Engine,
    version: str,
    route: str,
    successful: int,
    unsuccessful: int,
    *,
    unanalysed: int = 0,
    at: dt.datetime | None = None,
) -> None:
    """Calls answered by ``version`` (a context prediction each, at ``at``: default now), and the
    analysis of all but ``unanalysed`` of them."""
    labels = ["successful"] * successful + ["unsuccessful"] * unsuccessful + [None] * unanalysed
    with engine.begin() as conn:
        for label in labels:
            context_id = uuid.uuid4().hex
            conn.execute(
                sa.insert(Prediction).values(
                    **prediction_row(
                        model_name=PROMPT,
                        model_version=version,
                        route=route,
                        request_id=uuid.uuid4().hex,
                        organization_id=1,
                        entity_id=context_id,
                        features={"scenario": SCENARIO},
                        output={"context_id": context_id},
                        latency_ms=5.0,
                        fallback=False,
                        created_at=at,
                    )
                )
            )
            if label is not None:
                conn.execute(
                    sa.insert(Outcome).values(
                        model_name=PROMPT,
                        organization_id=1,
                        entity_id=context_id,
                        label=label,
                        observed_at=dt.datetime.now(dt.UTC),
                        source="retell",
                    )
                )
