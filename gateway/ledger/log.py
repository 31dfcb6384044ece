"""Append-only, hash-linked log streams with group commit, written by one thread.

Why group commit: every call's record must be durable before its answer leaves, and a
durable commit costs an fsync. The writer takes every record queued while the previous
transaction was committing and writes them in the next transaction, so concurrent callers
share one fsync instead of queueing for one each.

Why one writer thread: a batch costs the event loop one hand-off and one wake-up, nothing
per statement. The thread owns the store connection (:mod:`gateway.ledger.sinks`); for a
batch it takes the write lock, reads the heads, salts, hashes and links the records (off
the loop), inserts them, commits, and only then resolves every caller of the batch with one
``call_soon_threadsafe``. A caller pays for its payload and its record's own columns, made
once in :meth:`LogWriter.append`.

Many writers, one sequence: several processes (``serve --workers``, several machines) append
to the same streams. Each batch reads its streams' heads *under the stream's write lock*
(SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock per stream)
and builds its records on them, so concurrent appenders queue instead of colliding and the
sequence has neither gaps nor doubles. No head is cached between batches: another process
may have appended since. The (stream, seq) primary key stays the backstop: a writer that
did not take the lock (an older version) is refused there, and the batch is rebuilt on the
new head.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
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
from gateway.ledger.hashing import GENESIS, HashAlgorithm, entry_hash, leaf_hash, link_hasher
from gateway.ledger.sinks import HeadConflict, PostgresSink, Sink, SqliteSink

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
    """A record on its way: everything but its place in the chain, made by the caller."""

    stream: str
    # The record's own columns (gateway.ledger.sinks.RECORD_COLUMNS), bound for the store.
    row: tuple[Any, ...]
    payload: bytes
    # The delivered rows' keyed hashes, each once.
    traces: tuple[int, ...]
    future: asyncio.Future[AppendedEntry]


class _TooManyConflicts(Exception):
    """Every attempt of a batch lost its positions to a writer that does not lock."""


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
    """The single writer of this process; :meth:`append` returns once the record is durable.

    Loop side: :meth:`append` queues a job and waits; queued jobs go to the thread in one
    hand-off per event-loop turn. Thread side (``_serve``): one batch at a time, then one
    call back into the loop (:meth:`_resolve`) that sets every future of the batch. Counters
    and :attr:`health` are touched on the loop only, except :attr:`conflicts`.
    """

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
        self._link = link_hasher(algorithm)
        self._batch_max = batch_max
        # Told the size of every committed batch (metrics).
        self.on_batch: Callable[[int], None] | None = None
        # The two stores gateway.db.engines.create_engine accepts.
        self._sink: Sink = (
            SqliteSink(engine) if engine.dialect.name == "sqlite" else PostgresSink(engine)
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Jobs appended since the last hand-off (loop side only).
        self._pending: list[_Job] = []
        # Hand-offs to the thread; None asks it to stop once everything before is committed.
        self._inbox: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._stopped: asyncio.Future[None] | None = None
        self._closing = False
        self.batches_committed = 0
        self.records_committed = 0
        # Batches rebuilt after a primary-key conflict (should stay 0: appenders lock).
        self.conflicts = 0

    async def start(self) -> None:
        """Start the writer thread (once; a closed writer stays closed)."""
        if self._thread is not None or self._closing:
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        # A daemon: a process that exits without closing (killed, or a test that forgot)
        # must not hang on it, and nothing is lost: an unfinished batch was never answered.
        self._thread = threading.Thread(target=self._serve, name="dsgw-log-writer", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the writer's thread is alive: without it no call can be answered. False
        from the moment :meth:`close` returns (the thread has said it stopped)."""
        thread, stopped = self._thread, self._stopped
        return (
            thread is not None and thread.is_alive() and stopped is not None and not stopped.done()
        )

    async def close(self) -> None:
        """Commit what is queued, then stop. Closing twice is harmless."""
        if not self._closing:
            self._closing = True
            if self._thread is not None:
                self._hand_off()
                self._inbox.put(None)
        if self._stopped is not None:
            # Shielded: a closer that is cancelled leaves the thread to finish anyway.
            await asyncio.shield(self._stopped)

    async def append(self, record: PendingRecord) -> AppendedEntry:
        """Queue ``record`` and wait until it is committed.

        Raises :class:`LogUnavailableError` if the store cannot commit it; the caller must
        then not deliver anything that depends on the record.
        """
        loop = self._loop
        if self._closing or loop is None or not self.running:
            raise LogUnavailableError("log: the writer is not running")
        if record.stream not in STREAMS:
            raise ValueError(f"unknown log stream {record.stream!r}")
        if record.trace_hashes and record.stream != "calls":
            raise ValueError("only call records index delivered rows (trace_rows.seq is a call)")
        payload = record.payload()
        future: asyncio.Future[AppendedEntry] = loop.create_future()
        traces = tuple(dict.fromkeys(record.trace_hashes))
        self._pending.append(
            _Job(record.stream, self._sink.prepare(record, payload), payload, traces, future)
        )
        if len(self._pending) == 1:
            # Handed off on the next turn, so that callers ready to append in this one
            # share the commit instead of waiting for the next.
            loop.call_soon(self._hand_off)
        # Not shielded: a caller that goes away stops waiting, but its record is still
        # committed with the batch it joined.
        return await future

    def _hand_off(self) -> None:
        jobs, self._pending = self._pending, []
        if jobs:
            self._inbox.put(jobs)

    # -- the writer thread ------------------------------------------------------------

    def _serve(self) -> None:
        """The thread: batches of what was handed off (at most ``batch_max`` records),
        each committed, then reported to the loop, until asked to stop."""
        carry: list[_Job] = []
        stopping = False
        try:
            while True:
                jobs = carry
                while not stopping and len(jobs) < self._batch_max:
                    try:
                        item = self._inbox.get(block=not jobs)
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                    else:
                        jobs.extend(item)
                if not jobs:
                    return
                jobs, carry = jobs[: self._batch_max], jobs[self._batch_max :]
                try:
                    outcome: list[AppendedEntry] | Exception = self._commit(jobs)
                except Exception as exc:  # every failure goes to the batch's callers
                    outcome = exc
                self._call_loop(self._resolve, jobs, outcome)
        except BaseException:
            log.exception("log: the writer thread failed")
            raise
        finally:
            try:
                self._sink.close()
            except Exception:  # the connection may be dead already: nothing left to lose
                log.warning("log: closing the writer's connection failed", exc_info=True)
            self._call_loop(self._set_stopped)

    def _call_loop(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        # A closed loop raises RuntimeError: nobody waits for these any more, and what was
        # committed stays committed.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _commit(self, jobs: Sequence[_Job]) -> list[AppendedEntry]:
        """Commit ``jobs`` in one transaction on the heads read under the streams' locks
        (thread side); raises the sink's error, or :class:`_TooManyConflicts`."""
        streams = sorted({job.stream for job in jobs}, key=STREAMS.index)
        # One getrandom call per batch, not per record.
        salts = os.urandom(SALT_BYTES * len(jobs))
        link = self._link

        def build(heads: Heads) -> Batch:
            heads = dict(heads)
            rows: list[tuple[Any, ...]] = []
            traces: list[tuple[int, int]] = []
            results: list[AppendedEntry] = []
            for i, job in enumerate(jobs):
                seq, previous = heads[job.stream]
                salt = salts[i * SALT_BYTES : (i + 1) * SALT_BYTES]
                leaf, entry = link(previous, salt, job.payload)
                heads[job.stream] = (seq + 1, entry)
                rows.append((*job.row, seq, salt, leaf, previous, entry))
                results.append(AppendedEntry(job.stream, seq, leaf, entry))
                if job.traces:
                    traces.extend((h, seq) for h in job.traces)
            return rows, traces, results

        for _attempt in range(_MAX_CONFLICT_RETRIES):
            try:
                return self._sink.write(streams, build)[2]
            except HeadConflict:
                # A writer that does not take the stream lock appended first: build again.
                self.conflicts += 1
        raise _TooManyConflicts

    # -- back on the loop -------------------------------------------------------------

    def _set_stopped(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _resolve(self, jobs: Sequence[_Job], outcome: list[AppendedEntry] | Exception) -> None:
        """Answer every caller of a batch (on the loop, in one callback)."""
        if isinstance(outcome, Exception):
            error = self._refusal(outcome)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self.health.recovered("database")
        self.batches_committed += 1
        self.records_committed += len(jobs)
        for job, result in zip(jobs, outcome, strict=True):
            if not job.future.done():
                job.future.set_result(result)
        if self.on_batch is not None:
            self.on_batch(len(jobs))

    def _refusal(self, exc: Exception) -> DependencyUnavailableError:
        """What the callers of a failed batch get: ``disk-full`` when the disk is, else
        ``log-unavailable``; either reported once to :attr:`health` (the driver's message
        goes to the operator's log there, never to a caller). A failure that is not a
        dependency's (a bug) is logged with its traceback."""
        if isinstance(exc, _TooManyConflicts):
            return LogUnavailableError("log: too many concurrent writers; try again", outage=False)
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
