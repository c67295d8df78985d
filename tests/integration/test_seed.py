"""`seed` writes the synthetic CRM into the store, deterministically, and only into an empty one."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from crm_files import table_counts

from neuracrm_mlops.errors import SeedError
from neuracrm_mlops.ops.cli import main
from neuracrm_mlops.store.db.schema import Interaction, Lead, MonthlySales
from neuracrm_mlops.store.ingest import import_file
from neuracrm_mlops.store.orgs import organization_for_api_key
from neuracrm_mlops.store.seeding import seed_database


def _fingerprint(engine: sa.Engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [
            (model.__tablename__, conn.scalar(sa.select(sa.func.count()).select_from(model)) or 0)
            for model in (Lead, MonthlySales, Interaction)
        ] + [("hashes", hash(tuple(conn.scalars(sa.select(Lead.content_hash).order_by(Lead.content_hash)))))]


def test_seed_fills_every_crm_table_and_writes_working_api_keys(engine: sa.Engine, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.csv"
    summary = seed_database(12, 24, 3, engine=engine, api_keys_file=keys_file)
    counts = table_counts(engine)
    assert counts["organizations"] == 12 == summary.organizations
    assert counts["leads"] == summary.leads > 12 * 10
    assert counts["monthly_sales"] == summary.monthly_sales > 0
    assert counts["interactions"] == summary.interactions > 0
    assert counts["api_keys"] == 12
    with keys_file.open() as handle:
        rows = list(csv.DictReader(handle))
    assert keys_file.stat().st_mode & 0o077 == 0  # readable by the owner only
    with engine.connect() as conn:
        for row in rows:
            assert organization_for_api_key(conn, row["api_key"]).id == int(row["organization_id"])


def test_the_same_seed_gives_the_same_data(engine: sa.Engine, tmp_path: Path) -> None:
    from neuracrm_mlops.store.db.engine import create_engine
    from neuracrm_mlops.store.db.migrate import upgrade

    seed_database(8, 18, 11, engine=engine)
    other = create_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    upgrade(other)
    seed_database(8, 18, 11, engine=other)
    assert _fingerprint(engine) == _fingerprint(other)
    other.dispose()


def test_seed_refuses_a_store_that_has_data(engine: sa.Engine) -> None:
    seed_database(2, 12, 1, engine=engine)
    before = table_counts(engine)
    with pytest.raises(SeedError, match="already has 2 organizations"):
        seed_database(2, 12, 1, engine=engine)
    assert table_counts(engine) == before


def test_seeded_rows_are_unchanged_when_exported_and_imported_again(
    engine: sa.Engine, tmp_path: Path
) -> None:
    seed_database(3, 24, 5, engine=engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(MonthlySales.month, MonthlySales.revenue).where(MonthlySales.organization_id == 1)
        )
        path = tmp_path / "sales.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["month", "revenue"])
            writer.writerows((month.strftime("%Y-%m"), repr(revenue)) for month, revenue in rows)
    summary = import_file(path, "sales", 1, engine=engine)
    assert summary.rows_read > 0
    assert (summary.imported, summary.updated, summary.unchanged) == (0, 0, summary.rows_read)


def test_seed_command_prints_counts_and_where_the_keys_are(db_url: str, neuracrm_home: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(main, ["seed", "--orgs", "3", "--months", "12", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "seeded 3 organizations" in result.output
    assert str(neuracrm_home.resolve() / "api_keys.csv") in result.output
