"""``neuracrm-mlops demo``: the whole loop on the embedded defaults (SQLite, local MLflow, no Docker).

Seeds a CRM, imports a file with broken rows, runs the real training DAGs (``airflow dags test``),
promotes the first lead model, starts ``bentoml serve`` and sends it traffic, rolls a retrained
version out through the canary steps on simulated live outcomes, then degrades it and lets the
monitor roll it back and alert. Everything it starts is stopped before it returns."""

from __future__ import annotations

import csv
import os
import random
import shutil
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops.config import get_settings, reset_settings
from neuracrm_mlops.errors import NeuraCRMError
from neuracrm_mlops.families import get_family
from neuracrm_mlops.ops import local_stack
from neuracrm_mlops.ops.status import CRMStatus, crm_status
from neuracrm_mlops.release import rollout
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.db.engine import dispose_engines, get_engine, redact_url
from neuracrm_mlops.store.db.migrate import upgrade
from neuracrm_mlops.store.db.schema import Organization
from neuracrm_mlops.store.ingest import ImportSummary, import_file
from neuracrm_mlops.store.orgs import ai_enabled, create_organization
from neuracrm_mlops.store.seeding import SeedSummary, seed_database
from neuracrm_mlops.store.synthetic import generate_crm

Say = Callable[[str], None]

DEMO_ORGS = 50
DEMO_MONTHS = 48
DEMO_SEED = 7
IMPORT_ORG_NAME = "Demo Imports Inc"
LEADS_PER_REQUEST = 100
ROLLOUT_DAG = "rollout_lead_scoring"
RETRAIN_ASSET = "neuracrm://monitor/lead_scoring/retrain"
WRAP_WIDTH = 104  # printed reasons wrap at word boundaries, never cut
TRAINING_DAGS = (
    ("train_lead_scoring", "lead_scoring"),
    ("train_sentiment", "sentiment"),
    ("train_sales_forecast", "sales_forecast"),
)


@dataclass
class DemoResult:
    seed: SeedSummary
    example_file: Path
    first_import: ImportSummary
    second_import: ImportSummary
    status: CRMStatus
    story: dict[str, Any]


def reset_embedded_store(say: Say) -> None:
    """Start from empty stores: delete the embedded SQLite files (CRM, MLflow, Airflow's metadata),
    MLflow artifacts and old logs; a configured (production) database is never deleted: the demo
    refuses one that has data."""
    settings = get_settings()
    shutil.rmtree(settings.home / "logs", ignore_errors=True)
    if settings.airflow_home == settings.home / "airflow":
        (settings.airflow_home / "airflow.db").unlink(missing_ok=True)
    if settings.mlflow_tracking_uri == f"sqlite:///{settings.home / 'mlflow.sqlite'}":
        (settings.home / "mlflow.sqlite").unlink(missing_ok=True)
        shutil.rmtree(settings.home / "mlartifacts", ignore_errors=True)
    if settings.db_url == f"sqlite:///{settings.home / 'crm.sqlite'}":
        dispose_engines()
        for suffix in ("", "-wal", "-shm"):
            (settings.home / f"crm.sqlite{suffix}").unlink(missing_ok=True)
        return
    engine = get_engine()
    upgrade(engine)
    with engine.connect() as conn:
        if conn.scalar(sa.select(sa.func.count()).select_from(Organization)):
            raise NeuraCRMError(
                f"the demo needs an empty store, and {redact_url(settings.db_url)} has data; "
                "unset NEURACRM_DB_URL to use the embedded default"
            )
    say(f"using the configured database {redact_url(settings.db_url)}")


