"""Loading holiday schedules and keeping every process's calendar in step with the store.

A loaded schedule is a governance record (kind ``workdays.schedule-loaded``); deadlines
counted provisionally on weekends alone are counted again once it is in (docs/workdays.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.governance.actor import Actor
from gateway.governance.unit_of_work import Unchanged, UnitOfWork
from gateway.monitoring.models import Detection, Severity
from gateway.monitoring.store import AlertStore
from gateway.workdays import YearSchedule
from gateway.workdays.store import (
    MISSING_SCHEDULE_RULE,
    LiveCalendar,
    LoadedSchedule,
    missing_schedule_due,
    store_schedule,
    stored_schedules,
)

__all__ = ["WorkdaySchedules"]

# Counts the open provisional deadlines of one kind again; returns the ids that moved.
Recount = Callable[[], Awaitable[list[str]]]


class WorkdaySchedules:
    def __init__(
        self,
        engine: AsyncEngine,
        calendar: LiveCalendar,
        alerts: AlertStore,
        uow: UnitOfWork,
        recounts: Sequence[Recount],
    ) -> None:
        self._engine = engine
        self._calendar = calendar
        self._alerts = alerts
        self._uow = uow
        self._recounts = tuple(recounts)

    async def refresh(self) -> None:
        """Count deadlines with the schedules in the store as they are now (another
        process may have loaded one)."""
        async with self._engine.connect() as conn:
            loaded = await stored_schedules(conn)
        self._calendar.replace(item.schedule for item in loaded)

    async def alert_missing(self) -> None:
        """From November on, alert the operator once per year that next year's holiday
        schedule is not loaded (deadlines reaching into it are provisional meanwhile). Run
        by the process that runs the background work, when it starts and by the sweeper
        of deemed approvals; the alert store keeps it to one alert per year."""
        calendar = self._calendar.current

        async def work(conn: AsyncConnection, now: dt.datetime) -> None:
            year = await missing_schedule_due(conn, calendar, now)
            if year is None:
                return
            detection = Detection(
                rule=MISSING_SCHEDULE_RULE,
                key=f"year:{year}",
                severity=Severity.WARNING,
                title=f"Working days: the {year} holiday schedule is not loaded",
                detail=(
                    f"Deadlines in working days that reach into {year} are counted on "
                    "weekends alone and shown as provisional until the State Council's notice "
                    f"(国务院办公厅关于{year}年部分节假日安排的通知) is loaded: save its text and "
                    "run `dsgw workdays import notice.txt`; provisional deadlines are then "
                    "counted again (docs/workdays.md)."
                ),
                at=now,
                figures={"year": year, "covered_years": list(calendar.years)},
                records=(),
            )
            await self._alerts.record(conn, now, detection)

        await self._alerts.transaction(work)

    async def load(
        self, actor: Actor, schedule: YearSchedule, *, loaded_by: str
    ) -> tuple[LoadedSchedule | None, list[str]]:
        """Store ``schedule`` with who loaded it (a governance record, kind
        ``workdays.schedule-loaded``), count with it from now on, and count the open
        provisional deadlines again. Returns the stored schedule (None when the same days
        were already loaded: no record) and the ids whose deadline moved.

        Raises :class:`CalendarError` if it contradicts a shipped or configured schedule.
        """
        base = self._calendar.base

        async def apply(conn: AsyncConnection, now: dt.datetime) -> LoadedSchedule:
            loaded = await store_schedule(conn, now, base, schedule, loaded_by)
            if loaded is None:
                raise Unchanged(None)
            return loaded

        loaded: LoadedSchedule | None = await self._uow.change(
            actor,
            "workdays.schedule-loaded",
            {"year": schedule.year, "loaded_by": loaded_by, "schedule": schedule.to_dict()},
            apply,
        )
        await self.refresh()
        moved = [item for recount in self._recounts for item in await recount()]
        return loaded, moved
