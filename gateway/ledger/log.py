"""Append-only, hash-linked log streams with group commit.

Why group commit: every call's record must be durable before its answer leaves, and a
durable commit costs an fsync. One writer task takes every record queued while the previous
transaction was committing and writes them in the next transaction, so concurrent callers
share one fsync instead of queueing for one each.

Many writers, one sequence: several processes (``serve --workers``, several machines) append
to the same streams. Each batch reads its streams' heads *under the stream's write lock*
(SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock per stream)
and builds its records on them, so concurrent appenders queue instead of colliding and the
sequence has neither gaps nor doubles. The (stream, seq) primary key stays the backstop: a
writer that did not take the lock (an older version) is refused there, and the batch is
rebuilt on the new head.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.clock import utc
from gateway.db.schema import LogEntryRow
from gateway.db.sessions import LOCK_NAMESPACE, libpq_dsn
from gateway.dependencies import DependencyHealth, dependency_error, describe
from gateway.errors import DependencyUnavailableError, DiskFullError, LogUnavailableError
from gateway.ledger.canonical import canonical_bytes
from gateway.ledger.hashing import GENESIS, HashAlgorithm, entry_hash, leaf_hash

__all__ = [
    "STREAMS",
    "AppendedEntry",
    "LogEntry",
    "LogUnavailableError",
    "LogWriter",
    "PendingRecord",
    "append_in_transaction",
    "lock_streams",
    "read_entries",
    "read_entry",
    "stream_size",
]

log = logging.getLogger(__name__)

STREAMS = ("calls", "governance", "products")
SALT_BYTES = 16
_MAX_CONFLICT_RETRIES = 20


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A record to append. ``body`` holds the record's own fields (no ``kind``/``time``)."""

    stream: str
    kind: str
    recorded_at: dt.datetime
    body: Mapping[str, Any]
    merchant_id: str | None = None
    scenario_id: str | None = None
    dataset_id: str | None = None
    decision: str | None = None
    # Keyed hashes of the rows a query answer delivered (gateway.tracing.index): written to
    # ``trace_rows`` in the record's own transaction; not part of the payload (the payload's
    # ``rows_digest`` commits to them).
    trace_hashes: tuple[int, ...] = ()

    def payload(self) -> bytes:
        if "kind" in self.body or "time" in self.body:
            raise ValueError("record body must not set 'kind' or 'time'")
        return canonical_bytes({"kind": self.kind, "time": self.recorded_at, **self.body})


@dataclass(frozen=True, slots=True)
class AppendedEntry:
    """Where a record landed; what a merchant keeps to ask for its proof later."""

    stream: str
    seq: int
    leaf_hash: bytes
    entry_hash: bytes

    @property
    def record_id(self) -> str:
        return f"{self.stream}/{self.seq}"


@dataclass(frozen=True, slots=True)
class LogEntry:
    stream: str
    seq: int
    recorded_at: dt.datetime
    kind: str
    payload: bytes
    salt: bytes
    leaf_hash: bytes
    prev_hash: bytes
    entry_hash: bytes


@dataclass(slots=True)
class _Job:
    record: PendingRecord
    payload: bytes
    future: asyncio.Future[AppendedEntry]


class _Conflict(Exception):
    """Another writer took a position of the batch (primary key conflict)."""


Heads = dict[str, tuple[int, bytes]]
Batch = tuple[list[dict[str, Any]], list[dict[str, int]], list[AppendedEntry]]


async def lock_streams(conn: AsyncConnection, streams: Sequence[str]) -> None:
    """Take the write lock of each of ``streams`` until ``conn``'s transaction ends.

    On PostgreSQL a transaction-scoped advisory lock per stream, always in the order of
    :data:`STREAMS` so two transactions never wait on each other in a cycle. On SQLite the
    database's single write lock: a write that changes nothing takes it now, since the
    driver's deferred transaction would otherwise read the head before holding it.
    """
    if conn.dialect.name == "sqlite":
        await conn.execute(text("UPDATE log_entries SET seq = seq WHERE 0 = 1"))
        return
    if conn.dialect.name != "postgresql":
        return
    for stream in sorted(set(streams), key=STREAMS.index):
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
            {"namespace": LOCK_NAMESPACE, "key": STREAMS.index(stream)},
        )


