"""Misuse rules over the calls stream (LZ24 §1.2: monitoring and early warning of misuse).

Each rule looks at one batch of new call records and at the window of earlier records it
needs (read through :class:`~gateway.monitoring.calls.CallWindows`, never past the batch),
and returns a :class:`~gateway.monitoring.models.Detection` per subject it fires on. A
subject fires at most once per batch, with the figures of its worst window; the store turns
repeated detections of one subject into one alert with more occurrences.

Windows end at the batch's own records, so only new activity can fire a rule. Count rules
(volume, refusals, invalid tokens) look at a window ending at every new record; pattern rules
(enumeration, scraping), which cost more per window, at the newest record of each subject and
at earlier ones at least a quarter window apart.

What a rule cannot see: values of sensitive fields are logged as keyed digests, so their
enumeration forms no run; it shows as many distinct subjects (``scraping``) or, for claims
verified about one subject, through the verification budget's figures the record carries
(``enumeration``); a rule sees only what the call record holds (no response bodies).

Thresholds come from settings (``alert_*``, docs/alerts.md). A detection whose figure reaches
three times its threshold is raised one severity level higher.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from gateway.governance.policy import UNKNOWN_NAME, PolicySnapshot
from gateway.monitoring.calls import CallEvent, CallWindows
from gateway.monitoring.models import Detection, Severity
from gateway.settings import Settings

__all__ = [
    "DEFAULT_RULES",
    "Enumeration",
    "InvalidTokens",
    "OutOfHours",
    "RefusalBurst",
    "Rule",
    "RuleContext",
    "Scraping",
    "Thresholds",
    "VolumeSpike",
    "longest_counter_run",
]

ESCALATION_FACTOR = 3
_PATTERN_MODES = ("verify", "query")


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
    # The most call records one window read loads (see gateway.monitoring.calls).
    window_max_calls: int = 20_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        minutes = dt.timedelta(minutes=1)
        return cls(
            volume_window=settings.alert_volume_window_minutes * minutes,
            volume_baseline_days=settings.alert_volume_baseline_days,
            volume_min_history_days=settings.alert_volume_min_history_days,
            volume_min_calls=settings.alert_volume_min_calls,
            volume_factor=settings.alert_volume_factor,
            volume_sigmas=settings.alert_volume_sigmas,
            pattern_window=settings.alert_pattern_window_minutes * minutes,
            enumeration_run=settings.alert_enumeration_run,
            verify_negatives=settings.alert_verify_negatives,
            scraping_distinct_subjects=settings.alert_scraping_distinct_subjects,
            scraping_pages=settings.alert_scraping_pages,
            refusal_window=settings.alert_refusal_window_minutes * minutes,
            refusal_threshold=settings.alert_refusal_threshold,
            invalid_token_window=settings.alert_invalid_token_window_minutes * minutes,
            invalid_token_threshold=settings.alert_invalid_token_threshold,
            out_of_hours_min_calls=settings.alert_out_of_hours_min_calls,
            window_max_calls=settings.monitor_window_max_calls,
        )


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule evaluates: the new records, earlier ones on demand, the current policy
    (datasets' identifier fields, scenarios' hours) and the working-day calendar."""

    batch: Sequence[CallEvent]
    windows: CallWindows
    snapshot: PolicySnapshot
    is_working_day: Callable[[dt.date], bool]
    thresholds: Thresholds


class Rule(Protocol):
    name: str

    async def evaluate(self, ctx: RuleContext) -> list[Detection]: ...


# -- helpers ----------------------------------------------------------------------------


def _severity(base: Severity, value: int, threshold: int) -> Severity:
    return base.raised() if value >= ESCALATION_FACTOR * max(threshold, 1) else base


def _number(value: float) -> int | str:
    """A figure for the record: an integer, or a decimal string (records hold no floats)."""
    if float(value).is_integer():
        return int(value)
    return str(Decimal(str(round(value, 2))))


