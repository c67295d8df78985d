"""The serving library without HTTP, in process: routing, hot swap by alias, fallbacks, the in-process
cache, dependencies that are down. (The prediction log and the caches on real stores:
tests/integration/test_prediction_log.py.)"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from serving_fakes import FakeModel, FakeRegistry, forecast_predictor
from serving_support import free_port

from neuracrm_mlops.config import Settings, reset_settings
from neuracrm_mlops.errors import ConfigurationError
from neuracrm_mlops.inference.forecast_cache import ForecastCache
from neuracrm_mlops.inference.live_models import LiveModels
from neuracrm_mlops.inference.prediction_log import PredictionLogWriter
from neuracrm_mlops.inference.predictor import DependencyUnavailableError, MicroBatcher, Predictor, ScoreItem
from neuracrm_mlops.inference.routing import bucket, canary_cohort, choose_route
from neuracrm_mlops.models.lead_scoring_model import RuleScorer, compile_scorer
from neuracrm_mlops.models.sentiment_model import VaderScorer
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.db.engine import DependencyState, create_serving_engine, track_database_health
from neuracrm_mlops.store.orgs import hash_api_key
from neuracrm_mlops.store.tenancy import (
    AuthError,
    Tenant,
    TenantDirectory,
    bearer_token,
    require_same_organization,
)

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
    try:
        missing = live.ensure("sales_forecast_org_8", wait_seconds=10)
        assert missing.slots is None and missing.why_not == "none is registered"
        # remembered: not asked again at once
        assert live.ensure("sales_forecast_org_8").why_not == "none is registered"
        slots = live.ensure("sales_forecast_org_9", wait_seconds=10).slots
        assert slots is not None and slots.champion is not None and slots.champion.version == "1"
        fake.models["sales_forecast_org_9"] = FakeModel("sales_forecast_org_9", {"champion": "2"})
        live.poll_once()
        updated = live.slots("sales_forecast_org_9")
        assert updated is not None and updated.champion is not None and updated.champion.version == "2"
    finally:
        live.stop()


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


# -- the forecast cache ----------------------------------------------------------------------------


def test_the_in_process_cache_returns_what_was_put_until_it_expires() -> None:
    cache = ForecastCache(None, ttl_seconds=60)
    assert cache.get("k") is None
    cache.put("k", {"points": [1]})
    assert cache.get("k") == {"points": [1]} and (cache.hits, cache.misses) == (1, 1)
    expired = ForecastCache(None, ttl_seconds=0)
    expired.put("k", {"points": [1]})
    assert expired.get("k") is None


def test_canary_weight_tags_are_read_safely() -> None:
    assert registry.canary_weight_of({}) == 0.0
    assert registry.canary_weight_of({"canary_weight": "0.25"}) == 0.25
    assert registry.canary_weight_of({"canary_weight": "lots"}) == 0.0
    assert registry.canary_weight_of({"canary_weight": "7"}) == 1.0


# -- degraded modes: dependencies down answer fast and say so ---------------------------------------


def dead_database_url() -> str:
    """A PostgreSQL URL on a port nothing listens on: every connection is refused at once."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/neuracrm"


def test_a_dependency_state_shows_last_success_and_error_and_lets_one_probe_through_while_down() -> None:
    state = DependencyState("database", probe_interval_seconds=60)
    assert state.ok and state.should_try() and state.should_try()  # healthy: everyone tries
    state.succeeded()
    state.failed(ConnectionRefusedError("connection refused"))
    described = state.describe()
    assert not state.ok and described["ok"] is False
    assert described["last_error"] == "ConnectionRefusedError: connection refused"
    assert described["last_error_age_seconds"] is not None and described["last_success_at"] is not None
    # down: one caller probes, the others fail fast until the probe interval has passed
    assert [state.should_try() for _ in range(3)] == [True, False, False]
    state.succeeded()
    assert state.ok and state.should_try()


def test_while_a_dependency_is_down_requests_never_wait_and_a_background_probe_brings_it_back() -> None:
    outcomes: list[Exception | None] = [ConnectionRefusedError("still down"), None]
    probed = threading.Event()

    def probe() -> None:
        outcome = outcomes.pop(0)
        probed.set()
        if outcome is not None:
            raise outcome

    state = DependencyState("database", probe_interval_seconds=0.05, probe=probe)
    state.failed("connection refused")
    assert not state.should_try()  # starts a probe in the background, the caller fails fast
    assert probed.wait(5) and not state.should_try()
    for _ in range(200):
        if state.ok:
            break
        state.should_try()
        time.sleep(0.01)
    assert state.ok and state.should_try() and outcomes == []


def test_the_serving_engine_records_refused_connections_as_database_errors() -> None:
    engine = create_serving_engine(dead_database_url())
    state = track_database_health(engine, DependencyState("database"))
    with pytest.raises(sa.exc.OperationalError), engine.connect():
        pass
    assert not state.ok and "OperationalError" in (state.last_error or "")
    engine.dispose()


def test_with_the_database_down_a_cached_key_keeps_working_and_an_unknown_one_is_a_503_at_once() -> None:
    engine = create_serving_engine(dead_database_url())
    acme = Tenant(1, "Acme", True)
    directory = TenantDirectory(
        engine,
        ttl_seconds=0.0,
        stale_grace_seconds=60.0,
        retry_after_seconds=7,
        database=DependencyState("db"),
    )
    directory.remember(hash_api_key("nk_acme"), acme)  # answered before; expired now (TTL 0)
    assert directory.cached("nk_acme") == (False, None)
    assert directory.lookup("nk_acme") == acme  # the stale answer, within the grace
    assert directory.stale_answers == 1 and not directory.database.ok
    for _ in range(2):  # the first probes the database, the second does not even try
        with pytest.raises(AuthError) as refused:
            directory.lookup("nk_never-seen")
        assert refused.value.status == 503 and refused.value.retry_after == 7
        assert "database is unavailable" in refused.value.message
    past_grace = TenantDirectory(engine, ttl_seconds=0.0, stale_grace_seconds=0.0)
    past_grace.remember(hash_api_key("nk_acme"), acme)
    time.sleep(0.01)
    with pytest.raises(AuthError) as expired:
        past_grace.lookup("nk_acme")
    assert expired.value.status == 503
    engine.dispose()


