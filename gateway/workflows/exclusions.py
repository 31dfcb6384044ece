"""The list of entities that may not become merchants (CS23 art. 18).

The authorities publish these lists (dishonest judgement debtors 失信被执行人, major tax
violators 重大税收违法失信主体, revoked business licences, criminal penalties, large
fines); the operator imports them from CSV. An entry is lifted, never deleted, so a past
decision can still be explained by the list as it stood then.

CSV columns (header required, UTF-8, an optional BOM as Excel writes it)::

    credit_code,name,category,source,listed_on[,lifted_on]
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.errors import ValidationError
from gateway.identifiers import is_valid_uscc

__all__ = ["ExclusionCategory", "ExclusionEntry", "parse_exclusions_csv"]

_REQUIRED = ("credit_code", "name", "category", "source", "listed_on")
MAX_ROWS = 1_000_000


class ExclusionCategory(StrEnum):
    DISHONEST_DEBTOR = "dishonest-debtor"
    TAX_VIOLATOR = "tax-violator"
    LICENCE_REVOKED = "licence-revoked"
    CRIMINAL_PENALTY = "criminal-penalty"
    LARGE_FINE = "large-fine"


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
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(
            f"exclusion list line {line}: {column} {value!r} is not a YYYY-MM-DD date"
        ) from None


def parse_exclusions_csv(text: str) -> list[ExclusionEntry]:
    """Every entry of an exclusion-list CSV; :class:`ValidationError` naming the line of
    the first bad row (nothing is imported from a file with errors)."""
    if "\x00" in text:
        # No store can hold it in a name or source (PostgreSQL text refuses NUL).
        raise ValidationError("exclusion list: the file contains a NUL character", field="body")
    # newline="": the csv module reads line ends itself, a lone CR included.
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        return _entries(reader)
    except csv.Error as exc:
        # A malformed file (an oversized field, say): the reader's message names no input.
        raise ValidationError(
            f"exclusion list line {reader.line_num}: not readable as CSV ({exc})", field="body"
        ) from None


def _entries(reader: csv.DictReader[str]) -> list[ExclusionEntry]:
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise ValidationError(
            f"exclusion list: the header lacks {', '.join(missing)}; expected "
            "credit_code,name,category,source,listed_on[,lifted_on]"
        )
    reader.fieldnames = header
    entries: list[ExclusionEntry] = []
    for row in reader:
        line = reader.line_num
        if len(entries) >= MAX_ROWS:
            raise ValidationError(f"exclusion list: more than {MAX_ROWS} rows; split the file")
        code = (row.get("credit_code") or "").strip().upper()
        if not is_valid_uscc(code):
            raise ValidationError(
                f"exclusion list line {line}: {code!r} is not a valid unified social credit code"
            )
        try:
            category = ExclusionCategory((row.get("category") or "").strip())
        except ValueError:
            raise ValidationError(
                f"exclusion list line {line}: category must be one of "
                + ", ".join(c.value for c in ExclusionCategory)
            ) from None
        name = (row.get("name") or "").strip()
        source = (row.get("source") or "").strip()
        if not name or not source or len(name) > 200 or len(source) > 200:
            raise ValidationError(
                f"exclusion list line {line}: name and source must be 1-200 characters"
            )
        listed = _date(line, "listed_on", row.get("listed_on") or "")
        lifted_text = (row.get("lifted_on") or "").strip()
        lifted = _date(line, "lifted_on", lifted_text) if lifted_text else None
        if lifted is not None and lifted < listed:
            raise ValidationError(f"exclusion list line {line}: lifted_on is before listed_on")
        entries.append(ExclusionEntry(code, name, category, source, listed, lifted))
    return entries
