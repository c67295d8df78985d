"""The model-health plugin page on the real api-server, in headless Chromium: on-call signs in through
Airflow, reads the real state (versions, canary weight, live accuracy against the floor, alerts,
ledger), and rolls a model back with one click; anonymous users, viewers and foreign origins cannot.

The state is made with the library's own calls (rollout, prediction log, outcomes, alerts), on the
stores the running Airflow reads. Screenshots land in build/artifacts/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from serving_support import environment

from airflow_live.conftest import REPO, LiveAirflow
from neuracrm_mlops.inference.prediction_log import PredictionLogWriter, prediction_row
from neuracrm_mlops.release import rollout
from neuracrm_mlops.release.outcomes import OutcomeIn, record_outcomes
from neuracrm_mlops.store import ledger, registry
from neuracrm_mlops.store.alerts import raise_alert
from neuracrm_mlops.store.db.schema import Organization

# one real Airflow for the directory (tests/airflow_live/conftest.py): one worker runs it
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("airflow_live")]

ARTIFACTS = REPO / "build" / "artifacts"
SEED_ACTOR = "cli:oncall-drill"
PAGE = "/neuracrm/health"
APT_HINT = "apt-get install chromium chromium-driver"


@dataclass(frozen=True)
class PageState:
    lead_org: int
    forecast_org: int
    forecast_model: str


def _release(client: Any, engine: sa.Engine, name: str, version: str, *, promote: bool) -> None:
    """``version`` becomes the challenger and its rollout starts (promoted at once when there is no
    champion yet); with ``promote`` the canary passes and it becomes champion."""
    client.set_registered_model_alias(name, registry.CHALLENGER, version)
    started = rollout.start_rollout(name, actor=SEED_ACTOR, engine=engine)
    if promote and started.action == "start":
        rollout.promote(name, actor=SEED_ACTOR, reason=f"canary of v{version} passed at 100%", engine=engine)


def _register(client: Any, name: str, versions: int) -> None:
    """Versions without artifacts: the page and the rollback never load a model."""
    registry.ensure_registered_model(client, name, "health page test")
    for _ in range(versions):
        client.create_model_version(name, "file:///nonexistent", tags={"status": "test", "servable": "true"})


def _log_predictions(engine: sa.Engine, home: Path, org: int, version: str, route: str, n: int) -> None:
    writer = PredictionLogWriter(engine, spill_dir=home / "prediction-spill")
    writer.append(
        [
            prediction_row(
                model_name="lead_scoring",
                model_version=version,
                route=route,
                request_id=f"seed-{version}-{i}",
                organization_id=org,
                entity_id=f"lead-v{version}-{i}",
                features={"region": "emea", "industry": "Software"},
                output={"probability": 0.9, "score": 90, "tier": "hot"},
                latency_ms=12.0 + i,
                fallback=False,
            )
            for i in range(n)
        ]
    )
    assert writer.flush(), writer.last_error


@pytest.fixture(scope="module")
def page_state(airflow_live: LiveAirflow) -> PageState:
    """lead_scoring: v1 then v2 promoted, v3 in a 10% canary; the champion v2 at 14/20 = 70% live
    (below the floor), the challenger at 9/10 = 90%; an open drift alert; one organization's
    forecast with v2 promoted over v1; an open validation alert of no model."""
    with environment(airflow_live.neuracrm_env):
        from neuracrm_mlops.store.db.engine import get_engine

        engine = get_engine()
        with engine.connect() as conn:
            orgs = sorted(conn.scalars(sa.select(Organization.id)))
        lead_org, forecast_org = orgs[0], orgs[1]
        client = registry.configure_mlflow()
        _register(client, "lead_scoring", 3)
        _release(client, engine, "lead_scoring", "1", promote=True)  # first version: promoted at once
        _release(client, engine, "lead_scoring", "2", promote=True)
        _release(client, engine, "lead_scoring", "3", promote=False)  # canary at 10%
        forecast_model = registry.forecast_model_name(forecast_org)
        _register(client, forecast_model, 2)
        _release(client, engine, forecast_model, "1", promote=True)
        _release(client, engine, forecast_model, "2", promote=True)

        home = Path(airflow_live.neuracrm_env["NEURACRM_HOME"])
        _log_predictions(engine, home, lead_org, "2", "champion", 20)
        _log_predictions(engine, home, lead_org, "3", "challenger", 10)
        truth = [
            OutcomeIn(lead_org, f"lead-v2-{i}", "converted" if i < 14 else "not_converted") for i in range(20)
        ]
        truth += [
            OutcomeIn(lead_org, f"lead-v3-{i}", "converted" if i < 9 else "not_converted") for i in range(10)
        ]
        assert record_outcomes(engine, "lead_scoring", truth, source="crm") == 30
        raise_alert(
            engine,
            kind="data_drift",
            severity="warning",
            title="lead_scoring v2: input drift in company_employees",
            message="company_employees: KS p < 0.001 after Benjamini-Hochberg",
            dedup_key="data_drift:lead_scoring:2",
            model_name="lead_scoring",
            model_version="2",
            action_taken="none: warning only, the model keeps serving",
        )
        raise_alert(
            engine,
            kind="validation_failed",
            severity="critical",
            title="leads validation failed: email_opens below 0 in 5 rows",
            message="critical expectation failed",
            dedup_key="validation_failed:leads:drill",
        )
    return PageState(lead_org, forecast_org, forecast_model)


def _start_chromium() -> Any:
    """Headless Chromium driven by Selenium through the Debian chromedriver (no driver download)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "headless Chromium and its driver are needed for this test and are not installed "
            f"(chromium: {chromium}, chromedriver: {driver}): {APT_HINT}"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1000",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_page_load_timeout(60)
    return chrome


