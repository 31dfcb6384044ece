"""The calls stream as the monitor reads it: parsed records, and the store's answers to the
windows rules need (see :class:`Windows`).

The monitor keeps its windows in memory (:mod:`gateway.monitoring.window_state`) and reads
the store only to fill them: one batch of new records at a time, and the whole reach once
on start or after a gap (:func:`read_reach`). :class:`CallWindows` answers a window straight
from the store; the memory state falls back to it for a window reaching further back than it
holds (a record stamped long before the batch around it).

Every answer is bounded by a batch's end (``seq < end``), so a window holds exactly what was
in the log when the batch was cut, whenever (and however often) it is evaluated: a restarted
monitor, a second process and the memory state all reach the same result.

Every window is also bounded in size: it keeps a merchant's newest ``max_calls`` data calls
(and the newest ``max_calls`` refusals), newest by recording time. By time, not by position:
"the newest in a window" then stays the same set whether it is cut from the whole log or
from a state that dropped older records as batches went by. The pattern rules compare
counts with thresholds far below that bound, so a cut window is a lower bound that still
fires; the volume rule, whose threshold scales with the merchant's own baseline, counts in
SQL when its window was cut.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import utc
from gateway.db.schema import LogEntryRow

__all__ = [
    "CallEvent",
    "CallWindows",
    "Windows",
    "count_allowed_data",
    "filter_values",
    "first_allowed_data",
    "read_batch",
    "read_reach",
]

_COLUMNS = (LogEntryRow.seq, LogEntryRow.recorded_at, LogEntryRow.kind, LogEntryRow.payload)
# Records parsed between two turns of the event loop: what a monitor step may hold the
# loop for (about 5 ms), however large its batch.
PARSE_SLICE = 256
# log_entries.seq is a 32-bit integer: the last position there can be.
_LAST_SEQ = 2**31 - 1
_NEWEST = (LogEntryRow.recorded_at.desc(), LogEntryRow.seq.desc())
# CallEvent's text fields and the payload keys they come from.
_TEXT = (
    ("merchant_id", "merchant"),
    ("client_id", "client"),
    ("scenario_id", "scenario"),
    ("dataset_id", "dataset"),
    ("mode", "mode"),
    ("decision", "decision"),
    ("reason", "reason"),
    ("remote", "remote"),
)


def filter_values(parameters: Mapping[str, Any], name: str) -> list[str]:
    """The values a call asked for on field ``name``: equality and ``in`` filters, or a
    verify key; ranges and prefixes name no single subject."""
    raw = parameters.get(name)
    # The usual cases first (one value, a limit, an offset): every logged call passes here.
    if type(raw) is str:
        return [raw[:200]]
    if type(raw) is int:
        return [str(raw)[:200]]
    values: list[Any] = []
    if isinstance(raw, Mapping):
        for op in ("eq", "in"):
            item = raw.get(op)
            values.extend(item if isinstance(item, list) else [item] if item is not None else [])
    elif isinstance(raw, list):
        values.extend(raw)
    elif raw is not None:
        values.append(raw)
    return [str(v)[:200] for v in values if isinstance(v, str | int) and not isinstance(v, bool)]


@dataclass(frozen=True, slots=True)
class Page:
    """A query that asked for one page: which walk (its filters and page size) and which
    page of it."""

    walk: str
    limit: int
    number: int


# Built once: ``json.dumps`` with options builds an encoder per call, and every query
# record of the calls stream passes through _page.
_WALK = json.JSONEncoder(sort_keys=True, default=str)


def _page(mode: str | None, parameters: Mapping[str, Any]) -> Page | None:
    limit, offset = parameters.get("limit"), parameters.get("offset")
    if mode != "query" or not isinstance(limit, int) or not isinstance(offset, int):
        return None
    if limit <= 0 or offset < 0 or offset % limit:
        return None
    filters = {k: v for k, v in parameters.items() if k not in ("limit", "offset")}
    walk = _WALK.encode([filters, limit])
    return Page(walk, limit, offset // limit)


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One call record, reduced to what the rules look at.

    What the pattern rules derive from a call's parameters (the subjects it named per
    field, the page it asked for) is derived once, here: a call stays in the windows of
    many batches, and each would otherwise derive it again.
    """

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
    subjects: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    page: Page | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        subjects = {name: tuple(filter_values(self.parameters, name)) for name in self.parameters}
        object.__setattr__(self, "subjects", subjects)
        object.__setattr__(self, "page", _page(self.mode, self.parameters))

    @classmethod
    def from_row(cls, row: Any) -> CallEvent:
        """From a store row with ``seq``, ``recorded_at``, ``kind`` and ``payload``."""
        return cls.from_values(int(row.seq), utc(row.recorded_at), row.kind, row.payload)

    @classmethod
    def from_values(cls, seq: int, at: dt.datetime, kind: str, payload: str) -> CallEvent:
        """From a record's columns; its payload is parsed here, once."""
        try:
            body = json.loads(payload)
        except ValueError:
            body = {}  # an unreadable record is the audit's business; here it counts as empty
        if not isinstance(body, dict):
            body = {}
        texts = {name: v if isinstance(v := body.get(key), str) else None for name, key in _TEXT}
        parameters = body.get("parameters")
        status = body.get("status")
        return cls(
            seq=seq,
            at=at,
            kind=kind,
            decision=texts.pop("decision") or "",
            status=status if isinstance(status, int) else 0,
            parameters=parameters if isinstance(parameters, dict) else {},
            **texts,
        )

    @property
    def record_id(self) -> str:
        return f"calls/{self.seq}"

    @property
    def order(self) -> tuple[dt.datetime, int]:
        """Newest-by-time order, the order windows are cut in."""
        return (self.at, self.seq)


