"""``neuracrm-mlops demo``: the platform's story so far, on the embedded defaults (no services)."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.db.engine import dispose_engines, get_engine, redact_url
from neuracrm_mlops.db.migrate import upgrade
from neuracrm_mlops.db.schema import Organization
from neuracrm_mlops.errors import NeuraCRMError
from neuracrm_mlops.ingest import ImportSummary, import_file
from neuracrm_mlops.orgs import create_organization
from neuracrm_mlops.seeding import SeedSummary, seed_database
from neuracrm_mlops.status import CRMStatus, crm_status
from neuracrm_mlops.synthetic import generate_crm

Say = Callable[[str], None]

DEMO_ORGS = 50
DEMO_MONTHS = 48
DEMO_SEED = 7
IMPORT_ORG_NAME = "Demo Imports Inc"


@dataclass
class DemoResult:
    seed: SeedSummary
    example_file: Path
    first_import: ImportSummary
    second_import: ImportSummary
    status: CRMStatus
    trained: list[dict[str, Any]]


def _reset_embedded_store(say: Say) -> None:
    """Start from empty stores: delete the embedded SQLite files (CRM and MLflow) and MLflow artifacts;
    a configured (production) database is never deleted: the demo refuses one that has data."""
    settings = get_settings()
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


def run_demo(say: Say) -> DemoResult:
    settings = get_settings()
    say(f"data dir {settings.home}")
    _reset_embedded_store(say)
    engine = get_engine()
    before, after = upgrade(engine)
    say(f"1/5 schema migrated ({before or 'empty'} -> {after}) at {redact_url(settings.db_url)}")

    seeded = seed_database(
        DEMO_ORGS,
        DEMO_MONTHS,
        DEMO_SEED,
        api_keys_file=settings.home / "api_keys.csv",
        engine=engine,
        step=lambda message: say(f"    {message}"),
    )
    say(
        f"2/5 seeded {seeded.organizations} organizations: {seeded.leads:,} leads, "
        f"{seeded.monthly_sales:,} monthly sales rows, {seeded.interactions:,} interactions "
        f"in {seeded.seconds:.1f} s"
    )

    with engine.begin() as conn:
        org, _ = create_organization(conn, IMPORT_ORG_NAME)
    example = write_example_leads_file(settings.home / "examples" / "leads_export.csv")
    first = import_file(example, "leads", org.id, engine=engine)
    say(
        f"3/5 imported {example.name} for {org.name!r}: {first.imported} imported, "
        f"{first.quarantined} quarantined (custom column 'account_owner' kept in attributes)"
    )
    for note in first.quarantine_notes:
        say(f"    quarantined {note.location}: {note.reason}")
    second = import_file(example, "leads", org.id, engine=engine)
    say(
        f"    the same file again: {second.imported} imported, {second.updated} updated, "
        f"{second.unchanged} unchanged (idempotent)"
    )

    trained = validate_and_train(say)

    report = crm_status(engine)
    counts = ", ".join(f"{name} {count:,}" for name, count in report.table_counts.items() if count)
    say(f"5/5 store now holds: {counts}")
    say(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")
    say("Great Expectations reports: expectations/uncommitted/data_docs/local_site/index.html")
    return DemoResult(seeded, example, first, second, report, trained)


def validate_and_train(say: Say) -> list[dict[str, Any]]:
    """Step 4: each family's data through its GX suite, then train, gate and register in MLflow."""
    from neuracrm_mlops.forecast_training import train_forecasts_for
    from neuracrm_mlops.pipelines import FAMILY_DATASETS, train_family, validate_for_training
    from neuracrm_mlops.training import Lineage

    say("4/5 validating with Great Expectations, then training and registering in MLflow")
    outcomes = []
    for family, dataset in FAMILY_DATASETS.items():
        validation = validate_for_training(dataset, run_id="demo")
        say(f"    {dataset}: {validation['row_count']:,} rows valid; report {validation['data_docs_path']}")
        lineage = Lineage(run_key=Lineage.for_cli(family).run_key, dag_run_id="demo", validation=validation)
        if family == "sales_forecast":
            outcome = train_forecasts_for(
                None,
                lineage,
                progress=lambda done, total: say(f"    forecasts: {done}/{total} organizations"),
            ).as_dict()
            counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome["status_counts"].items()))
            say(f"    sales_forecast: one model per organization: {counts}")
        else:
            outcome = train_family(family, run_key=lineage.run_key, dag_run_id="demo", validation=validation)
            accuracy = outcome["metrics"].get("accuracy", float("nan"))
            say(
                f"    {family}: version {outcome['version']} ({outcome['semver']}) {outcome['status']}, "
                f"holdout accuracy {accuracy:.3f}: {outcome['reason']}"
            )
        outcomes.append(outcome)
    return outcomes
