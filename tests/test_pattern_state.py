"""The pattern rules' incremental state answers what a rescan of the same window answers:
random calls enter in any order, the oldest are dropped as the window state drops them,
and the window moves back and forth; at every point the distinct values, the longest
counter run (its stem, counters, first and last identifiers and records) and the longest
page run equal those computed from scratch by a rescan (the rules' code before they kept
state: ``longest_counter_run`` is still the rules' own, the other two are kept here)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.monitoring.calls import CallEvent
from gateway.monitoring.pattern_state import PatternWindow, counter_occurrences
from gateway.monitoring.rule_context import longest_counter_run


def in_window(
    events: Sequence[CallEvent], point: dt.datetime, window: dt.timedelta
) -> list[CallEvent]:
    """The calls of the window that ends at ``point`` (the rescan's selection)."""
    return [e for e in events if point - window < e.at <= point]


def longest_page_run(pages: Iterable[tuple[int, int]]) -> tuple[int, int, int, list[int]]:
    """Over ``(page, seq)`` pairs: (length, first page, last page, seqs) of the longest run
    of consecutive pages, as the scraping rule computed it by rescanning."""
    by_page: dict[int, list[int]] = defaultdict(list)
    for page, seq in pages:
        by_page[page].append(seq)
    ordered = sorted(by_page)
    best: tuple[int, int, int, list[int]] = (0, 0, 0, [])
    start = 0
    for i in range(1, len(ordered) + 1):
        if i < len(ordered) and ordered[i] == ordered[i - 1] + 1:
            continue
        if i - start > best[0]:
            run = ordered[start:i]
            best = (i - start, run[0], run[-1], [s for p in run for s in by_page[p]])
        start = i
    return best


START = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
WINDOW = dt.timedelta(seconds=60)
# Few stems and close counters, so runs form, merge, split and tie.
VALUES = [f"{stem}{n:04d}{check}" for stem in ("A", "B") for n in range(12) for check in ("", "X")]


def make(seq: int, second: int, shape: int, picks: list[int], page: int) -> CallEvent:
    parameters: dict[str, Any] = {"code": [VALUES[p] for p in picks]}
    mode = "verify"
    if shape == 1:
        mode, parameters = "query", {"code": {"in": parameters["code"]}}
    elif shape == 2:
        mode, parameters = "query", {"d": ["x", "y"][page % 2], "limit": 5, "offset": page * 5}
    return CallEvent(
        seq=seq,
        at=START + dt.timedelta(seconds=second),
        kind="data",
        merchant_id="m",
        client_id="c",
        scenario_id="s",
        dataset_id="d",
        mode=mode,
        decision="allow",
        status=200,
        reason=None,
        remote=None,
        parameters=parameters,
    )


calls = st.tuples(
    st.integers(0, 180),
    st.integers(0, 2),
    st.lists(st.integers(0, len(VALUES) - 1), max_size=3),
    st.integers(0, 6),
)


def check(window: PatternWindow, kept: list[CallEvent], point: dt.datetime) -> None:
    window.at(point, WINDOW)
    inside = sorted(in_window(kept, point, WINDOW), key=lambda e: e.seq)
    assert window.distinct("code") == len({v for e in inside for v in e.subjects.get("code", ())})
    expected = longest_counter_run((v, e.seq) for e in inside for v in e.subjects.get("code", ()))
    runs = window.counters("code")
    got = runs.longest_run() if runs.longest >= 2 else None
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.length == expected.length
        assert runs.first_label(got.group, got.start) == expected.first
        assert runs.first_label(got.group, got.end) == expected.last
        seqs = {
            e.seq
            for e in inside
            for stem, n, _ in counter_occurrences(e, "code")
            if stem == got.group and got.start <= n <= got.end
        }
        assert seqs == set(expected.seqs)
    # Paging: the first query shape (by record) with the longest run of pages.
    walks: dict[str, list[tuple[int, int]]] = {}
    for event in inside:
        if event.page is not None:
            walks.setdefault(event.page.walk, []).append((event.page.number, event.seq))
    best: tuple[int, int, int, str] | None = None
    for walk, pages in walks.items():
        length, first, last, _ = longest_page_run(pages)
        if best is None or length > best[0]:
            best = (length, first, last, walk)
    page_run = window.pages().longest_run()
    if best is None:
        assert page_run is None
    else:
        assert page_run is not None
        assert (page_run.length, page_run.start, page_run.end, page_run.group) == best


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(calls, min_size=1, max_size=60),
    steps=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 4)), min_size=1, max_size=12),
)
def test_pattern_state_answers_what_a_rescan_answers(
    stream: list[tuple[int, int, list[int], int]], steps: list[tuple[int, int]]
) -> None:
    events = [make(seq, *call) for seq, call in enumerate(stream)]
    window = PatternWindow()
    kept: list[CallEvent] = []
    pending = list(events)
    for second, drop in steps:
        # Some calls arrive (any order in time), the oldest few leave, the window moves.
        for event in pending[: len(pending) // 2 + 1]:
            window.insert(event)
            kept.append(event)
        pending = pending[len(pending) // 2 + 1 :]
        kept.sort(key=lambda e: e.order)
        drop = min(drop, len(kept))
        window.drop_oldest(drop)
        kept = kept[drop:]
        check(window, kept, START + dt.timedelta(seconds=second))
        # Asking for an aggregate afresh builds it from the window's calls.
        fresh = PatternWindow()
        for event in kept:
            fresh.insert(event)
        check(fresh, kept, START + dt.timedelta(seconds=second))