@pytest.fixture(scope="module")
def chromium() -> Iterator[Callable[[], Any]]:
    """One Chromium for the module, started by the first test that asks for it (in the test, so that
    a missing Chromium fails that test with the apt-get line rather than erroring the fixture)."""
    started: list[Any] = []

    def chrome() -> Any:
        if not started:
            started.append(_start_chromium())
        return started[0]

    yield chrome
    for instance in started:
        instance.quit()


def _sign_in(chrome: Any, stack: LiveAirflow, user: str = "oncall") -> None:
    """What the Airflow UI's login leaves behind: its JWT in the ``_token`` cookie."""
    chrome.get(f"{stack.url}{PAGE}")
    chrome.add_cookie({"name": "_token", "value": stack.token(user), "path": "/"})


def _screenshot(chrome: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert chrome.save_screenshot(str(path)), path
    return path


def _champion(name: str) -> str:
    version = registry.alias_version(registry.configure_mlflow(), name, registry.CHAMPION)
    assert version is not None
    return str(version.version)


def _csrf_token(html_text: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html_text)
    assert found, html_text[:2000]
    return found.group(1)


def test_the_page_and_its_rollback_refuse_anonymous_users_viewers_and_foreign_origins(
    airflow_live: LiveAirflow, page_state: PageState
) -> None:
    url = airflow_live.url
    form = {"model": "lead_scoring", "organization": "", "expected_champion": "2", "reason": "drill"}

    anonymous = httpx.get(f"{url}{PAGE}", timeout=30)
    assert anonymous.status_code == 401 and "Sign in to Airflow" in anonymous.text
    assert "/auth/login" in anonymous.text and "lead_scoring" not in anonymous.text
    anonymous_post = httpx.post(f"{url}/neuracrm/rollback", data=form, headers={"Origin": url}, timeout=30)
    assert anonymous_post.status_code in (401, 403), anonymous_post.text

    viewer = httpx.get(f"{url}{PAGE}", cookies={"_token": airflow_live.token("viewer")}, timeout=30)
    assert viewer.status_code == 200 and "your role cannot roll back" in viewer.text
    assert "<form" not in viewer.text
    viewer_post = httpx.post(
        f"{url}/neuracrm/rollback",
        data=form,
        cookies={"_token": airflow_live.token("viewer")},
        headers={"Origin": url},
        timeout=30,
    )
    assert viewer_post.status_code == 403 and "may not roll models back" in viewer_post.text

    oncall = {"_token": airflow_live.token("oncall")}
    page = httpx.get(f"{url}{PAGE}", cookies=oncall, timeout=30)
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    signed = {**form, "csrf_token": _csrf_token(page.text)}
    foreign = httpx.post(
        f"{url}/neuracrm/rollback",
        data=signed,
        cookies=oncall,
        headers={"Origin": "http://attacker.example"},
        timeout=30,
    )
    assert foreign.status_code == 403 and "posted from the model health page" in foreign.text
    tokenless = httpx.post(
        f"{url}/neuracrm/rollback",
        data={**form, "csrf_token": "0" * 64},
        cookies=oncall,
        headers={"Origin": url},
        timeout=30,
    )
    assert tokenless.status_code == 403 and "token" in tokenless.text
    assert _champion("lead_scoring") == "2"  # nothing moved
    engine = sa.create_engine(airflow_live.neuracrm_env["NEURACRM_DB_URL"])
    assert [e.action for e in ledger.latest_entries(engine, limit=20)].count("rollback") == 0
    engine.dispose()

    plugins = airflow_live.api("GET", "/api/v2/plugins").json()["plugins"]
    [plugin] = [p for p in plugins if p["name"] == "neuracrm_health"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/neuracrm"]
    assert [(v["name"], v["href"]) for v in plugin["external_views"]] == [("Model health", PAGE)]


def test_on_call_reads_versions_weight_live_accuracy_alerts_and_ledger_in_the_browser(
    airflow_live: LiveAirflow, page_state: PageState, chromium: Callable[[], Any]
) -> None:
    from selenium.webdriver.common.by import By

    browser = chromium()
    _sign_in(browser, airflow_live)
    browser.get(f"{airflow_live.url}{PAGE}")
    assert browser.title == "NeuraCRM model health"
    assert browser.find_element(By.ID, "user").text == "oncall"
    back = browser.find_element(By.LINK_TEXT, "back to Airflow").get_attribute("href")
    assert back.rstrip("/") == airflow_live.url
    row = browser.find_element(By.ID, "row-lead_scoring")

    def cell(css: str) -> str:
        return str(row.find_element(By.CSS_SELECTOR, f"td.{css}").text)

    assert cell("champion").split() == ["v2", "previous", "v1"]
    assert cell("challenger").startswith("v3 at 10% of traffic")
    assert "90.0% live over 10 outcomes" in cell("challenger")
    accuracy = row.find_element(By.CSS_SELECTOR, "td.accuracy")
    assert accuracy.text.startswith("70.0%") and "below the 80% floor, 20 outcomes" in accuracy.text
    assert "below-floor" in accuracy.get_attribute("class")
    assert accuracy.value_of_css_property("color") == "rgba(198, 40, 40, 1)"  # red
    assert cell("drift").split() == ["drift", "v2"] and cell("bias") == "none"
    assert "warning: lead_scoring v2: input drift in company_employees" in cell("alerts")
    ledger_lines = cell("ledger").splitlines()
    assert len(ledger_lines) == 3
    assert (
        f"canary v2 -> v3 at 10% by {SEED_ACTOR}: canary started: v3 gets 10% of traffic against champion v2"
        in ledger_lines[0]
    )
    assert f"promote v1 -> v2 by {SEED_ACTOR}: canary of v2 passed at 100%" in ledger_lines[1]
    assert row.find_element(By.CSS_SELECTOR, "button[type=submit]").text == "Roll back to v1"

    forecast = browser.find_element(By.ID, f"row-{page_state.forecast_model}")
    assert (
        f"organization {page_state.forecast_org}" in forecast.find_element(By.CSS_SELECTOR, "td.model").text
    )
    assert forecast.find_element(By.CSS_SELECTOR, "td.champion").text.split() == ["v2", "previous", "v1"]
    assert browser.find_element(By.ID, "row-sentiment")
    other = browser.find_element(By.ID, "other-alerts").text
    assert "critical: leads validation failed: email_opens below 0 in 5 rows" in other
    assert _screenshot(browser, "health-page.png").stat().st_size > 10_000


def test_rollback_clicked_in_the_browser_restores_the_previous_champion_as_the_airflow_user(
    airflow_live: LiveAirflow, page_state: PageState, chromium: Callable[[], Any]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium()
    _sign_in(browser, airflow_live)
    browser.get(f"{airflow_live.url}{PAGE}")
    stale_token = _csrf_token(browser.page_source)
    row = browser.find_element(By.ID, "row-lead_scoring")
    reason = "drill: live accuracy 70% is below the floor"
    row.find_element(By.NAME, "reason").send_keys(reason)
    row.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda chrome: "rolled_back=lead_scoring" in chrome.current_url)

    notice = browser.find_element(By.CSS_SELECTOR, ".notice.ok").text
    assert notice == f"lead_scoring: champion rolled back from v2 to v1 by airflow-ui:oncall: {reason}"
    row = browser.find_element(By.ID, "row-lead_scoring")
    assert row.find_element(By.CSS_SELECTOR, "td.champion").text == "v1"
    assert "rollback v2 -> v1 by airflow-ui:oncall" in row.find_element(By.CSS_SELECTOR, "td.ledger").text
    _screenshot(browser, "health-page-after-rollback.png")

    assert _champion("lead_scoring") == "1"  # the alias moved in MLflow
    engine = sa.create_engine(airflow_live.neuracrm_env["NEURACRM_DB_URL"])
    [entry] = ledger.latest_entries(engine, model_name="lead_scoring", limit=1)
    assert (entry.action, entry.actor, entry.from_version, entry.to_version, entry.reason) == (
        "rollback",
        "airflow-ui:oncall",
        "2",
        "1",
        reason,
    )

    # a form from before the rollback (champion v2) does nothing now
    stale = httpx.post(
        f"{airflow_live.url}/neuracrm/rollback",
        data={
            "model": "lead_scoring",
            "organization": "",
            "expected_champion": "2",
            "reason": "second click from an old tab",
            "csrf_token": stale_token,
        },
        cookies={"_token": airflow_live.token("oncall")},
        headers={"Origin": airflow_live.url},
        timeout=30,
    )
    assert stale.status_code == 409 and "nothing rolled back: champion is already v1" in stale.text
    assert _champion("lead_scoring") == "1"

    # a forecast is rolled back for its organization
    forecast = browser.find_element(By.ID, f"row-{page_state.forecast_model}")
    forecast_reason = "drill: <b>one</b> organization's forecast & nothing else"
    forecast.find_element(By.NAME, "reason").send_keys(forecast_reason)
    forecast.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 30).until(
        lambda chrome: f"rolled_back={page_state.forecast_model}" in chrome.current_url
    )
    assert _champion(page_state.forecast_model) == "1"
    notice = browser.find_element(By.CSS_SELECTOR, ".notice.ok").text
    assert notice.endswith(f"by airflow-ui:oncall: {forecast_reason}")  # typed text shown as text
    [entry] = ledger.latest_entries(engine, model_name=page_state.forecast_model, limit=1)
    assert (entry.action, entry.actor, entry.organization_id) == (
        "rollback",
        "airflow-ui:oncall",
        page_state.forecast_org,
    )
    engine.dispose()
