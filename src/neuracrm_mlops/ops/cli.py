"""``neuracrm-mlops``: the one command-line entry point. Each command calls the library functions the
DAG tasks call; progress goes to stderr, results to stdout, failures to stderr with a non-zero exit.

Exit codes: 0 success, 1 failure (the message says what and where), 2 usage error,
3 import finished but rows were quarantined or kept with field errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import sqlalchemy as sa
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from neuracrm_mlops import __version__
from neuracrm_mlops.errors import DatabaseUnavailableError, NeuraCRMError
from neuracrm_mlops.families import FAMILIES, TrainRequest, families_with, get_family

if TYPE_CHECKING:
    from neuracrm_mlops.store.ingest import ImportProgress

EXIT_QUARANTINED = 3
F = TypeVar("F", bound=Callable[..., Any])

# Markup is off by default: printed text holds user values (file and column names, organization names,
# reasons) that must never be read as rich markup ("[/x]" in a CSV header crashed `import`). A message
# that uses markup passes markup=True and escapes every value it interpolates (rich.markup.escape).
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def _quiet_libraries() -> None:
    """Airflow, MLflow and Great Expectations log loudly at INFO; keep CLI output readable.

    The log level (NEURACRM_LOG_LEVEL) is needed before anything else, so a bad value does not fail
    the command: it falls back to WARNING with a one-line note on stderr."""
    from neuracrm_mlops.config import log_level_from_environment

    level, problem = log_level_from_environment()
    if problem:
        err.print(f"warning: {_printable(problem)}", markup=False)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in ("alembic", "great_expectations", "mlflow", "airflow", "cmdstanpy", "prophet", "bentoml"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _printable(text: str) -> str:
    """``text`` with the bytes of a file name that is not UTF-8 (which Python holds as lone surrogates)
    written out as ``\\xff``: printed as they are, they fail the write with a UnicodeEncodeError."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class _Group(click.Group):
    """Turns expected failures into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NeuraCRMError as exc:
            err.print(f"[bold red]error:[/] {escape(_printable(str(exc)))}", markup=True)
            sys.exit(exc.exit_code)
        except sa.exc.OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            message = escape(_printable(str(DatabaseUnavailableError(reason))))
            err.print(f"[bold red]error:[/] database: {message}", markup=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="neuracrm-mlops")
def main() -> None:
    """NeuraCRM's batch MLOps platform: data, validation, training, rollout and monitoring.

    Configuration comes from the environment (NEURACRM_HOME, NEURACRM_DB_URL, ...); see the README.
    """
    _quiet_libraries()


# --- db -------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Create or migrate the database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to migrate to.")
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema of NEURACRM_DB_URL (SQLite by default) to the latest revision."""
    from neuracrm_mlops.store.db.engine import get_engine, redact_url
    from neuracrm_mlops.store.db.migrate import upgrade

    engine = get_engine()
    before, after = upgrade(engine, revision)
    where = redact_url(engine.url.render_as_string(False))
    if before == after:
        out.print(f"schema of {where} is up to date (revision {after})")
    else:
        out.print(f"migrated {where} from {before or 'empty'} to revision {after}")


# --- organizations ------------------------------------------------------------------------------


@main.group()
def org() -> None:
    """Organizations (tenants) and their API keys."""


@org.command("create")
@click.argument("name")
@click.option(
    "--ai/--no-ai", "ai_enabled", default=True, show_default=True, help="Feature flag: AI models on."
)
def org_create(name: str, ai_enabled: bool) -> None:
    """Create organization NAME and print its API key (shown once; only its hash is stored)."""
    from neuracrm_mlops.store.db.engine import get_engine
    from neuracrm_mlops.store.db.migrate import require_current_schema
    from neuracrm_mlops.store.orgs import create_organization

    engine = get_engine()
    require_current_schema(engine)
    with engine.begin() as conn:
        ref, api_key = create_organization(conn, name, ai_enabled=ai_enabled)
    out.print(f"created organization {ref.id} {ref.name!r}")
    out.print(f"API key (store it now, it is not shown again): {api_key}")


@org.command("list")
def org_list() -> None:
    """List organizations with their feature flags."""
    from neuracrm_mlops.store.db.engine import get_engine
    from neuracrm_mlops.store.db.migrate import require_current_schema
    from neuracrm_mlops.store.db.schema import Organization

    engine = get_engine()
    require_current_schema(engine)
    table = Table("id", "name", "feature flags")
    with engine.connect() as conn:
        for row in conn.execute(sa.select(Organization).order_by(Organization.id)):
            flags = ", ".join(f"{k}={v}" for k, v in sorted(row.feature_flags.items()))
            table.add_row(str(row.id), row.name, flags)
    out.print(table)


# --- seed -----------------------------------------------------------------------------------------


@main.command()
@click.option("--orgs", "n_orgs", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--months", type=click.IntRange(1, 240), default=48, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--leads-per-org", type=click.IntRange(0, 100_000), default=40, show_default=True)
@click.option(
    "--keys-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the seeded API keys (default: NEURACRM_HOME/api_keys.csv).",
)
def seed(n_orgs: int, months: int, seed: int, leads_per_org: int, keys_file: Path | None) -> None:
    """Fill an empty store with a deterministic synthetic CRM (docs/synthetic-data.md)."""
    from neuracrm_mlops.config import get_settings
    from neuracrm_mlops.store.seeding import seed_database

    keys_file = keys_file or get_settings().home / "api_keys.csv"
    summary = seed_database(
        n_orgs,
        months,
        seed,
        leads_per_org=leads_per_org,
        api_keys_file=keys_file,
        step=lambda message: err.print(f"[dim]… {escape(message)}[/]", markup=True),
    )
    out.print(
        f"seeded {summary.organizations:,} organizations, {summary.leads:,} leads, "
        f"{summary.monthly_sales:,} monthly sales rows, {summary.interactions:,} interactions "
        f"in {summary.seconds:.1f} s"
    )
    out.print(f"API keys for the seeded organizations: {summary.api_keys_file}")


