"""The calls stream as the monitor reads it: parsed records and the windows rules need.

Every read is bounded by the batch's end (``seq < end``), so a window holds exactly what was
in the log when the batch was cut, whenever (and however often) it is evaluated: a restarted
monitor or a second process reaches the same result.

Every read is also bounded in size: a window keeps the newest ``max_calls`` records per
query (per merchant when one merchant's calls would crowd out the others). The pattern
rules compare counts with thresholds far below that bound, so a truncated window is a lower
bound that still fires; the volume rule, whose threshold scales with the merchant's own
baseline, counts in SQL when its window was truncated. Without the bound a busy merchant
would make every batch re-read and re-parse an hour of its calls.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import utc
from gateway.db.schema import LogEntryRow

__all__ = ["CallEvent", "CallWindows", "read_batch"]

_COLUMNS = (LogEntryRow.seq, LogEntryRow.recorded_at, LogEntryRow.kind, LogEntryRow.payload)


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One call record, reduced to what the rules look at."""

    seq: int
    at: dt.datetime
    kind: str
    merchant_id: str | None
    client_id: str | None
    scenario_id: str | None
    dataset_id: str | None
    mode: str | None
    decision: str
    status: int
    reason: str | None
    remote: str | None
    parameters: Mapping[str, Any]

    @classmethod
    def from_row(cls, row: Any) -> CallEvent:
        try:
            body = json.loads(row.payload)
        except ValueError:
            body = {}  # an unreadable record is the audit's business; here it counts as empty
        if not isinstance(body, dict):
            body = {}
        parameters = body.get("parameters")
        status = body.get("status")

        def text(key: str) -> str | None:
            value = body.get(key)
            return value if isinstance(value, str) else None

        return cls(
            seq=int(row.seq),
            at=utc(row.recorded_at),
            kind=row.kind,
            merchant_id=text("merchant"),
            client_id=text("client"),
            scenario_id=text("scenario"),
            dataset_id=text("dataset"),
            mode=text("mode"),
            decision=text("decision") or "",
            status=status if isinstance(status, int) else 0,
            reason=text("reason"),
            remote=text("remote"),
            parameters=parameters if isinstance(parameters, dict) else {},
        )

    @property
    def record_id(self) -> str:
        return f"calls/{self.seq}"


async def read_batch(engine: AsyncEngine, start: int, limit: int) -> list[CallEvent]:
    """The next ``limit`` records of the calls stream from position ``start``."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(*_COLUMNS)
                .where(LogEntryRow.stream == "calls", LogEntryRow.seq >= start)
                .order_by(LogEntryRow.seq)
                .limit(limit)
            )
        ).all()
    return [CallEvent.from_row(row) for row in rows]


class CallWindows:
    """Reads the calls before ``end`` that a rule's windows need, each query once per batch.

    ``data_scope`` (merchants, earliest time) announces the data calls the rules will ask
    for, so one read serves them all instead of one per rule.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        end: int,
        data_scope: tuple[Collection[str], dt.datetime] | None = None,
        *,
        max_calls: int = 20_000,
    ) -> None:
        self._engine = engine
        self.end = end
        self.max_calls = max_calls
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._scope = (frozenset(data_scope[0]), data_scope[1]) if data_scope else None

    def _base(self) -> Any:
        return select(*_COLUMNS).where(LogEntryRow.stream == "calls", LogEntryRow.seq < self.end)

    async def _events(self, key: tuple[Any, ...], query: Any) -> list[CallEvent]:
        if key not in self._cache:
            newest = query.order_by(LogEntryRow.seq.desc()).limit(self.max_calls)
            async with self._engine.connect() as conn:
                rows = (await conn.execute(newest)).all()
            self._cache[key] = [CallEvent.from_row(row) for row in reversed(rows)]
        found: list[CallEvent] = self._cache[key]
        return found

    def _data_query(self, names: tuple[str, ...], since: dt.datetime) -> Any:
        return self._base().where(
            LogEntryRow.kind == "data",
            LogEntryRow.merchant_id.in_(names),
            LogEntryRow.recorded_at >= since,
        )

    async def data_calls(self, merchants: Collection[str], since: dt.datetime) -> list[CallEvent]:
        """Data-plane calls of ``merchants`` recorded at or after ``since``."""
        if not merchants:
            return []
        wanted = set(merchants)
        if self._scope is not None and wanted <= self._scope[0] and since >= self._scope[1]:
            names, start = tuple(sorted(self._scope[0])), self._scope[1]
            everything = await self._events(("data", names, start), self._data_query(names, start))
            if len(everything) < self.max_calls or len(names) == 1:
                return [e for e in everything if e.merchant_id in wanted and e.at >= since]
            # Truncated: one merchant may have crowded out the others; read each apart.
            found: list[CallEvent] = []
            for name in sorted(wanted):
                found.extend(
                    await self._events(("data", (name,), start), self._data_query((name,), start))
                )
            found.sort(key=lambda e: e.seq)
            return [e for e in found if e.at >= since]
        names = tuple(sorted(wanted))
        return await self._events(("data", names, since), self._data_query(names, since))

    async def denied_calls(self, since: dt.datetime) -> list[CallEvent]:
        """Every refused call recorded at or after ``since`` (status and remote address are
        only in the payload, so the rules filter further)."""
        return await self._events(
            ("deny", since),
            self._base().where(LogEntryRow.decision == "deny", LogEntryRow.recorded_at >= since),
        )

    async def count_allowed_data(
        self, merchant_id: str, start: dt.datetime, end: dt.datetime
    ) -> int:
        """A merchant's allowed data calls in ``(start, end]`` (a baseline window)."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(
                select(func.count())
                .select_from(LogEntryRow)
                .where(
                    LogEntryRow.stream == "calls",
                    LogEntryRow.seq < self.end,
                    LogEntryRow.kind == "data",
                    LogEntryRow.merchant_id == merchant_id,
                    LogEntryRow.decision == "allow",
                    LogEntryRow.recorded_at > start,
                    LogEntryRow.recorded_at <= end,
                )
            )
        return int(value or 0)

    async def first_allowed_data(self, merchant_id: str) -> dt.datetime | None:
        """When the merchant's first allowed data call was recorded (its history's start)."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(
                select(func.min(LogEntryRow.recorded_at)).where(
                    LogEntryRow.stream == "calls",
                    LogEntryRow.seq < self.end,
                    LogEntryRow.kind == "data",
                    LogEntryRow.merchant_id == merchant_id,
                    LogEntryRow.decision == "allow",
                )
            )
        return utc(value) if value is not None else None
