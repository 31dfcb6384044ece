"""The pattern rules' state, kept up to date as calls enter and leave the monitor's windows.

Rescanning a merchant's whole window for every batch made the enumeration and scraping
rules cost more per call the longer the window (up to ``window_max_calls`` calls, read
again each batch). Instead, per merchant and dataset, a :class:`PatternWindow` holds the
verify/query calls the window state holds and the aggregates of those within one time
window ``(lo, hi]``: per field, how often each value was asked for (distinct subjects) and
the runs of consecutive trailing counters per stem (enumeration); per query shape, the runs
of consecutive pages (paging). Moving the window to a rule's evaluation point adds and
drops only the calls between the old and the new bounds, so a batch costs about its own
calls, whatever the window holds.

The count rules need less: a subject's calls in recording order (:class:`TimeList`), where
a window's count is two bisections (:func:`peak_in`).

The answers are those of a rescan of the same window: the same counts, and on a tie the
same winner (the stem or query shape asked for first, the run with the lowest counters),
because the rules' alerts must not depend on how the window was kept.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gateway.monitoring.calls import CallEvent
from gateway.monitoring.rule_context import PATTERN_MODES, Peak, counter_forms

__all__ = [
    "PatternRun",
    "PatternState",
    "PatternWindow",
    "RunIndex",
    "TimeList",
    "counter_occurrences",
    "pattern_key",
    "peak_in",
    "refusal_keys",
    "refusal_subject",
]

# An occurrence of a number in a group: (record seq, position in the record, label).
Occurrence = tuple[int, int, str]


def pattern_key(event: CallEvent) -> tuple[str, str] | None:
    """The merchant and dataset of a verify/query data call (what the pattern rules group
    by), else None."""
    if (
        event.kind == "data"
        and event.merchant_id is not None
        and event.dataset_id is not None
        and event.mode in PATTERN_MODES
    ):
        return (event.merchant_id, event.dataset_id)
    return None


class TimeList:
    """Calls oldest first by recording time (then seq), their orders kept beside them: a
    window's bounds are then found by bisection in C, without a key function per step."""

    __slots__ = ("events", "orders")

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self.orders: list[tuple[dt.datetime, int]] = []

    def __len__(self) -> int:
        return len(self.events)

    def insert(self, event: CallEvent) -> None:
        order = event.order
        if not self.orders or self.orders[-1] <= order:
            self.orders.append(order)  # the usual case: records arrive in recording order
            self.events.append(event)
        else:
            at = bisect.bisect_right(self.orders, order)
            self.orders.insert(at, order)
            self.events.insert(at, event)

    def drop_oldest(self, count: int) -> list[CallEvent]:
        """Drop the ``count`` oldest calls; returns them."""
        dropped = self.events[:count]
        del self.events[:count], self.orders[:count]
        return dropped

    def since(self, at: dt.datetime) -> int:
        """The index of the first call recorded at or after ``at``."""
        return bisect.bisect_left(self.orders, (at, -1))

    def after(self, at: dt.datetime) -> int:
        """The index of the first call recorded after ``at``."""
        return bisect.bisect_right(self.orders, (at, _LAST))

    def span(self, lo: dt.datetime, hi: dt.datetime) -> list[CallEvent]:
        """The calls recorded in ``(lo, hi]``."""
        return self.events[self.after(lo) : self.after(hi)] if lo < hi else []


_LAST = 1 << 62  # above every record seq


def peak_in(calls: TimeList, points: Iterable[dt.datetime], window: dt.timedelta) -> Peak | None:
    """:func:`~gateway.monitoring.rule_context.peak_count` over calls kept in order: a
    bisection per point instead of a pass over the window."""
    best: tuple[int, int, dt.datetime] | None = None
    for point in points:
        lo, hi = calls.after(point - window), calls.after(point)
        if best is None or hi - lo > best[1] - best[0]:
            best = (lo, hi, point)
    if best is None:
        return None
    lo, hi, point = best
    return Peak(hi - lo, point, calls.events[lo:hi])


def refusal_subject(event: CallEvent) -> str | None:
    """Whom a refused (403) data or delivery call counts against in ``refusal-burst``: its
    merchant, or for a buyer without one its client."""
    if event.status != 403 or event.kind not in ("data", "delivery"):
        return None
    if event.merchant_id is not None:
        return f"merchant:{event.merchant_id}"
    return f"client:{event.client_id}" if event.client_id else None


def refusal_keys(event: CallEvent) -> list[str]:
    """The lists of refusals the window state keeps ``event`` in: its refusal-burst subject
    and, for a 401, its remote address and client id (``401 remote:...``, ``401
    client:...``: what invalid-tokens counts, before the policy names unknown clients)."""
    keys = []
    subject = refusal_subject(event)
    if subject is not None:
        keys.append(subject)
    if event.status == 401:
        if event.remote:
            keys.append(f"401 remote:{event.remote}")
        if event.client_id:
            keys.append(f"401 client:{event.client_id}")
    return keys