# --- import -------------------------------------------------------------------------------------


EXIT_NOT_ANNOUNCED = 5  # `import`: the rows are committed, the Airflow asset event was not sent


@main.command("import")
@click.argument("dataset", type=click.Choice(["leads", "sales", "interactions"]))
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--org", "organization", required=True, help="Organization id or exact name.")
@click.option(
    "--announce",
    is_flag=True,
    help="Send the Airflow asset event even when no row changed (to retry one that failed).",
)
def import_command(dataset: str, file: Path, organization: str, announce: bool) -> None:
    """Import a CSV or Parquet FILE of DATASET for one organization (columns: see the README).

    Idempotent: rows upsert on their natural key. A row whose key or a required column cannot be
    parsed is quarantined with the reason. An optional column that cannot be parsed is stored empty
    and its raw value kept in the row's attributes["_field_errors"]; the row is kept. In either case
    the command reports the counts and exits with status 3.

    When rows were imported or updated and an Airflow is configured (NEURACRM_AIRFLOW_API_URL and a
    token or user), the dataset's asset event (neuracrm://crm/leads, .../monthly_sales,
    .../interactions) is sent, which starts its training DAG. The rows are committed first: if the
    event cannot be sent, the command says why and how to resend it, and exits with status 5 (3 wins
    when rows were also quarantined).
    """
    import shlex

    from neuracrm_mlops.config import get_settings
    from neuracrm_mlops.ops.airflow_events import announce_after_import
    from neuracrm_mlops.store.ingest import FIELD_ERRORS_KEY, import_file

    with _import_progress(file) as on_progress:
        summary = import_file(file, dataset, organization, progress=on_progress)
    out.print(
        f"{summary.file}: {summary.rows_read:,} rows read for organization {summary.organization_id} "
        f"({summary.organization_name}): {summary.imported:,} imported, {summary.updated:,} updated, "
        f"{summary.unchanged:,} unchanged, {summary.quarantined:,} quarantined, "
        f"{summary.with_field_errors:,} with field errors "
        f"({summary.seconds:.1f} s, batch {summary.batch_id})"
    )
    if summary.field_errors:
        out.print(
            f"field errors (rows kept, the field stored empty, its raw value in "
            f'attributes["{FIELD_ERRORS_KEY}"]):',
            markup=False,
        )
        for count in summary.field_errors.values():
            out.print(
                f"  {count.column}: {count.rows:,} row{'s' if count.rows != 1 else ''}, "
                f"first at {count.first_location}: {count.first_error}",
                markup=False,
            )
    if summary.quarantined:
        for note in summary.quarantine_notes:
            err.print(f"quarantined {summary.file}: {note.location}: {note.reason}", markup=False)
        if summary.quarantined > len(summary.quarantine_notes):
            err.print(
                f"... and {summary.quarantined - len(summary.quarantine_notes)} more in the quarantine table"
            )
    retry = shlex.join(["neuracrm-mlops", "import", dataset, str(file), "--org", organization, "--announce"])
    announcement = announce_after_import(summary, get_settings(), retry_command=retry, force=announce)
    (out if announcement.status == "emitted" else err).print(announcement.message, markup=False)
    if summary.quarantined or summary.with_field_errors:
        sys.exit(EXIT_QUARANTINED)
    if announcement.failed:
        sys.exit(EXIT_NOT_ANNOUNCED)


