"""Statements of the SQL connector: built from the declared fields, compiled once per shape.

Why SQLAlchemy Core with lightweight ``table()``/``column()`` objects built from the
declared fields: nothing is reflected from the source (no surprise columns, no DDL
round-trips), names are quoted by the dialect, and every value is a bound parameter named by
its place in the query (``c0``, ``c1_2``, ``lim``), never rendered into the text, so no value
can change what a statement does.

Why compile once: building a ``Select`` and compiling it costs more than the point lookup it
runs. A row query's *shape* is everything but its values: the selected fields, each
condition's field and operator, the order, and -- because a null
is matched with ``IS NULL`` and an ``in`` list is written out -- whether an ``eq`` value is
null and how many values an ``in`` list holds. :class:`FetchStatements` keeps the SQL text of
each shape, its parameter order and the driver conversions of its parameters in a bounded
LRU cache; a call only binds its values.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.type_api import TypeEngine

from connectors.base import Condition, FieldType, RowQuery

__all__ = [
    "SQLITE_DECIMAL_SUM",
    "CompiledFetch",
    "FetchStatements",
    "SqlStatements",
    "condition_values",
    "fetch_values",
]

#: Name of the exact decimal SUM registered on SQLite connections (connectors.sql).
SQLITE_DECIMAL_SUM = "dsgw_decimal_sum"
_LIKE_ESCAPE = "\\"
#: Compiled row-query shapes kept per connector; a gateway's scenarios use a handful.
_CACHE_SIZE = 256

Shape = tuple[object, ...]


class _RawNumeric(sa.Numeric[Decimal]):
    """``NUMERIC`` binds, but results arrive as the driver returns them: the connector
    coerces every value itself, and SQLAlchemy's float-to-Decimal step for SQLite would
    pad values to ten decimal places."""

    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


class _RawDate(sa.Date):
    """``DATE`` binds (SQLite gets ISO text), results coerced by the connector."""

    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


def _sa_type(type_: FieldType) -> TypeEngine[Any]:
    if type_ == "string":
        return sa.String()
    if type_ == "integer":
        return sa.BigInteger()
    if type_ == "decimal":
        return _RawNumeric()
    if type_ == "date":
        return _RawDate()
    return sa.Boolean()


def _escaped_like(value: str) -> str:
    return (
        value.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
        + "%"
    )


def condition_values(conditions: Sequence[Condition]) -> dict[str, object]:
    """The bound values of ``conditions``, by the names :meth:`SqlStatements.where` gives
    their parameters (a null ``eq`` and the nulls of an ``in`` list bind nothing)."""
    values: dict[str, object] = {}
    for i, cond in enumerate(conditions):
        value = cond.value
        if cond.op == "in":
            assert isinstance(value, tuple)
            present = [v for v in value if v is not None]
            values.update((f"c{i}_{j}", v) for j, v in enumerate(present))
        elif cond.op == "prefix":
            assert isinstance(value, str)
            values[f"c{i}"] = _escaped_like(value)
            values[f"c{i}_v"] = value
        elif value is not None:
            values[f"c{i}"] = value
    return values


def _condition_shape(cond: Condition) -> tuple[object, ...]:
    if cond.op == "eq":
        return (cond.field, "eq", cond.value is None)
    if cond.op == "in":
        assert isinstance(cond.value, tuple)
        present = sum(1 for v in cond.value if v is not None)
        return (cond.field, "in", present, any(v is None for v in cond.value))
    return (cond.field, cond.op)


class SqlStatements:
    """Clauses over one table's declared columns, with named bound parameters."""

    def __init__(
        self,
        table: str,
        fields: Mapping[str, FieldType],
        *,
        schema: str | None,
        dialect: Dialect,
    ) -> None:
        self.fields: dict[str, FieldType] = dict(fields)
        self.columns = {name: sa.column(name, _sa_type(t)) for name, t in fields.items()}
        self.table = sa.table(table, *self.columns.values(), schema=schema)
        self.dialect = dialect
        self.sqlite = dialect.name == "sqlite"
        self.postgres = dialect.name == "postgresql"

    def _ordered(self, name: str) -> ColumnElement[Any]:
        """The column as it should compare and sort: code-point order for strings."""
        column = self.columns[name]
        if self.postgres and self.fields[name] == "string":
            return sa.collate(column, "C")
        return column

    def order(self, names: Sequence[str]) -> list[ColumnElement[Any]]:
        if self.postgres:  # SQLite and Python already put NULL first.
            return [self._ordered(n).asc().nulls_first() for n in names]
        return [self._ordered(n).asc() for n in names]

    def where(self, i: int, cond: Condition) -> ColumnElement[bool]:
        """The clause of condition ``i``; its values bind as :func:`condition_values` names them."""
        column = self.columns[cond.field]

        def bound(name: str, type_: TypeEngine[Any] | None = None) -> BindParameter[Any]:
            return sa.bindparam(name, type_=column.type if type_ is None else type_)

        value = cond.value
        if cond.op == "eq":
            return column.is_(None) if value is None else column == bound(f"c{i}")
        if cond.op == "in":
            assert isinstance(value, tuple)
            present = sum(1 for v in value if v is not None)
            clause: ColumnElement[bool] = (
                column.in_([bound(f"c{i}_{j}") for j in range(present)]) if present else sa.false()
            )
            return sa.or_(clause, column.is_(None)) if None in value else clause
        if cond.op == "prefix":
            like = column.like(bound(f"c{i}", sa.String()), escape=_LIKE_ESCAPE)
            if self.sqlite:
                # SQLite's LIKE ignores ASCII case; the exact prefix keeps it strict.
                exact = bound(f"c{i}_v", sa.String())
                start = sa.func.substr(column, sa.literal_column("1"), sa.func.length(exact))
                return sa.and_(like, start == exact)
            return like
        ordered = self._ordered(cond.field)
        if cond.op == "gt":
            return ordered > bound(f"c{i}")
        if cond.op == "gte":
            return ordered >= bound(f"c{i}")
        if cond.op == "lt":
            return ordered < bound(f"c{i}")
        return ordered <= bound(f"c{i}")

    def total(self, name: str) -> ColumnElement[Any]:
        """``SUM`` of a column; on SQLite an exact decimal sum for decimals."""
        column = self.columns[name]
        if self.sqlite and self.fields[name] == "decimal":
            return getattr(sa.func, SQLITE_DECIMAL_SUM)(column)  # type: ignore[no-any-return]
        return sa.func.sum(column)