class Windows(Protocol):
    """The earlier records a rule may ask for, all before the batch's end."""

    @property
    def max_calls(self) -> int: ...

    async def data_calls(
        self, merchants: Collection[str], since: dt.datetime
    ) -> list[CallEvent]: ...

    async def denied_calls(self, since: dt.datetime) -> list[CallEvent]: ...

    async def count_allowed_data(
        self, merchant_id: str, start: dt.datetime, end: dt.datetime
    ) -> int: ...

    async def first_allowed_data(self, merchant_id: str) -> dt.datetime | None: ...


def _rows(rows: Any) -> list[CallEvent]:
    return [CallEvent.from_row(row) for row in rows]


# The monitor's one read of every call record: plain SQL whose rows SQLAlchemy hands over
# as the driver returned them (no per-row type processing).
_BATCH = text(
    "SELECT seq, recorded_at, kind, payload FROM log_entries "
    "WHERE stream = 'calls' AND seq >= :start AND seq <= :last ORDER BY seq LIMIT :limit"
)


def _time(value: str | dt.datetime) -> dt.datetime:
    """A ``recorded_at`` as the driver returns it: asyncpg an aware datetime, SQLite the
    text SQLAlchemy stored (ISO 8601, no offset: UTC)."""
    return utc(value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value))


async def read_batch(
    engine: AsyncEngine, start: int, limit: int, *, end: int | None = None
) -> list[CallEvent]:
    """The next ``limit`` records of the calls stream from position ``start`` (and before
    ``end`` when given).

    Every call record passes through here once, so it is read lean: the four columns the
    rules need, no ORM row processing, and the payload parsed once into the event.
    """
    last = _LAST_SEQ if end is None else min(end - 1, _LAST_SEQ)
    async with engine.connect() as conn:
        rows = (await conn.execute(_BATCH, {"start": start, "last": last, "limit": limit})).all()
    events: list[CallEvent] = []
    for first in range(0, len(rows), PARSE_SLICE):
        if first:
            # A batch of thousands parsed at once held the serving loop for tens of ms.
            await asyncio.sleep(0)
        events.extend(
            CallEvent.from_values(s, _time(t), k, p)
            for s, t, k, p in rows[first : first + PARSE_SLICE]
        )
    return events


def _data_calls(end: int, since: dt.datetime) -> Any:
    return select(*_COLUMNS).where(
        LogEntryRow.stream == "calls",
        LogEntryRow.seq < end,
        LogEntryRow.kind == "data",
        LogEntryRow.recorded_at >= since,
    )


def _denied_calls(end: int, since: dt.datetime, max_calls: int) -> Any:
    return (
        select(*_COLUMNS)
        .where(
            LogEntryRow.stream == "calls",
            LogEntryRow.seq < end,
            LogEntryRow.decision == "deny",
            LogEntryRow.recorded_at >= since,
        )
        .order_by(*_NEWEST)
        .limit(max_calls)
    )