@contextlib.contextmanager
def _import_progress(file: Path) -> Iterator[Callable[[ImportProgress], None]]:
    """Progress of an import on stderr: a rich progress bar on a terminal; otherwise (piped, in a log)
    a line at most every NEURACRM_IMPORT_PROGRESS_SECONDS, e.g. "leads.csv: 40,000 of ~120,000 rows
    read (12 s)", so that a long import is not silent until it ends."""
    from neuracrm_mlops.config import get_settings

    if err.is_terminal:
        with Progress(
            # markup (the consoles have it off): the file name in the description is escaped
            TextColumn("[progress.description]{task.description}", markup=True),
            BarColumn(),
            MofNCompleteColumn() if file.suffix.lower() in (".parquet", ".pq") else DownloadColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task(f"importing {escape(_printable(file.name))}", total=None)

            def update_bar(at: ImportProgress) -> None:
                progress.update(task, completed=at.done, total=at.total)

            yield update_bar
        return

    every = get_settings().import_progress_seconds
    started = time.monotonic()
    last_line = started

    def print_line(at: ImportProgress) -> None:
        nonlocal last_line
        now = time.monotonic()
        if now - last_line < every or (at.total is not None and at.done >= at.total):
            return  # the summary line follows the last chunk
        last_line = now
        expected = at.expected_rows
        of = "" if expected is None else f" of {'~' if at.unit == 'bytes' else ''}{expected:,}"
        err.print(f"{_printable(file.name)}: {at.rows_read:,}{of} rows read ({now - started:.0f} s)")

    yield print_line


# --- validate and train ---------------------------------------------------------------------


@main.command()
@click.argument("dataset", type=click.Choice(["leads", "sales", "interactions"]))
@click.option("--org", "organization", default=None, help="Organization id or name (default: all).")
def validate(dataset: str, organization: str | None) -> None:
    """Run the Great Expectations suite of DATASET; exit 1 when a critical expectation fails.

    Failed expectations (critical or warning) also write an alert; the HTML report path is printed.
    """
    from neuracrm_mlops.quality.validation import validate_dataset
    from neuracrm_mlops.store.db.engine import get_engine
    from neuracrm_mlops.store.orgs import resolve_organization

    engine = get_engine()
    org_id = None
    if organization is not None:
        with engine.connect() as conn:
            org_id = resolve_organization(conn, organization).id
    report = validate_dataset(dataset, org_id, engine=engine, run_id="cli")
    out.print(report.summary(), markup=False)
    for outcome in report.outcomes:
        if not outcome.success:
            out.print(f"  FAILED [{outcome.severity}] {outcome.expectation}", markup=False)
    out.print(f"report: {report.data_docs_path}", markup=False)
    if not report.success:
        sys.exit(1)


@main.command()
@click.argument("family", type=click.Choice(sorted(FAMILIES)))
@click.option(
    "--org",
    "organization",
    default=None,
    help="sales_forecast only (one model per organization): one organization id or name. "
    "lead_scoring and sentiment train one model across all organizations.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="sales_forecast only: processes fitting chunks of organizations (default: one per core).",
)
def train(family: str, organization: str | None, workers: int | None) -> None:
    """Validate the family's data, then train, gate and register a new version in MLflow.

    The same functions the training DAGs run; a failed critical expectation stops before training.
    Forecasts are fitted by WORKERS processes while this one registers each chunk as it is done.
    """
    from neuracrm_mlops.ops.pipelines import train_family
    from neuracrm_mlops.training.train import Lineage

    trained = get_family(family)
    options = trained.cli_train
    if (organization is not None and not options.organization_option) or (
        workers is not None and not options.workers_option
    ):
        per_organization = ", ".join(f.name for f in FAMILIES.values() if f.cli_train.organization_option)
        raise click.UsageError(
            f"{family} trains one model across all organizations (their floors may differ: "
            f"NEURACRM_ACCURACY_FLOORS); --org and --workers apply to {per_organization}, "
            "one model per organization"
        )
    err.print(f"[dim]… validating {trained.dataset}[/]", markup=True)
    validation = trained.validate("cli")
    lineage = Lineage(run_key=Lineage.for_cli(family).run_key, dag_run_id="cli", validation=validation)
    err.print(f"[dim]… training {family}[/]", markup=True)
    unit = options.progress_unit
    if unit is not None:  # per-organization families: a progress bar over the organizations
        with Progress(
            TextColumn("[progress.description]{task.description}", markup=True),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as progress:
            task = progress.add_task(unit, total=None)
            started = time.monotonic()

            def report(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)
                if not err.is_terminal:  # logs get a line per chunk instead of the bar
                    err.print(f"… {done}/{total} {unit} ({time.monotonic() - started:.0f} s)")

            outcome = trained.train(
                TrainRequest(
                    lineage,
                    organization=organization,
                    workers=workers or os.cpu_count() or 1,
                    progress=report,
                )
            )
    else:
        outcome = train_family(family, run_key=lineage.run_key, dag_run_id="cli", validation=validation)
    out.print(_describe_outcome(outcome), markup=False)


def _describe_outcome(outcome: dict[str, Any]) -> str:
    if "scenarios" in outcome:  # voice scenarios: one line per scenario file
        return "\n".join(
            f"{s['scenario']}: v{s['version']} ({s['semver'] or 'no semver'}) "
            + (f"registered as {s['alias']}" if s["status"] == "registered" else "unchanged")
            + f": {s['reason']}"
            for s in outcome["scenarios"]
        )
    if "organizations" in outcome:  # forecasts: one line per status
        counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome["status_counts"].items()))
        n_orgs = len(outcome["organizations"])
        below = sum(
            1 for o in outcome["organizations"] if o.get("below_floor") and o["status"] == "challenger"
        )
        without = sum(1 for o in outcome["organizations"] if o["status"] in ("rejected", "skipped"))
        notes = f"; {below} of the challengers are below the floor (best available)" if below else ""
        if without:
            notes += f"; {without} get no new version (their champion, or the fallback, keeps answering)"
        return (
            f"{outcome['model_name']}: {n_orgs} organizations: {counts} ({outcome['seconds']:.1f} s){notes}"
        )
    version = (
        f"version {outcome['version']} ({outcome['semver']})" if outcome.get("version") else "no version"
    )
    accuracy = outcome.get("metrics", {}).get("accuracy")
    shown = f", holdout accuracy {accuracy:.3f}" if accuracy is not None else ""
    return f"{outcome['model_name']}: {version} {outcome['status']}{shown}: {outcome['reason']}"


# --- status ---------------------------------------------------------------------------------------

# How a field of a listing is shown: "date" (full ISO-8601, never wrapped or cut), "long" (free text:
# folded inside a table cell, never cut), "number" (right-aligned), "text".
_DATE_WIDTH = len("2026-12-05T07:01:02+00:00")


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    kind: str = "text"


def _fits(table: Table) -> bool:
    """Whether ``table`` goes to a terminal wide enough to show every cell on one line."""
    if not out.is_terminal:
        return False
    unbounded = out.options.update_width(1_000_000)  # Measurement.get clamps to the options' width
    return Measurement.get(out, unbounded, table).maximum <= out.width


# a long text column of a table is never narrower than this, nor than its longest word
_LONG_MIN_WIDTH = 24


def _records_table(
    title: str,
    fields: Sequence[_Field],
    rows: Sequence[Sequence[str]],
    widths: dict[int, int] | None = None,
) -> Table:
    table = Table(title=title)
    for i, field in enumerate(fields):
        if field.kind == "date":
            table.add_column(field.name, no_wrap=True, min_width=_DATE_WIDTH)
        elif field.kind == "long":
            table.add_column(field.name, overflow="fold", width=(widths or {}).get(i))
        else:
            table.add_column(field.name, no_wrap=True, justify="right" if field.kind == "number" else "left")
    for row in rows:
        table.add_row(*row)
    return table


