"""The model-health page without Airflow: rows read from a real SQLite store and a real SQLite MLflow
registry (state made with the library's own rollout calls), the ordering and paging rule, escaping,
the rollback the page's form makes, and reads that do not grow with the number of organizations.

Each test starts from copies of an empty migrated store and an empty registry (``home_engine``,
tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import pytest
import sqlalchemy as sa
from markupsafe import escape
from voice_scenarios import PROMPT, log_calls, scenario_in_a_canary

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.inference.prediction_log import prediction_row
from neuracrm_mlops.ops import health_page
from neuracrm_mlops.ops.health_page import HealthRow
from neuracrm_mlops.release import rollout
from neuracrm_mlops.release.live_stats import stats_from, version_stats
from neuracrm_mlops.release.outcomes import OutcomeIn, record_outcomes
from neuracrm_mlops.store import ledger, registry
from neuracrm_mlops.store.alerts import AlertRow, raise_alert
from neuracrm_mlops.store.db.schema import Prediction, PromotionLedgerEntry

ACTOR = "cli:health-page-test"
MONTHS = ("2026-07", "2026-08", "2026-09")


# --- making state with the library's own calls -----------------------------------------------------


def _register(name: str, versions: int) -> Any:
    """``versions`` versions without artifacts (the page never loads a model)."""
    client = registry.configure_mlflow()
    registry.ensure_registered_model(client, name, "health page test")
    for _ in range(versions):
        client.create_model_version(name, "file:///nonexistent", tags={"status": "test", "servable": "true"})
    return client


def _release(engine: sa.Engine, name: str, version: str, *, promote: bool = True) -> None:
    """``version`` becomes the challenger and its rollout starts (promoted at once without a
    champion); with ``promote`` the canary passes and it becomes champion."""
    client = registry.configure_mlflow()
    client.set_registered_model_alias(name, registry.CHALLENGER, version)
    started = rollout.start_rollout(name, actor=ACTOR, engine=engine)
    if promote and started.action == "start":
        rollout.promote(name, actor=ACTOR, reason=f"canary of v{version} passed", engine=engine)


def _log_leads(engine: sa.Engine, version: str, route: str, correct: int, wrong: int) -> None:
    """``correct + wrong`` lead predictions of ``version`` (all "converted") and their outcomes."""
    n = correct + wrong
    rows = [
        prediction_row(
            model_name="lead_scoring",
            model_version=version,
            route=route,
            request_id=f"r-{version}-{i}",
            organization_id=1,
            entity_id=f"lead-v{version}-{i}",
            features={"region": "emea"},
            output={"probability": 0.9},
            latency_ms=10.0,
            fallback=False,
        )
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(Prediction), rows)
    truth = [
        OutcomeIn(1, f"lead-v{version}-{i}", "converted" if i < correct else "not_converted")
        for i in range(n)
    ]
    assert record_outcomes(engine, "lead_scoring", truth, source="crm") == n


def _log_forecast(
    engine: sa.Engine, org: int, version: str, actual_factor: float, route: str = "champion"
) -> None:
    """One served forecast of three months for ``org`` and the months' actuals (forecast x factor)."""
    name = registry.forecast_model_name(org)
    row = prediction_row(
        model_name=name,
        model_version=version,
        route=route,
        request_id=f"f-{org}-{version}",
        organization_id=org,
        entity_id=None,
        features={},
        output={"points": [{"month": m, "forecast": 100.0} for m in MONTHS]},
        latency_ms=30.0,
        fallback=False,
    )
    with engine.begin() as conn:
        conn.execute(sa.insert(Prediction), [row])
    actuals = [OutcomeIn(org, m, value=100.0 * actual_factor) for m in MONTHS]
    record_outcomes(engine, name, actuals, source="crm")