async def read_reach(
    engine: AsyncEngine, end: int, since: dt.datetime, max_calls: int
) -> tuple[list[CallEvent], list[CallEvent]]:
    """Every window a state starting at ``end`` needs, in one read: each merchant's newest
    ``max_calls`` data calls and the newest ``max_calls`` refusals recorded at or after
    ``since``."""
    rank = func.row_number().over(partition_by=LogEntryRow.merchant_id, order_by=_NEWEST)
    ranked = (
        _data_calls(end, since)
        .where(LogEntryRow.merchant_id.is_not(None))
        .add_columns(rank.label("rank"))
        .subquery()
    )
    data = select(ranked.c.seq, ranked.c.recorded_at, ranked.c.kind, ranked.c.payload).where(
        ranked.c.rank <= max_calls
    )
    async with engine.connect() as conn:
        data_rows = (await conn.execute(data)).all()
        denied_rows = (await conn.execute(_denied_calls(end, since, max_calls))).all()
    return _rows(data_rows), _rows(denied_rows)


async def count_allowed_data(
    engine: AsyncEngine, end: int, merchant_id: str, start: dt.datetime, stop: dt.datetime
) -> int:
    """A merchant's allowed data calls recorded in ``(start, stop]`` before position
    ``end``."""
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(func.count())
            .select_from(LogEntryRow)
            .where(
                LogEntryRow.stream == "calls",
                LogEntryRow.seq < end,
                LogEntryRow.kind == "data",
                LogEntryRow.merchant_id == merchant_id,
                LogEntryRow.decision == "allow",
                LogEntryRow.recorded_at > start,
                LogEntryRow.recorded_at <= stop,
            )
        )
    return int(value or 0)


async def first_allowed_data(engine: AsyncEngine, end: int, merchant_id: str) -> dt.datetime | None:
    """When the merchant's first allowed data call before position ``end`` was recorded."""
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(func.min(LogEntryRow.recorded_at)).where(
                LogEntryRow.stream == "calls",
                LogEntryRow.seq < end,
                LogEntryRow.kind == "data",
                LogEntryRow.merchant_id == merchant_id,
                LogEntryRow.decision == "allow",
            )
        )
    return utc(value) if value is not None else None


class CallWindows:
    """Answers windows from the store, each query once per batch (a cold evaluation, and
    the memory state's fallback for a window older than it holds)."""

    def __init__(self, engine: AsyncEngine, end: int, *, max_calls: int = 20_000) -> None:
        self._engine = engine
        self.end = end
        self._max_calls = max_calls
        self._cache: dict[tuple[Any, ...], list[CallEvent]] = {}

    @property
    def max_calls(self) -> int:
        return self._max_calls

    async def _events(self, key: tuple[Any, ...], query: Any) -> list[CallEvent]:
        if key not in self._cache:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            self._cache[key] = sorted(_rows(rows), key=lambda e: e.seq)
        return self._cache[key]

    def _data_query(self, names: tuple[str, ...], since: dt.datetime) -> Any:
        return (
            _data_calls(self.end, since)
            .where(LogEntryRow.merchant_id.in_(names))
            .order_by(*_NEWEST)
            .limit(self._max_calls)
        )

    async def data_calls(self, merchants: Collection[str], since: dt.datetime) -> list[CallEvent]:
        """Data-plane calls of ``merchants`` recorded at or after ``since``, in log order."""
        if not merchants:
            return []
        names = tuple(sorted(set(merchants)))
        everything = await self._events(("data", names, since), self._data_query(names, since))
        if len(everything) < self._max_calls or len(names) == 1:
            return everything
        # Cut: one merchant may have crowded out the others; read each apart.
        found: list[CallEvent] = []
        for name in names:
            found.extend(
                await self._events(("data", (name,), since), self._data_query((name,), since))
            )
        return sorted(found, key=lambda e: e.seq)

    async def denied_calls(self, since: dt.datetime) -> list[CallEvent]:
        """Every refused call recorded at or after ``since`` (status and remote address are
        only in the payload, so the rules filter further)."""
        return await self._events(("deny", since), _denied_calls(self.end, since, self._max_calls))

    async def count_allowed_data(
        self, merchant_id: str, start: dt.datetime, end: dt.datetime
    ) -> int:
        """A merchant's allowed data calls in ``(start, end]`` (a baseline window)."""
        return await count_allowed_data(self._engine, self.end, merchant_id, start, end)

    async def first_allowed_data(self, merchant_id: str) -> dt.datetime | None:
        """When the merchant's first allowed data call was recorded (its history's start)."""
        return await first_allowed_data(self._engine, self.end, merchant_id)
