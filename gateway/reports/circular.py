"""The circular on source departments (ZW art. 31), as facts for the operations report.

The data bureau circulates, per source department, its catalogue work, how promptly it
reviews use applications and the quality of its data. For one period this module gathers,
per department:

- **Catalogue entries and their freshness**: the entries it provides at the end of the
  period, how many it registered or updated during it, and for each entry its declared
  update frequency, its last registration or update (from the ``dataset.registered`` /
  ``dataset.updated`` records of the governance stream, so a past period is seen as it
  was) and how many merchants or the operator objected that a value was stale. The gateway
  does not see when a source refreshes its rows; what it can show is the upkeep of the
  catalogue entry and the staleness others reported.
- **Review timeliness**: its reviews of use applications decided in the period against
  their deadline (a deemed approval is not in time), and those overdue at the end.
- **Data-quality objections** (ZW art. 11): received in the period; answered in the period,
  in time or late; the first answers that accepted the objection (accepted, or corrected
  at once) or rejected it; corrections recorded; open and overdue at the end; the median
  working days from filing to the first answer. Objections about tracing canary rows are
  answered by the operator, not the department, and are not counted for it.

Working days are counted on the official holiday schedule (:mod:`gateway.workdays`), like
the deadlines themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.clock import utc
from gateway.db.schema import LogEntryRow, ObjectionRow
from gateway.reports.periods import Period
from gateway.reports.queries import in_period, open_at, open_during, reviews_in_play
from gateway.workdays.calendar import UncoveredYearError, WorkingCalendar

__all__ = [
    "CatalogueEntry",
    "DepartmentCircular",
    "DepartmentsSection",
    "ObjectionFigures",
    "ReviewFigures",
    "gather_departments",
]

_CATALOGUE_KINDS = ("dataset.registered", "dataset.updated")


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    dataset_id: str
    name: str
    update_frequency: str
    grantable: bool
    last_updated: dt.datetime
    """The entry's last registration or update at or before the end of the period."""
    days_since_update: int
    """Beijing calendar days from ``last_updated`` to the period's last day."""
    stale_objections: int
    """Objections received in the period saying one of its values was stale."""


@dataclass(frozen=True, slots=True)
class ReviewFigures:
    decided: int
    on_time: int
    deemed: int
    overdue_at_end: int
    median_working_days: float | None


@dataclass(frozen=True, slots=True)
class ObjectionFigures:
    received: int
    answered: int
    in_time: int
    accepted: int
    """First answers agreeing with the objection: accepted, or corrected at once."""
    rejected: int
    corrected: int
    """Corrections recorded in the period (at once or after an acceptance)."""
    open_at_end: int
    overdue_at_end: int
    median_working_days: float | None

    @property
    def late(self) -> int:
        return self.answered - self.in_time


@dataclass(frozen=True, slots=True)
class DepartmentCircular:
    department: str
    entries: tuple[CatalogueEntry, ...]
    entries_updated: int
    """Entries registered or updated during the period."""
    reviews: ReviewFigures
    objections: ObjectionFigures

    @property
    def median_days_since_update(self) -> float | None:
        days = [e.days_since_update for e in self.entries]
        return float(statistics.median(days)) if days else None


@dataclass(frozen=True, slots=True)
class DepartmentsSection:
    departments: tuple[DepartmentCircular, ...]
    uncovered_years: tuple[int, ...]
    """Years without a loaded holiday schedule: working days there were not counted."""


@dataclass(slots=True)
class _Tally:
    """One department's counts while the rows are read."""

    calendar: WorkingCalendar
    uncovered: set[int]
    review_decided: int = 0
    review_on_time: int = 0
    review_deemed: int = 0
    review_overdue: int = 0
    review_days: list[int] = field(default_factory=list)
    received: int = 0
    answered: int = 0
    in_time: int = 0
    accepted: int = 0
    rejected: int = 0
    corrected: int = 0
    open_at_end: int = 0
    overdue_at_end: int = 0
    answer_days: list[int] = field(default_factory=list)
    stale: Counter[str] = field(default_factory=Counter)

    def working_days(self, a: dt.datetime, b: dt.datetime) -> int | None:
        try:
            return self.calendar.working_days_between(a, b)
        except UncoveredYearError as exc:
            self.uncovered.add(exc.year)
            return None

    def reviews(self) -> ReviewFigures:
        return ReviewFigures(
            self.review_decided,
            self.review_on_time,
            self.review_deemed,
            self.review_overdue,
            _median(self.review_days),
        )

    def objections(self) -> ObjectionFigures:
        return ObjectionFigures(
            received=self.received,
            answered=self.answered,
            in_time=self.in_time,
            accepted=self.accepted,
            rejected=self.rejected,
            corrected=self.corrected,
            open_at_end=self.open_at_end,
            overdue_at_end=self.overdue_at_end,
            median_working_days=_median(self.answer_days),
        )


