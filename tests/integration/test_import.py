"""`import` on SQLite and the real PostgreSQL: idempotent upserts, quarantine, and bad input."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from crm_files import LEAD_HEADER, lead_rows, table_counts, write_csv

from neuracrm_mlops.cli import EXIT_QUARANTINED, main
from neuracrm_mlops.db.schema import Interaction, Lead, MonthlySales, QuarantinedRow
from neuracrm_mlops.errors import ImportFileError, NotFoundError
from neuracrm_mlops.ingest import import_file
from neuracrm_mlops.orgs import create_organization


@pytest.fixture
def org_id(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        ref, _ = create_organization(conn, "Acme Analytics")
        create_organization(conn, "Other Org")
    return ref.id


def _leads_file_with_three_broken_rows(path: Path) -> Path:
    rows = lead_rows(1000)
    rows[10]["created_at"] = "yesterday"  # unparseable date
    rows[500]["company_employees"] = "about fifty"  # unparseable number
    rows[998]["converted"] = "maybe"  # not a boolean
    return write_csv(path, rows)


def test_importing_1000_leads_with_3_broken_rows_keeps_997_and_quarantines_3_with_reasons(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    path = _leads_file_with_three_broken_rows(tmp_path / "leads.csv")
    runner = CliRunner()

    first = runner.invoke(main, ["import", "leads", str(path), "--org", str(org_id)])
    assert first.exit_code == EXIT_QUARANTINED, first.output
    assert "997 imported, 0 updated, 0 unchanged, 3 quarantined" in first.output
    assert "row 11 (line 12): column 'created_at': cannot parse 'yesterday'" in first.output

    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(Lead)) == 997
        reasons = conn.execute(
            sa.select(QuarantinedRow.row_number, QuarantinedRow.reason, QuarantinedRow.raw).order_by(
                QuarantinedRow.row_number
            )
        ).all()
    assert [r.row_number for r in reasons] == [11, 501, 999]
    assert "company_employees" in reasons[1].reason and "about fifty" in reasons[1].reason
    assert "converted" in reasons[2].reason
    assert reasons[0].raw["lead_id"] == "L-00011"  # the raw row is kept

    before = table_counts(engine)
    second = runner.invoke(main, ["import", "leads", str(path), "--org", "Acme Analytics"])
    assert second.exit_code == EXIT_QUARANTINED, second.output
    assert "0 imported, 0 updated, 997 unchanged, 3 quarantined" in second.output
    after = table_counts(engine)
    assert after["leads"] == before["leads"] == 997
    assert after["quarantine"] == before["quarantine"] == 3
    assert after["import_batches"] == before["import_batches"] + 1  # the audit trail of runs grows


def test_clean_import_exits_zero_and_counts_rows(engine: sa.Engine, org_id: int, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "leads.csv", lead_rows(20))
    result = CliRunner().invoke(main, ["import", "leads", str(path), "--org", str(org_id)])
    assert result.exit_code == 0, result.output
    assert "20 imported" in result.output


def test_unknown_columns_are_kept_as_typed_attributes(engine: sa.Engine, org_id: int, tmp_path: Path) -> None:
    rows = lead_rows(2)
    rows[0].update({"Partner Tier": "gold", "seats": "12", "nps": "8.5", "is_trial": "true"})
    rows[1].update({"Partner Tier": "", "seats": "", "nps": "", "is_trial": ""})
    path = write_csv(tmp_path / "leads.csv", rows)
    import_file(path, "leads", org_id)
    with engine.connect() as conn:
        attributes = dict(conn.execute(sa.select(Lead.external_id, Lead.attributes)).tuples().all())
    assert attributes["L-00001"] == {"partner_tier": "gold", "seats": 12, "nps": 8.5, "is_trial": True}
    assert attributes["L-00002"] == {}


def test_changed_rows_update_and_absent_columns_keep_their_values(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    rows = lead_rows(3)
    rows[0]["tier"] = "a"
    import_file(write_csv(tmp_path / "v1.csv", rows), "leads", org_id)
    # v2 carries only some columns: one changed value, one new attribute
    v2 = [
        {"lead_id": "L-00001", "created_at": rows[0]["created_at"], "email_opens": "99", "owner": "kim"},
        {"lead_id": "L-00002", "created_at": rows[1]["created_at"], "email_opens": rows[1]["email_opens"]},
    ]
    summary = import_file(write_csv(tmp_path / "v2.csv", v2), "leads", org_id)
    assert (summary.imported, summary.updated, summary.unchanged) == (0, 1, 1)
    with engine.connect() as conn:
        lead = conn.execute(sa.select(Lead).where(Lead.external_id == "L-00001")).one()
    assert lead.email_opens == 99
    assert lead.industry == rows[0]["industry"]  # not in v2: kept
    assert lead.attributes == {"tier": "a", "owner": "kim"}


def test_duplicate_keys_within_a_file_are_quarantined_not_overwritten(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "sales.csv",
        [
            {"month": "2026-01", "revenue": "100"},
            {"month": "2026-02", "revenue": "120.5"},
            {"month": "2026-01-01", "revenue": "999"},
        ],
    )
    summary = import_file(path, "sales", org_id)
    assert (summary.imported, summary.quarantined) == (2, 1)
    assert (
        "duplicate month '2026-01-01': the same key is already at row 1" in summary.quarantine_notes[0].reason
    )
    with engine.connect() as conn:
        assert (
            conn.scalar(sa.select(MonthlySales.revenue).where(MonthlySales.month == dt.date(2026, 1, 1)))
            == 100
        )


def test_parquet_imports_the_same_as_csv(engine: sa.Engine, org_id: int, tmp_path: Path) -> None:
    table = pa.table(
        {
            "interaction_id": ["I-1", "I-2", "I-3"],
            "lead_id": ["L-1", None, "L-3"],
            "channel": ["email", "call", "chat"],
            "text": ["Thanks, the demo was great", "Asked about pricing", "We will cancel"],
            "created_at": pa.array(
                [dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)] * 3, type=pa.timestamp("us", tz="UTC")
            ),
            "sentiment_label": ["positive", "neutral", "negative"],
            "csat": [5, None, 1],
        }
    )
    path = tmp_path / "interactions.parquet"
    pq.write_table(table, path)
    first = import_file(path, "interactions", org_id)
    assert (first.imported, first.quarantined, first.file_format) == (3, 0, "parquet")
    assert import_file(path, "interactions", org_id).unchanged == 3
    with engine.connect() as conn:
        rows = {r.external_id: r for r in conn.execute(sa.select(Interaction))}
    assert rows["I-1"].attributes == {"csat": 5}
    assert rows["I-2"].lead_external_id is None
    assert rows["I-3"].created_at == dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)


def test_the_same_file_for_two_organizations_stays_separate(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "leads.csv", lead_rows(5))
    assert import_file(path, "leads", org_id).imported == 5
    assert import_file(path, "leads", "Other Org").imported == 5


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_FILES = {
    "missing file": (lambda d: d / "nope.csv", "leads", "no such file"),
    "empty file": (lambda d: _write_bytes(d / "empty.csv", b""), "leads", "the file is empty"),
    "header only": (
        lambda d: _write_bytes(d / "header.csv", ",".join(LEAD_HEADER).encode() + b"\n"),
        "leads",
        "has a header but no data rows",
    ),
    "missing required column": (
        lambda d: write_csv(
            d / "no_created.csv", lead_rows(3), [h for h in LEAD_HEADER if h != "created_at"]
        ),
        "leads",
        "missing required column 'created_at' for a leads file",
    ),
    "sales file imported as leads": (
        lambda d: write_csv(d / "sales.csv", [{"month": "2026-01", "revenue": "1"}]),
        "leads",
        "missing required columns 'lead_id', 'created_at'",
    ),
    "binary file named csv": (
        lambda d: _write_bytes(d / "image.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
        "leads",
        "not a CSV file",
    ),
    "excel file": (
        lambda d: _write_bytes(d / "leads.xlsx", b"PK\x03\x04"),
        "leads",
        "unsupported file kind '.xlsx'",
    ),
    "csv named parquet": (
        lambda d: write_csv(d / "leads.parquet", lead_rows(2)),
        "leads",
        "is not a Parquet file",
    ),
    "duplicate header": (
        lambda d: _write_bytes(d / "dup.csv", b"month,revenue,Revenue\n2026-01,1,2\n"),
        "sales",
        "column 'revenue' appears more than once",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_fail_with_one_line_naming_the_problem_and_write_nothing(
    case: str, engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    make, dataset, expected = BAD_FILES[case]
    path = make(tmp_path)
    before = table_counts(engine)
    with pytest.raises(ImportFileError, match=expected) as caught:
        import_file(path, dataset, org_id)
    assert str(path) in str(caught.value)
    assert table_counts(engine) == before

    result = CliRunner().invoke(main, ["import", dataset, str(path), "--org", str(org_id)])
    assert result.exit_code == 1
    assert result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1
    assert table_counts(engine) == before


def test_unknown_organization_is_named_and_nothing_is_written(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "leads.csv", lead_rows(3))
    before = table_counts(engine)
    with pytest.raises(NotFoundError, match="unknown organization 'Globex'"):
        import_file(path, "leads", "Globex")
    assert table_counts(engine) == before


def test_a_failure_midway_rolls_back_every_chunk_already_written(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "leads.csv", lead_rows(50))
    with path.open("ab") as handle:  # invalid UTF-8 after 50 good rows, past several chunks
        handle.write(b"L-99999,2026-01-01T00:00:00,\xff\xfe bad bytes" + b",x" * 16 + b"\n")
    before = table_counts(engine)
    with pytest.raises(ImportFileError, match="not UTF-8 text"):
        import_file(path, "leads", org_id, chunk_rows=10)
    assert table_counts(engine) == before


def test_unreachable_database_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURACRM_DB_URL", "postgresql://app:hunter2@127.0.0.1:1/crm")
    from neuracrm_mlops.config import reset_settings

    reset_settings()
    path = write_csv(tmp_path / "leads.csv", lead_rows(3))
    result = CliRunner().invoke(main, ["import", "leads", str(path), "--org", "1"])
    assert result.exit_code == 1
    assert result.output.startswith(
        "error: cannot reach the database at postgresql+psycopg://app:***@127.0.0.1:1/crm"
    )
    assert "hunter2" not in result.output


def test_quarantine_keeps_malformed_rows_whole(engine: sa.Engine, org_id: int, tmp_path: Path) -> None:
    path = tmp_path / "sales.csv"
    path.write_text("month,revenue\n2026-01,10\n2026-02,11,extra\n2026-03,-5\n2026-13,1\n")
    summary = import_file(path, "sales", org_id)
    # negative revenue parses (it is the validation suite's job to reject it), the others do not
    assert (summary.imported, summary.quarantined) == (2, 2)
    with engine.connect() as conn:
        raws = [
            json.dumps(r)
            for r in conn.scalars(sa.select(QuarantinedRow.raw).order_by(QuarantinedRow.row_number))
        ]
    assert raws == [
        json.dumps({"fields": ["2026-02", "11", "extra"]}),
        json.dumps({"month": "2026-13", "revenue": "1"}),
    ]