class HangingRegistry(FakeRegistry):
    """A registry that stops answering (like an MLflow server that accepts but never replies)."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()
        self.release = threading.Event()

    def get_registered_model(self, name: str) -> FakeModel:
        if self.hang.is_set():
            self.release.wait(30)
        return super().get_registered_model(name)


def test_with_the_registry_down_a_lazy_model_is_not_waited_for_and_the_reason_says_why() -> None:
    fake, loads = FakeRegistry(), []
    fake.models["sales_forecast_org_9"] = FakeModel("sales_forecast_org_9", {"champion": "1"})
    fake.down = True
    live = make_live(fake, loads)
    live.poll_once()
    try:
        first = live.ensure("sales_forecast_org_9", wait_seconds=10)
        assert first.slots is None and "model registry cannot be reached" in (first.why_not or "")
        assert "registry unreachable" in (first.why_not or "")
        again = live.ensure("sales_forecast_org_9", wait_seconds=10)  # no new attempt before the retry time
        assert again.slots is None and "cannot be reached" in (again.why_not or "")
        fake.down = False
        time.sleep(live.poll_seconds * 2)
        live.poll_once()
        assert live.ensure("sales_forecast_org_9", wait_seconds=10).slots is not None
        assert loads == [("sales_forecast_org_9", "1")]
    finally:
        live.stop()


def test_a_hanging_registry_holds_a_lazy_model_request_only_for_the_bounded_wait() -> None:
    fake = HangingRegistry()
    fake.models["sales_forecast_org_9"] = FakeModel("sales_forecast_org_9", {"champion": "1"})
    live = make_live(fake, [])
    live.poll_once()
    fake.hang.set()
    try:
        answer = live.ensure("sales_forecast_org_9", wait_seconds=0.2)
        # answered while the registry still hangs (it is released only below)
        assert answer.slots is None and answer.why_not == "it is still loading in the background"
        assert live.health()["loading"] == ["sales_forecast_org_9"]
        fake.release.set()
        for _ in range(200):
            if live.slots("sales_forecast_org_9") is not None:
                break
            time.sleep(0.02)
        assert live.ensure("sales_forecast_org_9").slots is not None
    finally:
        fake.release.set()
        live.stop()


def test_a_stale_poll_is_reported_as_the_poll_error_and_to_on_stale_once_per_outage() -> None:
    fake = HangingRegistry()
    fake.models["lead_scoring"] = FakeModel("lead_scoring", {"champion": "1"})
    reports: list[tuple[str, float]] = []
    failing_reports = [RuntimeError("the database is down too")]

    def on_stale(message: str, seconds: float) -> None:
        if failing_reports:
            raise failing_reports.pop()
        reports.append((message, seconds))

    live = LiveModels(
        lambda n, v: f"{n}-v{v}",
        eager_names=["lead_scoring"],
        poll_seconds=0.05,
        client_factory=lambda: fake,
        on_stale=on_stale,
    )
    live.poll_once()
    assert live.poll_staleness() is None and not live.check_stale()
    fake.hang.set()
    polling = threading.Thread(target=live.poll_once)
    polling.start()
    try:
        time.sleep(0.3)  # more than 2 poll intervals without a completed poll
        health = live.health()
        assert health["poll_stale"] is True and live.last_poll_error is None
        assert "has not completed" in health["last_poll_error"]
        assert not live.check_stale()  # reporting failed (database down): retried at the next check
        assert live.check_stale() and not live.check_stale() and not live.check_stale()
        assert len(reports) == 1 and "stale" in reports[0][0] and reports[0][1] > 0.1
    finally:
        fake.hang.clear()
        fake.release.set()
        polling.join(10)
    assert live.poll_staleness() is None and not live.check_stale()  # recovered: the next outage reports
    fake.down = True
    live.poll_once()
    assert live.check_stale(now=time.time() + 1.0) and len(reports) == 2 and "failing" in reports[1][0]


def test_with_the_registry_and_the_database_down_a_forecast_is_unavailable_with_retry_after(
    tmp_path: Path,
) -> None:
    engine = create_serving_engine(dead_database_url())
    fake = FakeRegistry()
    fake.down = True
    predictor = forecast_predictor(engine, fake, tmp_path)
    try:
        for _ in range(2):  # the second does not try the database again (one probe per interval)
            with pytest.raises(DependencyUnavailableError) as unavailable:
                predictor.forecast(Tenant(5, "Shop", True), 3)
            assert unavailable.value.retry_after == 9
            assert "the database is unavailable" in str(unavailable.value)
        readiness = predictor.readiness()
        assert readiness["dependencies"]["database"]["ok"] is False
        assert readiness["dependencies"]["database"]["last_error"].startswith("OperationalError")
    finally:
        predictor.live.stop()
        engine.dispose()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NEURACRM_DB_CONNECT_TIMEOUT_SECONDS", "1"),
        ("NEURACRM_MLFLOW_TIMEOUT_SECONDS", "fast"),
        ("NEURACRM_DEPENDENCY_WAIT_SECONDS", "60"),
        ("NEURACRM_TENANT_CACHE_MAX_ENTRIES", "0"),
    ],
)
def test_timeout_settings_refuse_values_outside_their_range_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    reset_settings()
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_environment()
