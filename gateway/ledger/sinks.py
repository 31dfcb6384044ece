"""Where a batch of log entries is written: SQLite or PostgreSQL, each under its stream lock.

Each sink takes the streams' write lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a
transaction-scoped advisory lock per stream), reads the heads, and inserts a batch built on
them in one transaction, on a connection of its own rather than through the async engine
(each class says why). Sinks are synchronous: :class:`gateway.ledger.log.LogWriter` calls
them from its one writer thread, which owns the connection; nothing here touches the event
loop.

Rows are tuples in :data:`COLUMNS` order: the record's own columns (:data:`RECORD_COLUMNS`,
made once by :meth:`prepare` on the caller's side) followed by its place in the chain
(:data:`LINK_COLUMNS`, made under the lock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engines import _sqlite_pragmas
from gateway.db.schema import LogEntryRow
from gateway.db.sessions import LOCK_NAMESPACE, libpq_dsn
from gateway.ledger.entries import STREAMS, Batch, Heads, PendingRecord
from gateway.ledger.hashing import GENESIS

__all__ = [
    "COLUMNS",
    "LINK_COLUMNS",
    "RECORD_COLUMNS",
    "HeadConflict",
    "PostgresSink",
    "Sink",
    "SqliteSink",
]

log = logging.getLogger(__name__)

RECORD_COLUMNS = (
    "stream",
    "recorded_at",
    "kind",
    "merchant_id",
    "scenario_id",
    "dataset_id",
    "decision",
    "payload",
)
LINK_COLUMNS = ("seq", "salt", "leaf_hash", "prev_hash", "entry_hash")
COLUMNS = RECORD_COLUMNS + LINK_COLUMNS
# A column added to the table without being added here would be left NULL: refuse at import.
if set(COLUMNS) != {c.name for c in LogEntryRow.__table__.columns}:  # pragma: no cover
    raise RuntimeError("gateway.ledger.sinks: COLUMNS must name every log_entries column")

_SQLITE_INSERT = (
    f"INSERT INTO log_entries ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)

_SQLITE_TRACE_INSERT = "INSERT INTO trace_rows (hash, seq) VALUES (?, ?)"

_SQLITE_HEAD = "SELECT seq, entry_hash FROM log_entries WHERE stream = ? ORDER BY seq DESC LIMIT 1"


class HeadConflict(Exception):
    """Another writer took a position of the batch (primary key conflict); rebuild it."""


def _record_row(record: PendingRecord, payload: bytes, time: Any) -> tuple[Any, ...]:
    return (
        record.stream,
        time,
        record.kind,
        record.merchant_id,
        record.scenario_id,
        record.dataset_id,
        record.decision,
        payload.decode("utf-8"),
    )


class SqliteSink:
    """Commits a batch on one stdlib connection, owned by the writer thread.

    Why not SQLAlchemy here: per-row bind processing and several thread hops per
    transaction through the async driver cost more CPU than the fsync itself (see
    docs/benchmarks.md). Values are bound exactly as SQLAlchemy would store them, so the
    rows are identical either way.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._path = engine.url.database or ""
        self._conn: sqlite3.Connection | None = None
        # The dialect's own DATETIME type binds it (the generic type has no processor, and
        # sqlite3's default adapter would add a "+00:00" SQLAlchemy's rows do not have).
        dialect = engine.sync_engine.dialect
        processor = LogEntryRow.__table__.c.recorded_at.type.dialect_impl(dialect).bind_processor(
            dialect
        )
        self._time: Callable[[dt.datetime], Any] = (
            processor if processor is not None else (lambda v: v)
        )

    def prepare(self, record: PendingRecord, payload: bytes) -> tuple[Any, ...]:
        """The record's own columns, bound as SQLAlchemy stores them (any thread)."""
        return _record_row(record, payload, self._time(record.recorded_at))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=10
            )
            _sqlite_pragmas(conn, None)  # the engine's own: WAL, synchronous=FULL, ...
            self._conn = conn
        return self._conn

    def write(self, streams: Sequence[str], build: Callable[[Heads], Batch]) -> Batch:
        """Commit the batch ``build`` makes on the heads read under the write lock; raises
        :class:`HeadConflict`, or the driver's own error for the writer to classify (a
        full disk, a locked or unreadable file)."""
        conn = self._connection()
        # IMMEDIATE takes the database's write lock now, before the heads are read.
        conn.execute("BEGIN IMMEDIATE")
        try:
            heads: Heads = {}
            for stream in streams:
                row = conn.execute(_SQLITE_HEAD, (stream,)).fetchone()
                heads[stream] = (0, GENESIS) if row is None else (row[0] + 1, bytes(row[1]))
            batch = build(heads)
            rows, traces, _results = batch
            conn.executemany(_SQLITE_INSERT, rows)
            if traces:
                conn.executemany(_SQLITE_TRACE_INSERT, traces)
            conn.execute("COMMIT")
        except BaseException as exc:
            # A COMMIT that failed (a full disk) may or may not have ended the transaction.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise HeadConflict from exc
            raise
        return batch

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_PG_INSERT = (
    f"INSERT INTO log_entries ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('%s' for _ in COLUMNS)})"
)