_COLUMNS = tuple(c.name for c in LogEntryRow.__table__.columns)
_SQLITE_INSERT = (
    f"INSERT INTO log_entries ({', '.join(_COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_SQLITE_TRACE_INSERT = "INSERT INTO trace_rows (hash, seq) VALUES (?, ?)"
_SQLITE_HEAD = "SELECT seq, entry_hash FROM log_entries WHERE stream = ? ORDER BY seq DESC LIMIT 1"


class _SqliteSink:
    """Commits a batch on one dedicated stdlib connection and thread.

    Why not SQLAlchemy here: per-row bind processing and several thread hops per
    transaction through the async driver cost more CPU than the fsync itself (see
    docs/benchmarks.md). Values are bound exactly as SQLAlchemy would store them, so the
    rows are identical either way.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        database = engine.url.database or ""
        self._path = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsgw-log")
        self._conn: sqlite3.Connection | None = None
        processor = LogEntryRow.__table__.c.recorded_at.type.bind_processor(
            engine.sync_engine.dialect
        )
        self._time: Any = processor if processor is not None else (lambda v: v)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=10
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
            self._conn = conn
        return self._conn

    def _write(self, streams: Sequence[str], build: Callable[[Heads], Batch]) -> Batch:
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
            conn.executemany(
                _SQLITE_INSERT,
                [
                    tuple(self._time(row[c]) if c == "recorded_at" else row[c] for c in _COLUMNS)
                    for row in rows
                ],
            )
            if traces:
                conn.executemany(_SQLITE_TRACE_INSERT, [(t["hash"], t["seq"]) for t in traces])
            conn.execute("COMMIT")
        except BaseException:
            # A COMMIT that failed (a full disk) may or may not have ended the transaction.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return batch

    async def write(self, streams: Sequence[str], build: Callable[[Heads], Batch]) -> Batch:
        """Commit the batch; raises :class:`_Conflict`, or the driver's own error for the
        writer to classify (a full disk, a locked or unreadable file)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._write, streams, build)
        except sqlite3.IntegrityError as exc:
            raise _Conflict from exc

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)


_PG_INSERT = (
    f"INSERT INTO log_entries ({', '.join(_COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('%s' for _ in _COLUMNS)})"
)
_PG_TRACE_INSERT = "INSERT INTO trace_rows (hash, seq) VALUES (%s, %s)"
_PG_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"
_PG_HEAD = "SELECT seq, entry_hash FROM log_entries WHERE stream = %s ORDER BY seq DESC LIMIT 1"


