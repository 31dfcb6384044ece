"""The monitor's windows, kept in memory and advanced batch by batch.

Re-reading every window from the log for every batch made the monitor's cost per call grow
with its windows (an hour of a busy merchant's calls, re-read and re-parsed each batch).
Instead the monitor keeps, for the rules' longest window (the reach), each merchant's data
calls and every refusal, parsed once when their batch was read; a new batch is added and
what fell out of the reach is dropped.

The state answers for the records before its ``end`` recorded at or after its ``horizon``,
cut to the newest ``max_calls`` per merchant (and refusals) by recording time, exactly as
:class:`~gateway.monitoring.calls.CallWindows` cuts them from the store: the same windows,
so the same detections. It is built from the store in one read of the reach on start, and
again after a gap it cannot close cheaply: when another process evaluated batches this one
did not see, a small gap is read and added (its records are known, not evaluated), a large
one or a cursor behind the state means a fresh start. A window reaching back before the
horizon (a record stamped long before the batch around it) is read from the store.

Beside the windows the state keeps what the rules count, updated as calls enter and leave
(:mod:`~gateway.monitoring.pattern_state`): each merchant's allowed data calls and each
subject's refusals in recording order (a window's count is two bisections), and the
pattern rules' aggregates per merchant and dataset. A batch then costs about its own calls,
not the windows' (up to ``max_calls`` per merchant).

Memory is bounded by the reach and ``max_calls`` per merchant; the horizon trails the
batch's earliest record by the reach plus :data:`EVICTION_SLACK`, which absorbs records
that commit out of their recording order (concurrent requests, several gateways).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Collection, Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.monitoring.baseline import AllowedHistory
from gateway.monitoring.calls import (
    PARSE_SLICE,
    CallEvent,
    CallWindows,
    read_batch,
    read_reach,
)
from gateway.monitoring.pattern_state import (
    PatternState,
    PatternWindow,
    TimeList,
    refusal_keys,
)

__all__ = ["EVICTION_SLACK", "StateWindows", "WindowState"]

EVICTION_SLACK = dt.timedelta(minutes=1)


def _list(lists: dict[str, TimeList], merchant: str) -> TimeList:
    found = lists.get(merchant)
    if found is None:
        found = lists[merchant] = TimeList()
    return found


class WindowState:
    """Each merchant's data calls and every refusal within the reach, oldest first by
    recording time; complete for the records before :attr:`end`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.end: int | None = None
        self.horizon = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._shape: tuple[dt.timedelta, int] = (dt.timedelta(0), 0)
        self._data: dict[str, TimeList] = {}
        # Each merchant's allowed data calls among them (the volume rule counts these).
        self._allowed: dict[str, TimeList] = {}
        self._denied = TimeList()
        # The refusals among them per subject the refusal rules count (refusal_keys).
        self._refusals: dict[str, TimeList] = {}
        self.history = AllowedHistory(engine)
        # The pattern rules' aggregates over the same calls (kept as they enter and leave).
        self.patterns = PatternState()
        # How the state was filled, for tests and operators' curiosity.
        self.loads = 0
        self.catch_ups = 0

    @property
    def max_calls(self) -> int:
        return self._shape[1]

    def reset(self) -> None:
        """Forget everything: the next batch starts from the store."""
        self.end = None
        self._data.clear()
        self._allowed.clear()
        self._denied = TimeList()
        self._refusals.clear()
        self.history.clear()
        self.patterns.clear()

    def __len__(self) -> int:
        return len(self._denied) + sum(len(events) for events in self._data.values())

    async def advance(
        self,
        start: int,
        batch: Sequence[CallEvent],
        *,
        reach: dt.timedelta,
        max_calls: int,
        catch_up: int,
    ) -> None:
        """Add ``batch`` (the records from ``start``), first closing a gap of up to
        ``catch_up`` records since :attr:`end` or starting afresh from the store."""
        if not batch:
            return
        horizon = min(e.at for e in batch) - reach - EVICTION_SLACK
        if (reach, max_calls) != self._shape:
            self.reset()
            self._shape = (reach, max_calls)
        if self.end is not None and self.end < start <= self.end + catch_up:
            skipped = await read_batch(self._engine, self.end, start - self.end, end=start)
            self._add(skipped)
            self.end, self.catch_ups = start, self.catch_ups + 1
        if self.end != start:
            self.reset()
            data, denied = await read_reach(self._engine, start, horizon, max_calls)
            self.horizon = horizon
            # A refused data call may be in both reads: add it once, to both lists.
            self._add({e.seq: e for e in [*data, *denied]}.values())
            self.end, self.loads = start, self.loads + 1
        for first in range(0, len(batch), PARSE_SLICE):
            if first:
                await asyncio.sleep(0)  # as read_batch: a long batch leaves the loop turns
            self._add(batch[first : first + PARSE_SLICE])
        self.end = batch[-1].seq + 1
        self._evict(max(self.horizon, horizon))

    def _add(self, events: Iterable[CallEvent]) -> None:
        """Add records the state does not hold yet (in any order), then cut each list to
        its newest ``max_calls``."""
        events = list(events)
        # The baseline counts hold for the whole log, not just the reach.
        self.history.observe(events)
        touched: set[str] = set()
        denied = False
        for event in events:
            if event.at < self.horizon:
                continue
            if event.kind == "data" and event.merchant_id is not None:
                _list(self._data, event.merchant_id).insert(event)
                if event.decision == "allow":
                    _list(self._allowed, event.merchant_id).insert(event)
                self.patterns.insert(event)
                touched.add(event.merchant_id)
            if event.decision == "deny":
                self._denied.insert(event)
                for key in refusal_keys(event):
                    _list(self._refusals, key).insert(event)
                denied = True
        bound = self.max_calls
        for merchant in touched:
            self._drop(merchant, max(0, len(self._data[merchant]) - bound))
        if denied:
            self._drop_denied(max(0, len(self._denied) - bound))

    def _drop(self, merchant: str, count: int) -> None:
        """Drop a merchant's ``count`` oldest data calls, from every list holding them."""
        if not count:
            return
        dropped = self._data[merchant].drop_oldest(count)
        allowed = sum(1 for e in dropped if e.decision == "allow")
        if allowed:
            self._allowed[merchant].drop_oldest(allowed)
            if not self._allowed[merchant]:
                del self._allowed[merchant]
        self.patterns.drop(dropped)
        if not self._data[merchant]:
            del self._data[merchant]

    def _drop_denied(self, count: int) -> None:
        """Drop the ``count`` oldest refusals, from every list holding them."""
        counts: dict[str, int] = {}
        for event in self._denied.drop_oldest(count):
            for key in refusal_keys(event):
                counts[key] = counts.get(key, 0) + 1
        for subject, dropped in counts.items():
            self._refusals[subject].drop_oldest(dropped)
            if not self._refusals[subject]:
                del self._refusals[subject]

    def _evict(self, horizon: dt.datetime) -> None:
        self.horizon = horizon
        for merchant in list(self._data):
            self._drop(merchant, self._data[merchant].since(horizon))
        self._drop_denied(self._denied.since(horizon))

    def windows(self) -> StateWindows:
        """The rules' windows for the batch just added."""
        if self.end is None:
            raise RuntimeError("monitor: window state used before a batch was added")
        return StateWindows(self, self._engine, self.end)

    def data_calls(self, merchants: Collection[str], since: dt.datetime) -> list[CallEvent]:
        found = [
            e
            for m in merchants
            if m in self._data
            for e in self._data[m].events[self._data[m].since(since) :]
        ]
        return sorted(found, key=lambda e: e.seq)

    def allowed_data(self, merchant_id: str) -> TimeList:
        return self._allowed.get(merchant_id) or TimeList()

    def refusals(self, subject: str) -> TimeList:
        return self._refusals.get(subject) or TimeList()

    def denied_calls(self, since: dt.datetime) -> list[CallEvent]:
        return sorted(self._denied.events[self._denied.since(since) :], key=lambda e: e.seq)


