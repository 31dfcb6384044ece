"""The hash-linked call log: group commit, chain integrity, concurrent writers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engines import create_engine, migrate
from gateway.db.schema import LogEntryRow
from gateway.ledger.canonical import canonical_bytes, format_time
from gateway.ledger.log import (
    LogUnavailableError,
    LogWriter,
    PendingRecord,
    append_in_transaction,
    read_entries,
    read_entry,
)
from gateway.settings import Settings
from tests.support.ledger import chain_is_valid

NOW = dt.datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=dt.UTC)


def test_canonical_encoding_is_fixed() -> None:
    record = {
        "b": 1,
        "a": "企业",
        "t": NOW,
        "d": Decimal("12.50"),
        "day": dt.date(2026, 1, 2),
        "n": None,
        "l": [True, b"\x01"],
    }
    assert (
        canonical_bytes(record)
        == (
            '{"a":"企业","b":1,"d":"12.50","day":"2026-01-02","l":[true,"01"],"n":null,'
            '"t":"2026-11-21T12:00:00.123456Z"}'
        ).encode()
    )
    assert format_time(NOW.astimezone(dt.timezone(dt.timedelta(hours=8)))) == (
        "2026-11-21T12:00:00.123456Z"
    )
    with pytest.raises(TypeError):
        canonical_bytes({"f": 1.5})
    with pytest.raises(ValueError, match="naive"):
        canonical_bytes({"t": dt.datetime(2026, 1, 1)})


def _record(i: int, stream: str = "calls") -> PendingRecord:
    return PendingRecord(
        stream=stream, kind="data", recorded_at=NOW, body={"i": i}, merchant_id="m"
    )


async def test_group_commit_batches_concurrent_appends(settings: Settings) -> None:
    engine = create_engine(settings.resolved_database_url)
    await migrate(engine)
    writer = LogWriter(engine)
    await writer.start()
    try:
        results = await asyncio.gather(*(writer.append(_record(i)) for i in range(300)))
    finally:
        await writer.close()
    assert sorted(r.seq for r in results) == list(range(300))
    assert writer.records_committed == 300
    assert writer.batches_committed < 300  # records shared transactions
    assert await chain_is_valid(engine, "calls") == 300
    newest = await read_entries(engine, "calls", limit=1)
    assert json.loads(newest[0].payload)["kind"] == "data"
    await engine.dispose()


@contextlib.asynccontextmanager
async def _started(
    settings: Settings, **options: Any
) -> AsyncIterator[tuple[AsyncEngine, LogWriter]]:
    """A migrated store and a started writer on it; the writer closed (again), the engine
    disposed on the way out."""
    engine = create_engine(settings.resolved_database_url)
    await migrate(engine)
    writer = LogWriter(engine, **options)
    await writer.start()
    try:
        yield engine, writer
    finally:
        await writer.close()
        await engine.dispose()


async def test_an_answered_append_is_committed(settings: Settings) -> None:
    """When ``append`` returns, another connection already reads the record as written."""
    async with _started(settings) as (engine, writer):
        for i in range(3):
            appended = await writer.append(_record(i))
            entry = await read_entry(engine, "calls", appended.seq)
            assert entry is not None and entry.entry_hash == appended.entry_hash
            assert json.loads(entry.payload)["i"] == i


async def test_close_commits_what_is_queued_even_for_callers_gone(settings: Settings) -> None:
    """Fifty appends queued, two of their callers cancelled, then ``close``: every record
    is committed (the cancelled ones too), in batches of at most ``batch_max``, each batch
    reported once; the closed writer is not running and refuses appends."""
    async with _started(settings, batch_max=7) as (engine, writer):
        sizes: list[int] = []
        writer.on_batch = sizes.append
        calls = [asyncio.create_task(writer.append(_record(i))) for i in range(50)]
        await asyncio.sleep(0)  # every call has queued its record
        calls[0].cancel()
        calls[1].cancel()
        await writer.close()
        assert not writer.running
        assert all(call.done() for call in calls)
        assert calls[0].cancelled() and calls[1].cancelled()
        assert len({call.result().seq for call in calls[2:]}) == 48
        assert sum(sizes) == 50 and max(sizes) <= 7
        assert (writer.records_committed, writer.batches_committed) == (50, len(sizes))
        assert await chain_is_valid(engine, "calls") == 50
        with pytest.raises(LogUnavailableError):
            await writer.append(_record(50))


async def test_writer_rows_are_stored_as_sqlalchemy_stores_them(settings: Settings) -> None:
    """The writer binds its own rows; a time must come out of the store as the same text as
    one written through SQLAlchemy (``append_in_transaction``), or range reads would differ
    by stream."""
    async with _started(settings) as (engine, writer):
        await writer.append(_record(0))
        async with engine.begin() as conn:
            await append_in_transaction(conn, _record(1, "governance"), "sha256")
        async with engine.connect() as conn:
            query = text("SELECT stream, CAST(recorded_at AS TEXT) FROM log_entries")
            stored = {stream: value for stream, value in await conn.execute(query)}
    assert stored["calls"] == stored["governance"], stored


async def test_two_writers_never_fork_a_stream(settings: Settings) -> None:
    """Two writers (as in two gateway processes) append to one stream concurrently."""
    engine_a = create_engine(settings.resolved_database_url)
    engine_b = create_engine(settings.resolved_database_url)
    await migrate(engine_a)
    a, b = LogWriter(engine_a, batch_max=7), LogWriter(engine_b, batch_max=5)
    await a.start()
    await b.start()
    try:
        await asyncio.gather(*((a if i % 2 else b).append(_record(i)) for i in range(120)))
    finally:
        await a.close()
        await b.close()
    assert await chain_is_valid(engine_a, "calls") == 120
    await engine_a.dispose()
    await engine_b.dispose()


async def test_sm3_streams_and_separate_sequences(settings: Settings) -> None:
    engine = create_engine(settings.resolved_database_url)
    await migrate(engine)
    writer = LogWriter(engine, algorithm="sm3")
    await writer.start()
    try:
        for i in range(5):
            await writer.append(_record(i, "calls"))
            await writer.append(_record(i, "governance"))
    finally:
        await writer.close()
    assert await chain_is_valid(engine, "calls", "sm3") == 5
    assert await chain_is_valid(engine, "governance", "sm3") == 5
    await engine.dispose()


async def test_append_fails_closed_when_store_is_gone(settings: Settings) -> None:
    engine = create_engine(settings.resolved_database_url)
    await migrate(engine)
    writer = LogWriter(engine)
    await writer.start()
    async with engine.begin() as conn:
        await conn.execute(LogEntryRow.__table__.delete())
        await conn.run_sync(lambda c: LogEntryRow.__table__.drop(c))
    try:
        with pytest.raises(LogUnavailableError):
            await writer.append(_record(0))
    finally:
        await writer.close()
        await engine.dispose()
    with pytest.raises(LogUnavailableError):
        await writer.append(_record(1))


_APPENDER = """
import asyncio, datetime as dt, json, sys
from gateway.db.engines import create_engine
from gateway.ledger.log import LogWriter, PendingRecord, append_in_transaction