def _show_records(
    title: str, fields: Sequence[_Field], rows: Sequence[Sequence[str | None]], *, empty: str
) -> None:
    """A listing: a table on a terminal wide enough for it; otherwise (piped, in a file, a narrow
    terminal) one record per block, one ``field: value`` line each, values never wrapped nor cut:

        ledger (newest first):
        - when: 2026-12-05T07:01:02+00:00
          model: lead_scoring
          reason: ...

    In a table only the long texts (reasons, messages) wrap, at word boundaries: the table is shown
    when it fits with each of them at least as wide as the longest word of any (and _LONG_MIN_WIDTH).
    A value None leaves its line out of the block (an empty cell in the table)."""
    if not rows:
        out.print(empty, markup=False)
        if not out.is_terminal:
            out.print("", markup=False)
        return
    cells = [["" if value is None else _printable(value) for value in row] for row in rows]
    long_columns = [i for i, field in enumerate(fields) if field.kind == "long"]
    words = [cell_len(word) for row in cells for i in long_columns for word in row[i].split()]
    narrowest = max([_LONG_MIN_WIDTH, *words])
    # the table as it is shown when every long text is folded to `narrowest` (or its own width)
    probe = {i: min(narrowest, max(1, *(cell_len(row[i]) for row in cells))) for i in long_columns}
    if _fits(_records_table(title, fields, cells, probe)):
        out.print(_records_table(title, fields, cells))
        return
    out.print(f"{title}:", markup=False)
    for row in rows:
        lines = [(f.name, value) for f, value in zip(fields, row, strict=True) if value is not None]
        for i, (name, value) in enumerate(lines):
            text = _printable(value).replace("\n", "\n    ")
            out.print(f"{'- ' if i == 0 else '  '}{name}: {text}", markup=False, soft_wrap=True)
    out.print("", markup=False)


@main.command()
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON document on stdout (keys: see the README, 'Status for scripts') instead of the text.",
)
def status(as_json: bool) -> None:
    """Row counts, organizations, served models, the promotion ledger, what users get, open alerts.

    Piped or on a narrow terminal, listings print one record per block with full reasons and ISO-8601
    dates instead of tables; --json prints one document for scripts."""
    from neuracrm_mlops.ops.status import crm_status, open_alert_count, status_document
    from neuracrm_mlops.store.db.engine import get_engine, redact_url
    from neuracrm_mlops.store.db.migrate import current_revision, require_current_schema

    engine = get_engine()
    require_current_schema(engine)
    where = redact_url(engine.url.render_as_string(False))
    revision = current_revision(engine)
    if as_json:
        document = status_document(engine, database=where, schema_revision=revision)
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    report = crm_status(engine)
    out.print(f"database {where} (schema revision {revision})", markup=False)
    totals = Table("table", "rows", title="row counts")
    for name, count in report.table_counts.items():
        totals.add_row(name, f"{count:,}")
    if _fits(totals):
        out.print(totals)
    else:  # one record: a line per table
        out.print("row counts:", markup=False)
        for name, count in report.table_counts.items():
            out.print(f"  {name}: {count:,}", markup=False)
        out.print("", markup=False)
    _show_records(
        f"organizations ({report.organization_count:,}; first {len(report.organizations)} shown)",
        [
            _Field("id", "number"),
            _Field("organization"),
            _Field("ai"),
            _Field("leads", "number"),
            _Field("sales months", "number"),
            _Field("interactions", "number"),
            _Field("quarantined", "number"),
        ],
        [
            [
                str(row.id),
                row.name,
                "on" if row.ai_enabled else "off",
                f"{row.leads:,}",
                f"{row.sales_months:,}",
                f"{row.interactions:,}",
                f"{row.quarantined:,}",
            ]
            for row in report.organizations
        ],
        empty="organizations: none (`neuracrm-mlops org create NAME` or `seed`)",
    )
    _print_models_and_ledger(engine)
    _print_served_answers(engine)
    _print_voice_scenarios(engine)
    open_alerts = open_alert_count(engine)
    out.print(
        f"open alerts: {open_alerts:,}" + (" (`neuracrm-mlops alerts --open`)" if open_alerts else ""),
        markup=False,
    )


def _print_voice_scenarios(engine: sa.Engine) -> None:
    """Voice scenarios: champion, challenger at its canary weight, previous, the champion's call
    success over the monitor window and open alerts; one line when there are none or MLflow is down."""
    from neuracrm_mlops.ops.status import ScenarioVersionRef, voice_scenarios

    block = voice_scenarios(engine)
    if not block.readable:
        out.print(f"voice scenarios: could not be read from MLflow ({block.error})", markup=False)
        return

    def shown(ref: ScenarioVersionRef | None) -> str:
        return "-" if ref is None else f"v{ref.version}" + (f" ({ref.semver})" if ref.semver else "")

    _show_records(
        f"voice scenarios (champion's calls over {block.window_hours:g}h)",
        [
            _Field("scenario"),
            _Field("champion"),
            _Field("challenger"),
            _Field("canary weight"),
            _Field("previous"),
            _Field("calls", "number"),
            _Field("success"),
            _Field("open alerts", "number"),
        ],
        [
            [
                s.scenario,
                shown(s.champion),
                shown(s.challenger),
                f"{s.canary_weight:.0%}" if s.challenger else "-",
                shown(s.previous),
                f"{s.calls:,}",
                f"{s.success_rate:.1%}" if s.success_rate is not None else "-",
                f"{s.open_alerts:,}",
            ]
            for s in block.scenarios
        ],
        empty="voice scenarios: none (`neuracrm-mlops scenario register scenarios/<name>.yaml`)",
    )


