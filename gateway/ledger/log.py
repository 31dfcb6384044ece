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
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.schema import LogEntryRow
from gateway.db.sessions import LOCK_NAMESPACE
from gateway.dependencies import DependencyHealth, dependency_error, describe
from gateway.errors import DependencyUnavailableError, DiskFullError, LogUnavailableError
from gateway.ledger.entries import (
    SALT_BYTES,
    STREAMS,
    AppendedEntry,
    Batch,
    Heads,
    LogEntry,
    PendingRecord,
    read_entries,
    read_entry,
    stream_size,
)
from gateway.ledger.hashing import GENESIS, HashAlgorithm, entry_hash, leaf_hash
from gateway.ledger.sinks import HeadConflict, PostgresSink, SqliteSink
from gateway.tasks import Supervised

__all__ = [
    "STREAMS",
    "AppendedEntry",
    "LogEntry",
    "LogUnavailableError",
    "LogWriter",
    "PendingRecord",
    "_build_row",
    "append_in_transaction",
    "lock_streams",
    "read_entries",
    "read_entry",
    "stream_size",
]

log = logging.getLogger(__name__)

_MAX_CONFLICT_RETRIES = 20


@dataclass(slots=True)
class _Job:
    record: PendingRecord
    payload: bytes
    future: asyncio.Future[AppendedEntry]


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
        self._writer = Supervised("dsgw-log-writer", log=log)
        # Told the size of every committed batch (metrics).
        self.on_batch: Callable[[int], None] | None = None
        self._closing = False
        # The two stores gateway.db.create_engine accepts.
        self._sink: SqliteSink | PostgresSink = (
            SqliteSink(engine) if engine.dialect.name == "sqlite" else PostgresSink(engine)
        )
        self.batches_committed = 0
        self.records_committed = 0
        # Batches rebuilt after a primary-key conflict (should stay 0: appenders lock).
        self.conflicts = 0

    async def start(self) -> None:
        self._writer.start(self._run)

    @property
    def running(self) -> bool:
        """Whether the writer's task is alive: without it no call can be answered."""
        return self._writer.running

    async def close(self) -> None:
        """Commit what is queued, then stop. Closing twice is harmless."""
        if self._closing and not self._writer.running:
            return
        self._closing = True
        if self._writer.running:
            await self._queue.join()
            await self._writer.stop()
        await self._sink.close()

    async def append(self, record: PendingRecord) -> AppendedEntry:
        """Queue ``record`` and wait until it is committed.

        Raises :class:`LogUnavailableError` if the store cannot commit it; the caller must
        then not deliver anything that depends on the record.
        """
        if self._closing or not self._writer.running:
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
            except HeadConflict:
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
