"""What leakers do to data before it surfaces: the transformations of the trace robustness
list, shared by ``tests/test_trace_robustness.py`` and ``bench/trace_accuracy.py``.

A leak is a :class:`Sheet` (titles and rows of text, as a person would see the file). Every
function returns a new sheet; randomness comes from the ``random.Random`` passed in, so a
failing case can be replayed from its seed. The Excel simulation writes a real XLSX with
openpyxl and a real CSV, doing what Excel does on import and on "Save as CSV".
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path
from random import Random
from typing import Any

from openpyxl import Workbook, load_workbook

from gateway.tracing.files import excel_number_text

__all__ = [
    "CHINESE_TITLES",
    "Sheet",
    "drop_columns",
    "excel_export_csv",
    "excel_import",
    "excel_round_trip",
    "mix",
    "reformat",
    "rename_headers",
    "reorder_columns",
    "round_numbers",
    "subset",
    "write_csv",
    "write_json",
]

CHINESE_TITLES = {
    "credit_code": "统一社会信用代码",
    "name": "企业名称",
    "legal_rep_name": "法定代表人",
    "registered_capital": "注册资本（万元）",
    "established": "成立日期",
    "district": "所属区县",
    "industry": "行业",
    "status": "经营状态",
    "address": "住所",
}

_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


@dataclass(frozen=True, slots=True)
class Sheet:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    @classmethod
    def from_answers(cls, rows: list[dict[str, Any]], fields: list[str] | None = None) -> Sheet:
        """Query answers' rows (JSON objects) as a sheet, values as the JSON carried them."""
        names = fields or list(rows[0])
        return cls(
            tuple(names),
            tuple(tuple("" if r.get(n) is None else str(r[n]) for n in names) for r in rows),
        )

    def column(self, name: str) -> list[str]:
        i = self.headers.index(name)
        return [row[i] for row in self.rows]


def subset(sheet: Sheet, fraction: float, rng: Random) -> Sheet:
    """A random ``fraction`` of the rows (at least one), in a random order."""
    count = max(1, round(len(sheet.rows) * fraction))
    return Sheet(sheet.headers, tuple(rng.sample(sheet.rows, count)))


def drop_columns(sheet: Sheet, names: set[str]) -> Sheet:
    keep = [i for i, h in enumerate(sheet.headers) if h not in names]
    return Sheet(
        tuple(sheet.headers[i] for i in keep),
        tuple(tuple(row[i] for i in keep) for row in sheet.rows),
    )


def reorder_columns(sheet: Sheet, rng: Random) -> Sheet:
    order = list(range(len(sheet.headers)))
    while len(order) > 1 and order == sorted(order):
        rng.shuffle(order)
    return Sheet(
        tuple(sheet.headers[i] for i in order),
        tuple(tuple(row[i] for i in order) for row in sheet.rows),
    )


def rename_headers(sheet: Sheet, mapping: dict[str, str] | None = None) -> Sheet:
    """Titles renamed by ``mapping``; without one, to meaningless ``c1``, ``c2``..."""
    if mapping is None:
        return Sheet(tuple(f"c{i + 1}" for i in range(len(sheet.headers))), sheet.rows)
    return Sheet(tuple(mapping.get(h, h) for h in sheet.headers), sheet.rows)


def mix(*sheets: Sheet, rng: Random) -> Sheet:
    """The rows of several sheets with the same titles, shuffled together."""
    rows = [row for sheet in sheets for row in sheet.rows]
    rng.shuffle(rows)
    return Sheet(sheets[0].headers, tuple(rows))


def round_numbers(sheet: Sheet, title: str, places: int, rng: Random) -> Sheet:
    """Column ``title``'s numbers as a spreadsheet shows them with a number format of
    ``places`` decimals: rounded to the nearest, a tie going up (Excel's display) or down
    (a binary double just below it, as other tools print it), at random per cell."""
    j = sheet.headers.index(title)
    quantum = Decimal(1).scaleb(-places)

    def rounded(cell: str) -> str:
        if not _NUMBER.fullmatch(cell.strip()):
            return cell
        mode = rng.choice([ROUND_HALF_UP, ROUND_HALF_DOWN])
        return format(Decimal(cell.strip()).quantize(quantum, rounding=mode), "f")

    return Sheet(
        sheet.headers,
        tuple((*row[:j], rounded(row[j]), *row[j + 1 :]) for row in sheet.rows),
    )


# -- re-formatting --------------------------------------------------------------------------