def _print_served_answers(engine: sa.Engine, *, listed: int = 20) -> None:
    """Who answers each family (and each organization's forecasts): a model or the fallback, and why."""
    from collections import Counter

    from neuracrm_mlops.ops.status import FALLBACK_OF, served_answers

    answers = served_answers(engine)
    rows: list[list[str | None]] = []
    # per-organization families (forecasts): one row per answer and reason, counting organizations
    per_organization = [f.name for f in families_with(naming="per_organization")]
    forecasts = [a for a in answers if a.family in per_organization]
    for answer in answers:
        if answer.family in per_organization:
            continue
        who = f"model v{answer.version}" if answer.answered_by == "model" else FALLBACK_OF[answer.family]
        rows.append([answer.family, who, answer.why, "all"])
    for family in per_organization:
        mine = [a for a in forecasts if a.family == family]
        for (answered_by, why), count in sorted(Counter((a.answered_by, a.short_why) for a in mine).items()):
            who = "model" if answered_by == "model" else FALLBACK_OF[family]
            rows.append([family, who, why, f"{count:,} of {len(mine):,}"])
    _show_records(
        "what users get",
        [_Field("family"), _Field("answered by"), _Field("why", "long"), _Field("organizations")],
        rows,
        empty="what users get: nothing served",
    )
    attention = [a for a in forecasts if a.answered_by == "fallback" or a.why.startswith("below floor")]
    for answer in attention[:listed]:
        out.print(
            f"  org {answer.organization_id}: {answer.answered_by}: {answer.why}",
            markup=False,
            soft_wrap=True,
        )
    if len(attention) > listed:
        out.print(f"  ... and {len(attention) - listed:,} more organizations", markup=False)


def _print_models_and_ledger(engine: sa.Engine) -> None:
    """Served models (aliases, canary weight) and the latest promotion ledger entries."""
    from neuracrm_mlops.ops.status import iso, ledger_state, served_models
    from neuracrm_mlops.store.ledger import latest_entries

    _show_records(
        "served models",
        [
            _Field("model"),
            _Field("champion"),
            _Field("challenger"),
            _Field("canary weight"),
            _Field("previous"),
        ],
        [
            [
                m.name,
                m.champion or "-",
                m.challenger or "-",
                f"{m.canary_weight:.0%}" if m.registered else "-",
                m.previous or "-",
            ]
            for m in served_models(SERVED_MODELS)
        ],
        empty="served models: none",
    )
    entries = latest_entries(engine, limit=10)
    # a move that is not done (pending: being made; reverted: undone) says so; done ones stay quiet
    show_state = any(ledger_state(e) != "done" for e in entries)
    fields = [_Field("when", "date"), _Field("model"), _Field("action")]
    fields += [_Field("state")] if show_state else []
    fields += [_Field("from"), _Field("to"), _Field("weight"), _Field("actor"), _Field("reason", "long")]
    rows: list[list[str | None]] = []
    for e in entries:
        state = ledger_state(e)
        row: list[str | None] = [iso(e.created_at), e.model_name, e.action]
        row += [None if state == "done" else state] if show_state else []
        row += [
            e.from_version or "-",
            e.to_version or "-",
            f"{e.weight:.0%}" if e.weight is not None else "-",
            e.actor,
            e.reason,
        ]
        rows.append(row)
    _show_records("ledger (newest first)", fields, rows, empty="promotion ledger: empty")


# --- rollout, rollback, monitoring, alerts ---------------------------------------------------------

# one registered model for every organization (a family's name); ``ALL_FAMILIES`` adds the
# per-organization ones (forecasts), named on the command line by family plus ``--org``
SERVED_MODELS = tuple(f.name for f in families_with(naming="shared"))
ALL_FAMILIES = tuple(FAMILIES)


def _print_rollout(result: Any) -> None:
    weight = f"{result.weight:.0%}"
    out.print(
        f"{result.model_name}: {result.action}; champion v{result.champion or '-'}, "
        f"challenger v{result.challenger or '-'} at {weight}: {result.reason}"
    )
    if result.alert_id:
        out.print(f"alert {result.alert_id} raised")


@main.command()
@click.argument("model", type=click.Choice(ALL_FAMILIES))
@click.argument("action", type=click.Choice(["start", "step", "promote", "abort"]))
@click.option("--reason", default=None, help="promote / abort: why (written to the promotion ledger).")
def rollout(model: str, action: str, reason: str | None) -> None:
    """Canary rollout of MODEL's challenger: start (first step's weight), step (judge the current step
    and act on it), promote (challenger becomes champion now), abort (challenger out of traffic).

    sales_forecast rolls out by cohorts of organizations and voice_scenario every scenario with a
    challenger, each on its share of calls (start and step only; one scenario: `scenario rollout NAME`)."""
    from neuracrm_mlops.release import rollout as rollouts
    from neuracrm_mlops.store.ledger import actor_for_cli

    actor = actor_for_cli()
    if get_family(model).rollout_strategy != "traffic_share":
        from neuracrm_mlops.ops.pipelines import judge_canary, start_canary

        if action not in ("start", "step"):
            raise click.UsageError(f"{model} rolls out many registered items at once: use start or step")
        done = start_canary(model, actor=actor) if action == "start" else judge_canary(model, actor=actor)
        weight = f" at {done['weight']:.0%}" if "weight" in done else ""
        out.print(f"{model}: {done['action']}{weight}: {done['reason']}")
        for key in ("promoted", "rejected", "holding"):
            if done.get(key):
                out.print(f"  {key}: organizations {', '.join(map(str, done[key]))}")
        for scenario in done.get("scenarios", []):
            out.print(f"  {scenario['scenario']}: {scenario['action']} at {scenario['weight']:.0%}")
        return
    if action == "start":
        result = rollouts.start_rollout(model, actor=actor)
    elif action == "step":
        result = rollouts.judge_step(model, actor=actor)
    elif action == "promote":
        result = rollouts.promote(model, actor=actor, reason=reason or "promoted by hand from the CLI")
    else:
        result = rollouts.abort(model, actor=actor, reason=reason or "aborted by hand from the CLI")
    _print_rollout(result)


