"""The volume rule's history, kept per merchant so that a busy merchant costs a few small
counts per batch instead of re-counting its baseline hours in the log.

Two figures come from the log: when a merchant's first allowed data call was recorded, and
how many allowed data calls it made in a window of an earlier day. Both are read once per
merchant and then kept up to date from each batch the monitor adds (a record stamped inside
a remembered window adds one to its count; an earlier first call moves the first), so they
stay exact. A window asked for again, shifted because the batch's peak moved, is counted
from the remembered one plus the slices the shift added and minus those it dropped: two
range counts over seconds of records, not one over an hour. Everything is forgotten with
the monitor's window state (on start and after a gap).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.monitoring.calls import CallEvent, count_allowed_data, first_allowed_data

__all__ = ["AllowedHistory"]

V = TypeVar("V")

# Remembered windows per merchant: the volume rule asks for one per baseline day and one
# for the peak window itself.
WINDOWS_PER_MERCHANT = 16
# Merchants remembered; the oldest remembered is forgotten first beyond that.
MERCHANTS = 10_000


@dataclass(slots=True)
class _Count:
    start: dt.datetime
    end: dt.datetime
    count: int


def _is_allowed_data(event: CallEvent) -> bool:
    return event.kind == "data" and event.decision == "allow" and event.merchant_id is not None


class AllowedHistory:
    """First allowed data call and window counts of each merchant, exact as of the end of
    the last batch :meth:`observe` was given."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._first: dict[str, dt.datetime] = {}
        self._counts: dict[str, list[_Count]] = {}
        # Store queries run, for tests and the benchmark's curiosity.
        self.queries = 0

    def clear(self) -> None:
        self._first.clear()
        self._counts.clear()

    def observe(self, events: Iterable[CallEvent]) -> None:
        """Account for records appended after everything remembered was read."""
        for event in events:
            if not _is_allowed_data(event):
                continue
            merchant = event.merchant_id or ""
            first = self._first.get(merchant)
            if first is not None and event.at < first:
                self._first[merchant] = event.at
            for window in self._counts.get(merchant, ()):
                if window.start < event.at <= window.end:
                    window.count += 1

    async def first(self, end: int, merchant_id: str) -> dt.datetime | None:
        """The merchant's first allowed data call before ``end``."""
        if merchant_id in self._first:
            return self._first[merchant_id]
        self.queries += 1
        found = await first_allowed_data(self._engine, end, merchant_id)
        if found is not None:
            self._remember(self._first, merchant_id, found)
        return found

    async def count(self, end: int, merchant_id: str, start: dt.datetime, stop: dt.datetime) -> int:
        """The merchant's allowed data calls in ``(start, stop]`` before ``end``."""
        windows = self._counts.get(merchant_id)
        if windows is None:
            windows = self._remember(self._counts, merchant_id, [])
        length = stop - start
        near = [w for w in windows if w.end - w.start == length and abs(w.end - stop) < length]
        if near:
            window = min(near, key=lambda w: abs(w.end - stop))
            windows.remove(window)
            window.count += await self._signed(end, merchant_id, window.end, stop)
            window.count -= await self._signed(end, merchant_id, window.start, start)
            window.start, window.end = start, stop
        else:
            self.queries += 1
            found = await count_allowed_data(self._engine, end, merchant_id, start, stop)
            window = _Count(start, stop, found)
            del windows[: max(0, len(windows) - WINDOWS_PER_MERCHANT + 1)]
        windows.append(window)  # the most recently used last
        return window.count

    async def _signed(self, end: int, merchant_id: str, old: dt.datetime, new: dt.datetime) -> int:
        """What moving a window edge from ``old`` to ``new`` adds: the calls in
        ``(old, new]``, or minus those in ``(new, old]``."""
        if new == old:
            return 0
        self.queries += 1
        if new > old:
            return await count_allowed_data(self._engine, end, merchant_id, old, new)
        return -await count_allowed_data(self._engine, end, merchant_id, new, old)

    @staticmethod
    def _remember(table: dict[str, V], merchant_id: str, value: V) -> V:
        if len(table) >= MERCHANTS:
            del table[next(iter(table))]
        table[merchant_id] = value
        return value
