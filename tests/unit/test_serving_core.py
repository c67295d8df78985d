"""The serving library without HTTP: routing, hot swap by alias, fallbacks, the prediction log, the cache."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from neuracrm_mlops import registry
from neuracrm_mlops.db.schema import Prediction
from neuracrm_mlops.forecast_cache import ForecastCache
from neuracrm_mlops.live_models import LiveModels
from neuracrm_mlops.models.lead_scoring_model import RuleScorer, compile_scorer
from neuracrm_mlops.models.sentiment_model import VaderScorer
from neuracrm_mlops.prediction_log import (
    PredictionLogWriter,
    insert_isolating,
    prediction_row,
    replay_spill,
)
from neuracrm_mlops.predictor import MicroBatcher, Predictor, ScoreItem
from neuracrm_mlops.routing import bucket, canary_cohort, choose_route
from neuracrm_mlops.tenancy import AuthError, Tenant, bearer_token, require_same_organization

# -- routing ---------------------------------------------------------------------------------------


def test_buckets_are_stable_and_uniform() -> None:
    values = [bucket(7, f"lead-{i}") for i in range(20_000)]
    assert values == [bucket(7, f"lead-{i}") for i in range(20_000)]
    assert all(0.0 <= v < 1.0 for v in values)
    for low in (0.0, 0.25, 0.5, 0.75):
        share = sum(low <= v < low + 0.25 for v in values) / len(values)
        assert abs(share - 0.25) < 0.015


def test_the_challenger_share_follows_the_weight_and_raising_it_never_moves_an_entity_back() -> None:
    entities = [f"e{i}" for i in range(10_000)]
    at_10 = {e for e in entities if choose_route(1, e, 0.10, has_challenger=True) == "challenger"}
    at_50 = {e for e in entities if choose_route(1, e, 0.50, has_challenger=True) == "challenger"}
    assert abs(len(at_10) / len(entities) - 0.10) < 0.01
    assert abs(len(at_50) / len(entities) - 0.50) < 0.02
    assert at_10 <= at_50
    assert all(choose_route(1, e, 1.0, has_challenger=True) == "challenger" for e in entities[:100])
    assert all(choose_route(1, e, 0.9, has_challenger=False) == "champion" for e in entities[:100])


def test_a_forecast_cohort_is_a_sticky_share_of_organizations() -> None:
    orgs = list(range(1, 2_001))
    cohort = canary_cohort(orgs, 0.1)
    assert 150 <= len(cohort) <= 250
    assert cohort <= canary_cohort(orgs, 0.5)
    assert cohort == {o for o in orgs if choose_route(o, str(o), 0.1, has_challenger=True) == "challenger"}


# -- tenancy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing API key"),
        ("", "missing API key"),
        ("Token abc", "Bearer"),
        ("Bearer   ", "empty API key"),
    ],
)
def test_a_missing_or_malformed_authorization_header_is_a_401_that_says_why(
    header: str | None, message: str
) -> None:
    with pytest.raises(AuthError) as caught:
        bearer_token(header)
    assert caught.value.status == 401 and message in caught.value.message


def test_a_key_cannot_act_for_another_organization() -> None:
    tenant = Tenant(4, "Acme", True)
    require_same_organization(tenant, None)
    require_same_organization(tenant, 4)
    with pytest.raises(AuthError) as caught:
        require_same_organization(tenant, 5)
    assert caught.value.status == 403 and "organization 4" in caught.value.message


# -- live models -----------------------------------------------------------------------------------


@dataclass
class FakeModel:
    name: str
    aliases: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)


class FakeRegistry:
    """Just enough of MlflowClient for LiveModels: aliases and tags per registered model."""

    def __init__(self) -> None:
        self.models: dict[str, FakeModel] = {}
        self.down = False

    def get_registered_model(self, name: str) -> FakeModel:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        if self.down:
            raise ConnectionError("registry unreachable")
        if name not in self.models:
            raise MlflowException(f"{name} not found", error_code=RESOURCE_DOES_NOT_EXIST)
        return self.models[name]

    def search_registered_models(self, filter_string: str, max_results: int, page_token: Any) -> Any:
        if self.down:
            raise ConnectionError("registry unreachable")

        class Page(list[FakeModel]):
            token = None

        prefix = filter_string.split("'")[1].rstrip("%")
        return Page(m for m in self.models.values() if m.name.startswith(prefix))


def make_live(fake: FakeRegistry, loads: list[tuple[str, str]], broken: set[str] | None = None) -> LiveModels:
    def loader(name: str, version: str) -> Any:
        loads.append((name, version))
        if version in (broken or set()):
            raise ValueError(f"version {version} fails its smoke test")
        return f"{name}-v{version}"

    return LiveModels(loader, eager_names=["lead_scoring"], poll_seconds=0.05, client_factory=lambda: fake)


def test_a_poll_loads_new_versions_once_and_swaps_the_snapshot_readers_hold_unchanged() -> None:
    fake, loads = FakeRegistry(), []
    fake.models["lead_scoring"] = FakeModel("lead_scoring", {"champion": "1"})
    live = make_live(fake, loads)
    assert not live.ready
    live.poll_once()
    before = live.slots("lead_scoring")
    assert before is not None and before.champion is not None and before.champion.model == "lead_scoring-v1"
    assert live.ready
    fake.models["lead_scoring"] = FakeModel(
        "lead_scoring", {"champion": "2", "challenger": "3"}, {"canary_weight": "0.1"}
    )
    live.poll_once()
    live.poll_once()
    after = live.slots("lead_scoring")
    assert after is not None and after.champion and after.challenger
    assert (after.champion.version, after.challenger.version, after.weight) == ("2", "3", 0.1)
    assert before.champion.version == "1"  # a request holding the old snapshot keeps answering with v1
    assert loads == [("lead_scoring", "1"), ("lead_scoring", "2"), ("lead_scoring", "3")]


def test_a_champion_that_cannot_load_leaves_the_last_good_version_serving_and_is_reported() -> None:
    fake, loads = FakeRegistry(), []
    fake.models["lead_scoring"] = FakeModel("lead_scoring", {"champion": "1"})
    live = make_live(fake, loads, broken={"2", "5"})
    live.poll_once()
    fake.models["lead_scoring"] = FakeModel(
        "lead_scoring", {"champion": "2", "challenger": "5"}, {"canary_weight": "0.5"}
    )
    live.poll_once()
    live.poll_once()  # a failed version is not retried on every poll
    slots = live.slots("lead_scoring")
    assert slots is not None and slots.champion is not None
    assert slots.champion.version == "1" and slots.challenger is None
    assert "v2" in live.load_errors["lead_scoring@champion"]
    assert "v5" in live.load_errors["lead_scoring@challenger"]
    assert loads.count(("lead_scoring", "2")) == 1


def test_an_unreachable_registry_keeps_what_is_loaded_serving() -> None:
    fake, loads = FakeRegistry(), []
    fake.models["lead_scoring"] = FakeModel("lead_scoring", {"champion": "1"})
    live = make_live(fake, loads)
    live.poll_once()
    fake.down = True
    live.poll_once()
    slots = live.slots("lead_scoring")
    assert slots is not None and slots.champion is not None and slots.champion.version == "1"
    assert live.ready and "registry unreachable" in (live.last_poll_error or "")


def test_nothing_loadable_at_start_is_not_ready_until_the_registry_answers() -> None:
    fake, loads = FakeRegistry(), []
    fake.down = True
    live = make_live(fake, loads)
    live.poll_once()
    assert not live.ready
    fake.down = False
    fake.models["lead_scoring"] = FakeModel("lead_scoring", {"champion": "4"})
    live.poll_once()
    assert live.ready


def test_per_organization_models_load_on_first_use_and_follow_later_alias_moves() -> None:
    fake, loads = FakeRegistry(), []
    fake.models["sales_forecast_org_9"] = FakeModel("sales_forecast_org_9", {"champion": "1"})
    live = make_live(fake, loads)
    live.poll_once()
    assert live.ensure("sales_forecast_org_8") is None  # no model: remembered, not asked again at once
    slots = live.ensure("sales_forecast_org_9")
    assert slots is not None and slots.champion is not None and slots.champion.version == "1"
    fake.models["sales_forecast_org_9"] = FakeModel("sales_forecast_org_9", {"champion": "2"})
    live.poll_once()
    updated = live.slots("sales_forecast_org_9")
    assert updated is not None and updated.champion is not None and updated.champion.version == "2"


def test_the_background_poll_picks_up_changes_and_stops() -> None:
    fake, loads = FakeRegistry(), []
    fake.models["lead_scoring"] = FakeModel("lead_scoring", {"champion": "1"})
    live = make_live(fake, loads)
    live.start()
    try:
        assert live.first_poll_done.wait(5)
        fake.models["lead_scoring"] = FakeModel("lead_scoring", {"champion": "7"})
        for _ in range(100):
            slots = live.slots("lead_scoring")
            if slots and slots.champion and slots.champion.version == "7":
                break
            threading.Event().wait(0.02)
        else:
            pytest.fail("the poll did not pick up the new champion")
    finally:
        live.stop()


# -- the predictor ---------------------------------------------------------------------------------


class ScriptedScorer:
    """A lead scorer answering a fixed probability, or failing when told to."""

    def __init__(self, probability: float = 0.7, error: Exception | None = None) -> None:
        self.probability, self.error, self.calls = probability, error, 0

    def predict(self, records: list[dict[str, Any]], explain: bool = True) -> list[dict[str, Any]]:
        self.calls += 1
        if self.error:
            raise self.error
        return [{"probability": self.probability, "score": 70, "tier": "hot", "factors": []} for _ in records]


def make_predictor(
    tmp_path: Path, champion: Any, challenger: Any = None, weight: float = 0.0, shadow: bool = False
) -> Predictor:
    fake = FakeRegistry()
    aliases = {"champion": "1"} | ({"challenger": "2"} if challenger is not None else {})
    if champion is not None:  # None: nothing registered at all
        fake.models["lead_scoring"] = FakeModel("lead_scoring", aliases, {"canary_weight": str(weight)})
    objects = {"1": champion, "2": challenger}
    live = LiveModels(
        lambda name, version: objects[version], eager_names=["lead_scoring"], client_factory=lambda: fake
    )
    live.poll_once()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'unused.sqlite'}")
    return Predictor(
        engine=engine,
        live=live,
        log_writer=PredictionLogWriter(engine, spill_dir=tmp_path / "spill"),
        cache=ForecastCache(None),
        rule_scorer=compile_scorer(RuleScorer()),
        vader=VaderScorer(),
        shadow_canary=shadow,
    )


LEAD = {"industry": "Software", "company_employees": 120, "email_opens": 4, "seniority": "vp"}
ON, OFF = Tenant(1, "On", True), Tenant(2, "Off", False)


def test_leads_route_to_champion_and_challenger_in_one_call_each(tmp_path: Path) -> None:
    champion, challenger = ScriptedScorer(0.2), ScriptedScorer(0.9)
    predictor = make_predictor(tmp_path, champion, challenger, weight=0.5)
    answers = predictor.score_batch([ScoreItem(ON, f"lead-{i}", LEAD) for i in range(200)])
    routes = Counter(a.model.route for a in answers)
    assert routes["champion"] > 60 and routes["challenger"] > 60
    assert champion.calls == 1 and challenger.calls == 1
    for answer in answers:
        expected = 0.9 if answer.model.route == "challenger" else 0.2
        assert answer.output["probability"] == expected and not answer.fallback
        assert answer.model.version == ("2" if answer.model.route == "challenger" else "1")


def test_in_shadow_mode_the_challenger_also_scores_the_champions_leads_logged_but_never_served(
    tmp_path: Path,
) -> None:
    champion, challenger = ScriptedScorer(0.2), ScriptedScorer(0.9)
    predictor = make_predictor(tmp_path, champion, challenger, weight=0.3, shadow=True)
    answers = predictor.score_batch([ScoreItem(ON, f"lead-{i}", LEAD) for i in range(100)])
    on_champion = [a for a in answers if a.model.route == "champion"]
    on_challenger = [a for a in answers if a.model.route == "challenger"]
    assert on_champion and on_challenger
    for answer in on_champion:
        assert answer.output["probability"] == 0.2 and answer.shadow is not None
        assert answer.shadow.model.as_dict() == {"name": "lead_scoring", "version": "2", "route": "shadow"}
        assert answer.shadow.output["probability"] == 0.9 and answer.shadow.entity_id == answer.entity_id
    assert all(a.shadow is None for a in on_challenger)
    predictor.record("lead_scoring", ON, answers, "req-1", 5.0)
    assert predictor.log_writer.pending == len(answers) + len(on_champion)

    broken = make_predictor(
        tmp_path, ScriptedScorer(0.2), ScriptedScorer(error=RuntimeError("no")), 0.3, True
    )
    served = broken.score_batch([ScoreItem(ON, f"lead-{i}", LEAD) for i in range(50)])
    assert all(a.shadow is None for a in served)  # a failing shadow changes nothing for the caller
    assert all(not a.fallback for a in served if a.model.route == "champion")


@pytest.mark.parametrize(
    ("champion", "reason"),
    [
        (ScriptedScorer(error=RuntimeError("boom")), "boom"),
        (ScriptedScorer(math.nan), "non-finite"),
        (None, "no lead scoring model is loaded"),
    ],
    ids=["raises", "nan", "missing"],
)
def test_a_failing_or_missing_model_answers_with_the_rules_flagged(
    tmp_path: Path, champion: Any, reason: str
) -> None:
    predictor = make_predictor(tmp_path, champion)
    answers = predictor.score_batch([ScoreItem(ON, "a", LEAD), ScoreItem(ON, "b", {})])
    for answer in answers:
        assert answer.fallback and reason in (answer.fallback_reason or "")
        assert answer.model.route == "fallback" and answer.model.name == "lead_scoring_rules"
        assert 0 <= answer.output["probability"] <= 1 and len(answer.output["factors"]) == 3


def test_an_organization_with_ai_off_gets_rules_while_others_get_the_model_in_the_same_batch(
    tmp_path: Path,
) -> None:
    predictor = make_predictor(tmp_path, ScriptedScorer(0.4))
    on, off = predictor.score_batch([ScoreItem(ON, "a", LEAD), ScoreItem(OFF, "b", LEAD)])
    assert not on.fallback and on.output["probability"] == 0.4
    assert off.fallback and "switched off" in (off.fallback_reason or "")


def test_sentiment_falls_back_to_vader_when_its_model_fails(tmp_path: Path) -> None:
    class Broken:
        def predict(self, texts: list[str]) -> list[dict[str, Any]]:
            raise RuntimeError("sentiment down")

    predictor = make_predictor(tmp_path, ScriptedScorer())
    fake = FakeRegistry()
    fake.models["sentiment"] = FakeModel("sentiment", {"champion": "1"})
    predictor.live = LiveModels(lambda n, v: Broken(), eager_names=["sentiment"], client_factory=lambda: fake)
    predictor.live.poll_once()
    (answer,) = predictor.sentiment(ON, ["What a great demo, thank you"], ["i-1"])
    assert answer.fallback and "sentiment down" in (answer.fallback_reason or "")
    assert answer.output["label"] == "positive" and answer.model.name == "sentiment_vader"


def test_the_micro_batcher_answers_every_request_with_its_own_results() -> None:
    calls: list[int] = []

    def double(items: list[int]) -> list[int]:
        calls.append(len(items))
        return [2 * i for i in items]

    async def main() -> list[list[int]]:
        batcher: MicroBatcher[int, int] = MicroBatcher(double, ThreadPoolExecutor(1), max_items=50)
        return await asyncio.gather(*(batcher.submit([i, i + 1000]) for i in range(100)))

    results = asyncio.run(main())
    assert results == [[2 * i, 2 * (i + 1000)] for i in range(100)]
    assert sum(calls) == 200 and max(calls) <= 50 and len(calls) < 100  # requests were batched


# -- the prediction log ----------------------------------------------------------------------------


def _rows(n: int, request_id: str = "r") -> list[dict[str, Any]]:
    return [
        prediction_row(
            model_name="lead_scoring",
            model_version="1",
            route="champion",
            request_id=f"{request_id}-{i}",
            organization_id=1,
            entity_id=f"lead-{i}",
            features={"industry": "Software"},
            output={"probability": 0.5},
            latency_ms=1.5,
            fallback=False,
        )
        for i in range(n)
    ]


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(Prediction)) or 0)


def test_the_log_writer_batches_rows_into_the_database_and_close_flushes_the_rest(
    engine: sa.Engine, tmp_path: Path
) -> None:
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", flush_seconds=60, batch_rows=100)
    writer.start()
    writer.append(_rows(250))
    writer.close()
    assert _count(engine) == 250 and writer.pending == 0
    assert not (tmp_path / "spill").exists()


def test_rows_the_database_refuses_are_spilled_on_close_and_replayed_later(
    engine: sa.Engine, tmp_path: Path
) -> None:
    dead = sa.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    writer = PredictionLogWriter(dead, spill_dir=tmp_path / "spill", flush_seconds=0.05, retry_seconds=0.05)
    writer.start()
    writer.append(_rows(30))
    writer.close(timeout=1.0)
    spilled = list((tmp_path / "spill").glob("*.jsonl"))
    assert len(spilled) == 1 and len(spilled[0].read_text().splitlines()) == 30
    assert replay_spill(engine, tmp_path / "spill") == 30
    assert _count(engine) == 30 and not list((tmp_path / "spill").glob("*.jsonl"))


def test_a_nul_character_in_a_request_is_logged_not_a_poison_pill(engine: sa.Engine, tmp_path: Path) -> None:
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", flush_seconds=60)
    poisoned = prediction_row(
        model_name="lead_scoring",
        model_version="1",
        route="champion",
        request_id="r-nul",
        organization_id=1,
        entity_id="x\u0000y",
        features={"description": "a\u0000b", "attributes": {"k\u0000": "v"}},
        output={"probability": 0.5},
        latency_ms=1.0,
        fallback=False,
    )
    writer.append([*_rows(5), poisoned, *_rows(5)])
    assert writer.flush() and writer.rejected == 0 and writer.written == 11
    with engine.connect() as conn:
        row = conn.execute(sa.select(Prediction).where(Prediction.request_id == "r-nul")).one()
    assert row.entity_id == "x\ufffdy" and row.features["description"] == "a\ufffdb"
    assert row.features["attributes"] == {"k\ufffd": "v"}


def test_rows_the_database_refuses_for_their_content_are_set_aside_and_the_rest_written(
    engine: sa.Engine, tmp_path: Path
) -> None:
    writer = PredictionLogWriter(engine, spill_dir=tmp_path / "spill", flush_seconds=60, batch_rows=100)
    bad = {**_rows(1)[0], "model_name": None}  # NOT NULL: refused however often it is retried
    writer.append([*_rows(40), bad, *_rows(40)])
    assert writer.flush(timeout=5) and writer.pending == 0
    assert _count(engine) == 80 and (writer.written, writer.rejected) == (80, 1)
    (kept,) = (tmp_path / "spill").glob("predictions-rejected-*.jsonl")
    record = json.loads(kept.read_text())
    assert record["row"]["model_name"] is None and "IntegrityError" in record["reason"]
    # a spill file with the same bad row replays the good ones and sets the bad one aside again
    spill = tmp_path / "spill" / "predictions-1-1-abc.jsonl"
    spill.write_text(
        "\n".join(json.dumps({**r, "created_at": r["created_at"].isoformat()}) for r in [*_rows(3), bad])
    )
    assert replay_spill(engine, tmp_path / "spill") == 3
    assert _count(engine) == 83 and not spill.exists()
    assert len(list((tmp_path / "spill").glob("predictions-rejected-*.jsonl"))) == 2


def test_a_connection_lost_while_isolating_a_bad_row_never_writes_a_row_twice(engine: sa.Engine) -> None:
    rows = [*_rows(4, "a"), {**_rows(1, "bad")[0], "model_name": None}, *_rows(4, "b")]
    inserts = {"n": 0}

    def drop_the_third_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PREDICTIONS"):
            inserts["n"] += 1
            if inserts["n"] == 3:
                raise RuntimeError("connection lost")

    sa.event.listen(engine, "before_cursor_execute", drop_the_third_insert)
    # 1: the whole batch (refused: the bad row), 2: the first half (written), 3: the second half (lost)
    first = insert_isolating(engine, rows)
    sa.event.remove(engine, "before_cursor_execute", drop_the_third_insert)
    assert first.error is not None and first.refused == []
    assert [r["request_id"] for r in first.unwritten] == [r["request_id"] for r in rows[4:]]
    assert _count(engine) == 4
    again = insert_isolating(engine, first.unwritten)
    assert again.error is None and [r["request_id"] for r, _ in again.refused] == ["bad-0"]
    assert _count(engine) == 8  # every good row once


# -- the forecast cache ----------------------------------------------------------------------------


def test_the_in_process_cache_returns_what_was_put_until_it_expires() -> None:
    cache = ForecastCache(None, ttl_seconds=60)
    assert cache.get("k") is None
    cache.put("k", {"points": [1]})
    assert cache.get("k") == {"points": [1]} and (cache.hits, cache.misses) == (1, 1)
    expired = ForecastCache(None, ttl_seconds=0)
    expired.put("k", {"points": [1]})
    assert expired.get("k") is None


def test_the_redis_cache_is_shared_and_a_dead_redis_only_means_misses() -> None:
    import uuid

    key = f"neuracrm:test:{uuid.uuid4().hex}"
    writer, reader = ForecastCache("redis://127.0.0.1:6379/15"), ForecastCache("redis://127.0.0.1:6379/15")
    writer.put(key, {"points": [3]})
    assert reader.get(key) == {"points": [3]} and reader.backend == "redis"
    dead = ForecastCache("redis://127.0.0.1:1/0", backoff_seconds=60)
    dead.put(key, {"points": [3]})
    assert dead.get(key) is None and dead.get(key) is None
    assert dead.redis_errors == 1  # after the first failure Redis is left alone for the backoff


def test_canary_weight_tags_are_read_safely() -> None:
    assert registry.canary_weight_of({}) == 0.0
    assert registry.canary_weight_of({"canary_weight": "0.25"}) == 0.25
    assert registry.canary_weight_of({"canary_weight": "lots"}) == 0.0
    assert registry.canary_weight_of({"canary_weight": "7"}) == 1.0
