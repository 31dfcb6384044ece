"""Reading a leaked file (CSV, XLSX, JSON) into a :class:`LeakedTable`.

A leak reaches the supervisor as whatever the leaker's tools wrote: a CSV saved by Excel in
China is GB18030, not UTF-8; a European Excel separates with ``;``; a spreadsheet keeps
numbers, not the text the gateway delivered. The readers turn each of these into rows of
text cells *as the file's consumer would see them* (an XLSX number as Excel shows it, a JSON
number as written), so that the tracer reads the same values a person opening the file
would. They do not normalise further: the tracer's normalisation is one function used both
at delivery and at trace time, and the mark reader needs the raw text.

The pieces every table reader shares (encodings, delimiters, Excel's numbers and dates)
live in :mod:`gateway.tabular`, which reads exchange ledgers and exclusion lists too.

Every way a file can be unusable is a :class:`~gateway.errors.ValidationError` naming the
file and what to do, never a library exception.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Literal

from gateway.errors import ValidationError
from gateway.tabular import SAMPLE_BYTES, excel_number_text
from gateway.tabular import csv_cell_text as _csv_cell
from gateway.tabular import csv_rows as _guarded
from gateway.tabular import detect_encoding as _encoding
from gateway.tabular import excel_cell_text as _xlsx_cell
from gateway.tabular import sniff_delimiter as _delimiter
from gateway.tracing.models import LeakedTable

__all__ = [
    "DEFAULT_MAX_ROWS",
    "FileKind",
    "excel_number_text",
    "read_leaked_bytes",
    "read_leaked_file",
]

FileKind = Literal["csv", "xlsx", "json"]
DEFAULT_MAX_ROWS = 1_000_000
_EXTENSIONS: dict[str, FileKind] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
_MEDIA_TYPES: dict[str, FileKind] = {
    "text/csv": "csv",
    "text/tab-separated-values": "csv",
    "text/plain": "csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/json": "json",
    "application/x-ndjson": "json",
    "application/jsonl": "json",
}

# What a data cell looks like, as opposed to a column title: numbers (with thousands
# separators or an exponent), dates, and identifier-like runs of letters and digits.
_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][+-]?\d+)?|[+-]?\.\d+")
_DATE = re.compile(
    r"\d{4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}\s*日?(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?"
    r"|\d{1,2}/\d{1,2}/\d{4}"
)
_IDENTIFIER = re.compile(r"(?=[0-9A-Za-z]*\d)[0-9A-Za-z]{8,}")


def read_leaked_file(
    path: Path,
    *,
    sheet: str | None = None,
    header: bool | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> LeakedTable:
    """Read ``path`` by its extension, or by its content when the extension says nothing.

    ``sheet`` picks an XLSX worksheet by name (default: the first). ``header`` says whether
    the first row holds column titles; ``None`` decides from the row itself (a first row
    with numbers, dates or identifiers is data, and the columns are named ``column_1``...).
    CSV and XLSX are streamed; more than ``max_rows`` data rows is refused.
    Raises :class:`ValidationError` for an unreadable, empty or unsupported file.
    """
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise ValidationError(f"{path.name}: cannot open: {exc.strerror or exc}") from exc
    with stream:
        return _read(
            stream, path.name, _EXTENSIONS.get(path.suffix.lower()), sheet, header, max_rows
        )


def read_leaked_bytes(
    data: bytes,
    *,
    name: str = "",
    media_type: str = "",
    sheet: str | None = None,
    header: bool | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> LeakedTable:
    """Like :func:`read_leaked_file` for a file received in memory (an upload): the kind
    comes from ``media_type``, else from ``name``'s extension, else from the content."""
    kind = _MEDIA_TYPES.get(media_type.split(";")[0].strip().lower())
    if kind is None or media_type.startswith("text/plain"):
        kind = _EXTENSIONS.get(Path(name).suffix.lower()) or kind
    return _read(io.BytesIO(data), name or "upload", kind, sheet, header, max_rows)


