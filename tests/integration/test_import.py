"""`import` on SQLite and the real PostgreSQL: idempotent upserts, quarantine, and bad input."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from crm_files import LEAD_HEADER, csv_bytes, lead_rows, table_counts, write_bytes, write_csv

from neuracrm_mlops.errors import ImportFileError, NotFoundError
from neuracrm_mlops.ops.cli import EXIT_QUARANTINED, main
from neuracrm_mlops.store.db.schema import ImportBatch, Interaction, Lead, MonthlySales, QuarantinedRow
from neuracrm_mlops.store.ingest import FIELD_ERRORS_KEY, ImportProgress, import_file
from neuracrm_mlops.store.orgs import create_organization


@pytest.fixture
def org_id(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        ref, _ = create_organization(conn, "Acme Analytics")
        create_organization(conn, "Other Org")
    return ref.id


def _leads_file_with_four_broken_rows(path: Path) -> Path:
    rows = lead_rows(1000)
    rows[10]["created_at"] = "yesterday"  # required: quarantined
    rows[20]["lead_id"] = " "  # the key: quarantined
    rows[500]["company_employees"] = "about fifty"  # optional: kept, a field error
    rows[998]["converted"] = "maybe"  # optional: kept, a field error
    return write_csv(path, rows)


def test_importing_1000_leads_quarantines_a_bad_key_or_required_field_and_keeps_rows_with_field_errors(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    path = _leads_file_with_four_broken_rows(tmp_path / "leads.csv")
    runner = CliRunner()

    first = runner.invoke(main, ["import", "leads", str(path), "--org", str(org_id)])
    assert first.exit_code == EXIT_QUARANTINED, first.output
    assert "998 imported, 0 updated, 0 unchanged, 2 quarantined, 2 with field errors" in first.output
    assert "row 11 (line 12): column 'created_at': cannot parse 'yesterday'" in first.output
    assert "row 21 (line 22): column 'lead_id': required but empty" in first.output
    assert "  company_employees: 1 row, first at row 501 (line 502): expected a whole number" in first.output
    assert "  converted: 1 row, first at row 999 (line 1000): expected true/false" in first.output

    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(Lead)) == 998
        reasons = conn.execute(
            sa.select(QuarantinedRow.row_number, QuarantinedRow.reason, QuarantinedRow.raw).order_by(
                QuarantinedRow.row_number
            )
        ).all()
        kept = {
            r.external_id: r
            for r in conn.execute(
                sa.select(Lead).where(Lead.external_id.in_(["L-00501", "L-00999", "L-00500"]))
            )
        }
    assert [r.row_number for r in reasons] == [11, 21]
    assert reasons[0].raw["lead_id"] == "L-00011"  # the raw row is kept
    assert kept["L-00501"].company_employees is None
    assert kept["L-00501"].attributes[FIELD_ERRORS_KEY]["company_employees"]["raw"] == "about fifty"
    assert kept["L-00999"].converted is None
    assert kept["L-00999"].attributes[FIELD_ERRORS_KEY] == {
        "converted": {"raw": "maybe", "error": "expected true/false (or yes/no, 1/0), got 'maybe'"}
    }
    assert kept["L-00500"].attributes == {}  # a clean row carries no field-error key

    before = table_counts(engine)
    second = runner.invoke(main, ["import", "leads", str(path), "--org", "Acme Analytics"])
    assert second.exit_code == EXIT_QUARANTINED, second.output
    assert "0 imported, 0 updated, 998 unchanged, 2 quarantined, 2 with field errors" in second.output
    after = table_counts(engine)
    assert after["leads"] == before["leads"] == 998
    assert after["quarantine"] == before["quarantine"] == 2
    assert after["import_batches"] == before["import_batches"] + 1  # the audit trail of runs grows


def _batches(engine: sa.Engine) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(ImportBatch).order_by(ImportBatch.id)))


def test_fractional_pages_viewed_keeps_every_row_with_null_and_the_raw_value_and_exits_3(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    rows = lead_rows(30)
    for i, row in enumerate(rows):
        row["pages_viewed"] = ["2.67", "2.0", "4"][i % 3]
    rows[4]["pages_viewed"] = "1,234"  # a thousands separator: a field error too
    path = write_csv(tmp_path / "leads.csv", rows)
    runner = CliRunner()

    first = runner.invoke(main, ["import", "leads", str(path), "--org", str(org_id)])
    assert first.exit_code == EXIT_QUARANTINED, first.output
    assert "30 imported, 0 updated, 0 unchanged, 0 quarantined, 11 with field errors" in first.output
    assert (
        'field errors (rows kept, the field stored empty, its raw value in attributes["_field_errors"]):'
        in first.output
    )
    assert (
        "  pages_viewed: 11 rows, first at row 1 (line 2): "
        "expected a whole number, got '2.67' (it has a fractional part)"
    ) in first.output
    with engine.connect() as conn:
        stored = {r.external_id: r for r in conn.execute(sa.select(Lead))}
        assert conn.scalar(sa.select(sa.func.count()).select_from(QuarantinedRow)) == 0
    assert len(stored) == 30
    assert stored["L-00001"].pages_viewed is None
    assert stored["L-00001"].attributes == {
        FIELD_ERRORS_KEY: {
            "pages_viewed": {
                "raw": "2.67",
                "error": "expected a whole number, got '2.67' (it has a fractional part)",
            }
        }
    }
    assert stored["L-00002"].pages_viewed == 2 and stored["L-00002"].attributes == {}  # "2.0" is 2
    assert stored["L-00003"].pages_viewed == 4
    assert stored["L-00005"].pages_viewed is None
    error = stored["L-00005"].attributes[FIELD_ERRORS_KEY]["pages_viewed"]["error"]
    assert "got '1,234' (numbers use a dot for decimals and no thousands separator)" in error
    assert stored["L-00001"].industry == rows[0]["industry"]  # the rest of the row is stored

    before = table_counts(engine)
    second = runner.invoke(main, ["import", "leads", str(path), "--org", str(org_id)])
    assert second.exit_code == EXIT_QUARANTINED, second.output
    assert "0 imported, 0 updated, 30 unchanged, 0 quarantined, 11 with field errors" in second.output
    assert "  pages_viewed: 11 rows" in second.output
    after = table_counts(engine)
    assert {k: v for k, v in after.items() if k != "import_batches"} == {
        k: v for k, v in before.items() if k != "import_batches"
    }
    batches = _batches(engine)
    assert [(b.imported, b.unchanged, b.quarantined, b.rows_with_field_errors) for b in batches] == [
        (30, 0, 0, 11),
        (0, 30, 0, 11),
    ]


def test_a_corrected_value_clears_its_field_error_and_an_absent_column_keeps_its_own(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    rows = lead_rows(2)
    rows[0].update({"pages_viewed": "2.67", "email_opens": "3,5"})
    import_file(write_csv(tmp_path / "v1.csv", rows), "leads", org_id)
    # v2 sends a whole pages_viewed for the first lead and no email_opens column at all
    v2 = [{k: v for k, v in row.items() if k != "email_opens"} for row in rows]
    v2[0]["pages_viewed"] = "3"
    summary = import_file(write_csv(tmp_path / "v2.csv", v2), "leads", org_id)
    assert (summary.updated, summary.unchanged, summary.with_field_errors) == (1, 1, 0)
    with engine.connect() as conn:
        lead = conn.execute(sa.select(Lead).where(Lead.external_id == "L-00001")).one()
    assert lead.pages_viewed == 3
    assert lead.email_opens is None
    assert list(lead.attributes) == [FIELD_ERRORS_KEY]
    assert list(lead.attributes[FIELD_ERRORS_KEY]) == ["email_opens"]
    assert lead.attributes[FIELD_ERRORS_KEY]["email_opens"]["raw"] == "3,5"
    # v3 fixes email_opens too: the key goes away
    v3 = [{"lead_id": "L-00001", "created_at": rows[0]["created_at"], "email_opens": "3"}]
    assert import_file(write_csv(tmp_path / "v3.csv", v3), "leads", org_id).updated == 1
    with engine.connect() as conn:
        lead = conn.execute(sa.select(Lead).where(Lead.external_id == "L-00001")).one()
    assert (lead.email_opens, lead.attributes) == (3, {})


def test_parquet_doubles_in_a_whole_number_column_store_whole_values_and_keep_fractions(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    table = pa.table(
        {
            "lead_id": ["L-1", "L-2", "L-3"],
            "created_at": pa.array(
                [dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)] * 3, type=pa.timestamp("us", tz="UTC")
            ),
            "pages_viewed": pa.array([2.0, 2.67, None], type=pa.float64()),
            "company_employees": pa.array([12, 3_000_000_000, None], type=pa.int64()),
        }
    )
    path = tmp_path / "leads.parquet"
    pq.write_table(table, path)
    summary = import_file(path, "leads", org_id)
    assert (summary.imported, summary.quarantined, summary.with_field_errors) == (3, 0, 1)
    assert {c.column: c.rows for c in summary.field_errors.values()} == {
        "company_employees": 1,
        "pages_viewed": 1,
    }
    with engine.connect() as conn:
        rows = {r.external_id: r for r in conn.execute(sa.select(Lead))}
    assert (rows["L-1"].pages_viewed, rows["L-1"].company_employees) == (2, 12)
    # too large for the integer column: on PostgreSQL this used to fail the whole import
    assert (rows["L-2"].pages_viewed, rows["L-2"].company_employees) == (None, None)
    errors = rows["L-2"].attributes[FIELD_ERRORS_KEY]
    assert errors["pages_viewed"]["raw"] == 2.67
    assert errors["company_employees"]["raw"] == 3_000_000_000
    assert "too large to store" in errors["company_employees"]["error"]
    assert import_file(path, "leads", org_id).unchanged == 3


def test_a_real_bank_marketing_slice_with_fractional_pages_viewed_keeps_all_300_rows(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    real_datasets = pytest.importorskip("real_datasets")
    source = real_datasets.datasets_dir() / "bank_marketing" / "bank-additional-full.csv"
    if not source.is_file():
        pytest.skip(f"the real datasets are not here: {source} is missing (see benchmarks/real_datasets.py)")
    leads = real_datasets.bank_leads(300)
    # euribor3m (the 3-month Euribor rate, e.g. 4.857) in the documented whole-number column
    leads["pages_viewed"] = leads["euribor3m"]
    fractional = sum(Decimal(v) != Decimal(v).to_integral_value() for v in leads["euribor3m"] if v != "")
    assert fractional > 0
    path = tmp_path / "bank_leads.csv"
    leads.to_csv(path, index=False)

    result = CliRunner().invoke(main, ["import", "leads", str(path), "--org", str(org_id)])
    assert result.exit_code == EXIT_QUARANTINED, result.output
    assert (
        f"300 imported, 0 updated, 0 unchanged, 0 quarantined, {fractional} with field errors"
        in result.output
    )
    assert f"  pages_viewed: {fractional} rows, first at row 1 (line 2)" in result.output
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(QuarantinedRow)) == 0
        stored = conn.execute(sa.select(Lead.external_id, Lead.pages_viewed, Lead.attributes)).all()
    assert len(stored) == 300
    by_id = {r.external_id: r for r in stored}
    for lead_id, raw in zip(leads["lead_id"], leads["euribor3m"], strict=True):
        row = by_id[lead_id]
        assert row.attributes["euribor3m"] == float(raw)  # the unknown column is kept as well
        if Decimal(raw) != Decimal(raw).to_integral_value():
            assert row.pages_viewed is None
            assert row.attributes[FIELD_ERRORS_KEY]["pages_viewed"]["raw"] == raw
        else:
            assert row.pages_viewed == int(Decimal(raw))
    assert _batches(engine)[-1].rows_with_field_errors == fractional


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


BAD_FILES = {
    "missing file": (lambda d: d / "nope.csv", "leads", "no such file"),
    "empty file": (lambda d: write_bytes(d / "empty.csv", b""), "leads", "the file is empty"),
    "header only": (
        lambda d: write_bytes(d / "header.csv", ",".join(LEAD_HEADER).encode() + b"\n"),
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
        lambda d: write_bytes(d / "image.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
        "leads",
        "not a CSV file",
    ),
    "excel file": (
        lambda d: write_bytes(d / "leads.xlsx", b"PK\x03\x04"),
        "leads",
        "unsupported file kind '.xlsx'",
    ),
    "csv named parquet": (
        lambda d: write_csv(d / "leads.parquet", lead_rows(2)),
        "leads",
        "is not a Parquet file",
    ),
    "a column named like the field-errors key": (
        lambda d: write_csv(d / "reserved.csv", [{**lead_rows(1)[0], " _Field Errors": "{}"}]),
        "leads",
        "column 20 '_field_errors' has a reserved name",
    ),
    "duplicate header": (
        lambda d: write_bytes(d / "dup.csv", b"month,revenue,Revenue\n2026-01,1,2\n"),
        "sales",
        "column 'revenue' appears more than once",
    ),
    "utf-16 text": (
        lambda d: write_bytes(d / "utf16.csv", "month,revenue\n2026-01,1\n".encode("utf-16")),
        "sales",
        r"not a CSV file \(NUL bytes in the header row: binary data, or text that is not UTF-8 such as "
        "UTF-16",
    ),
    "utf-16 text without a byte order mark": (
        lambda d: write_bytes(d / "utf16le.csv", "month,revenue\n2026-01,1\n".encode("utf-16-le")),
        "sales",
        r"not a CSV file \(NUL bytes in the header row",
    ),
    "latin-1 header": (
        lambda d: write_bytes(d / "latin1.csv", "month,revenue,société\n2026-01,1,x\n".encode("latin-1")),
        "sales",
        "the header row has bytes that are not UTF-8 text at byte offset 18; import reads UTF-8 text",
    ),
    "a NUL byte in a header longer than 8 KB": (
        lambda d: write_bytes(
            d / "long_header.csv", b"month,revenue," + b"x" * 9000 + b"\x00\n2026-01,1,2\n"
        ),
        "sales",
        r"header column 3 'x{60}\.\.\.' has a NUL byte or bytes that are not UTF-8 text",
    ),
    "a header cell over the field size limit": (
        lambda d: write_bytes(
            d / "huge_header.csv", b"month,revenue," + b"x" * (4 * 1024 * 1024 + 1) + b"\n"
        ),
        "sales",
        "cannot read the CSV header: a header cell is longer than the field size limit of 4,194,304 bytes "
        r"\(NEURACRM_IMPORT_MAX_FIELD_BYTES",
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
    chunks: list[ImportProgress] = []

    def interrupt_after_three_chunks(at: ImportProgress) -> None:  # Ctrl-C while chunk 4 is read
        chunks.append(at)
        if len(chunks) == 3:
            raise KeyboardInterrupt

    before = table_counts(engine)
    with pytest.raises(KeyboardInterrupt):
        import_file(path, "leads", org_id, chunk_rows=10, progress=interrupt_after_three_chunks)
    assert [at.rows_read for at in chunks] == [10, 20, 30]  # three chunks were written, then undone
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


# --- hostile and messy files: the bad row is quarantined, the rest imports, on both stores ---------


def _quarantined(engine: sa.Engine) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(QuarantinedRow.row_number, QuarantinedRow.reason, QuarantinedRow.raw).order_by(
                    QuarantinedRow.row_number
                )
            )
        )


def _lead_ids(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(Lead.external_id)))


def test_nul_bytes_before_and_after_the_first_8_kb_quarantine_their_rows_with_line_and_byte_offset(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    rows = [{**row, "notes": ""} for row in lead_rows(300)]
    rows[199]["notes"] = "NOTES-200"
    data = csv_bytes(rows)
    data = data.replace(b'"Lead 3, evaluating', b'"Lead\x003, evaluating')  # inside the first 8 KB
    data = data.replace(b'"Lead 250, evaluating', b'"Lead 250\x00, evaluating')  # far past it
    data = data.replace(b"NOTES-200", b"NOTES\x00-200")  # an unknown column (row 200)
    nul_offsets = [at for at, byte in enumerate(data) if byte == 0]
    assert len(nul_offsets) == 3 and nul_offsets[0] < 8192 < nul_offsets[1]
    path = write_bytes(tmp_path / "leads.csv", data)
    runner = CliRunner()

    result = runner.invoke(main, ["import", "leads", str(path), "--org", str(org_id)])

    assert result.exit_code == EXIT_QUARANTINED, result.output
    assert "297 imported, 0 updated, 0 unchanged, 3 quarantined" in result.output
    expected = [
        (3, f"row 3 (line 4): NUL byte in column 'description' at byte offset {nul_offsets[0]}"),
        (200, f"row 200 (line 201): NUL byte in column 'notes' at byte offset {nul_offsets[1]}"),
        (250, f"row 250 (line 251): NUL byte in column 'description' at byte offset {nul_offsets[2]}"),
    ]
    quarantined = _quarantined(engine)
    assert [(q.row_number, q.reason) for q in quarantined] == expected
    for _, reason in expected:
        assert f"quarantined {path}: {reason}" in result.output
    assert quarantined[0].raw["lead_id"] == "L-00003"
    assert quarantined[0].raw["description"] == "Lead\\x003, evaluating CRM tools"  # written out, kept
    assert quarantined[1].raw["notes"] == "NOTES\\x00-200"
    lead_ids = _lead_ids(engine)
    assert len(lead_ids) == 297 and {"L-00002", "L-00004", "L-00251", "L-00300"} <= lead_ids
    assert not {"L-00003", "L-00200", "L-00250"} & lead_ids

    again = runner.invoke(main, ["import", "leads", str(path), "--org", str(org_id)])
    assert "0 imported, 0 updated, 297 unchanged, 3 quarantined" in again.output
    assert len(_quarantined(engine)) == 3  # the same rows of the same file are not quarantined twice


def test_bytes_that_are_not_utf8_quarantine_their_row_and_name_the_line_it_starts_on(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    rows = lead_rows(200)
    rows[5]["job_title"] = "Directrice générale"  # UTF-8 text: imported as it is
    rows[9]["description"] = "first line\nsecond line, \u00e9t\u00e9"  # one record over lines 11-12
    rows[29]["description"] = "first line\nsecond BAD line"  # lines 32-33, with a byte that is not UTF-8
    data = csv_bytes(rows)
    data = data.replace(b",finance,", b",fin\xe2nce,", 1)  # row 1: a multi-byte start with no follower
    data = data.replace(b"second BAD line", b"second \xff line")
    data = data.replace(b'"Lead 120, evaluating', b'"Lead 120 Soci\xe9t\xe9, evaluating')  # Latin-1 text
    bad_offsets = [data.index(b"\xe2n"), data.index(b"\xff"), data.index(b"\xe9t\xe9")]
    assert bad_offsets[0] < 8192 < bad_offsets[2]
    path = write_bytes(tmp_path / "leads.csv", data)

    result = CliRunner().invoke(main, ["import", "leads", str(path), "--org", str(org_id)])

    assert result.exit_code == EXIT_QUARANTINED, result.output
    assert "197 imported, 0 updated, 0 unchanged, 3 quarantined" in result.output
    hint = "(import reads UTF-8 text: save the file as UTF-8)"
    expected = [
        (
            1,
            f"row 1 (line 2): bytes that are not valid UTF-8 in column 'industry' at byte offset "
            f"{bad_offsets[0]} {hint}",
        ),
        (
            30,
            f"row 30 (lines 32-33): bytes that are not valid UTF-8 in column 'description' at byte "
            f"offset {bad_offsets[1]} {hint}",
        ),
        # rows 10 and 30 take two lines each: row 120 starts on line 123
        (
            120,
            f"row 120 (line 123): bytes that are not valid UTF-8 in column 'description' at byte "
            f"offset {bad_offsets[2]} {hint}",
        ),
    ]
    quarantined = _quarantined(engine)
    assert [(q.row_number, q.reason) for q in quarantined] == expected
    assert quarantined[0].raw["industry"] == "fin\\xe2nce"
    assert quarantined[2].raw["description"] == "Lead 120 Soci\\xe9t\\xe9, evaluating CRM tools"
    with engine.connect() as conn:
        kept = dict(conn.execute(sa.select(Lead.external_id, Lead.description)).tuples().all())
        title = conn.scalar(sa.select(Lead.job_title).where(Lead.external_id == "L-00006"))
    assert title == "Directrice générale"
    assert kept["L-00010"] == "first line\nsecond line, \u00e9t\u00e9"
    assert len(kept) == 197 and "L-00121" in kept and "L-00120" not in kept


def test_a_1_mb_cell_imports_under_the_default_field_size_limit(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    rows = lead_rows(3)
    rows[1]["description"] = "a long pasted email thread, " * 40_000  # 1.1 MB, over csv's own 131,072
    path = write_csv(tmp_path / "leads.csv", rows)
    summary = import_file(path, "leads", org_id)
    assert (summary.imported, summary.quarantined) == (3, 0)
    with engine.connect() as conn:
        stored = conn.scalar(sa.select(Lead.description).where(Lead.external_id == "L-00002"))
    assert stored == rows[1]["description"].strip()


def test_a_cell_over_the_field_size_limit_quarantines_its_row_naming_the_column_and_the_setting(
    engine: sa.Engine, org_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.config import reset_settings

    monkeypatch.setenv("NEURACRM_IMPORT_MAX_FIELD_BYTES", "4096")
    reset_settings()
    rows = [{**row, "notes": ""} for row in lead_rows(50)]
    rows[9]["description"] = "x" * 5000  # one line, unquoted
    rows[19]["description"] = "a quoted line, " * 20 + "\n" + "more, " * 1000  # lines 21-22
    rows[29]["notes"] = "\u00e9" * 2100  # 2,100 characters within the limit, but 4,200 bytes
    rows[39]["description"] = '"quoted" and long ' * 300 + "\nthen a next line"  # lines 42-43
    path = write_csv(tmp_path / "leads.csv", rows)

    result = CliRunner().invoke(main, ["import", "leads", str(path), "--org", str(org_id)])

    assert result.exit_code == EXIT_QUARANTINED, result.output
    assert "46 imported, 0 updated, 0 unchanged, 4 quarantined" in result.output
    limit = (
        "the field size limit of 4,096 bytes (NEURACRM_IMPORT_MAX_FIELD_BYTES; raise it to import this row)"
    )
    quarantined = _quarantined(engine)
    assert [(q.row_number, q.reason) for q in quarantined] == [
        (10, f"row 10 (line 11): column 'description' is longer than {limit}"),
        (20, f"row 20 (lines 21-22): column 'description' is longer than {limit}"),
        (30, f"row 30 (line 32): column 'notes' is 4,200 bytes, longer than {limit}"),
        (40, f"row 40 (lines 42-43): column 'description' is longer than {limit}"),
    ]
    first = quarantined[0].raw
    assert first["cut_at_field_limit"] is True
    assert first["fields"][:2] == ["L-00010", rows[9]["created_at"]]
    assert first["fields"][14].startswith("x" * 1000 + "... [cut: ")  # kept cut to 1,000 characters
    assert quarantined[2].raw["notes"].startswith("\u00e9" * 1000 + "... [cut: 2,100 characters]")
    assert quarantined[2].raw["lead_id"] == "L-00030"
    lead_ids = _lead_ids(engine)
    assert len(lead_ids) == 46
    assert {"L-00011", "L-00021", "L-00031", "L-00041", "L-00050"} <= lead_ids  # the rows after each one


def test_text_longer_than_its_column_is_refused_the_same_on_sqlite_and_postgresql(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    rows = lead_rows(3)
    rows[0]["lead_id"] = "L-" + "9" * 200  # the key: VARCHAR(128)
    rows[1]["industry"] = "i" * 65  # optional: VARCHAR(64)
    path = write_csv(tmp_path / "leads.csv", rows)
    summary = import_file(path, "leads", org_id)
    assert (summary.imported, summary.quarantined, summary.with_field_errors) == (2, 1, 1)
    assert summary.quarantine_notes[0].reason == (
        "column 'lead_id': 202 characters, longer than the 128 this column holds"
    )
    with engine.connect() as conn:
        lead = conn.execute(sa.select(Lead).where(Lead.external_id == "L-00002")).one()
    assert lead.industry is None
    assert lead.attributes[FIELD_ERRORS_KEY]["industry"] == {
        "raw": "i" * 65,
        "error": "65 characters, longer than the 64 this column holds",
    }


def test_nul_characters_in_parquet_strings_quarantine_their_row(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    table = pa.table(
        {
            "lead_id": ["L-1", "L-2", "L-3"],
            "created_at": ["2026-01-05", "2026-01-06", "2026-01-07"],
            "description": ["fine", "not\x00fine", "fine too"],
        }
    )
    path = tmp_path / "leads.parquet"
    pq.write_table(table, path)
    summary = import_file(path, "leads", org_id)
    assert (summary.imported, summary.quarantined) == (2, 1)
    assert [(q.row_number, q.reason, q.raw["description"]) for q in _quarantined(engine)] == [
        (2, "row 2: NUL character in column 'description'", "not\\x00fine")
    ]


def test_user_text_is_printed_as_text_never_read_as_markup(engine: sa.Engine, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["org", "create", "[bold]Acme[/]"]).exit_code == 0
    rows = [{**row, "[/x] notes [red]": "[/y]"} for row in lead_rows(3)]
    rows[2]["created_at"] = "[/when]"
    path = write_csv(tmp_path / "leads [red]x[white].csv", rows)

    result = runner.invoke(main, ["import", "leads", str(path), "--org", "[bold]Acme[/]"])

    assert result.exit_code == EXIT_QUARANTINED, result.output
    assert "MarkupError" not in result.output
    assert f"{path}: 3 rows read for organization 1 ([bold]Acme[/]): 2 imported" in result.stdout
    assert "row 3 (line 4): column 'created_at': cannot parse '[/when]'" in result.stderr
    with engine.connect() as conn:
        assert conn.scalar(sa.select(Lead.attributes).where(Lead.external_id == "L-00001")) == {
            "[/x]_notes_[red]": "[/y]"
        }
    # a file-level error quotes the header: one line, as written
    broken = write_bytes(tmp_path / "dup.csv", b"month,revenue,[/x],[/X]\n2026-01,1,2,3\n")
    failed = runner.invoke(main, ["import", "sales", str(broken), "--org", "1"])
    assert failed.exit_code == 1
    assert failed.output == f"error: {broken}: column '[/x]' appears more than once in the header\n"


def test_a_header_with_markup_on_a_terminal_shows_the_progress_bar_without_a_traceback(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    import os
    import pty
    import subprocess
    import sys

    rows = [{**row, "[/x]": "[/y]"} for row in lead_rows(2_000)]
    path = write_csv(tmp_path / "leads[red].csv", rows)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "neuracrm-mlops"),
            "import",
            "leads",
            str(path),
            "--org",
            str(org_id),
        ],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={
            **os.environ,
            "NEURACRM_DB_URL": engine.url.render_as_string(hide_password=False),
            "NEURACRM_IMPORT_CHUNK_ROWS": "100",
            "TERM": "xterm-256color",
        },
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            block = os.read(controller, 65536)
        except OSError:  # the other end closed: the process ended
            break
        if not block:
            break
        output += block
    os.close(controller)
    assert process.wait(timeout=120) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "Traceback" not in text and "MarkupError" not in text
    assert "importing leads[red].csv" in text  # the bar was drawn, its file name not read as a style
    assert "2,000 rows read" in text and "2,000 imported" in text


def test_a_piped_import_prints_a_progress_line_per_interval(
    engine: sa.Engine, org_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuracrm_mlops.config import reset_settings

    monkeypatch.setenv("NEURACRM_IMPORT_PROGRESS_SECONDS", "0")  # a line after every chunk
    monkeypatch.setenv("NEURACRM_IMPORT_CHUNK_ROWS", "100")
    reset_settings()
    csv_path = write_csv(tmp_path / "leads.csv", lead_rows(1_000))
    parquet_path = tmp_path / "leads.parquet"
    pq.write_table(pa.table({k: [r[k] for r in lead_rows(450)] for k in LEAD_HEADER}), parquet_path)
    runner = CliRunner()

    from_csv = runner.invoke(main, ["import", "leads", str(csv_path), "--org", str(org_id)])
    from_parquet = runner.invoke(main, ["import", "leads", str(parquet_path), "--org", "Other Org"])

    assert from_csv.exit_code == 0 and from_parquet.exit_code == 0, from_csv.output + from_parquet.output
    progress, notes = [], []
    for line in from_csv.stderr.splitlines():
        (progress if line.startswith("leads.csv: ") else notes).append(line)
    # no Airflow configured: one note that the asset event was skipped, and nothing else
    assert len(notes) == 1 and "asset event" in notes[0] and "NEURACRM_AIRFLOW_API_URL" in notes[0], notes
    lines = progress
    # nine lines (chunks 1 to 9; the summary follows the last), the total estimated from the bytes read
    assert [line.split(" of ")[0] for line in lines] == [f"leads.csv: {n * 100:,}" for n in range(1, 10)]
    for line in lines:
        assert re.fullmatch(r"leads\.csv: [\d,]+ of ~[\d,]+ rows read \(\d+ s\)", line), line
        estimate = int(line.split("~")[1].split(" ")[0].replace(",", ""))
        assert 900 <= estimate <= 1_100, line
    assert from_csv.stdout.startswith(f"{csv_path}: 1,000 rows read")  # stdout: only the summary
    assert re.findall(r"[\d,]+ of [\d,]+ rows", from_parquet.stderr) == [
        "100 of 450 rows",
        "200 of 450 rows",
        "300 of 450 rows",
        "400 of 450 rows",
    ]


def test_a_file_name_that_is_not_utf8_is_imported_and_printed_written_out(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    path = Path(os.fsdecode(bytes(tmp_path) + b"/leads-soci\xe9t\xe9.csv"))  # a Latin-1 file name
    write_csv(path, lead_rows(3))
    runner = CliRunner()

    result = runner.invoke(main, ["import", "leads", str(path), "--org", str(org_id)])

    assert result.exit_code == 0, result.output
    shown = f"{tmp_path}/leads-soci\\xe9t\\xe9.csv"
    assert result.stdout.startswith(f"{shown}: 3 rows read")
    with engine.connect() as conn:
        assert conn.scalar(sa.select(ImportBatch.source_file)) == shown
    missing = runner.invoke(main, ["import", "leads", str(path) + "x", "--org", str(org_id)])
    assert missing.exit_code == 1 and missing.output == f"error: {shown}x: no such file\n"


def test_byte_offsets_count_a_byte_order_mark_and_crlf_line_ends(
    engine: sa.Engine, org_id: int, tmp_path: Path
) -> None:
    rows = lead_rows(5)
    rows[1]["job_title"] = "Gérante"
    data = b"\xef\xbb\xbf" + csv_bytes(rows).replace(b"\n", b"\r\n")  # Excel's "CSV UTF-8"
    data = data.replace(b"L-00003,", b"L-00003,\x00", 1)
    path = write_bytes(tmp_path / "leads.csv", data)
    summary = import_file(path, "leads", org_id)
    assert (summary.imported, summary.quarantined) == (4, 1)
    assert summary.quarantine_notes[0].location == "row 3 (line 4)"
    nul_at = data.index(b"\x00")  # counted from the file's first byte, the BOM and each "\r" included
    assert summary.quarantine_notes[0].reason == f"NUL byte in column 'created_at' at byte offset {nul_at}"
    with engine.connect() as conn:
        assert conn.scalar(sa.select(Lead.job_title).where(Lead.external_id == "L-00002")) == "Gérante"