def _forecast(engine: sa.Engine, org: int, *, actual_factor: float = 1.0, canary: bool = False) -> str:
    """``sales_forecast_org_<org>``: v1 then v2 champion (v3 in a 10% canary with ``canary``), a
    served forecast of v2 with its actuals."""
    name = registry.forecast_model_name(org)
    _register(name, 3 if canary else 2)
    _release(engine, name, "1")
    _release(engine, name, "2")
    if canary:
        _release(engine, name, "3", promote=False)
    _log_forecast(engine, org, "2", actual_factor)
    return name


def _lead_scoring_in_a_canary(engine: sa.Engine) -> None:
    """lead_scoring: v1 then v2 promoted, v3 at 10%; v2 live at 14/20 = 70%, v3 at 9/10 = 90%."""
    _register("lead_scoring", 3)
    _release(engine, "lead_scoring", "1")
    _release(engine, "lead_scoring", "2")
    _release(engine, "lead_scoring", "3", promote=False)
    _log_leads(engine, "2", "champion", correct=14, wrong=6)
    _log_leads(engine, "3", "challenger", correct=9, wrong=1)


def _row(rows: list[HealthRow], name: str) -> HealthRow:
    [row] = [r for r in rows if r.model_name == name]
    return row


def _page(rows: list[HealthRow], **kwargs: Any) -> str:
    return health_page.render_health_page(rows, username="oncall", can_rollback=True, csrf="c" * 64, **kwargs)


# --- rows -------------------------------------------------------------------------------------------


def test_a_row_shows_champion_challenger_weight_and_the_live_accuracy_of_both(home_engine: sa.Engine) -> None:
    _lead_scoring_in_a_canary(home_engine)
    rows = health_page.model_health(home_engine)
    lead = _row(rows, "lead_scoring")
    state = rollout.model_state("lead_scoring")
    assert (lead.champion, lead.previous, lead.challenger) == ("2", "1", "3")
    assert (lead.canary_weight, lead.canary_started_at) == (0.1, state["canary_started_at"])
    assert lead.canary_started_at is not None and lead.canary_running
    assert (lead.accuracy, lead.outcomes) == (pytest.approx(0.7), 20)
    assert (lead.challenger_accuracy, lead.challenger_outcomes) == (pytest.approx(0.9), 10)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=get_settings().monitor_window_hours)
    live = version_stats(home_engine, "lead_scoring", ["2", "3"], since=since)  # what the monitor judges
    assert (lead.accuracy, lead.challenger_accuracy) == (live["2"].accuracy, live["3"].accuracy)
    assert lead.below_floor and lead.rollback_target == "1" and lead.registered
    assert (lead.organization_id, lead.family, lead.min_outcomes) == (None, "lead_scoring", 100)
    sentiment = _row(rows, "sentiment")
    assert not sentiment.registered and sentiment.champion is None and sentiment.accuracy is None

    page = _page(rows)
    assert '<td class="champion">v2<span class="sub">previous v1</span></td>' in page
    assert '<td class="challenger">v3 <span class="weight">at 10%</span> of traffic, since ' in page
    assert "90.0% live over 10 outcomes" in page
    assert '<td class="accuracy below-floor" title="live accuracy of the champion">70.0%' in page
    assert "below the 80% floor, 20 outcomes (the monitor judges from 100)" in page
    assert '<button type="submit">Roll back to v1</button>' in page
    assert "not registered in MLflow" in page  # sentiment


def test_accuracy_at_the_floor_is_not_flagged(home_engine: sa.Engine) -> None:
    _register("lead_scoring", 2)
    _release(home_engine, "lead_scoring", "1")
    _release(home_engine, "lead_scoring", "2")
    _log_leads(home_engine, "2", "champion", correct=8, wrong=2)  # exactly 80%
    lead = _row(health_page.model_health(home_engine), "lead_scoring")
    assert lead.accuracy == pytest.approx(0.8) and not lead.below_floor
    assert not lead.canary_running and health_page.attention(lead) == health_page.QUIET
    assert '<td class="accuracy ok-floor"' in _page([lead])