def _read(
    stream: IO[bytes],
    name: str,
    kind: FileKind | None,
    sheet: str | None,
    header: bool | None,
    max_rows: int,
) -> LeakedTable:
    head = stream.read(8)
    stream.seek(0)
    if not head:
        raise ValidationError(f"{name}: the file is empty")
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise ValidationError(
            f"{name}: a legacy Excel .xls (or other OLE) file; save it as .xlsx or CSV"
        )
    sniffed: FileKind
    if head.startswith(b"PK\x03\x04"):
        sniffed = "xlsx"
    elif kind is not None:
        sniffed = kind
    else:
        sniffed = "json" if _looks_like_json(stream) else "csv"
    if sniffed == "xlsx":
        if not head.startswith(b"PK\x03\x04"):
            raise ValidationError(f"{name}: not an XLSX workbook (no ZIP container)")
        headers, rows = _read_xlsx(stream, name, sheet, header, max_rows)
    elif sniffed == "json":
        headers, rows = _read_json(stream, name, max_rows)
    else:
        headers, rows = _read_csv(stream, name, header, max_rows)
    if not rows:
        raise ValidationError(f"{name}: no data rows (only a header, or nothing readable)")
    return LeakedTable(headers=headers, rows=rows, source=name)


# -- shaping rows ---------------------------------------------------------------------------


def _looks_like_data(cell: str) -> bool:
    text = cell.strip()
    return bool(_NUMBER.fullmatch(text) or _DATE.fullmatch(text) or _IDENTIFIER.fullmatch(text))