async def main(url, tag, count):
    engine = create_engine(url)
    writer = LogWriter(engine, batch_max=8)
    await writer.start()
    now = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    async def governance(i):
        # A state change and its record in one transaction, as GovernanceService does.
        async with engine.begin() as conn:
            await append_in_transaction(
                conn, PendingRecord("governance", "test", now, {"w": tag, "i": i}), "sha256"
            )
    calls = [writer.append(PendingRecord("calls", "data", now, {"w": tag, "i": i}))
             for i in range(count)]
    await asyncio.gather(*calls, *(governance(i) for i in range(count // 10)))
    await writer.close()
    await engine.dispose()
    print(json.dumps({"conflicts": writer.conflicts}))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_worker_processes_append_without_gap_or_double(settings: Settings) -> None:
    """Four processes (as ``serve --workers 4``) append to the same streams at once: one
    sequence, every record once, no batch rebuilt after a collision."""
    import sys

    url = settings.resolved_database_url
    engine = create_engine(url)
    await migrate(engine)
    per_process = 150
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _APPENDER,
            url,
            f"w{n}",
            str(per_process),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(4)
    ]
    outputs = [await proc.communicate() for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert json.loads(out)["conflicts"] == 0
    assert await chain_is_valid(engine, "calls") == 4 * per_process
    assert await chain_is_valid(engine, "governance") == 4 * (per_process // 10)
    async with engine.connect() as conn:
        bodies = [
            json.loads(p)
            for p in (
                await conn.scalars(select(LogEntryRow.payload).where(LogEntryRow.stream == "calls"))
            ).all()
        ]
    assert sorted((b["w"], b["i"]) for b in bodies) == sorted(
        (f"w{n}", i) for n in range(4) for i in range(per_process)
    )
    await engine.dispose()