def _minutes(window: dt.timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"


def _last(seqs: Iterable[int], bound: int) -> list[int]:
    return sorted(set(seqs))[-bound:]


@dataclass(frozen=True, slots=True)
class _Peak:
    count: int
    at: dt.datetime
    members: list[CallEvent]


def _burst_figures(
    peak: _Peak, threshold: int, window: dt.timedelta, default_reason: str
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


def _peak_count(
    events: Sequence[CallEvent], points: Iterable[dt.datetime], window: dt.timedelta
) -> _Peak | None:
    """The most events in any window ``(p - window, p]`` ending at one of ``points``."""
    ordered = sorted(events, key=lambda e: (e.at, e.seq))
    times = [e.at for e in ordered]
    best: _Peak | None = None
    for point in points:
        lo = bisect.bisect_right(times, point - window)
        hi = bisect.bisect_right(times, point)
        if best is None or hi - lo > best.count:
            best = _Peak(hi - lo, point, ordered[lo:hi])
    return best


def _thinned(points: Iterable[dt.datetime], window: dt.timedelta) -> list[dt.datetime]:
    """The newest point and earlier ones at least a quarter window apart."""
    kept: list[dt.datetime] = []
    for point in sorted(set(points), reverse=True):
        if not kept or kept[-1] - point >= window / 4:
            kept.append(point)
    return kept


def _in_window(
    events: Sequence[CallEvent], point: dt.datetime, window: dt.timedelta
) -> list[CallEvent]:
    return [e for e in events if point - window < e.at <= point]


def _filter_values(parameters: Mapping[str, Any], field: str) -> list[str]:
    """The values a call asked for on ``field``: equality and ``in`` filters, or a verify
    key; ranges and prefixes name no single subject."""
    raw = parameters.get(field)
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


_TRAILING_DIGITS = re.compile(r"(\d{1,30})$")


def _counter_forms(value: str) -> list[tuple[str, int]]:
    """``value`` read as a stem plus a trailing counter: once as it is, once without a last
    check character (credit codes and resident ids end in one)."""
    forms = []
    for check in (0, 1):
        body = value[:-1] if check else value
        match = _TRAILING_DIGITS.search(body)
        if match is not None:
            forms.append((f"{check}:{body[: match.start()]}", int(match.group(1))))
    return forms


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
    stems: dict[str, dict[int, tuple[str, list[int]]]] = defaultdict(dict)
    for value, seq in values:
        for stem, number in _counter_forms(value):
            entry = stems[stem].setdefault(number, (value, []))
            entry[1].append(seq)
    best: CounterRun | None = None
    for numbers in stems.values():
        ordered = sorted(numbers)
        start = 0
        for i in range(1, len(ordered) + 1):
            if i < len(ordered) and ordered[i] == ordered[i - 1] + 1:
                continue
            length = i - start
            if length >= 2 and (best is None or length > best.length):
                run = ordered[start:i]
                best = CounterRun(
                    length,
                    numbers[run[0]][0],
                    numbers[run[-1]][0],
                    tuple(s for n in run for s in numbers[n][1]),
                )
            start = i
    return best


def _longest_page_run(pages: Iterable[tuple[int, int]]) -> tuple[int, int, int, list[int]]:
    """Over ``(page, seq)`` pairs: (length, first page, last page, seqs) of the longest run
    of consecutive pages."""
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


def _group_points(
    events: Iterable[CallEvent], key: Callable[[CallEvent], str | None]
) -> dict[str, list[dt.datetime]]:
    points: dict[str, list[dt.datetime]] = defaultdict(list)
    for event in events:
        subject = key(event)
        if subject is not None:
            points[subject].append(event.at)
    return points


# -- volume-spike -------------------------------------------------------------------------


class VolumeSpike:
    """A merchant's allowed data calls in one window far above its own baseline.

    Baseline: the same window (same time of day) on each of the previous
    ``volume_baseline_days`` days since the merchant's first call, summarised robustly by
    median and MAD (one busy day does not move it). The window fires when its count reaches
    ``volume_min_calls`` (small merchants' noise never fires), ``volume_factor`` times the
    median, and the median plus ``volume_sigmas`` robust deviations (at least the Poisson
    spread, sqrt(median)). A merchant with less than ``volume_min_history_days`` of history
    has no baseline yet and never fires: a new merchant's first day is not a spike.
    """

    name = "volume-spike"

    async def evaluate(self, ctx: RuleContext) -> list[Detection]:
        t = ctx.thresholds
        news = [
            e
            for e in ctx.batch
            if e.kind == "data" and e.decision == "allow" and e.merchant_id is not None
        ]
        if not news:
            return []
        points = _group_points(news, lambda e: e.merchant_id)
        since = min(e.at for e in news) - t.volume_window
        window_calls = await ctx.windows.data_calls(points.keys(), since)
        detections = []
        for merchant_id, merchant_points in sorted(points.items()):
            allowed = [
                e for e in window_calls if e.merchant_id == merchant_id and e.decision == "allow"
            ]
            peak = _peak_count(allowed, merchant_points, t.volume_window)
            if peak is not None and len(allowed) >= ctx.windows.max_calls:
                # The window read was cut at its bound: count the peak window in SQL.
                exact = await ctx.windows.count_allowed_data(
                    merchant_id, peak.at - t.volume_window, peak.at
                )
                peak = _Peak(max(exact, peak.count), peak.at, peak.members)
            if peak is None or peak.count < t.volume_min_calls:
                continue
            detection = await self._against_baseline(ctx, merchant_id, peak)
            if detection is not None:
                detections.append(detection)
        return detections

    async def _against_baseline(
        self, ctx: RuleContext, merchant_id: str, peak: _Peak
    ) -> Detection | None:
        t = ctx.thresholds
        first = await ctx.windows.first_allowed_data(merchant_id)
        window_start = peak.at - t.volume_window
        day = dt.timedelta(days=1)
        if first is None or window_start - first < t.volume_min_history_days * day:
            return None
        counts = []
        for back in range(1, t.volume_baseline_days + 1):
            end = peak.at - back * day
            if end < first:
                break
            counts.append(
                await ctx.windows.count_allowed_data(merchant_id, end - t.volume_window, end)
            )
        if len(counts) < t.volume_min_history_days:
            return None
        median = statistics.median(counts)
        mad = statistics.median(abs(c - median) for c in counts)
        spread = max(1.4826 * mad, math.sqrt(max(median, 1)))
        threshold = max(
            t.volume_min_calls,
            math.ceil(t.volume_factor * median),
            math.ceil(median + t.volume_sigmas * spread),
        )
        if peak.count < threshold:
            return None
        window = _minutes(t.volume_window)
        return Detection(
            rule=self.name,
            key=f"merchant:{merchant_id}",
            severity=_severity(Severity.WARNING, peak.count, threshold),
            title=f"Volume spike: {merchant_id} made {peak.count} data calls in {window}",
            detail=(
                f"{peak.count} allowed data calls in the {window} up to "
                f"{peak.at.isoformat()}, against a median of {_number(median)} in the same "
                f"window on the previous {len(counts)} days (threshold {threshold})."
            ),
            at=peak.at,
            figures={
                "count": peak.count,
                "threshold": threshold,
                "window_seconds": int(t.volume_window.total_seconds()),
                "window_end": peak.at.isoformat(),
                "baseline": {
                    "days": len(counts),
                    "counts": counts,
                    "median": _number(median),
                    "mad": _number(mad),
                },
            },
            records=_last((e.seq for e in peak.members), t.evidence_records),
            merchant_id=merchant_id,
        )


# -- enumeration and scraping -------------------------------------------------------------


def _pattern_key(event: CallEvent) -> str | None:
    if (
        event.kind == "data"
        and event.merchant_id is not None
        and event.dataset_id is not None
        and event.mode in _PATTERN_MODES
    ):
        return f"{event.merchant_id}\x00{event.dataset_id}"
    return None


async def _pattern_windows(
    ctx: RuleContext,
) -> list[tuple[str, str, list[dt.datetime], list[CallEvent]]]:
    """Per merchant and dataset with new verify/query calls: the evaluation points and the
    pattern window's calls."""
    news = [e for e in ctx.batch if _pattern_key(e) is not None]
    if not news:
        return []
    points = _group_points(news, _pattern_key)
    since = min(e.at for e in news) - ctx.thresholds.pattern_window
    merchants = {key.split("\x00", 1)[0] for key in points}
    calls = await ctx.windows.data_calls(merchants, since)
    grouped: dict[str, list[CallEvent]] = defaultdict(list)
    for event in calls:
        key = _pattern_key(event)
        if key in points:
            grouped[key].append(event)
    out = []
    for key, key_points in sorted(points.items()):
        merchant_id, dataset_id = key.split("\x00", 1)
        out.append(
            (
                merchant_id,
                dataset_id,
                _thinned(key_points, ctx.thresholds.pattern_window),
                grouped[key],
            )
        )
    return out


def _subject_fields(snapshot: PolicySnapshot, dataset_id: str, *, clear_only: bool) -> list[str]:
    """The dataset's identifying fields (keys and subject); with ``clear_only`` only those
    logged in clear (a sensitive field's values are digests, which form no run)."""
    dataset = snapshot.datasets.get(dataset_id)
    if dataset is None:
        return []
    names = dict.fromkeys([*dataset.key_fields, dataset.subject_field])
    if clear_only:
        return [n for n in names if n in dataset.field_names and dataset.field(n).sensitive is None]
    return list(names)


class Enumeration:
    """A merchant asking, within one window, for identifiers that differ only in a trailing
    counter: ``...0041``, ``...0042``, ``...0043``. That is walking an id space, not looking
    up customers. Looks at equality/``in`` filters and verify keys on the dataset's key and
    subject fields logged in clear; fires when a run of consecutive counters reaches
    ``enumeration_run`` inside ``pattern_window``. A trailing check character (credit codes,
    resident ids) is allowed for.

    Values of sensitive fields are digests and form no run, so walking a sensitive claim of
    one subject (a resident id tried candidate by candidate, in any order) is seen through
    the verification budget's figures in the call records instead: it fires when a call was
    refused for an exhausted budget, or when one subject's negative answers in the budget
    window reach ``verify_negatives`` (a generous budget does not hide the walk).
    """

    name = "enumeration"

    async def evaluate(self, ctx: RuleContext) -> list[Detection]:
        t = ctx.thresholds
        detections = _negative_verifies(ctx)
        for merchant_id, dataset_id, points, calls in await _pattern_windows(ctx):
            fields = _subject_fields(ctx.snapshot, dataset_id, clear_only=True)
            best: tuple[CounterRun, str, dt.datetime] | None = None
            for point in points:
                window = _in_window(calls, point, t.pattern_window)
                for field in fields:
                    run = longest_counter_run(
                        (value, e.seq)
                        for e in window
                        for value in _filter_values(e.parameters, field)
                    )
                    if run is not None and (best is None or run.length > best[0].length):
                        best = (run, field, point)
            if best is None or best[0].length < t.enumeration_run:
                continue
            run, field, point = best
            window_text = _minutes(t.pattern_window)
            detections.append(
                Detection(
                    rule=self.name,
                    key=f"merchant:{merchant_id}|dataset:{dataset_id}",
                    severity=_severity(Severity.HIGH, run.length, t.enumeration_run),
                    title=(
                        f"Enumeration: {merchant_id} asked {run.length} consecutive "
                        f"{field} values of {dataset_id} in {window_text}"
                    ),
                    detail=(
                        f"{merchant_id} asked {dataset_id} for {field} {run.first} to "
                        f"{run.last}: {run.length} identifiers differing only in a consecutive "
                        f"counter within {window_text} (threshold {t.enumeration_run})."
                    ),
                    at=point,
                    figures={
                        "pattern": "sequential-identifiers",
                        "dataset": dataset_id,
                        "field": field,
                        "run": run.length,
                        "first": run.first,
                        "last": run.last,
                        "threshold": t.enumeration_run,
                        "window_seconds": int(t.pattern_window.total_seconds()),
                        "window_end": point.isoformat(),
                    },
                    records=_last(run.seqs, t.evidence_records),
                    merchant_id=merchant_id,
                )
            )
        return detections


@dataclass(slots=True)
class _SubjectWalk:
    """One subject's verification-budget figures over a batch's verify calls."""

    figures: Mapping[str, Any]
    at: dt.datetime
    refused: int = 0
    seqs: list[int] = dataclasses.field(default_factory=list)


_BUDGET_REFUSAL = "verification-budget-exhausted"


def _budget_figures(event: CallEvent) -> Mapping[str, Any] | None:
    figures = event.parameters.get("verify_budget")
    if (
        event.kind != "data"
        or event.mode != "verify"
        or event.merchant_id is None
        or event.dataset_id is None
        or not isinstance(figures, Mapping)
        or not isinstance(figures.get("subject"), str)
        or not isinstance(figures.get("negatives"), int)
        or not isinstance(figures.get("bound"), int)
    ):
        return None
    return figures


def _negative_verifies(ctx: RuleContext) -> list[Detection]:
    """Enumeration of a sensitive claim, from the verification budget's figures that the
    batch's verify records carry: per merchant and dataset, the subject whose walk went
    furthest (a refusal for an exhausted budget, else the most negatives), when it reached
    the bound or ``verify_negatives``."""
    t = ctx.thresholds
    walks: dict[tuple[str, str], dict[str, _SubjectWalk]] = defaultdict(dict)
    for event in ctx.batch:
        figures = _budget_figures(event)
        if figures is None:
            continue
        subjects = walks[(event.merchant_id or "", event.dataset_id or "")]
        walk = subjects.get(figures["subject"])
        if walk is None:
            walk = subjects[figures["subject"]] = _SubjectWalk(figures, event.at)
        if figures["negatives"] >= walk.figures["negatives"]:
            walk.figures, walk.at = figures, event.at
        if event.reason == _BUDGET_REFUSAL:
            walk.refused += 1
        walk.seqs.append(event.seq)
    detections = []
    for (merchant_id, dataset_id), subjects in sorted(walks.items()):
        worst = max(subjects.values(), key=lambda w: (w.refused > 0, w.figures["negatives"], w.at))
        negatives, bound = int(worst.figures["negatives"]), int(worst.figures["bound"])
        threshold = min(bound, t.verify_negatives)
        if not worst.refused and negatives < threshold:
            continue
        exhausted = worst.refused > 0 or negatives >= bound
        subject = str(worst.figures["subject"])
        window = f"{worst.figures.get('window_start')} to {worst.figures.get('window_end')}"
        detections.append(
            Detection(
                rule="enumeration",
                key=f"merchant:{merchant_id}|dataset:{dataset_id}|verify-budget",
                severity=_severity(Severity.HIGH, negatives + worst.refused, threshold),
                title=(
                    f"Enumeration: {merchant_id} received {negatives} negative verify answers "
                    f"about one subject of {dataset_id}"
                    + (" and exhausted its verification budget" if exhausted else "")
                ),
                detail=(
                    f"{merchant_id} verified sensitive claims about subject {subject[:16]}… of "
                    f"{dataset_id} and was told no {negatives} times in the budget window "
                    f"{window} (bound {bound}, alert threshold {t.verify_negatives}); "
                    f"{worst.refused} call(s) in this batch were refused. Trying candidate "
                    "values one by one walks the field's value space."
                ),
                at=worst.at,
                figures={
                    "pattern": "verification-budget" if exhausted else "negative-verifies",
                    "dataset": dataset_id,
                    "subject": subject,
                    "negatives": negatives,
                    "bound": bound,
                    "threshold": t.verify_negatives,
                    "refused": worst.refused,
                    "window_start": worst.figures.get("window_start"),
                    "window_end": worst.figures.get("window_end"),
                },
                records=_last(worst.seqs, t.evidence_records),
                merchant_id=merchant_id,
            )
        )
    return detections


class Scraping:
    """A merchant harvesting a dataset rather than using it for its scenario, seen two ways
    within ``pattern_window``:

    - many distinct subjects: the distinct values asked for on one identifying field
      (sensitive ones as digests, which count the same) reach
      ``scraping_distinct_subjects``;
    - paging through a result set: queries with the same filters and page size whose
      offsets walk ``scraping_pages`` consecutive pages.
    """

    name = "scraping"

    async def evaluate(self, ctx: RuleContext) -> list[Detection]:
        detections = []
        for merchant_id, dataset_id, points, calls in await _pattern_windows(ctx):
            fields = _subject_fields(ctx.snapshot, dataset_id, clear_only=False)
            subjects = self._distinct(ctx, merchant_id, dataset_id, points, calls, fields)
            if subjects is not None:
                detections.append(subjects)
            paging = self._paging(ctx, merchant_id, dataset_id, points, calls)
            if paging is not None:
                detections.append(paging)
        return detections

    def _distinct(
        self,
        ctx: RuleContext,
        merchant_id: str,
        dataset_id: str,
        points: list[dt.datetime],
        calls: list[CallEvent],
        fields: list[str],
    ) -> Detection | None:
        t = ctx.thresholds
        best: tuple[int, str, dt.datetime, list[int]] | None = None
        for point in points:
            window = _in_window(calls, point, t.pattern_window)
            for field in fields:
                seen: dict[str, int] = {}
                for event in window:
                    for value in _filter_values(event.parameters, field):
                        seen[value] = event.seq
                if best is None or len(seen) > best[0]:
                    best = (len(seen), field, point, list(seen.values()))
        if best is None or best[0] < t.scraping_distinct_subjects:
            return None
        count, field, point, seqs = best
        window_text = _minutes(t.pattern_window)
        return Detection(
            rule=self.name,
            key=f"merchant:{merchant_id}|dataset:{dataset_id}",
            severity=_severity(Severity.HIGH, count, t.scraping_distinct_subjects),
            title=f"Scraping: {merchant_id} asked about {count} distinct subjects in {window_text}",
            detail=(
                f"{merchant_id} asked {dataset_id} about {count} distinct {field} values "
                f"within {window_text} (threshold {t.scraping_distinct_subjects})."
            ),
            at=point,
            figures={
                "pattern": "distinct-subjects",
                "dataset": dataset_id,
                "field": field,
                "count": count,
                "threshold": t.scraping_distinct_subjects,
                "window_seconds": int(t.pattern_window.total_seconds()),
                "window_end": point.isoformat(),
            },
            records=_last(seqs, t.evidence_records),
            merchant_id=merchant_id,
        )

    def _paging(
        self,
        ctx: RuleContext,
        merchant_id: str,
        dataset_id: str,
        points: list[dt.datetime],
        calls: list[CallEvent],
    ) -> Detection | None:
        t = ctx.thresholds
        best: tuple[int, int, int, list[int], dt.datetime, int] | None = None
        for point in points:
            walks: dict[str, list[tuple[int, int]]] = defaultdict(list)
            limits: dict[str, int] = {}
            for event in _in_window(calls, point, t.pattern_window):
                params = event.parameters
                limit, offset = params.get("limit"), params.get("offset")
                if (
                    event.mode != "query"
                    or not isinstance(limit, int)
                    or not isinstance(offset, int)
                ):
                    continue
                if limit <= 0 or offset < 0 or offset % limit:
                    continue
                filters = {k: v for k, v in params.items() if k not in ("limit", "offset")}
                walk = json.dumps([filters, limit], sort_keys=True, default=str)
                walks[walk].append((offset // limit, event.seq))
                limits[walk] = limit
            for walk, pages in walks.items():
                length, first, last, seqs = _longest_page_run(pages)
                if best is None or length > best[0]:
                    best = (length, first, last, seqs, point, limits[walk])
        if best is None or best[0] < t.scraping_pages:
            return None
        length, first, last, seqs, point, limit = best
        window_text = _minutes(t.pattern_window)
        return Detection(
            rule=self.name,
            key=f"merchant:{merchant_id}|dataset:{dataset_id}|paging",
            severity=_severity(Severity.HIGH, length, t.scraping_pages),
            title=f"Scraping: {merchant_id} paged through {length} pages of {dataset_id}",
            detail=(
                f"{merchant_id} walked pages {first} to {last} (page size {limit}) of one "
                f"query on {dataset_id} within {window_text} (threshold {t.scraping_pages})."
            ),
            at=point,
            figures={
                "pattern": "paging",
                "dataset": dataset_id,
                "pages": length,
                "first_offset": first * limit,
                "last_offset": last * limit,
                "limit": limit,
                "threshold": t.scraping_pages,
                "window_seconds": int(t.pattern_window.total_seconds()),
                "window_end": point.isoformat(),
            },
            records=_last(seqs, t.evidence_records),
            merchant_id=merchant_id,
        )


# -- refusal-burst and invalid-tokens -------------------------------------------------------


class RefusalBurst:
    """Many refused (403) data or delivery calls from one merchant (or, for buyers, one
    client) within ``refusal_window``: someone probing for data outside its scenario or
    purchase. Fires at ``refusal_threshold`` refusals; a few refusals are ordinary mistakes.
    """

    name = "refusal-burst"

    @staticmethod
    def _subject(event: CallEvent) -> str | None:
        if event.status != 403 or event.kind not in ("data", "delivery"):
            return None
        if event.merchant_id is not None:
            return f"merchant:{event.merchant_id}"
        return f"client:{event.client_id}" if event.client_id else None

    async def evaluate(self, ctx: RuleContext) -> list[Detection]:
        t = ctx.thresholds
        news = [e for e in ctx.batch if self._subject(e) is not None]
        if not news:
            return []
        points = _group_points(news, self._subject)
        denied = await ctx.windows.denied_calls(min(e.at for e in news) - t.refusal_window)
        detections = []
        for subject, subject_points in sorted(points.items()):
            mine = [e for e in denied if self._subject(e) == subject]
            peak = _peak_count(mine, subject_points, t.refusal_window)
            if peak is None or peak.count < t.refusal_threshold:
                continue
            # Datasets and scenarios come from the refused calls' paths: names the policy
            # does not hold are one "unknown" (figures) or none (the alert's scenario).
            datasets: dict[str, int] = defaultdict(int)
            for event in peak.members:
                if event.dataset_id:
                    known = event.dataset_id in ctx.snapshot.datasets
                    datasets[event.dataset_id if known else UNKNOWN_NAME] += 1
            scenario_id = peak.members[-1].scenario_id
            if scenario_id not in ctx.snapshot.scenarios:
                scenario_id = None
            window = _minutes(t.refusal_window)
            merchant_id = (
                subject.removeprefix("merchant:") if subject.startswith("merchant:") else None
            )
            detections.append(
                Detection(
                    rule=self.name,
                    key=subject,
                    severity=_severity(Severity.WARNING, peak.count, t.refusal_threshold),
                    title=f"Refusal burst: {peak.count} refused calls by {subject} in {window}",
                    detail=(
                        f"{peak.count} data calls by {subject} were refused (403) within "
                        f"{window} up to {peak.at.isoformat()} (threshold "
                        f"{t.refusal_threshold}): probing for data outside its authorization."
                    ),
                    at=peak.at,
                    figures={
                        **_burst_figures(peak, t.refusal_threshold, t.refusal_window, "forbidden"),
                        "datasets": dict(sorted(datasets.items())),
                    },
                    records=_last((e.seq for e in peak.members), t.evidence_records),
                    merchant_id=merchant_id,
                    scenario_id=scenario_id if merchant_id else None,
                )
            )
        return detections


class InvalidTokens:
    """Repeated 401s (invalid, expired, forged or revoked tokens; failed client
    authentication) from one remote address or one client id within
    ``invalid_token_window``: token guessing or a stolen, revoked credential still in use.
    Fires at ``invalid_token_threshold``; one bad or expired token is routine.
    """

    name = "invalid-tokens"

    async def evaluate(self, ctx: RuleContext) -> list[Detection]:
        t = ctx.thresholds
        news = [e for e in ctx.batch if e.status == 401]
        if not news:
            return []
        denied = [
            e
            for e in await ctx.windows.denied_calls(
                min(e.at for e in news) - t.invalid_token_window
            )
            if e.status == 401
        ]
        detections = []
        clients = ctx.snapshot.clients
        for prefix, attribute in (("remote", "remote"), ("client", "client_id")):

            def subject(
                event: CallEvent, attribute: str = attribute, prefix: str = prefix
            ) -> str | None:
                value = getattr(event, attribute)
                if not value:
                    return None
                # A client id arrives with the token request, before authentication: only
                # ids the policy holds name an alert (and so a line of the security
                # report); every other id is one "client:unknown".
                if attribute == "client_id" and value not in clients:
                    value = UNKNOWN_NAME
                return f"{prefix}:{value}"

            points = _group_points(news, subject)
            for key, key_points in sorted(points.items()):
                mine = [e for e in denied if subject(e) == key]
                peak = _peak_count(mine, key_points, t.invalid_token_window)
                if peak is None or peak.count < t.invalid_token_threshold:
                    continue
                window = _minutes(t.invalid_token_window)
                detections.append(
                    Detection(
                        rule=self.name,
                        key=key,
                        severity=_severity(Severity.WARNING, peak.count, t.invalid_token_threshold),
                        title=f"Invalid tokens: {peak.count} refused as unauthenticated from {key}",
                        detail=(
                            f"{peak.count} calls from {key} were refused as unauthenticated "
                            f"(401) within {window} up to {peak.at.isoformat()} (threshold "
                            f"{t.invalid_token_threshold})."
                        ),
                        at=peak.at,
                        figures=_burst_figures(
                            peak,
                            t.invalid_token_threshold,
                            t.invalid_token_window,
                            "unauthenticated",
                        ),
                        records=_last((e.seq for e in peak.members), t.evidence_records),
                    )
                )
        return detections


# -- out-of-hours ------------------------------------------------------------------------


class OutOfHours:
    """Allowed data calls outside the hours the scenario allows (its optional ``hours``:
    time of day, every day or working days only, in its time zone). Such calls are not
    refused; the supervisor is told. Fires at ``out_of_hours_min_calls`` calls of one
    merchant in one scenario within a batch; further ones add occurrences to the alert.
    """

    name = "out-of-hours"

    async def evaluate(self, ctx: RuleContext) -> list[Detection]:
        t = ctx.thresholds
        found: dict[tuple[str, str], list[CallEvent]] = defaultdict(list)
        for event in ctx.batch:
            if event.kind != "data" or event.decision != "allow":
                continue
            if event.merchant_id is None or event.scenario_id is None:
                continue
            scenario = ctx.snapshot.scenarios.get(event.scenario_id)
            if scenario is None or scenario.hours is None:
                continue
            if not scenario.hours.allows(event.at, ctx.is_working_day):
                found[(event.merchant_id, event.scenario_id)].append(event)
        detections = []
        for (merchant_id, scenario_id), events in sorted(found.items()):
            if len(events) < t.out_of_hours_min_calls:
                continue
            hours = ctx.snapshot.scenarios[scenario_id].hours
            assert hours is not None
            allowed = hours.to_dict()
            last = max(events, key=lambda e: (e.at, e.seq))
            days = "working days" if hours.days == "workdays" else "every day"
            detections.append(
                Detection(
                    rule=self.name,
                    key=f"merchant:{merchant_id}|scenario:{scenario_id}",
                    severity=_severity(Severity.WARNING, len(events), t.out_of_hours_min_calls),
                    title=(
                        f"Out of hours: {merchant_id} made {len(events)} data calls outside "
                        f"the hours of {scenario_id}"
                    ),
                    detail=(
                        f"Scenario {scenario_id} allows data use {allowed['from']}-"
                        f"{allowed['to']} ({allowed['timezone']}) on {days}; {merchant_id} "
                        f"made {len(events)} allowed data calls outside them, the last at "
                        f"{last.at.isoformat()}."
                    ),
                    at=last.at,
                    figures={
                        "count": len(events),
                        "threshold": t.out_of_hours_min_calls,
                        "hours": allowed,
                        "first_call": min(e.at for e in events).isoformat(),
                        "last_call": last.at.isoformat(),
                    },
                    records=_last((e.seq for e in events), t.evidence_records),
                    merchant_id=merchant_id,
                    scenario_id=scenario_id,
                )
            )
        return detections


DEFAULT_RULES: tuple[Rule, ...] = (
    VolumeSpike(),
    Enumeration(),
    Scraping(),
    RefusalBurst(),
    OutOfHours(),
    InvalidTokens(),
)