def test_open_alerts_set_the_flags_and_the_latest_ledger_entries_are_shown_newest_first(
    home_engine: sa.Engine,
) -> None:
    _lead_scoring_in_a_canary(home_engine)
    for kind, title in (("data_drift", "input drift in company_employees"), ("bias", "TPR gap by region")):
        raise_alert(
            home_engine,
            kind=kind,
            severity="warning",
            title=f"lead_scoring v2: {title}",
            message=title,
            dedup_key=f"{kind}:lead_scoring:2",
            model_name="lead_scoring",
            model_version="2",
            deliver=False,
        )
    raise_alert(
        home_engine,
        kind="validation_failed",
        severity="critical",
        title="leads validation failed",
        message="critical expectation failed",
        dedup_key="validation_failed:leads",
        deliver=False,
    )
    rows = health_page.model_health(home_engine, ledger_lines=2)
    lead = _row(rows, "lead_scoring")
    assert lead.drift and lead.bias
    assert sorted(a.kind for a in lead.open_alerts) == ["bias", "data_drift"]
    assert [e.action for e in lead.ledger] == ["canary", "promote"]  # the latest 2 of 4, newest first
    assert [(e.from_version, e.to_version) for e in lead.ledger] == [("2", "3"), ("1", "2")]
    assert lead.ledger == tuple(ledger.latest_entries(home_engine, model_name="lead_scoring", limit=2))
    [other] = health_page.alerts_without_row(home_engine, rows)
    assert other.kind == "validation_failed"

    page = _page(rows, other_alerts=[other])
    assert '<span class="flag flag-on">drift</span><span class="sub">v2</span>' in page
    assert '<span class="flag flag-on">bias</span>' in page
    assert "warning: lead_scoring v2: input drift in company_employees</li>" in page
    assert f"canary v2 -&gt; v3 at 10% by {ACTOR}: canary started" in page
    assert '<div id="other-alerts">' in page and "critical: leads validation failed" in page
    assert "1 with open alerts" in page and "1 below the floor" in page and "1 canary running" in page


def test_every_text_from_the_stores_is_escaped(home_engine: sa.Engine) -> None:
    _register("lead_scoring", 2)
    _release(home_engine, "lead_scoring", "1")
    _release(home_engine, "lead_scoring", "2")
    script = "<script>alert(document.cookie)</script>"
    ledger.record_change(
        home_engine,
        actor="cli:<img src=x onerror=alert(1)>",
        model_name="lead_scoring",
        action="hold",
        reason=script,
    )
    raise_alert(
        home_engine,
        kind="data_drift",
        severity="warning",
        title=f'drift "quoted" {script}',
        message="m",
        dedup_key="data_drift:lead_scoring:1",
        model_name="lead_scoring",
        model_version="1",
        deliver=False,
    )
    rows = health_page.model_health(home_engine)
    assert script in _row(rows, "lead_scoring").ledger[0].reason
    page = health_page.render_health_page(
        rows, username=f"<b>{script}</b>", can_rollback=True, csrf='"><script>x</script>'
    )
    assert "<script" not in page.lower() and "<img" not in page
    assert (
        "by cli:&lt;img src=x onerror=alert(1)&gt;: &lt;script&gt;alert(document.cookie)&lt;/script&gt;"
        in page
    )
    assert "drift &#34;quoted&#34; &lt;script&gt;" in page  # markupsafe's entity for a double quote
    assert 'value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in page


UNTRUSTED = "a<b & \"c\" 'd'>"
ONCE = "a&lt;b &amp; &#34;c&#34; &#39;d&#39;&gt;"  # UNTRUSTED escaped once


def _alert_row(**fields: Any) -> AlertRow:
    """An alert as read back, with ``fields`` and None elsewhere (the page reads a few of its fields)."""
    blank: dict[str, Any] = dict.fromkeys(f.name for f in dataclasses.fields(AlertRow))
    return AlertRow(**{**blank, **fields})


