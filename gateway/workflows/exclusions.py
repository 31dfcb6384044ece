"""The list of entities that may not become merchants (CS23 art. 18).

The authorities publish these lists (dishonest judgement debtors 失信被执行人, major tax
violators 重大税收违法失信主体, revoked business licences, criminal penalties, large
fines); the operator imports them from CSV or XLSX, as the bureau's office saved them. An
entry is lifted, never deleted, so a past decision can still be explained by the list as
it stood then.

Columns (header required; CSV in UTF-8 with or without BOM, or GB18030; or XLSX), English
or Chinese titles (:data:`EXCLUSION_COLUMNS`)::

    credit_code,name,category,source,listed_on[,lifted_on]
    统一社会信用代码,名称,类别,来源,列入日期[,移出日期]

A category is its name below or its Chinese label (失信被执行人, 重大税收违法失信主体,
吊销营业执照, 刑事处罚, 大额罚款); dates as ``2026-12-01``, ``2026/12/1``, ``2026年12月1日``
or an Excel date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.errors import ValidationError
from gateway.identifiers import is_valid_uscc
from gateway.tabular import HeaderMap, Table, open_table, open_table_bytes, parse_local_date

__all__ = [
    "EXCLUSION_COLUMNS",
    "ExclusionCategory",
    "ExclusionEntry",
    "parse_exclusions_bytes",
    "parse_exclusions_csv",
    "parse_exclusions_file",
]

MAX_ROWS = 1_000_000
EXCLUSION_COLUMNS = HeaderMap(
    "exclusion list",
    {
        "credit_code": ("统一社会信用代码", "社会信用代码", "信用代码", "主体代码"),
        "name": ("名称", "企业名称", "单位名称", "主体名称", "当事人名称"),
        "category": ("类别", "类型", "列入类别", "名单类别"),
        "source": ("来源", "列入机关", "决定机关", "认定机关", "数据来源"),
        "listed_on": ("列入日期", "列入时间", "认定日期"),
        "lifted_on": ("移出日期", "移出时间", "解除日期"),
    },
    required=("credit_code", "name", "category", "source", "listed_on"),
)
"""Field → accepted column titles of an exclusion list."""


class ExclusionCategory(StrEnum):
    DISHONEST_DEBTOR = "dishonest-debtor"
    TAX_VIOLATOR = "tax-violator"
    LICENCE_REVOKED = "licence-revoked"
    CRIMINAL_PENALTY = "criminal-penalty"
    LARGE_FINE = "large-fine"


_CATEGORY_LABELS = {
    "失信被执行人": ExclusionCategory.DISHONEST_DEBTOR,
    "重大税收违法失信主体": ExclusionCategory.TAX_VIOLATOR,
    "重大税收违法": ExclusionCategory.TAX_VIOLATOR,
    "税收违法": ExclusionCategory.TAX_VIOLATOR,
    "吊销营业执照": ExclusionCategory.LICENCE_REVOKED,
    "吊销许可证": ExclusionCategory.LICENCE_REVOKED,
    "刑事处罚": ExclusionCategory.CRIMINAL_PENALTY,
    "大额罚款": ExclusionCategory.LARGE_FINE,
    "较大数额罚款": ExclusionCategory.LARGE_FINE,
}


@dataclass(frozen=True, slots=True)
class ExclusionEntry:
    credit_code: str
    name: str
    category: ExclusionCategory
    source: str
    listed_on: dt.date
    lifted_on: dt.date | None = None

    def in_force(self, day: dt.date) -> bool:
        return self.listed_on <= day and (self.lifted_on is None or day < self.lifted_on)

    def to_dict(self) -> dict[str, Any]:
        return {
            "credit_code": self.credit_code,
            "name": self.name,
            "category": self.category.value,
            "source": self.source,
            "listed_on": self.listed_on.isoformat(),
            "lifted_on": self.lifted_on.isoformat() if self.lifted_on else None,
        }


def _date(line: int, column: str, value: str) -> dt.date:
    try:
        return parse_local_date(value)
    except ValueError:
        raise ValidationError(
            f"exclusion list line {line}: {column} {value!r} is not a YYYY-MM-DD date"
        ) from None


def _category(line: int, value: str) -> ExclusionCategory:
    text = value.strip()
    if text in _CATEGORY_LABELS:
        return _CATEGORY_LABELS[text]
    try:
        return ExclusionCategory(text)
    except ValueError:
        raise ValidationError(
            f"exclusion list line {line}: category must be one of "
            + ", ".join(c.value for c in ExclusionCategory)
            + " (or its Chinese label: "
            + ", ".join(_CATEGORY_LABELS)
            + ")"
        ) from None


def parse_exclusions_file(path: Path) -> list[ExclusionEntry]:
    """Every entry of an exclusion-list file (CSV or XLSX, see the module docs);
    :class:`ValidationError` naming the line of the first bad row (nothing is imported
    from a file with errors)."""
    with open_table(path) as table:
        return _entries(table)


def parse_exclusions_bytes(data: bytes, name: str = "upload") -> list[ExclusionEntry]:
    """Like :func:`parse_exclusions_file` for a file received in memory."""
    with open_table_bytes(data, name) as table:
        return _entries(table)


def parse_exclusions_csv(text: str) -> list[ExclusionEntry]:
    """Like :func:`parse_exclusions_file` for CSV text already decoded."""
    return parse_exclusions_bytes(text.encode("utf-8"), "exclusion list")


def _entries(table: Table) -> list[ExclusionEntry]:
    return list(_read(EXCLUSION_COLUMNS.records(table)))


def _read(rows: Iterator[tuple[int, dict[str, str]]]) -> Iterator[ExclusionEntry]:
    for count, (line, row) in enumerate(rows):
        if count >= MAX_ROWS:
            raise ValidationError(f"exclusion list: more than {MAX_ROWS} rows; split the file")
        code = row["credit_code"].upper()
        if not is_valid_uscc(code):
            raise ValidationError(
                f"exclusion list line {line}: {code!r} is not a valid unified social credit code"
            )
        category = _category(line, row["category"])
        name = row["name"]
        source = row["source"]
        if not name or not source or len(name) > 200 or len(source) > 200:
            raise ValidationError(
                f"exclusion list line {line}: name and source must be 1-200 characters"
            )
        listed = _date(line, "listed_on", row["listed_on"])
        lifted_text = row.get("lifted_on", "")
        lifted = _date(line, "lifted_on", lifted_text) if lifted_text else None
        if lifted is not None and lifted < listed:
            raise ValidationError(f"exclusion list line {line}: lifted_on is before listed_on")
        yield ExclusionEntry(code, name, category, source, listed, lifted)
