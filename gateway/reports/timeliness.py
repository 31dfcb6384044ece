"""Review timeliness for the operations report: onboarding answers, compliance checks and
department reviews decided in the period against their working-day deadlines, and those
overdue at its end.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.clock import utc
from gateway.db.schema import OnboardingRow, UseApplicationRow
from gateway.reports.periods import Period
from gateway.reports.queries import in_period, open_at, reviews_in_play
from gateway.workdays.calendar import UncoveredYearError, WorkingCalendar
from gateway.workflows.applications import COMPLIANCE_WORKING_DAYS, REVIEW_WORKING_DAYS
from gateway.workflows.onboarding import ONBOARDING_WORKING_DAYS

__all__ = ["OverdueItem", "StepTimeliness", "TimelinessSection", "gather_timeliness"]


@dataclass(frozen=True, slots=True)
class StepTimeliness:
    """One review step: decisions made in the period and how they kept the deadline."""

    step: str
    deadline_days: int
    decided: int
    on_time: int
    deemed: int
    """Deemed approvals: the deadline passed without an answer (department reviews)."""
    extended: int
    median_working_days: float | None
    open_at_end: int
    overdue_at_end: int

    @property
    def share_on_time(self) -> float | None:
        return self.on_time / self.decided if self.decided else None


@dataclass(frozen=True, slots=True)
class OverdueItem:
    step: str
    subject: str
    party: str
    due_at: dt.datetime
    working_days_overdue: int | None
    # Its last working day lies in a year without a loaded holiday schedule: counted on
    # weekends alone, recomputed when the schedule is loaded (docs/workdays.md).
    provisional: bool = False


@dataclass(frozen=True, slots=True)
class TimelinessSection:
    steps: tuple[StepTimeliness, ...]
    overdue: tuple[OverdueItem, ...]
    uncovered_years: tuple[int, ...]
    """Years without a loaded holiday schedule: working days there were not counted."""


class _Step:
    """Accumulates one review step's decisions and open items."""

    def __init__(self, step: str, deadline_days: int, calendar: WorkingCalendar) -> None:
        self.step = step
        self.deadline_days = deadline_days
        self.calendar = calendar
        self.decided = 0
        self.on_time = 0
        self.deemed = 0
        self.extended = 0
        self.days: list[int] = []
        self.open = 0
        self.overdue: list[OverdueItem] = []
        self.uncovered: set[int] = set()

    def working_days(self, a: dt.datetime, b: dt.datetime) -> int | None:
        try:
            return self.calendar.working_days_between(a, b)
        except UncoveredYearError as exc:
            self.uncovered.add(exc.year)
            return None

    def decision(
        self, opened: dt.datetime, decided: dt.datetime, deadline: dt.datetime, *, deemed: bool
    ) -> None:
        self.decided += 1
        if deemed:
            self.deemed += 1
        elif decided < deadline:
            self.on_time += 1
        days = self.working_days(opened, decided)
        if days is not None:
            self.days.append(days)

    def still_open(
        self, subject: str, party: str, deadline: dt.datetime, as_of: dt.datetime
    ) -> None:
        self.open += 1
        if deadline <= as_of:
            last_day = (deadline - dt.timedelta(microseconds=1)).astimezone(self.calendar.zone)
            self.overdue.append(
                OverdueItem(
                    self.step,
                    subject,
                    party,
                    deadline,
                    self.working_days(deadline, as_of),
                    provisional=not self.calendar.covers(last_day.year),
                )
            )

    def result(self) -> StepTimeliness:
        return StepTimeliness(
            step=self.step,
            deadline_days=self.deadline_days,
            decided=self.decided,
            on_time=self.on_time,
            deemed=self.deemed,
            extended=self.extended,
            median_working_days=float(statistics.median(self.days)) if self.days else None,
            open_at_end=self.open,
            overdue_at_end=len(self.overdue),
        )


async def gather_timeliness(
    conn: AsyncConnection, period: Period, as_of: dt.datetime, calendar: WorkingCalendar
) -> TimelinessSection:
    onboarding = _Step("onboarding", ONBOARDING_WORKING_DAYS, calendar)
    rows = await conn.execute(
        select(
            OnboardingRow.id,
            OnboardingRow.merchant_id,
            OnboardingRow.status,
            OnboardingRow.submitted_at,
            OnboardingRow.due_at,
            OnboardingRow.decided_at,
        ).where(
            or_(
                in_period(OnboardingRow.decided_at, period),
                and_(
                    OnboardingRow.submitted_at < as_of,
                    or_(OnboardingRow.decided_at.is_(None), OnboardingRow.decided_at >= as_of),
                ),
            )
        )
    )
    for row in rows:
        decided = utc(row.decided_at) if row.decided_at is not None else None
        if decided is not None and period.contains(decided) and row.status != "withdrawn":
            onboarding.decision(utc(row.submitted_at), decided, utc(row.due_at), deemed=False)
        if open_at(row.submitted_at, row.decided_at, as_of) and row.status != "withdrawn":
            onboarding.still_open(row.id, row.merchant_id, utc(row.due_at), as_of)

    compliance = _Step("compliance", COMPLIANCE_WORKING_DAYS, calendar)
    rows = await conn.execute(
        select(
            UseApplicationRow.id,
            UseApplicationRow.merchant_id,
            UseApplicationRow.status,
            UseApplicationRow.submitted_at,
            UseApplicationRow.compliance_due_at,
            UseApplicationRow.checked_at,
        ).where(
            or_(
                in_period(UseApplicationRow.checked_at, period),
                and_(
                    UseApplicationRow.submitted_at < as_of,
                    UseApplicationRow.status != "withdrawn",
                    or_(
                        UseApplicationRow.checked_at.is_(None),
                        UseApplicationRow.checked_at >= as_of,
                    ),
                ),
            )
        )
    )
    for row in rows:
        checked = utc(row.checked_at) if row.checked_at is not None else None
        due = utc(row.compliance_due_at)
        if checked is not None and period.contains(checked):
            compliance.decision(utc(row.submitted_at), checked, due, deemed=False)
        if open_at(row.submitted_at, row.checked_at, as_of) and row.status != "withdrawn":
            compliance.still_open(row.id, row.merchant_id, due, as_of)

    review = _Step("review", REVIEW_WORKING_DAYS, calendar)
    for row in await reviews_in_play(conn, period, as_of):
        deadline_value = row.extended_until or row.due_at
        if deadline_value is None:
            continue
        deadline = utc(deadline_value)
        decided = utc(row.decided_at) if row.decided_at is not None else None
        if decided is not None and period.contains(decided) and row.status != "pending":
            review.decision(
                utc(row.opened_at), decided, deadline, deemed=row.status == "deemed-approved"
            )
            if row.extended_until is not None:
                review.extended += 1
        if open_at(row.opened_at, row.decided_at, as_of) and row.application_status != "withdrawn":
            review.still_open(row.application_id, row.department, deadline, as_of)

    steps = (onboarding, compliance, review)
    overdue = sorted((item for s in steps for item in s.overdue), key=lambda i: i.due_at)
    return TimelinessSection(
        steps=tuple(s.result() for s in steps),
        overdue=tuple(overdue),
        uncovered_years=tuple(sorted(set().union(*(s.uncovered for s in steps)))),
    )