def test_an_untrusted_value_is_escaped_exactly_once_wherever_it_lands() -> None:
    """Model names, reasons, alert texts, the user, the token and the links: each printed as text or
    as an attribute value, escaped once (no manual escaping left under autoescape)."""
    assert str(escape(UNTRUSTED)) == ONCE
    alert = _alert_row(
        id=7,
        severity=UNTRUSTED,
        kind="data_drift",
        status="open",
        title=UNTRUSTED,
        model_name=UNTRUSTED,
        model_version=UNTRUSTED,
        occurrences=1,
    )
    entry = ledger.LedgerEntry(
        id=1,
        created_at=dt.datetime(2026, 5, 4, tzinfo=dt.UTC),
        actor=UNTRUSTED,
        model_name=UNTRUSTED,
        organization_id=None,
        action="hold",
        alias="champion",
        from_version="1",
        to_version="2",
        weight=0.5,
        reason=UNTRUSTED,
        metrics={},
    )
    row = HealthRow(
        model_name=UNTRUSTED,
        family="lead_scoring",
        organization_id=None,
        accuracy_floor=0.8,
        min_outcomes=100,
        drift=True,
        open_alerts=(alert,),
        ledger=(entry,),
        registered=True,
        champion=UNTRUSTED,
        previous=UNTRUSTED,
        challenger=UNTRUSTED,
        canary_weight=0.1,
        rollback_target=UNTRUSTED,
        accuracy=0.5,
        outcomes=3,
        answered_by="fallback",
        answered_why=UNTRUSTED,
    )
    page = health_page.render_health_page(
        [row],
        username=UNTRUSTED,
        can_rollback=True,
        csrf=UNTRUSTED,
        other_alerts=[alert],
        notice=health_page.Notice("ok", UNTRUSTED),
        airflow_url=UNTRUSTED,
    )
    message = health_page.render_message_page(UNTRUSTED, UNTRUSTED, link=UNTRUSTED, link_text=UNTRUSTED)
    # the page: user, link, notice; the row's id, data-model, name, champion, previous, fallback reason,
    # challenger, drifted version, alert (class, severity, title), ledger actor and reason, form (expected
    # champion, token, label, button); the other alert (class, severity, title). The message: title (x2),
    # text, link, link text.
    for html_text, times in ((page, 23), (message, 5)):
        assert not any(raw in html_text for raw in ("a<b", "b & ", '"c"', "'d'", "d'>"))
        assert "&amp;lt;" not in html_text and "&amp;amp;" not in html_text and "&amp;#" not in html_text
        assert html_text.count(ONCE) == times, html_text
    for attribute in ("id", "data-model", "aria-label", "value", "href"):
        assert re.search(rf'{attribute}="[^"]*{re.escape(ONCE)}"', page), attribute
    assert f'<input type="hidden" name="csrf_token" value="{ONCE}">' in page
    assert f'<a href="{ONCE}">{ONCE}</a>' in message


def test_a_variable_missing_from_a_view_fails_the_render_loudly() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'message' is undefined"):
        health_page.render_template("message.html.j2")
    view = health_page.page_view([], username="u", can_rollback=True, csrf="c")
    page = {f.name: getattr(view, f.name) for f in dataclasses.fields(view) if f.name != "floor"}
    with pytest.raises(jinja2.UndefinedError, match="floor"):
        health_page.render_template("page.html.j2", page=page)
    assert "against the 80% floor" in health_page.render_template("page.html.j2", page=view)