@main.command()
@click.argument("model", type=click.Choice(ALL_FAMILIES))
@click.option("--org", "organization", type=int, default=None, help="sales_forecast: the organization id.")
@click.option("--to", "to_version", default=None, help="Version to restore (default: the previous champion).")
@click.option("--reason", default="rolled back by hand from the CLI", show_default=True)
def rollback(model: str, organization: int | None, to_version: str | None, reason: str) -> None:
    """Put MODEL's previous champion (from the promotion ledger) or --to VERSION back as champion.

    Forecasts are one model per organization: ``rollback sales_forecast --org ID``."""
    from neuracrm_mlops.release import rollout as rollouts
    from neuracrm_mlops.store.ledger import actor_for_cli

    family = get_family(model)
    if family.naming == "per_scenario":
        raise click.UsageError(
            f"{model}: scenarios roll back automatically below the floor (`neuracrm-mlops scenario monitor "
            "NAME`); see `neuracrm-mlops scenario list` for their versions"
        )
    if family.naming == "per_organization":
        if organization is None:
            raise click.UsageError(f"{model} is one model per organization: give --org ID")
        name = family.registered_name(organization)
    elif organization is not None:
        raise click.UsageError(f"{model} is one model for every organization: drop --org")
    else:
        name = family.registered_name()
    _print_rollout(rollouts.rollback(name, actor=actor_for_cli(), reason=reason, to_version=to_version))


@main.command()
@click.argument("model", type=click.Choice(SERVED_MODELS), required=False)
def monitor(model: str | None) -> None:
    """One monitoring pass: live accuracy (rollback below the floor), drift, bias, serving health."""
    from neuracrm_mlops.monitoring.monitor import monitor_model
    from neuracrm_mlops.store.ledger import actor_for_cli

    failed = False
    for name in [model] if model else list(SERVED_MODELS):
        report = monitor_model(name, actor=actor_for_cli())
        shown = f"{report.accuracy:.3f}" if report.accuracy is not None else "n/a"
        out.print(
            f"{name} v{report.champion or '-'}: {report.verdict}, accuracy {shown} "
            f"over {report.outcomes} outcomes: {report.reason}"
        )
        if report.rolled_back_to:
            out.print(f"  rolled back to v{report.rolled_back_to}; retraining needed")
            failed = True
        for warning in report.warnings:
            out.print(f"  warning: {warning}")
    if failed:
        sys.exit(4)