def _table(
    raw_rows: Iterable[list[str]], name: str, header: bool | None, max_rows: int
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """Header plus rows, every row as wide as the widest (ragged rows padded with "");
    blank rows and untitled blank columns dropped, duplicate titles made unique."""
    titles: list[str] | None = None
    rows: list[list[str]] = []
    width = 0
    for row in raw_rows:
        if not any(cell.strip() for cell in row):
            continue
        if titles is None:
            first_is_header = (
                header if header is not None else not any(_looks_like_data(c) for c in row)
            )
            if first_is_header:
                titles = [cell.strip() for cell in row]
                width = len(titles)
                continue
            titles = []
        if len(rows) >= max_rows:
            raise ValidationError(
                f"{name}: more than {max_rows} data rows; split the file or raise trace_max_rows"
            )
        rows.append(row)
        width = max(width, len(row))
    titles = titles or []
    used = [False] * width
    for row in rows:
        for i, cell in enumerate(row):
            if not used[i] and cell.strip():
                used[i] = True
    for i, title in enumerate(titles):
        if title:
            used[i] = True
    keep = [i for i in range(width) if used[i]]
    headers = _unique(
        [titles[i] if i < len(titles) and titles[i] else f"column_{i + 1}" for i in keep]
    )
    shaped = tuple(tuple(row[i] if i < len(row) else "" for i in keep) for row in rows)
    return headers, shaped


def _unique(titles: list[str]) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    out = []
    for title in titles:
        count = seen.get(title, 0) + 1
        seen[title] = count
        out.append(title if count == 1 else f"{title} ({count})")
    return tuple(out)


# -- CSV ------------------------------------------------------------------------------------


def _read_csv(
    stream: IO[bytes], name: str, header: bool | None, max_rows: int
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    sample = stream.read(SAMPLE_BYTES)
    encodings = [_encoding(sample, name)]
    if encodings[0] == "utf-8":
        encodings.append("gb18030")  # a later line may show the file was GB18030 after all
    for attempt, encoding in enumerate(encodings):
        stream.seek(0)
        text = io.TextIOWrapper(stream, encoding=encoding, newline="")
        try:
            lines = [line for _, line in zip(range(50), text, strict=False)]
            text.seek(0)
            reader = csv.reader(text, delimiter=_delimiter(lines), strict=False)
            return _table(
                ([_csv_cell(c) for c in row] for row in _guarded(reader, name)),
                name,
                header,
                max_rows,
            )
        except UnicodeDecodeError as exc:
            if attempt + 1 == len(encodings):
                raise ValidationError(
                    f"{name}: undecodable text near byte {exc.start}; save it as UTF-8"
                ) from exc
        finally:
            text.detach()
    raise AssertionError("unreachable")


# -- XLSX -----------------------------------------------------------------------------------


def _read_xlsx(
    stream: IO[bytes], name: str, sheet: str | None, header: bool | None, max_rows: int
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        # data_only: a formula's last computed value, as Excel would export it.
        book = load_workbook(stream, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ValidationError(f"{name}: not a readable XLSX workbook: {exc}") from exc
    try:
        if sheet is None:
            worksheets = book.worksheets
            if not worksheets:
                raise ValidationError(f"{name}: the workbook has no worksheet")
            ws = worksheets[0]
        elif sheet in book.sheetnames:
            ws = book[sheet]
        else:
            raise ValidationError(
                f"{name}: no sheet {sheet!r}; the workbook has {', '.join(book.sheetnames)}"
            )
        if not hasattr(ws, "iter_rows"):
            raise ValidationError(f"{name}: sheet {sheet!r} is a chart, not a worksheet")
        rows = ([_xlsx_cell(v) for v in row] for row in ws.iter_rows(values_only=True))
        try:
            return _table(rows, name, header, max_rows)
        except (KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ValidationError(f"{name}: damaged XLSX worksheet: {exc}") from exc
    finally:
        book.close()


# -- JSON -----------------------------------------------------------------------------------


class _JsonNumber(str):
    """A JSON number kept as the text it was written with (``1234.50`` stays so)."""

    __slots__ = ()


def _looks_like_json(stream: IO[bytes]) -> bool:
    sample = stream.read(64).lstrip(codecs.BOM_UTF8).lstrip()
    stream.seek(0)
    return sample[:1] in (b"[", b"{")


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=_JsonNumber, parse_int=_JsonNumber)


def _json_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str.__str__(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _read_json(
    stream: IO[bytes], name: str, max_rows: int
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    raw = stream.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{name}: JSON must be UTF-8 text") from exc
    try:
        document = _loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise ValidationError(
                f"{name}: malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
        document = _json_lines(text, name)
    except RecursionError as exc:
        raise ValidationError(f"{name}: JSON nested too deeply") from exc
    if isinstance(document, dict):
        wrapper = next((k for k in ("rows", "data", "records", "items") if k in document), None)
        if wrapper is None:
            document = [document]
        elif isinstance(document[wrapper], list):
            document = document[wrapper]
        else:
            raise ValidationError(f"{name}: {wrapper!r} must be a list of objects")
    if not isinstance(document, list):
        raise ValidationError(
            f'{name}: expected a list of objects, {{"rows": [...]}} or JSON Lines'
        )
    if len(document) > max_rows + 1:
        raise ValidationError(
            f"{name}: more than {max_rows} data rows; split the file or raise trace_max_rows"
        )
    if document and all(isinstance(item, list) for item in document):
        # A list of arrays: the first one holds the titles when it is all text.
        rows = [[_json_cell(v) for v in item] for item in document]
        has_titles = all(isinstance(v, str) and not isinstance(v, _JsonNumber) for v in document[0])
        return _table(rows, name, has_titles, max_rows)
    keys: dict[str, None] = {}
    for i, item in enumerate(document):
        if not isinstance(item, dict):
            raise ValidationError(f"{name}: item {i} is not an object")
        keys.update(dict.fromkeys(item))
    titles = list(keys)
    rows = [[_json_cell(item.get(k)) for k in titles] for item in document]
    return _table([titles, *rows], name, True, max_rows)


def _json_lines(text: str, name: str) -> list[Any]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(_loads(line))
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"{name}: malformed JSON Lines: {exc.msg} on line {number}"
            ) from exc
    return items