def write_example_leads_file(path: Path, *, seed: int = 2026, broken_rows: int = 2) -> Path:
    """A realistic leads export with a custom column and ``broken_rows`` rows that cannot be parsed."""
    leads = generate_crm(1, 24, seed, leads_per_org=120).leads
    frame = pd.DataFrame(
        {
            "Lead ID": leads["external_id"],
            "Created At": leads["created_at"].map(lambda ts: ts.isoformat()),
            "industry": leads["industry"],
            "company_employees": leads["company_employees"],
            "company_revenue": leads["company_revenue"].round(2),
            "email_opens": leads["email_opens"],
            "website_visits": leads["website_visits"],
            "pages_viewed": leads["pages_viewed"],
            "time_on_site_seconds": leads["time_on_site_seconds"].round(1),
            "days_since_last_activity": leads["days_since_last_activity"],
            "job_title": leads["job_title"],
            "seniority": leads["seniority"],
            "timeline": leads["timeline"],
            "budget_signal": leads["budget_signal"],
            "description": leads["description"],
            "source": leads["source"],
            "region": leads["region"],
            "converted": leads["converted"].map(lambda v: "" if pd.isna(v) else str(bool(v)).lower()),
            "account_owner": [f"rep-{i % 7}" for i in range(len(leads))],  # a custom column
        }
    )
    frame = frame.astype(object)
    for i in range(broken_rows):
        row = 5 + i * 37
        if i % 2 == 0:
            frame.loc[row, "Created At"] = "last Tuesday"
        else:
            frame.loc[row, "company_employees"] = "a few hundred"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)
    return path


class DemoTraffic:
    """Leads scored over HTTP by one organization, and simulated outcomes for what was served, until
    stopped: the live traffic a canary bakes on. ``degrade`` names versions whose outcomes go bad.

    The leads are drawn from the CRM store the lead model was trained on (``demo_leads``), each sent
    as a new lead: the traffic comes from the training distribution, so the monitor finds no input
    drift and no alert the story does not tell."""

    def __init__(
        self,
        url: str,
        api_key: str,
        engine: sa.Engine,
        degrade: tuple[str, ...] = (),
        leads: list[dict[str, Any]] | None = None,
    ) -> None:
        self.url, self.api_key, self.engine, self.degrade = url, api_key, engine, degrade
        self.leads = leads if leads is not None else demo_leads(engine)
        self.stop_event = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.served: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    def __enter__(self) -> DemoTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self._thread.join(60)

    def _run(self) -> None:
        from neuracrm_mlops.release.outcomes import simulate_outcomes

        rng = random.Random(DEMO_SEED)
        try:
            with httpx.Client(timeout=30) as client:
                while not self.stop_event.is_set():
                    leads = [_demo_lead(rng, self.leads) for _ in range(LEADS_PER_REQUEST)]
                    response = client.post(
                        f"{self.url}/score",
                        json={"leads": leads},
                        headers={"Authorization": f"Bearer {self.api_key}"},
                    )
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        for result in response.json()["results"]:
                            self.served[f"v{result['model']['version']} {result['model']['route']}"] += 1
                    # the prediction log is flushed off the request path: give it time to land
                    self.stop_event.wait(2 * get_settings().prediction_log_flush_seconds)
                    simulate_outcomes(
                        self.engine, "lead_scoring", agree=1.0, degrade=self.degrade, seed=DEMO_SEED
                    )
        except Exception as exc:  # reported by the demo, never swallowed
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def check(self) -> None:
        if self.errors or set(self.statuses) - {200}:
            raise NeuraCRMError(f"demo traffic failed: statuses {dict(self.statuses)}, errors {self.errors}")


def demo_leads(engine: sa.Engine) -> list[dict[str, Any]]:
    """The leads the lead model is trained on (those with a known outcome, as ``train_lead_scoring``
    reads them), as score-request records: every input field present, missing ones left out."""
    from neuracrm_mlops.models.lead_scoring_model import INPUT_COLUMNS
    from neuracrm_mlops.training.train import load_leads_with_outcome

    frame = load_leads_with_outcome(engine)
    if frame.empty:
        raise NeuraCRMError("the CRM store has no lead with a known outcome to send as demo traffic")
    records = []
    for row in frame.to_dict("records"):
        record = {column: _json_value(row.get(column)) for column in INPUT_COLUMNS}
        attributes = row.get("attributes")
        if isinstance(attributes, dict):  # custom columns, not the import's bookkeeping (_field_errors)
            custom = {
                str(k): _json_value(v)
                for k, v in attributes.items()
                if not str(k).startswith("_") and isinstance(v, str | int | float | bool)
            }
            record["attributes"] = {k: v for k, v in custom.items() if v is not None}
        records.append({k: v for k, v in record.items() if v is not None and v != {}})
    return records


