"""Log entries: the streams, a record waiting to be appended, an appended entry, and reads.

Apart from the writer (:mod:`gateway.ledger.log`) so that readers of the log (audits,
bundles, reports) depend on the models and reads only, not on the group-commit machinery.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import utc
from gateway.db.schema import LogEntryRow
from gateway.ledger.canonical import canonical_bytes

__all__ = [
    "SALT_BYTES",
    "STREAMS",
    "AppendedEntry",
    "Batch",
    "Heads",
    "LogEntry",
    "PendingRecord",
    "read_entries",
    "read_entry",
    "stream_size",
]

STREAMS = ("calls", "governance", "products")

SALT_BYTES = 16


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


# Each stream's next position and the entry hash it links to.
Heads = dict[str, tuple[int, bytes]]

# A batch as the sinks write it: ``log_entries`` rows (tuples in the sink's column order),
# ``trace_rows`` (hash, seq) pairs, and where each record landed.
Batch = tuple[list[tuple[Any, ...]], list[tuple[int, int]], list[AppendedEntry]]


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
