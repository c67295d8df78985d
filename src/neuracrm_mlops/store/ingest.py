"""Import CRM files (CSV or Parquet) into the store, scoped to one organization.

- Columns are documented in the README ("Import file formats"); header names are matched after
  trimming, lower-casing and turning spaces into underscores.
- Unknown columns are kept, per row, in the ``attributes`` JSON (never dropped).
- Idempotent: rows upsert on their natural key (organization + id, or organization + month); a row
  whose content did not change is counted ``unchanged`` and not written.
- A row whose key or a required column is empty or does not parse, or whose key is already in the
  file, goes to the ``quarantine`` table with its raw values and the reason.
- An optional column that does not parse does not cost the row: it is stored empty (NULL), its raw
  value and the error are kept in ``attributes["_field_errors"]`` (FIELD_ERRORS_KEY, a reserved
  column name), and the summary counts those rows per column.
- A row that cannot be stored as read is quarantined too, and the rest of the file imports, on
  SQLite and PostgreSQL alike: a NUL byte (PostgreSQL refuses it), bytes that are not UTF-8 (both
  named with their column and byte offset in the file), a cell longer than
  NEURACRM_IMPORT_MAX_FIELD_BYTES. Its raw values are kept with NUL and undecodable bytes written
  out (``\\x00``, ``\\xff``). A text longer than its database column (``VARCHAR(n)``) is a value
  that does not parse (PostgreSQL refuses it; SQLite would keep it).
- File-level problems (missing file, wrong kind, empty, a header that is not UTF-8 text, missing
  required column, ...) raise ImportFileError before anything is written; the whole import runs in
  one transaction, so a failure midway leaves the database as it was.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.errors import ImportFileError
from neuracrm_mlops.store.db.engine import get_engine
from neuracrm_mlops.store.db.migrate import require_current_schema
from neuracrm_mlops.store.db.schema import (
    ImportBatch,
    Interaction,
    Lead,
    MonthlySales,
    QuarantinedRow,
    utcnow,
)
from neuracrm_mlops.store.orgs import resolve_organization


@dataclass(frozen=True)
class ImportProgress:
    """How far an import is: rows read, and units done of the total (bytes of a CSV file, rows of a
    Parquet file), from which the number of rows a CSV file holds is estimated."""

    rows_read: int
    done: int
    total: int | None
    unit: str  # bytes | rows

    @property
    def expected_rows(self) -> int | None:
        """The file's rows: exact for Parquet, estimated from the bytes read so far for CSV."""
        if self.unit == "rows":
            return self.total
        if not self.total or not self.done or not self.rows_read:
            return None
        return max(self.rows_read, round(self.rows_read * self.total / self.done))


ProgressCallback = Callable[[ImportProgress], None]
"""Called after each chunk of rows is written, and once at the end."""


class RowError(ValueError):
    """One value in one row cannot be parsed; the message names the column and the value."""


FIELD_ERRORS_KEY = "_field_errors"
"""The ``attributes`` key under which a row keeps its optional fields that did not parse:
``{"pages_viewed": {"raw": "2.67", "error": "expected a whole number, got '2.67' (...)"}}``. The
name is reserved: a file with a column of that name is refused (``_check_header``)."""


# ---------------------------------------------------------------------------------------------
# Value parsers: accept the text of a CSV cell or the native value of a Parquet cell.


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def parse_text(value: Any) -> str | None:
    if _blank(value):
        return None
    return str(value).strip()


# Numbers are ASCII digits with an optional sign, a dot for decimals and an optional exponent; no
# thousands separators (``1,234``, ``1'234``, ``1 234``, ``1_234``) and no decimal commas (``2,5``).
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_LOCALE_MARKS = re.compile(r"[,'_\s\u00a0\u2009\u202f\u2019]")
_NON_FINITE = {"nan", "inf", "infinity"}
_LOCALE_HINT = "numbers use a dot for decimals and no thousands separator"

# Whole numbers are stored in 32-bit integer columns (PostgreSQL ``integer``).
WHOLE_NUMBER_MIN = -(2**31)
WHOLE_NUMBER_MAX = 2**31 - 1
_TOO_LARGE = f"too large to store: whole numbers go from {WHOLE_NUMBER_MIN:,} to {WHOLE_NUMBER_MAX:,}"


def _number_text(value: Any, expected: str) -> Decimal:
    """The exact value of a number written as text; the RowError says why it is not one."""
    text = str(value).strip()
    if _NUMBER_TEXT.fullmatch(text):
        return Decimal(text)
    if text.lower().lstrip("+-") in _NON_FINITE:
        raise RowError(f"expected {expected}, got {value!r} (not a finite number)")
    without_marks = _LOCALE_MARKS.sub("", text)
    if without_marks != text and _NUMBER_TEXT.fullmatch(without_marks):
        raise RowError(f"expected {expected}, got {value!r} ({_LOCALE_HINT})")
    raise RowError(f"expected {expected}, got {value!r}")