def _grouped(number: str) -> str:
    sign = "-" if number.startswith("-") else ""
    whole, _, fraction = number.lstrip("+-").partition(".")
    grouped = f"{int(whole):,}"
    return sign + grouped + ("." + fraction if fraction else "")


def _reformat_cell(value: str, rng: Random) -> str:
    date = _ISO_DATE.fullmatch(value)
    if date:
        y, m, d = (int(p) for p in date.groups())
        value = rng.choice([f"{y}年{m}月{d}日", f"{y}/{m}/{d}", f"{y}.{m}.{d}", f"{m}/{d}/{y}"])
    elif _NUMBER.fullmatch(value):
        value = rng.choice([_grouped(value), value.rstrip("0").rstrip(".") or "0", value])
    elif value.isascii():
        value = rng.choice([value.lower(), value.upper(), value])
    if " " in value:
        value = value.replace(" ", "  ")
    pad = rng.choice(["", " ", "  ", "\t"])
    return pad + value + rng.choice(["", " ", "  "])


def reformat(sheet: Sheet, rng: Random) -> Sheet:
    """Each cell re-typed as a careless person or tool would: padding, case, ``1,234.50``
    number formats, trailing zeros dropped, dates as ``2020年1月5日``, ``2020/1/5``,
    ``2020.1.5`` or ``1/5/2020``."""
    return Sheet(
        sheet.headers,
        tuple(tuple(_reformat_cell(cell, rng) for cell in row) for row in sheet.rows),
    )


# -- Excel ----------------------------------------------------------------------------------


def _excel_value(text: str) -> Any:
    """What Excel stores when it opens a CSV cell with default settings: numbers become
    doubles (leading zeros lost, digits past the 15th replaced by zeros), ISO dates become
    dates, everything else stays text."""
    stripped = text.strip()
    if _NUMBER.fullmatch(stripped):
        number = Decimal(stripped)
        if len(number.as_tuple().digits) > 15 and not number.is_zero():
            number = number.quantize(Decimal(1).scaleb(number.adjusted() - 14), rounding=ROUND_DOWN)
        return float(number)
    date = _ISO_DATE.fullmatch(stripped)
    if date:
        return dt.datetime(*(int(p) for p in date.groups()))
    return text


def excel_import(sheet: Sheet, path: Path) -> Path:
    """Open the sheet's CSV in Excel and save it as ``path`` (XLSX)."""
    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.append(list(sheet.headers))
    for row in sheet.rows:
        ws.append([_excel_value(cell) for cell in row])
    book.save(path)
    return path


def _excel_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return f"{value.year}/{value.month}/{value.day}"  # zh-CN short date
    if isinstance(value, float | int):
        if abs(value) >= 1e11:
            # General format of a wide number: scientific with 15 significant digits.
            mantissa, _, exponent = f"{value:.14E}".partition("E")
            mantissa = mantissa.rstrip("0").rstrip(".")
            return f"{mantissa}E+{int(exponent):02d}"
        return excel_number_text(value)
    return str(value)


def excel_export_csv(xlsx: Path, path: Path, *, encoding: str = "gb18030") -> Path:
    """Excel's "Save as CSV" of the first sheet: shown text, CRLF, the system code page
    (GB18030 in China)."""
    book = load_workbook(xlsx, read_only=True, data_only=True)
    try:
        ws = book.worksheets[0]
        with path.open("w", encoding=encoding, newline="") as out:
            writer = csv.writer(out, lineterminator="\r\n")
            for row in ws.iter_rows(values_only=True):
                writer.writerow([_excel_text(v) for v in row])
    finally:
        book.close()
    return path


def excel_round_trip(sheet: Sheet, directory: Path, stem: str) -> tuple[Path, Path]:
    """CSV -> XLSX -> CSV through Excel: the XLSX and the CSV exported from it."""
    directory.mkdir(parents=True, exist_ok=True)
    xlsx = excel_import(sheet, directory / f"{stem}.xlsx")
    return xlsx, excel_export_csv(xlsx, directory / f"{stem}.csv")


# -- files ----------------------------------------------------------------------------------


def write_csv(sheet: Sheet, path: Path, *, encoding: str = "utf-8", delimiter: str = ",") -> Path:
    with path.open("w", encoding=encoding, newline="") as out:
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
        writer.writerow(sheet.headers)
        writer.writerows(sheet.rows)
    return path


def write_json(sheet: Sheet, path: Path) -> Path:
    items = [dict(zip(sheet.headers, row, strict=True)) for row in sheet.rows]
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path
