"""A connector for one table of any SQL database SQLAlchemy reaches with a sync driver.

Why sync drivers in threads rather than an async driver: source databases belong to the
data providers and come in every flavour; sync DBAPI drivers exist for all of them, async
ones for few. Each query runs on a pooled connection inside this connector's own thread
pool, so a slow source never blocks the event loop nor starves other sources.

Why SQLAlchemy Core with lightweight ``table()``/``column()`` objects built from the
declared fields: nothing is reflected from the source (no surprise columns, no DDL
round-trips), names are quoted by the dialect, and every value is a bound parameter, so no
value can change the shape of a statement.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.type_api import TypeEngine

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

__all__ = ["CONNECT_TIMEOUT", "SqlConnector"]

#: Name of the exact decimal SUM registered on SQLite connections (see _DecimalSum).
_SQLITE_DECIMAL_SUM = "dsgw_decimal_sum"
_LIKE_ESCAPE = "\\"
#: Seconds a PostgreSQL connection attempt may take (unless the URL sets connect_timeout).
CONNECT_TIMEOUT = 10


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


class _DecimalSum:
    """Exact SUM for SQLite, whose own SUM adds decimals as binary floats.

    SQLite keeps a ``NUMERIC`` value such as ``1234.56`` as a REAL; ``repr`` of that float
    gives back the shortest decimal that round-trips, i.e. the value that was stored, so
    adding ``Decimal(repr(v))`` is exact. The result is returned as text to survive the
    trip back through SQLite untouched.
    """

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: object) -> None:
        if value is None:
            return
        if isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, int | str):
            number = Decimal(value)
        else:
            raise TypeError("dsgw_decimal_sum: not a number")
        self.total = number if self.total is None else SUM_CONTEXT.add(self.total, number)

    def finalize(self) -> str | None:
        return None if self.total is None else str(self.total)


def _prepare_sqlite(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # typeshed wants finalize() -> int; SQLite accepts text as well.
    dbapi_conn.create_aggregate(_SQLITE_DECIMAL_SUM, 1, cast(Any, _DecimalSum))


def _sqlite_creator(database: str) -> Callable[[], sqlite3.Connection]:
    """Open the SQLite file read-only: a source is never written, and a missing file
    fails instead of silently becoming a new empty database."""
    uri = "file:" + urllib.parse.quote(database) + "?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    return connect


def _make_engine(url: str | URL, table: str, pool_size: int) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConnectorError(
            f"source table {table}: the database URL is not a valid SQLAlchemy URL "
            "(e.g. sqlite:///path/to/file.sqlite3 or postgresql+psycopg://user@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            kwargs["creator"] = _sqlite_creator(database)
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = 0
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = 0
        kwargs["pool_pre_ping"] = True
        if backend == "postgresql" and "connect_timeout" not in parsed.query:
            # An unreachable host should fail a call in seconds, not hang it.
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError):
        raise ConnectorError(
            f"source table {table}: no installed driver for {parsed.drivername!r}; install "
            "it or name an installed one in the URL (e.g. postgresql+psycopg://...)"
        ) from None
    except (SQLAlchemyError, TypeError):
        raise ConnectorError(
            f"source table {table}: cannot create a {backend} engine from the database URL"
        ) from None
    if engine.dialect.is_async:
        engine.dispose()
        raise ConnectorError(
            f"source table {table}: {parsed.drivername!r} is an async driver; SQL sources "
            "need a sync driver (e.g. sqlite:/// or postgresql+psycopg://)"
        )
    if backend == "sqlite":
        event.listen(engine, "connect", _prepare_sqlite)
    return engine


def _describe(exc: BaseException) -> str:
    """A short cause that names no SQL and no parameter value (driver messages may quote
    either, and parameters can be personal data)."""
    orig = getattr(exc, "orig", None) or exc
    parts = [type(orig).__name__]
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    if isinstance(code, str):
        parts.append(code)
    return " ".join(parts)


class SqlConnector:
    """One table of a SQL database, queried through declared fields only.

    ``fields`` maps each usable column to its type; other columns of the table are never
    touched. Values coming back are coerced to the declared types with ``coerce_value``
    (SQLite hands back dates as text and decimals as floats, for instance). SQLite keeps
    ``NUMERIC`` values as integers or floats, so a decimal's trailing zeros do not survive
    there (``200.00`` comes back as ``200``: equal in value, not in scale); its decimal sums
    are nonetheless exact, through an aggregate registered on each connection.
    ``avg`` is computed here as exact ``sum / count`` (see ``connectors._query.average``),
    so every backend gives the same digits.

    Ordering is by the requested fields, ``NULL`` first. On PostgreSQL, strings are
    compared and sorted with the ``"C"`` collation, i.e. by code point, the same order
    SQLite and the CSV connector use, so a page boundary does not move with the backend.
    Rows that tie on ``order_by`` come back in an order the database chooses.
    """

    def __init__(
        self,
        url: str | URL,
        table: str,
        fields: Mapping[str, FieldType],
        *,
        schema: str | None = None,
        pool_size: int = 4,
    ) -> None:
        if not fields:
            raise ValueError(f"source table {table}: declare at least one field")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._name = table if schema is None else f"{schema}.{table}"
        self._fields: dict[str, FieldType] = dict(fields)
        self._columns = {name: sa.column(name, _sa_type(t)) for name, t in fields.items()}
        self._table = sa.table(table, *self._columns.values(), schema=schema)
        self._engine = _make_engine(url, self._name, pool_size)
        dialect = self._engine.dialect.name
        self._sqlite = dialect == "sqlite"
        self._postgres = dialect == "postgresql"
        self._executor = ThreadPoolExecutor(
            max_workers=pool_size, thread_name_prefix=f"dsgw-sql-{table}"
        )
        self._closed = False

    # --- statement building ----------------------------------------------------------

    def _ordered(self, name: str) -> ColumnElement[Any]:
        """The column as it should compare and sort: code-point order for strings."""
        column = self._columns[name]
        if self._postgres and self._fields[name] == "string":
            return sa.collate(column, "C")
        return column

    def _order(self, names: Sequence[str]) -> list[ColumnElement[Any]]:
        if self._postgres:  # SQLite and Python already put NULL first.
            return [self._ordered(n).asc().nulls_first() for n in names]
        return [self._ordered(n).asc() for n in names]

    def _where(self, cond: Condition) -> ColumnElement[bool]:
        column = self._columns[cond.field]
        value = cond.value
        if cond.op == "eq":
            return column.is_(None) if value is None else column == value
        if cond.op == "in":
            assert isinstance(value, tuple)
            present = [v for v in value if v is not None]
            clause = column.in_(present)
            return sa.or_(clause, column.is_(None)) if None in value else clause
        if cond.op == "prefix":
            assert isinstance(value, str)
            escaped = (
                value.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
                .replace("%", _LIKE_ESCAPE + "%")
                .replace("_", _LIKE_ESCAPE + "_")
            )
            like = column.like(escaped + "%", escape=_LIKE_ESCAPE)
            if self._sqlite:
                # SQLite's LIKE ignores ASCII case; the exact prefix keeps it strict.
                return sa.and_(like, sa.func.substr(column, 1, len(value)) == value)
            return like
        ordered = self._ordered(cond.field)
        if cond.op == "gt":
            return ordered > value
        if cond.op == "gte":
            return ordered >= value
        if cond.op == "lt":
            return ordered < value
        return ordered <= value

    def _sum(self, name: str) -> ColumnElement[Any]:
        column = self._columns[name]
        if self._sqlite and self._fields[name] == "decimal":
            return getattr(sa.func, _SQLITE_DECIMAL_SUM)(column)  # type: ignore[no-any-return]
        return sa.func.sum(column)

    # --- execution --------------------------------------------------------------------

    def _query_all(self, stmt: sa.Select[Any]) -> list[sa.Row[Any]]:
        with self._engine.connect() as conn:
            return list(conn.execute(stmt).all())

    async def _run(self, stmt: sa.Select[Any]) -> list[sa.Row[Any]]:
        if self._closed:
            raise ConnectorError(f"source table {self._name}: the connector is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._query_all, stmt)
        except (SQLAlchemyError, OSError) as exc:
            raise ConnectorError(
                f"source table {self._name}: the database could not answer ({_describe(exc)}); "
                "check that it is reachable and that the table and declared columns exist"
            ) from None

    def _coerce(self, name: str, raw: object) -> Value:
        try:
            return coerce_value(self._fields[name], raw)
        except (TypeError, ValueError):
            raise ConnectorError(
                f"source table {self._name}: column {name} holds a value that is not a "
                f"valid {self._fields[name]}; fix the data or the declared type"
            ) from None

    async def fetch(self, query: RowQuery) -> list[Row]:
        conditions = check_row_query(self._fields, query)
        stmt = (
            sa.select(*(self._columns[name] for name in query.fields))
            .select_from(self._table)
            .where(*(self._where(c) for c in conditions))
            .order_by(*self._order(query.order_by))
            .limit(query.limit)
            .offset(query.offset)
        )
        rows = await self._run(stmt)
        return [
            {name: self._coerce(name, raw) for name, raw in zip(query.fields, row, strict=True)}
            for row in rows
        ]

    async def aggregate(self, query: AggregateQuery) -> list[Row]:
        conditions = check_aggregate_query(self._fields, query)
        # Positional labels: output names never have to be valid or unique SQL labels.
        columns: list[ColumnElement[Any]] = [
            self._columns[name].label(f"g{i}") for i, name in enumerate(query.group_by)
        ]
        for i, measure in enumerate(query.measures):
            if measure.fn == "count":
                counted = (
                    sa.func.count()
                    if measure.field is None
                    else sa.func.count(self._columns[measure.field])
                )
                columns.append(counted.label(f"m{i}"))
            else:
                assert measure.field is not None
                columns.append(self._sum(measure.field).label(f"m{i}"))
                if measure.fn == "avg":
                    columns.append(sa.func.count(self._columns[measure.field]).label(f"n{i}"))
        subject = self._columns[query.subject_field]
        columns.append(sa.func.count(sa.distinct(subject)).label("subjects"))
        stmt = (
            sa.select(*columns)
            .select_from(self._table)
            .where(*(self._where(c) for c in conditions))
            .group_by(*(self._columns[name] for name in query.group_by))
            .order_by(*self._order(query.group_by))
            .limit(query.limit)
        )
        rows = await self._run(stmt)
        out: list[Row] = []
        for row in rows:
            values = row._mapping
            result: Row = {
                name: self._coerce(name, values[f"g{i}"]) for i, name in enumerate(query.group_by)
            }
            for i, measure in enumerate(query.measures):
                raw = values[f"m{i}"]
                if measure.fn == "count":
                    result[measure.name] = int(raw)
                    continue
                total = None if raw is None else coerce_value("decimal", raw)
                assert total is None or isinstance(total, Decimal)
                if measure.fn == "sum":
                    result[measure.name] = total
                else:
                    result[measure.name] = average(total, int(values[f"n{i}"]))
            result[SUBJECTS] = int(values["subjects"])
            out.append(result)
        return out

    async def close(self) -> None:
        """Wait for running queries, then close the pool and stop the threads."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        self._engine.dispose()