@dataclass(frozen=True, slots=True)
class PatternRun:
    """The longest run of consecutive numbers in one group (a counter stem, a query shape)."""

    group: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _first(known: Occurrence | list[Occurrence]) -> Occurrence:
    return known if isinstance(known, tuple) else min(known)


class _Group:
    __slots__ = ("ends", "numbers", "starts")

    def __init__(self) -> None:
        # One occurrence as a bare tuple, a list from the second on: windows hold
        # thousands of numbers, and a list per number is work for the garbage collector.
        self.numbers: dict[int, Occurrence | list[Occurrence]] = {}
        self.starts: dict[int, int] = {}  # run start -> run end
        self.ends: dict[int, int] = {}  # run end -> run start


class RunIndex:
    """Numbers per group with the runs of consecutive ones, under insertion and removal.

    A removal splits a run; finding the run walks from the number towards the nearer end
    (both directions in step), so dropping a window's oldest counters costs a step each.
    """

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        self._lengths: dict[int, dict[str, int]] = {}  # length -> group -> runs
        self._longest = 0  # at least the longest run's length

    @property
    def longest(self) -> int:
        """The longest run's length (0 for none). Kept as an upper bound, lowered when
        asked: a run merged with its neighbours is first removed, and lowering then would
        walk all the way down and back up."""
        while self._longest and self._longest not in self._lengths:
            self._longest -= 1
        return self._longest

    def _run(self, group: str, g: _Group, start: int, end: int, delta: int) -> None:
        if delta > 0:
            g.starts[start], g.ends[end] = end, start
        else:
            del g.starts[start], g.ends[end]
        length = end - start + 1
        counts = self._lengths.setdefault(length, {})
        count = counts.get(group, 0) + delta
        if count:
            counts[group] = count
        else:
            del counts[group]
            if not counts:
                del self._lengths[length]
        if delta > 0 and length > self._longest:
            self._longest = length

    def add(self, group: str, number: int, occurrence: Occurrence) -> None:
        g = self._groups.get(group)
        if g is None:
            g = self._groups[group] = _Group()
        known = g.numbers.get(number)
        if known is not None:
            if isinstance(known, tuple):
                g.numbers[number] = [known, occurrence]
            else:
                known.append(occurrence)
            return
        g.numbers[number] = occurrence
        start = end = number
        if number - 1 in g.ends:
            start = g.ends[number - 1]
            self._run(group, g, start, number - 1, -1)
        if number + 1 in g.starts:
            end = g.starts[number + 1]
            self._run(group, g, number + 1, end, -1)
        self._run(group, g, start, end, +1)

    def remove(self, group: str, number: int, occurrence: Occurrence) -> None:
        g = self._groups[group]
        known = g.numbers[number]
        if isinstance(known, list):
            known.remove(occurrence)
            if len(known) > 1:
                return
            g.numbers[number] = known[0]
            return
        del g.numbers[number]
        step = 0
        while True:
            if number - step in g.starts:
                start = number - step
                end = g.starts[start]
                break
            if number + step in g.ends:
                end = number + step
                start = g.ends[end]
                break
            step += 1
        self._run(group, g, start, end, -1)
        if start < number:
            self._run(group, g, start, number - 1, +1)
        if number < end:
            self._run(group, g, number + 1, end, +1)
        if not g.numbers:
            del self._groups[group]

    def longest_run(self) -> PatternRun | None:
        """The longest run: of the groups holding one, the group asked for first (lowest
        record seq, then position in the record); in it, the run of the lowest numbers."""
        longest = self.longest
        if not longest:
            return None
        candidates = self._lengths[longest]
        if len(candidates) == 1:
            [group] = candidates
        else:
            group = min(candidates, key=self._first_asked)
        g = self._groups[group]
        start = min(s for s, e in g.starts.items() if e - s + 1 == longest)
        return PatternRun(group, start, start + longest - 1)

    def _first_asked(self, group: str) -> tuple[int, int]:
        return min(_first(occ)[:2] for occ in self._groups[group].numbers.values())

    def first_label(self, group: str, number: int) -> str:
        """The label of the first occurrence (by record seq) of ``number`` in ``group``."""
        return _first(self._groups[group].numbers[number])[2]


def counter_occurrences(event: CallEvent, field: str) -> Iterator[tuple[str, int, Occurrence]]:
    for position, value in enumerate(event.subjects.get(field, ())):
        for check, (stem, number) in enumerate(counter_forms(value)):
            yield stem, number, (event.seq, 2 * position + check, value)


def _page_occurrences(event: CallEvent) -> Iterator[tuple[str, int, Occurrence]]:
    page = event.page
    if page is not None:
        yield page.walk, page.number, (event.seq, 0, str(page.limit))


