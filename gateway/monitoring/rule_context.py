"""What every misuse rule is given (the batch, earlier windows on demand, the policy, the
calendar and the thresholds) and the small helpers their figures share.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from gateway.governance.policy import PolicySnapshot
from gateway.monitoring.calls import CallEvent, Windows
from gateway.monitoring.models import Detection, Severity
from gateway.settings import Settings

ESCALATION_FACTOR = 3
PATTERN_MODES = ("verify", "query")


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """Every rule parameter; defaults suit a city platform's merchants (docs/alerts.md)."""

    volume_window: dt.timedelta = dt.timedelta(hours=1)
    volume_baseline_days: int = 7
    volume_min_history_days: int = 3
    volume_min_calls: int = 100
    volume_factor: int = 3
    volume_sigmas: int = 5
    pattern_window: dt.timedelta = dt.timedelta(hours=1)
    enumeration_run: int = 20
    verify_negatives: int = 10
    scraping_distinct_subjects: int = 500
    scraping_pages: int = 20
    refusal_window: dt.timedelta = dt.timedelta(minutes=10)
    refusal_threshold: int = 20
    invalid_token_window: dt.timedelta = dt.timedelta(minutes=10)
    invalid_token_threshold: int = 20
    out_of_hours_min_calls: int = 1
    # How many call record ids one alert keeps as evidence.
    evidence_records: int = 50
    # The most call records a window holds per merchant (see gateway.monitoring.calls).
    window_max_calls: int = 20_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        minutes = dt.timedelta(minutes=1)
        return cls(
            volume_window=settings.alert.volume_window_minutes * minutes,
            volume_baseline_days=settings.alert.volume_baseline_days,
            volume_min_history_days=settings.alert.volume_min_history_days,
            volume_min_calls=settings.alert.volume_min_calls,
            volume_factor=settings.alert.volume_factor,
            volume_sigmas=settings.alert.volume_sigmas,
            pattern_window=settings.alert.pattern_window_minutes * minutes,
            enumeration_run=settings.alert.enumeration_run,
            verify_negatives=settings.alert.verify_negatives,
            scraping_distinct_subjects=settings.alert.scraping_distinct_subjects,
            scraping_pages=settings.alert.scraping_pages,
            refusal_window=settings.alert.refusal_window_minutes * minutes,
            refusal_threshold=settings.alert.refusal_threshold,
            invalid_token_window=settings.alert.invalid_token_window_minutes * minutes,
            invalid_token_threshold=settings.alert.invalid_token_threshold,
            out_of_hours_min_calls=settings.alert.out_of_hours_min_calls,
            window_max_calls=settings.monitor.window_max_calls,
        )

    @property
    def reach(self) -> dt.timedelta:
        """The longest window any rule looks back over."""
        return max(
            self.volume_window,
            self.pattern_window,
            self.refusal_window,
            self.invalid_token_window,
        )


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule evaluates: the new records, earlier ones on demand, the current policy
    (datasets' identifier fields, scenarios' hours) and the working-day calendar."""

    batch: Sequence[CallEvent]
    windows: Windows
    snapshot: PolicySnapshot
    is_working_day: Callable[[dt.date], bool]
    thresholds: Thresholds


class Rule(Protocol):
    name: str

    async def evaluate(self, ctx: RuleContext) -> list[Detection]: ...


# -- helpers ----------------------------------------------------------------------------


def severity(base: Severity, value: int, threshold: int) -> Severity:
    return base.raised() if value >= ESCALATION_FACTOR * max(threshold, 1) else base


def number(value: float) -> int | str:
    """A figure for the record: an integer, or a decimal string (records hold no floats)."""
    if float(value).is_integer():
        return int(value)
    return str(Decimal(str(round(value, 2))))


def minutes(window: dt.timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"


def last_seqs(seqs: Iterable[int], bound: int) -> list[int]:
    return sorted(set(seqs))[-bound:]


@dataclass(frozen=True, slots=True)
class Peak:
    count: int
    at: dt.datetime
    members: list[CallEvent]


def burst_figures(
    peak: Peak, threshold: int, window: dt.timedelta, default_reason: str
) -> dict[str, Any]:
    """The figures of a burst of refusals (refusal-burst, invalid-tokens): its size against
    the threshold, its window, and how many refusals gave each reason."""
    reasons: dict[str, int] = defaultdict(int)
    for event in peak.members:
        reasons[event.reason or default_reason] += 1
    return {
        "count": peak.count,
        "threshold": threshold,
        "window_seconds": int(window.total_seconds()),
        "window_end": peak.at.isoformat(),
        "reasons": dict(sorted(reasons.items())),
    }


def peak_count(
    events: Sequence[CallEvent], points: Iterable[dt.datetime], window: dt.timedelta
) -> Peak | None:
    """The most events in any window ``(p - window, p]`` ending at one of ``points``."""
    ordered = sorted(events, key=lambda e: (e.at, e.seq))
    times = [e.at for e in ordered]
    best: tuple[int, int, dt.datetime] | None = None
    for point in points:
        lo = bisect.bisect_right(times, point - window)
        hi = bisect.bisect_right(times, point)
        if best is None or hi - lo > best[1] - best[0]:
            best = (lo, hi, point)
    if best is None:
        return None
    lo, hi, point = best
    return Peak(hi - lo, point, ordered[lo:hi])


def thinned(points: Iterable[dt.datetime], window: dt.timedelta) -> list[dt.datetime]:
    """The newest point and earlier ones at least a quarter window apart."""
    kept: list[dt.datetime] = []
    for point in sorted(set(points), reverse=True):
        if not kept or kept[-1] - point >= window / 4:
            kept.append(point)
    return kept


TRAILING_DIGITS = re.compile(r"(\d{1,30})$")


@functools.lru_cache(maxsize=1 << 16)
def counter_forms(value: str) -> tuple[tuple[str, int], ...]:
    """``value`` read as a stem plus a trailing counter: once as it is, once without a last
    check character (credit codes and resident ids end in one)."""
    forms = []
    for check in (0, 1):
        body = value[:-1] if check else value
        match = TRAILING_DIGITS.search(body)
        if match is not None:
            forms.append((f"{check}:{body[: match.start()]}", int(match.group(1))))
    return tuple(forms)


@dataclass(frozen=True, slots=True)
class CounterRun:
    """The longest run of identifiers that differ only in a consecutive trailing counter."""

    length: int
    first: str
    last: str
    seqs: tuple[int, ...]


def longest_counter_run(values: Iterable[tuple[str, int]]) -> CounterRun | None:
    """Over ``(identifier, record seq)`` pairs, the longest run of identifiers with one stem
    whose counters are consecutive (``...0041``, ``...0042``, ...)."""
    # Per stem and counter: the first identifier seen and its records' seqs (a bare int
    # until a second one comes): windows hold thousands of identifiers, and a container
    # per identifier kept alive here is work for the garbage collector.
    stems: dict[str, dict[int, str]] = {}
    seqs: dict[str, dict[int, int | list[int]]] = {}
    for value, seq in values:
        for stem, number in counter_forms(value):
            numbers = stems.get(stem)
            if numbers is None:
                numbers = stems[stem] = {}
                stem_seqs = seqs[stem] = {}
            else:
                stem_seqs = seqs[stem]
            if number not in numbers:
                numbers[number] = value
                stem_seqs[number] = seq
            else:
                known = stem_seqs[number]
                if isinstance(known, int):
                    stem_seqs[number] = [known, seq]
                else:
                    known.append(seq)
    best: tuple[int, str, list[int]] | None = None
    for stem, numbers in stems.items():
        ordered = sorted(numbers)
        start = 0
        for i in range(1, len(ordered) + 1):
            if i < len(ordered) and ordered[i] == ordered[i - 1] + 1:
                continue
            length = i - start
            if length >= 2 and (best is None or length > best[0]):
                best = (length, stem, ordered[start:i])
            start = i
    if best is None:
        return None
    length, stem, run = best
    found: list[int] = []
    for number in run:
        known = seqs[stem][number]
        found.extend([known] if isinstance(known, int) else known)
    return CounterRun(length, stems[stem][run[0]], stems[stem][run[-1]], tuple(found))


def group_points(
    events: Iterable[CallEvent], key: Callable[[CallEvent], str | None]
) -> dict[str, list[dt.datetime]]:
    points: dict[str, list[dt.datetime]] = defaultdict(list)
    for event in events:
        subject = key(event)
        if subject is not None:
            points[subject].append(event.at)
    return points
