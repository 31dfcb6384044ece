"""A connector for a UTF-8 CSV file, held in memory.

For the small reference files providers publish as spreadsheets exports. The file is read
once, on first use, in a worker thread; every value is coerced to its declared type then,
so a bad file fails loudly at load rather than as odd answers later. Queries run in a
worker thread too, over immutable data, so the event loop stays responsive.

The semantics match :class:`connectors.sql.SqlConnector`: conditions are AND-ed; ``NULL``
(an empty cell) never satisfies ``gt``/``gte``/``lt``/``lte``/``prefix``, and matches
``eq``/``in`` only when null is asked for; sorting is by code point for strings with
``NULL`` first; sums are exact and averages are ``sum / count`` in
:data:`connectors._query.AVG_CONTEXT` (28 significant digits, half-even). Rows that tie on
``order_by`` keep their file order.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from connectors._query import (
    SUBJECTS,
    SUM_CONTEXT,
    average,
    check_aggregate_query,
    check_row_query,
)
from connectors.base import (
    AggregateQuery,
    Condition,
    ConnectorError,
    FieldType,
    Row,
    RowQuery,
    Value,
    coerce_value,
)

__all__ = ["CsvConnector"]

_Record = tuple[Value, ...]
_Predicate = Callable[[_Record], bool]


@dataclass(frozen=True, slots=True)
class _Table:
    """The loaded file: records in file order, column positions, and eq indexes."""

    records: list[_Record]
    position: dict[str, int]
    indexes: dict[str, dict[Value, list[int]]]


class _Group:
    """Running totals of one aggregate group: rows, per-measure non-null count and exact
    sum, distinct subjects."""

    __slots__ = ("counts", "rows", "subjects", "sums")

    def __init__(self, measures: int) -> None:
        self.rows = 0
        self.counts = [0] * measures
        self.sums: list[Decimal | None] = [None] * measures
        self.subjects: set[Value] = set()

    def add(self, record: _Record, measure_pos: Sequence[int | None], subject_pos: int) -> None:
        self.rows += 1
        for i, pos in enumerate(measure_pos):
            if pos is None:
                continue
            value = record[pos]
            if value is None:
                continue
            self.counts[i] += 1
            if isinstance(value, Decimal | int):  # sum/avg fields are numeric (checked)
                number = Decimal(value)
                total = self.sums[i]
                self.sums[i] = number if total is None else SUM_CONTEXT.add(total, number)
        subject = record[subject_pos]
        if subject is not None:
            self.subjects.add(subject)


def _sort_key(positions: Sequence[int]) -> Callable[[_Record], tuple[Any, ...]]:
    """Ascending, ``NULL`` first, like the SQL connector."""

    def key(record: _Record) -> tuple[Any, ...]:
        return tuple((0, 0) if record[p] is None else (1, record[p]) for p in positions)

    return key


def _predicate(cond: Condition, pos: int) -> _Predicate:
    value = cond.value
    if cond.op == "eq":
        if value is None:
            return lambda r: r[pos] is None
        return lambda r: r[pos] is not None and r[pos] == value
    if cond.op == "in":
        assert isinstance(value, tuple)
        wanted = frozenset(value)
        return lambda r: r[pos] in wanted
    if cond.op == "prefix":
        assert isinstance(value, str)
        return lambda r: isinstance(r[pos], str) and r[pos].startswith(value)  # type: ignore[union-attr]
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    compare = ops[cond.op]
    return lambda r: r[pos] is not None and compare(r[pos], value)


class CsvConnector:
    """A CSV file whose header names at least every declared field.

    Extra columns are ignored; an empty cell is ``NULL``. ``index_fields`` get a hash
    index, used for ``eq`` and ``in`` conditions (typically the dataset's key fields).
    """

    def __init__(
        self,
        path: Path,
        fields: Mapping[str, FieldType],
        *,
        index_fields: Sequence[str] = (),
    ) -> None:
        if not fields:
            raise ValueError(f"source file {path.name}: declare at least one field")
        unknown = [name for name in index_fields if name not in fields]
        if unknown:
            raise ValueError(f"source file {path.name}: index fields {unknown} are not declared")
        self._path = path
        self._fields: dict[str, FieldType] = dict(fields)
        self._index_fields = tuple(index_fields)
        self._table: _Table | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    # --- loading ----------------------------------------------------------------------

    def _fail(self, why: str) -> ConnectorError:
        return ConnectorError(f"source file {self._path.name}: {why}")

    def _load(self) -> _Table:
        names = list(self._fields)
        types = [self._fields[n] for n in names]
        records: list[_Record] = []
        try:
            with self._path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle, strict=True)
                header = next(reader, None)
                if header is None:
                    raise self._fail("the file is empty; the first row must name the columns")
                header = [h.strip() for h in header]
                if len(set(header)) != len(header):
                    raise self._fail("the header row names a column twice")
                missing = [n for n in names if n not in header]
                if missing:
                    raise self._fail(f"the header row lacks declared field(s) {', '.join(missing)}")
                columns = [header.index(n) for n in names]
                width = len(header)
                for row in reader:
                    if not row:
                        continue
                    if len(row) != width:
                        raise self._fail(
                            f"line {reader.line_num} has {len(row)} cells, the header {width}"
                        )
                    records.append(self._record(row, columns, types, names, reader.line_num))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise self._fail(f"cannot read the file as UTF-8 CSV ({type(exc).__name__})") from None
        position = {n: i for i, n in enumerate(names)}
        indexes: dict[str, dict[Value, list[int]]] = {}
        for name in self._index_fields:
            index: dict[Value, list[int]] = {}
            pos = position[name]
            for i, record in enumerate(records):
                index.setdefault(record[pos], []).append(i)
            indexes[name] = index
        return _Table(records, position, indexes)

    def _record(
        self,
        row: list[str],
        columns: list[int],
        types: list[FieldType],
        names: list[str],
        line: int,
    ) -> _Record:
        values: list[Value] = []
        for col, type_, name in zip(columns, types, names, strict=True):
            cell = row[col]
            if cell == "":
                values.append(None)
                continue
            try:
                values.append(coerce_value(type_, cell))
            except (TypeError, ValueError):
                # The cell itself is not echoed: it may be personal data.
                raise self._fail(
                    f"line {line}, column {name}: not a valid {type_}; fix the file or "
                    "the declared type"
                ) from None
        return tuple(values)

    async def _loaded(self) -> _Table:
        if self._closed:
            raise self._fail("the connector is closed")
        if self._table is None:
            async with self._lock:
                if self._table is None:
                    self._table = await asyncio.to_thread(self._load)
        return self._table

    # --- querying ---------------------------------------------------------------------

    @staticmethod
    def _candidates(table: _Table, conditions: Iterable[Condition]) -> Iterable[int]:
        """Row numbers to examine, in file order: the smallest index hit, or all rows."""
        best: list[int] | None = None
        for cond in conditions:
            index = table.indexes.get(cond.field)
            if index is None or cond.op not in ("eq", "in"):
                continue
            if not isinstance(cond.value, tuple):  # eq
                hits = index.get(cond.value, [])
            else:  # in
                hits = sorted({i for v in set(cond.value) for i in index.get(v, [])})
            if best is None or len(hits) < len(best):
                best = hits
        return range(len(table.records)) if best is None else best

    @staticmethod
    def _matching(table: _Table, conditions: tuple[Condition, ...]) -> list[_Record]:
        predicates = [_predicate(c, table.position[c.field]) for c in conditions]
        records = table.records
        return [
            records[i]
            for i in CsvConnector._candidates(table, conditions)
            if all(p(records[i]) for p in predicates)
        ]

    @staticmethod
    def _fetch(table: _Table, query: RowQuery, conditions: tuple[Condition, ...]) -> list[Row]:
        matched = CsvConnector._matching(table, conditions)
        if query.order_by:
            # sorted() is stable, so ties keep file order.
            matched.sort(key=_sort_key([table.position[n] for n in query.order_by]))
        page = matched[query.offset : query.offset + query.limit]
        positions = [(n, table.position[n]) for n in query.fields]
        return [{name: record[pos] for name, pos in positions} for record in page]

    @staticmethod
    def _aggregate(
        table: _Table, query: AggregateQuery, conditions: tuple[Condition, ...]
    ) -> list[Row]:
        group_pos = [table.position[n] for n in query.group_by]
        subject_pos = table.position[query.subject_field]
        measure_pos = [None if m.field is None else table.position[m.field] for m in query.measures]
        groups: dict[tuple[Value, ...], _Group] = {}
        if not query.group_by:  # like SQL: one row even when nothing matches
            groups[()] = _Group(len(query.measures))
        for record in CsvConnector._matching(table, conditions):
            key = tuple(record[p] for p in group_pos)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(len(query.measures))
            group.add(record, measure_pos, subject_pos)
        keys = sorted(groups, key=_sort_key(range(len(group_pos))))[: query.limit]
        out: list[Row] = []
        for key in keys:
            group = groups[key]
            result: Row = dict(zip(query.group_by, key, strict=True))
            for i, measure in enumerate(query.measures):
                if measure.fn == "count":
                    result[measure.name] = group.rows if measure.field is None else group.counts[i]
                elif measure.fn == "sum":
                    result[measure.name] = group.sums[i]
                else:
                    result[measure.name] = average(group.sums[i], group.counts[i])
            result[SUBJECTS] = len(group.subjects)
            out.append(result)
        return out

    async def fetch(self, query: RowQuery) -> list[Row]:
        conditions = check_row_query(self._fields, query)
        table = await self._loaded()
        return await asyncio.to_thread(self._fetch, table, query, conditions)

    async def aggregate(self, query: AggregateQuery) -> list[Row]:
        conditions = check_aggregate_query(self._fields, query)
        table = await self._loaded()
        return await asyncio.to_thread(self._aggregate, table, query, conditions)

    async def close(self) -> None:
        """Drop the loaded rows; later queries raise :class:`ConnectorError`."""
        self._closed = True
        self._table = None
