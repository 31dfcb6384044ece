"""Tables as offices make them: CSV in UTF-8 (with or without BOM) or GB18030, and XLSX.

Every file a user hands the gateway as a table (an exchange's trade ledger, an exclusion
list, a leaked file) arrives from whatever tool the user's office runs: Excel on Chinese
Windows saves CSV as GB18030 and keeps numbers and dates as numbers and dates in an XLSX;
Notepad writes a UTF-8 BOM; the column titles are Chinese. This module is the one reader of
all of them, so that "which encodings, which headers, which cell values" has one answer:

- :func:`open_table` streams the rows of a CSV or XLSX file as text cells, each cell as a
  person opening the file would read it (an XLSX number as Excel shows it, a date as
  ``YYYY-MM-DD``), with the line (CSV) or row (XLSX) it came from;
- :class:`HeaderMap` maps column titles, English or Chinese, to a reader's field names;
- :func:`read_text_file` decodes a text file (JSON, say) written with or without BOM.

Every way a file can be unusable is a :class:`~gateway.errors.ValidationError` naming the
file and what to do, never a library exception.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import IO, Any

from gateway.errors import ValidationError

__all__ = [
    "EXCEL_DIGITS",
    "HeaderMap",
    "Table",
    "csv_cell_text",
    "csv_rows",
    "detect_encoding",
    "excel_cell_text",
    "excel_number_text",
    "open_table",
    "open_table_bytes",
    "parse_local_date",
    "read_text_file",
    "sniff_delimiter",
]

EXCEL_DIGITS = 15
"""Excel stores numbers as IEEE doubles and shows at most 15 significant digits."""

SAMPLE_BYTES = 256 * 1024
DELIMITERS = (",", ";", "\t", "|")
CSV_FIELD_LIMIT = 1 << 20
_ZIP = b"PK\x03\x04"
_OLE = b"\xd0\xcf\x11\xe0"


# -- encodings ------------------------------------------------------------------------------


def detect_encoding(sample: bytes, name: str) -> str:
    """The encoding of a text file from its first bytes: a BOM decides; else UTF-8 when the
    sample decodes as UTF-8, else GB18030 (what Excel on Chinese Windows writes)."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # Excel's "Unicode text" export
    for encoding in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        return encoding
    raise ValidationError(f"{name}: the text is neither UTF-8 nor GB18030; save it as UTF-8")


def _stream_encoding(stream: IO[bytes], name: str) -> str:
    """Like :func:`detect_encoding`, but a UTF-8 guess is confirmed over the whole stream
    (a GB18030 file can look like UTF-8 in its first lines), in chunks, then rewound."""
    encoding = detect_encoding(stream.read(SAMPLE_BYTES), name)
    stream.seek(0)
    if encoding != "utf-8":
        return encoding
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while chunk := stream.read(1 << 20):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        encoding = "gb18030"
    stream.seek(0)
    return encoding