class StateWindows:
    """:class:`~gateway.monitoring.calls.Windows` answered from a :class:`WindowState`;
    from the store for what lies before its horizon."""

    def __init__(self, state: WindowState, engine: AsyncEngine, end: int) -> None:
        self._state = state
        self._engine = engine
        self.end = end
        self._store: CallWindows | None = None

    @property
    def max_calls(self) -> int:
        return self._state.max_calls

    @property
    def store(self) -> CallWindows:
        if self._store is None:
            self._store = CallWindows(self._engine, self.end, max_calls=self.max_calls)
        return self._store

    async def data_calls(self, merchants: Collection[str], since: dt.datetime) -> list[CallEvent]:
        if since < self._state.horizon:
            return await self.store.data_calls(merchants, since)
        return self._state.data_calls(merchants, since)

    def allowed_data(self, merchant_id: str, since: dt.datetime) -> TimeList | None:
        """A merchant's allowed data calls in the windows, oldest first; None when
        ``since`` lies before the horizon (the store then answers)."""
        if since < self._state.horizon:
            return None
        return self._state.allowed_data(merchant_id)

    def refusals(self, subject: str, since: dt.datetime) -> TimeList | None:
        """The refusals kept under ``subject`` (:func:`refusal_keys`), oldest first;
        None when ``since`` lies before the horizon (the store then answers)."""
        if since < self._state.horizon:
            return None
        return self._state.refusals(subject)

    def pattern_window(
        self, merchant_id: str, dataset_id: str, since: dt.datetime
    ) -> PatternWindow | None:
        """The pattern rules' state of a merchant and dataset, kept as calls came and went;
        None when ``since`` lies before the horizon (the store then answers)."""
        if since < self._state.horizon:
            return None
        return self._state.patterns.window(merchant_id, dataset_id)

    async def denied_calls(self, since: dt.datetime) -> list[CallEvent]:
        if since < self._state.horizon:
            return await self.store.denied_calls(since)
        return self._state.denied_calls(since)

    async def count_allowed_data(
        self, merchant_id: str, start: dt.datetime, end: dt.datetime
    ) -> int:
        return await self._state.history.count(self.end, merchant_id, start, end)

    async def first_allowed_data(self, merchant_id: str) -> dt.datetime | None:
        return await self._state.history.first(self.end, merchant_id)
