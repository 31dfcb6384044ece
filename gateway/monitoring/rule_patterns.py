"""The pattern rules, ``enumeration`` and ``scraping``: walking an id space, harvesting a
dataset, and exhausting a verification budget.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.governance.policy import PolicySnapshot
from gateway.monitoring.calls import CallEvent
from gateway.monitoring.models import Detection, Severity
from gateway.monitoring.pattern_state import (
    PatternRun,
    PatternState,
    PatternWindow,
    counter_occurrences,
    pattern_key,
)
from gateway.monitoring.rule_context import (
    RuleContext,
    last_seqs,
    minutes,
    severity,
    thinned,
)
from gateway.monitoring.window_state import StateWindows

# -- enumeration and scraping -------------------------------------------------------------


async def _pattern_windows(
    ctx: RuleContext,
) -> list[tuple[str, str, list[dt.datetime], PatternWindow]]:
    """Per merchant and dataset with new verify/query calls: the evaluation points and the
    pattern state of its calls (the monitor's, kept as calls came and went; else one built
    from the window read from the store)."""
    points: dict[tuple[str, str], list[dt.datetime]] = defaultdict(list)
    for event in ctx.batch:
        key = pattern_key(event)
        if key is not None:
            points[key].append(event.at)
    if not points:
        return []
    since = min(min(times) for times in points.values()) - ctx.thresholds.pattern_window
    kept: dict[tuple[str, str], PatternWindow | None] = {}
    if isinstance(ctx.windows, StateWindows):
        kept = {key: ctx.windows.pattern_window(*key, since) for key in points}
    windows = {key: window for key, window in kept.items() if window is not None}
    if len(windows) < len(points):
        built = PatternState()
        for event in await ctx.windows.data_calls({m for m, _ in points}, since):
            if pattern_key(event) in points:
                built.insert(event)
        windows = {key: built.window(*key) for key in points}
    window = ctx.thresholds.pattern_window
    return [
        (key[0], key[1], thinned(times, window), windows[key])
        for key, times in sorted(points.items())
    ]


def _newest_records(
    window: PatternWindow, matches: Callable[[CallEvent], bool], bound: int
) -> list[int]:
    """The seqs of the newest ``bound`` calls of the window that ``matches``, oldest
    first."""
    found: list[int] = []
    for event in window.newest():
        if len(found) >= bound:
            break
        if matches(event):
            found.append(event.seq)
    return sorted(found)


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
        for merchant_id, dataset_id, points, window in await _pattern_windows(ctx):
            fields = _subject_fields(ctx.snapshot, dataset_id, clear_only=True)
            best: tuple[int, str, dt.datetime] | None = None
            for point in points:
                window.at(point, t.pattern_window)
                for field in fields:
                    length = window.counters(field).longest
                    if length >= 2 and (best is None or length > best[0]):
                        best = (length, field, point)
            if best is None or best[0] < t.enumeration_run:
                continue
            _length, field, point = best
            runs = window.at(point, t.pattern_window).counters(field)
            run = runs.longest_run()
            assert run is not None
            first = runs.first_label(run.group, run.start)
            last = runs.first_label(run.group, run.end)

            def in_run(event: CallEvent, field: str = field, run: PatternRun = run) -> bool:
                return any(
                    stem == run.group and run.start <= n <= run.end
                    for stem, n, _ in counter_occurrences(event, field)
                )

            records = _newest_records(window, in_run, t.evidence_records)
            window_text = minutes(t.pattern_window)
            detections.append(
                Detection(
                    rule=self.name,
                    key=f"merchant:{merchant_id}|dataset:{dataset_id}",
                    severity=severity(Severity.HIGH, run.length, t.enumeration_run),
                    title=(
                        f"Enumeration: {merchant_id} asked {run.length} consecutive "
                        f"{field} values of {dataset_id} in {window_text}"
                    ),
                    detail=(
                        f"{merchant_id} asked {dataset_id} for {field} {first} to "
                        f"{last}: {run.length} identifiers differing only in a consecutive "
                        f"counter within {window_text} (threshold {t.enumeration_run})."
                    ),
                    at=point,
                    figures={
                        "pattern": "sequential-identifiers",
                        "dataset": dataset_id,
                        "field": field,
                        "run": run.length,
                        "first": first,
                        "last": last,
                        "threshold": t.enumeration_run,
                        "window_seconds": int(t.pattern_window.total_seconds()),
                        "window_end": point.isoformat(),
                    },
                    records=records,
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
                severity=severity(Severity.HIGH, negatives + worst.refused, threshold),
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
                records=last_seqs(worst.seqs, t.evidence_records),
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
        for merchant_id, dataset_id, points, window in await _pattern_windows(ctx):
            fields = _subject_fields(ctx.snapshot, dataset_id, clear_only=False)
            subjects = self._distinct(ctx, merchant_id, dataset_id, points, window, fields)
            if subjects is not None:
                detections.append(subjects)
            paging = self._paging(ctx, merchant_id, dataset_id, points, window)
            if paging is not None:
                detections.append(paging)
        return detections

    def _distinct(
        self,
        ctx: RuleContext,
        merchant_id: str,
        dataset_id: str,
        points: list[dt.datetime],
        window: PatternWindow,
        fields: list[str],
    ) -> Detection | None:
        t = ctx.thresholds
        best: tuple[int, str, dt.datetime] | None = None
        for point in points:
            window.at(point, t.pattern_window)
            for field in fields:
                count = window.distinct(field)
                if best is None or count > best[0]:
                    best = (count, field, point)
        if best is None or best[0] < t.scraping_distinct_subjects:
            return None
        count, field, point = best
        # The evidence: the newest records among each value's newest asking.
        seen: set[str] = set()

        def newest_asking(event: CallEvent) -> bool:
            values = event.subjects.get(field, ())
            new = any(value not in seen for value in values)
            seen.update(values)
            return new

        seqs = _newest_records(
            window.at(point, t.pattern_window), newest_asking, t.evidence_records
        )
        window_text = minutes(t.pattern_window)
        return Detection(
            rule=self.name,
            key=f"merchant:{merchant_id}|dataset:{dataset_id}",
            severity=severity(Severity.HIGH, count, t.scraping_distinct_subjects),
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
            records=seqs,
            merchant_id=merchant_id,
        )

    def _paging(
        self,
        ctx: RuleContext,
        merchant_id: str,
        dataset_id: str,
        points: list[dt.datetime],
        window: PatternWindow,
    ) -> Detection | None:
        t = ctx.thresholds
        best: tuple[int, dt.datetime] | None = None
        for point in points:
            longest = window.at(point, t.pattern_window).pages().longest
            if longest and (best is None or longest > best[0]):
                best = (longest, point)
        if best is None or best[0] < t.scraping_pages:
            return None
        length, point = best
        pages = window.at(point, t.pattern_window).pages()
        run = pages.longest_run()
        assert run is not None
        first, last, limit = run.start, run.end, int(pages.first_label(run.group, run.start))

        def in_run(event: CallEvent) -> bool:
            page = event.page
            return page is not None and page.walk == run.group and first <= page.number <= last

        seqs = _newest_records(window, in_run, t.evidence_records)
        window_text = minutes(t.pattern_window)
        return Detection(
            rule=self.name,
            key=f"merchant:{merchant_id}|dataset:{dataset_id}|paging",
            severity=severity(Severity.HIGH, length, t.scraping_pages),
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
            records=seqs,
            merchant_id=merchant_id,
        )