def test_the_templates_ship_as_package_data() -> None:
    """pyproject's package-data takes every template the environment loads (a wheel without them
    would fail at the first page)."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["neuracrm_mlops.ops"]
    names = health_page.TEMPLATES.list_templates()
    assert "page.html.j2" in names and "message.html.j2" in names and "base.html.j2" in names
    assert all(any(fnmatch(f"templates/health/{n}", p) for p in patterns) for n in names)


# --- forecasts, order and paging ---------------------------------------------------------------------


def test_one_row_per_organization_forecast_with_its_own_live_accuracy(home_engine: sa.Engine) -> None:
    _forecast(home_engine, 12, actual_factor=1.0)  # 100%
    _forecast(home_engine, 101, actual_factor=1.25)  # WAPE 0.2: 80%, at the floor
    _forecast(home_engine, 3, actual_factor=2.0)  # WAPE 0.5: 50%, below the floor
    _register("sales_forecast_org_x", 1)  # not an organization's forecast: no row
    rows = health_page.model_health(home_engine)
    forecasts = [r for r in rows if r.family == "sales_forecast"]
    assert [r.organization_id for r in forecasts] == [3, 12, 101]  # below the floor first, then by id
    assert "sales_forecast_org_x" not in {r.model_name for r in rows}
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=get_settings().monitor_window_hours)
    for row in forecasts:
        live = version_stats(home_engine, row.model_name, ["2"], since=since)["2"]
        assert (row.accuracy, row.outcomes) == (live.accuracy, live.outcomes) == (row.accuracy, 3)
        assert (row.champion, row.previous, row.rollback_target) == ("2", "1", "1")
        assert row.min_outcomes == get_settings().forecast_min_outcomes
    assert [r.accuracy for r in forecasts] == pytest.approx([0.5, 1.0, 0.8])
    assert [r.below_floor for r in forecasts] == [True, False, False]

    page = _page(rows)
    assert '<tr id="row-sales_forecast_org_12" data-model="sales_forecast_org_12">' in page
    assert '<span class="sub organization">organization 12</span>' in page
    assert '<input type="hidden" name="organization" value="101">' in page
    assert page.index("row-sales_forecast_org_3") < page.index("row-lead_scoring")


def test_forecast_accuracy_for_the_whole_family_equals_stats_from_per_model() -> None:
    """The one-pass scoring gives each model what ``live_stats.stats_from`` gives it: served,
    non-fallback forecasts only, the latest per version and month, months with an actual only."""

    def forecast(
        pid: int, name: str, version: str | None, route: str, values: dict[str, float], fallback: bool = False
    ) -> dict[str, Any]:
        points = [{"month": m, "forecast": v} for m, v in values.items()]
        return {
            "id": pid,
            "created_at": dt.datetime.now(dt.UTC),
            "model_name": name,
            "model_version": version,
            "route": route,
            "organization_id": 1,
            "entity_id": None,
            "features": {},
            "output": {"points": points},
            "latency_ms": 10.0,
            "fallback": fallback or route == "fallback",
            "error": None,
        }

    a, b, c = "sales_forecast_org_1", "sales_forecast_org_2", "sales_forecast_org_3"
    predictions = pd.DataFrame(
        [
            forecast(1, a, "1", "champion", {"2026-01": 100.0, "2026-02": 100.0}),
            forecast(2, a, "1", "champion", {"2026-02": 150.0, "2026-03": 90.0}),  # newer: 02 is 150
            forecast(3, a, "2", "challenger", {"2026-01": 80.0, "2026-02": 300.0}),
            forecast(4, a, "2", "fallback", {"2026-01": 0.0}),  # a fallback answered: not the version's
            forecast(5, a, "2", "challenger", {"2026-02": 0.0}, fallback=True),  # v2 failed, logged as such
            forecast(9, a, "2", "shadow", {"2026-03": 100.0}),
            forecast(6, b, "1", "champion", {"2026-01": 100.0, "2026-02": 50.0}),  # same months as a
            forecast(7, b, "4", "champion", {"2030-01": 100.0}),  # no actual for that month
            forecast(8, c, "1", "champion", {"2026-01": 10.0}),  # c has no actuals at all
        ]
    )
    outcomes = pd.DataFrame(
        [
            (a, 1, "2026-01", None, 100.0),
            (a, 1, "2026-02", None, 120.0),
            (a, 1, "2026-03", None, 100.0),
            (b, 2, "2026-01", None, 200.0),
            (b, 2, "2026-02", None, None),  # no value yet
        ],
        columns=["model_name", "organization_id", "entity_id", "label", "value"],
    )
    together = health_page._forecast_accuracy(predictions, outcomes)
    expected: dict[tuple[str, str], tuple[float | None, int]] = {}
    for name, versions in ((a, ["1", "2"]), (b, ["1", "4"]), (c, ["1"])):
        mine = predictions[predictions["model_name"] == name]
        theirs = outcomes[outcomes["model_name"] == name].drop(columns="model_name")
        for version, live in stats_from(name, versions, mine, theirs).items():
            assert together.get((name, version), (None, 0)) == (live.accuracy, live.outcomes)
            expected[(name, version)] = (live.accuracy, live.outcomes)
    assert expected[(a, "1")] == (pytest.approx(1 - (0 + 30 + 10) / 320), 3)
    assert expected[(a, "2")] == (pytest.approx(1 - (20 + 180 + 0) / 320), 3)
    assert expected[(b, "1")] == (0.5, 1)
    assert expected[(b, "4")] == (None, 0) and expected[(c, "1")] == (None, 0)


def test_rows_that_need_attention_come_first_and_quiet_forecasts_are_paged(home_engine: sa.Engine) -> None:
    _register("lead_scoring", 2)
    _release(home_engine, "lead_scoring", "1")
    _release(home_engine, "lead_scoring", "2")
    for org in (1, 5, 6):
        _forecast(home_engine, org)  # quiet
    _forecast(home_engine, 2, canary=True)
    _forecast(home_engine, 3)
    raise_alert(
        home_engine,
        kind="data_drift",
        severity="warning",
        title="sales_forecast_org_3 v2: input drift",
        message="m",
        dedup_key="data_drift:sales_forecast_org_3:2",
        model_name="sales_forecast_org_3",
        model_version="2",
        organization_id=3,
        deliver=False,
    )
    _forecast(home_engine, 4, actual_factor=3.0)  # below the floor
    rows = health_page.model_health(home_engine)
    order = [r.model_name.replace("sales_forecast_org_", "org") for r in rows]
    assert order == ["org4", "org3", "org2", "lead_scoring", "sentiment", "org1", "org5", "org6"]
    assert [health_page.attention(r) for r in rows] == [0, 1, 2, 3, 3, 3, 3, 3]

    everything = _page(rows)  # 200 forecast rows by default: all listed
    assert everything.count("<tr id=") == 8 and "more-organizations" not in everything

    listed, left_out = health_page.rows_to_list(rows, limit=2)
    assert [r.model_name for r in listed][:5] == [r.model_name for r in rows][:5]  # attention: never cut
    assert len(listed) == 5 and left_out == 3
    paged = _page(rows, forecast_rows=2)
    assert paged.count("<tr id=") == 5 and "row-sales_forecast_org_1" not in paged
    assert '<p class="more" id="more-organizations">3 more organizations, all healthy' in paged
    assert "8 served models &middot; 1 below the floor" in paged  # the summary counts every row

    listed, left_out = health_page.rows_to_list(rows, limit=4, pinned="sales_forecast_org_6")
    assert [r.model_name for r in listed][5:] == ["sales_forecast_org_1", "sales_forecast_org_6"]
    assert left_out == 1
    assert "1 more organization, all healthy" in _page(rows, forecast_rows=4, pinned="sales_forecast_org_6")


# --- the rollback the form makes ---------------------------------------------------------------------


def test_the_form_rolls_back_as_the_airflow_user_and_a_stale_form_changes_nothing(
    home_engine: sa.Engine,
) -> None:
    _lead_scoring_in_a_canary(home_engine)
    form = {"model": "lead_scoring", "organization": "", "expected_champion": "2", "reason": "  live  70% "}
    outcome = health_page.submit_rollback(home_engine, form, username="on call")
    assert (outcome.status, outcome.done, outcome.model_name) == (303, True, "lead_scoring")
    assert outcome.redirect_to() == "health?rolled_back=lead_scoring#row-lead_scoring"
    [entry] = ledger.latest_entries(home_engine, model_name="lead_scoring", limit=1)
    assert (entry.action, entry.actor, entry.from_version, entry.to_version, entry.reason) == (
        "rollback",
        "airflow-ui:on call",
        "2",
        "1",
        "live 70%",
    )
    assert rollout.model_state("lead_scoring")["champion"] == "1"
    rows = health_page.model_health(home_engine)
    notice = health_page.notice_for(rows, "lead_scoring", "on call")
    assert notice is not None and notice.kind == "ok"
    assert notice.text == "lead_scoring: champion rolled back from v2 to v1 by airflow-ui:on call: live 70%"
    assert health_page.notice_for(rows, "lead_scoring", "someone else") is None

    with home_engine.connect() as conn:
        before = conn.scalar(sa.select(sa.func.count()).select_from(PromotionLedgerEntry))
    stale = health_page.submit_rollback(home_engine, {**form, "reason": "second click"}, username="on call")
    assert (stale.status, stale.done) == (409, False)
    assert stale.notice is not None and "champion is already v1, not v2" in stale.notice.text
    with home_engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(PromotionLedgerEntry)) == before
    assert rollout.model_state("lead_scoring")["champion"] == "1"

    no_reason = health_page.submit_rollback(
        home_engine, {**form, "expected_champion": "1", "reason": " "}, username="x"
    )
    assert no_reason.status == 400 and no_reason.notice is not None and "say why" in no_reason.notice.text
    assert rollout.model_state("lead_scoring")["champion"] == "1"


def test_a_forecast_is_rolled_back_for_its_organization_to_the_target_the_page_showed(
    home_engine: sa.Engine,
) -> None:
    name = _forecast(home_engine, 7)
    client = _register(name, 1)  # v3
    _release(home_engine, name, "3")
    rollout.rollback(name, actor=ACTOR, reason="v3 regressed", engine=home_engine)  # champion back to v2
    client.set_registered_model_alias(name, registry.PREVIOUS, "3")  # moved by hand: not the target
    row = _row(health_page.model_health(home_engine), name)
    assert (row.champion, row.previous, row.rollback_target) == ("2", "3", "1")  # the ledger decides
    assert '<button type="submit">Roll back to v1</button>' in _page([row])

    form = {"model": "sales_forecast", "organization": "7", "expected_champion": "2", "reason": "drill"}
    outcome = health_page.submit_rollback(home_engine, form, username="oncall")
    assert outcome.done and outcome.model_name == name
    assert rollout.model_state(name)["champion"] == row.rollback_target
    [entry] = ledger.latest_entries(home_engine, model_name=name, limit=1)
    assert (entry.actor, entry.organization_id, entry.to_version) == ("airflow-ui:oncall", 7, "1")
    missing = health_page.submit_rollback(home_engine, {**form, "organization": ""}, username="oncall")
    assert missing.status == 400 and missing.model_name is None


# --- voice scenarios -------------------------------------------------------------------------------


def test_the_voice_scenarios_section_shows_what_serves_each_scenario_and_its_latest_moves(
    home_engine: sa.Engine, tmp_path: Path
) -> None:
    weight = scenario_in_a_canary(home_engine, tmp_path)
    log_calls(home_engine, "1", "champion", successful=3, unsuccessful=1)
    raise_alert(
        home_engine, kind="canary_inconclusive", severity="warning", dedup_key="test:scenario",
        title="sales_outbound canary <inconclusive>", message="m", model_name=PROMPT, model_version="2",
        deliver=False,
    )  # fmt: skip

    health = health_page.scenario_health(home_engine)
    (scenario,) = health.scenarios
    assert health.readable and scenario.status.open_alerts == 1
    assert (scenario.status.calls, scenario.status.success_rate) == (4, 0.75)
    assert [e.action for e in scenario.ledger] == ["canary", "register", "promote"]  # newest first

    page = health_page.health_page_html(home_engine, username="oncall", can_rollback=True, csrf="c" * 64)
    assert "<h2>Voice scenarios</h2>" in page
    assert '<tr id="scenario-sales_outbound">' in page
    assert '<td class="champion">v1 (1.0.0)</td>' in page
    at = f'<span class="weight">at {weight:.0%}</span>'
    challenger = f'<td class="challenger">v2 (1.1.0) {at} of calls</td>'
    assert challenger in page
    assert '<td class="accuracy">75.0%<span class="sub">of 4 analysed calls</span></td>' in page
    assert '<td class="alerts">1</td>' in page
    assert f"canary v1 -&gt; v2 at {weight:.0%} by test:voice_scenarios: canary started" in page
    assert "canary &lt;inconclusive&gt;" in page  # the alert itself, escaped, under other alerts


def test_no_voice_scenario_is_one_line_and_an_unreadable_registry_does_not_break_the_page(
    home_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.store import prompt_registry

    page = health_page.health_page_html(home_engine, username="oncall", can_rollback=True, csrf="c" * 64)
    assert '<p class="more" id="no-scenarios">No voice scenarios registered.</p>' in page
    assert '<table id="scenarios">' not in page
    assert "Voice scenarios" not in _page([])  # a caller that read no scenarios gets no section

    def down(client: object) -> list[str]:
        raise ConnectionError("refused <here>")

    monkeypatch.setattr(prompt_registry, "list_scenarios", down)
    page = health_page.health_page_html(home_engine, username="oncall", can_rollback=True, csrf="c" * 64)
    assert "Voice scenarios could not be read from MLflow: ConnectionError: refused &lt;here&gt;" in page
    assert '<table id="models">' in page


# --- reads ---------------------------------------------------------------------------------------


class _CountingClient:
    def __init__(self, client: Any, calls: Counter[str]) -> None:
        self._client, self._calls = client, calls

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] += 1
            return method(*args, **kwargs)

        return call


def test_the_reads_do_not_grow_with_the_number_of_organizations(
    home_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lead_scoring_in_a_canary(home_engine)
    statements: list[str] = []
    sa.event.listen(home_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    calls: Counter[str] = Counter()
    configure = registry.configure_mlflow
    monkeypatch.setattr(registry, "configure_mlflow", lambda: _CountingClient(configure(), calls))

    def reads() -> tuple[int, int]:
        statements.clear()
        calls.clear()
        rows = health_page.model_health(home_engine)
        assert all(r.registered for r in rows if r.organization_id is not None)
        return len(statements), sum(calls.values())

    _forecast(home_engine, 1)
    few = reads()
    for org in range(2, 9):
        _forecast(home_engine, org, canary=org == 5)
    assert reads() == few
    # the shared models' states, one search for every forecast model and one for their versions (who
    # answers users: a model or the fallback, and why)
    assert few[1] == 4


def test_each_model_is_guarded_by_its_familys_rollout_dag() -> None:
    assert health_page.ROLLOUT_DAG_IDS == (
        "rollout_lead_scoring",
        "rollout_sentiment",
        "rollout_sales_forecast",
        "rollout_voice_scenario",
    )
    assert health_page.rollout_dag_id("voice_scenario.sales_outbound") == "rollout_voice_scenario"
    assert health_page.rollout_dag_id("lead_scoring") == "rollout_lead_scoring"
    assert health_page.rollout_dag_id("sentiment") == "rollout_sentiment"
    assert health_page.rollout_dag_id("sales_forecast_org_7") == "rollout_sales_forecast"