@main.command()
@click.option("--open", "open_only", is_flag=True, help="Only alerts not yet resolved.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def alerts(open_only: bool, limit: int) -> None:
    """Persisted alerts, newest first: severity, status, count, model, first and last seen (ISO-8601),
    the full title and message (what was found: e.g. the accuracy, its window and outcome count) and
    what was done. Piped or on a narrow terminal: one alert per block instead of a table."""
    from neuracrm_mlops.ops.status import iso
    from neuracrm_mlops.store.alerts import list_alerts
    from neuracrm_mlops.store.db.engine import get_engine

    rows = list_alerts(get_engine(), open_only=open_only, limit=limit)
    _show_records(
        "alerts (newest first)",
        [
            _Field("id", "number"),
            _Field("severity"),
            _Field("status"),
            _Field("count", "number"),
            _Field("model"),
            _Field("organization"),
            _Field("created", "date"),
            _Field("last seen", "date"),
            _Field("title", "long"),
            _Field("message", "long"),
            _Field("action taken", "long"),
        ],
        [
            [
                str(a.id),
                a.severity,
                a.status + (f" by {a.acked_by}" if a.status == "acknowledged" and a.acked_by else ""),
                f"{a.occurrences:,}",
                f"{a.model_name or '-'}{' v' + a.model_version if a.model_version else ''}",
                str(a.organization_id) if a.organization_id is not None else None,
                iso(a.first_seen_at),
                iso(a.last_seen_at),
                a.title,
                a.message,
                a.action_taken or "-",
            ]
            for a in rows
        ],
        empty="no alerts open" if open_only else "no alerts",
    )


@main.command()
@click.argument("alert_id", type=int)
def ack(alert_id: int) -> None:
    """Acknowledge alert ALERT_ID (stops its escalation)."""
    from neuracrm_mlops.store.alerts import acknowledge
    from neuracrm_mlops.store.db.engine import get_engine
    from neuracrm_mlops.store.ledger import actor_for_cli

    row = acknowledge(get_engine(), alert_id, by=actor_for_cli())
    out.print(f"alert {row.id} acknowledged by {row.acked_by}: {row.title}")


@main.group()
def predictions() -> None:
    """The prediction log: rows the database refused (dead letters)."""


@predictions.command("replay-dead-letters")
@click.option("--id", "ids", type=int, multiple=True, help="Only this dead letter (repeatable); default all.")
def replay_dead_letters_command(ids: tuple[int, ...]) -> None:
    """Insert dead-lettered prediction rows into `predictions` again, after fixing their cause.

    A row that lands is marked replayed (and never inserted twice); one the database refuses again stays
    with the new reason. Exits 1 when any was refused."""
    from neuracrm_mlops.inference.prediction_log import replay_dead_letters
    from neuracrm_mlops.store.db.engine import get_engine

    outcome = replay_dead_letters(get_engine(), list(ids) or None)
    out.print(f"{len(outcome.landed)} dead letters replayed into predictions: {outcome.landed or 'none'}")
    for letter_id, reason in outcome.refused.items():
        out.print(f"dead letter {letter_id} refused again: {reason}")
    if outcome.refused:
        raise SystemExit(1)


@main.group()
def simulate() -> None:
    """Drive the loop on demand (demo, drills, tests)."""


@simulate.command("outcomes")
@click.option(
    "--model", "models", multiple=True, type=click.Choice(SERVED_MODELS), help="Default: every served model."
)
@click.option(
    "--degrade",
    "degrade",
    default=None,
    help="MODEL or MODEL:VERSION whose predictions the world now disagrees with more often "
    "(default version: the champion).",
)
@click.option("--seed", type=int, default=0, show_default=True)
def simulate_outcomes_command(models: tuple[str, ...], degrade: str | None, seed: int) -> None:
    """Write simulated outcomes for logged predictions that have none (source 'simulated')."""
    from neuracrm_mlops.release.outcomes import simulate_outcomes
    from neuracrm_mlops.store import registry
    from neuracrm_mlops.store.db.engine import get_engine

    degraded: dict[str, str] = {}
    if degrade:
        name, _, version = degrade.partition(":")
        if name not in SERVED_MODELS:
            raise click.BadParameter(
                f"{name!r} is not one of {', '.join(SERVED_MODELS)}", param_hint="--degrade"
            )
        if not version:
            champion = registry.alias_version(registry.configure_mlflow(), name, registry.CHAMPION)
            if champion is None:
                raise click.BadParameter(f"{name} has no champion; name a version", param_hint="--degrade")
            version = str(champion.version)
        degraded[name] = version
    for name in models or SERVED_MODELS:
        summary = simulate_outcomes(
            get_engine(), name, degrade=[degraded[name]] if name in degraded else [], seed=seed
        )
        extra = f" ({summary.degraded} for degraded v{degraded[name]})" if name in degraded else ""
        out.print(f"{name}: {summary.written} simulated outcomes written{extra}")


# --- voice scenarios -------------------------------------------------------------------------------


@main.group()
def scenario() -> None:
    """Voice-agent scenarios (Retell AI): versioned prompts in MLflow's prompt registry.

    A scenario is a file in git (scenarios/<name>.yaml); see docs/voice-scenarios.md."""


@scenario.command("register", short_help="Register a scenario file as a new version (semver, alias).")
@click.argument("file", type=click.Path(path_type=Path))
def scenario_register(file: Path) -> None:
    """Register scenario FILE as a new prompt version when its content changed (semantic version:
    major = variables changed, minor = settings or words changed, patch = wording only), then alias
    it: the first version champion, a later one challenger at canary weight 0. The same content again
    registers nothing. Exits 1, with nothing registered, on an invalid file or an unknown variable."""
    from neuracrm_mlops.store.ledger import actor_for_cli
    from neuracrm_mlops.training.scenarios import register_scenario

    result = register_scenario(file, actor=actor_for_cli())
    if result.status == "unchanged":
        held = ", ".join(result.aliases) or "no alias"
        out.print(
            f"{result.scenario}: unchanged, the latest version is v{result.version} "
            f"({result.semver or 'no semver'}, {held}); nothing registered"
        )
        return
    moved = f"{result.alias}" + (f" (was v{result.replaced})" if result.replaced else "")
    weight = ", canary weight 0" if result.alias == "challenger" else ""
    out.print(
        f"{result.scenario}: registered v{result.version} as {result.semver} ({result.change}: "
        f"{result.reason}); alias {moved} -> v{result.version}{weight}"
    )


@scenario.command("list", short_help="Scenarios with champion, challenger and canary weight.")
def scenario_list() -> None:
    """Every scenario with its champion and challenger (version, semver), the challenger's canary
    weight and the previous champion."""
    from neuracrm_mlops.store import prompt_registry
    from neuracrm_mlops.store.registry import configure_mlflow

    client = configure_mlflow()

    def shown(version: prompt_registry.ScenarioVersion | None) -> str | None:
        if version is None:
            return None
        return f"v{version.version} ({version.semver or 'no semver'})"

    rows: list[list[str | None]] = []
    for name in prompt_registry.list_scenarios(client):
        live = prompt_registry.live_scenario(client, name)
        rows.append(
            [
                name,
                shown(live.champion) or "-",
                shown(live.challenger) or "-",
                f"{live.canary_weight:.0%}" if live.challenger is not None else "-",
                shown(live.previous),
            ]
        )
    _show_records(
        "voice scenarios",
        [
            _Field("scenario"),
            _Field("champion"),
            _Field("challenger"),
            _Field("weight", "number"),
            _Field("previous"),
        ],
        rows,
        empty="no scenarios registered (neuracrm-mlops scenario register scenarios/<name>.yaml)",
    )


@scenario.command("publish", short_help="Push a scenario's champion to its Retell LLM and agent.")
@click.argument("name")
def scenario_publish(name: str) -> None:
    """Push scenario NAME's champion (prompt, begin message, model, temperature, voice) to its Retell
    LLM and agent (ids from the scenario file's retell: section) with NEURACRM_RETELL_API_KEY, and
    record the Retell LLM version in the promotion ledger."""
    from neuracrm_mlops.release.retell_publish import publish_scenario
    from neuracrm_mlops.store.ledger import actor_for_cli

    result = publish_scenario(name, actor=actor_for_cli())
    out.print(
        f"{result.scenario}: published champion v{result.version} ({result.semver or 'no semver'}) to "
        f"Retell LLM {result.llm_id} (version {result.llm_version}) and agent {result.agent_id} "
        f"(version {result.agent_version}); ledger row {result.ledger_id}"
    )


@scenario.command("rollout", short_help="Start or advance a scenario's canary (call success).")
@click.argument("name")
def scenario_rollout_command(name: str) -> None:
    """Start scenario NAME's canary (its challenger at weight 0 gets the first step,
    NEURACRM_ROLLOUT_STEPS), or judge the running step on call success rate against the champion
    with the models' rules (enough analysed calls per arm, the floor, the tolerance): next step,
    promote at the last one, reject when worse, or wait. Exits 1 when there is nothing to roll out."""
    from neuracrm_mlops.release import scenario_rollout
    from neuracrm_mlops.store import prompt_registry
    from neuracrm_mlops.store.ledger import actor_for_cli
    from neuracrm_mlops.store.registry import configure_mlflow

    try:
        live = prompt_registry.live_scenario(configure_mlflow(), name)
        step = scenario_rollout.judge if live.canary_weight > 0 else scenario_rollout.start
        result = step(name, actor_for_cli())
    except (scenario_rollout.ScenarioRolloutError, prompt_registry.ScenarioNameError) as exc:
        raise click.ClickException(str(exc)) from exc
    alert = f"; alert {result.alert_id}" if result.alert_id is not None else ""
    out.print(f"{name}: {result.action} (canary weight {result.weight:.0%}): {result.reason}{alert}")


@scenario.command("monitor", short_help="Check a scenario champion's call success against the floor.")
@click.argument("name")
def scenario_monitor_command(name: str) -> None:
    """Scenario NAME's champion's call success rate over the monitor window against the family's
    floor (NEURACRM_ACCURACY_FLOORS, voice_scenario); below it, roll back to the previous champion
    when that one did not do worse, and page once."""
    from neuracrm_mlops.release import scenario_rollout
    from neuracrm_mlops.store import prompt_registry
    from neuracrm_mlops.store.ledger import actor_for_cli

    try:
        result = scenario_rollout.monitor(name, actor_for_cli())
    except (scenario_rollout.ScenarioRolloutError, prompt_registry.ScenarioNameError) as exc:
        raise click.ClickException(str(exc)) from exc
    alert = f"; alert {result.alert_id}" if result.alert_id is not None else ""
    out.print(f"{name}: {result.action}: {result.reason}{alert}")


# --- bench --------------------------------------------------------------------------------------

BENCHMARKS = {
    "serving": ("serving_throughput.py", "/score and /forecast against `mlflow models serve`, with wrk"),
    "abuse": ("serving_abuse.py", "/score alone and beside a flood of unknown API keys (abuse limits)"),
    "training": ("retraining_scale.py", "validate, train, register 1,000 organizations: CLI and real DAG"),
    "forecast-accuracy": (
        "m3_forecast_accuracy.py",
        "the production ensemble on the 1,428 M3 monthly series",
    ),
    "lead-scoring": (
        "lead_scoring_quality.py",
        "AUC, accuracy, Brier against the rules; 100,000 leads in batch",
    ),
    "real-data": (
        "real_data.py",
        "bank, PhraseBank, retail: import to bentoml serve, scored over HTTP against baselines",
    ),
    "health-page": ("health_page_scale.py", "the on-call model health page at 1,000 organizations"),
}


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    epilog="\b\n" + "\n".join(f"{name:18} {what}" for name, (_, what) in BENCHMARKS.items()),
)
@click.argument("benchmark", type=click.Choice(list(BENCHMARKS)))
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def bench(benchmark: str, options: tuple[str, ...]) -> None:
    """Run a benchmark script of the checkout's benchmarks/ (results: stdout; record them in
    BENCHMARKS.md). OPTIONS go to the script: `neuracrm-mlops bench training -- --help` lists them.
    """
    from neuracrm_mlops.ops.local_stack import project_root

    script = project_root() / "benchmarks" / BENCHMARKS[benchmark][0]
    if not script.is_file():
        raise click.ClickException(f"{script} is missing: benchmarks run from a checkout of the repository")
    argv = [sys.executable, str(script), *(o for o in options if o != "--")]
    err.print(f"[dim]… {escape(' '.join(argv[1:]))}[/]", markup=True)
    sys.exit(subprocess.run(argv, check=False).returncode)


