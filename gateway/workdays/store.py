"""Holiday schedules loaded by operators, kept in the store, and the calendar that follows them.

``dsgw workdays import notice.txt`` parses the State Council's notice
(:mod:`gateway.workdays.notice`), shows it, and on confirmation stores it here with who
loaded it, as a governance record. Every process builds its calendar from the shipped
schedules, the ``workday_calendars`` files and these rows (:func:`stored_schedules`), so all
nodes of a cluster count the same days; :class:`LiveCalendar` lets a running gateway take a
newly loaded schedule without a restart.

Until next year's notice is loaded, deadlines reaching into it are counted on weekends
alone and shown as provisional; :func:`missing_schedule_alert` alerts the operator once per
year (an alert of rule ``workdays-schedule-missing`` in the monitoring alert store).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.clock import local_date
from gateway.db.schema import AlertRow, WorkdayScheduleRow
from gateway.workdays.calendar import (
    SHANGHAI,
    CalendarError,
    WorkingCalendar,
    YearSchedule,
    default_calendar,
)

__all__ = [
    "MISSING_SCHEDULE_RULE",
    "LiveCalendar",
    "LoadedSchedule",
    "missing_schedule_due",
    "open_calendar",
    "store_schedule",
    "stored_schedules",
]

MISSING_SCHEDULE_RULE = "workdays-schedule-missing"
"""Alert rule raised once per year while next year's schedule is not loaded."""

_ALERT_FROM_MONTH = 11
"""The notice usually appears in November; from then on deadlines may reach into next year."""


@dataclass(frozen=True, slots=True)
class LoadedSchedule:
    """A stored schedule and who loaded it when."""

    schedule: YearSchedule
    loaded_by: str
    loaded_at: dt.datetime
    replaced: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            **self.schedule.to_dict(),
            "loaded_by": self.loaded_by,
            "loaded_at": self.loaded_at.isoformat(),
            "replaced": self.replaced,
        }


async def stored_schedules(conn: AsyncConnection) -> list[LoadedSchedule]:
    """Every schedule operators loaded, by year. Raises :class:`CalendarError` for a row
    that no longer validates (edited by hand)."""
    rows = (
        await conn.execute(select(WorkdayScheduleRow.__table__).order_by(WorkdayScheduleRow.year))
    ).all()
    return [
        LoadedSchedule(
            YearSchedule.from_dict(row.schedule, f"store: workday_schedules[{row.year}]"),
            row.loaded_by,
            row.loaded_at,
        )
        for row in rows
    ]


async def store_schedule(
    conn: AsyncConnection,
    now: dt.datetime,
    base: WorkingCalendar,
    schedule: YearSchedule,
    loaded_by: str,
) -> LoadedSchedule | None:
    """Store ``schedule`` inside the caller's transaction; None when the same days are
    already stored (nothing to record). A different schedule for a year already stored
    replaces it (a corrected notice); one that contradicts a shipped or configured
    schedule (``base``) is refused with :class:`CalendarError`."""
    WorkingCalendar([*base.schedules, schedule])  # refuses a contradiction, naming both
    known = await conn.scalar(
        select(WorkdayScheduleRow.schedule).where(WorkdayScheduleRow.year == schedule.year)
    )
    values = {"schedule": schedule.to_dict(), "loaded_by": loaded_by, "loaded_at": now}
    if known is None:
        await conn.execute(insert(WorkdayScheduleRow).values(year=schedule.year, **values))
        return LoadedSchedule(schedule, loaded_by, now)
    if YearSchedule.from_dict(known).same_days(schedule):
        return None
    await conn.execute(
        update(WorkdayScheduleRow).where(WorkdayScheduleRow.year == schedule.year).values(values)
    )
    return LoadedSchedule(schedule, loaded_by, now, replaced=True)


async def missing_schedule_due(
    conn: AsyncConnection, calendar: WorkingCalendar, now: dt.datetime
) -> int | None:
    """The year to alert about, or None: from November on, next year's schedule is not
    loaded and no alert for that year was ever raised (whatever became of it: the operator
    is told once per year, not once per restart)."""
    today = local_date(now, calendar.zone)
    year = today.year + 1
    if today.month < _ALERT_FROM_MONTH or calendar.covers(year):
        return None
    raised = await conn.scalar(
        select(AlertRow.id)
        .where(AlertRow.rule == MISSING_SCHEDULE_RULE, AlertRow.key == f"year:{year}")
        .limit(1)
    )
    return None if raised is not None else year


class LiveCalendar:
    """The calendar a running gateway counts deadlines with; :meth:`replace` swaps in a
    calendar with a newly loaded schedule. Reads are plain attribute reads (one event loop
    per process), so a deadline is always counted on one whole calendar."""

    __slots__ = ("_base", "_current")

    def __init__(self, base: WorkingCalendar) -> None:
        """``base``: the shipped and configured schedules; stored ones come on top."""
        self._base = base
        self._current = base

    @property
    def base(self) -> WorkingCalendar:
        return self._base

    @property
    def current(self) -> WorkingCalendar:
        return self._current

    def replace(self, stored: Iterable[YearSchedule]) -> WorkingCalendar:
        """Count from now on with ``base`` plus ``stored``; returns the new calendar."""
        self._current = self._base.with_schedules(stored)
        return self._current

    def deadline(self, start: dt.datetime, n: int) -> dt.datetime:
        return self._current.deadline(start, n)

    def provisional_years(self, start: dt.datetime, due: dt.datetime) -> tuple[int, ...]:
        return self._current.provisional_years(start, due)

    def is_working_day(self, day: dt.date) -> bool:
        return self._current.is_working_day(day)

    @property
    def zone(self) -> dt.tzinfo:
        return self._current.zone


async def open_calendar(
    engine: AsyncEngine, *extra: str | os.PathLike[str], zone: dt.tzinfo = SHANGHAI
) -> LiveCalendar:
    """The calendar a process counts deadlines with: the shipped schedules and the files
    ``extra`` (:func:`~gateway.workdays.calendar.default_calendar`), with the schedules
    loaded into the store on top, read once now.

    The gateway opens it when it starts; a read-only command whose output says whether a
    deadline is provisional opens it alone, so both count the same days. Raises
    :class:`CalendarError` for a schedule file or stored row that does not validate.
    """
    live = LiveCalendar(default_calendar(*extra, zone=zone))
    async with engine.connect() as conn:
        live.replace(item.schedule for item in await stored_schedules(conn))
    return live


def merged(base: WorkingCalendar, loaded: Sequence[LoadedSchedule]) -> WorkingCalendar:
    """``base`` plus the loaded schedules; :class:`CalendarError` if they contradict."""
    try:
        return base.with_schedules(item.schedule for item in loaded)
    except CalendarError as exc:
        raise CalendarError(
            f"{exc}; a schedule in the store contradicts a shipped or configured one: fix "
            "the workday_calendars setting or load the notice again"
        ) from exc
