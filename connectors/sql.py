"""A connector for one table of any SQL database SQLAlchemy reaches with a sync driver.

Why sync drivers in threads rather than an async driver: source databases belong to the
data providers and come in every flavour; sync DBAPI drivers exist for all of them, async
ones for few. Each query runs on a pooled connection inside this connector's own thread
pool, so a slow source never blocks the event loop nor starves other sources. The one
exception is an index lookup in a local SQLite file, which costs less than the thread hop
and runs on the loop under the guards :mod:`connectors._sqlite_loop` explains.

Statements are built from the declared fields and compiled once per query shape
(:mod:`connectors._sql_statements`); a row query then goes to the driver with only its
values bound, without SQLAlchemy's per-call execution machinery.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.schema import CreateIndex
from sqlalchemy.sql.elements import ColumnElement

from connectors._query import (
    SUBJECTS,
    SUM_CONTEXT,
    average,
    check_aggregate_query,
    check_row_query,
)
from connectors._sql_statements import (
    SQLITE_DECIMAL_SUM,
    CompiledFetch,
    FetchStatements,
    SqlStatements,
    condition_values,
    fetch_values,
)
from connectors._sqlite_loop import LOOP_MAX_ROWS, LoopReader, LoopRefused
from connectors.base import (
    AggregateQuery,
    ConnectorError,
    FieldType,
    Row,
    RowQuery,
    Value,
    coerce_value,
)

__all__ = ["CONNECT_TIMEOUT", "SqlConnector"]

_T = TypeVar("_T")
#: Seconds a PostgreSQL connection attempt may take (unless the URL sets connect_timeout).
CONNECT_TIMEOUT = 10


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
    dbapi_conn.create_aggregate(SQLITE_DECIMAL_SUM, 1, cast(Any, _DecimalSum))


def _sqlite_creator(database: str) -> Callable[[], sqlite3.Connection]:
    """Open the SQLite file read-only: a source is never written, and a missing file
    fails instead of silently becoming a new empty database."""
    uri = "file:" + urllib.parse.quote(database) + "?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    return connect


def _sqlite_file(url: URL) -> str | None:
    """The path of a SQLite source file; ``None`` for other databases and in-memory ones."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return None if database.startswith("file:") else database


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
        database = _sqlite_file(parsed)
        if database is None:
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