class PatternWindow:
    """One merchant's verify/query calls on one dataset in the window state (oldest first
    by recording time), and the aggregates of those recorded in ``(lo, hi]``."""

    def __init__(self) -> None:
        self.calls = TimeList()
        self._lo = self._hi = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._members: dict[int, CallEvent] = {}
        self._distinct: dict[str, dict[str, int]] = {}
        self._counters: dict[str, RunIndex] = {}
        self._pages: RunIndex | None = None
        self._descending: list[int] | None = None

    # -- membership --------------------------------------------------------------------

    def insert(self, event: CallEvent) -> None:
        self.calls.insert(event)
        if self._lo < event.at <= self._hi:
            self._enter(event)

    def drop_oldest(self, count: int) -> None:
        """Drop the ``count`` oldest calls (the window state cut or evicted them)."""
        for event in self.calls.drop_oldest(count):
            if self._lo < event.at <= self._hi:
                self._leave(event)

    def _enter(self, event: CallEvent) -> None:
        self._members[event.seq] = event
        self._descending = None
        for field, counts in self._distinct.items():
            for value in event.subjects.get(field, ()):
                counts[value] = counts.get(value, 0) + 1
        for field, runs in self._counters.items():
            for group, number, occurrence in counter_occurrences(event, field):
                runs.add(group, number, occurrence)
        if self._pages is not None:
            for group, number, occurrence in _page_occurrences(event):
                self._pages.add(group, number, occurrence)

    def _leave(self, event: CallEvent) -> None:
        del self._members[event.seq]
        self._descending = None
        for field, counts in self._distinct.items():
            for value in event.subjects.get(field, ()):
                left = counts[value] - 1
                if left:
                    counts[value] = left
                else:
                    del counts[value]
        for field, runs in self._counters.items():
            for group, number, occurrence in counter_occurrences(event, field):
                runs.remove(group, number, occurrence)
        if self._pages is not None:
            for group, number, occurrence in _page_occurrences(event):
                self._pages.remove(group, number, occurrence)

    def at(self, point: dt.datetime, window: dt.timedelta) -> PatternWindow:
        """Move the window to ``(point - window, point]``: only the calls between the old
        and the new bounds enter or leave."""
        lo, hi = point - window, point
        if lo >= self._hi or hi <= self._lo:
            for event in self.calls.span(self._lo, self._hi):
                self._leave(event)
            self._lo = self._hi = lo
        for event in self.calls.span(self._lo, lo):
            self._leave(event)
        for event in self.calls.span(hi, self._hi):
            self._leave(event)
        entering = [*self.calls.span(lo, self._lo), *self.calls.span(self._hi, hi)]
        self._lo, self._hi = lo, hi
        for event in entering:
            self._enter(event)
        return self

    # -- answers ------------------------------------------------------------------------

    def distinct(self, field: str) -> int:
        """How many distinct values the window's calls asked for on ``field``."""
        counts = self._distinct.get(field)
        if counts is None:
            counts = self._distinct[field] = {}
            for event in self._members.values():
                for value in event.subjects.get(field, ()):
                    counts[value] = counts.get(value, 0) + 1
        return len(counts)

    def counters(self, field: str) -> RunIndex:
        """The runs of consecutive trailing counters of ``field``'s values, per stem."""
        runs = self._counters.get(field)
        if runs is None:
            runs = self._counters[field] = RunIndex()
            for event in self._members.values():
                for group, number, occurrence in counter_occurrences(event, field):
                    runs.add(group, number, occurrence)
        return runs

    def pages(self) -> RunIndex:
        """The runs of consecutive pages, per query shape (filters and page size)."""
        if self._pages is None:
            self._pages = RunIndex()
            for event in self._members.values():
                for group, number, occurrence in _page_occurrences(event):
                    self._pages.add(group, number, occurrence)
        return self._pages

    def newest(self) -> Iterator[CallEvent]:
        """The window's calls, newest record first (evidence keeps only the newest few, so
        a walk for it usually stops early)."""
        if self._descending is None:
            self._descending = sorted(self._members, reverse=True)
        return (self._members[seq] for seq in self._descending)


class PatternState:
    """The :class:`PatternWindow` of every merchant and dataset the window state holds
    verify/query calls of."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], PatternWindow] = {}

    def clear(self) -> None:
        self._windows.clear()

    def insert(self, event: CallEvent) -> None:
        key = pattern_key(event)
        if key is not None:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = PatternWindow()
            window.insert(event)

    def drop(self, events: Iterable[CallEvent]) -> None:
        """Drop calls the window state dropped: the oldest of their merchant's, so the
        oldest of each pattern window too."""
        counts: dict[tuple[str, str], int] = {}
        for event in events:
            key = pattern_key(event)
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        for key, count in counts.items():
            window = self._windows[key]
            window.drop_oldest(count)
            if not window.calls:
                del self._windows[key]

    def window(self, merchant_id: str, dataset_id: str) -> PatternWindow:
        window = self._windows.get((merchant_id, dataset_id))
        return window if window is not None else PatternWindow()
