"""The leaked-file readers: CSV in the encodings and dialects leakers' tools write, XLSX as
Excel shows it, JSON in its usual shapes, and a clear error for everything else."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from openpyxl import Workbook

from gateway.errors import ValidationError
from gateway.tracing.files import excel_number_text, read_leaked_bytes, read_leaked_file

ROWS = [
    ("91430100MA4L0001X1", "长沙星辰科技有限公司", "1234.50", "2020-01-05"),
    ("91430100MA4L0002Y2", "长沙月亮贸易有限公司", "88.00", "2019-12-31"),
]
HEADERS = ("credit_code", "name", "registered_capital", "established")


def _csv(rows: list[tuple[str, ...]], delimiter: str = ",") -> str:
    out = io.StringIO()
    import csv

    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerows(rows)
    return out.getvalue()


@pytest.mark.parametrize(
    ("encoding", "delimiter", "suffix"),
    [
        ("utf-8", ",", ".csv"),
        ("utf-8-sig", ",", ".csv"),
        ("gb18030", ",", ".csv"),
        ("utf-8", ";", ".csv"),
        ("gb18030", "\t", ".txt"),
        ("utf-16", "\t", ".txt"),
        ("utf-8", "|", ".dat"),
    ],
)
def test_csv_encodings_and_delimiters(
    tmp_path: Path, encoding: str, delimiter: str, suffix: str
) -> None:
    path = tmp_path / f"leak{suffix}"
    path.write_bytes(_csv([HEADERS, *ROWS], delimiter).encode(encoding))
    table = read_leaked_file(path)
    assert table.headers == HEADERS
    assert table.rows == tuple(ROWS)
    assert table.source == path.name


def test_gb18030_detected_even_when_the_first_lines_are_ascii(tmp_path: Path) -> None:
    ascii_rows = [(f"91430100MA4L{i:04d}X1", "x", "1.00", "2020-01-01") for i in range(30_000)]
    path = tmp_path / "late.csv"
    path.write_bytes(_csv([HEADERS, *ascii_rows, *ROWS]).encode("gb18030"))
    table = read_leaked_file(path)
    assert table.rows[-1] == ROWS[-1]
    assert len(table.rows) == 30_002


def test_csv_ragged_rows_blank_lines_quotes_and_excel_text(tmp_path: Path) -> None:
    text = (
        "credit_code,name,note\n"
        "\n"
        '91430100MA4L0001X1,"长沙, 星辰",\n'
        '="00123",x\n'
        "91430100MA4L0003Z3,y,z,extra\n"
        ",,\n"
    )
    path = tmp_path / "ragged.csv"
    path.write_text(text, encoding="utf-8")
    table = read_leaked_file(path)
    assert table.headers == ("credit_code", "name", "note", "column_4")
    assert table.rows == (
        ("91430100MA4L0001X1", "长沙, 星辰", "", ""),
        ("00123", "x", "", ""),
        ("91430100MA4L0003Z3", "y", "z", "extra"),
    )


def test_csv_without_header_and_duplicate_titles(tmp_path: Path) -> None:
    path = tmp_path / "noheader.csv"
    path.write_text(_csv(list(ROWS)), encoding="utf-8")
    table = read_leaked_file(path)
    assert table.headers == ("column_1", "column_2", "column_3", "column_4")
    assert table.rows == tuple(ROWS)
    # Forced: the first row is a header even if it looks like data.
    assert read_leaked_file(path, header=True).headers == ROWS[0]
    dup = tmp_path / "dup.csv"
    dup.write_text("a,a,b\n1,2,3\n", encoding="utf-8")
    assert read_leaked_file(dup).headers == ("a", "a (2)", "b")


def test_row_cap_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text(_csv([HEADERS, *ROWS * 3]), encoding="utf-8")
    assert len(read_leaked_file(path, max_rows=6).rows) == 6
    with pytest.raises(ValidationError, match="more than 5 data rows"):
        read_leaked_file(path, max_rows=5)


def test_excel_number_text() -> None:
    assert excel_number_text(430102199001011234) == "430102199001011000"
    assert excel_number_text(4.30102199001011e17) == "430102199001011000"
    assert excel_number_text(1234.5) == "1234.5"
    assert excel_number_text(88.0) == "88"
    assert excel_number_text(123) == "123"
    assert excel_number_text(0.1 + 0.2) == "0.3"
    assert excel_number_text(-0.000123) == "-0.000123"
    assert excel_number_text(0) == "0"


def test_xlsx_cells_as_excel_shows_them(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "企业"
    sheet.append(["credit_code", "capital", "established", "active", "when", "empty"])
    sheet.append([430102199001011234, 1234.5, dt.date(2020, 1, 5), True, None, None])
    sheet.append(["91430100MA4L0001X1", 88.0, dt.datetime(2019, 12, 31), False, None, None])
    sheet.append(["x", 0.1 + 0.2, dt.datetime(2019, 12, 31, 8, 30), None, "=1+1", None])
    other = book.create_sheet("second")
    other.append(["k", "v"])
    other.append(["a", 12])
    path = tmp_path / "leak.xlsx"
    book.save(path)
    table = read_leaked_file(path)
    # A titled column stays even when empty; untitled empty columns are dropped.
    assert table.headers == ("credit_code", "capital", "established", "active", "when", "empty")
    assert table.rows == (
        ("430102199001011000", "1234.5", "2020-01-05", "TRUE", "", ""),
        ("91430100MA4L0001X1", "88", "2019-12-31", "FALSE", "", ""),
        # A formula Excel never computed has no value to export.
        ("x", "0.3", "2019-12-31 08:30:00", "", "", ""),
    )
    assert read_leaked_file(path, sheet="second").rows == (("a", "12"),)
    with pytest.raises(ValidationError, match="no sheet 'third'"):
        read_leaked_file(path, sheet="third")
    # The same bytes as an upload, kind from the content alone.
    assert read_leaked_bytes(path.read_bytes(), name="upload").rows == table.rows


@pytest.mark.parametrize(
    "document",
    [
        json.dumps([dict(zip(HEADERS, r, strict=True)) for r in ROWS], ensure_ascii=False),
        json.dumps({"rows": [dict(zip(HEADERS, r, strict=True)) for r in ROWS]}),
        json.dumps({"data": [dict(zip(HEADERS, r, strict=True)) for r in ROWS]}),
        "\n".join(json.dumps(dict(zip(HEADERS, r, strict=True))) for r in ROWS) + "\n",
        json.dumps([list(HEADERS), *[list(r) for r in ROWS]]),
    ],
)
def test_json_shapes(tmp_path: Path, document: str) -> None:
    path = tmp_path / "leak.json"
    path.write_text(document, encoding="utf-8")
    table = read_leaked_file(path)
    assert table.headers == HEADERS
    assert table.rows == tuple(ROWS)


def test_json_numbers_keep_their_text_and_keys_are_united(tmp_path: Path) -> None:
    path = tmp_path / "leak.jsonl"
    path.write_text(
        '{"a": 1234.50, "b": null, "c": true}\n\n{"d": 430102199001011234, "a": 7}\n',
        encoding="utf-8",
    )
    table = read_leaked_file(path)
    assert table.headers == ("a", "b", "c", "d")
    assert table.rows == (("1234.50", "", "true", ""), ("7", "", "", "430102199001011234"))


def test_upload_kind_from_media_type_name_or_content() -> None:
    csv_bytes = _csv([HEADERS, *ROWS]).encode("gb18030")
    assert read_leaked_bytes(csv_bytes, media_type="text/csv").rows == tuple(ROWS)
    json_bytes = json.dumps([dict(zip(HEADERS, r, strict=True)) for r in ROWS]).encode()
    assert read_leaked_bytes(json_bytes, media_type="application/json").rows == tuple(ROWS)
    assert read_leaked_bytes(json_bytes, name="x.bin").rows == tuple(ROWS)
    assert read_leaked_bytes(json_bytes, name="leak.json", media_type="text/plain").rows == tuple(
        ROWS
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty"),
        ("blank.csv", b"\n\n  \n", "no data rows"),
        ("header.csv", b"a,b,c\n", "no data rows"),
        ("bad.json", b"[1, 2", "malformed JSON"),
        ("scalars.json", b"[1, 2]", "not an object"),
        ("string.json", b'"x"', "expected a list"),
        ("wrapped.json", b'{"rows": 5}', "'rows' must be a list"),
        ("bad.jsonl", b'{"a": 1}\n{"a": \n', "malformed JSON Lines"),
        ("latin.json", b'[{"a": "\xff"}]', "UTF-8"),
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "legacy Excel"),
        ("fake.xlsx", b"PK\x03\x04garbage", "not a readable XLSX"),
        ("notzip.xlsx", b"credit_code\n1\n", "not an XLSX"),
        ("binary.csv", bytes(range(256)) * 4, "neither UTF-8 nor GB18030"),
    ],
)
def test_unusable_files_are_validation_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValidationError, match=message):
        read_leaked_file(path)


def test_missing_file_is_a_validation_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot open"):
        read_leaked_file(tmp_path / "nothing.csv")