_PG_TRACE_INSERT = "INSERT INTO trace_rows (hash, seq) VALUES (%s, %s)"

_PG_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"

_PG_HEAD = "SELECT seq, entry_hash FROM log_entries WHERE stream = %s ORDER BY seq DESC LIMIT 1"


class PostgresSink:
    """Commits a batch on one psycopg connection, owned by the writer thread.

    Why not the async engine: the batch holds its streams' write locks from the head read to
    the commit, and every await inside that span also waits for the event loop, which is busy
    serving calls. Measured with 4 workers (docs/benchmarks.md), the lock was then held
    14-18 ms per commit against a 0.5 ms durable commit, and it capped the whole cluster. On a
    thread of its own the span is the round trips only: the lock and the heads in one
    pipeline, the inserts and the commit in another.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._dsn = libpq_dsn(engine.url)
        self._conn: Any = None

    def prepare(self, record: PendingRecord, payload: bytes) -> tuple[Any, ...]:
        """The record's own columns (psycopg adapts the aware datetime itself)."""
        return _record_row(record, payload, record.recorded_at)

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            # No server-side prepared statements: they would not survive a transaction-mode
            # pooler between the gateway and PostgreSQL.
            self._conn = psycopg.connect(
                self._dsn,
                connect_timeout=10,
                prepare_threshold=None,
                application_name="dsgw-log",
            )
        return self._conn

    def write(self, streams: Sequence[str], build: Callable[[Heads], Batch]) -> Batch:
        """As :meth:`SqliteSink.write`, under the streams' advisory locks."""
        import psycopg

        try:
            # Inside the try: a server that is down fails here, at connect.
            conn = self._connection()
            with conn.transaction():
                cursor = conn.cursor()
                with conn.pipeline():
                    for stream in streams:
                        cursor.execute(_PG_LOCK, (LOCK_NAMESPACE, STREAMS.index(stream)))
                    heads: Heads = {}
                    for stream in streams:
                        # Statements of one pipeline run in order, each with its own
                        # snapshot: this read sees every commit made before the lock.
                        cursor.execute(_PG_HEAD, (stream,))
                        row = cursor.fetchone()
                        heads[stream] = (0, GENESIS) if row is None else (row[0] + 1, row[1])
                batch = build(heads)
                rows, traces, _results = batch
                with conn.pipeline():
                    cursor.executemany(_PG_INSERT, rows)
                    if traces:
                        cursor.executemany(_PG_TRACE_INSERT, traces)
        except psycopg.errors.UniqueViolation as exc:
            raise HeadConflict from exc
        except psycopg.Error:
            # Whatever state the failure left the connection in (a broken socket, or an
            # aborted pipeline that psycopg does not mark broken and that would refuse
            # every later batch), the next batch starts on a fresh one.
            self._discard()
            raise  # classified by the writer (gateway.dependencies)
        return batch

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection may fail too
                conn.close()

    def close(self) -> None:
        self._discard()


Sink = SqliteSink | PostgresSink