def read_text_file(path: Path) -> str:
    """The text of ``path`` in UTF-8 (BOM or not) or GB18030; :class:`ValidationError`
    when it cannot be read or is neither."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"{path.name}: cannot open: {exc.strerror or exc}") from exc
    encoding = detect_encoding(raw[:SAMPLE_BYTES], path.name)
    for candidate in dict.fromkeys((encoding, "gb18030")):
        try:
            return raw.decode(candidate)
        except UnicodeDecodeError:
            continue
    raise ValidationError(f"{path.name}: undecodable text; save it as UTF-8")


# -- CSV ------------------------------------------------------------------------------------


def sniff_delimiter(lines: list[str]) -> str:
    """The candidate that splits the first lines into the most consistent, widest rows."""
    best, best_score = ",", (-1.0, 0)
    limit = csv.field_size_limit()
    csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        for candidate in DELIMITERS:
            try:
                widths = [len(r) for r in csv.reader(lines, delimiter=candidate) if any(r)]
            except csv.Error:  # not this delimiter's shape (or malformed: csv_rows says so)
                continue
            best, best_score = _better(candidate, widths, best, best_score)
    finally:
        csv.field_size_limit(limit)
    return best


def _better(
    candidate: str, widths: list[int], best: str, best_score: tuple[float, int]
) -> tuple[str, tuple[float, int]]:
    """The delimiter that splits rows more consistently and more widely, with its score."""
    if not widths:
        return best, best_score
    common = max(set(widths), key=widths.count)
    if common < 2:
        return best, best_score
    score = (widths.count(common) / len(widths), common)
    if score > best_score:
        return candidate, score
    return best, best_score


_EXCEL_TEXT = re.compile(r'="(.*)"', re.DOTALL)


def csv_cell_text(cell: str) -> str:
    """A CSV cell's value: ``="00123"`` is how spreadsheet exports keep leading zeros, and
    the value is what is quoted."""
    match = _EXCEL_TEXT.fullmatch(cell.strip())
    return match.group(1) if match else cell


def csv_rows(reader: Iterator[list[str]], name: str) -> Iterator[list[str]]:
    """The rows of a :mod:`csv` reader, with a field size limit for this reading only and
    a malformed file as :class:`ValidationError`."""
    limit = csv.field_size_limit()
    csv.field_size_limit(CSV_FIELD_LIMIT)
    number = 0
    try:
        while True:
            number += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise ValidationError(f"{name}: malformed CSV: {exc}") from exc
            if any("\x00" in cell for cell in row):
                # No store holds a NUL in text (PostgreSQL refuses it): refused here, by line.
                raise ValidationError(f"{name}: row {number} contains a NUL character")
            yield row
    finally:
        csv.field_size_limit(limit)


# -- XLSX -----------------------------------------------------------------------------------


def excel_number_text(value: float | int) -> str:
    """A number as Excel shows it in a General cell and writes it to CSV, minus Excel's
    switch to scientific notation for wide columns: at most 15 significant digits, no
    ``.0`` on integral values, no exponent. ``430102199001011234`` becomes
    ``430102199001011000``, as in Excel; ``0.1 + 0.2`` becomes ``0.3``."""
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        return str(value)
    if number.is_zero():
        return "0"
    quantum = Decimal(1).scaleb(number.adjusted() - EXCEL_DIGITS + 1)
    number = number.quantize(quantum, rounding=ROUND_HALF_UP)
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def excel_cell_text(value: Any) -> str:
    """An XLSX cell's stored value as text: numbers as Excel shows them, a date as
    ``YYYY-MM-DD``, a date and time as ``YYYY-MM-DD HH:MM:SS`` (local, as Excel keeps it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return excel_number_text(value)
    if isinstance(value, Decimal):
        return excel_number_text(float(value))
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat(timespec="seconds")
    return str(value)


# -- streamed tables ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Table:
    """An open table: its column titles and an iterator of ``(line, cells)``, where
    ``line`` is the CSV line or XLSX row number a person would look up. Valid only inside
    the :func:`open_table` block that made it."""

    name: str
    headers: tuple[str, ...]
    rows: Iterator[tuple[int, tuple[str, ...]]]


@contextlib.contextmanager
def open_table(path: Path, *, sheet: str | None = None) -> Iterator[Table]:
    """Open a CSV (any delimiter of ``, ; tab |``; UTF-8 with or without BOM, UTF-16 with
    BOM, GB18030) or an XLSX workbook (the first sheet, or ``sheet``), by content. The
    first non-blank row holds the titles. Rows are streamed: a ledger of millions of lines
    is never held in memory. Raises :class:`ValidationError` for an unreadable, empty or
    unsupported file, or one without titles."""
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise ValidationError(f"{path.name}: cannot open: {exc.strerror or exc}") from exc
    with stream, _open_stream(stream, path.name, sheet) as table:
        yield table


@contextlib.contextmanager
def open_table_bytes(data: bytes, name: str, *, sheet: str | None = None) -> Iterator[Table]:
    """Like :func:`open_table` for a file received in memory (an upload)."""
    with _open_stream(io.BytesIO(data), name, sheet) as table:
        yield table


@contextlib.contextmanager
def _open_stream(stream: IO[bytes], name: str, sheet: str | None) -> Iterator[Table]:
    head = stream.read(8)
    stream.seek(0)
    if not head:
        raise ValidationError(f"{name}: the file is empty")
    if head.startswith(_OLE):
        raise ValidationError(
            f"{name}: a legacy Excel .xls (or other OLE) file; save it as .xlsx or CSV"
        )
    if head.startswith(_ZIP):
        with _xlsx_rows(stream, name, sheet) as rows:
            yield _titled(name, rows)
    else:
        with _csv_rows(stream, name) as rows:
            yield _titled(name, rows)


def _titled(name: str, rows: Iterator[tuple[int, tuple[str, ...]]]) -> Table:
    for _, cells in rows:
        if any(cell.strip() for cell in cells):
            headers = tuple(cell.strip() for cell in cells)
            return Table(name, headers, (row for row in rows if any(c.strip() for c in row[1])))
    raise ValidationError(f"{name}: no rows (the file holds no table)")


@contextlib.contextmanager
def _csv_rows(stream: IO[bytes], name: str) -> Iterator[Iterator[tuple[int, tuple[str, ...]]]]:
    encoding = _stream_encoding(stream, name)
    text = io.TextIOWrapper(stream, encoding=encoding, newline="")
    try:
        lines = [line for _, line in zip(range(50), text, strict=False)]
        text.seek(0)
        reader = csv.reader(text, delimiter=sniff_delimiter(lines), strict=False)

        def numbered() -> Iterator[tuple[int, tuple[str, ...]]]:
            try:
                for row in csv_rows(reader, name):
                    yield reader.line_num, tuple(csv_cell_text(cell) for cell in row)
            except UnicodeDecodeError as exc:
                raise ValidationError(f"{name}: undecodable text ({encoding})") from exc

        yield numbered()
    finally:
        text.detach()


@contextlib.contextmanager
def _xlsx_rows(
    stream: IO[bytes], name: str, sheet: str | None
) -> Iterator[Iterator[tuple[int, tuple[str, ...]]]]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        # data_only: a formula's last computed value, as Excel would export it.
        book = load_workbook(stream, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ValidationError(f"{name}: not a readable XLSX workbook: {exc}") from exc
    try:
        if sheet is None:
            if not book.worksheets:
                raise ValidationError(f"{name}: the workbook has no worksheet")
            ws = book.worksheets[0]
        elif sheet in book.sheetnames:
            ws = book[sheet]
        else:
            raise ValidationError(
                f"{name}: no sheet {sheet!r}; the workbook has {', '.join(book.sheetnames)}"
            )
        if not hasattr(ws, "iter_rows"):
            raise ValidationError(f"{name}: sheet {sheet!r} is a chart, not a worksheet")

        def numbered() -> Iterator[tuple[int, tuple[str, ...]]]:
            try:
                for number, row in enumerate(ws.iter_rows(values_only=True), start=1):
                    yield number, tuple(excel_cell_text(v) for v in row)
            except (KeyError, ValueError, zipfile.BadZipFile) as exc:
                raise ValidationError(f"{name}: damaged XLSX worksheet: {exc}") from exc

        yield numbered()
    finally:
        book.close()


# -- headers --------------------------------------------------------------------------------

_UNIT = re.compile(r"\((?:[^()]*)\)$")
_SPACES = re.compile(r"[\s_\-]+")


def _title_key(title: str) -> str:
    """A title as compared: NFKC (full-width letters and brackets become ASCII), without
    a trailing unit in brackets (``单价（元）``), spaces, ``_`` or ``-``, case-folded."""
    text = unicodedata.normalize("NFKC", title).strip()
    text = _UNIT.sub("", text).strip()
    return _SPACES.sub("", text).casefold()


@dataclass(frozen=True, slots=True)
class HeaderMap:
    """Field name → the column titles that mean it (the field name itself always does).

    ``what`` names the kind of file in messages (``"exchange ledger"``)."""

    what: str
    aliases: Mapping[str, Sequence[str]]
    required: Sequence[str]

    def columns(self, table: Table) -> dict[str, int]:
        """Field → column index for the fields ``table`` has; :class:`ValidationError`
        listing every required field without a column, or a field named twice."""
        wanted = {
            _title_key(title): field
            for field, titles in self.aliases.items()
            for title in (field, *titles)
        }
        found: dict[str, int] = {}
        for index, title in enumerate(table.headers):
            field = wanted.get(_title_key(title))
            if field is None:
                continue
            if field in found:
                raise ValidationError(
                    f"{self.what} {table.name}: columns {table.headers[found[field]]!r} and "
                    f"{title!r} both mean {field}; keep one"
                )
            found[field] = index
        missing = [field for field in self.required if field not in found]
        if missing:
            raise ValidationError(
                f"{self.what} {table.name}: the header lacks "
                + ", ".join(f"{f} ({' / '.join(self.aliases.get(f, ()))})" for f in missing)
                + "; expected "
                + ",".join(self.aliases)
            )
        return found

    def records(self, table: Table) -> Iterator[tuple[int, dict[str, str]]]:
        """``(line, {field: cell})`` for each row of ``table``; absent cells are ``""``."""
        columns = self.columns(table)
        for line, cells in table.rows:
            yield (
                line,
                {
                    field: cells[index].strip() if index < len(cells) else ""
                    for field, index in columns.items()
                },
            )

    def describe(self) -> Iterable[tuple[str, str]]:
        """(field, accepted titles) for documentation and help texts."""
        for field, titles in self.aliases.items():
            yield field, " / ".join((field, *titles))


# -- values ---------------------------------------------------------------------------------

_CN_DATE = re.compile(r"(\d{4})\s*[年/.\-]\s*(\d{1,2})\s*[月/.\-]\s*(\d{1,2})(?:\s*日)?")


def parse_local_date(value: str) -> dt.date:
    """A calendar date as offices write it: ``2026-12-01``, ``2026/12/1``, ``2026.12.01``,
    ``2026年12月1日``, or a date and time whose date part is one of these. Raises
    :class:`ValueError` otherwise."""
    text = unicodedata.normalize("NFKC", value).strip()
    match = _CN_DATE.match(text)
    rest = text[match.end() :] if match else ""
    if match is None or (rest and rest[0] not in "T "):
        raise ValueError(f"{value!r} is not a date")
    year, month, day = (int(part) for part in match.groups())
    return dt.date(year, month, day)