def _median(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None


async def gather_departments(
    conn: AsyncConnection, period: Period, as_of: dt.datetime, calendar: WorkingCalendar
) -> DepartmentsSection:
    """The circular of ``period`` (figures at ``as_of``: its end, or now while it runs)."""
    uncovered: set[int] = set()
    tallies: dict[str, _Tally] = {}

    def tally(department: str) -> _Tally:
        if department not in tallies:
            tallies[department] = _Tally(calendar, uncovered)
        return tallies[department]

    catalogue = await _catalogue(conn, period, as_of)
    await _objections(conn, period, as_of, tally)
    await _reviews(conn, period, as_of, tally)
    entries: dict[str, list[CatalogueEntry]] = {}
    updated: Counter[str] = Counter()
    # The Beijing day of the period's last instant: a period ending at midnight ends on
    # the day before.
    as_of_day = (as_of - dt.timedelta(microseconds=1)).astimezone(calendar.zone).date()
    for dataset_id, (definition, last, changed) in sorted(catalogue.items()):
        provider = str(definition.get("provider", ""))
        stale = tally(provider).stale[dataset_id]
        entries.setdefault(provider, []).append(
            CatalogueEntry(
                dataset_id=dataset_id,
                name=str(definition.get("name", "")),
                update_frequency=str(definition.get("update_frequency", "unknown")),
                grantable=definition.get("open_attribute") != "not_open"
                and not definition.get("negative_list", False),
                last_updated=last,
                days_since_update=(as_of_day - last.astimezone(calendar.zone).date()).days,
                stale_objections=stale,
            )
        )
        if changed:
            updated[provider] += 1
    departments = tuple(
        DepartmentCircular(
            department=name,
            entries=tuple(entries.get(name, [])),
            entries_updated=updated[name],
            reviews=tallies[name].reviews(),
            objections=tallies[name].objections(),
        )
        for name in sorted(tallies)
    )
    return DepartmentsSection(departments, tuple(sorted(uncovered)))


async def _catalogue(
    conn: AsyncConnection, period: Period, as_of: dt.datetime
) -> dict[str, tuple[dict[str, Any], dt.datetime, bool]]:
    """Each catalogue entry as of ``as_of``: its definition, when it was last registered or
    updated, and whether that happened during the period. Read from the governance records,
    which keep every version (catalogue changes are few: all of them are read)."""
    rows = await conn.execute(
        select(LogEntryRow.recorded_at, LogEntryRow.payload)
        .where(
            LogEntryRow.stream == "governance",
            LogEntryRow.kind.in_(_CATALOGUE_KINDS),
            LogEntryRow.recorded_at < as_of,
        )
        .order_by(LogEntryRow.seq)
    )
    found: dict[str, tuple[dict[str, Any], dt.datetime, bool]] = {}
    for recorded_at, payload in rows:
        try:
            definition = json.loads(payload).get("dataset")
        except (ValueError, AttributeError):
            continue
        if not isinstance(definition, dict) or not isinstance(definition.get("id"), str):
            continue
        at = utc(recorded_at)
        changed = period.contains(at) or found.get(definition["id"], ({}, at, False))[2]
        found[definition["id"]] = (definition, at, changed)
    return found


async def _objections(
    conn: AsyncConnection, period: Period, as_of: dt.datetime, tally: Callable[[str], _Tally]
) -> None:
    rows = await conn.execute(
        select(
            ObjectionRow.department,
            ObjectionRow.dataset_id,
            ObjectionRow.category,
            ObjectionRow.filed_at,
            ObjectionRow.due_at,
            ObjectionRow.answer,
            ObjectionRow.answered_at,
            ObjectionRow.corrected_at,
        ).where(
            ObjectionRow.canary.is_(False),
            or_(
                in_period(ObjectionRow.filed_at, period),
                in_period(ObjectionRow.answered_at, period),
                in_period(ObjectionRow.corrected_at, period),
                open_during(ObjectionRow.filed_at, ObjectionRow.answered_at, as_of),
            ),
        )
    )

    def counted(instant: dt.datetime | None) -> bool:
        # In the period and already past when the figures are taken.
        return instant is not None and period.contains(instant) and instant < as_of

    for row in rows:
        t = tally(row.department)
        filed, due = utc(row.filed_at), utc(row.due_at)
        answered = utc(row.answered_at) if row.answered_at is not None else None
        if counted(filed):
            t.received += 1
            if row.category == "stale":
                t.stale[row.dataset_id] += 1
        if answered is not None and counted(answered):
            t.answered += 1
            if answered < due:
                t.in_time += 1
            if row.answer in ("accepted", "corrected"):
                t.accepted += 1
            elif row.answer == "rejected":
                t.rejected += 1
            days = t.working_days(filed, answered)
            if days is not None:
                t.answer_days.append(days)
        if row.corrected_at is not None and counted(utc(row.corrected_at)):
            t.corrected += 1
        if open_at(filed, answered, as_of):
            t.open_at_end += 1
            if due <= as_of:
                t.overdue_at_end += 1


async def _reviews(
    conn: AsyncConnection, period: Period, as_of: dt.datetime, tally: Callable[[str], _Tally]
) -> None:
    rows = await reviews_in_play(conn, period, as_of)
    for row in rows:
        deadline_value = row.extended_until or row.due_at
        if deadline_value is None:
            continue
        t = tally(row.department)
        deadline, opened = utc(deadline_value), utc(row.opened_at)
        decided = utc(row.decided_at) if row.decided_at is not None else None
        if decided is not None and period.contains(decided) and row.status != "pending":
            t.review_decided += 1
            if row.status == "deemed-approved":
                t.review_deemed += 1
            elif decided < deadline:
                t.review_on_time += 1
            days = t.working_days(opened, decided)
            if days is not None:
                t.review_days.append(days)
        if (
            open_at(opened, decided, as_of)
            and row.application_status != "withdrawn"
            and deadline <= as_of
        ):
            t.review_overdue += 1