@dataclass(slots=True)
class CompiledFetch:
    """One row-query shape, compiled: its SQL text, and for each parameter, in the order
    the driver takes them (by name for named paramstyles), the value's name and the
    driver conversion. ``on_loop`` is the connector's decision for the shape."""

    sql: str
    slots: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    positional: bool
    on_loop: bool = False

    def parameters(self, values: Mapping[str, object]) -> tuple[object, ...] | dict[str, object]:
        """The driver's parameters for ``values``."""
        if self.positional:
            return tuple(
                values[name] if convert is None else convert(values[name])
                for name, convert in self.slots
            )
        return {
            name: values[name] if convert is None else convert(values[name])
            for name, convert in self.slots
        }


class FetchStatements:
    """The compiled row-query shapes of one table, least recently used dropped first."""

    def __init__(self, statements: SqlStatements) -> None:
        self._statements = statements
        self._cache: OrderedDict[Shape, CompiledFetch] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def get(
        self,
        query: RowQuery,
        conditions: Sequence[Condition],
        decide: Callable[[CompiledFetch], bool],
    ) -> CompiledFetch:
        """The compiled shape of ``query`` (``conditions``: its checked conditions);
        ``decide`` runs once per new shape and says whether it may run on the loop."""
        shape: Shape = (
            query.fields,
            tuple(_condition_shape(c) for c in conditions),
            query.order_by,
        )
        compiled = self._cache.get(shape)
        if compiled is not None:
            self._cache.move_to_end(shape)
            return compiled
        compiled = self._compile(query, conditions)
        compiled.on_loop = decide(compiled)
        self._cache[shape] = compiled
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return compiled

    def _compile(self, query: RowQuery, conditions: Sequence[Condition]) -> CompiledFetch:
        s = self._statements
        stmt = (
            sa.select(*(s.columns[name] for name in query.fields))
            .select_from(s.table)
            .where(*(s.where(i, c) for i, c in enumerate(conditions)))
            .order_by(*s.order(query.order_by))
            .limit(sa.bindparam("lim", type_=sa.Integer()))
            .offset(sa.bindparam("off", type_=sa.Integer()))
        )
        compiled = stmt.compile(dialect=s.dialect)
        positional = compiled.positiontup is not None
        names = list(compiled.positiontup or compiled.binds)
        unnamed = set(names) - set(fetch_values(conditions, 0, 0))
        if unnamed:  # a constant the dialect bound itself: a value would be missing per call
            raise AssertionError(f"statement binds parameters nobody names: {sorted(unnamed)}")

        def convert(name: str) -> Callable[[Any], Any] | None:
            type_ = compiled.binds[name].type
            return type_.dialect_impl(s.dialect).bind_processor(s.dialect)

        return CompiledFetch(compiled.string, tuple((n, convert(n)) for n in names), positional)


def fetch_values(conditions: Sequence[Condition], limit: int, offset: int) -> dict[str, object]:
    """Every value a compiled row query binds: its conditions', its limit and offset."""
    values = condition_values(conditions)
    values["lim"] = limit
    values["off"] = offset
    return values