# --- demo ---------------------------------------------------------------------------------------


@main.command()
@click.option("--orgs", type=click.IntRange(2, 1_000), default=50, show_default=True, help="organizations")
@click.option("--months", type=click.IntRange(24, 120), default=48, show_default=True, help="history")
@click.option(
    "--voice",
    is_flag=True,
    help="instead: a voice scenario's A/B rollout (register two versions, calls through the service, "
    "signed call events, promoted on call success; about a minute)",
)
def demo(orgs: int, months: int, voice: bool) -> None:
    """The whole loop on the embedded defaults, in a few minutes: seed, import, the training DAGs,
    a canary rollout to champion under live traffic, then a degraded champion rolled back and alerted.
    With --voice, a voice scenario's A/B rollout instead.

    Starts from empty embedded stores under NEURACRM_HOME (the SQLite files are recreated) and stops
    every process it starts.
    """
    if voice:
        from neuracrm_mlops.ops.voice_demo import run_voice_demo

        run_voice_demo(lambda line: out.print(line, markup=False))
        return
    from neuracrm_mlops.ops.demo import run_demo

    run_demo(lambda line: out.print(line, markup=False), organizations=orgs, months=months)


@main.command()
@click.option("--airflow-port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--mlflow-port", type=click.IntRange(1, 65535), default=5000, show_default=True)
def ui(airflow_port: int, mlflow_port: int) -> None:
    """Start the Airflow UI (with the model health page) and the MLflow UI in the background, on
    127.0.0.1, over the stores of NEURACRM_HOME; `neuracrm-mlops stop` ends them."""
    from neuracrm_mlops.ops import local_stack

    err.print("starting the Airflow api-server and dag-processor, and the MLflow UI ...")
    for name, url in local_stack.start_uis(airflow_port, mlflow_port):
        out.print(f"{name}: {url}", markup=False)
    out.print(f"logs: {local_stack.log_dir()}; `neuracrm-mlops stop` (make stop) ends them", markup=False)


@main.command()
def stop() -> None:
    """Stop every process `demo` or `ui` started in the background (pid files in NEURACRM_HOME/run)."""
    from neuracrm_mlops.ops import local_stack

    stopped = local_stack.stop_all()
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running", markup=False)


if __name__ == "__main__":  # pragma: no cover
    main()