class _PostgresSink:
    """Commits a batch on one dedicated psycopg connection and thread, like the SQLite sink.

    Why not the async engine: the batch holds its streams' write locks from the head read to
    the commit, and every await inside that span also waits for the event loop, which is busy
    serving calls. Measured with 4 workers (docs/benchmarks.md), the lock was then held
    14-18 ms per commit against a 0.5 ms durable commit, and it capped the whole cluster. On a
    thread of its own the span is the round trips only: the lock and the heads in one
    pipeline, the inserts and the commit in another.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._dsn = libpq_dsn(engine.url)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsgw-log")
        self._conn: Any = None

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

    def _write(self, streams: Sequence[str], build: Callable[[Heads], Batch]) -> Batch:
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
                    cursor.executemany(
                        _PG_INSERT, [tuple(row[c] for c in _COLUMNS) for row in rows]
                    )
                    if traces:
                        cursor.executemany(
                            _PG_TRACE_INSERT, [(t["hash"], t["seq"]) for t in traces]
                        )
        except psycopg.errors.UniqueViolation as exc:
            raise _Conflict from exc
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

    async def write(self, streams: Sequence[str], build: Callable[[Heads], Batch]) -> Batch:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._write, streams, build)

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)


class LogWriter:
    """The single writer of this process; :meth:`append` returns once the record is durable."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        algorithm: HashAlgorithm = "sha256",
        batch_max: int = 512,
        health: DependencyHealth | None = None,
    ) -> None:
        self._engine = engine
        # Where failed and successful commits are reported (one log line per outage).
        self.health = health or DependencyHealth()
        self._algorithm: HashAlgorithm = algorithm
        self._batch_max = batch_max
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Told the size of every committed batch (metrics).
        self.on_batch: Callable[[int], None] | None = None
        self._closing = False
        # The two stores gateway.db.create_engine accepts.
        self._sink: _SqliteSink | _PostgresSink = (
            _SqliteSink(engine) if engine.dialect.name == "sqlite" else _PostgresSink(engine)
        )
        self.batches_committed = 0
        self.records_committed = 0
        # Batches rebuilt after a primary-key conflict (should stay 0: appenders lock).
        self.conflicts = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dsgw-log-writer")

    @property
    def running(self) -> bool:
        """Whether the writer's task is alive: without it no call can be answered."""
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        """Commit what is queued, then stop. Closing twice is harmless."""
        if self._closing and self._task is None:
            return
        self._closing = True
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._sink.close()

    async def append(self, record: PendingRecord) -> AppendedEntry:
        """Queue ``record`` and wait until it is committed.

        Raises :class:`LogUnavailableError` if the store cannot commit it; the caller must
        then not deliver anything that depends on the record.
        """
        if self._closing or self._task is None:
            raise LogUnavailableError("log: the writer is not running")
        if record.stream not in STREAMS:
            raise ValueError(f"unknown log stream {record.stream!r}")
        if record.trace_hashes and record.stream != "calls":
            raise ValueError("only call records index delivered rows (trace_rows.seq is a call)")
        loop = asyncio.get_running_loop()
        job = _Job(record, record.payload(), loop.create_future())
        self._queue.put_nowait(job)
        # Not shielded: a caller that goes away stops waiting, but its record is still
        # committed with the batch it joined.
        return await job.future

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if self._queue.empty():
                # Let callers that are ready to append do so before this commit, so they
                # share its fsync instead of waiting for the next one.
                await asyncio.sleep(0)
            jobs = [first]
            while len(jobs) < self._batch_max and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            try:
                results = await self._commit(jobs)
            except Exception as exc:  # the one writer must outlive any failed batch
                if isinstance(exc, DependencyUnavailableError):
                    error: DependencyUnavailableError = exc
                else:  # a bug: loudly in the log, never to the caller
                    log.exception("log: commit failed unexpectedly")
                    error = LogUnavailableError("log: the call log could not be committed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
            else:
                for job, result in zip(jobs, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(result)
                if self.on_batch is not None:
                    self.on_batch(len(jobs))
            finally:
                for _ in jobs:
                    self._queue.task_done()

    async def _commit(self, jobs: Sequence[_Job]) -> list[AppendedEntry]:
        streams = sorted({job.record.stream for job in jobs}, key=STREAMS.index)
        # One getrandom call per batch, not per record.
        salts = os.urandom(SALT_BYTES * len(jobs))
        algorithm = self._algorithm

        def build(heads: Heads) -> Batch:
            """The batch's rows on ``heads``, read under the streams' write locks."""
            heads = dict(heads)
            rows: list[dict[str, Any]] = []
            traces: list[dict[str, int]] = []
            results: list[AppendedEntry] = []
            for i, job in enumerate(jobs):
                stream = job.record.stream
                salt = salts[i * SALT_BYTES : (i + 1) * SALT_BYTES]
                row, appended = _build_row(algorithm, job.record, job.payload, salt, heads[stream])
                heads[stream] = (appended.seq + 1, appended.entry_hash)
                rows.append(row)
                results.append(appended)
                traces.extend(
                    {"hash": h, "seq": appended.seq} for h in dict.fromkeys(job.record.trace_hashes)
                )
            return rows, traces, results

        for _attempt in range(_MAX_CONFLICT_RETRIES):
            try:
                _rows, _traces, results = await self._sink.write(streams, build)
            except _Conflict:
                # A writer that does not take the stream lock appended first: build again.
                self.conflicts += 1
                continue
            except Exception as exc:
                raise self._refusal(exc) from exc
            self.health.recovered("database")
            self.batches_committed += 1
            self.records_committed += len(jobs)
            return results
        raise LogUnavailableError("log: too many concurrent writers; try again", outage=False)

    def _refusal(self, exc: Exception) -> DependencyUnavailableError:
        """What the callers of a failed batch get: ``disk-full`` when the disk is, else
        ``log-unavailable``; either reported once to :attr:`health` (the driver's message
        goes to the operator's log there, never to a caller). A failure that is not a
        dependency's (a bug) is logged with its traceback."""
        cause = dependency_error(exc)
        if cause is None:
            log.error("log: commit failed: %s", describe(exc), exc_info=exc)
            return LogUnavailableError("log: the call log could not be committed")
        error: DependencyUnavailableError
        if isinstance(cause, DiskFullError):
            error = DiskFullError(
                "the gateway's disk is full: the call log could not be committed; "
                "nothing was delivered. Retry later"
            )
        else:
            error = LogUnavailableError(
                "log: the call log could not be committed; nothing was delivered. Retry shortly",
                outage=cause.outage,
            )
        if cause.outage:
            error.reported = True
            self.health.failed(cause.dependency, exc)
        return error


async def _load_head(conn: AsyncConnection, stream: str) -> tuple[int, bytes]:
    row = (
        await conn.execute(
            select(LogEntryRow.seq, LogEntryRow.entry_hash)
            .where(LogEntryRow.stream == stream)
            .order_by(LogEntryRow.seq.desc())
            .limit(1)
        )
    ).first()
    return (0, GENESIS) if row is None else (row.seq + 1, bytes(row.entry_hash))


def _build_row(
    algorithm: HashAlgorithm,
    record: PendingRecord,
    payload: bytes,
    salt: bytes,
    head: tuple[int, bytes],
) -> tuple[dict[str, Any], AppendedEntry]:
    seq, previous = head
    leaf = leaf_hash(algorithm, salt, payload)
    link = entry_hash(algorithm, previous, leaf)
    row = {
        "stream": record.stream,
        "seq": seq,
        "recorded_at": record.recorded_at,
        "kind": record.kind,
        "merchant_id": record.merchant_id,
        "scenario_id": record.scenario_id,
        "dataset_id": record.dataset_id,
        "decision": record.decision,
        "payload": payload.decode("utf-8"),
        "salt": salt,
        "leaf_hash": leaf,
        "prev_hash": previous,
        "entry_hash": link,
    }
    return row, AppendedEntry(record.stream, seq, leaf, link)


async def append_in_transaction(
    conn: AsyncConnection, record: PendingRecord, algorithm: HashAlgorithm
) -> AppendedEntry:
    """Append inside the caller's transaction, so a state change and its record commit
    together. On PostgreSQL the stream's write lock is held from here to the commit, so
    concurrent appenders wait rather than collide. A collision with a writer that does not
    lock raises ``IntegrityError``: the caller retries its whole transaction."""
    if record.stream not in STREAMS:
        raise ValueError(f"unknown log stream {record.stream!r}")
    await lock_streams(conn, [record.stream])
    row, appended = _build_row(
        algorithm,
        record,
        record.payload(),
        os.urandom(SALT_BYTES),
        await _load_head(conn, record.stream),
    )
    await conn.execute(insert(LogEntryRow), [row])
    return appended


def _entry(row: Any) -> LogEntry:
    return LogEntry(
        stream=row.stream,
        seq=row.seq,
        recorded_at=utc(row.recorded_at),
        kind=row.kind,
        payload=row.payload.encode("utf-8"),
        salt=bytes(row.salt),
        leaf_hash=bytes(row.leaf_hash),
        prev_hash=bytes(row.prev_hash),
        entry_hash=bytes(row.entry_hash),
    )


async def read_entry(engine: AsyncEngine, stream: str, seq: int) -> LogEntry | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(LogEntryRow).where(LogEntryRow.stream == stream, LogEntryRow.seq == seq)
            )
        ).first()
    return None if row is None else _entry(row)


async def read_entries(
    engine: AsyncEngine,
    stream: str,
    *,
    merchant_id: str | None = None,
    limit: int = 50,
    newest_first: bool = True,
) -> list[LogEntry]:
    query = select(LogEntryRow).where(LogEntryRow.stream == stream)
    if merchant_id is not None:
        query = query.where(LogEntryRow.merchant_id == merchant_id)
    order = LogEntryRow.seq.desc() if newest_first else LogEntryRow.seq.asc()
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(order).limit(limit))).all()
    return [_entry(row) for row in rows]


async def stream_size(engine: AsyncEngine, stream: str) -> int:
    """Records in ``stream``: its newest position plus one, read from the primary key's end
    (positions have no gaps), not a count over months of records."""
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(func.max(LogEntryRow.seq)).where(LogEntryRow.stream == stream)
        )
    return 0 if value is None else int(value) + 1