def _json_value(value: Any) -> Any:
    """A CRM value as JSON: whole numbers as int, NaN/NA as None."""
    if value is None or (not isinstance(value, str | dict | list) and bool(pd.isna(value))):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) or hasattr(value, "item"):
        number = value.item() if hasattr(value, "item") else value
        if isinstance(number, float) and number.is_integer():
            return int(number)
        return number
    return value


def _demo_lead(rng: random.Random, leads: list[dict[str, Any]]) -> dict[str, Any]:
    """A lead drawn from the training data, sent under a new id (so that each gets one outcome)."""
    return {"lead_id": f"demo-{uuid.uuid4().hex[:16]}", **rng.choice(leads)}


@contextmanager
def demo_pacing(extra: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
    """The demo's clock: the same platform, with its waits shortened so that the story fits in a few
    minutes (model poll 1 s, a bake check every 2 s, live accuracy over the last minute instead of
    the last week). A variable already set in the environment wins. Restores the environment.

    This sets environment variables on purpose, not the settings object: they are inherited by the
    processes the demo starts (``airflow dags test``, ``bentoml serve``), which read them through
    their own ``get_settings()``; this process re-reads them through ``reset_settings()``. The only
    NEURACRM_* reads here are of what the caller already set, so that it wins."""
    pacing = {
        "NEURACRM_MODEL_POLL_SECONDS": "1",
        "NEURACRM_BAKE_POKE_SECONDS": "2",
        "NEURACRM_MONITOR_WINDOW_HOURS": f"{60 / 3600:.6f}",
        "NEURACRM_RETRY_DELAY_SECONDS": "5",
        "NEURACRM_LOG_LEVEL": "WARNING",
        **(extra or {}),  # a demo's own settings (demo --voice: its Retell key and bake size)
    }
    pacing = {name: os.environ.get(name) or value for name, value in pacing.items()}
    saved = {name: os.environ.get(name) for name in pacing}
    os.environ.update(pacing)
    reset_settings()
    try:
        yield pacing
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_settings()


def _latest_version(client: Any, name: str) -> Any:
    versions = client.search_model_versions(
        f"name = '{name}'", order_by=["version_number DESC"], max_results=1
    )
    if not versions:
        raise NeuraCRMError(f"training registered no version of {name}")
    return versions[0]


def _version_line(client: Any, name: str) -> str:
    version = _latest_version(client, name)
    accuracy = client.get_run(version.run_id).data.metrics.get("accuracy") if version.run_id else None
    holdout = f", holdout accuracy {accuracy:.3f}" if accuracy is not None else ""
    return f"{name} v{version.version} ({version.tags.get('semver')}) {version.tags.get('status')}{holdout}"


def _wait_until_below_floor(engine: sa.Engine, version: str, traffic: DemoTraffic, say: Say) -> None:
    """Wait until ``version``'s live accuracy, measured as the monitor measures it (its moving window,
    ``monitoring.live_accuracy``), is clearly below the floor on enough outcomes to be judged."""
    from neuracrm_mlops.monitoring.monitor import live_accuracy

    settings = get_settings()
    say(
        f"      waiting until v{version}'s live accuracy in the monitor's window (the last "
        f"{settings.monitor_window_hours * 3600:.0f} s) is below the floor {settings.accuracy_floor:.2f}"
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        traffic.check()
        live = live_accuracy(engine, "lead_scoring", version)
        if (
            live.accuracy is not None
            and live.outcomes >= rollout.min_outcomes_for("lead_scoring")
            and live.accuracy < settings.accuracy_floor - 0.03
        ):
            return
        time.sleep(2)
    raise NeuraCRMError(f"v{version}'s accuracy did not fall below the floor within 5 minutes")


def say_wrapped(say: Say, text: str, *, first: str, rest: str | None = None, width: int = WRAP_WIDTH) -> None:
    """``text`` in full, wrapped at word boundaries: the first line after ``first``, the others
    after ``rest`` (spaces as wide as ``first`` by default). Nothing is cut."""
    indent = rest if rest is not None else " " * len(first)
    lines = textwrap.wrap(
        " ".join(text.split()),
        width=width,
        initial_indent=first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    for line in lines or [first.rstrip()]:
        say(line)


def run_demo(say: Say, *, organizations: int = DEMO_ORGS, months: int = DEMO_MONTHS) -> DemoResult:
    """The whole loop on the embedded defaults; see the README's quickstart for what it shows."""
    started = time.monotonic()

    def step(text: str) -> None:
        say(f"[{time.monotonic() - started:5.0f}s] {text}")

    with demo_pacing():
        settings = get_settings()
        stopped = local_stack.stop_all()
        if stopped:
            step(f"stopped what an earlier run left: {', '.join(stopped)}")
        say(f"data dir {settings.home} (logs in {settings.home / 'logs'})")
        reset_embedded_store(say)
        engine = get_engine()
        before, after = upgrade(engine)
        step(f"1/9 CRM store migrated ({before or 'empty'} -> {after}) at {redact_url(settings.db_url)}")

        seeded = seed_database(
            organizations,
            months,
            DEMO_SEED,
            api_keys_file=settings.home / "api_keys.csv",
            engine=engine,
            step=lambda message: say(f"      {message}"),
        )
        step(
            f"2/9 seeded {seeded.organizations} organizations: {seeded.leads:,} leads, "
            f"{seeded.monthly_sales:,} monthly sales rows, {seeded.interactions:,} interactions"
        )
        first, second, example = _import_example(engine, say)
        step(
            f"3/9 imported {example.name}: {first.imported} imported, {first.quarantined} quarantined, "
            f"{first.with_field_errors} kept with field errors, "
            f"then again: {second.imported} imported, {second.unchanged} unchanged (idempotent)"
        )
        for note in first.quarantine_notes:
            say(f"      quarantined {note.location}: {note.reason}")

        airflow_env = local_stack.airflow_environment()
        local_stack.migrate_airflow(airflow_env)
        step("4/9 Airflow migrated; training DAGs: validate (Great Expectations) -> train -> register")
        client = registry.configure_mlflow()
        for dag_id, family in TRAINING_DAGS:
            run = local_stack.run_dag(dag_id, airflow_env)
            if get_family(family).naming == "per_organization":
                forecasts = sum(1 for _ in registry.models_with_prefix(client))
                detail = f"{forecasts} per-organization forecast models registered"
                # told here, as it stays open: some organizations' best forecast is below the floor
                from neuracrm_mlops.store.alerts import list_alerts

                for alert in list_alerts(engine, open_only=True):
                    if alert.kind == "below_floor" and get_family(family).owns(alert.model_name or ""):
                        detail += f"; warning alert #{alert.id} (below_floor): {alert.title}"
            else:
                detail = _version_line(client, family)
            say_wrapped(say, f"{dag_id}: {run.state} in {run.seconds:.0f} s: {detail}", first="      ")

        run = local_stack.run_dag(ROLLOUT_DAG, airflow_env)
        v1 = rollout.model_state("lead_scoring")["champion"]
        if v1 is None:
            raise NeuraCRMError(
                "the first lead model did not pass its gates, so there is no champion to roll out from "
                f"(see {run.log}); the demo needs more data: try --orgs 50 --months 48"
            )
        step(f"5/9 {ROLLOUT_DAG} ({run.seconds:.0f} s): lead_scoring v{v1}, the first version, is champion")

        port = 3000 if local_stack.port_is_free(3000) else local_stack.free_port()
        service = local_stack.start_prediction_service(port)
        url = f"http://127.0.0.1:{port}"
        try:
            story = _canary_and_rollback(engine, client, airflow_env, url, v1, step, say)
        finally:
            service.stop()
        step(f"prediction service stopped (its log: {service.log})")

        report = crm_status(engine)
        say("")
        say("Where to look next:")
        say("  make ui     starts the Airflow UI on http://127.0.0.1:8080 (the DAG runs, and the model")
        say("              health page at /neuracrm/health) and the MLflow UI on http://127.0.0.1:5000")
        say("  make stop   ends them")
        say("  Great Expectations reports: expectations/uncommitted/data_docs/local_site/index.html")
        say(f"  logs of every DAG run and process: {settings.home / 'logs'}")
        say("  .venv/bin/neuracrm-mlops status | alerts | --help")
        return DemoResult(seeded, example, first, second, report, story)


def _import_example(engine: sa.Engine, say: Say) -> tuple[ImportSummary, ImportSummary, Path]:
    settings = get_settings()
    with engine.begin() as conn:
        org, _ = create_organization(conn, IMPORT_ORG_NAME)
    example = write_example_leads_file(settings.home / "examples" / "leads_export.csv")
    first = import_file(example, "leads", org.id, engine=engine)
    second = import_file(example, "leads", org.id, engine=engine)
    return first, second, example


def _canary_and_rollback(
    engine: sa.Engine,
    client: Any,
    airflow_env: dict[str, str],
    url: str,
    v1: str,
    step: Say,
    say: Say,
) -> dict[str, Any]:
    from neuracrm_mlops.store.alerts import list_alerts, render_text
    from neuracrm_mlops.store.ledger import latest_entries

    api_key = first_api_key(engine)
    leads = demo_leads(engine)  # the traffic: leads from the data the models were trained on
    step(f"6/9 prediction service up at {url} (bentoml serve), {LEADS_PER_REQUEST} leads a request")
    v2 = _retrain(say, "the nightly retrain")
    with DemoTraffic(url, api_key, engine, leads=leads) as traffic:
        run = local_stack.run_dag(ROLLOUT_DAG, airflow_env)
    traffic.check()
    champion = rollout.model_state("lead_scoring")["champion"]
    say(
        f"      {ROLLOUT_DAG} ({run.seconds:.0f} s) while {sum(traffic.statuses.values())} requests were "
        f"answered (all 200): v{v2} went "
        + " -> ".join(f"{w:.0%}" for w in get_settings().rollout_steps)
        + f", judged on live outcomes at each step; champion now v{champion}"
    )
    if champion != v2:
        raise NeuraCRMError(f"the canary of v{v2} did not reach champion (champion is v{champion})")

    step("7/9 the next retrain is worse in the field (simulated: 55% of its predictions turn out right)")
    v3 = _retrain(say, "another retrain")
    with DemoTraffic(url, api_key, engine, degrade=(v3,), leads=leads) as traffic:
        run = local_stack.run_dag(ROLLOUT_DAG, airflow_env)
    traffic.check()
    state = rollout.model_state("lead_scoring")
    rejected = client.get_model_version("lead_scoring", v3)
    say(
        f"      {ROLLOUT_DAG} ({run.seconds:.0f} s): v{v3} {rejected.tags.get('status')} at the first step, "
        f"weight {state['canary_weight']:.0%}; champion still v{state['champion']}"
    )
    say_wrapped(say, rejected.tags.get("reason", ""), first="      reason: ")
    if rejected.tags.get("status") != "rejected" or state["champion"] != v2:
        raise NeuraCRMError(f"expected v{v3}'s canary to fail with v{v2} still champion; got {state}")

    step(f"8/9 now the champion v{v2} degrades in the field (its live outcomes: 55% right)")
    # the traffic goes on while the monitor runs, as it would in production: the monitor judges the
    # last window of live outcomes, which must not have gone quiet by the time its task starts
    with DemoTraffic(url, api_key, engine, degrade=(v2,), leads=leads) as traffic:
        _wait_until_below_floor(engine, v2, traffic, say)
        run = local_stack.run_dag("monitor_models", airflow_env)
    traffic.check()
    champion = rollout.model_state("lead_scoring")["champion"]
    retrained = run.ran("retrain_lead_scoring")
    alerts = [
        a
        for a in list_alerts(engine, open_only=True)
        if a.kind == "accuracy_below_floor" and a.model_version == v2
    ]
    if alerts:
        # the monitor's own measurement, as its alert states it: one figure, its count and its window
        say_wrapped(say, f"monitor_models measured v{v2}'s {alerts[0].message}", first="      ")
    say(
        f"      monitor_models ({run.seconds:.0f} s): champion is now v{champion}; "
        + (f"retraining requested (asset {RETRAIN_ASSET})" if retrained else "no retraining was requested")
    )
    served = _served_version(url, api_key, leads)
    say(f"      the prediction service answers with v{served} (it polls the registry every second)")
    if champion != v1 or served != v1 or not retrained:
        said = [a.action_taken for a in list_alerts(engine, open_only=True) if a.model_version == v2]
        raise NeuraCRMError(
            f"expected a rollback to v{v1} and a retrain; champion v{champion}, served v{served}, "
            f"retraining requested: {retrained}; the monitor's alerts on v{v2}: {said or 'none'}"
        )
    if not alerts:
        raise NeuraCRMError("the rollback raised no accuracy_below_floor alert")
    say("")
    say("      The alert on-call received (also sent to NEURACRM_ALERT_WEBHOOK_URL when set):")
    for line in render_text(alerts[0]).splitlines():
        say_wrapped(say, line, first="      | ", rest="      |     ")
    say("")
    still_open = list_alerts(engine, open_only=True)
    say(
        f"      open alerts now ({len(still_open)}; `neuracrm-mlops alerts --open`): what the story told, "
        "each about what was done; conditions of versions that no longer serve are resolved"
    )
    for alert in still_open:
        say_wrapped(
            say,
            f"#{alert.id} {alert.kind} ({alert.severity}) {alert.model_name} v{alert.model_version}: "
            f"{alert.title}",
            first="        - ",
        )
    say("")
    entries = list(reversed(latest_entries(engine, model_name="lead_scoring", limit=50)))
    step("9/9 the promotion ledger of lead_scoring (oldest first; `neuracrm-mlops status` shows it too):")
    for entry in entries:
        if entry.action == "hold":
            continue
        move = f"v{entry.from_version or '-'} -> v{entry.to_version or '-'}"
        weight = f" at {entry.weight:.0%}" if entry.action == "canary" and entry.weight is not None else ""
        actor = entry.actor.split("/")[0]  # dag:<dag_id>/<run_id>: the run id is in the ledger
        head = f"      {entry.action:<9} {move:<12}{weight:<8} {actor:<22} "
        say_wrapped(say, entry.reason, first=head, width=max(WRAP_WIDTH, len(head) + 40))
    return {
        "v1": v1,
        "v2": v2,
        "v3": v3,
        "alert_id": alerts[0].id,
        "ledger": [e.action for e in entries],
        "open_alerts": [(a.kind, a.model_version) for a in still_open],
    }


def _retrain(say: Say, what: str) -> str:
    """A new lead model trained on the CRM data now (as the nightly DAG would), as challenger."""
    from neuracrm_mlops.training.train import Lineage, train_lead_scoring

    outcome = train_lead_scoring(Lineage.for_cli(f"lead_scoring demo {what}"))
    if outcome.status != "challenger" or not outcome.version:
        raise NeuraCRMError(f"the retrained lead model was not registered as challenger: {outcome.reason}")
    say(f"      {what} registered lead_scoring v{outcome.version} as challenger")
    return outcome.version


def first_api_key(engine: sa.Engine) -> str:
    """The seeded API key of the first organization with AI switched on (the seed switches some off,
    and those are answered by the fallback scorer: no canary to watch)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Organization.id, Organization.feature_flags)).all()
    ai_on = {row.id for row in rows if ai_enabled(row.feature_flags)}
    with (get_settings().home / "api_keys.csv").open() as handle:
        for row in csv.DictReader(handle):
            if int(row["organization_id"]) in ai_on:
                return str(row["api_key"])
    raise NeuraCRMError("the seed wrote no API key of an organization with AI switched on")


def _served_version(url: str, api_key: str, leads: list[dict[str, Any]]) -> str:
    response = httpx.post(
        f"{url}/score",
        json={"lead": _demo_lead(random.Random(0), leads)},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["results"][0]["model"]["version"])