def parse_int(value: Any) -> int | None:
    """A whole number. ``2.0`` (or a Parquet double 2.0) is 2; ``2.67`` is refused (a fractional part)."""
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise RowError(f"expected a whole number, got {value!r}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise RowError(f"expected a whole number, got {value!r} (not a finite number)")
        number = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise RowError(f"expected a whole number, got {value!r} (not a finite number)")
        number = value
    else:
        number = _number_text(value, "a whole number")
    # adjusted() is the power of ten of the leading digit: checked first, so that ``1e999999999``
    # is refused without building a billion-digit integer.
    if number != 0 and number.adjusted() > 18:
        raise RowError(f"expected a whole number, got {value!r} ({_TOO_LARGE})")
    if number != number.to_integral_value():
        raise RowError(f"expected a whole number, got {value!r} (it has a fractional part)")
    whole = int(number)
    if not WHOLE_NUMBER_MIN <= whole <= WHOLE_NUMBER_MAX:
        raise RowError(f"expected a whole number, got {value!r} ({_TOO_LARGE})")
    return whole


def parse_float(value: Any) -> float | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise RowError(f"expected a number, got {value!r}")
    if isinstance(value, int | float | Decimal):
        number = float(value)
    else:
        number = float(_number_text(value, "a number"))
    if not math.isfinite(number):
        raise RowError(f"expected a finite number, got {value!r}")
    return number


_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def parse_bool(value: Any) -> bool | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RowError(f"expected true/false (or yes/no, 1/0), got {value!r}")


def parse_timestamp(value: Any) -> dt.datetime | None:
    """ISO 8601 date or date-time; values without a zone are taken as UTC."""
    if _blank(value):
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise RowError(
                f"cannot parse {text!r} as a date or timestamp (use ISO 8601, e.g. 2026-03-14T09:30:00Z)"
            ) from None
    if hasattr(parsed, "to_pydatetime"):  # pandas.Timestamp
        parsed = parsed.to_pydatetime()
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def parse_month(value: Any) -> dt.date | None:
    """A calendar month: ``YYYY-MM`` or the first day of it (``YYYY-MM-01``)."""
    if _blank(value):
        return None
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        if value.day != 1:
            raise RowError(f"a month must be the first day of the month, got {value.isoformat()!r}")
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m", "%Y-%m-%d"):
        try:
            parsed = dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        if parsed.day != 1:
            raise RowError(f"a month must be YYYY-MM (or YYYY-MM-01), got {text!r}")
        return parsed
    raise RowError(f"cannot parse {text!r} as a month (use YYYY-MM, e.g. 2026-03)")


def coerce_attribute(value: Any) -> Any:
    """Unknown columns keep their value: CSV text becomes a bool, int or float when it reads as one."""
    if _blank(value):
        return None
    if isinstance(value, bool | int | str):
        if not isinstance(value, str):
            return value
        text = value.strip()
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    if isinstance(value, float | Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


# ---------------------------------------------------------------------------------------------
# Dataset specifications


@dataclass(frozen=True)
class ColumnSpec:
    name: str  # the column name in the file
    parse: Callable[[Any], Any]
    required: bool = False
    target: str | None = None  # the database column, when it differs from ``name``

    @property
    def db_column(self) -> str:
        return self.target or self.name


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    table: sa.Table
    columns: tuple[ColumnSpec, ...]
    key: str  # the file column that, with the organization, identifies a row

    @cached_property
    def max_chars(self) -> dict[str, int]:
        """File column -> the most characters its database column holds (``VARCHAR(n)``). PostgreSQL
        refuses a longer value (and with it the whole import); SQLite would keep it: so a longer
        value is a RowError like any value that does not parse, on both stores."""
        limits = {}
        for column in self.columns:
            length = getattr(self.table.c[column.db_column].type, "length", None)
            if isinstance(length, int):
                limits[column.name] = length
        return limits

    @property
    def by_name(self) -> dict[str, ColumnSpec]:
        return {column.name: column for column in self.columns}

    @property
    def required(self) -> list[str]:
        return [column.name for column in self.columns if column.required]

    @property
    def key_db_column(self) -> str:
        return self.by_name[self.key].db_column


DATASETS: dict[str, DatasetSpec] = {
    "leads": DatasetSpec(
        name="leads",
        table=Lead.__table__,  # type: ignore[arg-type]
        key="lead_id",
        columns=(
            ColumnSpec("lead_id", parse_text, required=True, target="external_id"),
            ColumnSpec("created_at", parse_timestamp, required=True),
            ColumnSpec("industry", parse_text),
            ColumnSpec("company_employees", parse_int),
            ColumnSpec("company_revenue", parse_float),
            ColumnSpec("email_opens", parse_int),
            ColumnSpec("website_visits", parse_int),
            ColumnSpec("pages_viewed", parse_int),
            ColumnSpec("time_on_site_seconds", parse_float),
            ColumnSpec("days_since_last_activity", parse_int),
            ColumnSpec("job_title", parse_text),
            ColumnSpec("seniority", parse_text),
            ColumnSpec("timeline", parse_text),
            ColumnSpec("budget_signal", parse_text),
            ColumnSpec("description", parse_text),
            ColumnSpec("source", parse_text),
            ColumnSpec("region", parse_text),
            ColumnSpec("converted", parse_bool),
            ColumnSpec("converted_at", parse_timestamp),
        ),
    ),
    "sales": DatasetSpec(
        name="sales",
        table=MonthlySales.__table__,  # type: ignore[arg-type]
        key="month",
        columns=(
            ColumnSpec("month", parse_month, required=True),
            ColumnSpec("revenue", parse_float, required=True),
        ),
    ),
    "interactions": DatasetSpec(
        name="interactions",
        table=Interaction.__table__,  # type: ignore[arg-type]
        key="interaction_id",
        columns=(
            ColumnSpec("interaction_id", parse_text, required=True, target="external_id"),
            ColumnSpec("text", parse_text, required=True),
            ColumnSpec("created_at", parse_timestamp, required=True),
            ColumnSpec("lead_id", parse_text, target="lead_external_id"),
            ColumnSpec("channel", parse_text),
            ColumnSpec("sentiment_label", parse_text),
        ),
    ),
}


def normalize_header(name: str) -> str:
    return "_".join(str(name).strip().lower().split())


def content_hash(record: Mapping[str, Any]) -> str:
    """A stable hash of a row's values (keys sorted), to tell an unchanged re-import from an update."""
    payload = json.dumps(record, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"cannot hash {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# Reading files


@dataclass
class SourceRow:
    number: int  # 1-based data row, header excluded
    values: dict[str, Any] | None  # header name -> raw value; None when the row is quarantined as read
    raw: dict[str, Any]  # what goes to quarantine (storable: see storable_text)
    location: str  # e.g. "row 17 (line 18)"
    error: str | None = None


@dataclass
class SourceFile:
    path: Path
    kind: str  # csv | parquet
    header: list[str]
    total_units: int | None
    rows: Iterator[SourceRow]
    position: Callable[[], int]

    @property
    def unit(self) -> str:
        """What ``position`` and ``total_units`` count: bytes of a CSV file, rows of a Parquet one."""
        return "bytes" if self.kind == "csv" else "rows"


FIELD_LIMIT_SETTING = "NEURACRM_IMPORT_MAX_FIELD_BYTES"
_UTF8_BOM = b"\xef\xbb\xbf"
_HEAD_BYTES = 8192
# Bytes that are not UTF-8 are decoded with errors="surrogateescape": each arrives as one of these.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_CSV_FIELD_LIMIT_ERROR = "field larger than field limit"
_KEPT_CHARS = 1_000  # an over-long cell is kept in quarantine cut to this many characters
_UTF8_HINT = "import reads UTF-8 text: save the file as UTF-8"


def _detect_kind(path: Path) -> str:
    if not path.exists():
        raise ImportFileError(f"{path}: no such file")
    if path.is_dir():
        raise ImportFileError(f"{path}: is a directory, not a file")
    if path.stat().st_size == 0:
        raise ImportFileError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
    is_parquet = head.startswith(b"PAR1")
    if suffix in (".parquet", ".pq"):
        if not is_parquet:
            raise ImportFileError(f"{path}: named {suffix} but is not a Parquet file (no PAR1 magic bytes)")
        return "parquet"
    if suffix in (".csv", ".txt"):
        if is_parquet:
            raise ImportFileError(f"{path}: named {suffix} but holds Parquet data; rename it to .parquet")
        problem = _header_bytes_problem(head)
        if problem:
            raise ImportFileError(f"{path}: not a CSV file ({problem})")
        return "csv"
    raise ImportFileError(
        f"{path}: unsupported file kind {suffix or '(no extension)'!r}: use .csv or .parquet"
    )


def _header_bytes_problem(head: bytes) -> str | None:
    """Why the first line of ``head`` (the start of a file) is not a CSV header, or None.

    Only the header decides that a file is not text at all (an image, a zip, UTF-16): a NUL byte or
    a byte that is not UTF-8 in a data row costs that row only (quarantined, see _CsvRows)."""
    first_line, newline, _ = head.partition(b"\n")
    if b"\x00" in first_line:
        return "NUL bytes in the header row: binary data, or text that is not UTF-8 such as UTF-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(first_line, final=bool(newline))
    except UnicodeDecodeError as exc:
        return f"the header row has bytes that are not UTF-8 text at byte offset {exc.start}; {_UTF8_HINT}"
    return None


def _check_header(path: Path, header: Sequence[str]) -> list[str]:
    names = [normalize_header(name) for name in header]
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name:
            raise ImportFileError(f"{path}: header column {position} has no name")
        if "\x00" in name or _UNDECODABLE.search(name):
            shown = storable_text(name[:60]) + ("..." if len(name) > 60 else "")
            raise ImportFileError(
                f"{path}: header column {position} '{shown}' has a NUL byte or bytes that are not "
                f"UTF-8 text; {_UTF8_HINT}"
            )
        if name in seen:
            raise ImportFileError(f"{path}: column {name!r} appears more than once in the header")
        if name == FIELD_ERRORS_KEY:
            raise ImportFileError(
                f"{path}: column {position} {name!r} has a reserved name (import keeps the fields that do "
                f"not parse under attributes[{FIELD_ERRORS_KEY!r}]): rename the column"
            )
        seen.add(name)
    return names


def storable_text(text: str, *, cut: bool = False) -> str:
    """``text`` as a quarantined row keeps it: PostgreSQL refuses NUL in text and JSON, and a byte that
    is not UTF-8 cannot be encoded at all, so they are written out as ``\\x00`` and ``\\xff``. With
    ``cut``, an over-long value keeps its first _KEPT_CHARS characters and says how long it was."""
    if not text.isascii():
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = text.replace("\x00", "\\x00")
    if cut and len(text) > _KEPT_CHARS:
        text = f"{text[:_KEPT_CHARS]}... [cut: {len(text):,} characters]"
    return text


def _columns(names: Sequence[str]) -> str:
    if len(names) == 1:
        return f"column {names[0]!r}"
    return "columns " + ", ".join(repr(name) for name in names)


def _cell_names(header: Sequence[str], count: int) -> list[str]:
    """The column name of each cell of a row with ``count`` cells (more than the header: "field N")."""
    return [header[i] if i < len(header) else f"field {i + 1}" for i in range(count)]


def _field_limit_reason(what: str, limit: int, size: int | None = None) -> str:
    """Why a cell is refused: ``what`` is e.g. "column 'description'"; ``size`` its bytes, when known."""
    length = f"is {size:,} bytes, longer than" if size is not None else "is longer than"
    return (
        f"{what} {length} the field size limit of {limit:,} bytes "
        f"({FIELD_LIMIT_SETTING}; raise it to import this row)"
    )


def _over_limit_cells(names: Sequence[str], cells: Sequence[Any], limit: int) -> list[str]:
    """The reason(s) for text cells longer than ``limit`` UTF-8 bytes (none: an empty list)."""
    sizes: dict[str, int] = {}
    for name, cell in zip(names, cells, strict=True):
        # a character is at most 4 UTF-8 bytes: only a cell longer than limit/4 can be over the limit
        if isinstance(cell, str) and len(cell) * 4 > limit:
            size = len(cell.encode("utf-8", "surrogateescape"))
            if size > limit:
                sizes[name] = size
    if not sizes:
        return []
    only_size = next(iter(sizes.values())) if len(sizes) == 1 else None
    return [_field_limit_reason(_columns(list(sizes)), limit, only_size)]


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """Python's csv module keeps one process-wide field size limit (131,072 characters by default):
    set to NEURACRM_IMPORT_MAX_FIELD_BYTES while a file is read, then put back."""
    before = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(before)


class _CsvLines:
    """The lines of a CSV file, handed one at a time to ``csv.reader``, counting what a quarantined row
    must say about where it is: the line number and byte offset at which the current record starts,
    and whether its lines hold a NUL byte, a byte that is not UTF-8, or any non-ASCII character.

    The file is decoded with ``errors="surrogateescape"``: a byte that is not UTF-8 arrives as a lone
    surrogate in its own cell, so it costs its row. (A strict decoder fails the whole file, and as it
    decodes 8 KB blocks ahead of the csv reader, its error named a row far from the bad byte.)"""

    def __init__(self, text: IO[str], offset: int) -> None:
        self._text = text
        self.offset = offset  # bytes of the file consumed so far (a BOM included)
        self.line_number = 0  # lines consumed so far
        self.record_offset = offset
        self.record_line = 1
        self.suspect = False  # the current record has a NUL byte or a byte that is not UTF-8
        self.non_ascii = False  # ... has a character that takes more than one byte

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = self._text.readline()
        if not line:
            raise StopIteration
        self.line_number += 1
        if line.isascii():
            self.offset += len(line)
        else:
            self.non_ascii = True
            try:
                self.offset += len(line.encode("utf-8"))
            except UnicodeEncodeError:  # a lone surrogate: a byte of the file that is not UTF-8
                self.offset += len(line.encode("utf-8", "surrogateescape"))
                self.suspect = True
        if "\x00" in line:
            self.suspect = True
        return line

    def begin_record(self) -> None:
        self.record_offset = self.offset
        self.record_line = self.line_number + 1
        self.suspect = self.non_ascii = False

    def location(self, number: int) -> str:
        first, last = self.record_line, self.line_number
        return f"row {number} (line {first})" if last <= first else f"row {number} (lines {first}-{last})"


class _CsvRows:
    """The data rows of a CSV file as SourceRows. A row that cannot be stored as read is returned with
    ``values=None`` and the reason (so it is quarantined, and the rest of the file imports): a NUL byte
    or bytes that are not UTF-8 (named by column and byte offset in the file), a cell over
    NEURACRM_IMPORT_MAX_FIELD_BYTES, or a field count that differs from the header's."""

    def __init__(self, path: Path, header: list[str], lines: _CsvLines, max_field_bytes: int) -> None:
        self.path = path
        self.header = header
        self.lines = lines
        self.limit = max_field_bytes
        self.reader = csv.reader(lines)
        self._bytes: IO[bytes] | None = None  # a second handle: reads a bad record's bytes again

    def record_bytes(self) -> bytes:
        if self._bytes is None:
            self._bytes = self.path.open("rb")
        self._bytes.seek(self.lines.record_offset)
        return self._bytes.read(self.lines.offset - self.lines.record_offset)

    def close(self) -> None:
        if self._bytes is not None:
            self._bytes.close()

    def __iter__(self) -> Iterator[SourceRow]:
        number = 0
        try:
            with _csv_field_limit(self.limit):
                while True:
                    self.lines.begin_record()
                    try:
                        record = next(self.reader)
                    except StopIteration:
                        return
                    except csv.Error as exc:
                        if not str(exc).startswith(_CSV_FIELD_LIMIT_ERROR):
                            location = self.lines.location(number + 1)
                            raise ImportFileError(f"{self.path}: {location}: {exc}") from None
                        number += 1
                        yield self._over_long_row(number)
                        continue
                    if not record or (len(record) == 1 and record[0].strip() == ""):
                        continue  # blank line: not a row
                    number += 1
                    yield self._row(number, record)
        finally:
            self.close()

    def _row(self, number: int, record: list[str]) -> SourceRow:
        location = self.lines.location(number)
        fits = len(record) == len(self.header)
        if fits and not (self.lines.suspect or self.lines.non_ascii):
            # the common case: clean ASCII, within the limit (csv counted its characters)
            values = dict(zip(self.header, record, strict=True))
            return SourceRow(number, values, dict(values), location)
        problems: list[str] = []
        if not fits:
            problems.append(f"has {len(record)} fields but the header has {len(self.header)}")
        names = _cell_names(self.header, len(record))
        if self.lines.suspect:
            problems += _byte_problems(names, record, self.record_bytes(), self.lines.record_offset)
        if self.lines.non_ascii:
            problems += _over_limit_cells(names, record, self.limit)
        if not problems:
            values = dict(zip(self.header, record, strict=True))
            return SourceRow(number, values, dict(values), location)
        cells = [storable_text(cell, cut=True) for cell in record]
        raw: dict[str, Any] = (
            dict(zip(self.header, cells, strict=True))
            if len(record) == len(self.header)
            else {"fields": cells}
        )
        return SourceRow(number, None, raw, location, "; ".join(problems))

    def _over_long_row(self, number: int) -> SourceRow:
        """The csv reader stopped at a field over the limit: skip the rest of the record, and name the
        column(s) from the text read so far (parsed again, with room for it)."""
        head = self.record_bytes()
        suspect = self.lines.suspect
        text = head.decode("utf-8", "surrogateescape")
        quotes = text.count('"')
        while quotes % 2:  # inside a quoted field: it (and its record) goes on to a later line
            line = next(self.lines, None)
            if line is None:
                break
            quotes += line.count('"')
        location = self.lines.location(number)
        before = csv.field_size_limit(len(text) + 1)
        try:
            fields = next(csv.reader(io.StringIO(text, newline="")), [])
        finally:
            csv.field_size_limit(before)
        names = _cell_names(self.header, len(fields))
        too_long = [name for name, cell in zip(names, fields, strict=True) if len(cell) >= self.limit]
        problems = [_field_limit_reason(_columns(too_long) if too_long else "a cell", self.limit)]
        if suspect:
            problems += _byte_problems(names, fields, head, self.lines.record_offset)
        raw = {"fields": [storable_text(cell, cut=True) for cell in fields], "cut_at_field_limit": True}
        return SourceRow(number, None, raw, location, "; ".join(problems))


def _byte_problems(names: Sequence[str], cells: Sequence[str], record: bytes, offset: int) -> list[str]:
    """NUL bytes and bytes that are not UTF-8 in a record's cells, named by column and by the byte
    offset (0-based, from the start of the file) of the first one; ``record`` holds the record's bytes
    as they are in the file from ``offset``."""
    problems = []
    nul = [name for name, cell in zip(names, cells, strict=True) if "\x00" in cell]
    if nul:
        first_nul = offset + record.find(b"\x00")
        problems.append(f"NUL byte in {_columns(nul)} at byte offset {first_nul}")
    undecodable = [
        name
        for name, cell in zip(names, cells, strict=True)
        if not cell.isascii() and _UNDECODABLE.search(cell)
    ]
    if undecodable:
        try:
            record.decode("utf-8")
            at = ""
        except UnicodeDecodeError as exc:
            at = f" at byte offset {offset + exc.start}"
        problems.append(f"bytes that are not valid UTF-8 in {_columns(undecodable)}{at} ({_UTF8_HINT})")
    return problems


def _open_csv(path: Path, max_field_bytes: int) -> SourceFile:
    raw = path.open("rb")
    offset = len(_UTF8_BOM) if raw.read(len(_UTF8_BOM)) == _UTF8_BOM else 0
    raw.seek(0)
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
    lines = _CsvLines(text, offset)
    try:
        with _csv_field_limit(max_field_bytes):
            lines.begin_record()
            header_row = next(csv.reader(lines), None)
    except csv.Error as exc:
        raw.close()
        reason = (
            _field_limit_reason("a header cell", max_field_bytes)
            if str(exc).startswith(_CSV_FIELD_LIMIT_ERROR)
            else str(exc)
        )
        raise ImportFileError(f"{path}: cannot read the CSV header: {reason}") from None
    if header_row is None or not any(cell.strip() for cell in header_row):
        raw.close()
        raise ImportFileError(f"{path}: the file is empty (no header row)")
    try:
        header = _check_header(path, header_row)
    except ImportFileError:
        raw.close()
        raise
    rows = _CsvRows(path, header, lines, max_field_bytes)

    def read_rows() -> Iterator[SourceRow]:
        try:
            yield from rows
        finally:
            raw.close()

    return SourceFile(path, "csv", header, path.stat().st_size, read_rows(), lambda: lines.offset)


def _parquet_problems(values: Mapping[str, Any], limit: int) -> list[str]:
    """NUL characters (PostgreSQL refuses them) and over-long text in a Parquet row's string cells."""
    texts = {name: value for name, value in values.items() if isinstance(value, str)}
    problems = []
    nul = [name for name, value in texts.items() if "\x00" in value]
    if nul:
        problems.append(f"NUL character in {_columns(nul)}")
    return problems + _over_limit_cells(list(texts), list(texts.values()), limit)


def _open_parquet(path: Path, chunk_rows: int, max_field_bytes: int) -> SourceFile:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise ImportFileError(f"{path}: not a readable Parquet file: {exc}") from None
    header = _check_header(path, parquet.schema_arrow.names)
    total = parquet.metadata.num_rows
    done = 0

    def rows() -> Iterator[SourceRow]:
        nonlocal done
        number = 0
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            for record in batch.to_pylist():
                number += 1
                done = number
                values = {normalize_header(k): v for k, v in record.items()}
                raw = {k: coerce_attribute(v) for k, v in values.items()}
                problems = _parquet_problems(values, max_field_bytes)
                if problems:
                    storable = {
                        k: storable_text(v, cut=True) if isinstance(v, str) else v for k, v in raw.items()
                    }
                    yield SourceRow(number, None, storable, f"row {number}", "; ".join(problems))
                    continue
                yield SourceRow(number, values, raw, f"row {number}")

    return SourceFile(path, "parquet", header, total, rows(), lambda: done)


def open_source(path: Path, chunk_rows: int, max_field_bytes: int) -> SourceFile:
    kind = _detect_kind(path)
    if kind == "csv":
        return _open_csv(path, max_field_bytes)
    return _open_parquet(path, chunk_rows, max_field_bytes)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Parsing rows


@dataclass(frozen=True)
class FieldError:
    """An optional field that did not parse: stored empty, its raw value kept under FIELD_ERRORS_KEY."""

    raw: Any  # the cell as read (CSV: the text; Parquet: its JSON-safe value)
    error: str

    def as_json(self) -> dict[str, Any]:
        return {"raw": self.raw, "error": self.error}


@dataclass
class ParsedRow:
    record: dict[str, Any]  # database column -> value, for the dataset's columns present in the file
    attributes: dict[str, Any]  # the unknown columns (without FIELD_ERRORS_KEY)
    field_errors: dict[str, FieldError]  # file column -> its error; the column is None in ``record``


def parse_row(spec: DatasetSpec, values: Mapping[str, Any]) -> ParsedRow:
    """Parse one row. Raises RowError (the row is quarantined) when the key or a required column is
    empty or does not parse, naming every such column; an optional column that does not parse is
    stored empty and reported in ``field_errors`` instead."""
    known = spec.by_name
    record: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    field_errors: dict[str, FieldError] = {}
    problems: list[str] = []
    for name, value in values.items():
        column = known.get(name)
        if column is None:
            coerced = coerce_attribute(value)
            if coerced is not None:
                attributes[name] = coerced
            continue
        keeps_row = column.required or name == spec.key
        try:
            parsed = column.parse(value)
            limit = spec.max_chars.get(name)
            if limit is not None and isinstance(parsed, str) and len(parsed) > limit:
                raise RowError(f"{len(parsed):,} characters, longer than the {limit:,} this column holds")
        except RowError as exc:
            if keeps_row:
                problems.append(f"column {name!r}: {exc}")
            else:
                raw = value if isinstance(value, str) else coerce_attribute(value)
                field_errors[name] = FieldError(raw, str(exc))
                record[column.db_column] = None
            continue
        if parsed is None and keeps_row:
            problems.append(f"column {name!r}: required but empty")
            continue
        record[column.db_column] = parsed
    if problems:
        raise RowError("; ".join(problems))
    return ParsedRow(record, attributes, field_errors)


def merge_field_errors(
    spec: DatasetSpec,
    stored: Mapping[str, Any] | None,
    record: Mapping[str, Any],
    field_errors: Mapping[str, FieldError],
) -> dict[str, Any]:
    """The FIELD_ERRORS_KEY value after an update: a column present in the file replaces its stored
    error (or clears it when it now parses); columns absent from the file keep theirs, as their values."""
    merged = dict(stored) if isinstance(stored, Mapping) else {}
    for column in spec.columns:
        if column.db_column in record:
            merged.pop(column.name, None)
    merged.update({name: error.as_json() for name, error in field_errors.items()})
    return merged


# ---------------------------------------------------------------------------------------------
# Import


@dataclass
class QuarantineNote:
    location: str
    reason: str


@dataclass
class FieldErrorCount:
    """The rows of one import whose optional column ``column`` did not parse (stored empty)."""

    column: str
    rows: int
    first_location: str  # e.g. "row 3 (line 4)"
    first_error: str


@dataclass
class ImportSummary:
    dataset: str
    organization_id: int
    organization_name: str
    file: str
    file_format: str
    batch_id: int
    rows_read: int = 0
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    # rows kept (imported, updated or unchanged) with one or more field errors, and the count per
    # column; they describe the file, so a re-import of the same file reports them again
    with_field_errors: int = 0
    field_errors: dict[str, FieldErrorCount] = field(default_factory=dict)
    seconds: float = 0.0
    quarantine_notes: list[QuarantineNote] = field(default_factory=list)
    file_sha256: str = ""  # of the file's bytes (also in import_batches), e.g. for the asset event

    MAX_NOTES = 20


def _insert_ignore(conn: sa.Connection, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def row_content(spec: DatasetSpec, record: Mapping[str, Any]) -> dict[str, Any]:
    """The values a row is stored (and hashed) with: the dataset's columns plus ``attributes``."""
    content_columns = [column.db_column for column in spec.columns]
    content = {name: record.get(name) for name in content_columns}
    content["attributes"] = record.get("attributes") or {}
    return content


class _Importer:
    def __init__(
        self,
        conn: sa.Connection,
        spec: DatasetSpec,
        organization_id: int,
        source: SourceFile,
        sha256: str,
        summary: ImportSummary,
    ) -> None:
        self.conn = conn
        self.spec = spec
        self.organization_id = organization_id
        self.source = source
        self.sha256 = sha256
        self.summary = summary
        self.seen: dict[Any, str] = {}  # natural key -> location of its first row in this file
        self.table = spec.table
        self.key_column = self.table.c[spec.key_db_column]

    def quarantine(self, row: SourceRow, reason: str) -> None:
        self.summary.quarantined += 1
        if len(self.summary.quarantine_notes) < ImportSummary.MAX_NOTES:
            self.summary.quarantine_notes.append(QuarantineNote(row.location, reason))
        self.pending_quarantine.append(
            {
                "created_at": utcnow(),
                "import_batch_id": self.summary.batch_id,
                "dataset": self.spec.name,
                "organization_id": self.organization_id,
                "source_file": self.summary.file,
                "file_sha256": self.sha256,
                "row_number": row.number,
                "raw": row.raw,
                "reason": f"{row.location}: {reason}",
            }
        )

    def count_field_errors(self, row: SourceRow, errors: Mapping[str, FieldError]) -> None:
        self.summary.with_field_errors += 1
        for name, error in errors.items():
            count = self.summary.field_errors.get(name)
            if count is None:
                self.summary.field_errors[name] = FieldErrorCount(name, 1, row.location, error.error)
            else:
                count.rows += 1

    def process(self, chunk: list[SourceRow]) -> None:
        self.pending_quarantine: list[dict[str, Any]] = []
        parsed: list[ParsedRow] = []
        for row in chunk:
            self.summary.rows_read += 1
            if row.values is None:
                self.quarantine(row, row.error or "malformed row")
                continue
            try:
                result = parse_row(self.spec, row.values)
            except RowError as exc:
                self.quarantine(row, str(exc))
                continue
            key = result.record[self.spec.key_db_column]
            first = self.seen.get(key)
            if first is not None:
                self.quarantine(
                    row, f"duplicate {self.spec.key} {_show(key)}: the same key is already at {first}"
                )
                continue
            self.seen[key] = row.location
            if result.field_errors:
                self.count_field_errors(row, result.field_errors)
            parsed.append(result)
        self._write(parsed)
        if self.pending_quarantine:
            self.conn.execute(_insert_ignore(self.conn, QuarantinedRow.__table__), self.pending_quarantine)  # type: ignore[arg-type]

    def _write(self, parsed: list[ParsedRow]) -> None:
        if not parsed:
            return
        keys = [row.record[self.spec.key_db_column] for row in parsed]
        existing = {
            row._mapping[self.spec.key_db_column]: row._mapping
            for row in self.conn.execute(
                sa.select(self.table).where(
                    self.table.c.organization_id == self.organization_id, self.key_column.in_(keys)
                )
            )
        }
        now = utcnow()
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for row in parsed:
            record = row.record
            key = record[self.spec.key_db_column]
            current = existing.get(key)
            if current is None:
                attributes = dict(row.attributes)
                if row.field_errors:
                    attributes[FIELD_ERRORS_KEY] = {n: e.as_json() for n, e in row.field_errors.items()}
                row_values = row_content(self.spec, {**record, "attributes": attributes})
                row_values["content_hash"] = content_hash(row_values)
                inserts.append({**row_values, "organization_id": self.organization_id, "updated_at": now})
                continue
            # Columns absent from the file keep their stored value (and field error); attributes merge.
            merged = row_content(self.spec, dict(current))
            merged.update(record)
            stored_attributes = dict(current["attributes"] or {})
            attributes = {**stored_attributes, **row.attributes}
            stored_errors = stored_attributes.get(FIELD_ERRORS_KEY)
            errors = merge_field_errors(self.spec, stored_errors, record, row.field_errors)
            if errors:
                attributes[FIELD_ERRORS_KEY] = errors
            elif isinstance(stored_errors, Mapping):
                attributes.pop(FIELD_ERRORS_KEY, None)
            merged["attributes"] = attributes
            digest = content_hash(merged)
            if digest == current["content_hash"]:
                self.summary.unchanged += 1
                continue
            updates.append({**merged, "content_hash": digest, "updated_at": now, "_id": current["id"]})
        if inserts:
            self.conn.execute(sa.insert(self.table), inserts)
            self.summary.imported += len(inserts)
        if updates:
            # executemany: the SET clause comes from the keys of the parameter dicts
            self.conn.execute(sa.update(self.table).where(self.table.c.id == sa.bindparam("_id")), updates)
            self.summary.updated += len(updates)


def _show(value: Any) -> str:
    return repr(value.isoformat() if isinstance(value, dt.date) else value)


def import_file(
    path: str | Path,
    dataset: str,
    organization: str | int,
    *,
    engine: sa.Engine | None = None,
    chunk_rows: int | None = None,
    progress: ProgressCallback | None = None,
) -> ImportSummary:
    """Import ``path`` as ``dataset`` for ``organization`` (id or name); see the module docstring."""
    spec = DATASETS.get(dataset)
    if spec is None:
        raise ImportFileError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    path = Path(path)
    settings = get_settings()
    chunk_rows = chunk_rows or settings.import_chunk_rows
    engine = engine or get_engine()
    require_current_schema(engine)
    source = open_source(path, chunk_rows, settings.import_max_field_bytes)  # header checks: before any write
    missing = [name for name in spec.required if name not in source.header]
    if missing:
        raise ImportFileError(
            f"{path}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} for a {dataset} file "
            f"(found: {', '.join(source.header)})"
        )
    sha256 = file_sha256(path)
    file_name = storable_text(str(path))  # a file name that is not UTF-8 is written out (\xff) to be stored
    started = time.perf_counter()
    with engine.begin() as conn:
        org = resolve_organization(conn, organization)
        batch_id = conn.scalar(
            sa.insert(ImportBatch)
            .values(
                dataset=dataset,
                organization_id=org.id,
                source_file=file_name,
                file_sha256=sha256,
                file_format=source.kind,
                started_at=utcnow(),
            )
            .returning(ImportBatch.id)
        )
        assert batch_id is not None
        summary = ImportSummary(
            dataset, org.id, org.name, file_name, source.kind, batch_id, file_sha256=sha256
        )
        importer = _Importer(conn, spec, org.id, source, sha256, summary)
        chunk: list[SourceRow] = []
        for row in source.rows:
            chunk.append(row)
            if len(chunk) >= chunk_rows:
                importer.process(chunk)
                chunk = []
                if progress:
                    progress(
                        ImportProgress(summary.rows_read, source.position(), source.total_units, source.unit)
                    )
        importer.process(chunk)
        if progress:
            done = source.total_units or source.position()
            progress(ImportProgress(summary.rows_read, done, source.total_units, source.unit))
        if summary.rows_read == 0:
            raise ImportFileError(f"{path}: has a header but no data rows")
        summary.field_errors = {  # in the dataset's column order
            column.name: summary.field_errors[column.name]
            for column in spec.columns
            if column.name in summary.field_errors
        }
        summary.seconds = time.perf_counter() - started
        conn.execute(
            sa.update(ImportBatch)
            .where(ImportBatch.id == batch_id)
            .values(
                rows_read=summary.rows_read,
                imported=summary.imported,
                updated=summary.updated,
                unchanged=summary.unchanged,
                quarantined=summary.quarantined,
                rows_with_field_errors=summary.with_field_errors,
                finished_at=utcnow(),
            )
        )
    return summary