def _sqlite_indexes(conn: sa.Connection, table: str) -> tuple[tuple[str, ...], ...] | None:
    """SQLite's own account of a table's indexes: an ``INTEGER PRIMARY KEY`` (the rowid),
    and every index but partial ones, up to its first expression column."""
    kind = conn.exec_driver_sql(
        "SELECT type FROM sqlite_master WHERE name = ? AND type IN ('table', 'view')", (table,)
    ).scalar()
    if kind is None:
        return None
    found: list[tuple[str, ...]] = []
    info = conn.exec_driver_sql("SELECT name, type, pk FROM pragma_table_info(?)", (table,))
    keyed = [(name, type_) for name, type_, pk in info if pk]
    if len(keyed) == 1 and keyed[0][1].upper() == "INTEGER":
        found.append((keyed[0][0],))
    indexes = conn.exec_driver_sql("SELECT name, partial FROM pragma_index_list(?)", (table,))
    for name, partial in list(indexes):
        if partial:
            continue
        columns = conn.exec_driver_sql(
            "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (name,)
        ).scalars()
        leading = tuple(itertools.takewhile(lambda c: c is not None, columns))
        if leading:
            found.append(leading)
    return tuple(found)


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
        self._engine = _make_engine(url, self._name, pool_size)
        self._sql = SqlStatements(table, fields, schema=schema, dialect=self._engine.dialect)
        self._fetches = FetchStatements(self._sql)
        database = _sqlite_file(self._engine.url)
        self._loop = None if database is None else LoopReader(database)
        self._dbapi_error: type[Exception] = self._engine.dialect.loaded_dbapi.Error
        self._executor = ThreadPoolExecutor(
            max_workers=pool_size, thread_name_prefix=f"dsgw-sql-{table}"
        )
        self._closed = False

    # --- execution --------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> ConnectorError:
        return ConnectorError(
            f"source table {self._name}: the database could not answer ({_describe(exc)}); "
            "check that it is reachable and that the table and declared columns exist"
        )

    def _query_all(self, stmt: sa.Select[Any], values: Mapping[str, object]) -> list[Any]:
        with self._engine.connect() as conn:
            return list(conn.execute(stmt, dict(values)).all())

    def _query_raw(self, sql: str, parameters: Any) -> list[Any]:
        """Run compiled SQL on a pooled connection through the driver itself."""
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, parameters)
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except BaseException:
            raw.invalidate()  # whatever state the driver is in, the pool starts afresh
            raise
        finally:
            raw.close()

    async def _in_pool(self, call: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise ConnectorError(f"source table {self._name}: the connector is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call, *args)
        except (SQLAlchemyError, OSError, self._dbapi_error) as exc:
            raise self._unavailable(exc) from None

    def _coerce(self, name: str, raw: object) -> Value:
        try:
            return coerce_value(self._fields[name], raw)
        except (TypeError, ValueError):
            raise ConnectorError(
                f"source table {self._name}: column {name} holds a value that is not a "
                f"valid {self._fields[name]}; fix the data or the declared type"
            ) from None

    def _on_loop(self, compiled: CompiledFetch) -> bool:
        """Decided once per shape: a local SQLite file planning the shape as an index
        lookup (see connectors._sqlite_loop); everything else goes to the pool."""
        if self._loop is None:
            return False
        return self._loop.is_lookup(compiled.sql, len(compiled.slots))

    async def fetch(self, query: RowQuery) -> list[Row]:
        conditions = check_row_query(self._fields, query)
        compiled = self._fetches.get(query, conditions, self._on_loop)
        parameters = compiled.parameters(fetch_values(conditions, query.limit, query.offset))
        rows: list[Any] | None = None
        if (
            compiled.on_loop
            and self._loop is not None
            and query.limit + query.offset <= LOOP_MAX_ROWS
            and not self._closed
        ):
            assert isinstance(parameters, tuple)
            try:
                rows = self._loop.fetch(compiled.sql, parameters)
            except LoopRefused as refused:
                # Interrupted (more work than a lookup), busy or failing: the pool answers,
                # or says what is wrong; an interrupted shape stays off the loop.
                if refused.interrupted:
                    compiled.on_loop = False
        if rows is None:
            rows = await self._in_pool(self._query_raw, compiled.sql, parameters)
        return [
            {name: self._coerce(name, raw) for name, raw in zip(query.fields, row, strict=True)}
            for row in rows
        ]

    async def aggregate(self, query: AggregateQuery) -> list[Row]:
        conditions = check_aggregate_query(self._fields, query)
        s = self._sql
        # Positional labels: output names never have to be valid or unique SQL labels.
        columns: list[ColumnElement[Any]] = [
            s.columns[name].label(f"g{i}") for i, name in enumerate(query.group_by)
        ]
        for i, measure in enumerate(query.measures):
            if measure.fn == "count":
                counted = (
                    sa.func.count()
                    if measure.field is None
                    else sa.func.count(s.columns[measure.field])
                )
                columns.append(counted.label(f"m{i}"))
            else:
                assert measure.field is not None
                columns.append(s.total(measure.field).label(f"m{i}"))
                if measure.fn == "avg":
                    columns.append(sa.func.count(s.columns[measure.field]).label(f"n{i}"))
        subject = s.columns[query.subject_field]
        columns.append(sa.func.count(sa.distinct(subject)).label("subjects"))
        stmt = (
            sa.select(*columns)
            .select_from(s.table)
            .where(*(s.where(i, c) for i, c in enumerate(conditions)))
            .group_by(*(s.columns[name] for name in query.group_by))
            .order_by(*s.order(query.group_by))
            .limit(query.limit)
        )
        rows = await self._in_pool(self._query_all, stmt, condition_values(conditions))
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

    # --- the source's indexes ---------------------------------------------------------

    def _read_indexes(self) -> tuple[tuple[str, ...], ...] | None:
        table = self._sql.table
        with self._engine.connect() as conn:
            if self._sql.sqlite:
                return _sqlite_indexes(conn, table.name)
            inspector = sa.inspect(conn)
            if not inspector.has_table(table.name, schema=table.schema):
                return None
            found: list[tuple[str, ...]] = []
            primary = inspector.get_pk_constraint(table.name, schema=table.schema)
            found.append(tuple(primary.get("constrained_columns") or ()))
            for unique in inspector.get_unique_constraints(table.name, schema=table.schema):
                found.append(tuple(unique["column_names"]))
            for index in inspector.get_indexes(table.name, schema=table.schema):
                partial = any(k.endswith("_where") for k in index.get("dialect_options", {}))
                names = itertools.takewhile(lambda n: n is not None, index["column_names"])
                if not partial:
                    found.append(tuple(str(n) for n in names))
            return tuple(columns for columns in found if columns)

    async def indexes(self) -> tuple[tuple[str, ...], ...] | None:
        """The column lists of the table's indexes as read from the source: its primary
        key, unique constraints and plain indexes, each up to its first expression (a
        partial index serves no plain lookup and is left out); ``None`` when the source has
        no such table.

        Raises :class:`ConnectorError` when the source cannot answer.
        """
        return await self._in_pool(self._read_indexes)

    def create_index_sql(self, columns: Sequence[str]) -> str:
        """``CREATE INDEX`` over ``columns`` of the table, quoted by the source's dialect."""
        name, schema = self._sql.table.name, self._sql.table.schema
        table = sa.Table(name, sa.MetaData(), *(sa.Column(c) for c in columns), schema=schema)
        index = sa.Index("_".join((name, *columns)), *(table.c[c] for c in columns))
        return str(CreateIndex(index).compile(dialect=self._engine.dialect))

    async def close(self) -> None:
        """Wait for running queries, then close the pool and stop the threads."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            self._loop.close()
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        self._engine.dispose()
